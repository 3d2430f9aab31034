import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { DeliveredMark } from '../groups/group-store.js';
import { ChorusError, errorCatalog, type ErrorCode, type StampedMessage } from '../protocol/index.js';
import { WriterMovedError } from './group-writers.js';
import type { SendResult } from './sequencer.js';
import {
  type ForwardedSend,
  MAX_RELAYED_MARKS,
  type SendForwarding,
  type SendForwardingOptions,
} from './send-forwarding.js';

type Answer =
  | { id: string; result: SendResult }
  | { id: string; error: { code: ErrorCode; message: string } }
  | { id: string; moved: true };
interface Request extends ForwardedSend {
  id: string;
  from: string;
}
/**
 * What travels on a node's channel: requests for it to serve and answers to its own requests, batched per turn; or
 * delivered marks of the groups it writes.
 */
interface Envelope {
  requests?: Request[];
  answers?: Answer[];
  marks?: DeliveredMark[];
}

/** A forwarded send waiting for its answer. */
interface Waiting {
  to: string;
  request: Request;
  resolve: (r: SendResult) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
  /** The next repost; undefined only while the request is being posted the first time. */
  repost: NodeJS.Timeout | undefined;
}

const channelOf = (nodeId: string) => `chorus:sends:${nodeId}`;

/** A request not answered this long is posted again (then after twice as long, up to MAX_REPOST_MS). */
export const FIRST_REPOST_MS = 1000;
const MAX_REPOST_MS = 8000;
/**
 * Requests, and answers, in one Redis message at most: a node back from an outage posts every waiting request at once
 * (up to maxPending), and one message of them all could take hundreds of MB.
 */
export const MAX_ENVELOPE_ITEMS = 256;
/** Answers a writer remembers, for requests posted again after their answer was lost (at most ~16 MiB of bodies). */
const MAX_ANSWERS_KEPT = 1000;

/**
 * Sends forwarded between nodes over Redis pub/sub, one channel per node. Pub/sub delivers at most once and keeps
 * nothing, so a request not answered within a second is posted again, then after 2, 4 and every 8 s: an answer lost
 * in a Redis failover is sent again (the writer keeps its last answers; a request it is still serving is not served
 * twice), and a writer that died holding the request is found gone (nobody listens on its channel) and the send moves
 * to the group's next writer at once. When this node's own channel comes back from a Redis outage, every waiting
 * request is posted again at once. Past `timeoutMs` the send fails, and the sender's retry (same clientMsgId) is
 * deduplicated by the log. Requests and answers leaving in one turn of the event loop share a message, up to
 * MAX_ENVELOPE_ITEMS of each.
 */
export class SendForwardingRedis implements SendForwarding {
  private readonly waiting = new Map<string, Waiting>();
  /** Requests (from:id) this node is serving, and the answers it gave last, oldest first. */
  private readonly serving = new Set<string>();
  private readonly answered = new Map<string, Answer>();
  private readonly outbox = new Map<string, Envelope>();
  private flushScheduled = false;
  private serve: ((send: ForwardedSend) => Promise<SendResult>) | undefined;
  private takeMarks: ((marks: DeliveredMark[]) => void) | undefined;

