import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { TestChorus, collect, sdkClient, subscribeCodes, tempDir, until } from './harness.js';

/** The chat features end to end on the embedded tier: real MQTT.js clients (raw and through the SDK) and REST. */
describe('chat features: edits, deletes, reactions, attachments, @everyone, receipts, group admin, history visibility', () => {
  let t: TestChorus;
  let log: MessageLogSqlite;
  beforeAll(async () => {
    log = new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' });
    t = await TestChorus.start({ sqliteSynchronous: 'normal', deliveredFlushMs: 100 }, { messageLog: log });
  });
  afterAll(() => t.close());

  const send = (userId: string, groupId: string, payload: Record<string, unknown>) =>
    t.api(userId, 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: `c-${Math.random().toString(36).slice(2)}`,
      ...payload,
    });
  const history = async (userId: string, groupId: string, query = 'afterSeq=0') =>
    (await t.api(userId, 'GET', `/v1/groups/${groupId}/messages?${query}`)).body.messages as StampedMessage[];

  it('sequences edits, deletes and reactions, applies them to history, and the SDK applies them to what it delivered', async () => {
    const groupId = await t.group('alice', ['bob']);
    const [alice, bob] = await Promise.all([sdkClient(t, 'alice'), sdkClient(t, 'bob')]);
    const updates: StampedMessage[] = [];
    bob.on('update', (message) => updates.push(message));
    const seen: StampedMessage[] = [];
    bob.on('message', (m) => seen.push(m));
    await Promise.all([alice.join(groupId), bob.join(groupId)]);

    const { seq } = await alice.send(groupId, { body: 'hello wrld' });
    await bob.react(groupId, seq, '👍');
    await alice.react(groupId, seq, '👍');
    await alice.edit(groupId, seq, 'hello world');
    await until(() => updates.length === 3, 'three updates at bob');
    expect(updates.at(-1)).toMatchObject({
      seq,
      body: 'hello world',
      reactions: [{ emoji: '👍', count: 2, mine: true }],
    });
    expect(updates.at(-1)!.editedAt).toBeDefined();
    expect(seen.map((m) => m.type)).toEqual(['text', 'reaction', 'reaction', 'edit']); // the events, in seq order

    const [stored] = await history('bob', groupId, 'afterSeq=0&limit=1&withReactions=true');
    expect(stored).toMatchObject({ seq, body: 'hello world', reactions: [{ emoji: '👍', count: 2, mine: true }] });
    expect((await history('bob', groupId, 'afterSeq=0&limit=1'))[0]).not.toHaveProperty('reactions'); // only when asked

    await alice.deleteMessage(groupId, seq);
    await until(() => updates.length === 4, 'the delete at bob');
    expect(updates.at(-1)).toMatchObject({ seq, deletedAt: expect.any(String) });
    expect(updates.at(-1)).not.toHaveProperty('body');
    const after = await history('bob', groupId, 'afterSeq=0&withReactions=true');
    expect(after[0]).toEqual({
      groupId,
      seq,
      senderId: 'alice',
      clientMsgId: after[0]!.clientMsgId,
      type: 'text',
      createdAt: after[0]!.createdAt,
      deletedAt: expect.any(String),
    });
    expect(after.find((m) => m.type === 'edit')).not.toHaveProperty('body'); // the edit's body went with it
    // Erased from the store, not hidden: the log itself holds neither body any more.
    expect(JSON.stringify(await log.readAfter(groupId, 0, 100))).not.toMatch(/hello w/);
    await Promise.all([alice.close(), bob.close()]);
  });

  it('refuses what a member may not do, each with its code, over REST and MQTT; a retried delete learns its seq', async () => {
    const groupId = await t.group('ann', ['ben']);
    const first = (await send('ann', groupId, { body: 'by ann' })).body.seq as number;
    const byBen = (await send('ben', groupId, { body: 'by ben' })).body.seq as number;
    const reaction = (await send('ben', groupId, { type: 'reaction', targetSeq: first, emoji: '🎉' })).body
      .seq as number;

    const refused = async (userId: string, payload: Record<string, unknown>) => {
      const res = await send(userId, groupId, payload);
      return [res.status, res.body.code];
    };
    expect(await refused('ben', { type: 'edit', targetSeq: first, body: 'mine now' })).toEqual([403, 'NOT_SENDER']);
    expect(await refused('ann', { type: 'edit', targetSeq: byBen, body: 'admins cannot edit' })).toEqual([
      403,
      'NOT_SENDER',
    ]);
    expect(await refused('ben', { type: 'delete', targetSeq: first })).toEqual([403, 'NOT_SENDER']);
    expect(await refused('ben', { type: 'edit', targetSeq: 999, body: 'x' })).toEqual([400, 'TARGET_UNKNOWN']);
    expect(await refused('ben', { type: 'reaction', targetSeq: reaction, emoji: '👍' })).toEqual([
      400,
      'TARGET_UNKNOWN',
    ]);
    expect(await refused('ben', { type: 'reaction', targetSeq: first })).toEqual([400, 'INVALID_MESSAGE']);
    expect(await refused('ben', { type: 'delete', targetSeq: first, body: 'x' })).toEqual([400, 'INVALID_MESSAGE']);
    expect(await refused('ben', { body: 'hi', targetSeq: first })).toEqual([400, 'INVALID_MESSAGE']);
    expect(await refused('ben', { type: 'text' })).toEqual([400, 'INVALID_MESSAGE']); // neither body nor attachments
    expect(await refused('ben', { body: 'x', mentionEveryone: true })).toEqual([403, 'NOT_ADMIN']);
    for (const url of ['http://cdn.example/a.png', 'https://user:pw@cdn.example/a.png', 'javascript:alert(1)']) {
      expect(await refused('ben', { attachments: [{ url, mimeType: 'image/png', sizeBytes: 1 }] })).toEqual([
        400,
        expect.stringMatching(/INVALID_MESSAGE|VALIDATION_FAILED/),
      ]);
    }

    // The admin deletes ben's message; a retry with the same clientMsgId is the same delete (200, original seq).
    const del = { clientMsgId: 'del-1', type: 'delete', targetSeq: byBen };
    const deleted = await t.api('ann', 'POST', `/v1/groups/${groupId}/messages`, del);
    expect(deleted.status).toBe(201);
    const retried = await t.api('ann', 'POST', `/v1/groups/${groupId}/messages`, del);
    expect([retried.status, retried.body.seq, retried.body.duplicate]).toEqual([200, deleted.body.seq, true]);
    expect(await refused('ben', { type: 'edit', targetSeq: byBen, body: 'back' })).toEqual([409, 'TARGET_DELETED']);
    expect(await refused('ann', { type: 'reaction', targetSeq: byBen, emoji: '👍' })).toEqual([409, 'TARGET_DELETED']);

    // Over MQTT the refusal reaches the sender's events topic with the same code.
    const ben = await t.mqtt('ben');
    const got = collect(ben);
    await ben.subscribeAsync('users/ben/events', { qos: 1 });
    await ben.publishAsync(
      `groups/${groupId}/messages`,
      JSON.stringify({ clientMsgId: 'm-edit', type: 'edit', targetSeq: first, body: 'x' }),
      { qos: 1 },
    );
    await until(() => got.all.length === 1, 'the rejection');
    expect(got.all[0]!.body).toMatchObject({ type: 'rejected', code: 'NOT_SENDER', groupId, clientMsgId: 'm-edit' });
    await ben.endAsync();
  });

  it('carries attachments (without a body too) and an admin @everyone to members', async () => {
    const groupId = await t.group('cat', ['dan']);
    const dan = await t.mqtt('dan');
    const got = collect(dan);
    await dan.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const photo = {
      url: 'https://cdn.example/p/photo.jpg',
      mimeType: 'image/jpeg',
      sizeBytes: 204_800,
      name: 'photo.jpg',
      width: 800,
      height: 600,
    };
    expect((await send('cat', groupId, { attachments: [photo] })).status).toBe(201);
    expect((await send('cat', groupId, { body: 'all hands', mentionEveryone: true })).status).toBe(201);
    await until(() => got.all.length === 2, 'both at dan');
    expect(got.all[0]!.body).toMatchObject({ attachments: [photo] });
    expect(got.all[0]!.body).not.toHaveProperty('body');
    expect(got.all[1]!.body).toMatchObject({ body: 'all hands', mentionEveryone: true });
    await dan.endAsync();
  });

  it('counts delivered (PUBACKed, or read through history) and read per message, and pushes delivered marks to small groups', async () => {
    const groupId = await t.group('eve', ['fay', 'gus']);
    const [eve, fay] = await Promise.all([sdkClient(t, 'eve'), sdkClient(t, 'fay')]);
    const marks: { groupId: string; userId: string; seq: number }[] = [];
    eve.on('delivered', (mark) => marks.push(mark));
    await Promise.all([eve.join(groupId), fay.join(groupId)]);
    const { seq } = await eve.send(groupId, { body: 'did you get this?' });
    await until(() => marks.some((m) => m.userId === 'fay' && m.seq === seq), "eve hears fay's delivered mark");
    const receipts = async () => (await t.api('eve', 'GET', `/v1/groups/${groupId}/messages/${seq}/receipts`)).body;
    await until(async () => (await receipts()).deliveredTo === 2, 'delivered to eve and fay (gus is offline)');
    expect(await receipts()).toEqual({ seq, members: 3, deliveredTo: 2, readBy: 0, readers: [] });
    await history('gus', groupId); // gus reads it over REST: delivered to him too
    await until(async () => (await receipts()).deliveredTo === 3, 'delivered to gus through history');
    await fay.markRead(groupId, seq);
    expect(await receipts()).toEqual({ seq, members: 3, deliveredTo: 3, readBy: 1, readers: ['fay'] });
    expect((await t.api('eve', 'GET', `/v1/groups/${groupId}/messages/${seq + 1}/receipts`)).body.code).toBe(
      'MESSAGE_NOT_FOUND',
    );
    expect((await t.api('zed', 'GET', `/v1/groups/${groupId}/messages/${seq}/receipts`)).body.code).toBe(
      'NOT_A_MEMBER',
    );
    await Promise.all([eve.close(), fay.close()]);
  });

  it('lets admins change a group (members hear group-updated) and delete it (group-deleted, subscriptions end, data gone)', async () => {
    const groupId = await t.group('hal', ['ida']);
    const ida = await t.mqtt('ida');
    const got = collect(ida);
    await ida.subscribeAsync(['users/ida/events', `groups/${groupId}/messages`], { qos: 1 });
    expect((await t.api('ida', 'PATCH', `/v1/groups/${groupId}`, { name: 'mine' })).body.code).toBe('NOT_ADMIN');
    const patched = await t.api('hal', 'PATCH', `/v1/groups/${groupId}`, {
      name: 'Team',
      description: 'we ship',
      avatarUrl: 'https://cdn.example/t.png',
    });
    expect(patched.body).toMatchObject({
      id: groupId,
      name: 'Team',
      description: 'we ship',
      avatarUrl: 'https://cdn.example/t.png',
      historyVisibility: 'all',
    });
    await until(() => got.on('users/ida/events').some((e) => e.type === 'group-updated'), 'group-updated at ida');
    expect(got.on('users/ida/events').find((e) => e.type === 'group-updated')).toEqual({
      type: 'group-updated',
      groupId,
      by: 'hal',
      name: 'Team',
      description: 'we ship',
      avatarUrl: 'https://cdn.example/t.png',
      historyVisibility: 'all',
    });
    expect(
      (await t.api('hal', 'PATCH', `/v1/groups/${groupId}`, { avatarUrl: 'http://insecure.example/t.png' })).status,
    ).toBe(400);

    await send('hal', groupId, { body: 'soon gone' });
    await until(() => got.on(`groups/${groupId}/messages`).length === 1, 'the message at ida');
    expect((await t.api('ida', 'DELETE', `/v1/groups/${groupId}`)).body.code).toBe('NOT_ADMIN');
    expect((await t.api('hal', 'DELETE', `/v1/groups/${groupId}`)).status).toBe(204);
    await until(() => got.on('users/ida/events').some((e) => e.type === 'group-deleted'), 'group-deleted at ida');
    expect(got.on('users/ida/events').find((e) => e.type === 'group-deleted')).toEqual({
      type: 'group-deleted',
      groupId,
      by: 'hal',
    });
    expect((await t.api('hal', 'GET', `/v1/groups/${groupId}`)).body.code).toBe('GROUP_NOT_FOUND');
    expect(await subscribeCodes(ida, [`groups/${groupId}/messages`])).toEqual([0x80]);
    expect(await log.readAfter(groupId, 0, 10)).toEqual([]);
    expect((await t.api('ida', 'GET', '/v1/groups')).body.groups.map((g: { id: string }) => g.id)).not.toContain(
      groupId,
    );
    await sleep(100);
    expect(got.on(`groups/${groupId}/messages`)).toHaveLength(1);
    await ida.endAsync();
  });

  it('shows a since-joined member only what was sent while a member, across leave and re-join, in both directions', async () => {
    const created = await t.api('jo', 'POST', '/v1/groups', {
      name: 'private',
      members: ['kim'],
      historyVisibility: 'since-joined',
    });
    const groupId = created.body.id as string;
    expect(created.body.historyVisibility).toBe('since-joined');
    const say = (body: string) => send('jo', groupId, { body });
    await say('one');
    await say('two');
    await t.api('jo', 'POST', `/v1/groups/${groupId}/members`, { userId: 'lee' });
    await say('three');
    await t.api('jo', 'DELETE', `/v1/groups/${groupId}/members/lee`);
    await say('four');
    await t.api('jo', 'POST', `/v1/groups/${groupId}/members`, { userId: 'lee' });
    await say('five');
    const bodies = (messages: StampedMessage[]) => messages.map((m) => m.body);
    expect(bodies(await history('lee', groupId))).toEqual(['three', 'five']);
    expect(bodies(await history('lee', groupId, 'afterSeq=0&limit=1'))).toEqual(['three']);
    expect(bodies(await history('lee', groupId, 'afterSeq=3'))).toEqual(['five']);
    expect(bodies(await history('lee', groupId, 'limit=10'))).toEqual(['five', 'three']);
    expect(bodies(await history('lee', groupId, 'beforeSeq=5'))).toEqual(['three']);
    expect(bodies(await history('kim', groupId))).toEqual(['one', 'two', 'three', 'four', 'five']);
    expect((await t.api('lee', 'GET', `/v1/groups/${groupId}/messages/1/receipts`)).body.code).toBe(
      'MESSAGE_NOT_FOUND',
    );
    expect((await t.api('lee', 'GET', `/v1/groups/${groupId}/messages/3/receipts`)).status).toBe(200);
    // Switched to all, the whole history is lee's to read.
    await t.api('jo', 'PATCH', `/v1/groups/${groupId}`, { historyVisibility: 'all' });
    expect(bodies(await history('lee', groupId))).toEqual(['one', 'two', 'three', 'four', 'five']);
  });
});
