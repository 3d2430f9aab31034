import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { promisify } from 'node:util';
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientsOf, subscriptionOf } from '../broker/aedes.js';
import { pubackReasonCode } from '../broker/reason-codes.js';
import { collect, sdkClient, TestChorus, until } from './harness.js';

const run = promisify(execFile);

/** The next packet of this kind the client receives. */
function next(client: MqttClient, cmd: Packet['cmd']): Promise<Packet & Record<string, any>> {
  return new Promise((resolve) => {
    const listener = (packet: Packet) => {
      if (packet.cmd !== cmd) return;
      client.off('packetreceive', listener);
      resolve(packet as Packet & Record<string, any>);
    };
    client.on('packetreceive', listener);
  });
}

/** Publishes at QoS 1 and resolves with the PUBACK (one publish at a time per client). */
function puback(client: MqttClient, topic: string, payload: string | Buffer) {
  const ack = next(client, 'puback');
  client.publish(topic, payload, { qos: 1 }, () => {});
  return ack;
}

/** Connects and resolves with the CONNACK, whatever its code. */
async function connack(url: string, options: IClientOptions): Promise<{ client: MqttClient; packet: any }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, protocolVersion: 5, ...options });
  client.on('error', () => {});
  const packet = await next(client, 'connack');
  return { client, packet };
}

/** A connection that speaks raw MQTT (for what MQTT.js will not send), logged in as `userId`. */
async function rawClient(t: TestChorus, userId: string, protocolVersion: 4 | 5) {
  const socket = connect(t.chorus.mqttPort, '127.0.0.1');
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: any[] = [];
  parser.on('packet', (packet) => packets.push(packet));
  socket.on('data', (chunk) => parser.parse(chunk));
  socket.on('error', () => {});
  const connectPacket = {
    cmd: 'connect' as const,
    protocolId: 'MQTT' as const,
    protocolVersion,
    clean: true,
    clientId: `${userId}-raw-${protocolVersion}-${Math.random().toString(36).slice(2)}`,
    keepalive: 30,
    username: userId,
    password: Buffer.from(await t.token(userId)),
  };
  socket.write(mqttPacket.generate(connectPacket, { protocolVersion }));
  await until(() => packets.some((p) => p.cmd === 'connack'), 'CONNACK');
  return { socket, packets };
}

