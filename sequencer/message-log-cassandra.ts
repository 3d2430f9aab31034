import { setTimeout as sleep } from 'node:timers/promises';
import cassandra from 'cassandra-driver';
import {
  ChorusError,
  contentOf,
  ERASED_BY_DELETE,
  effectOf,
  type ReactionCount,
  type StampedMessage,
} from '../protocol/index.js';
import { WRITE_LANDS_WITHIN_MS, type CassandraSession } from '../cassandra/session.js';
import {
  countReactions,
  toStampedMessage,
  type AppendOutcome,
  type GroupAppend,
  type MessageDraft,
  type MessageLog,
} from './message-log.js';
import { WriterMovedError, type GroupWriters } from './group-writers.js';

/** Messages per partition: (group_id, bucket) holds seqs [bucket * BUCKET, (bucket + 1) * BUCKET). */
export const BUCKET = 1000;
const bucketOf = (seq: number): number => Math.floor(seq / BUCKET);
/** The first and last seq a partition can hold (seqs start at 1). */
const firstSeqOf = (bucket: number): number => Math.max(1, bucket * BUCKET);
const lastSeqOf = (bucket: number): number => (bucket + 1) * BUCKET - 1;

/** Clustering keys in one IN restriction of a dedup lookup or write. */
const DEDUP_CHUNK = 100;
/** Senders per group whose greatest clientMsgId a writer keeps; the others' sends are always looked up. */
const MAX_SENDERS_PER_HEAD = 10_000;
/** How often, at most, a writer records a group's head row (besides when the last seq enters another bucket). */
const RECORD_HEAD_MS = 1000;
/** Heads remembered (the groups written most recently); a forgotten one costs one read of the log at its next append. */
const MAX_HEADS = 100_000;
/** Bytes of drafts in one write of messages, well under Cassandra's largest mutation (half a commit log segment). */
const MAX_WRITE_BYTES = 4 * 1024 * 1024;
/** Reaction rows read for one partition of a history page; past this, counts are of the first ones. */
const MAX_REACTION_ROWS = 10_000;

export interface CassandraLogOptions {
  /**
   * How long the group keeps its messages, in seconds; 0 keeps them forever. A message's row, its dedup entry and its
   * reactions expire (TTL) that long after the message's createdAt. Asked at every append: it should answer from memory.
   */
  retentionSeconds: (groupId: string) => number | Promise<number>;
}

/** The TTL that makes a row expire `retentionSeconds` after `createdAtMs` (0: never; Cassandra's least TTL is 1). */
const ttlOf = (retentionSeconds: number, createdAtMs: number): number =>
  retentionSeconds === 0 ? 0 : Math.max(1, Math.ceil(retentionSeconds - (Date.now() - createdAtMs) / 1000));
/** When a row written now with this TTL expires (ms since the epoch; Infinity: never). */
const expiryOf = (ttl: number): number => (ttl === 0 ? Number.POSITIVE_INFINITY : Date.now() + ttl * 1000);

const { types } = cassandra;
type Row = cassandra.types.Row;

/** A message row's draft with what events did to it (see MessageLog: events). */
interface StoredDraft extends MessageDraft {
  editedAtMs?: number;
  deletedAtMs?: number;
  /** The seq of the edit whose body this is: an older edit applied again changes nothing. */
  lastEditSeq?: number;
  /** The edits of this message, whose bodies a delete erases. */
  editSeqs?: number[];
}

/**
 * What a message row holds besides its key: the draft as JSON, in one cell. Messages are read whole and rarely change
 * (an edit or delete rewrites the cell), and Cassandra's cost (writing, flushing, compacting, expiring) is per cell:
 * one cell instead of a dozen typed columns, each with its own timestamp and TTL, is most of what a write costs it.
 */
const draftJson = (d: StoredDraft): string => JSON.stringify(d);

const stateOf = (d: StoredDraft) => ({
  ...(d.editedAtMs === undefined ? {} : { editedAtMs: d.editedAtMs }),
  ...(d.deletedAtMs === undefined ? {} : { deletedAtMs: d.deletedAtMs }),
});

const rowToMessage = (groupId: string, row: Row): StampedMessage => {
  const draft = JSON.parse(row.get('draft') as string) as StoredDraft;
  // A bigint column comes as a Long: Number() of one goes through its decimal string (2% of a page's CPU, profiled).
  return toStampedMessage(groupId, (row.get('seq') as cassandra.types.Long).toNumber(), draft, stateOf(draft));
};

/** Drafts or messages (indices, in order) grouped by sender, in chunks of at most DEDUP_CHUNK: one dedup partition each. */
function chunksBySender(drafts: { senderId: string }[], indices: number[]): { senderId: string; chunk: number[] }[] {
  const bySender = new Map<string, number[]>();
  for (const i of indices) {
    const mine = bySender.get(drafts[i]!.senderId);
    if (mine) mine.push(i);
    else bySender.set(drafts[i]!.senderId, [i]);
  }
  const chunks: { senderId: string; chunk: number[] }[] = [];
  for (const [senderId, mine] of bySender) {
    for (let c = 0; c < mine.length; c += DEDUP_CHUNK) chunks.push({ senderId, chunk: mine.slice(c, c + DEDUP_CHUNK) });
  }
  return chunks;
}

