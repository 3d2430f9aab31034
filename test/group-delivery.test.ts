import { connect as connectTcp } from 'node:net';
import { type Duplex, PassThrough } from 'node:stream';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHARED_CHUNK_BYTES } from '../broker/connection-output.js';
import { publishHead, writeGroupPublish } from '../broker/group-delivery.js';
import { TestChorus, collect, connectPacket, until } from './harness.js';

describe('a group message serialized once for all subscribers', () => {
  it('is byte for byte the QoS 1 PUBLISH mqtt-packet writes, at every Remaining Length size', () => {
    // 127 / 128, 16,383 / 16,384 and 2,097,151 / 2,097,152 bytes of Remaining Length are where it takes 1, 2, 3 or 4 bytes.
    const topic = 'groups/g_ünïcode-42/messages';
    const overhead = 2 + Buffer.byteLength(topic) + 2;
    for (const remaining of [overhead, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const payload = Buffer.alloc(remaining - overhead, 0x61);
      const messageId = 1 + (remaining % 65_535);
      const ours = Buffer.concat([
        publishHead(topic, payload.length),
        Buffer.from([messageId >> 8, messageId & 0xff]),
        payload,
      ]);
      const theirs = mqttPacket.generate({
        cmd: 'publish',
        topic,
        payload,
        qos: 1,
        messageId,
        dup: false,
        retain: false,
      });
      expect(ours.equals(theirs), `Remaining Length ${remaining}`).toBe(true);
    }
  });

  it('is byte for byte the MQTT 5 PUBLISH mqtt-packet writes, with the stamped message properties', () => {
    const topic = 'groups/g_ünïcode-42/messages';
    for (const payloadBytes of [10, 100, 16_384, 2_097_152]) {
      const payload = Buffer.alloc(payloadBytes, 0x61);
      const conn = new PassThrough();
      const chunks: Buffer[] = [];
      conn.on('data', (chunk: Buffer) => chunks.push(chunk));
      const target = { conn, _nextId: 42 };
      // The head's property length: the two properties and their own length byte.
      writeGroupPublish(target, publishHead(topic, payload.length, 22), payload, true);
      const theirs = mqttPacket.generate(
        {
          cmd: 'publish',
          topic,
          payload,
          qos: 1,
          messageId: 42,
          dup: false,
          retain: false,
          properties: { payloadFormatIndicator: true, contentType: 'application/json' },
        },
        { protocolVersion: 5 },
      );
      expect(Buffer.concat(chunks).equals(theirs), `payload ${payloadBytes}`).toBe(true);
    }
  });

  it('writes a packet in one piece, and a large payload by reference beside its head', () => {
    const written: Buffer[] = [];
    const target = { conn: { write: (chunk: Buffer) => written.push(chunk) } as unknown as Duplex, _nextId: 9 };
    const topic = 'groups/g_x/messages';
    const small = Buffer.alloc(SHARED_CHUNK_BYTES - 1, 0x61);
    writeGroupPublish(target, publishHead(topic, small.length), small, false);
    expect(written).toHaveLength(1);
    expect(written[0]!.subarray(-small.length).equals(small)).toBe(true);
    written.length = 0;
    const large = Buffer.alloc(SHARED_CHUNK_BYTES, 0x62);
    writeGroupPublish(target, publishHead(topic, large.length), large, false);
    expect(written).toHaveLength(2);
    expect(written[1]).toBe(large); // the subscriber's copy is the one payload every subscriber shares
    expect(Buffer.concat(written).readUInt16BE(written[0]!.length - 2)).toBe(10);
  });

  it('draws packet identifiers as Aedes does: the next one, 65535 followed by 1, never 0', () => {
    const conn = new PassThrough();
    const parsed: IPublishPacket[] = [];
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (packet) => parsed.push(packet as IPublishPacket));
    conn.on('data', (chunk: Buffer) => parser.parse(chunk));
    const target = { conn, _nextId: 65_534 };
    const payload = Buffer.from('{"groupId":"g_x","seq":7}');
    const head = publishHead('groups/g_x/messages', payload.length);
    for (let i = 0; i < 3; i++) writeGroupPublish(target, head, payload, false);
    expect(parsed.map((p) => [p.messageId, p.qos, p.topic, p.payload.toString()])).toEqual([
      [65_534, 1, 'groups/g_x/messages', payload.toString()],
      [65_535, 1, 'groups/g_x/messages', payload.toString()],
      [1, 1, 'groups/g_x/messages', payload.toString()],
    ]);
    expect(target._nextId).toBe(2);
  });
});

