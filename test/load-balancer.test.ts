import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { ChorusClient } from '../clients/chorus-client.js';
import type { StampedMessage } from '../protocol/index.js';
import { Cluster, type ClusterNode } from './cluster-harness.js';
import { freePort, until } from './harness.js';

const CONFIG = new URL('../deploy/haproxy.cfg', import.meta.url).pathname;
/** How long a node answers /readyz with 503 before it closes its connections (deploy/haproxy.cfg checks every 0.5 s). */
const DRAIN_MS = 1500;

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
    const first = await cluster.add('node-1', 'all'); // first alone: it creates the keyspace and tables
    nodes = [first, ...(await Promise.all([cluster.add('node-2', 'all'), cluster.add('node-3', 'all')]))];
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
    expect(await connectedTo(nodes[0]!)).toBeLessThanOrEqual(before); // the newcomers went elsewhere
    await stopped;
    await sleep(1000);
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
  });
});
