import { setTimeout as sleep } from 'node:timers/promises';
import type cassandra from 'cassandra-driver';
import { ChorusError, type StampedMessage } from '../protocol/index.js';
import { REQUEST_TIMEOUT_MS, type CassandraSession } from './cassandra-session.js';
import { toStampedMessage, type AppendOutcome, type GroupAppend, type MessageDraft, type MessageLog } from './message-log.js';
import { WriterMovedError, type GroupWriters } from './group-writers.js';

/** Messages per partition: (group_id, bucket) holds seqs [bucket * BUCKET, (bucket + 1) * BUCKET). */
export const BUCKET = 1000;
const bucketOf = (seq: number): number => Math.floor(seq / BUCKET);

/** Clustering keys in one IN restriction of a dedup lookup or write. */
const DEDUP_CHUNK = 100;
/** Heads remembered (the groups written most recently); a forgotten one costs one read of the log at its next append. */
const MAX_HEADS = 100_000;
/** Body bytes in one write of messages, well under Cassandra's largest mutation (half a commit log segment). */
const MAX_WRITE_BYTES = 4 * 1024 * 1024;

export interface CassandraLogOptions {
  /** Messages and their dedup entries expire after this many seconds; 0 keeps them forever. */
  ttlSeconds: number;
}

type Row = cassandra.types.Row;

const rowToMessage = (groupId: string, row: Row): StampedMessage =>
  toStampedMessage(groupId, Number(row.get('seq')), {
    senderId: row.get('sender_id') as string,
    clientMsgId: row.get('client_msg_id') as string,
    type: row.get('type') as string,
    body: row.get('body') as string,
    ...(row.get('reply_to_seq') == null ? {} : { replyToSeq: Number(row.get('reply_to_seq')) }),
    ...(row.get('mentions') == null ? {} : { mentions: row.get('mentions') as string[] }),
    createdAtMs: (row.get('created_at') as Date).getTime(),
  });

