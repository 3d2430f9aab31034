import type { MembershipChanges } from './membership-feed.js';

const TTL_MS = 60_000;

export interface MembershipCacheOptions<T> {
  /** What one group's entry counts against maxWeight (1 by default). */
  weigh?: (value: T) => number;
  /** Entries are dropped, least recently used first, while their weights add up to more than this. */
  maxWeight: number;
}

/**
 * Values that follow from a group's membership (its member count, its member ids), read from the store once and then
 * kept: every membership change on any node (the feed) drops the group's entry, every entry is dropped when the feed
 * says changes may have been missed (Redis was away), and entries expire after TTL_MS all the same; a read that a
 * change overtook is not kept. The entries' weights are bounded by maxWeight, the least recently used dropped first.
 */
export class MembershipCache<T> {
  private readonly entries = new Map<string, { value: T; weight: number; at: number }>();
  private weight = 0;
  /** Counts membership changes seen, so that a read overtaken by one is not kept. */
  private generation = 0;
  private readonly unsubscribe: (() => void)[];

  constructor(
    changes: MembershipChanges,
    private readonly options: MembershipCacheOptions<T>,
  ) {
    this.unsubscribe = [
      changes.subscribe((change) => {
        this.generation += 1;
        this.drop(change.groupId);
      }),
      changes.onMissed(() => {
        this.generation += 1;
        this.entries.clear();
        this.weight = 0;
      }),
    ];
  }

  /** The group's value as kept, or as `read` gives it (then kept); rejects when `read` does. */
  async get(groupId: string, read: () => Promise<T>): Promise<T> {
    const kept = this.entries.get(groupId);
    if (kept && performance.now() - kept.at < TTL_MS) {
      this.entries.delete(groupId); // re-inserted last: the Map's order is least recently used first
      this.entries.set(groupId, kept);
      return kept.value;
    }
    const generation = this.generation;
    const value = await read();
    if (generation === this.generation) {
      this.drop(groupId);
      const weight = this.options.weigh?.(value) ?? 1;
      if (weight <= this.options.maxWeight) {
        this.entries.set(groupId, { value, weight, at: performance.now() });
        this.weight += weight;
        while (this.weight > this.options.maxWeight) this.drop(this.entries.keys().next().value!);
      }
    }
    return value;
  }

  private drop(groupId: string): void {
    const entry = this.entries.get(groupId);
    if (!entry) return;
    this.entries.delete(groupId);
    this.weight -= entry.weight;
  }

  close(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
  }
}
