/**
 * `npm run bench`: the same QoS 1 workload against bare Aedes and against Chorus, interleaved over several rounds in
 * one run, so that machine noise hits both alike. Reports medians and the Chorus/Aedes ratio.
 *
 * Each server runs in its own process and the load generator in another. Environment: BENCH_ROUNDS (default 3),
 * BENCH_MEASURE_MS (default 8000), BENCH_PUBLISHERS / BENCH_SUBSCRIBERS (default 4 / 4), BENCH_WINDOW (default 32);
 * BENCH_PROFILE_DIR writes a CPU profile of the Chorus server there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { signToken } from '../broker/auth.js';
import { loadConfig } from '../config/config.js';
import type { LoadSpec } from './loadgen.js';

interface Result {
  publishPerSec: number;
  deliveredPerSec: number;
  p50Ms: number;
  p99Ms: number;
  samples: number;
  serverRssMb: number;
}

interface Target {
  name: string;
  start(port: number): Promise<{ child: ChildProcess; spec: Pick<LoadSpec, 'topic' | 'publishers' | 'subscribers'> }>;
}

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const ROUNDS = env('BENCH_ROUNDS', 3);
const MEASURE_MS = env('BENCH_MEASURE_MS', 8000);
const PUBLISHERS = env('BENCH_PUBLISHERS', 4);
const SUBSCRIBERS = env('BENCH_SUBSCRIBERS', 4);
const WINDOW = env('BENCH_WINDOW', 32);
const here = new URL('.', import.meta.url).pathname;

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

function waitForLine(child: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before "${text}"`)));
  });
}

const users = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

const bareAedes: Target = {
  name: 'bare Aedes (QoS 1)',
  async start(port) {
    const child = spawn(process.execPath, [join(here, 'bare-aedes.js'), String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await waitForLine(child, 'ready');
    const anyone = (u: string) => ({ username: u, password: 'x' });
    return {
      child,
      spec: { topic: 'groups/bench/messages', publishers: users('pub', PUBLISHERS).map(anyone), subscribers: users('sub', SUBSCRIBERS).map(anyone) },
    };
  },
};

const chorusSqlite: Target = {
  name: 'Chorus, SQLite log',
  async start(port) {
    const dataDir = mkdtempSync(join(tmpdir(), 'chorus-bench-'));
    const httpPort = await freePort();
    const cli = join(here, '..', 'clients', 'cli.js');
    const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
    const childEnv = { ...process.env, CHORUS_DATA_DIR: dataDir, CHORUS_MQTT_PORT: String(port), CHORUS_HTTP_PORT: String(httpPort), CHORUS_LOG_LEVEL: 'warn' };
    const child = spawn(process.execPath, [...profile, cli, 'serve'], { env: childEnv, stdio: ['ignore', 'pipe', 'inherit'] });
    await waitForLine(child, 'Chorus is running');
    const config = loadConfig({ CHORUS_DATA_DIR: dataDir });
    const publishers = users('pub', PUBLISHERS);
    const subscribers = users('sub', SUBSCRIBERS);
    const res = await fetch(`http://127.0.0.1:${httpPort}/v1/groups`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await signToken(config, 'pub0', 3600)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench', members: [...publishers, ...subscribers] }),
    });
    const groupId = ((await res.json()) as { id: string }).id;
    const creds = async (u: string) => ({ username: u, password: await signToken(config, u, 3600) });
    return {
      child,
      spec: {
        topic: `groups/${groupId}/messages`,
        publishers: await Promise.all(publishers.map(creds)),
        subscribers: await Promise.all(subscribers.map(creds)),
      },
    };
  },
};

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
}

async function measure(target: Target): Promise<Result> {
  const port = await freePort();
  const { child, spec } = await target.start(port);
  try {
    const load: LoadSpec = { port, ...spec, window: WINDOW, bodyBytes: 100, warmupMs: 2000, measureMs: MEASURE_MS };
    const gen = spawn(process.execPath, [join(here, 'loadgen.js'), JSON.stringify(load)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    gen.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => gen.once('exit', resolve));
    if (code !== 0) throw new Error(`load generator failed against ${target.name}`);
    return { ...(JSON.parse(out) as Omit<Result, 'serverRssMb'>), serverRssMb: rssMb(child.pid!) };
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const targets = [bareAedes, chorusSqlite];
const results = new Map<string, Result[]>(targets.map((t) => [t.name, []]));
console.log(`workload: ${PUBLISHERS} publishers x ${WINDOW} in flight, ${SUBSCRIBERS} subscribers, 1 topic, 100-byte bodies, QoS 1; ${ROUNDS} rounds x ${MEASURE_MS} ms`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const target of targets) {
    const result = await measure(target);
    results.get(target.name)!.push(result);
    console.log(`round ${round} ${target.name}: ${result.publishPerSec.toFixed(0)} msg/s in, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms`);
  }
}

const summary = targets.map((t) => {
  const rs = results.get(t.name)!;
  return {
    target: t.name,
    publishPerSec: median(rs.map((r) => r.publishPerSec)),
    deliveredPerSec: median(rs.map((r) => r.deliveredPerSec)),
    p50Ms: median(rs.map((r) => r.p50Ms)),
    p99Ms: median(rs.map((r) => r.p99Ms)),
    serverRssMb: median(rs.map((r) => r.serverRssMb)),
  };
});
console.log('\nmedians:');
console.log('| target | published msg/s | delivered msg/s | p50 ms | p99 ms | server RSS MB | vs bare Aedes |');
console.log('|---|---|---|---|---|---|---|');
const base = summary[0]!.publishPerSec;
for (const s of summary) {
  console.log(
    `| ${s.target} | ${s.publishPerSec.toFixed(0)} | ${s.deliveredPerSec.toFixed(0)} | ${s.p50Ms.toFixed(2)} | ${s.p99Ms.toFixed(2)} | ${s.serverRssMb.toFixed(0)} | ${(s.publishPerSec / base).toFixed(2)}x |`,
  );
}
