import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { WRITE_LANDS_WITHIN_MS, type CassandraSession } from '../cassandra/session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import type { AppendOutcome, MessageDraft } from '../sequencer/message-log.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { EXPIRING, EXPIRING_RETENTION_MS, messageLogContract } from './message-log.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

const keyspace = testKeyspace();
let db: CassandraSession;
// One node: every log the suite opens (a reopen stands for a restart) writes under this node's holds.
let writers: GroupWritersCassandra;
beforeAll(async () => {
  db = await connectCassandra(keyspace);
  writers = await GroupWritersCassandra.start(db, 'contract');
});
afterAll(async () => {
  await writers.close();
  await db.close();
});

/** The suite's session, telling `seen` of each query it executes, and `done` of each when it has finished. */
function observedSession(seen: (query: string) => void, done?: (query: string) => void): CassandraSession {
  const session = Object.create(db) as CassandraSession;
  session.execute = async (query, params) => {
    seen(query);
    try {
      return await db.execute(query, params);
    } finally {
      done?.(query);
    }
  };
  return session;
}

messageLogContract(
  'cassandra',
  () =>
    MessageLogCassandra.open(db, writers, {
      retentionSeconds: (groupId) => (groupId.startsWith(EXPIRING) ? EXPIRING_RETENTION_MS / 1000 : 0),
    }),
  // Rows expire by their TTL, in whole seconds: the time comes, and one second more.
  async (_log, _groupId, asOfMs) => {
    await sleep(asOfMs - Date.now() + 1100);
  },
);

describe('MessageLogCassandra expiry', () => {
  const ttlOfRow = async (groupId: string, seq: number) =>
    Number(
      (
        await db.execute('SELECT TTL(draft) AS ttl FROM group_messages WHERE group_id = ? AND bucket = 0 AND seq = ?', [
          groupId,
          seq,
        ])
      )
        .first()
        .get('ttl'),
    );

  it('never lets a message expire before the one stamped before it, also after the retention was shortened', async () => {
    let retentionSeconds = 3600;
    const log = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => retentionSeconds });
    const groupId = `g-${randomUUID()}`;
    const send = (clientMsgId: string) =>
      log.append([{ groupId, drafts: [{ senderId: 'u', clientMsgId, type: 'text', createdAtMs: Date.now() }] }]);
    await send('under-an-hour');
    retentionSeconds = 60;
    await send('under-a-minute');
    // Had it taken 60 s, seq 2 would be gone while seq 1 stays: a hole in what is kept.
    expect(await ttlOfRow(groupId, 2)).toBeGreaterThan(3500);
    expect(await ttlOfRow(groupId, 2)).toBeGreaterThanOrEqual((await ttlOfRow(groupId, 1)) - 1);
    // A new writer (a reopened log) learns the last message's expiry from the log.
    const reopened = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => 60 });
    await reopened.append([
      { groupId, drafts: [{ senderId: 'u', clientMsgId: 'later', type: 'text', createdAtMs: Date.now() }] },
    ]);
    expect(await ttlOfRow(groupId, 3)).toBeGreaterThan(3500);
  });

  it("answers firstSeq without a read while the first kept row's TTL holds, and reads again once it may have run out", async () => {
    let reads = 0;
    const session = observedSession((query) => {
      if (query.startsWith('SELECT seq, TTL(draft)')) reads += 1;
    });
    const retention = new Map<string, number>();
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds: (g) => retention.get(g) ?? 0 });
    const send = (groupId: string, clientMsgId: string) =>
      log.append([{ groupId, drafts: [{ senderId: 'u', clientMsgId, type: 'text', createdAtMs: Date.now() }] }]);

    const forGood = `g-${randomUUID()}`; // no retention: no TTL, so its first seq holds until the group goes
    await send(forGood, 'a');
    await send(forGood, 'b');
    expect(await log.firstSeq(forGood)).toBe(1);
    expect(await log.firstSeq(forGood)).toBe(1);
    expect(reads).toBe(1);

    const expiring = `g-${randomUUID()}`;
    retention.set(expiring, 5);
    await send(expiring, 'a');
    expect(await log.firstSeq(expiring)).toBe(1);
    expect(await log.firstSeq(expiring)).toBe(1);
    expect(reads).toBe(2);
    // Trusted until two seconds before the row's TTL runs out (whole seconds, and an edit rewrites the row with what
    // was left): a read again after that.
    await sleep(3100);
    expect(await log.firstSeq(expiring)).toBe(1);
    expect(reads).toBe(3);
    await log.close();
  });

  it("pages from the newest on the group's writer from its head, and elsewhere from the log", async () => {
    const queries: string[] = [];
    const session = observedSession((query) => queries.push(query));
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    const drafts = ['a', 'b', 'c'].map((clientMsgId) => ({ senderId: 'u', clientMsgId, type: 'text', createdAtMs: 1 }));
    await log.append([{ groupId, drafts }]);
    queries.length = 0;
    expect((await log.readBefore(groupId, Number.MAX_SAFE_INTEGER, 2)).map((m) => m.seq)).toEqual([3, 2]);
    expect(queries.filter((q) => q.includes('group_heads'))).toEqual([]); // the writer knows its last seq
    expect(queries).toHaveLength(1);

    // A node that does not write the group reads where the log ends.
    await log.close();
    await writers.close();
    writers = await GroupWritersCassandra.start(db, 'contract');
    const reader = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    queries.length = 0;
    expect((await reader.readBefore(groupId, Number.MAX_SAFE_INTEGER, 2)).map((m) => m.seq)).toEqual([3, 2]);
    expect(queries.filter((q) => q.includes('group_heads'))).toHaveLength(1);
    await reader.close();
  });
});

