import { ChorusError } from '../protocol/index.js';

/** Where a group's appends run: on this node, under the epoch of its hold, or on the live node that holds the group. */
export type GroupWriter = { here: true; epoch: number } | { here: false; nodeId: string };

/**
 * Thrown by an append (and so by a send) for groups this node does not write: their sends must go to the writer.
 * Nothing of these groups was written by the call that throws it.
 */
export class WriterMovedError extends Error {
  constructor(readonly groupIds: string[]) {
    super(`this node does not write group ${groupIds.join(', ')}`);
    this.name = 'WriterMovedError';
  }
}

/**
 * Who appends to each group's log. One writer per group lets stamping be plain writes: the writer keeps the group's
 * last seq in memory, and no other node stamps that group meanwhile.
 *
 * Contract:
 * - Exclusion: at most one node holds a group at any instant. A hold is valid for a bounded time after this node last
 *   proved itself alive; a writer checks `holding()` immediately before each write, and a node taking a group over from
 *   a dead one first waits until that node's last writes can no longer land.
 * - Epochs: every acquisition of a group gets a larger epoch than the one before, so state cached under another epoch
 *   (a last seq, say) is stale and must be read again from the log.
 * - `writerOf` answers `here` when this node holds the group, acquiring it when no live node does (which may wait out a
 *   dead writer), and otherwise names the live node that holds it. It rejects with STORE_UNAVAILABLE when the authority
 *   on holds cannot be reached, or this node's own hold has lapsed and cannot be renewed.
 * - `holding` is synchronous and answers for this instant: the epoch of a valid hold, or undefined.
 * - `forget` drops what this node remembers of another node's hold (after a send forwarded there failed).
 */
export interface GroupWriters {
  /** This node's address for sends forwarded by other nodes. */
  readonly nodeId: string;
  /** True once close() was called: writerOf rejects from then on. */
  readonly closed: boolean;
  writerOf(groupId: string): Promise<GroupWriter>;
  holding(groupId: string): number | undefined;
  forget(groupId: string): void;
  /** Gives up every hold (so other nodes take them over without waiting) and stops renewing. */
  close(): Promise<void>;
}

/** One process writes every group: the memory implementation, for a node that is alone. */
export class GroupWritersLocal implements GroupWriters {
  closed = false;

  constructor(readonly nodeId: string) {}

  async writerOf(): Promise<GroupWriter> {
    if (this.closed) throw new ChorusError('STORE_UNAVAILABLE', 'this node is shutting down');
    return { here: true, epoch: 1 };
  }

  holding(): number | undefined {
    return this.closed ? undefined : 1;
  }

  forget(): void {}

  async close(): Promise<void> {
    this.closed = true;
  }
}
