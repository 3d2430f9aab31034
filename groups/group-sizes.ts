import type { Groups } from './groups.js';

const TTL_MS = 60_000;
const MAX_GROUPS = 10_000;

/**
 * Member counts of groups, for decisions that depend on a group's size (are live events pushed to its members, is
 * every message pushed or only mentions), read from the store's counter once and then kept. Every membership change
 * on any node (the feed) drops the group's entry, and entries expire after TTL_MS in case a change was missed (Redis
 * away); a read that a change overtook is not kept. At most MAX_GROUPS entries, the least recently read first out.
 */
export class GroupSizes {
  private readonly sizes = new Map<string, { members: number; at: number }>();
  /** Counts membership changes seen, so that a read overtaken by one is not kept. */
  private generation = 0;
  private readonly unsubscribe: () => void;

  constructor(private readonly groups: Groups) {
    this.unsubscribe = groups.subscribe((change) => {
      this.generation += 1;
      this.sizes.delete(change.groupId);
    });
  }

  /** The group's member count, from the store or as kept; rejects when the store cannot say. */
  async of(groupId: string): Promise<number> {
    const kept = this.sizes.get(groupId);
    if (kept && performance.now() - kept.at < TTL_MS) return kept.members;
    const generation = this.generation;
    const members = await this.groups.countMembers(groupId);
    if (generation === this.generation) {
      this.sizes.delete(groupId); // re-inserted last: the Map's order is least recently read first
      this.sizes.set(groupId, { members, at: performance.now() });
      if (this.sizes.size > MAX_GROUPS) this.sizes.delete(this.sizes.keys().next().value!);
    }
    return members;
  }

  close(): void {
    this.unsubscribe();
  }
}
