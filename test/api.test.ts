import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, signToken } from '../auth/token-verifier.js';
import { loadConfig } from '../config/config.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups } from '../groups/groups.js';
import { MembershipFeedLocal, type MembershipChange } from '../groups/membership-feed.js';
import type { Api } from '../history-api/api-deps.js';
import { buildApi } from '../history-api/app.js';
import type { StampedMessage } from '../protocol/index.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { SearchByScan } from '../search/search-scan.js';
import { Sequencer } from '../sequencer/sequencer.js';
import { tempDir } from './harness.js';
import { PresenceLocal } from '../broker/presence.js';
import { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';
import { ReadReceipts } from '../groups/read-receipts.js';

describe('REST API (app.inject)', () => {
  const config = loadConfig({}, { dataDir: tempDir(), maxGroupMembers: 4 });
  const log = new MessageLogSqlite(join(config.dataDir, 'messages.db'), { synchronous: 'normal' });
  const store = new GroupStoreSqlite(join(config.dataDir, 'groups.db'), 'normal');
  const feed = new MembershipFeedLocal();
  const pushStore = new PushStoreSqlite(join(config.dataDir, 'push.db'));
  const groups = new Groups(store, feed, config.maxGroupMembers);
  const fannedOut: StampedMessage[] = [];
  const changes: MembershipChange[] = [];
  feed.subscribe((c) => void changes.push(c));
  const sequencer = new Sequencer(
    log,
    { stored: (_groupId, messages) => void fannedOut.push(...messages), writerLost: () => {} },
    {
      maxBodyBytes: config.maxBodyBytes,
      maxPendingSends: 1000,
    },
  );
  let app: Api;
  const told: { groupId: string; event: unknown; except: string }[] = [];

  beforeAll(async () => {
    app = await buildApi({
      config,
      verifier: await createTokenVerifier(config),
      authThrottle: new FailedAuthThrottle(config.authFailuresPerMinute),
      readReceipts: new ReadReceipts(
        groups,
        log,
        async (groupId, event, except) => void told.push({ groupId, event, except }),
      ),
      groups,
      log,
      sends: sequencer,
      search: new SearchByScan(log, 10_000),
      presence: new PresenceLocal(),
      push: { store: pushStore, vapidPublicKey: 'unused-here' },
      isReady: () => true,
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(async () => {
    await app.close();
    await log.close();
    await store.close();
    await pushStore.close();
  });

  const call = async (userId: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) => {
    const res = await app.inject({
      method,
      url,
      payload,
      headers: { authorization: `Bearer ${await signToken(config, userId, 60)}` },
    });
    return { status: res.statusCode, body: res.body ? res.json() : undefined };
  };

  it('creates a group with its creator as admin and lists it with lastSeq, readSeq and unread', async () => {
    const created = await call('ann', 'POST', '/v1/groups', { name: 'Team', members: ['ben', 'ann'] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      name: 'Team',
      createdBy: 'ann',
      role: 'admin',
      lastSeq: 0,
      readSeq: 0,
      unread: 0,
    });
    const id = created.body.id;
    expect(changes.filter((c) => c.groupId === id).map((c) => [c.kind, c.userId])).toEqual([
      ['added', 'ann'],
      ['added', 'ben'],
    ]);
    for (let i = 0; i < 3; i++)
      await call('ann', 'POST', `/v1/groups/${id}/messages`, { clientMsgId: `m${i}`, body: `hello ${i}` });
    const mine = await call('ben', 'GET', '/v1/groups');
    expect(mine.body.groups).toEqual([
      expect.objectContaining({ id, role: 'member', lastSeq: 3, readSeq: 0, unread: 3 }),
    ]);
    expect(await call('ben', 'PUT', `/v1/groups/${id}/read`, { seq: 2 })).toEqual({
      status: 200,
      body: { readSeq: 2, unread: 1 },
    });
    expect((await call('ben', 'PUT', `/v1/groups/${id}/read`, { seq: 1 })).body.readSeq).toBe(2); // never moves back
    expect((await call('ben', 'PUT', `/v1/groups/${id}/read`, { seq: 99 })).body).toEqual({ readSeq: 3, unread: 0 }); // capped
    // A read receipt for the others each time the pointer moved (2, then 3), none when it did not.
    expect(told.filter((t) => t.groupId === id)).toEqual([
      { groupId: id, event: { type: 'read', groupId: id, userId: 'ben', seq: 2 }, except: 'ben' },
      { groupId: id, event: { type: 'read', groupId: id, userId: 'ben', seq: 3 }, except: 'ben' },
    ]);
    expect((await call('ben', 'GET', `/v1/groups/${id}`)).body).toMatchObject({ unread: 0, readSeq: 3 });
    expect(fannedOut.filter((m) => m.groupId === id).map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('pages history forward with afterSeq, backward with beforeSeq, between with both, and newest-first by default', async () => {
    const id = (await call('ann', 'POST', '/v1/groups', { name: 'History' })).body.id;
    for (let i = 1; i <= 12; i++)
      await call('ann', 'POST', `/v1/groups/${id}/messages`, { clientMsgId: `h${i}`, body: `b${i}` });
    const seqs = async (query: string) =>
      (await call('ann', 'GET', `/v1/groups/${id}/messages?${query}`)).body.messages.map((m: StampedMessage) => m.seq);
    expect(await seqs('afterSeq=0&limit=5')).toEqual([1, 2, 3, 4, 5]);
    expect(await seqs('afterSeq=10')).toEqual([11, 12]);
    expect(await seqs('beforeSeq=4')).toEqual([3, 2, 1]);
    expect(await seqs('limit=3')).toEqual([12, 11, 10]);
    expect(await seqs('afterSeq=3&beforeSeq=7')).toEqual([4, 5, 6]); // both: the messages between, ascending
    expect(await seqs('afterSeq=3&beforeSeq=7&limit=2')).toEqual([4, 5]);
    expect(await seqs('afterSeq=0&beforeSeq=1')).toEqual([]);
    // A member added later reads the most recent history too.
    await call('ann', 'POST', `/v1/groups/${id}/members`, { userId: 'newbie' });
    expect((await call('newbie', 'GET', `/v1/groups/${id}/messages?limit=2`)).body).toMatchObject({
      lastSeq: 12,
      messages: [{ seq: 12 }, { seq: 11 }],
    });
    // The reads go out beside the membership check: an outsider still gets only the refusal.
    const outsider = await call('outsider', 'GET', `/v1/groups/${id}/messages?afterSeq=0`);
    expect(outsider.status).toBe(403);
    expect(outsider.body).toEqual({ code: 'NOT_A_MEMBER', message: expect.any(String) });
  });

  it('lets only admins manage members, lets members leave, and keeps an admin while others remain', async () => {
    const id = (await call('ann', 'POST', '/v1/groups', { name: 'Admins', members: ['ben'] })).body.id;
    expect((await call('ben', 'POST', `/v1/groups/${id}/members`, { userId: 'cat' })).body.code).toBe('NOT_ADMIN');
    expect((await call('ann', 'POST', `/v1/groups/${id}/members`, { userId: 'cat' })).status).toBe(201);
    expect((await call('ann', 'POST', `/v1/groups/${id}/members`, { userId: 'cat' })).body.code).toBe('ALREADY_MEMBER');
    expect((await call('ben', 'DELETE', `/v1/groups/${id}/members/cat`)).body.code).toBe('NOT_ADMIN');
    expect((await call('ann', 'DELETE', `/v1/groups/${id}/members/ann`)).body.code).toBe('LAST_ADMIN');
    expect((await call('ann', 'PUT', `/v1/groups/${id}/members/ann/role`, { role: 'member' })).body.code).toBe(
      'LAST_ADMIN',
    );
    expect((await call('ann', 'PUT', `/v1/groups/${id}/members/ben/role`, { role: 'admin' })).body).toMatchObject({
      userId: 'ben',
      role: 'admin',
    });
    expect((await call('ann', 'PUT', `/v1/groups/${id}/members/ann/role`, { role: 'member' })).body.role).toBe(
      'member',
    );
    expect((await call('cat', 'DELETE', `/v1/groups/${id}/members/cat`)).status).toBe(204); // leaving
    expect((await call('cat', 'GET', `/v1/groups/${id}`)).body.code).toBe('NOT_A_MEMBER');
    expect((await call('ben', 'DELETE', `/v1/groups/${id}/members/nobody`)).body.code).toBe('MEMBER_NOT_FOUND');
    const members = await call('ann', 'GET', `/v1/groups/${id}/members?limit=1`);
    expect(members.body).toMatchObject({ count: 2, members: [{ userId: 'ann', role: 'member' }], next: 'ann' });
    expect(
      (await call('ann', 'GET', `/v1/groups/${id}/members?after=ann`)).body.members.map(
        (m: { userId: string }) => m.userId,
      ),
    ).toEqual(['ben']);
  });

  it('enforces the member limit, and answers unknown groups with 404 and non-members with 403', async () => {
    expect((await call('ann', 'POST', '/v1/groups', { name: 'Big', members: ['a', 'b', 'c', 'd'] })).body.code).toBe(
      'GROUP_FULL',
    );
    const id = (await call('ann', 'POST', '/v1/groups', { name: 'Full', members: ['a', 'b', 'c'] })).body.id;
    expect((await call('ann', 'POST', `/v1/groups/${id}/members`, { userId: 'd' })).body.code).toBe('GROUP_FULL');
    expect((await call('zed', 'GET', `/v1/groups/${id}`)).status).toBe(403);
    expect((await call('zed', 'GET', '/v1/groups/g_missing')).status).toBe(404);
    expect((await call('zed', 'POST', '/v1/groups/g_missing/members', { userId: 'x' })).body.code).toBe(
      'GROUP_NOT_FOUND',
    );
  });

  it('adds members in a batch: admins only, those already in listed apart, all or none against the limit, each announced', async () => {
    const id = (await call('ann', 'POST', '/v1/groups', { name: 'Batch' })).body.id;
    const batch = (userId: string, userIds: string[]) =>
      call(userId, 'POST', `/v1/groups/${id}/members/batch`, { userIds });
    expect((await batch('ann', ['b1', 'b2'])).body).toEqual({ added: ['b1', 'b2'], alreadyMembers: [] });
    expect((await batch('b1', ['b3'])).body.code).toBe('NOT_ADMIN');
    expect((await batch('ann', ['b3', 'b4'])).body.code).toBe('GROUP_FULL'); // 3 + 2 > 4: none added
    expect((await call('ann', 'GET', `/v1/groups/${id}/members`)).body.count).toBe(3);
    const before = changes.length;
    expect((await batch('ann', ['b2', 'b3', 'ann'])).body).toEqual({ added: ['b3'], alreadyMembers: ['b2', 'ann'] });
    expect(changes.slice(before)).toEqual([{ kind: 'added', groupId: id, userId: 'b3', role: 'member', by: 'ann' }]);
    expect((await batch('ann', [])).body.code).toBe('VALIDATION_FAILED');
    expect((await batch('ann', ['x', 'x'])).body.code).toBe('VALIDATION_FAILED');
    expect((await call('ann', 'POST', '/v1/groups/g_missing/members/batch', { userIds: ['x'] })).body.code).toBe(
      'GROUP_NOT_FOUND',
    );
  });

  it('validates bodies with the stable codes and serves the OpenAPI document', async () => {
    expect((await call('ann', 'POST', '/v1/groups', { name: '' })).body.code).toBe('VALIDATION_FAILED');
    expect((await call('ann', 'POST', '/v1/groups', { name: 'x', color: 'red' })).body.code).toBe('UNKNOWN_FIELD');
    expect((await call('ann', 'POST', '/v1/groups', { name: 'x', members: ['bad/id'] })).body.code).toBe(
      'VALIDATION_FAILED',
    );
    const docs = await app.inject({ method: 'GET', url: '/docs/json' });
    expect(docs.statusCode).toBe(200);
    const spec = docs.json();
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining([
        '/v1/groups',
        '/v1/groups/{groupId}/messages',
        '/v1/groups/{groupId}/read',
        '/v1/groups/{groupId}/members/{userId}/role',
      ]),
    );
  });
});
