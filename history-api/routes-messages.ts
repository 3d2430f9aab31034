import { Type } from '@sinclair/typebox';
import { ChorusError, GroupId, HistoryPageView, ReceiptsView, SendPayloadByType, SendView } from '../protocol/index.js';
import type { SendResult } from '../sequencer/sequencer.js';
import type { Api, ApiDeps } from './api-deps.js';
import { DEFAULT_PAGE, GroupParams, PageQuery, Query, Seq, SeqOrZero, errors } from './schemas.js';
import { isVisible, isWholeHistory, WHOLE_HISTORY } from '../groups/visible-ranges.js';
import { readVisible } from './visible-history.js';

const ReceiptsParams = Type.Object({ groupId: GroupId, seq: Seq });

/** History reads, REST sends (through the same sequencer as MQTT), the read pointer and receipts. */
export async function messageRoutes(
  app: Api,
  { config, groups, log, sends, readReceipts, deliveredMarks }: ApiDeps,
): Promise<void> {
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
          withReactions: Type.Optional(
            Type.Boolean({ description: "each message's reaction counts (and whether I reacted)" }),
          ),
        }),
        response: {
          200: HistoryPageView,
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { groupId } = request.params;
      const { afterSeq, beforeSeq, limit = DEFAULT_PAGE, withReactions = false } = request.query;
      // The reads go out with the membership check, as if the whole history were visible: one store round trip's
      // wait, not three in a row. Nothing read is returned unless the check passes, and its error, if any, is the one
      // the caller gets; a group of since-joined visibility is read again within the member's ranges.
      const reads = Promise.all([
        log.lastSeq(groupId),
        readVisible(log, groupId, WHOLE_HISTORY, afterSeq, beforeSeq, limit),
        log.firstSeq(groupId),
      ]);
      reads.catch(() => undefined); // awaited below, unless the membership check throws first
      const [, ranges] = await Promise.all([
        groups.requireMember(groupId, request.userId),
        groups.visibleRanges(groupId, request.userId),
      ]);
      let [lastSeq, messages, retainedFrom] = await reads;
      if (!isWholeHistory(ranges)) {
        messages = await readVisible(log, groupId, ranges, afterSeq, beforeSeq, limit);
      }
      if (withReactions && messages.length > 0) {
        const reactions = await log.reactions(
          groupId,
          messages.map((m) => m.seq),
          request.userId,
        );
        messages = messages.map((m) =>
          reactions.has(m.seq) && m.deletedAt === undefined ? { ...m, reactions: reactions.get(m.seq)! } : m,
        );
      }
      // What a member was handed here reached one of their devices: their delivered watermark moves.
      const newest = messages.reduce((max, m) => Math.max(max, m.seq), 0);
      if (newest > 0) deliveredMarks?.note(groupId, request.userId, newest);
      return { messages, lastSeq, retainedFrom };
    },
  );

  app.get(
    '/groups/:groupId/messages/:seq/receipts',
    {
      schema: {
        summary:
          'Who has a message: member count, how many it was delivered to and read by, and a page of its readers by user id',
        params: ReceiptsParams,
        querystring: PageQuery,
        response: {
          200: ReceiptsView,
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { groupId, seq } = request.params;
      const { after = '', limit = DEFAULT_PAGE } = request.query;
      await groups.requireMember(groupId, request.userId);
      const [ranges, lastSeq] = await Promise.all([
        groups.visibleRanges(groupId, request.userId),
        log.lastSeq(groupId),
      ]);
      if (seq > lastSeq || !isVisible(ranges, seq)) throw new ChorusError('MESSAGE_NOT_FOUND');
      const counts = await groups.receipts(groupId, seq, after, limit);
      const readers = counts.readers.map((r) => r.userId);
      const body = { seq, members: counts.members, deliveredTo: counts.deliveredTo, readBy: counts.readBy, readers };
      return readers.length === limit ? { ...body, next: readers.at(-1)! } : body;
    },
  );

  app.post(
    '/groups/:groupId/messages',
    {
      schema: {
        summary:
          'Send a message; a retry with the same clientMsgId returns the original seq (200) instead of a new one (201)',
        params: GroupParams,
        body: SendPayloadByType,
        response: { 200: SendView, 201: SendView, ...errors(400, 401, 403, 404, 409, 410, 413) },
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
        summary:
          "Move my read pointer forward (never back; capped at the last seq); the group's other members are told (groups up to liveEventsMaxGroupMembers)",
        params: GroupParams,
        body: Type.Object({ seq: SeqOrZero }, { additionalProperties: false }),
        response: { 200: Type.Object({ readSeq: SeqOrZero, unread: SeqOrZero }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => readReceipts.markRead(request.params.groupId, request.userId, request.body.seq),
  );
}