  private constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    readonly nodeId: string,
    private readonly options: SendForwardingOptions,
  ) {}

  /** Listens on this node's channel; `subscriber` becomes a subscriber-only connection. */
  static async start(
    publisher: Redis,
    subscriber: Redis,
    nodeId: string,
    options: SendForwardingOptions,
  ): Promise<SendForwardingRedis> {
    const forwarding = new SendForwardingRedis(publisher, subscriber, nodeId, options);
    subscriber.on('messageBuffer', (_channel: Buffer, message: Buffer) => forwarding.receive(message));
    // Back from a Redis failover or restart (ioredis resubscribes as it becomes ready): what was posted meanwhile is
    // lost, so the waiting requests go again now rather than at their next repost, up to 8 s later.
    subscriber.on('ready', () => forwarding.repostWaiting());
    await subscriber.subscribe(channelOf(nodeId));
    return forwarding;
  }

  onRequest(handler: (send: ForwardedSend) => Promise<SendResult>): void {
    this.serve = handler;
  }

  forward(nodeId: string, send: ForwardedSend): Promise<SendResult> {
    if (this.waiting.size >= this.options.maxPending) return Promise.reject(new ChorusError('OVERLOADED'));
    const id = randomUUID();
    const request: Request = { id, from: this.nodeId, ...send };
    return new Promise<SendResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        clearTimeout(waiting.repost);
        reject(
          new ChorusError(
            'STORE_UNAVAILABLE',
            'the node that writes this group did not answer; retry with the same clientMsgId',
          ),
        );
      }, this.options.timeoutMs);
      const waiting: Waiting = { to: nodeId, request, resolve, reject, timer, repost: undefined };
      this.waiting.set(id, waiting);
      this.postRequest(id, waiting, FIRST_REPOST_MS);
    });
  }

  /** Posts a waiting request, and posts it again after `repostMs` unless answered (then twice as long, up to 8 s). */
  private postRequest(id: string, waiting: Waiting, repostMs: number): void {
    this.post(waiting.to, 'requests', waiting.request);
    waiting.repost = setTimeout(() => {
      if (this.waiting.get(id) === waiting) this.postRequest(id, waiting, Math.min(repostMs * 2, MAX_REPOST_MS));
    }, repostMs);
  }

  /** Every waiting request posted again now, and then after 1, 2, 4 s… as when it was new. */
  private repostWaiting(): void {
    for (const [id, waiting] of this.waiting) {
      clearTimeout(waiting.repost);
      this.postRequest(id, waiting, FIRST_REPOST_MS);
    }
  }

  onMarks(handler: (marks: DeliveredMark[]) => void): void {
    this.takeMarks = handler;
  }

  /**
   * One Redis message of its own (once per node and flush), so that its outcome is known: refused when Redis is away
   * or nobody listens on that node's channel (it is gone).
   */
  async relayMarks(nodeId: string, marks: DeliveredMark[]): Promise<void> {
    const envelope: Envelope = { marks: marks.slice(0, MAX_RELAYED_MARKS) };
    const listeners = await this.publisher.publish(channelOf(nodeId), JSON.stringify(envelope));
    if (listeners === 0) throw new WriterMovedError([]);
  }

  private post<K extends keyof Envelope>(nodeId: string, kind: K, item: NonNullable<Envelope[K]>[number]): void {
    let envelope = this.outbox.get(nodeId);
    if (!envelope) this.outbox.set(nodeId, (envelope = {}));
    ((envelope[kind] ??= []) as unknown[]).push(item);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const [to, batch] of this.outbox) for (const envelope of inEnvelopes(batch)) this.publish(to, envelope);
      this.outbox.clear();
    });
  }

  private publish(to: string, envelope: Envelope): void {
    const requests = envelope.requests ?? [];
    this.publisher.publish(channelOf(to), JSON.stringify(envelope)).then(
      (listeners) => {
        // Nobody listens on that node's channel: it is gone, and its groups are about to move. So are the sends
        // it took before it went and never answered: they are sent again to the new writer (which finds any it
        // stored by clientMsgId) instead of waiting out the timeout.
        if (listeners === 0) {
          for (const [id, waiting] of this.waiting) if (waiting.to === to) this.settle({ id, moved: true });
        }
      },
      (err: unknown) => {
        // Redis away: requests fail now; answers are lost, and their requests time out at the other node.
        const message = `cannot reach Redis: ${(err as Error).message}`;
        for (const { id } of requests) this.settle({ id, error: { code: 'STORE_UNAVAILABLE', message } });
      },
    );
  }

  private receive(raw: Buffer): void {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(raw.toString('utf8')) as Envelope;
    } catch {
      return; // not ours: nothing to answer
    }
    for (const answer of Array.isArray(envelope.answers) ? envelope.answers : []) this.settle(answer);
    for (const request of Array.isArray(envelope.requests) ? envelope.requests : []) void this.answer(request);
    if (Array.isArray(envelope.marks)) {
      const marks = envelope.marks.slice(0, MAX_RELAYED_MARKS).filter(isDeliveredMark);
      if (marks.length > 0) this.takeMarks?.(marks);
    }
  }

  private async answer(request: Request): Promise<void> {
    if (
      typeof request?.id !== 'string' ||
      typeof request.from !== 'string' ||
      typeof request.groupId !== 'string' ||
      typeof request.senderId !== 'string'
    )
      return;
    const key = `${request.from}:${request.id}`;
    const given = this.answered.get(key);
    if (given) return this.post(request.from, 'answers', given); // its answer was lost: the same again
    if (this.serving.has(key)) return; // posted again while still being served: one answer comes
    this.serving.add(key);
    let answer: Answer;
    try {
      if (!this.serve) throw new WriterMovedError([request.groupId]);
      answer = {
        id: request.id,
        result: await this.serve({ groupId: request.groupId, senderId: request.senderId, payload: request.payload }),
      };
    } catch (err) {
      if (err instanceof WriterMovedError) answer = { id: request.id, moved: true };
      else {
        if (!(err instanceof ChorusError)) this.options.onInternalError(err, request);
        const error = err instanceof ChorusError ? err : new ChorusError('INTERNAL');
        answer = { id: request.id, error: { code: error.code, message: error.message } };
      }
    }
    this.serving.delete(key);
    this.answered.set(key, answer);
    if (this.answered.size > MAX_ANSWERS_KEPT) this.answered.delete(this.answered.keys().next().value!);
    this.post(request.from, 'answers', answer);
  }

  private settle(answer: Answer): void {
    const waiting = typeof answer?.id === 'string' ? this.waiting.get(answer.id) : undefined;
    if (!waiting) return; // timed out already
    this.waiting.delete(answer.id);
    clearTimeout(waiting.timer);
    clearTimeout(waiting.repost);
    if ('result' in answer)
      waiting.resolve({
        message: answer.result.message as StampedMessage,
        duplicate: answer.result.duplicate === true,
      });
    else if ('moved' in answer) waiting.reject(new WriterMovedError([]));
    else
      waiting.reject(
        new ChorusError(
          answer.error.code in errorCatalog ? answer.error.code : 'INTERNAL',
          String(answer.error.message),
        ),
      );
  }

  async close(): Promise<void> {
    for (const [, waiting] of this.waiting) {
      clearTimeout(waiting.timer);
      clearTimeout(waiting.repost);
      waiting.reject(new ChorusError('STORE_UNAVAILABLE', 'this node is shutting down'));
    }
    this.waiting.clear();
    this.takeMarks = undefined;
    await this.subscriber.unsubscribe().catch(() => undefined);
  }
}

/** A turn's requests and answers for one node, MAX_ENVELOPE_ITEMS of each per Redis message. */
function* inEnvelopes({ requests = [], answers = [] }: Envelope): Generator<Envelope> {
  for (let i = 0; i < Math.max(requests.length, answers.length); i += MAX_ENVELOPE_ITEMS)
    yield {
      ...(i < requests.length ? { requests: requests.slice(i, i + MAX_ENVELOPE_ITEMS) } : {}),
      ...(i < answers.length ? { answers: answers.slice(i, i + MAX_ENVELOPE_ITEMS) } : {}),
    };
}

const isDeliveredMark = (mark: unknown): mark is DeliveredMark => {
  const { groupId, userId, seq } = (mark ?? {}) as Partial<DeliveredMark>;
  return typeof groupId === 'string' && typeof userId === 'string' && Number.isSafeInteger(seq) && seq! > 0;
};
