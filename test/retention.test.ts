import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import { DAY_MS } from '../groups/retention.js';
import { sdkClient, TestChorus, until } from './harness.js';
import { cassandraContactPoint, connectCassandra, redisUrl, testKeyspace } from './services.js';

describe('retention on the embedded tier', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ retentionDays: 30, sqliteSynchronous: 'normal' });
  });
  afterAll(async () => {
    await t.close();
  });

  const send = async (groupId: string, clientMsgId: string, body: string) => {
    const res = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId, body });
    expect(res.status).toBe(201);
    return res.body.seq as number;
  };
  const history = (groupId: string, afterSeq = 0) =>
    t.api('bob', 'GET', `/v1/groups/${groupId}/messages?afterSeq=${afterSeq}`).then((res) => res.body);

  it('prunes what is past the retention: history says where the kept range begins, and seqs go on', async () => {
    const groupId = await t.group('alice', ['bob']);
    for (let i = 1; i <= 3; i++) await send(groupId, `old-${i}`, `release notes ${i}`);
    expect(await history(groupId)).toMatchObject({ lastSeq: 3, retainedFrom: 1 });

    const removed = await t.chorus.pruner!.sweep(Date.now() + 31 * DAY_MS);
    expect(removed).toBeGreaterThanOrEqual(3);
    expect(await history(groupId)).toEqual({ messages: [], lastSeq: 3, retainedFrom: 4 });
    expect(await send(groupId, 'new-1', 'fresh news')).toBe(4);
    const page = await history(groupId, 1);
    expect(page.messages.map((m: StampedMessage) => m.seq)).toEqual([4]);
    expect(page.retainedFrom).toBe(4);
    // Gone from the index too, and no longer a target.
    const found = await t.api('bob', 'GET', `/v1/groups/${groupId}/search?q=release`);
    expect(found.body.hits).toEqual([]);
    const edit = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'late-edit',
      type: 'edit',
      targetSeq: 1,
      body: 'too late',
    });
    expect(edit.status).toBe(410);
    expect(edit.body.code).toBe('TARGET_EXPIRED');
  });

  it("lets admins shorten a group's retention, up to the server's, and prunes each group by its own", async () => {
    const short = await t.group('alice', ['bob']);
    const long = await t.group('alice', ['bob']);
    expect((await t.api('alice', 'GET', `/v1/groups/${short}`)).body.retentionDays).toBe(30);
    const tooLong = await t.api('alice', 'PATCH', `/v1/groups/${short}`, { retentionDays: 31 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.code).toBe('RETENTION_TOO_LONG');
    const notAdmin = await t.api('bob', 'PATCH', `/v1/groups/${short}`, { retentionDays: 7 });
    expect(notAdmin.status).toBe(403);
    const changed = await t.api('alice', 'PATCH', `/v1/groups/${short}`, { retentionDays: 7 });
    expect(changed.status).toBe(200);
    expect(changed.body.retentionDays).toBe(7);
    const zero = await t.api('alice', 'PATCH', `/v1/groups/${short}`, { retentionDays: 0 });
    expect(zero.status).toBe(400);

    await send(short, 'a', 'short-lived');
    await send(long, 'b', 'long-lived');
    await t.chorus.pruner!.sweep(Date.now() + 8 * DAY_MS);
    expect(await history(short)).toMatchObject({ messages: [], retainedFrom: 2 });
    expect((await history(long)).messages.map((m: StampedMessage) => m.body)).toEqual(['long-lived']);

    const reset = await t.api('alice', 'PATCH', `/v1/groups/${short}`, { retentionDays: null });
    expect(reset.body.retentionDays).toBe(30);
    const created = await t.api('alice', 'POST', '/v1/groups', { name: 'brief', retentionDays: 2 });
    expect(created.body.retentionDays).toBe(2);
  });

  it('tells an SDK client catching up past expired messages that they expired, then goes on in order', async () => {
    const groupId = await t.group('alice', ['bob']);
    for (let i = 1; i <= 3; i++) await send(groupId, `gone-${i}`, `gone ${i}`);
    await t.chorus.pruner!.sweep(Date.now() + 31 * DAY_MS);
    await send(groupId, 'kept-4', 'kept 4');
    const bob = await sdkClient(t, 'bob');
    try {
      const expired: { groupId: string; from: number; through: number }[] = [];
      const seqs: number[] = [];
      const errors: Error[] = [];
      bob.on('expired', (range) => expired.push(range));
      bob.on('message', (m) => seqs.push(m.seq));
      bob.on('error', (err) => errors.push(err));
      await bob.join(groupId, { from: 0 });
      await send(groupId, 'kept-5', 'kept 5');
      await until(() => seqs.length === 2, 'messages 4 and 5');
      expect(expired).toEqual([{ groupId, from: 1, through: 3 }]);
      expect(seqs).toEqual([4, 5]);
      expect(errors).toEqual([]);
    } finally {
      await bob.close();
    }
  });
});

describe('retention on the cluster tier', () => {
  const keyspace = testKeyspace();
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({
      store: 'cassandra',
      redisUrl,
      cassandraContactPoints: cassandraContactPoint,
      cassandraKeyspace: keyspace,
      retentionDays: 30,
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it("gives each message a TTL from its group's retention, and says where the kept range begins", async () => {
    const groupId = await t.group('alice', ['bob']);
    expect((await t.api('alice', 'PATCH', `/v1/groups/${groupId}`, { retentionDays: 7 })).status).toBe(200);
    const sent = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'm1', body: 'hi' });
    expect(sent.status).toBe(201);
    expect(t.chorus.pruner).toBeNull(); // Cassandra expires its rows itself
    const db = await connectCassandra(keyspace);
    try {
      const row = (
        await db.execute('SELECT TTL(draft) AS ttl FROM group_messages WHERE group_id = ? AND bucket = 0 AND seq = 1', [
          groupId,
        ])
      ).first();
      const ttl = Number(row.get('ttl'));
      expect(ttl).toBeGreaterThan(7 * 86_400 - 120);
      expect(ttl).toBeLessThanOrEqual(7 * 86_400);
    } finally {
      await db.close();
    }
    const page = await t.api('bob', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0`);
    expect(page.body).toMatchObject({ lastSeq: 1, retainedFrom: 1 });
  });
});
