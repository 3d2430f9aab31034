import type { Redis } from 'ioredis';
import type { StampedMessage } from '../protocol/index.js';
import { type Deliver, type FanOut, Publishers } from './fan-out.js';

const CHANNEL = 'chorus:fanout';
/** Bytes in one Redis message, far below Redis's output-buffer limit for pub/sub subscribers (32 MB by default). */
const MAX_MESSAGE_BYTES = 256 * 1024;

/** Byte values of the line framing: ASCII, so they never occur inside a multi-byte UTF-8 character. */
const NEWLINE = 0x0a;
const SPACE = 0x20;

/**
 * Fan-out over Redis pub/sub, for many nodes. The writing node delivers to its own subscribers at once and publishes
 * each commit's messages together on one Redis channel, where every other node picks them up (a node skips what it
 * published itself). Pub/sub keeps nothing: a node away from Redis misses messages, which it reads from the log once it
 * is subscribed again (onMissed); the writer's own subscribers keep being served while Redis is away.
 *
 * A Redis message is the publishing node's id on its first line, then a line per message: the group id (ASCII, without
 * spaces), a space, the seq, a space, the message as JSON (which has no newlines).
 */
export class FanOutRedis implements FanOut {
  private outbox: string[] = [];
  private outboxBytes = 0;
  private flushScheduled = false;
  private deliver: Deliver | undefined;
  private missed: (() => void) | undefined;
  private readonly header: string;
  private readonly publishers = new Publishers();

  private constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    private readonly nodeId: string,
  ) {
    this.header = `${nodeId}\n`;
  }

  /** Listens on the fan-out channel; `subscriber` becomes a subscriber-only connection. `nodeId` must be unique. */
  static async start(publisher: Redis, subscriber: Redis, nodeId: string): Promise<FanOutRedis> {
    const fanOut = new FanOutRedis(publisher, subscriber, nodeId);
    subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString() === CHANNEL) fanOut.receive(message);
    });
    await subscriber.subscribe(CHANNEL);
    // Connected again (Redis restarted, a failover, a cut link): whatever was published meanwhile never reached this
    // node. Subscribed again here (ioredis does too, right after this event), and once Redis confirms it, everything
    // published from then on arrives: what came before is told to be read from the log.
    subscriber.on('ready', () => {
      subscriber.subscribe(CHANNEL).then(
        () => fanOut.missed?.(),
        () => undefined, // cut again: the next 'ready' tries again
      );
    });
    return fanOut;
  }

  onDeliver(deliver: Deliver): void {
    this.deliver = deliver;
  }

  onMissed(missed: () => void): void {
    this.missed = missed;
  }

  /** Delivers here at once; everything published in one turn of the event loop leaves for the others together, in order. */
  publish(message: StampedMessage): void {
    const json = JSON.stringify(message);
    this.publishers.heard(message.groupId, this.nodeId);
    this.deliver?.(message.groupId, message.seq, Buffer.from(json));
    const line = `${message.groupId} ${message.seq} ${json}`;
    const bytes = Buffer.byteLength(line) + 1;
    if (this.outboxBytes + bytes > MAX_MESSAGE_BYTES) this.flush();
    this.outbox.push(line);
    this.outboxBytes += bytes;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0) return;
    const body = this.header + this.outbox.join('\n');
    this.outbox = [];
    this.outboxBytes = 0;
    // Lost with Redis: other nodes' subscribers see a gap at the next message and read it from history.
    this.publisher.publish(CHANNEL, body).catch(() => undefined);
  }

  /** Each message's bytes are handed on as a view of the body: decoding and encoding them again would only copy. */
  private receive(body: Buffer): void {
    const headerEnd = body.indexOf(NEWLINE);
    if (headerEnd === -1) return;
    const publisher = body.toString('latin1', 0, headerEnd);
    if (publisher === this.nodeId) return;
    for (let start = headerEnd + 1; start < body.length; ) {
      const newline = body.indexOf(NEWLINE, start);
      const end = newline === -1 ? body.length : newline;
      const space = body.indexOf(SPACE, start);
      const seqEnd = space === -1 ? -1 : body.indexOf(SPACE, space + 1);
      if (space > start && seqEnd > space && seqEnd < end) {
        const seq = Number(body.toString('latin1', space + 1, seqEnd));
        const groupId = body.toString('latin1', start, space);
        this.publishers.heard(groupId, publisher);
        this.deliver?.(groupId, seq, body.subarray(seqEnd + 1, end));
      }
      start = end + 1;
    }
  }

  publisherOf(groupId: string): string | undefined {
    return this.publishers.of(groupId);
  }

  async close(): Promise<void> {
    this.deliver = undefined;
    await this.subscriber.unsubscribe(CHANNEL).catch(() => undefined);
  }
}
