import type { SeqRange } from '../groups/group-store.js';
import { END } from '../groups/visible-ranges.js';
import type { StampedMessage } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';

/**
 * A history page within the reader's visible seq ranges: after `afterSeq` ascending (below `beforeSeq` too when both
 * are given); otherwise below `beforeSeq`, or from the newest, descending. Each range is read as one slice of the log,
 * so the gaps between a member's ranges cost nothing and never make a page come back short while more follows.
 */
export async function readVisible(
  log: MessageLog,
  groupId: string,
  ranges: SeqRange[],
  afterSeq: number | undefined,
  beforeSeq: number | undefined,
  limit: number,
): Promise<StampedMessage[]> {
  const out: StampedMessage[] = [];
  const end = beforeSeq ?? END; // exclusive
  if (afterSeq !== undefined) {
    for (const range of [...ranges].sort((a, b) => a.after - b.after)) {
      const from = Math.max(afterSeq, range.after, out.at(-1)?.seq ?? 0); // exclusive
      const to = Math.min(end - 1, range.until ?? END); // inclusive
      if (to <= from) continue;
      const page = await log.readAfter(groupId, from, Math.min(limit - out.length, to - from));
      out.push(...page);
      if (out.length >= limit || page.length === 0) break;
    }
    return out;
  }
  for (const range of [...ranges].sort((a, b) => b.after - a.after)) {
    const below = Math.min(end, out.at(-1)?.seq ?? END, (range.until ?? END - 1) + 1); // exclusive
    if (below - 1 <= range.after) continue;
    const page = await log.readBefore(groupId, below, Math.min(limit - out.length, below - 1 - range.after));
    out.push(...page.filter((m) => m.seq > range.after));
    if (out.length >= limit) break;
  }
  return out;
}