describe('group messages to each kind of subscriber', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ sqliteSynchronous: 'normal' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('reach QoS 1 and QoS 0 subscribers, clean and persistent sessions, each at its QoS, in order, Aedes routing none of a clean QoS 1 session', async () => {
    const members = ['qos1', 'qos0', 'persistent'];
    const groupId = await t.group('alice', members);
    const topic = `groups/${groupId}/messages`;
    const alice = await t.mqtt('alice');
    const qos1 = await t.mqtt('qos1');
    const qos0 = await t.mqtt('qos0');
    const persistent = await t.mqttSession('persistent', `persistent-${Date.now()}`);
    await qos1.subscribeAsync(topic, { qos: 1 });
    await qos0.subscribeAsync(topic, { qos: 0 });
    await persistent.subscribeAsync(topic, { qos: 1 });
    const received = new Map(
      [qos1, qos0, persistent].map((client) => {
        const packets: { seq: number; qos: number; messageId: number | undefined }[] = [];
        client.on('message', (_topic, payload, packet) =>
          packets.push({ seq: JSON.parse(payload.toString()).seq, qos: packet.qos, messageId: packet.messageId }),
        );
        return [client, packets] as const;
      }),
    );
    // Aedes forwards to the subscribers it serves itself; a clean session's QoS 1 deliveries are written by Chorus.
    const { aedes } = t.chorus.broker;
    const authorize = aedes.authorizeForward!;
    const forwardedBy = new Map<string, number>();
    aedes.authorizeForward = (client, packet) => {
      if (packet.topic === topic) forwardedBy.set(client.id, (forwardedBy.get(client.id) ?? 0) + 1);
      return authorize(client, packet);
    };
    for (let i = 0; i < 30; i++)
      alice.publish(topic, JSON.stringify({ clientMsgId: `m${i}`, body: `message ${i}` }), { qos: 1 });
    await until(
      () => [...received.values()].every((packets) => packets.length === 30),
      'every subscriber to have all 30 messages',
      10_000,
    );
    const seqs = Array.from({ length: 30 }, (_, i) => i + 1);
    for (const [client, packets] of received) {
      expect(packets.map((p) => p.seq)).toEqual(seqs);
      expect(packets.every((p) => p.qos === (client === qos0 ? 0 : 1))).toBe(true);
      // QoS 1 deliveries in flight at once carry distinct identifiers [MQTT-2.3.1-2].
      if (client !== qos0) expect(new Set(packets.map((p) => p.messageId)).size).toBe(30);
    }
    aedes.authorizeForward = authorize;
    expect(Object.fromEntries(forwardedBy)).toEqual({
      [qos0.options.clientId!]: 30,
      [persistent.options.clientId!]: 30,
    });

    // A persistent session's deliveries are still kept until acknowledged: what arrives while it is away comes on return.
    const clientId = persistent.options.clientId!;
    await persistent.endAsync();
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'while-away', body: 'while away' }), { qos: 1 });
    const { default: mqtt } = await import('mqtt');
    const back = mqtt.connect(t.chorus.urls.mqtt, {
      username: 'persistent',
      password: await t.token('persistent'),
      clientId,
      clean: false,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    const backGot = collect(back); // before CONNACK: the queued message may come in the same read
    await until(() => backGot.all.length === 1, 'the persistent session to get what it missed', 10_000);
    expect(backGot.all[0]!.body.seq).toBe(31);
    for (const client of [alice, qos1, qos0, back]) await client.endAsync();
  });
});

