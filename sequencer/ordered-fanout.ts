import type { StampedMessage } from '../protocol/index.js';
import type { MessageLog } from './message-log.js';

/** Hands a stored message to live delivery. */
export type Publish = (message: StampedMessage) => void;

export interface OrderedFanOutOptions {
  /** Recovered messages are those stored this recently: a dead writer's last ones, which it may not have delivered. */
  recoverWindowMs: number;
  /** At most this many messages are recovered for a group at once. */
  maxRecovered: number;
  /** Groups whose delivered seq is remembered; the least recently delivered is forgotten first. */
  maxGroups: number;
  onError: (err: unknown, groupId: string) => void;
}

export const DEFAULT_ORDERING: Omit<OrderedFanOutOptions, 'onError'> = { recoverWindowMs: 30_000, maxRecovered: 256, maxGroups: 100_000 };

/**
 * Keeps each group's live delivery in seq order and without holes on the node that writes it, also when the writer
 * changed. It remembers, per group, the highest seq it delivered, and:
 * - delivers a message only above that seq: a retry of a delivered message is not delivered again, while a retry of a
 *   message that a failed append stored unseen is delivered, in its place;
 * - fills a gap below a message from the log, before the message;
 * - for a group it knows nothing of (its first commit on this node since start, or after another node wrote it), first
 *   reads the group's newest messages and delivers the recent ones: a writer that died between its commit and its
 *   fan-out left them undelivered. This is at-least-once: members may receive such a message twice, with its seq.
 *
 * Reading the log holds the group's later deliveries back (in order, per group); other groups are not held.
 */
export class OrderedFanOut {
  private readonly delivered = new Map<string, number>();
  private readonly catchingUp = new Map<string, Promise<void>>();

  constructor(
    private readonly log: MessageLog,
    private readonly publish: Publish,
    private readonly options: OrderedFanOutOptions,
  ) {}

  /** Takes one commit's stored messages of a group, new ones and duplicates, in any order. */
  offer(groupId: string, messages: StampedMessage[]): void {
    if (messages.length === 0) return;
    const sorted = [...messages].sort((a, b) => a.seq - b.seq);
    const pending = this.catchingUp.get(groupId);
    const last = this.delivered.get(groupId);
    if (!pending && last !== undefined && (sorted.find((m) => m.seq > last)?.seq ?? last + 1) === last + 1) return this.deliver(groupId, sorted);
    const next = (pending ?? Promise.resolve()).then(() => this.catchUp(groupId, sorted));
    this.catchingUp.set(groupId, next);
    void next.then(() => {
      if (this.catchingUp.get(groupId) === next) this.catchingUp.delete(groupId);
    });
  }

  /** Forgets what it knows of a group: another node writes it now. */
  forget(groupId: string): void {
    this.delivered.delete(groupId);
  }

  private deliver(groupId: string, ascending: StampedMessage[]): void {
    let last = this.delivered.get(groupId) ?? 0;
    for (const message of ascending) {
      if (message.seq <= last) continue;
      this.publish(message);
      last = message.seq;
    }
    this.remember(groupId, last);
  }

  private async catchUp(groupId: string, ascending: StampedMessage[]): Promise<void> {
    const last = this.delivered.get(groupId);
    const recent = (m: StampedMessage) => Date.parse(m.createdAt) >= Date.now() - this.options.recoverWindowMs;
    try {
      if (last === undefined) {
        // The newest messages, this commit's among them: the recent ones are delivered, the rest count as delivered.
        const newest = (await this.log.readBefore(groupId, Number.MAX_SAFE_INTEGER, this.options.maxRecovered)).reverse();
        const recovered = newest.filter(recent);
        this.remember(groupId, (recovered[0]?.seq ?? (newest.at(-1)?.seq ?? 0) + 1) - 1);
        this.deliver(groupId, recovered);
      } else {
        // A gap below this commit: the recent messages in it are delivered first.
        const first = ascending.find((m) => m.seq > last)!.seq;
        const between = await this.log.readBefore(groupId, first, Math.min(first - last - 1, this.options.maxRecovered));
        this.deliver(groupId, between.reverse().filter(recent));
      }
    } catch (err) {
      this.options.onError(err, groupId); // the log is away: deliver what is at hand, holes and all
    }
    this.deliver(groupId, ascending);
  }

  private remember(groupId: string, seq: number): void {
    this.delivered.delete(groupId); // re-inserted last: the Map's order is least recently delivered first
    this.delivered.set(groupId, seq);
    if (this.delivered.size > this.options.maxGroups) this.delivered.delete(this.delivered.keys().next().value!);
  }
}
