import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HELD_EVENTS_MS } from '../broker/publish-routing.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { GatedLog, TestChorus, WrappedLog, collect, tempDir, until } from './harness.js';
import type { GroupAppend } from '../sequencer/message-log.js';

describe('a PUBACK (or a 2xx) means the message is durable', () => {
  let t: TestChorus;
  let log: GatedLog;
  beforeAll(async () => {
    log = new GatedLog(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'full' }));
    t = await TestChorus.start({ sendTimeoutMs: 300 }, { messageLog: log });
  });
  afterAll(async () => {
    log.release();
    await t.close();
  });

  it('holds the PUBACK and the fan-out until the log has committed', async () => {
    const groupId = await t.group('alice', ['bob']);
    const bob = await t.mqtt('bob');
    const bobGot = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const alice = await t.mqtt('alice');
    log.shut();
    let acked = false;
    const publish = alice
      .publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'held', body: 'x' }), { qos: 1 })
      .then(() => {
        acked = true;
      });
    await sleep(300);
    expect(acked).toBe(false);
    expect(bobGot.all).toEqual([]);
    expect(await log.lastSeq(groupId)).toBe(0);
    log.release();
    await publish;
    expect(await log.lastSeq(groupId)).toBe(1);
    await until(() => bobGot.all.length === 1, 'fan-out after commit');
    await Promise.all([alice.endAsync(), bob.endAsync()]);
  });

  it('delivers a send whose failed append had in fact stored it exactly once, as new, when the retry finds it', async () => {
    const groupId = await t.group('alice', ['bob']);
    const bob = await t.mqtt('bob');
    const bobGot = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    log.failAfterStoring = true;
    await alice.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'landed', body: 'x' }), {
      qos: 1,
    });
    await until(() => events.all.length === 1 && bobGot.all.length === 1, 'ack and delivery');
    await sleep(200);
    expect(events.all[0]!.body).toMatchObject({ type: 'ack', seq: 1, duplicate: false });
    expect(bobGot.all.map((m) => m.body.seq)).toEqual([1]);
    expect(await log.lastSeq(groupId)).toBe(1);
    await Promise.all([alice.endAsync(), bob.endAsync()]);
  });

  it('keeps sends pending while the store fails, answers REST with 503 meanwhile, and stores them once it recovers', async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice');
    log.failing = true;
    let acked = false;
    const publish = alice
      .publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'survivor', body: 'x' }), { qos: 1 })
      .then(() => {
        acked = true;
      });
    const rest = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'rest-during-outage',
      body: 'y',
    });
    expect(rest.status).toBe(503);
    expect(rest.body.code).toBe('STORE_UNAVAILABLE');
    await sleep(300);
    expect(log.appendCalls).toBeGreaterThanOrEqual(3); // the failed batch is retried with backoff
    expect(acked).toBe(false);
    log.failing = false;
    await publish;
    await until(() => acked, 'ack after recovery');
    const history = await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0`);
    expect(history.body.messages.map((m: { clientMsgId: string }) => m.clientMsgId).sort()).toEqual([
      'rest-during-outage',
      'survivor',
    ]);
    const retry = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'rest-during-outage',
      body: 'y',
    });
    expect(retry.body).toMatchObject({ duplicate: true });
    await alice.endAsync();
  });
});

describe('a send that fails for a passing reason is never acknowledged', () => {
  let t: TestChorus;
  let log: GatedLog;
  beforeAll(async () => {
    log = new GatedLog(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' }));
    t = await TestChorus.start({ maxPendingSends: 2 }, { messageLog: log });
  });
  afterAll(async () => {
    log.release();
    await t.close();
  });

  // MQTT 3.1.1 has no way to say why; MQTT 5 says DISCONNECT 0x89 (server busy).
  it.each([
    [4, undefined],
    [5, 0x89],
  ] as const)(
    'closes an MQTT %i connection instead of a PUBACK on OVERLOADED (DISCONNECT reason: %s); the client re-sends and every send is stored once',
    async (protocolVersion, reasonCode) => {
      const groupId = await t.group('alice');
      log.shut();
      const connect = async (clientId: string) => {
        const client = mqtt.connect(t.chorus.urls.mqtt, {
          username: 'alice',
          password: await t.token('alice'),
          clientId,
          protocolVersion,
          reconnectPeriod: 200,
        });
        await new Promise((resolve) => client.once('connect', resolve));
        return client;
      };
      const acked: string[] = [];
      const publish = (client: mqtt.MqttClient, id: string) =>
        client
          .publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: id, body: id }), { qos: 1 })
          .then(() => void acked.push(id));
      const phone = await connect(`alice-phone-${protocolVersion}`);
      const first = [publish(phone, 'a'), publish(phone, 'b')];
      await until(() => t.chorus.sequencer.pending === 2, 'two sends pending');
      const laptop = await connect(`alice-laptop-${protocolVersion}`);
      let closes = 0;
      const told: (number | undefined)[] = [];
      laptop.on('close', () => (closes += 1));
      laptop.on('packetreceive', (packet) => {
        if (packet.cmd === 'disconnect') told.push(packet.reasonCode);
      });
      const third = publish(laptop, 'c'); // the sequencer is full: OVERLOADED, which must not be acknowledged
      await until(() => closes >= 1, 'the connection to be closed');
      expect(told).toEqual(reasonCode === undefined ? [] : [reasonCode]);
      expect(acked).toEqual([]);
      log.release();
      await Promise.all([...first, third]); // MQTT.js re-sends 'c' on the laptop's next connection
      const stored = await log.readAfter(groupId, 0, 10);
      expect(stored.map((m) => m.clientMsgId)).toEqual(['a', 'b', 'c']);
      expect(stored.map((m) => m.seq)).toEqual([1, 2, 3]);
      await Promise.all([phone.endAsync(), laptop.endAsync()]);
    },
  );
});

describe('acks reach a connection that subscribes to its events after publishing', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ sqliteSynchronous: 'normal' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('holds the ack of a publish made before the events subscription and delivers it on SUBSCRIBE', async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    // As MQTT.js does after a reconnect: its stored publish goes out before the client subscribes again.
    await alice.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'early', body: 'x' }), {
      qos: 1,
    });
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    await until(() => events.all.length === 1, 'the held ack');
    expect(events.all[0]!.body).toMatchObject({ type: 'ack', groupId, clientMsgId: 'early', seq: 1, duplicate: false });
    await alice.endAsync();
  });

  it(`drops what it held for a connection that has not subscribed to its events ${HELD_EVENTS_MS} ms after the first, and holds no more`, async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    const topic = `groups/${groupId}/messages`;
    // Only the clock the broker reads for this is moved, and only forward (the publish rate's bucket reads it too):
    // sockets and timers run as they do.
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'held', body: 'x' }), { qos: 1 });
      vi.advanceTimersByTime(HELD_EVENTS_MS + 1);
      await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'unheard', body: 'x' }), { qos: 1 });
      await alice.subscribeAsync('users/alice/events', { qos: 1 });
      await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'heard', body: 'x' }), { qos: 1 });
    } finally {
      vi.useRealTimers();
    }
    const clientMsgIds = () => events.all.map((e) => (e.body as { clientMsgId?: string }).clientMsgId);
    // Held acks go out as the subscription is taken, so any would come before this one.
    await until(() => clientMsgIds().includes('heard'), 'the ack of the publish after the subscription');
    expect(clientMsgIds()).toEqual(['heard']);
    await alice.endAsync();
  });
});

describe('a send the store refuses for a lasting reason', () => {
  let t: TestChorus;
  beforeAll(async () => {
    // The real SQLite log, throwing on one particular draft as a bug in its path would.
    const poisonous = new (class extends WrappedLog {
      override async append(batch: GroupAppend[]) {
        if (batch.some((part) => part.drafts.some((draft) => draft.clientMsgId === 'poison'))) {
          throw new RangeError('Invalid array length');
        }
        return this.inner.append(batch);
      }
    })(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' }));
    t = await TestChorus.start({}, { messageLog: poisonous });
  });
  afterAll(async () => {
    await t.close();
  });

  it('gets its PUBACK and an INTERNAL rejection, while the sends beside it are stored and acknowledged', async () => {
    const groupId = await t.group('alice', ['bob']);
    const alice = await t.mqtt('alice');
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    const topic = `groups/${groupId}/messages`;
    await Promise.all(
      ['before', 'poison', 'after'].map((clientMsgId) =>
        alice.publishAsync(topic, JSON.stringify({ clientMsgId, body: clientMsgId }), { qos: 1 }),
      ),
    );
    await until(() => events.all.length === 3, 'an outcome for each send');
    const byId = Object.fromEntries(events.all.map((e) => [e.body.clientMsgId, e.body]));
    expect(byId.poison).toMatchObject({ type: 'rejected', code: 'INTERNAL', groupId });
    expect([byId.before, byId.after]).toMatchObject([
      { type: 'ack', seq: 1 },
      { type: 'ack', seq: 2 },
    ]);
    expect(alice.connected).toBe(true);
    const stored = await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0`);
    expect(stored.body.messages.map((m: { clientMsgId: string }) => m.clientMsgId)).toEqual(['before', 'after']);
    await alice.endAsync();
  });
});