/** A subscriber speaking MQTT 3.1.1 on a raw TCP socket, so that the test decides how its packets fall into writes. */
async function rawSubscriber(t: TestChorus, userId: string, topic: string, keepaliveSeconds: number) {
  const socket = connectTcp(t.chorus.mqttPort, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  parser.on('packet', (packet) => packets.push(packet));
  socket.on('data', (chunk) => parser.parse(chunk));
  let closed = false;
  socket.on('close', () => {
    closed = true;
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(
    connectPacket({ userId, password: await t.token(userId), clientId: `${userId}-raw`, keepalive: keepaliveSeconds }),
  );
  await until(() => packets.some((p) => p.cmd === 'connack'), `${userId}'s CONNACK`);
  socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] }));
  await until(() => packets.some((p) => p.cmd === 'suback'), `${userId}'s SUBACK`);
  const publishes = () => packets.filter((p): p is IPublishPacket => p.cmd === 'publish');
  return {
    socket,
    packets,
    /** How many of its deliveries the test has acknowledged so far. */
    acknowledged: 0,
    publishes,
    isClosed: () => closed,
    puback: (messageId: number) => mqttPacket.generate({ cmd: 'puback', messageId }),
    seqOf: (p: IPublishPacket) => JSON.parse(p.payload.toString()).seq as number,
  };
}

