import type cassandra from 'cassandra-driver';
import { ChorusError, type StampedMessage } from '../protocol/index.js';
import type { CassandraSession } from './cassandra-session.js';
import { toStampedMessage, type AppendOutcome, type GroupAppend, type MessageDraft, type MessageLog } from './message-log.js';
import type { SeqHints } from './seq-hints.js';

/** Messages per partition: (group_id, bucket) holds seqs [bucket * BUCKET, (bucket + 1) * BUCKET). */
export const BUCKET = 1000;
const bucketOf = (seq: number): number => Math.floor(seq / BUCKET);

/** A claim without a seq older than this belongs to a sender that died mid-append; it may be taken over. */
const STALE_CLAIM_MS = 5_000;
/** How far a stranded claim is looked for in the log before it is taken over. */
const RECOVERY_SCAN = 5_000;

export interface CassandraLogOptions {
  /** Messages and dedup claims expire after this many seconds; 0 keeps them forever. */
  ttlSeconds: number;
  /** Identifies this process in dedup claims, so that its own retries recognise their claims at once. */
  nodeId: string;
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

/**
 * The message log on Apache Cassandra, for many nodes sharing one log. Messages are partitioned by (group, seq bucket)
 * and clustered by seq, so a catch-up read is a slice of one or two partitions.
 *
 * How the contract holds without a single writer:
 * - Seq: a message is inserted with IF NOT EXISTS at hint + 1 (the hint is shared in Redis and never above the truth).
 *   A batch is a conditional batch inside one partition, so it lands whole or not at all; a conflict means another
 *   node got there first, and the batch is retried after the truth. A seq exists only once its message is stored, so a
 *   crash leaves no hole, and IF NOT EXISTS means no stored message is ever overwritten, whatever Redis remembers.
 * - Dedup: before stamping, each (sender, clientMsgId) is claimed with IF NOT EXISTS in message_claims, and the claim
 *   gets its seq once the message is stored. A claim without a seq is an append in flight; if its owner died, the log
 *   is searched from the claim's recorded floor before the claim is taken over, so a retry never makes a second message.
 */
export class MessageLogCassandra implements MessageLog {
  /** Appends to one group from this process run one after another: Paxos rounds on one partition only contend. */
  private readonly groupChains = new Map<string, Promise<unknown>>();
  /** The last seq this process stamped per group: a floor as good as the shared hint, without a round trip. */
  private readonly stampedHere = new Map<string, number>();
  /** Claim completions still being written (awaited by close). */
  private readonly completing = new Set<Promise<unknown>>();

  private constructor(
    private readonly db: CassandraSession,
    private readonly hints: SeqHints,
    private readonly options: CassandraLogOptions,
  ) {}

  static async open(db: CassandraSession, hints: SeqHints, options: CassandraLogOptions): Promise<MessageLogCassandra> {
    await db.ddl(`CREATE TABLE IF NOT EXISTS messages (
      group_id text, bucket bigint, seq bigint, sender_id text, client_msg_id text, type text, body text,
      reply_to_seq bigint, mentions list<text>, created_at timestamp,
      PRIMARY KEY ((group_id, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)`);
    await db.ddl(`CREATE TABLE IF NOT EXISTS message_claims (
      group_id text, sender_id text, client_msg_id text, seq bigint, floor_seq bigint, owner text, claimed_at timestamp,
      PRIMARY KEY ((group_id, sender_id), client_msg_id))`);
    await db.ddl('CREATE TABLE IF NOT EXISTS group_heads (group_id text PRIMARY KEY, last_seq bigint)');
    return new MessageLogCassandra(db, hints, options);
  }

  private get ttl(): string {
    return this.options.ttlSeconds > 0 ? ` USING TTL ${this.options.ttlSeconds}` : '';
  }

  async append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    return Promise.all(batch.map((part) => this.inGroupOrder(part.groupId, () => this.appendGroup(part))));
  }

  private inGroupOrder<T>(groupId: string, run: () => Promise<T>): Promise<T> {
    const previous = this.groupChains.get(groupId) ?? Promise.resolve();
    const next = previous.then(run, run);
    const settled = next.catch(() => undefined);
    this.groupChains.set(groupId, settled);
    void settled.then(() => {
      if (this.groupChains.get(groupId) === settled) this.groupChains.delete(groupId);
    });
    return next;
  }

  private owner(draft: MessageDraft): string {
    return `${this.options.nodeId}:${draft.createdAtMs}`;
  }