describe('MQTT 5 beside MQTT 3.1.1', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ sqliteSynchronous: 'normal', maxBodyBytes: 1000, maxConnections: 40 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('serves both versions on the same ports, TCP and WebSocket, and tells MQTT 5 clients its limits', async () => {
    const groupId = await t.group('alice', ['bob', 'carol', 'dave']);
    const topic = `groups/${groupId}/messages`;
    const { client: v5, packet } = await connack(t.chorus.urls.mqtt, {
      username: 'bob',
      password: await t.token('bob'),
      clientId: 'bob-v5',
    });
    expect(packet.reasonCode).toBe(0);
    expect(packet.properties).toMatchObject({
      maximumQoS: 1, // [MQTT-3.2.2-9]
      maximumPacketSize: t.config.maxPacketBytes,
      topicAliasMaximum: 32,
      sharedSubscriptionAvailable: false,
    });
    const v5ws = await t.mqtt('carol', { transport: 'ws', protocolVersion: 5 });
    const v4 = await t.mqtt('dave');
    const v4ws = await t.mqtt('dave', { transport: 'ws' });
    const got = [v5, v5ws, v4, v4ws].map((c) => {
      const seen: { payload: string; properties?: Record<string, unknown> }[] = [];
      c.on('message', (_topic, payload, p) => seen.push({ payload: payload.toString(), properties: p.properties }));
      return seen;
    });
    for (const c of [v5, v5ws, v4, v4ws]) await c.subscribeAsync(topic, { qos: 1 });
    const alice = await t.mqtt('alice', { protocolVersion: 5 });
    const ack = await puback(alice, topic, JSON.stringify({ clientMsgId: 'm1', body: 'hello' }));
    expect(ack.reasonCode ?? 0).toBe(0);
    await until(() => got.every((seen) => seen.length === 1), 'every subscriber has the message');
    for (const seen of got) expect(JSON.parse(seen[0]!.payload)).toMatchObject({ groupId, seq: 1, body: 'hello' });
    // [MQTT-3.3.2-18] the stamped message is UTF-8 JSON: said to MQTT 5 subscribers, in the one PUBLISH for all.
    for (const seen of got.slice(0, 2))
      expect(seen[0]!.properties).toMatchObject({ payloadFormatIndicator: true, contentType: 'application/json' });
    await Promise.all([v5, v5ws, v4, v4ws, alice].map((c) => c.endAsync()));
  });

  it('puts the outcome of a send in its PUBACK: the seq, or the refusal with its Chorus code', async () => {
    const groupId = await t.group('alice');
    const other = await t.group('bob');
    const topic = `groups/${groupId}/messages`;
    const alice = await t.mqtt('alice', { protocolVersion: 5 });
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });

    const stored = await puback(alice, topic, JSON.stringify({ clientMsgId: 'a', body: 'hi' }));
    expect(stored.reasonCode ?? 0).toBe(0);
    expect(stored.properties.userProperties).toEqual({ seq: '1', createdAt: expect.any(String) });
    const retried = await puback(alice, topic, JSON.stringify({ clientMsgId: 'a', body: 'hi' }));
    expect(retried.properties.userProperties).toMatchObject({ seq: '1', duplicate: 'true' });

    const refusals: [string, string | Buffer, number, string][] = [
      [`groups/${other}/messages`, JSON.stringify({ clientMsgId: 'x', body: 'no' }), 0x87, 'NOT_A_MEMBER'],
      ['users/bob/events', '{}', 0x87, 'TOPIC_NOT_ALLOWED'],
      [topic, '{not json', 0x99, 'INVALID_JSON'],
      [topic, JSON.stringify({ clientMsgId: 'b' }), 0x99, 'INVALID_MESSAGE'],
      [topic, JSON.stringify({ clientMsgId: 'c', body: 'x', colour: 'red' }), 0x99, 'UNKNOWN_FIELD'],
      [topic, JSON.stringify({ clientMsgId: 'd', body: 'x'.repeat(2000) }), 0x83, 'PAYLOAD_TOO_LARGE'],
      [topic, JSON.stringify({ clientMsgId: 'e', body: 'x', replyToSeq: 99 }), 0x83, 'REPLY_TO_UNKNOWN'],
    ];
    for (const [to, payload, reasonCode, code] of refusals) {
      const ack = await puback(alice, to, payload);
      expect([ack.reasonCode, ack.properties?.userProperties?.code], code).toEqual([reasonCode, code]);
      expect(ack.properties.reasonString.length).toBeGreaterThan(0);
    }
    // Refusals for a rate map to 0x97, though MQTT publishes over the rate are paced, not refused.
    expect(pubackReasonCode('RATE_LIMITED')).toBe(0x97);
    // Told in the PUBACK, so not again on the events topic.
    expect(events.all.filter((e) => e.body.type === 'ack' || e.body.type === 'rejected')).toEqual([]);
    expect((await t.api('alice', 'GET', `/v1/groups/${groupId}/messages`)).body.lastSeq).toBe(1);
    await alice.endAsync();
  });

  it('keeps Reason Strings and User Properties out of PUBACKs for a client that asked for no problem information', async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice', {
      protocolVersion: 5,
      mqtt: { properties: { requestProblemInformation: false } },
    });
    const events = collect(alice);
    await alice.subscribeAsync('users/alice/events', { qos: 1 });
    const refused = await puback(alice, `groups/${groupId}/messages`, '{not json');
    expect(refused.reasonCode).toBe(0x99);
    expect(refused.properties).toBeUndefined(); // [MQTT-3.1.2-29]
    const stored = await puback(alice, `groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'a', body: 'x' }));
    expect(stored.properties).toBeUndefined();
    // The outcome is on the events topic instead.
    await until(() => events.all.length === 2, 'the rejected and ack events');
    expect(events.all.map((e) => e.body.type)).toEqual(['rejected', 'ack']);
    await alice.endAsync();
  });

  it('answers a refused login with its MQTT 5 reason code', async () => {
    const url = t.chorus.urls.mqtt;
    const bad = await connack(url, { username: 'alice', password: 'not a token', clientId: 'a1' });
    expect(bad.packet.reasonCode).toBe(0x86);
    const held = await t.mqtt('alice', { clientId: 'shared-id', protocolVersion: 5 });
    const other = await connack(url, { username: 'bob', password: await t.token('bob'), clientId: 'shared-id' });
    expect(other.packet.reasonCode).toBe(0x85);
    const full: MqttClient[] = [];
    for (let i = 0; full.length < 40; i++) {
      const { client, packet } = await connack(url, {
        username: `u${i}`,
        password: await t.token(`u${i}`),
        clientId: `fill-${i}`,
      });
      if (packet.reasonCode !== 0) break;
      full.push(client);
    }
    const busy = await connack(url, { username: 'zed', password: await t.token('zed'), clientId: 'zed' });
    expect(busy.packet.reasonCode).toBe(0x89); // server busy: maxConnections
    for (const c of [bad.client, other.client, busy.client, held, ...full]) c.end(true);
  });

  it('says why it closes: 0x8E to a session taken over, 0x87 when the token expires, 0x9B for QoS 2', async () => {
    const first = await t.mqtt('alice', { clientId: 'alice-phone', protocolVersion: 5 });
    const takenOver = next(first, 'disconnect');
    const second = await t.mqtt('alice', { clientId: 'alice-phone', protocolVersion: 5 });
    expect((await takenOver).reasonCode).toBe(0x8e);

    const shortLived = mqtt.connect(t.chorus.urls.mqtt, {
      username: 'alice',
      password: await t.token('alice', 1),
      clientId: 'alice-short',
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    const expired = next(shortLived, 'disconnect');
    expect((await expired).reasonCode).toBe(0x87);

    const groupId = await t.group('alice');
    const qos2 = next(second, 'disconnect');
    second.publish(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'q2', body: 'x' }), { qos: 2 });
    expect((await qos2).reasonCode).toBe(0x9b);
    expect((await t.api('alice', 'GET', `/v1/groups/${groupId}/messages`)).body.lastSeq).toBe(0);
    for (const c of [first, second, shortLived]) c.end(true);
  });

  it('closes with DISCONNECT 0x95 a connection whose packet header announces more than maxPacketBytes', async () => {
    const { socket, packets } = await rawClient(t, 'alice', 5);
    // A PUBLISH header announcing maxPacketBytes of Remaining Length, and the start of its topic: refused at once.
    const remaining = t.config.maxPacketBytes;
    const length: number[] = [];
    for (let left = remaining; left > 0; left = Math.floor(left / 128))
      length.push((left % 128) | (left >= 128 ? 0x80 : 0));
    socket.write(Buffer.from([0x30, ...length, 0x00, 0x05, 0x61]));
    await until(() => packets.some((p) => p.cmd === 'disconnect'), 'DISCONNECT');
    expect(packets.find((p) => p.cmd === 'disconnect').reasonCode).toBe(0x95);
    await until(() => socket.destroyed || socket.readableEnded, 'the connection closed');
    socket.destroy();
  });

  it('answers each repeated Topic Filter of a SUBSCRIBE, on both versions [MQTT-3.9.3-1]', async () => {
    const groupId = await t.group('alice');
    const topic = `groups/${groupId}/messages`;
    const granted = async (protocolVersion: 4 | 5, subscriptions: { topic: string; qos: 0 | 1 | 2 }[]) => {
      // MQTT.js names each filter once per SUBSCRIBE: the repeats go out as raw packets.
      const { socket, packets } = await rawClient(t, 'alice', protocolVersion);
      socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 7, subscriptions }, { protocolVersion }));
      await until(() => packets.some((p) => p.cmd === 'suback'), 'SUBACK');
      socket.destroy();
      return packets.find((p) => p.cmd === 'suback').granted as number[];
    };
    for (const protocolVersion of [4, 5] as const)
      expect(
        await granted(protocolVersion, [
          { topic, qos: 1 },
          { topic, qos: 0 },
        ]),
      ).toEqual([1, 0]);
    // MQTT 5: QoS 2 asked is QoS 1 granted, the most Chorus serves.
    const v5 = await t.mqtt('alice', { protocolVersion: 5 });
    expect((await v5.subscribeAsync(topic, { qos: 2 })).map((g) => g.qos)).toEqual([1]);
    await v5.endAsync();
  });

  it('takes client ids named like Object.prototype members, on both versions (GHSA-52qw-whmv-87c5)', async () => {
    const groupId = await t.group('alice', ['bob']);
    const bob = await t.mqtt('bob');
    const got = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    for (const clientId of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'])
      for (const protocolVersion of [4, 5] as const) {
        const alice = await t.mqtt('alice', { clientId, protocolVersion });
        await alice.publishAsync(
          `groups/${groupId}/messages`,
          JSON.stringify({ clientMsgId: `${clientId}-${protocolVersion}`, body: clientId }),
          { qos: 1 },
        );
        await alice.endAsync();
      }
    await until(() => got.all.length === 10, 'all ten messages');
    expect((await fetch(`${t.chorus.urls.http}/healthz`)).status).toBe(200);
    await bob.endAsync();
  });

  it('takes topic aliases, caps the session expiry, and sends nothing past the client Maximum Packet Size', async () => {
    const groupId = await t.group('alice', ['bob']);
    const topic = `groups/${groupId}/messages`;
    const { client: bob, packet } = await connack(t.chorus.urls.mqtt, {
      username: 'bob',
      password: await t.token('bob'),
      clientId: 'bob-small',
      clean: true,
      properties: { maximumPacketSize: 300, sessionExpiryInterval: 0xffffffff },
    });
    expect(packet.properties.sessionExpiryInterval).toBe(t.config.maxSessionExpirySeconds);
    const got = collect(bob);
    await bob.subscribeAsync(topic, { qos: 1 });
    const alice = await t.mqtt('alice', { protocolVersion: 5 });
    // The first publish sets alias 1 up; the next ones send it with an empty topic [MQTT-3.3.2-12].
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'small-1', body: 'ok' }), {
      qos: 1,
      properties: { topicAlias: 1 },
    });
    await alice.publishAsync('', JSON.stringify({ clientMsgId: 'big', body: 'x'.repeat(400) }), {
      qos: 1,
      properties: { topicAlias: 1 },
    });
    await alice.publishAsync('', JSON.stringify({ clientMsgId: 'small-2', body: 'ok' }), {
      qos: 1,
      properties: { topicAlias: 1 },
    });
    await until(() => got.all.length === 2, 'the two small messages');
    expect(got.all.map((m) => m.body.clientMsgId)).toEqual(['small-1', 'small-2']); // the large one is in history
    expect((await t.api('bob', 'GET', `/v1/groups/${groupId}/messages`)).body.lastSeq).toBe(3);
    await Promise.all([alice.endAsync(), bob.endAsync()]);
  });

  it("echoes a subscription's Subscription Identifier on the group messages it delivers [MQTT-3.3.4-3]", async () => {
    const groupId = await t.group('alice', ['bob', 'carol']);
    const topic = `groups/${groupId}/messages`;
    const bob = await t.mqtt('bob', { protocolVersion: 5 });
    const carol = await t.mqtt('carol', { protocolVersion: 5 });
    await bob.subscribeAsync(topic, { qos: 1, properties: { subscriptionIdentifier: 7 } });
    await carol.subscribeAsync(topic, { qos: 1 });
    const delivered = (client: MqttClient) =>
      new Promise<Record<string, unknown>>((resolve) =>
        client.once('message', (_topic, _payload, packet) => resolve({ ...packet.properties })),
      );
    const [toBob, toCarol] = [delivered(bob), delivered(carol)];
    const alice = await t.mqtt('alice', { protocolVersion: 5 });
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'identified', body: 'hi' }), { qos: 1 });
    const stamped = { payloadFormatIndicator: true, contentType: 'application/json' };
    expect(await toBob).toEqual({ ...stamped, subscriptionIdentifier: 7 });
    expect(await toCarol).toEqual(stamped);
    await Promise.all([alice.endAsync(), bob.endAsync(), carol.endAsync()]);
  });

  it('has the SDK speak MQTT 5 by default and read its seq from the PUBACK (3.1.1 as an option, from the ack event)', async () => {
    const groupId = await t.group('alice');
    for (const protocolVersion of [5, 4] as const) {
      // MQTT 5 by default: the option is given only for 3.1.1.
      const alice = await sdkClient(t, 'alice', protocolVersion === 4 ? { protocolVersion } : {});
      const events: string[] = [];
      alice.on('event', (event) => events.push(event.type));
      const first = await alice.send(groupId, {
        body: `over ${protocolVersion}`,
        clientMsgId: `sdk-${protocolVersion}`,
      });
      const again = await alice.send(groupId, {
        body: `over ${protocolVersion}`,
        clientMsgId: `sdk-${protocolVersion}`,
      });
      expect(again).toMatchObject({ seq: first.seq, duplicate: true });
      const refused = alice.send(groupId, { body: 'x'.repeat(2000) });
      await expect(refused).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE', status: 413 });
      expect(events.filter((type) => type === 'ack' || type === 'rejected')).toEqual(
        protocolVersion === 5 ? [] : ['ack', 'ack', 'rejected'],
      );
      await alice.close();
    }
  });

  it('works with mosquitto_pub and mosquitto_sub at -V mqttv5', async () => {
    const groupId = await t.group('alice', ['bob']);
    const topic = `groups/${groupId}/messages`;
    const port = String(t.chorus.mqttPort);
    const subscriber = run(
      'mosquitto_sub',
      [
        ...['-V', 'mqttv5', '-h', '127.0.0.1', '-p', port, '-q', '1', '-C', '1', '-W', '10'],
        ...['-u', 'bob', '-P', await t.token('bob'), '-t', topic, '-F', '%C|%p'],
      ],
      { timeout: 15_000 },
    );
    await until(
      () => clientsOf(t.chorus.broker.aedes).some((client) => subscriptionOf(client, topic) !== undefined),
      'mosquitto_sub subscribed',
    );
    // A time limit, so that a publish left unanswered fails with mosquitto_pub's own log (-d) rather than the test's.
    const publishAs = async (userId: string, clientMsgId: string, body: string) =>
      run(
        'mosquitto_pub',
        [
          ...['-V', 'mqttv5', '-h', '127.0.0.1', '-p', port, '-q', '1', '-d'],
          ...['-u', userId, '-P', await t.token(userId), '-t', topic, '-m', JSON.stringify({ clientMsgId, body })],
        ],
        { timeout: 10_000 },
      );
    const pub = await publishAs('alice', 'mosq-1', 'from mosquitto');
    expect(pub.stdout).toMatch(/received PUBACK \(Mid: 1, RC:0\)/);
    const { stdout } = await subscriber;
    const [contentType, payload] = stdout.trim().split('|');
    expect(contentType).toBe('application/json');
    expect(JSON.parse(payload!)).toMatchObject({ groupId, seq: 1, body: 'from mosquitto' });
    // A non-member's publish: the PUBACK says 0x87 (135).
    const refused = await publishAs('eve', 'eve-1', 'let me in');
    expect(refused.stdout).toMatch(/RC:135/);
  });

  it('works with paho-mqtt at MQTTv5', async () => {
    const groupId = await t.group('alice');
    const script = `
import json, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, token, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="alice-paho", protocol=mqtt.MQTTv5)
client.username_pw_set("alice", token)
def on_connect(client, userdata, flags, reason_code, properties):
    out["connack"] = reason_code.value
    client.publish(topic, json.dumps({"clientMsgId": "paho-1", "body": "from paho"}), qos=1)
def on_publish(client, userdata, mid, reason_code, properties):
    out["puback"] = reason_code.value
    out["userProperties"] = dict(getattr(properties, "UserProperty", []) or [])
    client.disconnect()
client.on_connect = on_connect
client.on_publish = on_publish
client.connect("127.0.0.1", port)
client.loop_forever()
print(json.dumps(out))
`;
    const { stdout } = await run(
      'python3',
      ['-c', script, String(t.chorus.mqttPort), await t.token('alice'), `groups/${groupId}/messages`],
      { timeout: 15_000 },
    );
    expect(JSON.parse(stdout)).toMatchObject({ connack: 0, puback: 0, userProperties: { seq: '1' } });
  });
});

describe('an MQTT 5 client of a node that shuts down', () => {
  it('gets DISCONNECT 0x8B (server shutting down) [MQTT-3.14.4-1]', async () => {
    const t = await TestChorus.start({ sqliteSynchronous: 'normal' });
    const v5 = await t.mqtt('alice', { protocolVersion: 5 });
    const told = next(v5, 'disconnect');
    await t.close();
    expect((await told).reasonCode).toBe(0x8b);
    v5.end(true);
  });
});