describe("a clean session's PUBACKs, read ahead of Aedes", () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({ sqliteSynchronous: 'normal', deliveredFlushMs: 50 });
  });
  afterAll(async () => {
    await t.close();
  });

  /** Aedes's 'ack' events for one client id: the PUBACKs Aedes parsed and handled itself. */
  const aedesAcks = (clientId: string) => {
    let count = 0;
    t.chorus.broker.aedes.on('ack', (_packet, client) => {
      if (client?.id === clientId) count += 1;
    });
    return () => count;
  };
  const deliveredTo = async (userId: string, groupId: string, seq: number) =>
    (await t.api(userId, 'GET', `/v1/groups/${groupId}/messages/${seq}/receipts`)).body.deliveredTo as number;

  it('marks each delivery a PUBACK acknowledges, and counts a read of only PUBACKs as a packet for the keep alive [MQTT-3.1.2-24]', async () => {
    const groupId = await t.group('ann', ['pia']);
    const topic = `groups/${groupId}/messages`;
    const ann = await t.mqtt('ann');
    const acks = aedesAcks('pia-raw');
    // Keep alive 1 s and never a PINGREQ: only the PUBACKs, each in a write of its own as its delivery arrives, keep
    // the connection open past 1.5 s.
    const pia = await rawSubscriber(t, 'pia', topic, 1);
    pia.socket.on('data', () => {
      for (const delivery of pia.publishes().slice(pia.acknowledged)) pia.socket.write(pia.puback(delivery.messageId!));
      pia.acknowledged = pia.publishes().length;
    });
    const send = (n: number) =>
      ann.publishAsync(topic, JSON.stringify({ clientMsgId: `k${n}`, body: `message ${n}` }), { qos: 1 });
    await send(1);
    await until(() => pia.acknowledged === 1, 'the first message at pia');
    const first = pia.seqOf(pia.publishes()[0]!);
    await until(async () => (await deliveredTo('ann', groupId, first)) === 1, 'the first marked delivered');

    const startedAt = Date.now();
    let sent = 1;
    while (Date.now() - startedAt < 3_500) {
      sent += 1;
      await send(sent);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await until(() => pia.acknowledged === sent, `all ${sent} messages at pia`);
    const last = pia.seqOf(pia.publishes().at(-1)!);
    await until(async () => (await deliveredTo('ann', groupId, last)) === 1, 'the last marked delivered');
    expect(pia.isClosed()).toBe(false);
    expect(acks()).toBe(0); // Aedes handled none of them
    pia.socket.destroy();
    await ann.endAsync();
  });

  it("takes MQTT.js's MQTT 5 PUBACKs; over WebSocket, where MQTT.js sends a packet's pieces as messages of their own, Aedes does", async () => {
    const groupId = await t.group('cy', ['rue']);
    const topic = `groups/${groupId}/messages`;
    const cy = await t.mqtt('cy');
    const overTcp = await t.mqtt('rue', { protocolVersion: 5, clientId: 'rue-tcp5' });
    const overWs = await t.mqtt('rue', { transport: 'ws', protocolVersion: 5, clientId: 'rue-ws5' });
    const [tcpAcks, wsAcks] = [aedesAcks('rue-tcp5'), aedesAcks('rue-ws5')];
    const [tcpGot, wsGot] = [collect(overTcp), collect(overWs)];
    await Promise.all([overTcp.subscribeAsync(topic, { qos: 1 }), overWs.subscribeAsync(topic, { qos: 1 })]);
    for (let i = 1; i <= 3; i++) {
      await cy.publishAsync(topic, JSON.stringify({ clientMsgId: `w${i}`, body: `message ${i}` }), { qos: 1 });
      await until(() => tcpGot.all.length === i && wsGot.all.length === i, `message ${i} at both of rue's clients`);
      const seq = tcpGot.all[i - 1]!.body.seq as number;
      // rue's delivered mark: the highest seq either of the two clients acknowledged.
      await until(async () => (await deliveredTo('cy', groupId, seq)) === 1, `seq ${seq} marked delivered`);
    }
    await until(() => wsAcks() === 3, "Aedes to handle the WebSocket client's three PUBACKs");
    expect(tcpAcks()).toBe(0);
    await Promise.all([cy.endAsync(), overTcp.endAsync(), overWs.endAsync()]);
  });

  it('leaves to Aedes a read with another packet in it or a PUBACK split across reads, and marks those in order too', async () => {
    const groupId = await t.group('bo', ['quin']);
    const topic = `groups/${groupId}/messages`;
    const bo = await t.mqtt('bo');
    const acks = aedesAcks('quin-raw');
    const quin = await rawSubscriber(t, 'quin', topic, 60);
    for (let i = 1; i <= 3; i++)
      await bo.publishAsync(topic, JSON.stringify({ clientMsgId: `s${i}`, body: `message ${i}` }), { qos: 1 });
    await until(() => quin.publishes().length === 3, 'three messages at quin');
    const [first, second, third] = quin.publishes() as [IPublishPacket, IPublishPacket, IPublishPacket];

    // A PUBACK and a PINGREQ in one write: Aedes parses both, answers the PINGREQ, and the PUBACK marks the first.
    quin.socket.write(Buffer.concat([quin.puback(first.messageId!), mqttPacket.generate({ cmd: 'pingreq' })]));
    await until(() => quin.packets.some((p) => p.cmd === 'pingresp'), 'PINGRESP');
    await until(async () => (await deliveredTo('bo', groupId, quin.seqOf(first))) === 1, 'the first marked delivered');
    expect(acks()).toBe(1);

    // A PUBACK in two writes: neither read is a whole PUBACK, so Aedes's parser takes both halves.
    const split = quin.puback(second.messageId!);
    quin.socket.write(split.subarray(0, 2));
    await new Promise((resolve) => setTimeout(resolve, 100));
    quin.socket.write(split.subarray(2));
    await until(() => acks() === 2, 'Aedes to handle the split PUBACK');
    await until(
      async () => (await deliveredTo('bo', groupId, quin.seqOf(second))) === 1,
      'the second marked delivered',
    );

    // And a whole one after them is read ahead again, matched to the third delivery.
    quin.socket.write(quin.puback(third.messageId!));
    await until(async () => (await deliveredTo('bo', groupId, quin.seqOf(third))) === 1, 'the third marked delivered');
    expect(acks()).toBe(2);
    expect(quin.isClosed()).toBe(false);
    quin.socket.destroy();
    await bo.endAsync();
  });
});
