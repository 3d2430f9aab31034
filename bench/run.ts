/**
 * `npm run bench`: the same QoS 1 workload against bare Aedes and against Chorus, interleaved over several rounds in
 * one run, so that machine noise hits both alike. Reports medians and the Chorus/Aedes ratio.
 *
 * Each server runs in its own process and the load generator in another. Environment: BENCH_ROUNDS (default 5),
 * BENCH_MEASURE_MS (default 8000), BENCH_PUBLISHERS / BENCH_SUBSCRIBERS (default 4 / 4), BENCH_WINDOW (default 32);
 * BENCH_PROFILE_DIR writes a CPU profile of the Chorus servers there; BENCH_CASSANDRA=0 leaves out the Cassandra run
 * (which otherwise starts Redis and Cassandra with scripts/services.sh, and warms Cassandra up with uncounted runs
 * until its throughput settles).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHORUS_CLI } from './chorus-cli.js';
import cassandra from 'cassandra-driver';
import { signToken } from '../auth/token-verifier.js';
import { loadConfig } from '../config/config.js';
import { freePort } from './free-port.js';
import { waitForLine } from './wait-for-line.js';
import type { LoadSpec } from './loadgen.js';
import { env } from './env-number.js';
import { Redis } from 'ioredis';
import { cpuMeter, rssBytes, servicePid, startServices } from './process-usage.js';
import { COSTS_FILE, machineName, recordCosts } from './capacity-model.js';

interface Result {
  publishPerSec: number;
  deliveredPerSec: number;
  p50Ms: number;
  p99Ms: number;
  samples: number;
  serverRssMb: number;
  /** GET 100 messages after a random seq: p50 / p99 in ms (Chorus targets only). */
  historyP50Ms?: number;
  historyP99Ms?: number;
  /** CPU µs per acknowledged message over the measured window, by process: server, generator, redis, cassandra. */
  usPerMessage: Record<string, number>;
  /** CPU µs per history page, by process (Chorus targets only). */
  usPerPage?: Record<string, number>;
  /** Requests to the services per acknowledged message, over the whole run (Cassandra + Redis target only). */
  redisCommandsPerMessage?: number;
  cassandraWritesPerMessage?: number;
  cassandraReadsPerMessage?: number;
  /** Cassandra reads per history page (Cassandra + Redis target only). */
  cassandraReadsPerPage?: number;
}

/** What the load generator prints. */
interface LoadResult {
  publishPerSec: number;
  deliveredPerSec: number;
  p50Ms: number;
  p99Ms: number;
  samples: number;
  acked: number;
  ackedInAll: number;
  windowCpuSeconds: Record<string, number>;
}

interface Started {
  child: ChildProcess;
  spec: Pick<LoadSpec, 'topic' | 'publishers' | 'subscribers'>;
  /** Reads a history page; present on Chorus targets. */
  readHistory?: (afterSeq: number) => Promise<void>;
}

interface Target {
  name: string;
  start(port: number): Promise<Started>;
  /** Uses the Redis and Cassandra of scripts/services.sh: their CPU and requests are counted too. */
  services?: boolean;
}

const ROUNDS = env('BENCH_ROUNDS', 5);
const MEASURE_MS = env('BENCH_MEASURE_MS', 8000);
const PUBLISHERS = env('BENCH_PUBLISHERS', 4);
const SUBSCRIBERS = env('BENCH_SUBSCRIBERS', 4);
const WINDOW = env('BENCH_WINDOW', 32);
/** Load before each measurement starts (the server process is new each time). */
const PRE_MEASURE_MS = 2000;
/** Load the local Cassandra takes, at least, before the counted rounds (see the warm-up below). */
const CASSANDRA_WARM_UP_MS = 90_000;
const here = new URL('.', import.meta.url).pathname;

const users = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

