import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { CassandraSession, hedged } from '../cassandra/session.js';
import { GroupStoreCassandra } from '../groups/group-store-cassandra.js';
import { PushStoreCassandra } from '../push/push-store-cassandra.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { connectCassandra, replicatedSettings, ringContactPoints, testKeyspace } from './services.js';

/** A read that answers `value` (or fails with it) after `ms`, counting its calls. */
const reads = (...answers: { ms: number; value?: string; error?: string }[]) => {
  let calls = 0;
  const read = async () => {
    const answer = answers[calls++]!;
    await sleep(answer.ms);
    if (answer.error) throw new Error(answer.error);
    return answer.value!;
  };
  return { read, calls: () => calls };
};

describe('hedged reads', () => {
  it('a read that answers in time is sent once', async () => {
    const r = reads({ ms: 10, value: 'first' });
    expect(await hedged(r.read, 200)).toBe('first');
    await sleep(250);
    expect(r.calls()).toBe(1);
  });

  it('a read held past the limit is sent again, and the second answer wins when it comes first', async () => {
    const r = reads({ ms: 2_000, value: 'held' }, { ms: 10, value: 'second' });
    const started = performance.now();
    expect(await hedged(r.read, 100)).toBe('second');
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(r.calls()).toBe(2);
  });

  it('the first answer still wins when it comes before the second', async () => {
    const r = reads({ ms: 150, value: 'first' }, { ms: 1_000, value: 'second' });
    expect(await hedged(r.read, 100)).toBe('first');
  });

  it('one failure is covered by the other request; two report the first', async () => {
    expect(await hedged(reads({ ms: 200, error: 'timed out' }, { ms: 10, value: 'second' }).read, 100)).toBe('second');
    expect(await hedged(reads({ ms: 150, value: 'first' }, { ms: 10, error: 'down' }).read, 100)).toBe('first');
    await expect(hedged(reads({ ms: 200, error: 'first' }, { ms: 10, error: 'second' }).read, 100)).rejects.toThrow(
      'first',
    );
  });

  it('a read that fails before the limit fails at once, without a second request', async () => {
    const r = reads({ ms: 10, error: 'refused' }, { ms: 10, value: 'second' });
    await expect(hedged(r.read, 200)).rejects.toThrow('refused');
    await sleep(250);
    expect(r.calls()).toBe(1);
  });
});

describe('schema at start', () => {
  /** What each node of the ring itself holds (asked of that node alone, as its own coordinator). */
  const tablesAt = async (db: CassandraSession, keyspace: string) =>
    Promise.all(
      db.client.hosts.values().map(async (host) => {
        const { rows } = await db.client.execute(
          'SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?',
          [keyspace],
          { host, prepare: true },
        );
        return [host.address, rows.map((row) => row.get('table_name') as string).sort()];
      }),
    );

  it('leaves every table on every node of the three-node ring by the time the stores have opened', async () => {
    const keyspace = testKeyspace();
    const db = await CassandraSession.connect({
      contactPoints: ringContactPoints.split(','),
      localDataCenter: 'datacenter1',
      keyspace,
      replication: replicatedSettings.CHORUS_CASSANDRA_REPLICATION!,
    });
    try {
      const writers = await GroupWritersCassandra.start(db, 'schema-test');
      await GroupStoreCassandra.open(db);
      await MessageLogCassandra.open(db, writers, { retentionSeconds: async () => 0 });
      await PushStoreCassandra.open(db);
      await writers.close();
      // No wait here: each open returned only once every node agreed on the schema.
      const tables = await tablesAt(db, keyspace);
      const expected = [
        'delivered_marks',
        'dedup_ranges',
        'group_admins',
        'group_heads',
        'group_messages',
        'group_sizes',
        'group_writers',
        'groups',
        'member_ranges',
        'members_by_group',
        'members_by_user',
        'message_reactions',
        'push_modes',
        'push_subscriptions',
        'writer_nodes',
      ].sort();
      expect(tables.sort()).toEqual(ringContactPoints.split(',').map((address) => [address, expected]));
    } finally {
      await db.close();
    }
  }, 120_000);

  it("adds the group columns that a keyspace made before them lacks, and leaves a current keyspace's as they are", async () => {
    const keyspace = testKeyspace();
    const db = await connectCassandra(keyspace);
    try {
      await db.ddl(['CREATE TABLE groups (id text PRIMARY KEY, name text, created_by text, created_at timestamp)']);
      await GroupStoreCassandra.open(db);
      await GroupStoreCassandra.open(db);
      const { rows } = await db.client.execute(
        'SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?',
        [keyspace, 'groups'],
      );
      expect(rows.map((row) => row.get('column_name') as string).sort()).toEqual(
        [
          'avatar_url',
          'created_at',
          'created_by',
          'description',
          'history_visibility',
          'id',
          'name',
          'retention_days',
        ].sort(),
      );
    } finally {
      await db.close();
    }
  }, 60_000);
});
