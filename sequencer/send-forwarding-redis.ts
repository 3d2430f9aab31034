import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ChorusError, errorCatalog, type ErrorCode, type StampedMessage } from '../protocol/index.js';
import { WriterMovedError } from './group-writers.js';
import type { SendResult } from './sequencer.js';
import type { ForwardedSend, SendForwarding, SendForwardingOptions } from './send-forwarding.js';

type Answer =
  | { id: string; result: SendResult }
  | { id: string; error: { code: ErrorCode; message: string } }
  | { id: string; moved: true };
interface Request extends ForwardedSend {
  id: string;
  from: string;
}
/** What travels on a node's channel: requests for it to serve and answers to its own requests, batched per turn. */
interface Envelope {
  requests?: Request[];
  answers?: Answer[];
}

const channelOf = (nodeId: string) => `chorus:sends:${nodeId}`;

/**
 * Sends forwarded between nodes over Redis pub/sub, one channel per node. Pub/sub delivers at most once and keeps
 * nothing: a request lost with Redis or with the node that was to serve it times out, and the sender's retry (same
 * clientMsgId) is deduplicated by the log. Requests and answers leaving in one turn of the event loop share a message.
 */
export class SendForwardingRedis implements SendForwarding {
  private readonly waiting = new Map<
    string,
    { to: string; resolve: (r: SendResult) => void; reject: (e: unknown) => void; timer: NodeJS.Timeout }
  >();
  private readonly outbox = new Map<string, Envelope>();
  private flushScheduled = false;
  private serve: ((send: ForwardedSend) => Promise<SendResult>) | undefined;

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
    await subscriber.subscribe(channelOf(nodeId));
    return forwarding;
  }

  onRequest(handler: (send: ForwardedSend) => Promise<SendResult>): void {
    this.serve = handler;
  }

  forward(nodeId: string, send: ForwardedSend): Promise<SendResult> {
    if (this.waiting.size >= this.options.maxPending) return Promise.reject(new ChorusError('OVERLOADED'));
    const id = randomUUID();
    return new Promise<SendResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(
          new ChorusError(
            'STORE_UNAVAILABLE',
            'the node that writes this group did not answer; retry with the same clientMsgId',
          ),
        );
      }, this.options.timeoutMs);
      this.waiting.set(id, { to: nodeId, resolve, reject, timer });
      this.post(nodeId, 'requests', { id, from: this.nodeId, ...send });
    });
  }

  private post<K extends keyof Envelope>(nodeId: string, kind: K, item: NonNullable<Envelope[K]>[number]): void {
    let envelope = this.outbox.get(nodeId);
    if (!envelope) this.outbox.set(nodeId, (envelope = {}));
    ((envelope[kind] ??= []) as unknown[]).push(item);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const [to, batch] of this.outbox) {
        const requests = batch.requests ?? [];
        this.publisher.publish(channelOf(to), JSON.stringify(batch)).then(
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
      this.outbox.clear();
    });
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
  }

  private async answer(request: Request): Promise<void> {
    if (
      typeof request?.id !== 'string' ||
      typeof request.from !== 'string' ||
      typeof request.groupId !== 'string' ||
      typeof request.senderId !== 'string'
    )
      return;
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
    this.post(request.from, 'answers', answer);
  }

  private settle(answer: Answer): void {
    const waiting = typeof answer?.id === 'string' ? this.waiting.get(answer.id) : undefined;
    if (!waiting) return; // timed out already
    this.waiting.delete(answer.id);
    clearTimeout(waiting.timer);
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
      waiting.reject(new ChorusError('STORE_UNAVAILABLE', 'this node is shutting down'));
    }
    this.waiting.clear();
    await this.subscriber.unsubscribe().catch(() => undefined);
  }
}
