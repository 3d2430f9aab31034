import { ChorusError } from '../protocol/index.js';
import type { GroupStore } from './group-store.js';

/** How long a group's retention is remembered: a change made on another node is seen within this. */
const REMEMBER_MS = 60_000;
/** Groups whose retention is remembered (the least recently read go first). */
const MAX_REMEMBERED = 100_000;

export const DAY_MS = 86_400_000;

/**
 * How long each group keeps its messages: the days its admins chose, or else the operator's `retentionDays`; 0 keeps
 * them for good. The operator's figure is also the most a group may choose (when it is not 0). Read on every append
 * of the cluster tier (the rows' TTL) and by the embedded tier's pruner, so it answers from memory.
 */
export class Retention {
  private readonly remembered = new Map<string, { days: number; until: number }>();

  constructor(
    private readonly store: Pick<GroupStore, 'getGroup'>,
    /** The operator's retentionDays: the default, and the most a group may choose (0: no limit). */
    readonly operatorDays: number,
  ) {}

  /** The group's retention in days (0: for good); an unknown group has the operator's. */
  async days(groupId: string): Promise<number> {
    const known = this.remembered.get(groupId);
    if (known && known.until > performance.now()) return known.days;
    const days = (await this.store.getGroup(groupId))?.retentionDays ?? this.operatorDays;
    this.remembered.delete(groupId); // re-inserted last: the map's order is the order of use
    this.remembered.set(groupId, { days, until: performance.now() + REMEMBER_MS });
    if (this.remembered.size > MAX_REMEMBERED) this.remembered.delete(this.remembered.keys().next().value!);
    return days;
  }

  /** The group's retention in milliseconds (0: for good). */
  async ms(groupId: string): Promise<number> {
    return (await this.days(groupId)) * DAY_MS;
  }

  /** Refuses (RETENTION_TOO_LONG) what a group may not choose: more than the operator's retention. */
  check(days: number): void {
    if (this.operatorDays > 0 && days > this.operatorDays)
      throw new ChorusError('RETENTION_TOO_LONG', `this server keeps messages at most ${this.operatorDays} days`);
  }

  /** The group's setting changed on this node: read it again next time. */
  forget(groupId: string): void {
    this.remembered.delete(groupId);
  }
}