describe('MessageLogCassandra pages across partitions', () => {
  /** A log whose reads of message slices are counted, with the most of them in flight at once. */
  async function slicesCounted(retentionSeconds: (groupId: string) => number) {
    const slices = { count: 0, inFlight: 0, mostInFlight: 0 };
    const isSlice = (query: string) => query.startsWith('SELECT seq, draft FROM group_messages');
    const session = observedSession(
      (query) => {
        if (!isSlice(query)) return;
        slices.count += 1;
        slices.mostInFlight = Math.max(slices.mostInFlight, ++slices.inFlight);
      },
      (query) => {
        if (isSlice(query)) slices.inFlight -= 1;
      },
    );
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds });
    const counted = async <T>(read: () => Promise<T>) => {
      Object.assign(slices, { count: 0, mostInFlight: 0 });
      const result = await read();
      return { result, slices: { count: slices.count, mostInFlight: slices.mostInFlight } };
    };
    return { log, counted };
  }
  const send = (log: MessageLogCassandra, groupId: string, from: number, n: number, createdAtMs: number) =>
    log.append([
      {
        groupId,
        drafts: Array.from({ length: n }, (_, i) => ({
          senderId: 'u',
          clientMsgId: `m${String(from + i).padStart(5, '0')}`,
          type: 'text',
          createdAtMs,
        })),
      },
    ]);
  const seqsOf = (page: { seq: number }[]) => [page[0]?.seq, page.at(-1)?.seq, page.length];

  it("reads a page that runs into the next partition with both slices at once, and ends at a slice short of its partition's end", async () => {
    const { log, counted } = await slicesCounted(() => 0);
    const groupId = `g-${randomUUID()}`;
    for (let sent = 0; sent < 1050; sent += 150) await send(log, groupId, sent, 150, Date.now());

    // Seqs 1-999 are in partition 0, 1000-1999 in partition 1.
    let read = await counted(() => log.readAfter(groupId, 950, 100));
    expect(seqsOf(read.result)).toEqual([951, 1050, 100]);
    expect(read.slices).toEqual({ count: 2, mostInFlight: 2 });

    read = await counted(() => log.readBefore(groupId, 1010, 30));
    expect(seqsOf(read.result)).toEqual([1009, 980, 30]);
    expect(read.slices).toEqual({ count: 2, mostInFlight: 2 });

    // The log ends inside the first partition read: nothing more is read.
    read = await counted(() => log.readAfter(groupId, 1040, 100));
    expect(seqsOf(read.result)).toEqual([1041, 1050, 10]);
    expect(read.slices.count).toBe(1);
    read = await counted(() => log.readBefore(groupId, 21, 100));
    expect(seqsOf(read.result)).toEqual([20, 1, 20]);
    expect(read.slices.count).toBe(1);
    // A page across the edge to where the log ends reads those two partitions and no further.
    read = await counted(() => log.readAfter(groupId, 960, 100));
    expect(seqsOf(read.result)).toEqual([961, 1050, 90]);
    expect(read.slices.count).toBe(2);
    // The writer knows where the log ends: a page that could run into the next partition does not read it at once
    // when the log ends before it.
    read = await counted(() => log.readAfter(groupId, 1020, 1000));
    expect(seqsOf(read.result)).toEqual([1021, 1050, 30]);
    expect(read.slices.count).toBe(1);
    await log.close();
  });

  it('skips partitions whose messages have expired, forward to the first kept one, and stops going back at them', async () => {
    const retention = 3600;
    const { log, counted } = await slicesCounted(() => retention);
    const groupId = `g-${randomUUID()}`;
    // Made as long ago as the retention: their rows are written with the shortest TTL, a second. Then 10 new ones.
    const gone = Date.now() - retention * 1000;
    for (let sent = 0; sent < 2010; sent += 201) await send(log, groupId, sent, 201, gone);
    await send(log, groupId, 2010, 10, Date.now());
    const kept = async () =>
      (
        await db.execute('SELECT COUNT(*) AS n FROM group_messages WHERE group_id = ? AND bucket IN (0, 1, 2)', [
          groupId,
        ])
      )
        .first()
        .get('n');
    for (let waited = 0; Number(await kept()) > 10 && waited < 20; waited++) await sleep(500);
    expect(Number(await kept())).toBe(10);

    let read = await counted(() => log.readAfter(groupId, 0, 100));
    expect(seqsOf(read.result)).toEqual([2011, 2020, 10]);
    // The first partition, found empty, then the partition of the first kept seq (found without reading slices).
    expect(read.slices.count).toBe(2);
    read = await counted(() => log.readBefore(groupId, 2011, 10));
    expect(read.result).toEqual([]);
    expect(read.slices.count).toBe(1); // partitions 1 and 0 are not read
    await log.close();
  });
});

