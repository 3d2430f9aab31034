import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectPacket } from 'aedes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientById } from '../broker/aedes.js';
import { TestChorus, collect, deliveries, sdkClient, subscribeCodes, until } from './harness.js';

describe('only members read, write or subscribe', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start();
  });
  afterAll(async () => {
    await t.close();
  });

  it("keeps no token once the login is checked: the CONNECT that mqtt-packet's parser holds has no password", async () => {
    const clientId = 'alice-token-kept';
    const alice = await t.mqtt('alice', { clientId });
    const held = (clientById(t.chorus.broker.aedes, clientId) as unknown as { _parser: { settings: ConnectPacket } })
      ._parser.settings;
    expect(held.clientId).toBe(clientId); // the packet the parser keeps for the connection's life
    expect(held.username).toBe('alice');
    expect(held.password).toBeUndefined();
    await alice.endAsync();
  });

  it("gives a logged-in connection no listener of its own: one close listener shared by all, and Aedes's for errors", async () => {
    const [ann, bob] = await Promise.all([
      t.mqtt('alice', { clientId: 'alice-listeners' }),
      t.mqtt('bob', { clientId: 'bob-listeners' }),
    ]);
    const connOf = (id: string) => clientById(t.chorus.broker.aedes, id)!.conn as unknown as NodeJS.EventEmitter;
    const [annConn, bobConn] = [connOf('alice-listeners'), connOf('bob-listeners')];
    // The admission's close listener and Aedes's: the admission's is one function for every connection.
    expect(annConn.listeners('close')).toHaveLength(2);
    expect(annConn.listeners('close')[0]).toBe(bobConn.listeners('close')[0]);
    // The admission's error listener is gone once Aedes has the stream.
    expect(annConn.listeners('error').map((listener) => listener.name)).not.toContain('destroyOnError');
    await Promise.all([ann.endAsync(), bob.endAsync()]);
  });

  it('refuses a non-member SUBSCRIBE with 0x80 and a wildcard or foreign events topic likewise', async () => {
    const groupId = await t.group('alice');
    const mallory = await t.mqtt('mallory');
    const codes = await subscribeCodes(mallory, [
      `groups/${groupId}/messages`,
      'groups/+/messages',
      '#',
      'users/alice/events',
      'users/mallory/events',
    ]);
    // [MQTT-3.9.3-2] 0x80 is the SUBACK return code for a refused subscription.
    expect(codes).toEqual([0x80, 0x80, 0x80, 0x80, 1]);
    await mallory.endAsync();
  });

  it('refuses a non-member publish without disconnecting, stores nothing, and says why on the events topic', async () => {
    const groupId = await t.group('alice', ['bob']);
    const bob = await t.mqtt('bob');
    const bobGot = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const mallory = await t.mqtt('mallory');
    const events = collect(mallory);
    await mallory.subscribeAsync('users/mallory/events', { qos: 1 });
    await mallory.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'm', body: 'spam' }), {
      qos: 1,
    });
    await until(() => events.all.length === 1, 'rejection');
    expect(events.all[0]!.body).toEqual({
      type: 'rejected',
      groupId,
      clientMsgId: 'm',
      code: 'NOT_A_MEMBER',
      message: expect.any(String),
    });
    expect(mallory.connected).toBe(true);
    const read = await t.api('mallory', 'GET', `/v1/groups/${groupId}/messages`);
    expect(read.status).toBe(403);
    expect(read.body.code).toBe('NOT_A_MEMBER');
    expect(
      (await t.api('mallory', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'r', body: 'x' })).status,
    ).toBe(403);
    expect((await t.api('mallory', 'GET', '/v1/groups/g_doesnotexist/messages')).body.code).toBe('GROUP_NOT_FOUND');
    expect((await t.api('alice', 'GET', `/v1/groups/${groupId}/messages`)).body.lastSeq).toBe(0);
    await sleep(50);
    expect(bobGot.all).toEqual([]);
    await Promise.all([bob.endAsync(), mallory.endAsync()]);
  });

  it('cuts a removed member off at once on every connected client, and subscribes an added member at once', async () => {
    const groupId = await t.group('alice', ['bob']);
    const phone = await t.mqtt('bob');
    const laptop = await t.mqtt('bob', { transport: 'ws' });
    const got = [collect(phone), collect(laptop)];
    for (const c of [phone, laptop])
      await c.subscribeAsync([`groups/${groupId}/messages`, 'users/bob/events'], { qos: 1 });
    const send = async (body: string) => {
      const res = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
        clientMsgId: body.replace(/\W/g, '-'),
        body,
      });
      expect(res.status).toBe(201);
    };
    await send('before');
    await until(() => got.every((g) => g.on(`groups/${groupId}/messages`).length === 1), 'before removal');

    expect((await t.api('alice', 'DELETE', `/v1/groups/${groupId}/members/bob`)).status).toBe(204);
    await send('after');
    await until(
      () => got.every((g) => g.on('users/bob/events').some((e) => e.type === 'member-removed')),
      'removal events',
    );
    await sleep(100);
    for (const g of got) expect(g.on(`groups/${groupId}/messages`).map((m) => m.body)).toEqual(['before']);
    // Subscribing again is refused too.
    expect(await subscribeCodes(phone, [`groups/${groupId}/messages`])).toEqual([0x80]);

    expect((await t.api('alice', 'POST', `/v1/groups/${groupId}/members`, { userId: 'bob' })).status).toBe(201);
    await send('welcome back');
    await until(() => got.every((g) => g.on(`groups/${groupId}/messages`).length === 2), 'delivery after re-adding');
    for (const g of got)
      expect(g.on(`groups/${groupId}/messages`).map((m) => m.body)).toEqual(['before', 'welcome back']);
    await Promise.all([phone.endAsync(), laptop.endAsync()]);
  });

  it('does not restore a persistent session subscription after the member was removed while away', async () => {
    const groupId = await t.group('alice', ['bob']);
    const clientId = 'bob-persistent';
    const first = await t.mqttSession('bob', clientId);
    await first.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    await first.endAsync();
    await t.api('alice', 'DELETE', `/v1/groups/${groupId}/members/bob`);
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'secret', body: 'not for bob' });
    const again = await t.mqttSession('bob', clientId);
    const got = collect(again);
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'secret2', body: 'still not' });
    await sleep(200);
    expect(got.all).toEqual([]);
    await again.endAsync();
  });

  it('lets the SDK follow membership: auto-join on add, stream stops on removal', async () => {
    const groupId = await t.group('alice');
    const carol = await sdkClient(t, 'carol');
    const got = deliveries(carol);
    await t.api('alice', 'POST', `/v1/groups/${groupId}/members`, { userId: 'carol' });
    await until(() => carol.joined.includes(groupId), 'auto-join');
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'hi', body: 'hi carol' });
    await until(() => got.get(groupId)?.length === 1, 'message after auto-join');
    await t.api('alice', 'DELETE', `/v1/groups/${groupId}/members/carol`);
    await until(() => !carol.joined.includes(groupId), 'stream dropped');
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'bye', body: 'gone' });
    await sleep(100);
    expect(got.get(groupId)!.map((m) => m.body)).toEqual(['hi carol']);
    await carol.close();
  });

  it('disconnects a client when its token expires, not before', async () => {
    const { default: mqtt } = await import('mqtt');
    const token = await t.token('alice', 4);
    const expiresAtMs =
      (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
    const client = mqtt.connect(t.chorus.urls.mqtt, { username: 'alice', password: token, reconnectPeriod: 0 });
    await new Promise((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
    });
    await new Promise<void>((resolve) => client.once('close', () => resolve()));
    // Timers fire at or after their time; the upper bound leaves room for a loaded machine.
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAtMs);
    expect(Date.now() - expiresAtMs).toBeLessThan(3000);
  });

  it('refuses an empty client id with CleanSession 0 with CONNACK 2 [MQTT-3.1.3-8], and takes it with CleanSession 1', async () => {
    // Bytes made by hand: MQTT.js and mqtt-packet will not make an empty client id with CleanSession 0.
    const { default: mqttPacket } = await import('mqtt-packet');
    const { connect: tcpConnect } = await import('node:net');
    const field = (value: Buffer) => Buffer.concat([Buffer.from([value.length >> 8, value.length & 0xff]), value]);
    const connectBytes = (clean: boolean, password: Buffer) => {
      const flags = 0x80 | 0x40 | (clean ? 0x02 : 0); // username, password, CleanSession [MQTT-3.1.2-4]
      const rest = Buffer.concat([
        field(Buffer.from('MQTT')),
        Buffer.from([4, flags, 0, 30]),
        field(Buffer.alloc(0)),
        field(Buffer.from('alice')),
        field(password),
      ]);
      return Buffer.concat([
        Buffer.from([0x10, ...(rest.length < 128 ? [rest.length] : [(rest.length & 0x7f) | 0x80, rest.length >> 7])]),
        rest,
      ]);
    };
    const connackCode = async (clean: boolean) => {
      const socket = tcpConnect(t.chorus.mqttPort, '127.0.0.1');
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      const code = new Promise<number>((resolve) =>
        parser.on('packet', (p) => resolve((p as { returnCode: number }).returnCode)),
      );
      socket.on('data', (d) => parser.parse(d));
      socket.on('error', () => undefined);
      const password = Buffer.from(await t.token('alice'));
      socket.write(connectBytes(clean, password));
      const result = await code;
      socket.destroy();
      return result;
    };
    expect(await connackCode(false)).toBe(2);
    expect(await connackCode(true)).toBe(0);
  });

  it('answers a login whose groups cannot be read with CONNACK 3, server unavailable, not 5 [MQTT-3.2.2-6]', async () => {
    const { default: mqtt } = await import('mqtt');
    const groups = (
      t.chorus.broker as unknown as { deps: { groups: { allGroupIds(userId: string): Promise<string[]> } } }
    ).deps.groups;
    const read = groups.allGroupIds;
    groups.allGroupIds = async () => {
      throw new Error('the store is down');
    };
    try {
      const c = mqtt.connect(t.chorus.urls.mqtt, {
        username: 'store-down',
        password: await t.token('store-down'),
        reconnectPeriod: 0,
        protocolVersion: 4,
      });
      const err = await new Promise<Error & { code?: number }>((resolve) => c.once('error', resolve));
      c.end(true);
      expect(err.code).toBe(3); // "come back later": a client may retry, unlike 5 (not authorized)
    } finally {
      groups.allGroupIds = read;
    }
    const back = await t.mqtt('store-down'); // the same login, once the store answers
    back.end(true);
  });

  it('reports a persistent session as present on return even when all its subscriptions were refused [MQTT-3.2.2-2]', async () => {
    const { default: mqtt } = await import('mqtt');
    const clientId = `alice-session-${Date.now()}`;
    const session = async () => {
      const c = mqtt.connect(t.chorus.urls.mqtt, {
        username: 'alice',
        password: await t.token('alice'),
        clientId,
        clean: false,
        reconnectPeriod: 0,
        protocolVersion: 4,
      });
      const connack = await new Promise<{ sessionPresent: boolean }>((resolve) =>
        c.once('connect', (packet) => resolve(packet)),
      );
      return { c, present: connack.sessionPresent };
    };
    const first = await session();
    expect(first.present).toBe(false); // [MQTT-3.2.2-3]: a new session
    expect(await subscribeCodes(first.c, ['groups/g_not-mine/messages'])).toEqual([0x80]);
    await first.c.endAsync();
    const second = await session();
    expect(second.present).toBe(true);
    await second.c.endAsync();
  });

  it('refuses MQTT connections with a bad token, a token for another user, or a client id held by another user', async () => {
    const { default: mqtt } = await import('mqtt');
    const tryConnect = (username: string, password: string, clientId: string) =>
      new Promise<number | 'connected'>((resolve) => {
        const c = mqtt.connect(t.chorus.urls.mqtt, { username, password, clientId, reconnectPeriod: 0 });
        c.on('connect', () => {
          resolve('connected');
          c.end(true);
        });
        c.on('error', (err) => {
          resolve((err as { code?: number }).code ?? -1);
          c.end(true);
        });
      });
    expect(await tryConnect('alice', 'not-a-jwt', 'x1')).toBe(4);
    expect(await tryConnect('alice', await t.token('bob'), 'x2')).toBe(4);
    const held = await t.mqtt('alice', { clientId: 'shared-id' });
    expect(await tryConnect('bob', await t.token('bob'), 'shared-id')).toBe(2);
    expect(held.connected).toBe(true);
    await held.endAsync();
  });

  it("lets a user's new connection take over its own client id: the one holding it is closed [MQTT-3.1.4-2]", async () => {
    const first = await t.mqtt('alice', { clientId: 'alice-phone' });
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await t.mqtt('alice', { clientId: 'alice-phone' });
    await firstClosed;
    expect(first.connected).toBe(false);
    expect(second.connected).toBe(true);
    await second.endAsync();
  });
});
