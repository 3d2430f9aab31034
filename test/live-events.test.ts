import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { typingTopic } from '../protocol/index.js';
import { TestChorus, collect, sdkClient, subscribeCodes, until } from './harness.js';

describe('live events: typing indicators (ephemeral, stamped with the sender, rate-limited) and read receipts, small groups only', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ liveEventsMaxGroupMembers: 3, sqliteSynchronous: 'normal' });
  });
  afterAll(() => t.close());

  it("relays a member's typing to the others' events at QoS 0, as the sender, at most once per 2 s, and stores nothing", async () => {
    const groupId = await t.group('alice', ['bob', 'carol']);
    const [alice, bob, carol, dave] = await Promise.all([
      t.mqtt('alice'),
      t.mqtt('bob'),
      t.mqtt('carol'),
      t.mqtt('dave'),
    ]);
    const got = new Map<string, ReturnType<typeof collect>>();
    for (const [name, client] of [
      ['alice', alice],
      ['bob', bob],
      ['carol', carol],
      ['dave', dave],
    ] as const) {
      got.set(name, collect(client));
      await client.subscribeAsync(`users/${name}/events`, { qos: 1 });
    }
    // Presence events (the members' own connects, told in a batch) are not what this test is about.
    const heard = (name: string) => got.get(name)!.all.filter((m) => m.body.type !== 'presence');
    // The payload's claims are ignored: the server names the connection's user.
    await alice.publishAsync(typingTopic(groupId), JSON.stringify({ userId: 'mallory' }), { qos: 0 });
    await alice.publishAsync(typingTopic(groupId), '', { qos: 0 }); // within 2 s: dropped
    await until(() => heard('bob').length === 1 && heard('carol').length === 1, 'bob and carol hear it');
    await sleep(300);
    for (const name of ['bob', 'carol'])
      expect(heard(name).map((m) => m.body)).toEqual([{ type: 'typing', groupId, userId: 'alice' }]);
    expect(heard('alice')).toEqual([]); // not back to the sender
    // A non-member's typing reaches nobody (and is refused to it).
    await dave.publishAsync(typingTopic(groupId), '', { qos: 0 });
    await until(() => heard('dave').length === 1, 'the refusal');
    expect(heard('dave')[0]!.body).toMatchObject({ type: 'rejected', code: 'NOT_A_MEMBER', groupId });
    await sleep(2100);
    await alice.publishAsync(typingTopic(groupId), '', { qos: 0 }); // a new 2 s window
    await until(() => heard('bob').length === 2, 'the second indicator');
    expect((await t.api('alice', 'GET', `/v1/groups/${groupId}/messages`)).body.messages).toEqual([]);
    await Promise.all([alice, bob, carol, dave].map((c) => c.endAsync()));
  });

  it('relays nothing in a group larger than liveEventsMaxGroupMembers', async () => {
    const groupId = await t.group('ann', ['ben', 'cy', 'dee']); // four members, the limit is three
    const [ann, ben] = await Promise.all([t.mqtt('ann'), t.mqtt('ben')]);
    const benGot = collect(ben);
    await ben.subscribeAsync('users/ben/events', { qos: 1 });
    await ann.publishAsync(typingTopic(groupId), '', { qos: 0 });
    await sleep(500);
    expect(benGot.all).toEqual([]);
    await Promise.all([ann.endAsync(), ben.endAsync()]);
  });

  it('reaches SDK clients as a typing event, and the SDK sends at most one every 2 s', async () => {
    const groupId = await t.group('eve', ['fay']);
    const [eve, fay] = await Promise.all([sdkClient(t, 'eve'), sdkClient(t, 'fay')]);
    const heard: { groupId: string; userId: string }[] = [];
    fay.on('typing', (typing) => heard.push(typing));
    for (let i = 0; i < 5; i++) eve.typing(groupId);
    await until(() => heard.length === 1, 'fay hears eve typing');
    await sleep(300);
    expect(heard).toEqual([{ groupId, userId: 'eve' }]);
    await Promise.all([eve.close(), fay.close()]);
  });

  it("tells the other members' SDKs when a member's read pointer moves (REST, or markRead over MQTT), and not when it does not", async () => {
    const groupId = await t.group('gil', ['hana']);
    const [gil, hana] = await Promise.all([sdkClient(t, 'gil'), sdkClient(t, 'hana')]);
    const receipts: { groupId: string; userId: string; seq: number }[] = [];
    gil.on('read', (receipt) => receipts.push(receipt));
    const mine: unknown[] = [];
    hana.on('read', (receipt) => mine.push(receipt));
    for (let i = 0; i < 3; i++) await gil.send(groupId, { body: `m${i}` });
    expect(await hana.api.markRead(groupId, 2)).toEqual({ readSeq: 2, unread: 1 }); // over REST
    await hana.markRead(groupId, 1); // over MQTT: does not move
    await hana.markRead(groupId, 3);
    expect((await hana.api.getGroup(groupId)).readSeq).toBe(3); // stored by the time markRead resolved
    await until(() => receipts.length === 2, 'two receipts');
    await sleep(300);
    expect(receipts).toEqual([
      { groupId, userId: 'hana', seq: 2 },
      { groupId, userId: 'hana', seq: 3 },
    ]);
    expect(mine).toEqual([]); // not told back to the reader
    await Promise.all([gil.close(), hana.close()]);
  });

  it('takes read pointers over MQTT on groups/{g}/read, refusing non-members and bad payloads with their codes', async () => {
    const groupId = await t.group('ivy', ['jon']);
    for (let i = 0; i < 3; i++)
      await t.api('ivy', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: `r${i}`, body: 'x' });
    const [jon, kat] = await Promise.all([t.mqtt('jon'), t.mqtt('kat')]);
    const got = { jon: collect(jon), kat: collect(kat) };
    await jon.subscribeAsync('users/jon/events', { qos: 1 });
    await kat.subscribeAsync('users/kat/events', { qos: 1 });
    await jon.publishAsync(`groups/${groupId}/read`, JSON.stringify({ seq: 99 }), { qos: 1 }); // capped at the last seq
    expect((await t.api('jon', 'GET', `/v1/groups/${groupId}`)).body).toMatchObject({ readSeq: 3, unread: 0 });
    await jon.publishAsync(`groups/${groupId}/read`, 'seven', { qos: 1 });
    await kat.publishAsync(`groups/${groupId}/read`, JSON.stringify({ seq: 1 }), { qos: 1 });
    await until(() => got.jon.all.length === 1 && got.kat.all.length === 1, 'both refusals');
    expect(got.jon.all[0]!.body).toMatchObject({ type: 'rejected', code: 'INVALID_MESSAGE', groupId });
    expect(got.kat.all[0]!.body).toMatchObject({ type: 'rejected', code: 'NOT_A_MEMBER', groupId });
    expect(await subscribeCodes(jon, [`groups/${groupId}/read`])).toEqual([0x80]);
    await Promise.all([jon.endAsync(), kat.endAsync()]);
  });
});

