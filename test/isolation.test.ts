import { connect as tcpConnect, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestChorus, collect, connectPacket, metric, until } from './harness.js';

/** A raw MQTT 3.1.1 connection that subscribes to `topic` and then never reads again: a frozen device. */
async function frozenSubscriber(t: TestChorus, userId: string, topic: string): Promise<Socket> {
  const socket = tcpConnect(t.chorus.mqttPort, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(connectPacket({ userId, password: await t.token(userId), clientId: `${userId}-frozen`, keepalive: 0 }));
  socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] }));
  // Read the CONNACK and SUBACK, then stop reading for good.
  await new Promise((resolve) => socket.once('data', resolve));
  socket.pause();
  socket.on('error', () => undefined);
  return socket;
}

describe('one client never holds up the others', () => {
  let t: TestChorus;
  beforeAll(async () => {
    t = await TestChorus.start({
      maxClientBufferBytes: 64 * 1024,
      mqttPublishRate: 100_000,
      sqliteSynchronous: 'normal',
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('cuts off a subscriber that stops reading, while another group keeps receiving', async () => {
    const busy = await t.group('alice', ['frozen']);
    const quiet = await t.group('carol', ['dave']);
    const frozen = await frozenSubscriber(t, 'frozen', `groups/${busy}/messages`);
    const connectedBefore = t.chorus.broker.aedes.connectedClients;
    const alice = await t.mqtt('alice');
    const carol = await t.mqtt('carol');
    const dave = await t.mqtt('dave');
    await dave.subscribeAsync(`groups/${quiet}/messages`, { qos: 1 });
    const daveGot = collect(dave);

    // Far more than the frozen client's kernel buffers and its 64 KiB allowance: 1,000 messages of 15 KB.
    const body = 'x'.repeat(15_000);
    const flood = Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        alice.publishAsync(`groups/${busy}/messages`, JSON.stringify({ clientMsgId: `f${i}`, body }), { qos: 1 }),
      ),
    );
    // Meanwhile the quiet group talks; with deliveries waiting on the frozen socket, these would stall behind it.
    for (let i = 0; i < 20; i++) {
      await carol.publishAsync(
        `groups/${quiet}/messages`,
        JSON.stringify({ clientMsgId: `q${i}`, body: `quiet ${i}` }),
        { qos: 1 },
      );
    }
    await until(() => daveGot.all.length === 20, 'the quiet group to receive all 20 messages', 15_000);
    expect(daveGot.all.map((m) => m.body.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    await flood;

    await until(
      () => t.chorus.broker.aedes.connectedClients === connectedBefore + 2,
      'the frozen client to be cut off',
      15_000,
    );
    expect(await metric(t, 'chorus_mqtt_slow_consumers_total')).toBe(1);
    frozen.destroy();
    for (const client of [alice, carol, dave]) await client.endAsync();
  });
});
