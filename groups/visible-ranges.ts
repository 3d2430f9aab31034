import type { SeqRange } from './group-store.js';

/** The range of a group whose whole history its members see (history visibility `all`). */
export const WHOLE_HISTORY: SeqRange[] = [{ after: 0, until: null }];

/** The end of a range that is still open. */
export const END = Number.MAX_SAFE_INTEGER;

export const isWholeHistory = (ranges: SeqRange[]): boolean =>
  ranges.length === 1 && ranges[0]!.after === 0 && ranges[0]!.until === null;

/** Whether a reader with these ranges may see `seq`. */
export const isVisible = (ranges: SeqRange[], seq: number): boolean =>
  ranges.some((r) => seq > r.after && seq <= (r.until ?? END));
