/**
 * The Chorus cluster of the scale benches: nodes on the real Redis and Cassandra that scripts/services.sh starts,
 * sharing one keyspace of their own, each a process of its own with its log in `work`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import cassandra from 'cassandra-driver';
import { Redis } from 'ioredis';
import { signToken } from '../auth/token-verifier.js';
import { loadConfig } from '../config/config.js';
import { CHORUS_CLI } from './chorus-cli.js';
import { env } from './env-number.js';
import { freePort } from './free-port.js';

const REDIS_PORT = env('CHORUS_TEST_REDIS_PORT', 6399);
const CASSANDRA_PORT = env('CHORUS_TEST_CASSANDRA_PORT', 9142);
const SECRET = 'bench-scale-secret-bench-scale-secret-0123456789';
export const config = loadConfig({ CHORUS_JWT_SECRET: SECRET });
export const work = mkdtempSync(join(tmpdir(), 'chorus-bench-scale-'));
const keyspace = `chorus_bench_scale_${Date.now()}`;

export interface Node {
  child: ChildProcess;
  mqttPort: number;
  httpPort: number;
  log: string;
}

export interface NodeLimits {
  maxConnections: number;
  maxGroupMembers: number;
  /** Node.js flags for the node (the generators keep theirs). */
  nodeFlags: string[];
}

/**
 * Starts the node called `name` (unique in a run) and waits until it says it runs. The first node to start creates the
 * keyspace's tables alone.
 */
export async function startNode(name: string, limits: NodeLimits): Promise<Node> {
  const [mqttPort, httpPort] = [await freePort(), await freePort()];
  const log = join(work, `node-${name}.log`);
  const out = openSync(log, 'a');
  const profile = process.env.BENCH_PROFILE_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : [];
  const child = spawn(process.execPath, [...limits.nodeFlags, ...profile, CHORUS_CLI, 'serve'], {
    env: {
      ...process.env,
      CHORUS_STORE: 'cassandra',
      CHORUS_NODE_ID: `scale-${name}`,
      CHORUS_REDIS_URL: `redis://127.0.0.1:${REDIS_PORT}`,
      CHORUS_CASSANDRA_CONTACT_POINTS: `127.0.0.1:${CASSANDRA_PORT}`,
      CHORUS_CASSANDRA_KEYSPACE: keyspace,
      CHORUS_JWT_SECRET: SECRET,
      CHORUS_MQTT_PORT: String(mqttPort),
      CHORUS_HTTP_PORT: String(httpPort),
      CHORUS_DATA_DIR: mkdtempSync(join(work, `node-${name}-`)),
      CHORUS_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      CHORUS_MAX_CONNECTIONS: String(limits.maxConnections),
      // The generators are one address: the per-address cap before login would refuse their connect bursts.
      CHORUS_MAX_UNAUTHENTICATED_PER_ADDRESS: '1000000',
      CHORUS_MAX_GROUP_MEMBERS: String(limits.maxGroupMembers),
      CHORUS_RATE_LIMIT_PER_MINUTE: '10000000',
    },
    stdio: ['ignore', out, out],
  });
  const deadline = Date.now() + 120_000;
  while (!readFileSync(log, 'utf8').includes('Chorus is running')) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`node ${name} did not start: ${readFileSync(log, 'utf8').slice(-2000)}`);
    await sleep(200);
  }
  return { child, mqttPort, httpPort, log };
}

/** A REST call as `userId`; a 503 (a dependency briefly too busy) is tried again, anything else throws. */
export async function api(
  node: Node,
  userId: string,
  method: string,
  path: string,
  body: unknown,
): Promise<{ id: string }> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(`http://127.0.0.1:${node.httpPort}/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${await signToken(config, userId, 7200)}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.ok) return (await res.json()) as { id: string };
    const text = await res.text();
    // 503: a dependency was briefly too busy (Cassandra timeouts under this load); anything else is a bug.
    if (res.status !== 503 || attempt === 5) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    await sleep(500 * attempt);
  }
}

/** SIGTERM, then SIGKILL after 15 s; resolves with how long the process took to exit (ms). */
export async function stop(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null || child.signalCode !== null) return 0;
  const started = performance.now();
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000)]);
  const ms = performance.now() - started;
  child.kill('SIGKILL');
  return ms;
}

/** Drops the bench's keyspace (the nodes are stopped). */
export async function dropKeyspace(): Promise<void> {
  const client = new cassandra.Client({
    contactPoints: [`127.0.0.1:${CASSANDRA_PORT}`],
    localDataCenter: 'datacenter1',
  });
  await client
    .execute(`DROP KEYSPACE IF EXISTS ${keyspace}`)
    .catch((err: Error) => console.log(`could not drop ${keyspace}: ${err.message}`));
  await client.shutdown();
}

/** Redis's calls and CPU µs per command name since its start (INFO commandstats; a script's commands counted too). */
export async function redisCommandStats(): Promise<Map<string, { calls: number; usec: number }>> {
  const redis = new Redis({ host: '127.0.0.1', port: REDIS_PORT, lazyConnect: true });
  try {
    await redis.connect();
    const stats = new Map<string, { calls: number; usec: number }>();
    for (const [, name, calls, usec] of (await redis.info('commandstats')).matchAll(
      /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm,
    ))
      stats.set(name!, { calls: Number(calls), usec: Number(usec) });
    return stats;
  } finally {
    redis.disconnect();
  }
}
