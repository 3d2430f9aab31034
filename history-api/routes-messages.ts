import { Type } from '@sinclair/typebox';
import { ChorusError, SendPayload, StampedMessage } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';
import type { SendResult } from '../sequencer/sequencer.js';
import type { Api, ApiDeps } from './app.js';
import { DEFAULT_PAGE, GroupParams, Query, Seq, SeqOrZero, errors } from './schemas.js';

const SendResponse = Type.Object({
  seq: Seq,
  createdAt: Type.String({ format: 'date-time' }),
  clientMsgId: Type.String(),
  duplicate: Type.Boolean({ description: 'true when this clientMsgId was already stored; seq is the original' }),
  message: StampedMessage,
});

/**
 * A history page: after `afterSeq` ascending, and then below `beforeSeq` too when both are given (nothing when no seq
 * lies between them); otherwise below `beforeSeq`, or from the newest, descending.
 */
function readPage(log: MessageLog, groupId: string, afterSeq: number | undefined, beforeSeq: number | undefined, limit: number): Promise<StampedMessage[]> {
  if (afterSeq === undefined) return log.readBefore(groupId, beforeSeq ?? Number.MAX_SAFE_INTEGER, limit);
  const between = (beforeSeq ?? Number.MAX_SAFE_INTEGER) - afterSeq - 1;
  return between > 0 ? log.readAfter(groupId, afterSeq, Math.min(limit, between)) : Promise.resolve([]);
}

/** History reads, REST sends (through the same sequencer as MQTT) and the read pointer. */
export async function messageRoutes(app: Api, { config, groups, log, sends, tellGroup }: ApiDeps): Promise<void> {
  app.get(
    '/groups/:groupId/messages',
    {
      schema: {
        summary:
          'Read history: afterSeq pages forward (ascending), up to beforeSeq when both are given; beforeSeq alone, or neither, pages back from the newest (descending)',
        params: GroupParams,
        querystring: Query({
          afterSeq: Type.Optional(SeqOrZero),
          beforeSeq: Type.Optional(Seq),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: DEFAULT_PAGE })),
        }),
        response: {
          200: Type.Object({ messages: Type.Array(StampedMessage), lastSeq: SeqOrZero }),
          ...errors(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => {
      const { groupId } = request.params;
      const { afterSeq, beforeSeq, limit = DEFAULT_PAGE } = request.query;
      // The reads go out with the membership check: one store round trip's wait, not three in a row. Nothing read is
      // returned unless the check passes, and its error, if any, is the one the caller gets.
      const reads = Promise.all([
        log.lastSeq(groupId),
        readPage(log, groupId, afterSeq, beforeSeq, limit),
      ]);
      reads.catch(() => undefined); // awaited below, unless the membership check throws first
      await groups.requireMember(groupId, request.userId);
      const [lastSeq, messages] = await reads;
      return { messages, lastSeq };
    },
  );

  app.post(
    '/groups/:groupId/messages',
    {
      schema: {
        summary: 'Send a message; a retry with the same clientMsgId returns the original seq (200) instead of a new one (201)',
        params: GroupParams,
        body: SendPayload,
        response: { 200: SendResponse, 201: SendResponse, ...errors(400, 401, 403, 404, 413, 503) },
      },
    },
    async (request, reply) => {
      const { groupId } = request.params;
      await groups.requireMember(groupId, request.userId);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ChorusError('STORE_UNAVAILABLE')), config.sendTimeoutMs);
      });
      // On timeout the send stays queued and may still be stored: a retry with the same clientMsgId is always safe.
      let result: SendResult;
      try {
        result = await Promise.race([sends.send(groupId, request.userId, request.body), timeout]);
      } finally {
        clearTimeout(timer);
      }
      const { message, duplicate } = result;
      return reply
        .status(duplicate ? 200 : 201)
        .send({ seq: message.seq, createdAt: message.createdAt, clientMsgId: message.clientMsgId, duplicate, message });
    },
  );

  app.put(
    '/groups/:groupId/read',
    {
      schema: {
        summary: "Move my read pointer forward (never back; capped at the last seq); the group's other members are told (groups up to liveEventsMaxGroupMembers)",
        params: GroupParams,
        body: Type.Object({ seq: SeqOrZero }, { additionalProperties: false }),
        response: { 200: Type.Object({ readSeq: SeqOrZero, unread: SeqOrZero }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const { groupId } = request.params;
      const before = await groups.requireMember(groupId, request.userId);
      const lastSeq = await log.lastSeq(groupId);
      const readSeq = await groups.markRead(groupId, request.userId, Math.min(request.body.seq, lastSeq));
      // A receipt only when the pointer moved; told after the answer is on its way, never holding it up.
      if (readSeq > before.readSeq) void tellGroup(groupId, { type: 'read', groupId, userId: request.userId, seq: readSeq }, request.userId);
      return { readSeq, unread: Math.max(0, lastSeq - readSeq) };
    },
  );
}