/** The drafts (indices, in order) grouped by sender, in chunks of at most DEDUP_CHUNK: one dedup partition each. */
function chunksBySender(drafts: MessageDraft[], indices: number[]): { senderId: string; chunk: number[] }[] {
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
  /** The last seq this node wrote to the group's head row (-1: none yet under this hold). */
  recorded: number;
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
 * - Dedup: message_dedup maps (group, sender, clientMsgId) to the seqs its message is among: the range its sender's
 *   messages took in that commit, so that one statement per sender records a whole commit. Entries are written before
 *   their messages, so every stored message has one; an entry counts only when its range holds the message it names
 *   (an entry left by a failed write, whose seqs went to other messages, is ignored).
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

  private constructor(
    private readonly db: CassandraSession,
    private readonly writers: GroupWriters,
    private readonly options: CassandraLogOptions,
  ) {}

  static async open(db: CassandraSession, writers: GroupWriters, options: CassandraLogOptions): Promise<MessageLogCassandra> {
    await db.ddl(`CREATE TABLE IF NOT EXISTS messages (
      group_id text, bucket bigint, seq bigint, sender_id text, client_msg_id text, type text, body text,
      reply_to_seq bigint, mentions list<text>, created_at timestamp,
      PRIMARY KEY ((group_id, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)`);
    await db.ddl(`CREATE TABLE IF NOT EXISTS message_dedup (
      group_id text, sender_id text, client_msg_id text, first_seq bigint, last_seq bigint,
      PRIMARY KEY ((group_id, sender_id), client_msg_id))`);
    await db.ddl('CREATE TABLE IF NOT EXISTS group_heads (group_id text PRIMARY KEY, last_seq bigint)');
    return new MessageLogCassandra(db, writers, options);
  }

  private get ttl(): string {
    return this.options.ttlSeconds > 0 ? ` USING TTL ${this.options.ttlSeconds}` : '';
  }

  /** Groups are appended independently; when some fail, the call rejects after all have settled. */
  async append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    const settled = await Promise.allSettled(batch.map((part) => this.appendGroup(part)));
    const failures = settled.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
    if (failures.length === 0) return settled.map((result) => (result as PromiseFulfilledResult<AppendOutcome[]>).value);
    const other = failures.find((err) => !(err instanceof WriterMovedError));
    if (other !== undefined) throw other;
    throw new WriterMovedError(failures.flatMap((err) => (err as WriterMovedError).groupIds));
  }

  private async appendGroup({ groupId, drafts }: GroupAppend): Promise<AppendOutcome[]> {
    let pipeline = this.pipelines.get(groupId);
    if (!pipeline) this.pipelines.set(groupId, (pipeline = { stamped: Promise.resolve(), written: Promise.resolve(), calls: 0, inFlight: new Map() }));
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
        if (toStamp.length > 0) {
          this.fence(groupId, head.epoch);
          await this.writeDedup(groupId, drafts, toStamp, seqOf);
        }
        await step.gate;
        if (toStamp.length > 0) await this.writeMessages(groupId, drafts, toStamp, seqOf, head.epoch);
      } catch (err) {
        // Some of it may have landed, or land still: the next stamp reads the log again once nothing more can.
        if (this.heads.get(groupId) === head) this.heads.delete(groupId);
        this.settlingUntil.set(groupId, performance.now() + REQUEST_TIMEOUT_MS);
        setTimeout(() => this.settlingUntil.delete(groupId), REQUEST_TIMEOUT_MS).unref();
        written.reject(err);
        throw err;
      }
      if (toStamp.length > 0) {
        head.durable = first + toStamp.length - 1;
        if (bucketOf(head.durable) !== bucketOf(head.recorded)) this.recordHead(groupId, head);
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
   * Looks up the drafts' dedup keys and gives the new ones the next seqs. Runs once the call before has stamped; the
   * returned gate settles when the calls before have written what they stamped.
   */
  private async stamp(groupId: string, drafts: MessageDraft[], pipeline: Pipeline, writtenBefore: Promise<void>): Promise<Stamped> {
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
    const toLookUp: number[] = [];
    for (const i of firstOfKey.values()) {
      const inFlight = pipeline.inFlight.get(dedupKey(drafts[i]!));
      if (inFlight) outcomes[i] = { message: inFlight, duplicate: true };
      else toLookUp.push(i);
    }
    const stored = await this.lookup(groupId, drafts, toLookUp);
    const toStamp: number[] = [];
    for (const i of toLookUp) {
      const message = stored.get(i);
      if (message) outcomes[i] = { message, duplicate: true };
      else toStamp.push(i);
    }
    toStamp.sort((a, b) => a - b);

    let head = this.heads.get(groupId);
    let gate = writtenBefore;
    if (head?.epoch !== writer.epoch) {
      // A new hold, or a failed write: the log is the truth, once nothing this node stamped before can still land.
      await writtenBefore.catch(() => undefined);
      const settling = (this.settlingUntil.get(groupId) ?? 0) - performance.now();
      if (settling > 0) await sleep(settling);
      const last = await this.truth(groupId);
      head = { epoch: writer.epoch, stamped: last, durable: last, recorded: -1 };
      gate = Promise.resolve();
    }
    const first = head.stamped + 1;
    head.stamped += toStamp.length;
    toStamp.forEach((i, k) => {
      const message = toStampedMessage(groupId, first + k, drafts[i]!);
      outcomes[i] = { message, duplicate: false };
      pipeline.inFlight.set(dedupKey(drafts[i]!), message);
    });
    for (const [i, firstOf] of repeats) outcomes[i] = { message: outcomes[firstOf]!.message, duplicate: true };
    this.heads.delete(groupId); // re-inserted last: the map's order is the order of use
    this.heads.set(groupId, head);
    if (this.heads.size > MAX_HEADS) this.heads.delete(this.heads.keys().next().value!);
    return { head, outcomes: outcomes as AppendOutcome[], toStamp, first, gate };
  }

  /**
   * Off the critical path, and only when the last seq entered another bucket: the head row is a lower bound where
   * truth() starts probing partitions, so one in the right bucket (or the one below) costs it no extra read.
   */
  private recordHead(groupId: string, head: Head): void {
    head.recorded = head.durable;
    const completion = this.db.execute('UPDATE group_heads SET last_seq = ? WHERE group_id = ?', [head.durable, groupId]).catch(() => undefined);
    this.completing.add(completion);
    void completion.then(() => this.completing.delete(completion));
  }

  /** Throws unless this node still writes the group under the epoch its head was read in. */
  private fence(groupId: string, epoch: number): void {
    if (this.writers.holding(groupId) !== epoch) {
      throw new ChorusError('STORE_UNAVAILABLE', `this node's hold on group ${groupId} lapsed; retrying`);
    }
  }

  /** The stored messages of the drafts (by index) whose (sender, clientMsgId) is already in the group. */
  private async lookup(groupId: string, drafts: MessageDraft[], indices: number[]): Promise<Map<number, StampedMessage>> {
    const entries: { i: number; first: number; last: number }[] = [];
    await Promise.all(
      chunksBySender(drafts, indices).map(async ({ senderId, chunk }) => {
        const indexOf = new Map(chunk.map((i) => [drafts[i]!.clientMsgId, i]));
        const result = await this.db.execute(
          'SELECT client_msg_id, first_seq, last_seq FROM message_dedup WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?',
          [groupId, senderId, [...indexOf.keys()]],
        );
        for (const row of result.rows) {
          entries.push({ i: indexOf.get(row.get('client_msg_id') as string)!, first: Number(row.get('first_seq')), last: Number(row.get('last_seq')) });
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
  private async writeDedup(groupId: string, drafts: MessageDraft[], toStamp: number[], seqOf: (k: number) => number): Promise<void> {
    const seqByIndex = new Map(toStamp.map((i, k) => [i, seqOf(k)]));
    await Promise.all(
      chunksBySender(drafts, toStamp).map(({ senderId, chunk }) =>
        this.db.execute(
          `UPDATE message_dedup${this.ttl} SET first_seq = ?, last_seq = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?`,
          [seqByIndex.get(chunk[0]!), seqByIndex.get(chunk.at(-1)!), groupId, senderId, chunk.map((i) => drafts[i]!.clientMsgId)],
        ),
      ),
    );
  }

  /** Writes the messages in seq order, one partition (and at most MAX_WRITE_BYTES) per write, each after a fence. */
  private async writeMessages(groupId: string, drafts: MessageDraft[], toStamp: number[], seqOf: (k: number) => number, epoch: number): Promise<void> {
    let part: { query: string; params: unknown[] }[] = [];
    let partBytes = 0;
    const flush = async () => {
      this.fence(groupId, epoch);
      await this.db.batch(part, false);
      part = [];
      partBytes = 0;
    };
    for (let k = 0; k < toStamp.length; k++) {
      const d = drafts[toStamp[k]!]!;
      const seq = seqOf(k);
      if (part.length > 0 && (seq % BUCKET === 0 || partBytes + d.body.length * 4 > MAX_WRITE_BYTES)) await flush();
      part.push({
        query: `INSERT INTO messages (group_id, bucket, seq, sender_id, client_msg_id, type, body, reply_to_seq, mentions, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)${this.ttl}`,
        params: [groupId, bucketOf(seq), seq, d.senderId, d.clientMsgId, d.type, d.body, d.replyToSeq ?? null, d.mentions ?? null, new Date(d.createdAtMs)],
      });
      partBytes += d.body.length * 4;
    }
    if (part.length > 0) await flush();
  }

  /** The highest stored seq: the head row (a lower bound) corrected by probing the partitions above it. */
  private async truth(groupId: string): Promise<number> {
    const head = await this.db.execute('SELECT last_seq FROM group_heads WHERE group_id = ?', [groupId]);
    let last = Number(head.first()?.get('last_seq') ?? 0);
    for (let bucket = bucketOf(last); ; bucket++) {
      const top = await this.db.execute('SELECT seq FROM messages WHERE group_id = ? AND bucket = ? ORDER BY seq DESC LIMIT 1', [groupId, bucket]);
      const seq = top.first()?.get('seq');
      if (seq == null) {
        if (bucket > bucketOf(last)) return last;
        continue;
      }
      last = Math.max(last, Number(seq));
    }
  }

  private async readAt(groupId: string, seq: number): Promise<StampedMessage | undefined> {
    const result = await this.db.execute('SELECT * FROM messages WHERE group_id = ? AND bucket = ? AND seq = ?', [groupId, bucketOf(seq), seq]);
    const row = result.first();
    return row ? rowToMessage(groupId, row) : undefined;
  }

  async readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    const out: StampedMessage[] = [];
    const slice = (bucket: number) =>
      this.db.execute('SELECT * FROM messages WHERE group_id = ? AND bucket = ? AND seq > ? LIMIT ?', [groupId, bucket, afterSeq, limit - out.length]);
    let bucket = bucketOf(afterSeq + 1);
    let rows = (await slice(bucket)).rows;
    if (rows.length === 0) {
      // Nothing here: either nothing newer exists, or this range has expired (TTL) and newer partitions follow.
      const last = await this.truth(groupId);
      while (rows.length === 0 && bucket < bucketOf(last)) rows = (await slice(++bucket)).rows;
    }
    // Seqs have no gaps, so the first partition that comes back short or empty is the end of the log.
    while (rows.length > 0) {
      for (const row of rows) out.push(rowToMessage(groupId, row));
      if (out.length >= limit) break;
      rows = (await slice(++bucket)).rows;
    }
    return out;
  }

  async readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]> {
    const out: StampedMessage[] = [];
    const before = Math.min(beforeSeq, (await this.truth(groupId)) + 1); // partitions above the last seq are empty
    for (let bucket = bucketOf(before - 1); bucket >= 0 && out.length < limit; bucket--) {
      const result = await this.db.execute(
        'SELECT * FROM messages WHERE group_id = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?',
        [groupId, bucket, before, limit - out.length],
      );
      // Seqs have no gaps: an empty partition below stored messages means everything older has expired.
      if (result.rows.length === 0 && out.length > 0) break;
      for (const row of result.rows) out.push(rowToMessage(groupId, row));
    }
    return out;
  }

  async lastSeq(groupId: string): Promise<number> {
    // The writer's head is the truth while its hold lasts: every stamp of the group went through it.
    const head = this.heads.get(groupId);
    if (head && this.writers.holding(groupId) === head.epoch) return head.durable;
    return this.truth(groupId);
  }

  async close(): Promise<void> {
    await Promise.all(this.completing);
  }
}