const bareAedes: Target = {
  name: 'bare Aedes (QoS 1)',
  async start(port) {
    const child = spawn(process.execPath, [join(here, 'bare-aedes.js'), String(port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await waitForLine(child, 'ready');
    const anyone = (u: string) => ({ username: u, password: 'x' });
    return {
      child,
      spec: {
        topic: 'groups/bench/messages',
        publishers: users('pub', PUBLISHERS).map(anyone),
        subscribers: users('sub', SUBSCRIBERS).map(anyone),
      },
    };
  },
};

/** Chorus as `chorus serve` with these extra settings, one group with every bench user as a member. */
const chorusTarget = (name: string, settings: () => Record<string, string>, services = false): Target => ({
  name,
  services,
  async start(port) {
    const dataDir = mkdtempSync(join(tmpdir(), 'chorus-bench-'));
    const httpPort = await freePort();
    const profile = process.env.BENCH_PROFILE_DIR
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
      : [];
    const extra = settings();
    const childEnv = {
      ...process.env,
      CHORUS_DATA_DIR: dataDir,
      CHORUS_MQTT_PORT: String(port),
      CHORUS_HTTP_PORT: String(httpPort),
      CHORUS_LOG_LEVEL: 'warn',
      // Each load-generator connection stands for many members: it publishes far above one device's rate.
      CHORUS_MQTT_PUBLISH_RATE: '1000000',
      ...extra,
    };
    const child = spawn(process.execPath, [...profile, CHORUS_CLI, 'serve'], {
      env: childEnv,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await waitForLine(child, 'Chorus is running');
    const config = loadConfig({ CHORUS_DATA_DIR: dataDir, ...extra });
    const publishers = users('pub', PUBLISHERS);
    const subscribers = users('sub', SUBSCRIBERS);
    const reader = await signToken(config, 'pub0', 3600);
    const res = await fetch(`http://127.0.0.1:${httpPort}/v1/groups`, {
      method: 'POST',
      headers: { authorization: `Bearer ${reader}`, 'content-type': 'application/json' },
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
      async readHistory(afterSeq: number) {
        const page = await fetch(
          `http://127.0.0.1:${httpPort}/v1/groups/${groupId}/messages?afterSeq=${afterSeq}&limit=100`,
          {
            headers: { authorization: `Bearer ${reader}` },
          },
        );
        if (!page.ok) throw new Error(`history read: ${page.status}`);
        await page.arrayBuffer();
      },
    };
  },
});

const CASSANDRA_PORT = process.env.CHORUS_TEST_CASSANDRA_PORT ?? 9142;
const BENCH_KEYSPACE = `chorus_bench_${process.pid}`;
const chorusSqlite = chorusTarget('Chorus, SQLite log', () => ({}));
const chorusCassandra = chorusTarget(
  'Chorus, Cassandra + Redis',
  () => ({
    CHORUS_STORE: 'cassandra',
    CHORUS_REDIS_URL: `redis://127.0.0.1:${process.env.CHORUS_TEST_REDIS_PORT ?? 6399}`,
    CHORUS_CASSANDRA_CONTACT_POINTS: `127.0.0.1:${CASSANDRA_PORT}`,
    CHORUS_CASSANDRA_KEYSPACE: BENCH_KEYSPACE,
    CHORUS_JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
  }),
  true,
);

/** History pages read after each run, one after another. */
const HISTORY_READS = 200;

/** p50 and p99 of HISTORY_READS reads of 100 messages after a random seq within what was sent. */
async function historyLatency(
  read: (afterSeq: number) => Promise<void>,
  lastSeq: number,
): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < HISTORY_READS; i++) {
    const started = performance.now();
    await read(Math.floor(Math.random() * Math.max(1, lastSeq - 100)));
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(HISTORY_READS * 0.5)]!, p99: times[Math.floor(HISTORY_READS * 0.99) - 1]! };
}

/** Requests the services have served so far: Redis commands, and Cassandra reads and writes in the bench keyspace. */
async function serviceRequests(): Promise<{ redis: number; cassandraWrites: number; cassandraReads: number }> {
  const info = await redis.info('stats');
  const count = async (table: string) =>
    (
      await cassandraAdmin.execute(`SELECT count FROM system_views.${table} WHERE keyspace_name = ?`, [BENCH_KEYSPACE])
    ).rows.reduce((sum, row) => sum + Number(row.get('count')), 0);
  return {
    redis: Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN),
    cassandraWrites: await count('coordinator_write_latency'),
    cassandraReads: await count('coordinator_read_latency'),
  };
}

async function measure(target: Target): Promise<Result> {
  const port = await freePort();
  const { child, spec, readHistory } = await target.start(port);
  try {
    const watch: Record<string, number> = { server: child.pid! };
    for (const service of target.services ? (['redis', 'cassandra'] as const) : []) {
      const pid = servicePid(service);
      if (pid) watch[service] = pid; // not when they run elsewhere (CHORUS_TEST_*_PORT)
    }
    const load: LoadSpec = {
      port,
      ...spec,
      window: WINDOW,
      bodyBytes: 100,
      warmupMs: PRE_MEASURE_MS,
      measureMs: MEASURE_MS,
      watch,
    };
    const requestsBefore = target.services ? await serviceRequests() : undefined;
    const gen = spawn(process.execPath, [join(here, 'loadgen.js'), JSON.stringify(load)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    gen.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => gen.once('exit', resolve));
    if (code !== 0) throw new Error(`load generator failed against ${target.name}`);
    const loaded = JSON.parse(out) as LoadResult;
    const result: Result = {
      publishPerSec: loaded.publishPerSec,
      deliveredPerSec: loaded.deliveredPerSec,
      p50Ms: loaded.p50Ms,
      p99Ms: loaded.p99Ms,
      samples: loaded.samples,
      serverRssMb: rssBytes(child.pid!) / 1024 / 1024,
      usPerMessage: Object.fromEntries(
        Object.entries(loaded.windowCpuSeconds).map(([name, seconds]) => [name, (seconds * 1e6) / loaded.acked]),
      ),
    };
    if (requestsBefore) {
      const after = await serviceRequests();
      result.redisCommandsPerMessage = (after.redis - requestsBefore.redis) / loaded.ackedInAll;
      result.cassandraWritesPerMessage = (after.cassandraWrites - requestsBefore.cassandraWrites) / loaded.ackedInAll;
      result.cassandraReadsPerMessage = (after.cassandraReads - requestsBefore.cassandraReads) / loaded.ackedInAll;
    }
    if (readHistory) {
      const sent = Math.floor((result.publishPerSec * (MEASURE_MS + PRE_MEASURE_MS)) / 1000);
      const { server, cassandra } = watch;
      const readsBefore = target.services ? (await serviceRequests()).cassandraReads : undefined;
      const meter = cpuMeter({ server: server!, ...(cassandra ? { cassandra } : {}) });
      const { p50, p99 } = await historyLatency(readHistory, sent);
      result.usPerPage = Object.fromEntries(
        Object.entries(meter()).map(([name, seconds]) => [name, (seconds * 1e6) / HISTORY_READS]),
      );
      if (readsBefore !== undefined) {
        result.cassandraReadsPerPage = ((await serviceRequests()).cassandraReads - readsBefore) / HISTORY_READS;
      }
      result.historyP50Ms = p50;
      result.historyP99Ms = p99;
    }
    return result;
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

const withCassandra = process.env.BENCH_CASSANDRA !== '0';
if (withCassandra) startServices();
const targets = withCassandra ? [bareAedes, chorusSqlite, chorusCassandra] : [bareAedes, chorusSqlite];
// What the services served and the bench keyspace's request counts are read through these (Cassandra + Redis only).
const redis = new Redis(Number(process.env.CHORUS_TEST_REDIS_PORT ?? 6399), '127.0.0.1', { lazyConnect: true });
const cassandraAdmin = new cassandra.Client({
  contactPoints: [`127.0.0.1:${CASSANDRA_PORT}`],
  localDataCenter: 'datacenter1',
});
const results = new Map<string, Result[]>(targets.map((t) => [t.name, []]));
console.log(
  `workload: ${PUBLISHERS} publishers x ${WINDOW} in flight, ${SUBSCRIBERS} subscribers, 1 topic, 100-byte bodies, QoS 1; ${ROUNDS} rounds x ${MEASURE_MS} ms`,
);
if (withCassandra) {
  // After a start, Cassandra's JVM compiles its hot paths (and catches up on flushes) for a minute or more under load,
  // and runs can hold steady at a cold pace before they speed up: not what the rounds measure. Uncounted runs: at least
  // CASSANDRA_WARM_UP_MS of load, then until one is within 5% of the one before (at most 16 runs).
  let previous = 0;
  let loadedMs = 0;
  for (let run = 1; run <= 16; run++) {
    const { publishPerSec } = await measure(chorusCassandra);
    loadedMs += PRE_MEASURE_MS + MEASURE_MS;
    console.log(`warm-up ${run} ${chorusCassandra.name} (not counted): ${publishPerSec.toFixed(0)} msg/s in`);
    if (loadedMs >= CASSANDRA_WARM_UP_MS && Math.abs(publishPerSec - previous) < 0.05 * previous) break;
    previous = publishPerSec;
  }
}
for (let round = 1; round <= ROUNDS; round++) {
  for (const target of targets) {
    const result = await measure(target);
    results.get(target.name)!.push(result);
    const history = result.historyP99Ms === undefined ? '' : `; history page p99 ${result.historyP99Ms.toFixed(2)} ms`;
    console.log(
      `round ${round} ${target.name}: ${result.publishPerSec.toFixed(0)} msg/s in, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms${history}`,
    );
  }
}

const summary = targets.map((t) => {
  const rs = results.get(t.name)!;
  const us = (pick: (r: Result) => Record<string, number> | undefined, name: string) =>
    median(rs.map((r) => pick(r)?.[name] ?? Number.NaN));
  return {
    perMessage: (name: string) => us((r) => r.usPerMessage, name),
    perPage: (name: string) => us((r) => r.usPerPage, name),
    redisCommandsPerMessage: median(rs.map((r) => r.redisCommandsPerMessage ?? Number.NaN)),
    cassandraWritesPerMessage: median(rs.map((r) => r.cassandraWritesPerMessage ?? Number.NaN)),
    cassandraReadsPerMessage: median(rs.map((r) => r.cassandraReadsPerMessage ?? Number.NaN)),
    cassandraReadsPerPage: median(rs.map((r) => r.cassandraReadsPerPage ?? Number.NaN)),
    target: t.name,
    publishPerSec: median(rs.map((r) => r.publishPerSec)),
    deliveredPerSec: median(rs.map((r) => r.deliveredPerSec)),
    p50Ms: median(rs.map((r) => r.p50Ms)),
    p99Ms: median(rs.map((r) => r.p99Ms)),
    serverRssMb: median(rs.map((r) => r.serverRssMb)),
    historyP50Ms: rs[0]!.historyP50Ms === undefined ? undefined : median(rs.map((r) => r.historyP50Ms!)),
    historyP99Ms: rs[0]!.historyP99Ms === undefined ? undefined : median(rs.map((r) => r.historyP99Ms!)),
  };
});
console.log('\nmedians:');
console.log(
  '| target | published msg/s | delivered msg/s | p50 ms | p99 ms | server RSS MB | vs bare Aedes | history page p50 / p99 ms |',
);
console.log('|---|---|---|---|---|---|---|---|');
const base = summary[0]!.publishPerSec;
for (const s of summary) {
  console.log(
    `| ${s.target} | ${s.publishPerSec.toFixed(0)} | ${s.deliveredPerSec.toFixed(0)} | ${s.p50Ms.toFixed(2)} | ${s.p99Ms.toFixed(2)} | ${s.serverRssMb.toFixed(0)} | ${(s.publishPerSec / base).toFixed(2)}x | ${s.historyP99Ms === undefined ? '-' : `${s.historyP50Ms!.toFixed(2)} / ${s.historyP99Ms.toFixed(2)}`} |`,
  );
}

const us = (value: number) => (Number.isFinite(value) ? value.toFixed(1) : '-');
console.log('\n**CPU per operation** (µs, every thread of each process, over the measured window; medians)');
console.log(
  '| target | server per message | vs bare Aedes | load generator per message | Cassandra per message | Redis per message | server per history page | Cassandra per history page |',
);
console.log('|---|---|---|---|---|---|---|---|');
const baseUs = summary[0]!.perMessage('server');
for (const s of summary) {
  console.log(
    `| ${s.target} | ${us(s.perMessage('server'))} | ${(s.perMessage('server') / baseUs).toFixed(2)}x | ${us(s.perMessage('generator'))} | ${us(s.perMessage('cassandra'))} | ${us(s.perMessage('redis'))} | ${us(s.perPage('server'))} | ${us(s.perPage('cassandra'))} |`,
  );
}
const sqlite = summary.find((s) => s.target === chorusSqlite.name)!;
const cluster = summary.find((s) => s.target === chorusCassandra.name);
if (cluster) {
  console.log(
    `\nper message on Cassandra + Redis: ${cluster.redisCommandsPerMessage.toFixed(2)} Redis commands, ${cluster.cassandraWritesPerMessage.toFixed(2)} Cassandra writes, ${cluster.cassandraReadsPerMessage.toFixed(2)} Cassandra reads; per history page ${cluster.cassandraReadsPerPage.toFixed(2)} Cassandra reads; node CPU per message ${(cluster.perMessage('server') / sqlite.perMessage('server')).toFixed(2)}x the SQLite tier's`,
  );
}
recordCosts(
  {
    node: { historyPageUs: sqlite.perPage('server') },
    ...(cluster && {
      cluster: {
        storeRatio: cluster.perMessage('server') / sqlite.perMessage('server'),
        historyPageUs: cluster.perPage('server'),
        cassandraUsPerMessage: cluster.perMessage('cassandra'),
        cassandraWritesPerMessage: cluster.cassandraWritesPerMessage,
        cassandraReadsPerMessage: cluster.cassandraReadsPerMessage,
        cassandraReadsPerPage: cluster.cassandraReadsPerPage,
        redisUsPerMessage: cluster.perMessage('redis'),
        redisCommandsPerMessage: cluster.redisCommandsPerMessage,
      },
    }),
  },
  machineName(),
);
console.log(`costs written to ${COSTS_FILE} (npm run capacity reads them)`);
redis.disconnect();

if (withCassandra) {
  // Each run's keyspace is its own: drop it, so that runs do not pile up data in the local Cassandra.
  const db = new cassandra.Client({ contactPoints: [`127.0.0.1:${CASSANDRA_PORT}`], localDataCenter: 'datacenter1' });
  await db.execute(`DROP KEYSPACE IF EXISTS ${BENCH_KEYSPACE}`, [], { readTimeout: 30_000 });
  await db.shutdown();
}
await cassandraAdmin.shutdown();
