import type { MemberRole } from '../protocol/index.js';

export type MembershipChange =
  | { kind: 'added'; groupId: string; userId: string; role: MemberRole; by: string }
  | { kind: 'removed'; groupId: string; userId: string; by: string }
  | { kind: 'role-changed'; groupId: string; userId: string; role: MemberRole; by: string }
  /** Every membership of the group ended at once; `userId` is the admin who deleted it. */
  | { kind: 'group-deleted'; groupId: string; userId: string; by: string };

/** Whether a change puts its user in its group (true), takes them out (false), or neither (undefined: a role change). */
export function joins(change: MembershipChange): boolean | undefined {
  if (change.kind === 'added') return true;
  if (change.kind === 'removed' || change.kind === 'group-deleted') return false;
  return undefined;
}

/** May return a promise: the local feed waits for it, so a change's REST call returns once this node has followed. */
export type MembershipListener = (change: MembershipChange) => void | Promise<void>;

/** Where membership changes can be heard: the functions `subscribe` and `onMissed` return unsubscribe. */
export interface MembershipChanges {
  subscribe(listener: MembershipListener): () => void;
  /**
   * Calls `listener` each time this node may have missed changes: its link to the other nodes was lost and is back
   * (a change published meanwhile reached no listener here). What listeners built from changes must be read again
   * from the store, which holds every change before it is published.
   */
  onMissed(listener: () => void): () => void;
}

/**
 * Carries membership changes to every part of Chorus that acts on them (in this process, or on every node).
 *
 * Contract:
 * - Every listener subscribed on any node when a change is published receives it once, unless that node's link to the
 *   others is down then: the node is told through `onMissed` once the link is back.
 * - `publish` resolves once every such listener has acted on the change (its promise settled), so a removal is in
 *   force everywhere when the call that made it returns; a node that does not answer is waited for a bounded time only.
 * - The function `subscribe` returns unsubscribes: that listener receives nothing published afterwards.
 */
export interface MembershipFeed extends MembershipChanges {
  publish(change: MembershipChange): Promise<void>;
}

/** The single-process feed: publish resolves once every listener has acted on the change. */
export class MembershipFeedLocal implements MembershipFeed {
  private readonly listeners = new Set<MembershipListener>();

  async publish(change: MembershipChange): Promise<void> {
    await Promise.all([...this.listeners].map((listener) => listener(change)));
  }

  subscribe(listener: MembershipListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** One process misses nothing: its listeners are called by publish itself. */
  onMissed(): () => void {
    return () => {};
  }
}