  private async appendGroup({ groupId, drafts }: GroupAppend): Promise<AppendOutcome[]> {
    const outcomes: (AppendOutcome | undefined)[] = new Array(drafts.length);
    const firstOfKey = new Map<string, number>();
    const repeats: [number, number][] = [];
    drafts.forEach((draft, i) => {
      const key = `${draft.senderId}\u0000${draft.clientMsgId}`;
      const first = firstOfKey.get(key);
      if (first === undefined) firstOfKey.set(key, i);
      else repeats.push([i, first]);
    });

    // Claims only need a floor (a seq at or below where their messages will land), and this process's last stamp is
    // one: then the shared hint is read while the claims are made.
    const hint = this.hint(groupId);
    const claimFloor = this.stampedHere.get(groupId) ?? (await hint);
    const [floor, toStamp] = await Promise.all([hint, this.claim(groupId, drafts, [...firstOfKey.values()], claimFloor, outcomes)]);
    toStamp.sort((a, b) => a - b);
    const last = await this.stamp(groupId, drafts, toStamp, floor, outcomes);

    if (toStamp.length > 0) {
      this.stampedHere.set(groupId, Math.max(last, this.stampedHere.get(groupId) ?? 0));
      // Off the critical path: a claim left without its seq is found again by search(), the head row is only a lower
      // bound for truth(), and the hint only saves a conflict.
      const completion = Promise.all([
        this.completeClaims(groupId, drafts, toStamp, outcomes),
        this.db.execute('UPDATE group_heads SET last_seq = ? WHERE group_id = ?', [last, groupId]),
        this.hints.raise(groupId, last),
      ]).catch(() => undefined);
      this.completing.add(completion);
      void completion.then(() => this.completing.delete(completion));
    }
    for (const [i, first] of repeats) outcomes[i] = { message: outcomes[first]!.message, duplicate: true };
    return outcomes as AppendOutcome[];
  }

  /** Claims each draft's clientMsgId; returns the drafts this call must stamp, resolving the others as duplicates. */
  private async claim(
    groupId: string,
    drafts: MessageDraft[],
    indices: number[],
    floor: number,
    outcomes: (AppendOutcome | undefined)[],
  ): Promise<number[]> {
    const bySender = new Map<string, number[]>();
    for (const i of indices) {
      const mine = bySender.get(drafts[i]!.senderId);
      if (mine) mine.push(i);
      else bySender.set(drafts[i]!.senderId, [i]);
    }
    const toStamp: number[] = [];
    await Promise.all(
      [...bySender].map(async ([senderId, mine]) => {
        let pending = mine;
        while (pending.length > 0) {
          const result = await this.db.batch(
            pending.map((i) => ({
              query: `INSERT INTO message_claims (group_id, sender_id, client_msg_id, floor_seq, owner, claimed_at)
                      VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS${this.ttl}`,
              params: [groupId, senderId, drafts[i]!.clientMsgId, floor, this.owner(drafts[i]!), new Date()],
            })),
          );
          if (result.wasApplied()) {
            toStamp.push(...pending);
            return;
          }
          const existing = new Map<string, Row>();
          for (const row of result.rows) if (row.get('client_msg_id')) existing.set(row.get('client_msg_id') as string, row);
          for (const i of pending) {
            const claim = existing.get(drafts[i]!.clientMsgId);
            if (claim && (await this.resolveClaim(groupId, drafts[i]!, claim, outcomes, i))) toStamp.push(i);
          }
          pending = pending.filter((i) => !existing.has(drafts[i]!.clientMsgId));
        }
      }),
    );
    return toStamp;
  }

