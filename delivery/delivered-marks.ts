import type { Logger } from 'pino';
import type { DeliveredMark } from '../groups/group-store.js';
import { MAX_RELAYED_MARKS } from '../sequencer/send-forwarding.js';

export interface DeliveredMarksOptions {
  /** How often the marks noted meanwhile are written, as one batch. */
  flushMs: number;
  /** Distinct (group, member) marks held between flushes; one more starts a flush at once. */
  maxPending: number;
}

/** Where a node sends the marks of groups another node writes (a node alone has none). */
export interface MarksRelay {
  /** This node's id, as writerOf names nodes. */
  readonly nodeId: string;
  /** The node that writes the group, as far as this node heard; undefined when not known. */
  writerOf(groupId: string): string | undefined;
  /**
   * Hands marks to that node, which stores and tells them with its own. Rejects when they cannot reach it: this node
   * keeps them. At most MAX_RELAYED_MARKS.
   */
  send(nodeId: string, marks: DeliveredMark[]): Promise<void>;
}

/** One group's marks held for the next flush. */
interface PendingGroup {
  /** Member id -> mark. */
  marks: Map<string, DeliveredMark>;
  /** Holds marks another node relayed here: they are written here, never relayed on (so that none circles). */
  stay: boolean;
}

/**
 * Delivered watermarks: per member and group, the highest seq that reached one of the member's devices (a live
 * delivery PUBACKed, or a history page returned to them). Noting one is a map update; the marks noted meanwhile are
 * written every `flushMs` as one batch (never one store write per PUBACK), and then told to whoever listens (the
 * group's members, in small groups). A batch the store refuses is dropped: a later delivery carries a higher mark.
 *
 * In a cluster a group's members are spread over the nodes, and each node notes the marks of its own. Were each to
 * write and tell them, a group with traffic would cost a store write and an event to every member per node per flush:
 * growing with the nodes, for the same deliveries. So a node relays the marks of the groups another node writes to
 * that node (one message per node and flush), and each group's marks are written and told once per flush, by its
 * writer, at most one flush later. A mark whose group's writer is not known here, or whose relay cannot reach it, is
 * written here, as before.
 */
export class DeliveredMarks {
  /** Group id -> its marks: two lookups per PUBACK, no key built for it. */
  private pending = new Map<string, PendingGroup>();
  private pendingCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly store: { raiseDelivered(marks: DeliveredMark[]): Promise<void> },
    private readonly told: (marks: DeliveredMark[]) => void,
    private readonly options: DeliveredMarksOptions,
    private readonly logger: Logger,
    private readonly relay?: MarksRelay,
  ) {}

  note(groupId: string, userId: string, seq: number): void {
    if (!this.closed) this.add(groupId, userId, seq, false);
  }

  /** Marks another node relayed to this one, the writer of their groups: written and told with this node's own. */
  relayed(marks: DeliveredMark[]): void {
    if (this.closed) return;
    for (const { groupId, userId, seq } of marks) this.add(groupId, userId, seq, true);
  }

  private add(groupId: string, userId: string, seq: number, relayed: boolean): void {
    let group = this.pending.get(groupId);
    if (!group) this.pending.set(groupId, (group = { marks: new Map(), stay: false }));
    if (relayed) group.stay = true;
    const mark = group.marks.get(userId);
    if (mark) {
      if (seq > mark.seq) mark.seq = seq;
      return;
    }
    group.marks.set(userId, { groupId, userId, seq });
    if (++this.pendingCount >= this.options.maxPending) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.options.flushMs).unref();
  }

  /**
   * Relays what is pending of groups other nodes write, and writes the rest; resolves when that batch (and every one
   * before it) is written or dropped.
   */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pendingCount === 0) return this.flushing;
    const here: DeliveredMark[] = [];
    const elsewhere = new Map<string, DeliveredMark[]>();
    for (const [groupId, group] of this.pending) {
      let marks = here;
      const writer = group.stay ? undefined : this.relay?.writerOf(groupId);
      if (writer !== undefined && writer !== this.relay!.nodeId) {
        const relayed = elsewhere.get(writer) ?? [];
        if (relayed.length + group.marks.size <= MAX_RELAYED_MARKS) elsewhere.set(writer, (marks = relayed));
      }
      for (const mark of group.marks.values()) marks.push(mark);
    }
    this.pending = new Map();
    this.pendingCount = 0;
    // A relay that cannot reach its node (Redis away, the writer gone) is written here, at the next flush.
    for (const [nodeId, marks] of elsewhere) this.relay!.send(nodeId, marks).catch(() => this.relayed(marks));
    if (here.length === 0) return this.flushing;
    this.flushing = this.flushing.then(() =>
      this.store.raiseDelivered(here).then(
        () => this.told(here),
        (err: unknown) =>
          this.logger.warn(
            { err: (err as Error).message, marks: here.length },
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