/** Where a group this node writes stands, valid under the epoch of the hold it was read or advanced in. */
interface Head {
  epoch: number;
  /** The last seq handed out (its call may still be writing). */
  stamped: number;
  /** The last seq known written: every seq up to it is in the log. */
  durable: number;
  /** The group's head row as last read or written by this node: every seq up to it has its dedup entry. */
  recorded: number;
  /** When this node last wrote the head row (performance.now() ms; -Infinity: not yet under this hold). */
  recordedAt: number;
  /** Per sender (up to MAX_SENDERS_PER_HEAD): the greatest clientMsgId known to have an entry, or stamped here. */
  greatestKeys: Map<string, GreatestKey>;
  /**
   * When the last stamped message expires (ms since the epoch; Infinity: never). The next one never expires sooner:
   * rows expire in seq order, so what is kept stays one range even after the group's retention was shortened.
   */
  expiresAtMs: number;
}

/**
 * A clientMsgId greater (in UTF-8 byte order, as Cassandra sorts them) than every one a sender has in the group is
 * new: its send needs no lookup. The SDK's ids grow with time, so this is every first send of a message.
 * `greatest` covers what this node stamped under the hold; once `read`, also what the log held when the hold began.
 */
interface GreatestKey {
  read: boolean;
  greatest: Buffer;
}

/** A group's appends in flight on this node; the calls follow each other through it (see appendGroup). */
interface Pipeline {
  /** Settles once the latest call has stamped its drafts (or given up before). */
  stamped: Promise<void>;
  /** Resolves once everything stamped so far is written; rejects when some of it was not. */
  written: Promise<void>;
  calls: number;
  /** Messages stamped by calls still in flight, by dedup key: not all of them are readable in Cassandra yet. */
  inFlight: Map<string, StampedMessage>;
}

/** A call's drafts with their seqs given, not yet written. */
interface Stamped {
  head: Head;
  outcomes: AppendOutcome[];
  /** The drafts (indices, in order) that get new seqs: first, first + 1, ... */
  toStamp: number[];
  first: number;
  /** Settles when the calls before this one have written what they stamped; rejects when they failed to. */
  gate: Promise<void>;
}

