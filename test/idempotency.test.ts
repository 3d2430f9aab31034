import { setTimeout as sleep } from 'node:timers/promises';
import mqttPacket from 'mqtt-packet';
import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestChorus, collect, connectPacket, until } from './harness.js';

describe('a retried send never makes a second message', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start();
  });
  afterAll(async () => {
    await t.close();
  });

  const history = async (groupId: string) =>
    (await t.api('alice', 'GET', `/v1/groups/${groupId}/messages?afterSeq=0&limit=100`)).body.messages as {
      seq: number;
      clientMsgId: string;
    }[];

  it('dedups a QoS 1 publish sent again with the DUP flag and the same clientMsgId, and acks both with the original seq', async () => {
    const groupId = await t.group('alice', ['bob']);
    const bob = await t.mqtt('bob');
    const received = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'first', body: 'x' });

    // A raw MQTT connection, so the retry really is a second PUBLISH on the wire with dup=1 (MQTT.js would hide it).
    const socket = tcpConnect(t.chorus.mqttPort, '127.0.0.1');
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const packets: mqttPacket.Packet[] = [];
    parser.on('packet', (p) => packets.push(p));
    socket.on('data', (d) => parser.parse(d));
    const write = (p: mqttPacket.Packet) => socket.write(mqttPacket.generate(p));
    socket.write(
      connectPacket({ userId: 'alice', password: await t.token('alice'), clientId: 'alice-raw', keepalive: 30 }),
    );
    await until(() => packets.some((p) => p.cmd === 'connack'), 'connack');
    write({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'users/alice/events', qos: 1 }] });
    await until(() => packets.some((p) => p.cmd === 'suback'), 'suback');
    const payload = Buffer.from(JSON.stringify({ clientMsgId: 'retry-me', body: 'only once' }));
    const publish = {
      cmd: 'publish' as const,
      topic: `groups/${groupId}/messages`,
      qos: 1 as const,
      messageId: 7,
      retain: false,
      dup: false,
      payload,
    };
    write(publish);
    await until(() => packets.filter((p) => p.cmd === 'puback').length === 1, 'first puback');
    write({ ...publish, dup: true }); // [MQTT-3.3.1-1] the redelivery of a QoS 1 PUBLISH carries DUP=1
    await until(() => packets.filter((p) => p.cmd === 'puback').length === 2, 'second puback');

    const acks = () =>
      packets
        .filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish')
        .map((p) => JSON.parse(p.payload.toString()))
        .filter((e) => e.type === 'ack');
    await until(() => acks().length === 2, 'two ack events');
    expect(acks().map((a) => [a.seq, a.duplicate])).toEqual([
      [2, false],
      [2, true],
    ]);
    await sleep(100);
    expect(received.all.map((m) => m.body.seq)).toEqual([1, 2]);
    expect((await history(groupId)).filter((m) => m.clientMsgId === 'retry-me')).toHaveLength(1);
    socket.destroy();
    await bob.endAsync();
  });

  it('answers a REST retry of an MQTT send with the original seq', async () => {
    const groupId = await t.group('alice');
    const alice = await t.mqtt('alice');
    await alice.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId: 'cross', body: 'via mqtt' }), {
      qos: 1,
    });
    const retry = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, {
      clientMsgId: 'cross',
      body: 'via rest',
    });
    expect(retry.status).toBe(200);
    expect(retry.body).toMatchObject({ seq: 1, duplicate: true, message: { body: 'via mqtt' } });
    const fresh = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'new', body: 'n' });
    expect(fresh.status).toBe(201);
    expect(fresh.body).toMatchObject({ seq: 2, duplicate: false });
    expect((await history(groupId)).map((m) => m.clientMsgId)).toEqual(['cross', 'new']);
    await alice.endAsync();
  });

  it('dedups concurrent REST sends of one clientMsgId', async () => {
    const groupId = await t.group('alice');
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'burst', body: 'b' }),
      ),
    );
    expect(new Set(results.map((r) => r.body.seq))).toEqual(new Set([1]));
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(await history(groupId)).toHaveLength(1);
  });

  it('keeps clientMsgIds per sender: the same id from two senders makes two messages', async () => {
    const groupId = await t.group('alice', ['bob']);
    const a = await t.api('alice', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'same', body: 'a' });
    const b = await t.api('bob', 'POST', `/v1/groups/${groupId}/messages`, { clientMsgId: 'same', body: 'b' });
    expect([a.body.seq, b.body.seq]).toEqual([1, 2]);
  });
});
