import { type Duplex, PassThrough } from 'node:stream';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHARED_CHUNK_BYTES } from '../broker/connection-output.js';
import { publishHead, writeGroupPublish } from '../broker/group-delivery.js';
import { TestChorus, collect, until } from './harness.js';

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
