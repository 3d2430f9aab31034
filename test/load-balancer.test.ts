import { type ChildProcess, spawn } from 'node:child_process';
import mqtt from 'mqtt';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { ChorusClient } from '../clients/chorus-client.js';
import type { StampedMessage } from '../protocol/index.js';
import { Cluster, type ClusterNode } from './cluster-harness.js';
import { freePort, until } from './harness.js';

const CONFIG = new URL('../deploy/haproxy.cfg', import.meta.url).pathname;
/** How long a node answers /readyz with 503 before it closes its connections (deploy/haproxy.cfg checks every 0.5 s). */
const DRAIN_MS = 1500;
/** Each rolling-restart client sends one message, waits for its PUBACK, then this long. */
const SEND_EVERY_MS = 500;

/** A node's open MQTT connections, from its /metrics. */
async function connectedTo(node: ClusterNode): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  return Number(/^chorus_mqtt_connected_clients (\d+)/m.exec(text)?.[1] ?? 0);
}

describe('three nodes behind HAProxy (deploy/haproxy.cfg)', () => {
  const cluster = new Cluster(undefined, { CHORUS_TRUSTED_PROXIES: '127.0.0.1', CHORUS_DRAIN_MS: String(DRAIN_MS) });
  let nodes: ClusterNode[];
  let haproxy: ChildProcess;
  let mqttUrl: string;
  let httpUrl: string;
  const haproxyLog: string[] = [];

  beforeAll(async () => {
    nodes = await cluster.addAll(['node-1', 'node-2', 'node-3'], 'all');
    const [mqttPort, httpPort] = [await freePort(), await freePort()];
    mqttUrl = `mqtt://127.0.0.1:${mqttPort}`;
    httpUrl = `http://127.0.0.1:${httpPort}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HAPROXY_MQTT_BIND: `127.0.0.1:${mqttPort}`,
      HAPROXY_HTTP_BIND: `127.0.0.1:${httpPort}`,
    };
    nodes.forEach((node, i) => {
      env[`NODE${i + 1}_HOST`] = '127.0.0.1';
      env[`NODE${i + 1}_MQTT_PORT`] = String(node.mqttPort);
      env[`NODE${i + 1}_HTTP_PORT`] = String(node.httpPort);
    });
    haproxy = spawn('haproxy', ['-db', '-f', CONFIG], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [haproxy.stdout!, haproxy.stderr!])
      stream.on('data', (d: Buffer) => haproxyLog.push(...d.toString().trim().split('\n')));
    await until(
      async () => (await fetch(`${httpUrl}/readyz`).catch(() => null))?.status === 200,
      'HAProxy serving',
      20_000,
    );
  }, 120_000);
  afterAll(async () => {
    haproxy?.kill('SIGKILL');
    await cluster.stop();
  });
  beforeEach(() =>
    onTestFailed(() => console.error(`HAProxy:\n${haproxyLog.join('\n')}\nnodes:\n${cluster.logTails()}`)),
  );

  const client = async (userId: string) =>
    ChorusClient.connect({
      mqttUrl,
      apiUrl: httpUrl,
      userId,
      token: await cluster.token(userId),
      sendTimeoutMs: 3000,
      mqttOptions: { reconnectPeriod: 200 },
    });

  it('spreads clients over the nodes, serves REST and WebSocket through it, and sends no one new to a draining node', async () => {
    const members = Array.from({ length: 12 }, (_, i) => `member-${i}`);
    const created = await fetch(`${httpUrl}/v1/groups`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await cluster.token('alice')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'behind the balancer', members }),
    });
    expect(created.status).toBe(201);
    const groupId = ((await created.json()) as { id: string }).id;

    const subscribers = await Promise.all(members.map((userId) => client(userId)));
    const received = new Map<ChorusClient, number[]>();
    for (const sdk of subscribers) {
      received.set(sdk, []);
      sdk.on('message', (m: StampedMessage) => received.get(sdk)!.push(m.seq));
      await sdk.join(groupId, { from: 0 });
    }
    const counts = await Promise.all(nodes.map(connectedTo));
    expect(counts.every((n) => n > 0)).toBe(true); // leastconn: every node has some
    const web = await ChorusClient.connect({
      mqttUrl: `${httpUrl.replace('http', 'ws')}/mqtt`,
      apiUrl: httpUrl,
      userId: 'alice',
      token: await cluster.token('alice'),
      mqttOptions: { reconnectPeriod: 200 },
    });

    // Sends go on through a drain and a close of node 1.
    let sent = 0;
    let sending = true;
    const sender = (async () => {
      while (sending) {
        await web.send(groupId, { body: `message ${sent + 1}` });
        sent += 1;
        await sleep(50);
      }
    })();
    await sleep(300);
    const before = await connectedTo(nodes[0]!);
    const stopped = nodes[0]!.stop('SIGTERM');
    await until(async () => (await fetch(`${nodes[0]!.httpUrl}/readyz`)).status === 503, 'node 1 draining');
    await sleep(700); // HAProxy's check (every 0.5 s) marks it down
    const late = await Promise.all(['late-1', 'late-2', 'late-3'].map((userId) => client(userId)));
    const lateClosed = late.map(() => 0);
    for (const [i, sdk] of late.entries()) sdk.on('offline', () => (lateClosed[i]! += 1));
    // The newcomers went elsewhere: node 1 holds no more connections than before, while it still answers (on a busy
    // machine their logins can outlast its drain), and its close closed none of them (below).
    expect(await connectedTo(nodes[0]!).catch(() => 0)).toBeLessThanOrEqual(before);
    await stopped;
    await sleep(1000);
    expect(lateClosed).toEqual([0, 0, 0]);
    sending = false;
    await sender;

    // Node 1's clients came back through the balancer to the others, and every member has every message, in order.
    const expected = Array.from({ length: sent }, (_, i) => i + 1);
    await until(
      () => subscribers.every((sdk) => received.get(sdk)!.length === sent),
      'every member has every message',
      15_000,
    );
    for (const sdk of subscribers) expect(received.get(sdk)).toEqual(expected);
    expect((await Promise.all(nodes.slice(1).map(connectedTo))).reduce((a, b) => a + b)).toBe(
      subscribers.length + late.length + 1,
    );
    await Promise.all([...subscribers, ...late, web].map((sdk) => sdk.close()));
    await nodes[0]!.start(); // whole again for the next test
  });

  it('restarts every node in turn under load: nothing lost or stored twice, every stream whole, each client back within 3 s', async () => {
    await until(async () => (await fetch(`${httpUrl}/readyz`)).status === 200, 'HAProxy serving');
    // 30 clients in three groups of ten: in each, five SDK clients (which fill gaps from history) and five raw MQTT.js
    // clients (whose every connection's stream must be in order without holes on its own).
    const groups = await Promise.all(
      [0, 1, 2].map(async (g) => {
        const members = Array.from({ length: 10 }, (_, i) => `roller-${g}-${i}`);
        const res = await fetch(`${httpUrl}/v1/groups`, {
          method: 'POST',
          headers: { authorization: `Bearer ${await cluster.token(members[0]!)}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `rolling ${g}`, members: members.slice(1) }),
        });
        expect(res.status).toBe(201);
        return { id: ((await res.json()) as { id: string }).id, members };
      }),
    );
    const participants = await Promise.all(
      groups.flatMap(({ id: groupId, members }) =>
        members.map(async (userId, i): Promise<Participant> => {
          const participant: Participant = { userId, groupId, acks: [], acked: [], connects: [], connections: [] };
          if (i < 5) {
            const sdk = await client(userId);
            const seqs: number[] = [];
            participant.connections.push(seqs);
            sdk.on('message', (m: StampedMessage) => seqs.push(m.seq));
            sdk.on('connect', () => participant.connects.push(Date.now()));
            await sdk.join(groupId, { from: 0 });
            participant.send = async (clientMsgId) =>
              void (await sdk.send(groupId, { clientMsgId, body: clientMsgId }));
            participant.close = () => sdk.close();
            return participant;
          }
          const raw = mqtt.connect(mqttUrl, {
            protocolVersion: 5,
            username: userId,
            password: await cluster.token(userId),
            clientId: `${userId}-raw`,
            reconnectPeriod: 200,
            reconnectOnConnackError: true,
          });
          raw.on('error', () => undefined);
          raw.on('connect', () => {
            participant.connects.push(Date.now());
            const seqs: number[] = [];
            participant.connections.push(seqs);
            raw.subscribe(`groups/${groupId}/messages`, { qos: 1 });
          });
          raw.on('message', (_topic, payload) => participant.connections.at(-1)!.push(JSON.parse(`${payload}`).seq));
          await new Promise((resolve) => raw.once('connect', resolve));
          participant.send = async (clientMsgId) => {
            await raw.publishAsync(`groups/${groupId}/messages`, JSON.stringify({ clientMsgId, body: clientMsgId }), {
              qos: 1,
            });
          };
          participant.close = () => raw.endAsync(true);
          return participant;
        }),
      ),
    );
    for (const p of participants) p.connects.splice(0); // from here on, each connect is a reconnect

    let sending = true;
    const senders = participants.map(async (p) => {
      for (let i = 0; sending; i++) {
        const clientMsgId = `${p.userId}-${i}`;
        await p.send!(clientMsgId);
        p.acks.push(Date.now());
        p.acked.push(clientMsgId);
        await sleep(SEND_EVERY_MS);
      }
    });
    await sleep(1000);
    const restartedAt: number[] = [];
    for (const node of nodes) {
      restartedAt.push(Date.now());
      await node.stop('SIGTERM');
      await node.start();
      await until(async () => (await fetch(`${node.httpUrl}/readyz`)).status === 200, `${node.name} ready`);
      await sleep(1500); // HAProxy's checks take it back (rise 2, every 0.5 s)
    }
    restartedAt.push(Date.now());
    sending = false;
    await Promise.all(senders);

    // Nothing acknowledged lost, nothing stored twice, seqs without holes: read through the balancer.
    const stored = new Map<string, number>();
    for (const { id, members } of groups) {
      const res = await fetch(`${httpUrl}/v1/groups/${id}/messages?afterSeq=0&limit=1000`, {
        headers: { authorization: `Bearer ${await cluster.token(members[0]!)}` },
      });
      const { messages } = (await res.json()) as { messages: StampedMessage[] };
      expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => i + 1));
      expect(new Set(messages.map((m) => m.clientMsgId)).size).toBe(messages.length);
      stored.set(id, messages.length);
      const ids = new Set(messages.map((m) => m.clientMsgId));
      for (const p of participants.filter((q) => q.groupId === id))
        expect(p.acked.filter((c) => !ids.has(c))).toEqual([]);
    }
    // Every SDK client has its group's every message once, in order; every raw connection's stream is in order
    // without holes.
    await until(
      () => participants.every((p, i) => i % 10 >= 5 || p.connections[0]!.length === stored.get(p.groupId)),
      'every SDK client has every message',
      15_000,
    );
    for (const [i, p] of participants.entries()) {
      if (i % 10 < 5) expect(p.connections[0]).toEqual(Array.from({ length: stored.get(p.groupId)! }, (_, k) => k + 1));
      else
        for (const seqs of p.connections)
          expect(seqs.every((seq, k) => k === 0 || seq === seqs[k - 1]! + 1)).toBe(true);
    }
    // At most one reconnect per client per restart, and no client without a PUBACK for more than 3 s.
    for (const p of participants) {
      for (let r = 0; r < nodes.length; r++) {
        const during = p.connects.filter((t) => t >= restartedAt[r]! && t < restartedAt[r + 1]!);
        expect(during.length, `${p.userId}: reconnects during restart ${r + 1}`).toBeLessThanOrEqual(1);
      }
    }
    const longestWait = Math.max(
      ...participants.map((p) => Math.max(...p.acks.slice(1).map((t, k) => t - p.acks[k]!))),
    );
    console.log(
      `rolling restart: ${participants.length} clients, ${[...stored.values()].reduce((a, b) => a + b)} messages, ` +
        `${participants.reduce((n, p) => n + p.connects.length, 0)} reconnects, longest wait for a PUBACK ` +
        `${longestWait - SEND_EVERY_MS} ms`,
    );
    expect(longestWait - SEND_EVERY_MS).toBeLessThanOrEqual(3000);
    await Promise.all(participants.map((p) => p.close!()));
  }, 180_000);
});

/** One client of the rolling restart: what it sent and had acknowledged, when it (re)connected, what it received. */
interface Participant {
  userId: string;
  groupId: string;
  /** When each PUBACK (or SDK receipt) came. */
  acks: number[];
  acked: string[];
  connects: number[];
  /** The seqs received, per connection (one list for an SDK client, whose stream spans its connections). */
  connections: number[][];
  send?: (clientMsgId: string) => Promise<void>;
  close?: () => Promise<unknown>;
}
