import type { StampedMessage } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';

/** Anything delivered in a group's seq order. */
export interface Sequenced {
  seq: number;
}

export interface OrderedDeliveryOptions {
  /**
   * For a group it knows nothing of: deliver the messages stored this recently before anything else (a writer that
   * died between its commit and its fan-out left them undelivered), or 0 to start from what comes.
   */
  recoverWindowMs: number;
  /** In a gap below a message: deliver the messages stored this recently (Infinity: all of them) before it. */
  gapWindowMs: number;
  /** At most this many messages are read from the log in one read. */
  maxRead: number;
  /** At most this many messages of one gap are delivered (its newest); a longer gap is left to the history API. */
  maxGap: number;
  /** Groups whose delivered seq is remembered; the least recently delivered is forgotten first. */
  maxGroups: number;
  onError: (err: unknown, groupId: string) => void;
}

/**
 * Keeps each group's live delivery in seq order and without holes, reading what is missing from the message log. It
 * remembers, per group, the highest seq it delivered, and:
 * - delivers a message only above that seq: a message that comes again is not delivered again, while a retry of a
 *   message that a failed append stored unseen is delivered, in its place;
 * - fills a gap below a message from the log, before the message (messages older than gapWindowMs are left to the
 *   history API);
 * - for a group it knows nothing of, with a recoverWindowMs, first reads the group's newest messages and delivers the
 *   recent ones. That is at-least-once: members may receive such a message twice, with its seq.
 *
 * Reading the log holds the group's later deliveries back (in order, per group); other groups are not held. Used on
 * the writer, between the sequencer and the fan-out, and on every node, between the fan-out and the broker.
 */
export class OrderedDelivery<T extends Sequenced> {
  private readonly delivered = new Map<string, number>();
  private readonly reading = new Map<string, Promise<void>>();

  constructor(
    private readonly log: MessageLog,
    private readonly publish: (groupId: string, item: T) => void,
    private readonly fromLog: (message: StampedMessage) => T,
    private readonly options: OrderedDeliveryOptions,
  ) {}

  /** Takes items of one group (one commit's, or one that arrived), in any order. */
  offer(groupId: string, items: T[]): void {
    if (items.length === 0) return;
    const sorted = items.length === 1 ? items : [...items].sort((a, b) => a.seq - b.seq);
    const pending = this.reading.get(groupId);
    const last = this.delivered.get(groupId);
    const next = last === undefined ? undefined : sorted.find((item) => item.seq > last)?.seq;
    const contiguous = last !== undefined && (next === undefined || next === last + 1);
    if (!pending && (contiguous || (last === undefined && this.options.recoverWindowMs === 0)))
      return this.deliver(groupId, sorted);
    void this.afterReads(groupId, () => this.readThenDeliver(groupId, sorted));
  }

  /** The groups whose delivered seq it remembers. */
  groups(): string[] {
    return [...this.delivered.keys()];
  }

  /**
   * Delivers what the log holds above the group's delivered seq (its newest maxGap at most), after any read under
   * way: for a node that may have missed messages, with nothing newer arriving to show it the gap. A group it knows
   * nothing of is left alone.
   */
  catchUp(groupId: string): Promise<void> {
    if (!this.delivered.has(groupId)) return Promise.resolve();
    return this.afterReads(groupId, () => this.readNewer(groupId));
  }

  /** Runs `read` once the group's reads under way are done; the group's later deliveries wait for it. */
  private afterReads(groupId: string, read: () => Promise<void>): Promise<void> {
    const done = (this.reading.get(groupId) ?? Promise.resolve()).then(read);
    this.reading.set(groupId, done);
    void done.then(() => {
      if (this.reading.get(groupId) === done) this.reading.delete(groupId);
    });
    return done;
  }

  /** Forgets what it knows of a group: another node writes it now. */
  forget(groupId: string): void {
    this.delivered.delete(groupId);
  }

  private deliver(groupId: string, ascending: T[]): void {
    let last = this.delivered.get(groupId) ?? 0;
    for (const item of ascending) {
      if (item.seq <= last) continue;
      this.publish(groupId, item);
      last = item.seq;
    }
    this.remember(groupId, last);
  }

  private async readThenDeliver(groupId: string, ascending: T[]): Promise<void> {
    const last = this.delivered.get(groupId);
    const since = (windowMs: number) => Date.now() - windowMs;
    try {
      if (last === undefined && this.options.recoverWindowMs > 0) {
        // The newest messages, this commit's among them: the recent ones are delivered, the rest count as delivered.
        const newest = (
          await this.log.readBefore(
            groupId,
            Number.MAX_SAFE_INTEGER,
            Math.min(this.options.maxGap, this.options.maxRead),
          )
        ).reverse();
        const recent = newest.filter((m) => Date.parse(m.createdAt) >= since(this.options.recoverWindowMs));
        this.remember(groupId, (recent[0]?.seq ?? (newest.at(-1)?.seq ?? 0) + 1) - 1);
        this.deliver(groupId, recent.map(this.fromLog));
      } else if (last !== undefined) {
        const first = ascending.find((item) => item.seq > last)?.seq;
        if (first !== undefined) await this.fillGap(groupId, last, first);
      }
    } catch (err) {
      this.options.onError(err, groupId); // the log is away: deliver what is at hand, holes and all
    }
    this.deliver(groupId, ascending);
  }

  /**
   * Fills the gap between seqs `last` and `first`: its newest maxGap messages, page by page, each page delivered
   * before the next is read.
   */
  private async fillGap(groupId: string, last: number, first: number): Promise<void> {
    const since = Date.now() - this.options.gapWindowMs;
    for (let after = Math.max(last, first - 1 - this.options.maxGap); after < first - 1; ) {
      const page = await this.log.readAfter(groupId, after, Math.min(first - 1 - after, this.options.maxRead));
      if (page.length === 0) break;
      this.deliver(groupId, page.filter((m) => m.seq < first && Date.parse(m.createdAt) >= since).map(this.fromLog));
      after = page.at(-1)!.seq;
    }
  }

  /** The gap between the delivered seq and the log's last, filled as one below an arriving message would be. */
  private async readNewer(groupId: string): Promise<void> {
    const last = this.delivered.get(groupId);
    if (last === undefined) return;
    try {
      const newest = await this.log.lastSeq(groupId);
      await this.fillGap(groupId, last, newest + 1);
      // What the gap left out (older than gapWindowMs, or below its newest maxGap) counts as delivered, as below an
      // arriving message: the history API has it.
      if (newest > (this.delivered.get(groupId) ?? 0)) this.remember(groupId, newest);
    } catch (err) {
      this.options.onError(err, groupId);
    }
  }

  private remember(groupId: string, seq: number): void {
    this.delivered.delete(groupId); // re-inserted last: the Map's order is least recently delivered first
    this.delivered.set(groupId, seq);
    if (this.delivered.size > this.options.maxGroups) this.delivered.delete(this.delivered.keys().next().value!);
  }
}