describe('MessageLogCassandra dedup entries', () => {
  const draft = (clientMsgId: string): MessageDraft => ({
    senderId: 'u',
    clientMsgId,
    type: 'text',
    body: clientMsgId,
    createdAtMs: Date.now(),
  });

  it('ignores an entry whose seqs hold other messages (left by a write that failed), and stamps the send anew', async () => {
    const log = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    // What a failed commit leaves: the entry for "lost" went in, its message did not, and seq 1 went to "other".
    await db.execute(
      'UPDATE dedup_ranges SET seqs = (1, 1) WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?',
      [groupId, 'u', ['lost']],
    );
    await log.append([{ groupId, drafts: [draft('other')] }]);
    const [[outcome]] = (await log.append([{ groupId, drafts: [draft('lost')] }])) as [[AppendOutcome]];
    expect([outcome.message.seq, outcome.duplicate]).toEqual([2, false]);
    // And the entry now names the stored message: a retry is a duplicate of seq 2.
    const [[retry]] = (await log.append([{ groupId, drafts: [draft('lost')] }])) as [[AppendOutcome]];
    expect([retry.message.seq, retry.duplicate]).toEqual([2, true]);
  });

  it('finds a sender whose messages in one commit were interleaved with another sender', async () => {
    const log = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    const mixed = ['a1', 'b1', 'a2', 'b2', 'a3'].map((id) => ({ ...draft(id), senderId: id[0]! }));
    await log.append([{ groupId, drafts: mixed }]);
    const [retries] = await log.append([{ groupId, drafts: [mixed[2]!, mixed[3]!] }]);
    expect(retries!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([
      [3, 'a2', true],
      [4, 'b2', true],
    ]);
  });
});

describe('MessageLogCassandra calls in flight together', () => {
  const draft = (clientMsgId: string): MessageDraft => ({
    senderId: 'u',
    clientMsgId,
    type: 'text',
    body: clientMsgId,
    createdAtMs: Date.now(),
  });

  it('fails a call whose predecessor failed to write, leaves no hole, and reads the log again once a late write cannot land', async () => {
    // The session as the log sees it, but the next write of messages fails 200 ms late: by then the next call has
    // stamped its drafts after the failing call's and waits for it.
    let failNextMessages = false;
    const session = Object.create(db) as CassandraSession;
    session.batch = async (queries, logged) => {
      if (!failNextMessages) return db.batch(queries, logged);
      failNextMessages = false;
      await sleep(200);
      throw new Error('write timed out');
    };
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    await log.append([{ groupId, drafts: ['a', 'b', 'c'].map(draft) }]);

    failNextMessages = true;
    const failing = log.append([{ groupId, drafts: [draft('d'), draft('e')] }]);
    const following = log.append([{ groupId, drafts: [draft('f')] }]);
    await expect(failing).rejects.toThrow('write timed out');
    const failedAt = performance.now();
    await expect(following).rejects.toThrow('write timed out');
    expect((await log.readAfter(groupId, 0, 10)).map((m) => m.seq)).toEqual([1, 2, 3]);

    const [retried] = await log.append([{ groupId, drafts: ['d', 'e', 'f'].map(draft) }]);
    // The failed write's time to land (less what a loaded machine took to report the failure): without the wait, ~20 ms.
    expect(performance.now() - failedAt).toBeGreaterThanOrEqual(WRITE_LANDS_WITHIN_MS - 500);
    expect(retried!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([
      [4, 'd', false],
      [5, 'e', false],
      [6, 'f', false],
    ]);
    expect((await log.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    await log.close();
  });

  it('writes again the dedup entries a failed write left out, so a retry of messages that landed is a duplicate', async () => {
    let failNextEntries = false;
    const session = Object.create(db) as CassandraSession;
    session.execute = async (query, params) => {
      if (failNextEntries && query.startsWith('UPDATE dedup_ranges')) {
        failNextEntries = false;
        await sleep(200); // a timeout comes late: the messages, written alongside, have landed by then
        throw new Error('entries timed out');
      }
      return db.execute(query, params);
    };
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    await log.append([{ groupId, drafts: [draft('a')] }]);
    failNextEntries = true;
    await expect(log.append([{ groupId, drafts: [draft('b'), draft('c')] }])).rejects.toThrow('entries timed out');
    expect((await log.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual(['a', 'b', 'c']); // the messages landed

    const [retried] = await log.append([{ groupId, drafts: [draft('b'), draft('c'), draft('d')] }]);
    expect(retried!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([
      [2, 'b', true],
      [3, 'c', true],
      [4, 'd', false],
    ]);
    await log.close();
  });

  it("applies again an event whose effect a failed write left out, before the group's next stamp", async () => {
    let failNextEffect = false;
    const session = Object.create(db) as CassandraSession;
    session.execute = async (query, params) => {
      if (failNextEffect && query.includes('USING TTL ?')) {
        failNextEffect = false;
        throw new Error('effect timed out');
      }
      return db.execute(query, params);
    };
    const log = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    const groupId = `g-${randomUUID()}`;
    await log.append([{ groupId, drafts: [draft('a')] }]);
    failNextEffect = true;
    await expect(
      log.append([{ groupId, drafts: [{ ...draft('e'), type: 'edit', targetSeq: 1, body: 'edited' }] }]),
    ).rejects.toThrow('effect timed out');
    const [target] = await log.readAfter(groupId, 0, 1);
    expect(target!.body).not.toBe('edited'); // the edit is stored, its effect is not
    await log.append([{ groupId, drafts: [draft('b')] }]);
    expect((await log.readAfter(groupId, 0, 1))[0]).toMatchObject({ body: 'edited', editedAt: expect.any(String) });
    await log.close();
  });
});

describe('MessageLogCassandra lookups skipped for time-ordered ids', () => {
  it('looks up only keys not greater than every key the sender has, and reads that key again under a new hold', async () => {
    let lookups = 0;
    const session = observedSession((query) => {
      if (query.startsWith('SELECT client_msg_id, seqs FROM dedup_ranges')) lookups += 1;
    });
    const draft = (clientMsgId: string): MessageDraft => ({
      senderId: 'u',
      clientMsgId,
      type: 'text',
      body: clientMsgId,
      createdAtMs: Date.now(),
    });
    const groupId = `g-${randomUUID()}`;
    const summary = (outcomes: AppendOutcome[][]) =>
      outcomes[0]!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate]);

    const first = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    expect(summary(await first.append([{ groupId, drafts: [draft('k001'), draft('k002')] }]))).toEqual([
      [1, 'k001', false],
      [2, 'k002', false],
    ]);
    expect(lookups).toBe(1); // the sender's greatest key was not known yet
    expect(summary(await first.append([{ groupId, drafts: [draft('k003')] }]))).toEqual([[3, 'k003', false]]);
    expect(lookups).toBe(1); // greater than k002: new without asking
    expect(summary(await first.append([{ groupId, drafts: [draft('k002'), draft('k000')] }]))).toEqual([
      [2, 'k002', true],
      [4, 'k000', false],
    ]);
    expect(lookups).toBe(2);
    await first.close();

    // A new hold (a restart, or another node) knows nothing of k003 until it reads the log: the retry is still found.
    await writers.close();
    writers = await GroupWritersCassandra.start(db, 'contract');
    const second = await MessageLogCassandra.open(session, writers, { retentionSeconds: () => 0 });
    expect(summary(await second.append([{ groupId, drafts: [draft('k003'), draft('k004')] }]))).toEqual([
      [3, 'k003', true],
      [5, 'k004', false],
    ]);
    expect(summary(await second.append([{ groupId, drafts: [draft('k005')] }]))).toEqual([[6, 'k005', false]]);
    expect(lookups).toBe(3);
    await second.close();
  });
});
