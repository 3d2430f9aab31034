import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterAll, describe, expect, it } from 'vitest';
import { signToken } from '../auth/token-verifier.js';
import { connectPacket, serveProcess } from './harness.js';

/** Idle subscribers: enough that closing them one by one, with the work each disconnect used to do, took seconds. */
const CROWD = 2997;
const SENDERS = 10;

/** A raw MQTT 3.1.1 connection of `userId` subscribed to `topic`; resolves at its SUBACK. */
function subscriber(port: number, userId: string, token: string, clientId: string, topic: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    socket.on('data', (chunk) => parser.parse(chunk));
    socket.on('error', reject);
    parser.on('packet', (p) => {
      if (p.cmd === 'connack')
        socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] }));
      if (p.cmd === 'suback') resolve(socket);
      if (p.cmd === 'publish' && p.qos === 1)
        socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId! }));
    });
    socket.write(connectPacket({ userId, password: token, clientId, keepalive: 300 }));
  });
}

describe('SIGTERM', () => {
  const children: ChildProcess[] = [];
  const sockets: Socket[] = [];
  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
    for (const socket of sockets) socket.destroy();
  });

  it(`ends a node within 10 s with ${CROWD} connections and sends in flight, losing nothing acknowledged`, async () => {
    const { start, api, config, mqttPort } = await serveProcess(children);
    const token = (userId: string) => signToken(config, userId, 600);
    const server = await start();
    // Three groups of 1,000 (alice and 999 others), one connection per member: every connect and disconnect concerns a
    // group small enough for presence events. The sends go to a group of alice alone, so they cost commits, not fan-out.
    const groups = await Promise.all(
      [0, 1, 2].map(async (g) => {
        const members = Array.from({ length: CROWD / 3 }, (_, i) => `u${g}-${i}`);
        return { members, id: (await api('POST', '/v1/groups', { name: `crowd ${g}`, members })).id as string };
      }),
    );
    const crowd = groups.flatMap(({ members, id }) =>
      members.map((userId) => ({ userId, topic: `groups/${id}/messages` })),
    );
    for (let i = 0; i < crowd.length; i += 200) {
      const batch = crowd
        .slice(i, i + 200)
        .map(async ({ userId, topic }) => subscriber(mqttPort, userId, await token(userId), userId, topic));
      sockets.push(...(await Promise.all(batch)));
    }
    const groupId = (await api('POST', '/v1/groups', { name: 'sends' })).id as string;
    const topic = `groups/${groupId}/messages`;

    const acked: string[] = [];
    const senders = await Promise.all(
      Array.from({ length: SENDERS }, async (_, lane) => {
        const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
          username: 'alice',
          password: await token('alice'),
          clientId: `sender-${lane}`,
          reconnectPeriod: 0,
        });
        client.on('error', () => undefined);
        await new Promise((resolve) => client.once('connect', resolve));
        return client;
      }),
    );
    // Eight sends in flight per sender, each replaced when acknowledged, so that commits are under way at the signal.
    senders.forEach((client, lane) => {
      let i = 0;
      const next = (): void => {
        const clientMsgId = `s${lane}-${i++}`;
        client.publish(topic, JSON.stringify({ clientMsgId, body: 'x' }), { qos: 1 }, (err) => {
          if (err) return;
          acked.push(clientMsgId);
          if (client.connected) next();
        });
      };
      for (let w = 0; w < 8; w++) next();
    });
    await sleep(1500);
    expect(acked.length).toBeGreaterThan(0);

    const signalled = performance.now();
    server.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => server.once('exit', resolve));
    const tookMs = performance.now() - signalled;
    for (const client of senders) client.end(true);
    console.log(
      `SIGTERM to exit: ${tookMs.toFixed(0)} ms with ${CROWD} connections; ${acked.length} sends acknowledged`,
    );
    expect(code).toBe(0);
    expect(tookMs).toBeLessThan(10_000);

    await start();
    const stored = new Set<string>();
    for (let after = 0; ; ) {
      const page = await api('GET', `/v1/groups/${groupId}/messages?afterSeq=${after}&limit=1000`);
      for (const m of page.messages) stored.add(m.clientMsgId);
      if (page.messages.length < 1000) break;
      after = page.messages.at(-1).seq;
    }
    expect(acked.filter((id) => !stored.has(id))).toEqual([]);
  }, 120_000);
});
