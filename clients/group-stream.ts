import type { StampedMessage } from '../protocol/index.js';

/**
 * Reads the group's history after a seq, ascending (an empty page means there is nothing more yet), with the lowest
 * seq still kept: those below it have expired.
 */
export type FetchAfter = (
  afterSeq: number,
  limit: number,
) => Promise<{ messages: StampedMessage[]; retainedFrom: number }>;

/** Live messages held while waiting for a gap to be filled; past this, later ones are re-read from history. */
const MAX_BUFFERED = 10_000;
const PAGE = 500;
const MAX_IDLE_PASSES = 20;

/**
 * One group's message stream, delivered strictly in seq order with no gaps and no duplicates, whatever order and
 * multiplicity messages arrive in. A message past the next expected seq is buffered and the gap is filled from
 * history; one already delivered is dropped. `lastDelivered` is the recovery position. Messages that expired
 * (retention) before they could be delivered are not a gap: the stream steps over them and says which they were.
 */
export class GroupStream {
  private readonly buffer = new Map<number, StampedMessage>();
  private filling: Promise<void> | null = null;
  private refill = false;
  /** The next read of history after a failed one, when it is tried again; failures since the last read that worked. */
  private retry: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private stopped = false;

  constructor(
    readonly groupId: string,
    public lastDelivered: number,
    private readonly fetchAfter: FetchAfter,
    private readonly deliver: (message: StampedMessage) => void,
    private readonly onError: (err: unknown) => void,
    /** Seqs from..through expired before they were delivered: the stream goes on after them. */
    private readonly onExpired: (from: number, through: number) => void,
    /**
     * After a failed read of history (also told to onError): how long until it is tried again, or undefined when it is
     * not (the error lasts). `failures` counts the failed reads in a row, from 0.
     */
    private readonly retryDelayMs: (err: unknown, failures: number) => number | undefined,
  ) {}

  /** A message from the live subscription. */
  offer(message: StampedMessage): void {
    if (message.seq <= this.lastDelivered) return;
    if (message.seq === this.lastDelivered + 1 && !this.filling) {
      this.emit(message);
      this.drainBuffer();
      return;
    }
    if (this.buffer.size < MAX_BUFFERED) this.buffer.set(message.seq, message);
    void this.catchUp();
  }

  /** Reads history from the position until it is exhausted (after a (re)connect, or when a gap shows). */
  catchUp(): Promise<void> {
    if (this.filling) {
      this.refill = true;
      return this.filling;
    }
    if (this.retry) clearTimeout(this.retry); // this read is the retry
    this.retry = null;
    this.filling = this.fill().finally(() => {
      this.filling = null;
    });
    return this.filling;
  }

  private async fill(): Promise<void> {
    try {
      let idlePasses = 0;
      do {
        const before = this.lastDelivered;
        this.refill = false;
        for (;;) {
          const { messages, retainedFrom } = await this.fetchAfter(this.lastDelivered, PAGE);
          if (retainedFrom > this.lastDelivered + 1) {
            const from = this.lastDelivered + 1;
            this.lastDelivered = retainedFrom - 1;
            this.onExpired(from, this.lastDelivered);
          }
          for (const message of messages) if (message.seq === this.lastDelivered + 1) this.emit(message);
          this.drainBuffer();
          if (messages.length < PAGE) break;
        }
        // A gap that history cannot fill yet (a replica behind the live path) is retried with a pause, not a spin.
        idlePasses = this.lastDelivered === before ? idlePasses + 1 : 0;
        if (idlePasses > MAX_IDLE_PASSES) throw new Error(`history has no message ${this.lastDelivered + 1} yet`);
        if (idlePasses > 0) await new Promise((resolve) => setTimeout(resolve, 100 * idlePasses));
      } while (this.refill || this.hasGap());
      this.failures = 0;
    } catch (err) {
      this.onError(err);
      // Nothing else may come to start another read (no new message, no reconnect): a gap would stay open, and the
      // messages buffered behind it undelivered.
      const delay = this.retryDelayMs(err, this.failures++);
      if (delay !== undefined && !this.stopped) {
        this.retry = setTimeout(() => void this.catchUp(), delay);
      }
    }
  }

  /** Stops trying again: the stream is no longer wanted (left, or its client closed). */
  stop(): void {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }

  private hasGap(): boolean {
    for (const seq of this.buffer.keys()) if (seq > this.lastDelivered) return true;
    return false;
  }

  private drainBuffer(): void {
    for (let next = this.buffer.get(this.lastDelivered + 1); next; next = this.buffer.get(this.lastDelivered + 1)) {
      this.emit(next);
    }
    for (const seq of this.buffer.keys()) if (seq <= this.lastDelivered) this.buffer.delete(seq);
  }

  private emit(message: StampedMessage): void {
    this.buffer.delete(message.seq);
    this.lastDelivered = message.seq;
    this.deliver(message);
  }
}