/** A promise with its resolve and reject at hand (Promise.withResolvers, which Node 20 lacks). */
function signal(): { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const dedupKey = (draft: MessageDraft) => `${draft.senderId}\u0000${draft.clientMsgId}`;

/**
 * The message log on Apache Cassandra, for many nodes sharing one log. Messages are partitioned by (group, seq bucket)
 * and clustered by seq, so a catch-up read is a slice of one or two partitions.
 *
 * How the contract holds: one node at a time writes a group (GroupWriters), so stamping is plain writes.
 * - Seq: the writer keeps the group's last seq in memory, read from the log when it acquires the group (after the
 *   previous writer's writes can no longer land) and after any failed write (which may or may not have landed). A
 *   call's messages are written in seq order, one partition at a time, each write one single-partition batch (atomic
 *   and isolated in Cassandra), so a failure leaves a prefix and never a hole. Every write first checks the hold.
 * - Dedup: dedup_ranges maps (group, sender, clientMsgId) to the seqs its message is among: the range its sender's
 *   messages took in that commit, so that one statement per sender records a whole commit. Entries are written in
 *   parallel with their messages; an entry counts only when its range holds the message it names (an entry left by a
 *   failed write, whose seqs went to other messages, is ignored). The head row only ever names a seq up to which every
 *   entry was written, so a message whose entry may be missing (its write failed, or its writer died) lies above it:
 *   whoever stamps the group next under a fresh head writes those entries again first (reindex). A key greater than
 *   every key its sender has in the group needs no lookup (GreatestKey): the SDK's ids grow with time.
 * - Calls for one group from this process overlap: each looks up its dedup keys and stamps its drafts once the one
 *   before it has stamped, and writes its messages once the one before it has written its own; so the next call's
 *   lookup runs during this one's writes. A call rejects when the one before it failed to write, since its seqs
 *   followed that call's; the head is then read from the log again, once the calls before have settled.
 */
export class MessageLogCassandra implements MessageLog {
  private readonly pipelines = new Map<string, Pipeline>();
  /** Groups whose write failed, until a write of theirs still in flight can no longer land (performance.now() ms). */
  private readonly settlingUntil = new Map<string, number>();
  private readonly heads = new Map<string, Head>();
  /** Head-row updates still being written (awaited by close). */
  private readonly completing = new Set<Promise<unknown>>();

  private readonly retentionSeconds: CassandraLogOptions['retentionSeconds'];
  /**
   * Per group, a seq known to be at or below its first kept one (expiry only ever raises it): where firstSeq looks. While
   * `until` (ms since the epoch) has not passed, it is the first kept seq itself: that message's row was read with the
   * time it expires, and nothing else moves a group's first seq (rows expire in seq order; deleteGroup drops the entry).
   */
  private readonly firstSeqs = new Map<string, { seq: number; until: number }>();

  /** The write statements, built once: the driver finds a prepared statement by its text, for every message. */
  private readonly statements: { insertMessage: string; setRange: string; setRangeOfOne: string; react: string };

  private constructor(
    private readonly db: CassandraSession,
    private readonly writers: GroupWriters,
    options: CassandraLogOptions,
  ) {
    this.retentionSeconds = options.retentionSeconds;
    // TTL 0 is no TTL: one statement each, whatever the group's retention.
    this.statements = {
      insertMessage: 'INSERT INTO group_messages (group_id, bucket, seq, draft) VALUES (?, ?, ?, ?) USING TTL ?',
      setRange:
        'UPDATE dedup_ranges USING TTL ? SET seqs = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?',
      setRangeOfOne:
        'UPDATE dedup_ranges USING TTL ? SET seqs = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?',
      react:
        'INSERT INTO message_reactions (group_id, bucket, target_seq, emoji, user_id) VALUES (?, ?, ?, ?, ?) USING TTL ?',
    };
  }

  static async open(
    db: CassandraSession,
    writers: GroupWriters,
    options: CassandraLogOptions,
  ): Promise<MessageLogCassandra> {
    await db.ddl([
      `CREATE TABLE IF NOT EXISTS group_messages (
        group_id text, bucket bigint, seq bigint, draft text,
        PRIMARY KEY ((group_id, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)`,
      // The seq range as one frozen tuple: one cell per entry.
      `CREATE TABLE IF NOT EXISTS dedup_ranges (
        group_id text, sender_id text, client_msg_id text, seqs frozen<tuple<bigint, bigint>>,
        PRIMARY KEY ((group_id, sender_id), client_msg_id))`,
      'CREATE TABLE IF NOT EXISTS group_heads (group_id text PRIMARY KEY, last_seq bigint)',
      // Partitioned like the messages they count: a history page's reactions are a slice of one or two partitions.
      `CREATE TABLE IF NOT EXISTS message_reactions (
        group_id text, bucket bigint, target_seq bigint, emoji text, user_id text,
        PRIMARY KEY ((group_id, bucket), target_seq, emoji, user_id))`,
    ]);
    return new MessageLogCassandra(db, writers, options);
  }

  /** Groups are appended independently; when some fail, the call rejects after all have settled. */
  async append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    const settled = await Promise.allSettled(batch.map((part) => this.appendGroup(part)));
    const failures = settled.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
    if (failures.length === 0)
      return settled.map((result) => (result as PromiseFulfilledResult<AppendOutcome[]>).value);
    const other = failures.find((err) => !(err instanceof WriterMovedError));
    if (other !== undefined) throw other;
    throw new WriterMovedError(failures.flatMap((err) => (err as WriterMovedError).groupIds));
  }

  private async appendGroup({ groupId, drafts }: GroupAppend): Promise<AppendOutcome[]> {
    let pipeline = this.pipelines.get(groupId);
    if (!pipeline)
      this.pipelines.set(
        groupId,
        (pipeline = { stamped: Promise.resolve(), written: Promise.resolve(), calls: 0, inFlight: new Map() }),
      );
    const previous = { stamped: pipeline.stamped, written: pipeline.written };
    const stamped = signal();
    const written = signal();
    written.promise.catch(() => undefined); // the next call awaits it; the last one's failure is this call's own
    pipeline.stamped = stamped.promise;
    pipeline.written = written.promise;
    pipeline.calls += 1;
    const mine: string[] = [];
    try {
      let step: Stamped;
      try {
        await previous.stamped;
        step = await this.stamp(groupId, drafts, pipeline, previous.written);
      } catch (err) {
        previous.written.then(written.resolve, written.reject); // nothing stamped here: as written as the calls before
        throw err;
      } finally {
        stamped.resolve();
      }
      const { head, outcomes, toStamp, first } = step;
      for (const i of toStamp) mine.push(dedupKey(drafts[i]!));
      try {
        const seqOf = (k: number) => first + k;
        if (toStamp.length === 0)
          await step.gate; // only duplicates: as good as the calls they may duplicate
        else {
          const ttl = this.nextTtl(head, await this.retentionSeconds(groupId), drafts[toStamp[0]!]!.createdAtMs);
          this.fence(groupId, head.epoch);
          // Entries and messages go together (one round trip, not two): a message whose entry failed is above the
          // head row, and gets its entry again before the group's next stamp (reindex).
          await Promise.all([
            this.writeDedup(groupId, drafts, toStamp, seqOf, ttl),
            step.gate
              .then(() => this.writeMessages(groupId, drafts, toStamp, seqOf, head.epoch, ttl))
              .then(() =>
                this.applyEvents(
                  groupId,
                  toStamp.map((i, k) => ({ seq: seqOf(k), draft: drafts[i]! })),
                  head.epoch,
                ),
              ),
          ]);
        }
      } catch (err) {
        // Some of it may have landed, or land still: the next stamp reads the log again once nothing more can.
        if (this.heads.get(groupId) === head) this.heads.delete(groupId);
        this.settlingUntil.set(groupId, performance.now() + WRITE_LANDS_WITHIN_MS);
        setTimeout(() => this.settlingUntil.delete(groupId), WRITE_LANDS_WITHIN_MS).unref();
        written.reject(err);
        throw err;
      }
      if (toStamp.length > 0) {
        head.durable = first + toStamp.length - 1;
        if (bucketOf(head.durable) !== bucketOf(head.recorded) || performance.now() - head.recordedAt >= RECORD_HEAD_MS)
          this.recordHead(groupId, head);
      }
      written.resolve();
      return outcomes;
    } finally {
      for (const key of mine) pipeline.inFlight.delete(key);
      pipeline.calls -= 1;
      if (pipeline.calls === 0) this.pipelines.delete(groupId);
    }
  }

  /**
   * Looks up the drafts' dedup keys (after reading the head from the log, if it must be) and gives the new ones the
   * next seqs. Runs once the call before has stamped; the returned gate settles when the calls before have written
   * what they stamped.
   */
  private async stamp(
    groupId: string,
    drafts: MessageDraft[],
    pipeline: Pipeline,
    writtenBefore: Promise<void>,
  ): Promise<Stamped> {
    const writer = await this.writers.writerOf(groupId);
    if (!writer.here) throw new WriterMovedError([groupId]);

    const outcomes: (AppendOutcome | undefined)[] = new Array(drafts.length);
    const firstOfKey = new Map<string, number>();
    const repeats: [number, number][] = [];
    drafts.forEach((draft, i) => {
      const key = dedupKey(draft);
      const first = firstOfKey.get(key);
      if (first === undefined) firstOfKey.set(key, i);
      else repeats.push([i, first]);
    });
    let head = this.heads.get(groupId);
    let gate = writtenBefore;
    if (head?.epoch !== writer.epoch) {
      // A new hold, or a failed write: the log is the truth, once nothing this node stamped before can still land.
      await writtenBefore.catch(() => undefined);
      const settling = (this.settlingUntil.get(groupId) ?? 0) - performance.now();
      if (settling > 0) await sleep(settling);
      const recorded = await this.headRow(groupId);
      const last = await this.probeFrom(groupId, recorded);
      await this.reindex(groupId, recorded, last, writer.epoch);
      head = {
        epoch: writer.epoch,
        stamped: last,
        durable: last,
        recorded,
        recordedAt: -Infinity,
        greatestKeys: new Map(),
        expiresAtMs: await this.expiryOfRow(groupId, last),
      };
      gate = Promise.resolve();
    }

    const toLookUp: number[] = [];
    const unread = new Set<string>();
    const keyBytes = new Map<number, Buffer>();
    for (const [key, i] of firstOfKey) {
      const { senderId, clientMsgId } = drafts[i]!;
      const inFlight = pipeline.inFlight.get(key);
      if (inFlight) {
        outcomes[i] = { message: inFlight, duplicate: true };
        continue;
      }
      const bytes = Buffer.from(clientMsgId);
      keyBytes.set(i, bytes);
      const known = head.greatestKeys.get(senderId);
      if (known?.read && Buffer.compare(bytes, known.greatest) > 0) continue; // new: stamped below
      toLookUp.push(i);
      if (!known?.read) unread.add(senderId);
    }
    const [stored] = await Promise.all([
      this.lookup(groupId, drafts, toLookUp),
      ...[...unread].map((senderId) => this.readGreatestKey(groupId, senderId, head)),
    ]);
    const toStamp: number[] = [];
    for (const i of firstOfKey.values()) {
      if (outcomes[i]) continue;
      const message = stored.get(i);
      if (message) outcomes[i] = { message, duplicate: true };
      else toStamp.push(i);
    }
    toStamp.sort((a, b) => a - b);

    const first = head.stamped + 1;
    head.stamped += toStamp.length;
    toStamp.forEach((i, k) => {
      const message = toStampedMessage(groupId, first + k, drafts[i]!);
      outcomes[i] = { message, duplicate: false };
      pipeline.inFlight.set(dedupKey(drafts[i]!), message);
      this.noteKey(head, message.senderId, keyBytes.get(i)!, false);
    });
    for (const [i, firstOf] of repeats) outcomes[i] = { message: outcomes[firstOf]!.message, duplicate: true };
    this.heads.delete(groupId); // re-inserted last: the map's order is the order of use
    this.heads.set(groupId, head);
    if (this.heads.size > MAX_HEADS) this.heads.delete(this.heads.keys().next().value!);
    return { head, outcomes: outcomes as AppendOutcome[], toStamp, first, gate };
  }

  /**
   * Off the critical path, at most once a second or when the last seq entered another bucket. The head row is where
   * truth() starts probing partitions, and the point from which a new writer re-writes dedup entries (reindex): it
   * only ever names a seq whose call, and every call before it, wrote its entries.
   */
  private recordHead(groupId: string, head: Head): void {
    head.recorded = head.durable;
    head.recordedAt = performance.now();
    const completion = this.db
      .execute('UPDATE group_heads SET last_seq = ? WHERE group_id = ?', [head.durable, groupId])
      .catch(() => undefined);
    this.completing.add(completion);
    void completion.then(() => this.completing.delete(completion));
  }

  /**
   * The TTL of a call's messages and their entries: the group's retention from the first draft's createdAt, or longer
   * when the message before expires later (a retention shortened since), so that no message outlives a later one.
   */
  private nextTtl(head: Head, retentionSeconds: number, createdAtMs: number): number {
    const own = ttlOf(retentionSeconds, createdAtMs);
    if (expiryOf(own) >= head.expiresAtMs) {
      head.expiresAtMs = expiryOf(own);
      return own;
    }
    return head.expiresAtMs === Number.POSITIVE_INFINITY ? 0 : Math.ceil((head.expiresAtMs - Date.now()) / 1000);
  }

  /** When the message at `seq` expires (Infinity: never; 0: it is not there, or there is none). */
  private async expiryOfRow(groupId: string, seq: number): Promise<number> {
    if (seq === 0) return 0;
    const row = await this.readRow(groupId, seq);
    return row ? expiryOf(row.ttl) : 0;
  }

  /** Raises what the head knows of a sender's greatest clientMsgId (`read`: as stored in the log). */
  private noteKey(head: Head, senderId: string, key: Buffer, read: boolean): void {
    let known = head.greatestKeys.get(senderId);
    if (!known) {
      if (head.greatestKeys.size >= MAX_SENDERS_PER_HEAD) return;
      head.greatestKeys.set(senderId, (known = { read: false, greatest: Buffer.alloc(0) }));
    }
    if (Buffer.compare(key, known.greatest) > 0) known.greatest = key;
    if (read) known.read = true;
  }

  /** Reads the sender's greatest clientMsgId with an entry in the group (the last row of its dedup partition). */
  private async readGreatestKey(groupId: string, senderId: string, head: Head): Promise<void> {
    const result = await this.db.execute(
      'SELECT client_msg_id FROM dedup_ranges WHERE group_id = ? AND sender_id = ? ORDER BY client_msg_id DESC LIMIT 1',
      [groupId, senderId],
    );
    const greatest = result.first()?.get('client_msg_id') as string | undefined;
    this.noteKey(head, senderId, Buffer.from(greatest ?? ''), true);
  }

  /** Throws unless this node still writes the group under the epoch its head was read in. */
  private fence(groupId: string, epoch: number): void {
    if (this.writers.holding(groupId) !== epoch) {
      throw new ChorusError('STORE_UNAVAILABLE', `this node's hold on group ${groupId} lapsed; retrying`);
    }
  }

  /** The stored messages of the drafts (by index) whose (sender, clientMsgId) is already in the group. */
  private async lookup(
    groupId: string,
    drafts: MessageDraft[],
    indices: number[],
  ): Promise<Map<number, StampedMessage>> {
    const entries: { i: number; first: number; last: number }[] = [];
    await Promise.all(
      chunksBySender(drafts, indices).map(async ({ senderId, chunk }) => {
        const indexOf = new Map(chunk.map((i) => [drafts[i]!.clientMsgId, i]));
        const result = await this.db.execute(
          'SELECT client_msg_id, seqs FROM dedup_ranges WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?',
          [groupId, senderId, [...indexOf.keys()]],
        );
        for (const row of result.rows) {
          const seqs = row.get('seqs') as cassandra.types.Tuple;
          entries.push({
            i: indexOf.get(row.get('client_msg_id') as string)!,
            first: Number(seqs.get(0)),
            last: Number(seqs.get(1)),
          });
        }
      }),
    );
    // Entries of one earlier commit share a range (a whole retried batch, say): each range is read once.
    const ranges = new Map<string, Promise<StampedMessage[]>>();
    const stored = new Map<number, StampedMessage>();
    await Promise.all(
      entries.map(async ({ i, first, last }) => {
        const key = `${first}-${last}`;
        let range = ranges.get(key);
        if (!range) ranges.set(key, (range = this.readAfter(groupId, first - 1, last - first + 1)));
        const { senderId, clientMsgId } = drafts[i]!;
        const message = (await range).find((m) => m.senderId === senderId && m.clientMsgId === clientMsgId);
        if (message) stored.set(i, message);
      }),
    );
    return stored;
  }

  /** One statement per sender (and DEDUP_CHUNK keys): each key gets the range of seqs its sender's chunk took. */
  private async writeDedup(
    groupId: string,
    drafts: MessageDraft[],
    toStamp: number[],
    seqOf: (k: number) => number,
    ttl: number,
  ): Promise<void> {
    const seqByIndex = new Map(toStamp.map((i, k) => [i, seqOf(k)]));
    await Promise.all(
      chunksBySender(drafts, toStamp).map(({ senderId, chunk }) =>
        this.db.execute(this.statements.setRange, [
          ttl,
          new types.Tuple(seqByIndex.get(chunk[0]!), seqByIndex.get(chunk.at(-1)!)),
          groupId,
          senderId,
          chunk.map((i) => drafts[i]!.clientMsgId),
        ]),
      ),
    );
  }

  /** Writes the messages in seq order, one partition (and at most MAX_WRITE_BYTES) per write, each after a fence. */
  private async writeMessages(
    groupId: string,
    drafts: MessageDraft[],
    toStamp: number[],
    seqOf: (k: number) => number,
    epoch: number,
    ttl: number,
  ): Promise<void> {
    let part: { query: string; params: unknown[] }[] = [];
    let partBytes = 0;
    const flush = async () => {
      this.fence(groupId, epoch);
      await this.db.batch(part, false);
      part = [];
      partBytes = 0;
    };
    for (let k = 0; k < toStamp.length; k++) {
      const draft = draftJson(drafts[toStamp[k]!]!);
      const seq = seqOf(k);
      const bytes = draft.length * 3; // UTF-8 takes at most 3 bytes per UTF-16 unit
      if (part.length > 0 && (seq % BUCKET === 0 || partBytes + bytes > MAX_WRITE_BYTES)) await flush();
      part.push({ query: this.statements.insertMessage, params: [groupId, bucketOf(seq), seq, draft, ttl] });
      partBytes += bytes;
    }
    if (part.length > 0) await flush();
  }

  /** The highest stored seq: the head row (a lower bound) corrected by probing the partitions above it. */
  private async truth(groupId: string): Promise<number> {
    return this.probeFrom(groupId, await this.headRow(groupId));
  }

  private async headRow(groupId: string): Promise<number> {
    const row = await this.db.execute('SELECT last_seq FROM group_heads WHERE group_id = ?', [groupId]);
    return Number(row.first()?.get('last_seq') ?? 0);
  }

  /** The highest stored seq, knowing that `from` is stored (or 0). */
  private async probeFrom(groupId: string, from: number): Promise<number> {
    const top = async (bucket: number): Promise<number | null> => {
      const seq = (
        await this.db.execute(
          'SELECT seq FROM group_messages WHERE group_id = ? AND bucket = ? ORDER BY seq DESC LIMIT 1',
          [groupId, bucket],
        )
      )
        .first()
        ?.get('seq');
      return seq == null ? null : Number(seq);
    };
    // The head row is recorded at least once per partition, so the log nearly always ends in `from`'s partition or
    // the next one: both are read at once. Seqs have no gaps, so the first empty partition after those is the end.
    let bucket = bucketOf(from);
    const [here, next] = await Promise.all([top(bucket), top(bucket + 1)]);
    let last = Math.max(from, here ?? 0);
    for (let above = next; above !== null; above = await top(++bucket + 1)) last = Math.max(last, above);
    return last;
  }

  /**
   * Writes again the dedup entries of the messages in (after, last], and applies again the events among them: a writer
   * that failed or died may have stored them without their entries or effects. Each entry gets the range of its own seq.
   */
  private async reindex(groupId: string, after: number, last: number, epoch: number): Promise<void> {
    const retention = await this.retentionSeconds(groupId);
    for (let seq = after; seq < last; ) {
      const page = (await this.readAfter(groupId, seq, BUCKET)).filter((m) => m.seq <= last);
      if (page.length === 0) return;
      await Promise.all(
        chunksBySender(
          page,
          page.map((_, i) => i),
        ).map(({ senderId, chunk }) =>
          this.db.batch(
            chunk.map((i) => ({
              query: this.statements.setRangeOfOne,
              params: [
                ttlOf(retention, Date.parse(page[i]!.createdAt)),
                new types.Tuple(page[i]!.seq, page[i]!.seq),
                groupId,
                senderId,
                page[i]!.clientMsgId,
              ],
            })),
            false,
          ),
        ),
      );
      await this.applyEvents(
        groupId,
        page.map((m) => ({ seq: m.seq, draft: draftOfMessage(m) })),
        epoch,
      );
      seq = page.at(-1)!.seq;
    }
  }

  /**
   * Makes the events among these stored messages (ascending) change their targets: in seq order, one write at a time,
   * each after a fence. Applying one again changes nothing more (an edit older than the target's last is skipped), so
   * a new writer applies those above the head row again, with their dedup entries (reindex).
   */
  private async applyEvents(
    groupId: string,
    stored: { seq: number; draft: MessageDraft }[],
    epoch: number,
  ): Promise<void> {
    for (const { seq, draft } of stored) {
      if (draft.targetSeq === undefined) continue;
      const target = await this.readRow(groupId, draft.targetSeq);
      if (!target) continue;
      const write = async (rowSeq: number, next: StoredDraft, ttl: number) => {
        this.fence(groupId, epoch);
        await this.db.execute(
          'INSERT INTO group_messages (group_id, bucket, seq, draft) VALUES (?, ?, ?, ?) USING TTL ?',
          [groupId, bucketOf(rowSeq), rowSeq, draftJson(next), ttl],
        );
      };
      const { draft: was, ttl } = target;
      const effect = effectOf(draft.type);
      if (effect === 'edit') {
        if (was.deletedAtMs !== undefined) {
          const own = await this.readRow(groupId, seq);
          if (own && own.draft.body !== undefined) await write(seq, erased(own.draft, was.deletedAtMs), own.ttl);
        } else if ((was.lastEditSeq ?? 0) < seq) {
          const editSeqs = [...new Set([...(was.editSeqs ?? []), seq])];
          await write(
            draft.targetSeq,
            { ...was, body: draft.body!, editedAtMs: draft.createdAtMs, lastEditSeq: seq, editSeqs },
            ttl,
          );
        }
      } else if (effect === 'delete') {
        const deletedAtMs = was.deletedAtMs ?? draft.createdAtMs;
        await write(draft.targetSeq, erased(was, deletedAtMs), ttl);
        for (const editSeq of was.editSeqs ?? []) {
          const edit = await this.readRow(groupId, editSeq);
          if (edit) await write(editSeq, erased(edit.draft, deletedAtMs), edit.ttl);
        }
        this.fence(groupId, epoch);
        await this.db.execute('DELETE FROM message_reactions WHERE group_id = ? AND bucket = ? AND target_seq = ?', [
          groupId,
          bucketOf(draft.targetSeq),
          draft.targetSeq,
        ]);
      } else if (effect === 'reaction' && was.deletedAtMs === undefined) {
        this.fence(groupId, epoch);
        const key = [groupId, bucketOf(draft.targetSeq), draft.targetSeq, draft.emoji, draft.senderId];
        if (draft.remove)
          await this.db.execute(
            'DELETE FROM message_reactions WHERE group_id = ? AND bucket = ? AND target_seq = ? AND emoji = ? AND user_id = ?',
            key,
          );
        else await this.db.execute(this.statements.react, [...key, ttl]); // it goes when its target does
      }
    }
  }

  /** One message row as stored, with its remaining TTL in seconds (0: none). */
  private async readRow(groupId: string, seq: number): Promise<{ draft: StoredDraft; ttl: number } | null> {
    const row = (
      await this.db.execute(
        'SELECT draft, TTL(draft) AS ttl FROM group_messages WHERE group_id = ? AND bucket = ? AND seq = ?',
        [groupId, bucketOf(seq), seq],
      )
    ).first();
    return row
      ? { draft: JSON.parse(row.get('draft') as string) as StoredDraft, ttl: Number(row.get('ttl') ?? 0) }
      : null;
  }

  async readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    const page = await this.sliceAfter(groupId, afterSeq, limit);
    if (page.length > 0) return page;
    // Nothing after afterSeq in its partition: either nothing newer exists, or the messages from there on have expired
    // (oldest first) and the log goes on from its first kept seq.
    const first = await this.firstSeq(groupId);
    return first > afterSeq + 1 ? this.sliceAfter(groupId, first - 1, limit) : page;
  }

  /** Up to `limit` messages after `afterSeq`, from its partition on (see readPartitions). */
  private sliceAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    const bucket = bucketOf(afterSeq + 1);
    return this.readPartitions(groupId, limit, {
      bucket,
      step: 1,
      room: lastSeqOf(bucket) - afterSeq,
      // The writer knows where the log ends: the next partition is read at once only if the log goes on there.
      nextMayHoldSome: (this.heldLastSeq(groupId) ?? Number.POSITIVE_INFINITY) > lastSeqOf(bucket),
      slice: (b, n) =>
        this.db.execute('SELECT seq, draft FROM group_messages WHERE group_id = ? AND bucket = ? AND seq > ? LIMIT ?', [
          groupId,
          b,
          afterSeq,
          n,
        ]),
    });
  }

  async readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]> {
    const before = Math.min(beforeSeq, (await this.lastSeq(groupId)) + 1); // partitions above the last seq are empty
    if (before <= 1) return [];
    const bucket = bucketOf(before - 1);
    return this.readPartitions(groupId, limit, {
      bucket,
      step: -1,
      room: before - firstSeqOf(bucket),
      nextMayHoldSome: bucket > 0,
      slice: (b, n) =>
        this.db.execute(
          'SELECT seq, draft FROM group_messages WHERE group_id = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?',
          [groupId, b, before, n],
        ),
    });
  }

  /**
   * A page read partition by partition from `bucket`, towards newer seqs (`step` 1) or older (-1). When the first
   * partition can hold only `room` of the page, the next is read at the same time (unless it cannot hold any): a second
   * round trip after the first would be most of the page's wait. A slice that stops short of its partition's far edge
   * (or finds nothing) ends the page: seqs have no gaps, and messages expire oldest first.
   */
  private async readPartitions(
    groupId: string,
    limit: number,
    from: {
      bucket: number;
      step: 1 | -1;
      room: number;
      nextMayHoldSome: boolean;
      slice: (bucket: number, n: number) => Promise<cassandra.types.ResultSet>;
    },
  ): Promise<StampedMessage[]> {
    const { step, room, slice } = from;
    let bucket = from.bucket;
    let next = room < limit && from.nextMayHoldSome ? slice(bucket + step, limit - room) : undefined;
    next?.catch(() => undefined); // awaited below, unless the first slice ends the page or fails
    let rows = (await slice(bucket, limit)).rows;
    const out: StampedMessage[] = [];
    for (;;) {
      for (const row of rows) out.push(rowToMessage(groupId, row));
      const edge = step === 1 ? lastSeqOf(bucket) : firstSeqOf(bucket);
      if (out.length >= limit || out.length === 0 || out.at(-1)!.seq !== edge || bucket + step < 0) return out;
      bucket += step;
      // The slice read at once asked for what the page lacks if the first partition held all it could of it.
      rows = (await (next && out.length === room ? next : slice(bucket, limit - out.length))).rows;
      next = undefined;
    }
  }

  async lastSeq(groupId: string): Promise<number> {
    return this.heldLastSeq(groupId) ?? this.truth(groupId);
  }

  /** The last seq written, known without a read on the group's writer: its head is the truth while its hold lasts. */
  private heldLastSeq(groupId: string): number | undefined {
    const head = this.heads.get(groupId);
    return head && this.writers.holding(groupId) === head.epoch ? head.durable : undefined;
  }

  /**
   * Expiry is a prefix (rows expire in createdAt order, which is seq order), so the partitions from the first kept seq
   * to the last are the non-empty ones: a binary search over partitions finds it, from where it was last seen. The
   * first kept row's TTL says how long the answer holds: until then it is given without a read (a history page asks
   * for it every time).
   */
  async firstSeq(groupId: string): Promise<number> {
    const kept = this.firstSeqs.get(groupId);
    if (kept && Date.now() < kept.until) return kept.seq; // its row is still there, so no later seq can be the first
    const last = await this.lastSeq(groupId);
    const known = kept?.seq ?? 1;
    const firstAtOrAfter = async (bucket: number, from: number): Promise<{ seq: number; until: number } | null> => {
      const row = (
        await this.db.execute(
          'SELECT seq, TTL(draft) AS ttl FROM group_messages WHERE group_id = ? AND bucket = ? AND seq >= ? LIMIT 1',
          [groupId, bucket, from],
        )
      ).first();
      if (!row) return null;
      const ttl = row.get('ttl') as number | null;
      // TTL counts whole seconds left and an edit rewrites the row with what was left, so the row may go up to a
      // second or two before now + ttl: the answer is trusted that much less.
      return {
        seq: Number(row.get('seq')),
        until: ttl === null ? Number.POSITIVE_INFINITY : Date.now() + (ttl - 2) * 1000,
      };
    };
    let first = known > last ? null : await firstAtOrAfter(bucketOf(known), known);
    if (first === null && known <= last) {
      let low = bucketOf(known) + 1; // the lowest partition that may hold it
      let high = bucketOf(last); // holds it, if any does
      while (low < high) {
        const middle = Math.floor((low + high) / 2);
        if ((await firstAtOrAfter(middle, known)) === null) low = middle + 1;
        else high = middle;
      }
      first = low <= bucketOf(last) ? await firstAtOrAfter(low, known) : null;
    }
    // None kept: everything up to the last seq has expired, and the next message, when it comes, is the first.
    const result = first ?? { seq: last + 1, until: 0 };
    this.firstSeqs.delete(groupId); // re-inserted last: the oldest entry is the first to go
    this.firstSeqs.set(groupId, result);
    if (this.firstSeqs.size > MAX_HEADS) this.firstSeqs.delete(this.firstSeqs.keys().next().value!);
    return result.seq;
  }

  async reactions(groupId: string, seqs: number[], viewerId: string): Promise<Map<number, ReactionCount[]>> {
    const wanted = new Set(seqs);
    const buckets = new Map<number, number[]>();
    for (const seq of wanted) {
      const list = buckets.get(bucketOf(seq));
      if (list) list.push(seq);
      else buckets.set(bucketOf(seq), [seq]);
    }
    const slices = await Promise.all(
      [...buckets].map(async ([bucket, inBucket]) => {
        const result = await this.db.execute(
          'SELECT target_seq, emoji, user_id FROM message_reactions WHERE group_id = ? AND bucket = ? AND target_seq >= ? AND target_seq <= ? LIMIT ?',
          [groupId, bucket, Math.min(...inBucket), Math.max(...inBucket), MAX_REACTION_ROWS],
        );
        return result.rows.map((row) => ({
          seq: Number(row.get('target_seq')),
          emoji: row.get('emoji') as string,
          userId: row.get('user_id') as string,
        }));
      }),
    );
    return countReactions(slices.flat(), wanted, viewerId);
  }

  /**
   * Partition by partition: the senders found in the messages name the dedup partitions to drop. Whoever calls this
   * has stopped the group's sends (its memberships are gone), so nothing is written to it meanwhile.
   */
  async deleteGroup(groupId: string): Promise<void> {
    const last = await this.truth(groupId);
    const senders = new Set<string>();
    for (let bucket = 0; bucket <= bucketOf(last); bucket++) {
      const rows = (
        await this.db.execute('SELECT draft FROM group_messages WHERE group_id = ? AND bucket = ?', [groupId, bucket])
      ).rows;
      for (const row of rows) senders.add((JSON.parse(row.get('draft') as string) as MessageDraft).senderId);
      await this.db.execute('DELETE FROM message_reactions WHERE group_id = ? AND bucket = ?', [groupId, bucket]);
      await this.db.execute('DELETE FROM group_messages WHERE group_id = ? AND bucket = ?', [groupId, bucket]);
    }
    for (const senderId of senders)
      await this.db.execute('DELETE FROM dedup_ranges WHERE group_id = ? AND sender_id = ?', [groupId, senderId]);
    await this.db.execute('DELETE FROM group_heads WHERE group_id = ?', [groupId]);
    this.heads.delete(groupId);
    this.firstSeqs.delete(groupId);
  }

  async close(): Promise<void> {
    await Promise.all(this.completing);
  }
}

/** A row's draft with its content erased: what a delete leaves of a message, or of one of its edits. */
function erased(draft: StoredDraft, deletedAtMs: number): StoredDraft {
  const rest: StoredDraft = { ...draft, deletedAtMs };
  for (const field of ERASED_BY_DELETE) delete rest[field];
  return rest;
}

/** The draft a stored message was made from (its content as it is now: for re-applying its effect, only the event fields matter). */
function draftOfMessage(m: StampedMessage): MessageDraft {
  return {
    senderId: m.senderId,
    clientMsgId: m.clientMsgId,
    type: m.type,
    createdAtMs: Date.parse(m.createdAt),
    ...contentOf(m),
  };
}
