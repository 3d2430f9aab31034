import type { Logger } from 'pino';
import type { DeliveredMark } from '../groups/group-store.js';

export interface DeliveredMarksOptions {
  /** How often the marks noted meanwhile are written, as one batch. */
  flushMs: number;
  /** Distinct (group, member) marks held between flushes; one more starts a flush at once. */
  maxPending: number;
}

/**
 * Delivered watermarks: per member and group, the highest seq that reached one of the member's devices (a live
 * delivery PUBACKed, or a history page returned to them). Noting one is a map update; the marks noted meanwhile are
 * written every `flushMs` as one batch (never one store write per PUBACK), and then told to whoever listens (the
 * group's members, in small groups). A batch the store refuses is dropped: a later delivery carries a higher mark.
 */
export class DeliveredMarks {
  /** Group id -> member id -> mark: two lookups per PUBACK, no key built for it. */
  private pending = new Map<string, Map<string, DeliveredMark>>();
  private pendingCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly store: { raiseDelivered(marks: DeliveredMark[]): Promise<void> },
    private readonly told: (marks: DeliveredMark[]) => void,
    private readonly options: DeliveredMarksOptions,
    private readonly logger: Logger,
  ) {}

  note(groupId: string, userId: string, seq: number): void {
    if (this.closed) return;
    let group = this.pending.get(groupId);
    if (!group) this.pending.set(groupId, (group = new Map()));
    const mark = group.get(userId);
    if (mark) {
      if (seq > mark.seq) mark.seq = seq;
      return;
    }
    group.set(userId, { groupId, userId, seq });
    if (++this.pendingCount >= this.options.maxPending) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.options.flushMs).unref();
  }

  /** Writes what is pending now; resolves when that batch (and every one before it) is written or dropped. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pendingCount === 0) return this.flushing;
    const marks: DeliveredMark[] = [];
    for (const group of this.pending.values()) for (const mark of group.values()) marks.push(mark);
    this.pending = new Map();
    this.pendingCount = 0;
    this.flushing = this.flushing.then(() =>
      this.store.raiseDelivered(marks).then(
        () => this.told(marks),
        (err: unknown) =>
          this.logger.warn(
            { err: (err as Error).message, marks: marks.length },
            'delivered watermarks not stored; later deliveries carry them',
          ),
      ),
    );
    return this.flushing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }
}