  /**
   * An existing claim: a stored message (duplicate), this process's own earlier attempt, or a stranded claim of a
   * dead sender. Returns true when the draft must be stamped by this call.
   */
  private async resolveClaim(groupId: string, draft: MessageDraft, claim: Row, outcomes: (AppendOutcome | undefined)[], i: number): Promise<boolean> {
    const seq = claim.get('seq');
    if (seq != null) {
      const message = await this.readAt(groupId, Number(seq));
      if (!message) throw new ChorusError('STORE_UNAVAILABLE', `claimed message ${groupId}/${seq} is not readable yet`);
      outcomes[i] = { message, duplicate: true };
      return false;
    }
    // No seq on the claim: its append may have stored the message and not yet recorded it (that happens off the
    // critical path), may still be running, or may have died. The log answers the first case.
    const stored = await this.search(groupId, Number(claim.get('floor_seq')), draft);
    if (stored) {
      await this.db.execute('UPDATE message_claims SET seq = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?', [
        stored.seq,
        groupId,
        draft.senderId,
        draft.clientMsgId,
      ]);
      // Stored, by whichever attempt: a duplicate, as the contract says. When it was this send's own failed attempt,
      // the sequencer (which retried it) still gives it its first delivery.
      outcomes[i] = { message: stored, duplicate: true };
      return false;
    }
    if (claim.get('owner') === this.owner(draft)) return true; // our own earlier attempt stored nothing: stamp now
    const claimedAt = (claim.get('claimed_at') as Date).getTime();
    if (Date.now() - claimedAt < STALE_CLAIM_MS) {
      throw new ChorusError('STORE_UNAVAILABLE', 'a send with this clientMsgId is in flight on another node');
    }
    const takeover = await this.db.execute(
      `UPDATE message_claims SET owner = ?, claimed_at = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?
       IF owner = ? AND claimed_at = ?`,
      [this.owner(draft), new Date(), groupId, draft.senderId, draft.clientMsgId, claim.get('owner'), claim.get('claimed_at')],
    );
    if (!takeover.wasApplied()) throw new ChorusError('STORE_UNAVAILABLE', 'a send with this clientMsgId changed hands; retry');
    return true;
  }

  /** Looks for a sender's clientMsgId among the messages after `floor` (a stranded claim's recovery). */
  private async search(groupId: string, floor: number, draft: MessageDraft): Promise<StampedMessage | undefined> {
    for (let after = floor, scanned = 0; scanned < RECOVERY_SCAN; ) {
      const page = await this.readAfter(groupId, after, 1000);
      const found = page.find((m) => m.senderId === draft.senderId && m.clientMsgId === draft.clientMsgId);
      if (found || page.length < 1000) return found;
      after = page.at(-1)!.seq;
      scanned += page.length;
    }
    return undefined;
  }

  /** Inserts the drafts at the next seqs, retrying after the truth on conflict. Returns the last seq stamped. */
  private async stamp(groupId: string, drafts: MessageDraft[], toStamp: number[], floor: number, outcomes: (AppendOutcome | undefined)[]): Promise<number> {
    let last = floor;
    let remaining = toStamp;
    while (remaining.length > 0) {
      // One conditional batch must stay inside one partition: stop at the bucket boundary.
      const room = (bucketOf(last + 1) + 1) * BUCKET - (last + 1);
      const part = remaining.slice(0, Math.max(1, Math.min(remaining.length, room)));
      const result = await this.db.batch(
        part.map((i, j) => {
          const d = drafts[i]!;
          const seq = last + 1 + j;
          return {
            query: `INSERT INTO messages (group_id, bucket, seq, sender_id, client_msg_id, type, body, reply_to_seq, mentions, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS${this.ttl}`,
            params: [groupId, bucketOf(seq), seq, d.senderId, d.clientMsgId, d.type, d.body, d.replyToSeq ?? null, d.mentions ?? null, new Date(d.createdAtMs)],
          };
        }),
      );
      if (!result.wasApplied()) {
        last = await this.truth(groupId); // another node stamped first, or the hint was re-seeded low
        continue;
      }
      part.forEach((i, j) => {
        outcomes[i] = { message: toStampedMessage(groupId, last + 1 + j, drafts[i]!), duplicate: false };
      });
      last += part.length;
      remaining = remaining.slice(part.length);
    }
    return last;
  }

  private async completeClaims(groupId: string, drafts: MessageDraft[], stamped: number[], outcomes: (AppendOutcome | undefined)[]): Promise<void> {
    await this.db.batch(
      stamped.map((i) => ({
        query: 'UPDATE message_claims' + this.ttl + ' SET seq = ? WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?',
        params: [outcomes[i]!.message.seq, groupId, drafts[i]!.senderId, drafts[i]!.clientMsgId],
      })),
      false,
    );
  }

  /** The shared hint, re-seeded from the log when Redis has none. */
  private async hint(groupId: string): Promise<number> {
    const shared = await this.hints.get(groupId).catch(() => undefined);
    const here = this.stampedHere.get(groupId);
    const hint = shared === undefined ? here : Math.max(shared, here ?? 0);
    if (hint !== undefined) return hint;
    const truth = await this.truth(groupId);
    await this.hints.raise(groupId, truth).catch(() => undefined);
    return truth;
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
    return this.truth(groupId);
  }

  async close(): Promise<void> {
    await Promise.all(this.completing);
  }
}