describe('presence: changes told in batches, one bus message per group', () => {
  const BATCH_MS = 3000; // wide enough for the connects below to land in one batch on a busy machine
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ presenceBatchMs: BATCH_MS, sqliteSynchronous: 'normal' });
  });
  afterAll(() => t.close());

  it("tells the members who came (and went and came back) within one batch in one message per group, each user's last state once", async () => {
    const groupId = await t.group('olga', ['pam', 'quinn', 'rita']);
    const otherGroupId = await t.group('pam', ['olga']);
    const olga = await t.mqtt('olga');
    const got = collect(olga);
    await olga.subscribeAsync('users/olga/events', { qos: 1 });
    await sleep(BATCH_MS + 500); // olga's own batch has gone out
    const bus: Record<string, { userId: string; online: boolean }[][]> = { [groupId]: [], [otherGroupId]: [] };
    const mq = (
      t.chorus.broker.aedes as unknown as {
        mq: {
          on(topic: string, listener: (packet: { topic: string; payload: Buffer }, done: () => void) => void): void;
        };
      }
    ).mq;
    mq.on('$chorus/live/+', (packet, done) => {
      const groupOf = packet.topic.slice('$chorus/live/'.length);
      const entries = JSON.parse(packet.payload.toString()) as { event: { userId: string; online: boolean } }[];
      bus[groupOf]?.push(entries.map(({ event }) => ({ userId: event.userId, online: event.online })));
      done();
    });
    const [pam, quinn] = await Promise.all([t.mqtt('pam'), t.mqtt('quinn')]);
    const rita = await t.mqtt('rita');
    await rita.endAsync(); // offline, and back before the batch goes out
    const ritaAgain = await t.mqtt('rita');
    const presence = () => got.on('users/olga/events').filter((e) => e.type === 'presence');
    await until(() => presence().length >= 3, 'olga hears of pam, quinn and rita', BATCH_MS + 10_000);
    await sleep(500);
    expect(bus[groupId]).toHaveLength(1);
    expect(bus[groupId]![0]!.sort((a, b) => a.userId.localeCompare(b.userId))).toEqual([
      { userId: 'pam', online: true },
      { userId: 'quinn', online: true },
      { userId: 'rita', online: true },
    ]);
    expect(bus[otherGroupId]).toEqual([[{ userId: 'pam', online: true }]]);
    // olga shares both groups with pam: one event for each group, one for each other member
    expect(
      presence()
        .map((e) => `${e.userId} ${e.groupId === groupId ? 'group' : 'other'} ${e.online}`)
        .sort(),
    ).toEqual(['pam group true', 'pam other true', 'quinn group true', 'rita group true']);
    await Promise.all([olga, pam, quinn, ritaAgain].map((c) => c.endAsync()));
  });
});
