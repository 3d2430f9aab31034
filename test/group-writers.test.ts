import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CassandraSession } from '../cassandra/session.js';
import { WRITE_LANDS_WITHIN_MS } from '../cassandra/session.js';
import { GroupWritersLocal, WriterMovedError } from '../sequencer/group-writers.js';
import { GroupWritersCassandra, type GroupWritersTiming } from '../sequencer/group-writers-cassandra.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { groupWritersContract } from './group-writers.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

// Short leases, so that a dead node's groups change hands within a test.
const timing: GroupWritersTiming = { leaseMs: 800, renewMs: 200, clockSkewMs: 100, idleMs: 60_000 };
const keyspace = testKeyspace();
const sessions: CassandraSession[] = [];
const connect = async () => {
  const db = await connectCassandra(keyspace);
  sessions.push(db);
  return db;
};
let shared: CassandraSession;
beforeAll(async () => {
  shared = await connect();
});
afterAll(async () => {
  await Promise.all(sessions.map((db) => db.close().catch(() => undefined)));
});

const draft = (senderId: string, clientMsgId: string): MessageDraft => ({
  senderId,
  clientMsgId,
  type: 'text',
  body: clientMsgId,
  createdAtMs: Date.now(),
});
const group = () => `g-${randomUUID()}`;

groupWritersContract('GroupWritersLocal', 1, async (nodeId) => new GroupWritersLocal(nodeId));
groupWritersContract('GroupWritersCassandra (real Cassandra)', Number.POSITIVE_INFINITY, (nodeId) =>
  GroupWritersCassandra.start(shared, nodeId, timing),
);

describe('GroupWritersCassandra (real Cassandra)', () => {
  it('keeps its holds while one lease renewal hangs past the lease: the next renewals do not wait for it', async () => {
    // The renewal after the first hangs for longer than a lease, as one sent to a paused Cassandra node would.
    let leaseWrites = 0;
    const stalling = new Proxy(shared, {
      get(target, key, receiver) {
        if (key !== 'execute') return Reflect.get(target, key, receiver);
        return async (query: string, params: unknown[]) => {
          if (query.startsWith('INSERT INTO writer_nodes') && ++leaseWrites === 2) await sleep(timing.leaseMs * 2);
          return target.execute(query, params);
        };
      },
    });
    const writers = await GroupWritersCassandra.start(stalling, 'stalling', timing);
    try {
      const groupId = group();
      expect(await writers.writerOf(groupId)).toEqual({ here: true, epoch: 1 });
      const until = performance.now() + timing.leaseMs * 3;
      while (performance.now() < until) {
        expect(writers.holding(groupId)).toBe(1);
        await sleep(50);
      }
      expect(leaseWrites).toBeGreaterThan(3);
    } finally {
      await writers.close();
    }
  });

  it('a log on a node that does not write the group refuses the append and writes nothing', async () => {
    const a = await GroupWritersCassandra.start(shared, 'a', timing);
    const b = await GroupWritersCassandra.start(shared, 'b', timing);
    try {
      const groupId = group();
      const logA = await MessageLogCassandra.open(shared, a, { retentionSeconds: () => 0 });
      const logB = await MessageLogCassandra.open(shared, b, { retentionSeconds: () => 0 });
      await logA.append([{ groupId, drafts: [draft('u', 'm1')] }]);
      const refused = logB.append([{ groupId, drafts: [draft('u', 'm2')] }]);
      await expect(refused).rejects.toBeInstanceOf(WriterMovedError);
      await expect(refused).rejects.toMatchObject({ groupIds: [groupId] });
      expect((await logA.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual(['m1']);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('gives its groups back on close once their last writes could have landed, and without waiting when they could', async () => {
    for (const writtenJustBefore of [true, false]) {
      const a = await GroupWritersCassandra.start(shared, 'a', timing);
      const b = await GroupWritersCassandra.start(shared, 'b', timing);
      try {
        const groupId = group();
        expect(await a.writerOf(groupId)).toEqual({ here: true, epoch: 1 });
        expect(a.holding(groupId)).toBe(1); // what a write checks just before it is sent
        if (!writtenJustBefore) await sleep(WRITE_LANDS_WITHIN_MS);
        const started = performance.now();
        await a.close();
        const closeMs = performance.now() - started;
        // Closing right after a write waits out its request timeout (it might still land); long after, it need not.
        if (writtenJustBefore) expect(closeMs).toBeGreaterThanOrEqual(WRITE_LANDS_WITHIN_MS - 50);
        else expect(closeMs).toBeLessThan(WRITE_LANDS_WITHIN_MS);
        expect(await b.writerOf(groupId)).toEqual({ here: true, epoch: 2 });
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    }
  });

  it('gives back a group it has not written for idleMs, and another node takes it at once', async () => {
    const idle = { ...timing, idleMs: 300 };
    const a = await GroupWritersCassandra.start(shared, 'a', idle);
    const b = await GroupWritersCassandra.start(shared, 'b', idle);
    try {
      const groupId = group();
      expect(await a.writerOf(groupId)).toEqual({ here: true, epoch: 1 });
      // Given back (after its last writes could land): b takes it without waiting for a's lease, which a keeps renewing.
      await expect
        .poll(
          async () => {
            b.forget(groupId);
            return b.writerOf(groupId);
          },
          { timeout: 10_000, interval: 200 },
        )
        .toEqual({ here: true, epoch: 2 });
      expect(await a.writerOf(groupId)).toEqual({ here: false, nodeId: b.nodeId });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a node that cannot reach Cassandra stops writing by itself; its groups are taken over only after its writes can no longer land', async () => {
    const lonely = await connect(); // node a's own connection: closing it cuts a off from Cassandra
    const a = await GroupWritersCassandra.start(lonely, 'a', timing);
    const b = await GroupWritersCassandra.start(shared, 'b', timing);
    try {
      const groupId = group();
      const logA = await MessageLogCassandra.open(lonely, a, { retentionSeconds: () => 0 });
      await logA.append([{ groupId, drafts: [draft('u', 'm1'), draft('u', 'm2')] }]);
      expect(await b.writerOf(groupId)).toEqual({ here: false, nodeId: a.nodeId });

      await lonely.close();
      const cutOffAt = Date.now();
      await expect.poll(() => a.holding(groupId), { timeout: 5_000, interval: 50 }).toBeUndefined();

      b.forget(groupId);
      // a's lease still looks current: b keeps pointing at a until it has run out.
      const takenOver = await (async () => {
        for (;;) {
          const writer = await b.writerOf(groupId);
          if (writer.here) return writer;
          b.forget(groupId);
          await sleep(100);
        }
      })();
      expect(takenOver).toEqual({ here: true, epoch: 2 });
      // The last lease a wrote ended at most leaseMs after cutOffAt; b waited for it, the skew and a request's timeout.
      expect(Date.now() - cutOffAt).toBeGreaterThanOrEqual(WRITE_LANDS_WITHIN_MS + timing.clockSkewMs);

      const logB = await MessageLogCassandra.open(shared, b, { retentionSeconds: () => 0 });
      const [outcomes] = await logB.append([{ groupId, drafts: [draft('u', 'm2'), draft('u', 'm3')] }]);
      expect(outcomes!.map((o) => [o.message.seq, o.duplicate])).toEqual([
        [2, true],
        [3, false],
      ]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
