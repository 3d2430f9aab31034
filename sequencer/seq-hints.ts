/**
 * Per-group "last seq" hints shared by every node (Redis in a cluster). A hint is never above the log's truth: it is
 * raised only after a message is stored, so a stamp at hint + 1 either lands at the true next seq or conflicts.
 * A missing hint (Redis restarted or flushed) is re-seeded from the log before the next stamp.
 */
export interface SeqHints {
  /** The hint, or undefined when there is none. */
  get(groupId: string): Promise<number | undefined>;
  /** Raises the hint to `seq` if it is lower (never lowers it). */
  raise(groupId: string, seq: number): Promise<void>;
}
