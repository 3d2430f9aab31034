/**
 * `npm run bench:scale`: a Chorus cluster of BENCH_SCALE_CONNECTIONS (default 100,000) connections on this one box.
 *
 * It starts the real Redis and Cassandra (scripts/services.sh), N Chorus nodes sharing them (enough that none holds more
 * than BENCH_SCALE_PER_NODE connections, default 17,000: a process may open 20,000 files here) and one load generator
 * (bench/groups-loadgen.ts) per node. Users u0..u(C-1) are members of one small group each (BENCH_SCALE_GROUP_SIZE,
 * default 50; members spread over the nodes, so a group's messages cross Redis) and all of one big group of C members.
 * Every member connects over MQTT (TCP) to its node and subscribes to both groups' topics. First, on a cluster of its
 * own, the horizontal phase (bench/scale-horizontal.ts): what a node pays for each node added. Then:
 *
 * 1. setup: the groups are made through the REST API (memberships written per second);
 * 2. connect: every member connects and subscribes, 50 at a time per generator: the rate, failures by reason, memory
 *    and files per node;
 * 3. probe: BENCH_SCALE_PROBE_RATE (default 100) msg/s across the small groups for BENCH_SCALE_PROBE_MS: p50 / p99
 *    of delivery, every delivery counted; and, from the nodes' /metrics over the step, their commits' p50 / p99 and
 *    their event loops' delay, which say how much of the delivery time the message log and busy nodes took;
 * 4. big group: three messages to all C members, one after another: the time until the last member has each
 *    (target < 2 s);
 * 5. shutdown: SIGTERM to every node with all its clients connected: the time until each exits (target < 10 s).
 *
 * After each phase it reads every process's CPU time and memory (/proc) and the box's idle time, and says which
 * resource ran out when a phase fell short: CPU (the box's cores were busy), file descriptors (EMFILE), memory
 * (MemAvailable below 1 GiB), or the servers (refused or timed-out connections with CPU to spare).
 * BENCH_PROFILE_DIR writes the nodes' CPU profiles there; BENCH_LOG_LEVEL sets the nodes' (warn); BENCH_SCALE_NODE_FLAGS
 * gives the nodes Node.js flags (the generators keep theirs); BENCH_SCALE_PHASES picks `horizontal`, `cluster` or both
 * (the default).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { signToken } from '../auth/token-verifier.js';
import type { GroupsLoadSpec, Member, Step } from './groups-loadgen.js';
import { env } from './env-number.js';
import { median } from './figures.js';
import { LoadGenerator, nextOfAll } from './load-generator.js';
import { cpuSeconds, rssBytes } from './process-usage.js';
import { api, config, dropKeyspace, type Node, startNode, stop, work } from './scale-cluster.js';
import { measureHorizontal } from './scale-horizontal.js';

const CONNECTIONS = env('BENCH_SCALE_CONNECTIONS', 100_000);
const PER_NODE = env('BENCH_SCALE_PER_NODE', 17_000);
const NODES = env('BENCH_SCALE_NODES', Math.ceil(CONNECTIONS / PER_NODE));
const GROUP_SIZE = env('BENCH_SCALE_GROUP_SIZE', 50);
const PROBE_RATE = env('BENCH_SCALE_PROBE_RATE', 100);
const PROBE_MS = env('BENCH_SCALE_PROBE_MS', 20_000);
const FANOUTS = env('BENCH_SCALE_FANOUTS', 3);
/** Node.js flags for the Chorus nodes only (space-separated), e.g. `--max-semi-space-size=64`. */
const NODE_FLAGS = (process.env.BENCH_SCALE_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const BIG_GROUP_TARGET_MS = 2000;
/** The nodes' CPU per delivery of one message to the big group, at most (µs). */
const BIG_GROUP_TARGET_US = 10;
const P99_TARGET_MS = 200;
const SHUTDOWN_TARGET_MS = 10_000;
const SETUP_CONCURRENCY = 64;
/** How often CPU is sampled (ms). */
const SAMPLE_MS = 250;

const root = new URL('../..', import.meta.url).pathname;
const LIMITS = {
  maxConnections: PER_NODE + 1000,
  maxGroupMembers: Math.max(CONNECTIONS, 100_000),
  nodeFlags: NODE_FLAGS,
};

// ---- machine readings ------------------------------------------------------------------------------------------

/** A process's CPU seconds so far and its resident memory in bytes (0 and 0 once it is gone). */
function usage(pid: number): { cpuSeconds: number; rssBytes: number } {
  try {
    return { cpuSeconds: cpuSeconds(pid), rssBytes: rssBytes(pid) };
  } catch {
    return { cpuSeconds: 0, rssBytes: 0 };
  }
}
const openFiles = (pid: number) => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
};
/** The box's busy and total CPU time (all cores) in clock ticks. */
function boxCpu(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - fields[3]! - fields[4]!, total }; // idle and iowait are not busy
}
const memAvailableBytes = () =>
  Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
const pidFile = (path: string) => {
  try {
    return Number(readFileSync(join(root, path), 'utf8').trim());
  } catch {
    return 0;
  }
};

type Component = 'nodes' | 'generators' | 'cassandra' | 'redis';
/** CPU so far (the box's, and each component's processes'), at an epoch time in ms. */
interface CpuSample {
  at: number;
  box: { busy: number; total: number };
  memAvailable: number;
  cpu: Record<Component, number>;
}
/** Memory and files per process, read after a phase. */
interface Snapshot {
  nodeRss: number[];
  generatorRss: number[];
  nodeFiles: number[];
}
const epochNow = () => performance.timeOrigin + performance.now();

/** Cumulative commit counts by upper bound (seconds), summed over every node's chorus_sequencer_commit_seconds. */
type CommitHistogram = Map<number, number>;

/** What the nodes' /metrics say: their commit times so far, and their event loops' delay since the last reading. */
interface NodeReadings {
  commits: CommitHistogram;
  /** The highest of the nodes' p99 and maximum event-loop delay (ms); prom-client starts these afresh at each reading. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

async function readNodes(nodes: Node[]): Promise<NodeReadings> {
  const readings: NodeReadings = { commits: new Map(), loopDelayP99Ms: 0, loopDelayMaxMs: 0 };
  for (const node of nodes) {
    const text = await (await fetch(`http://127.0.0.1:${node.httpPort}/metrics`)).text();
    for (const [, le, count] of text.matchAll(/^chorus_sequencer_commit_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)) {
      const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
      readings.commits.set(bound, (readings.commits.get(bound) ?? 0) + Number(count));
    }
    const gauge = (name: string) => 1000 * Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    readings.loopDelayP99Ms = Math.max(readings.loopDelayP99Ms, gauge('chorus_nodejs_eventloop_lag_p99_seconds'));
    readings.loopDelayMaxMs = Math.max(readings.loopDelayMaxMs, gauge('chorus_nodejs_eventloop_lag_max_seconds'));
  }
  return readings;
}

/** The commits between two readings: how many, and the bucket bound (ms) that p50 and p99 of them fell under. */
function commitsBetween(
  before: CommitHistogram,
  after: CommitHistogram,
): { count: number; p50Ms: number; p99Ms: number } {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const within = (bound: number) => (after.get(bound) ?? 0) - (before.get(bound) ?? 0);
  const count = within(Number.POSITIVE_INFINITY);
  const under = (p: number) =>
    1000 * (bounds.find((bound) => within(bound) >= (count * p) / 100) ?? Number.POSITIVE_INFINITY);
  return { count, p50Ms: under(50), p99Ms: under(99) };
}

/** The probe step's commits, and the worst event-loop delay of any node over it. */
type ProbeReadings = ReturnType<typeof commitsBetween> & Pick<NodeReadings, 'loopDelayP99Ms' | 'loopDelayMaxMs'>;

/** Runs `work` over `items`, `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, work: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        await work(items[i]!, i);
      }
    }),
  );
}

// ---- the run ----------------------------------------------------------------------------------------------------

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '-';
const mb = (bytes: number) => fmt(bytes / 2 ** 20);

async function main(): Promise<void> {
  const services = spawnSync('bash', [join(root, 'scripts/services.sh'), 'start'], { stdio: 'inherit' });
  if (services.status !== 0) throw new Error('scripts/services.sh start failed: Redis and Cassandra are needed');
  const cassandraPid = pidFile('.services/cassandra/cassandra.pid');
  const redisPid = pidFile('.services/redis/redis.pid');
  const phases = (process.env.BENCH_SCALE_PHASES ?? 'horizontal,cluster').split(',');
  if (phases.includes('horizontal')) {
    const met = await measureHorizontal().catch(async (err: Error) => {
      await dropKeyspace();
      throw err;
    });
    if (!met) process.exitCode = 1;
  }
  if (!phases.includes('cluster')) return dropKeyspace();
  const groupCount = Math.ceil(CONNECTIONS / GROUP_SIZE);
  console.log(
    `${CONNECTIONS} connections, ${NODES} nodes, ${groupCount} groups of ${GROUP_SIZE} and one of ${CONNECTIONS}; ${cpus().length} cores; logs in ${work}`,
  );

  const nodes: Node[] = [await startNode('0', LIMITS)]; // the first creates the keyspace's tables alone
  nodes.push(...(await Promise.all(Array.from({ length: NODES - 1 }, (_, i) => startNode(String(i + 1), LIMITS)))));
  const generators: LoadGenerator[] = [];
  const sampleCpu = (): CpuSample => {
    const cpu = (pids: number[]) => pids.reduce((sum, pid) => sum + usage(pid).cpuSeconds, 0);
    return {
      at: epochNow(),
      box: boxCpu(),
      memAvailable: memAvailableBytes(),
      cpu: {
        nodes: cpu(nodes.map((n) => n.child.pid!)),
        generators: cpu(generators.map((g) => g.child.pid!)),
        cassandra: cpu([cassandraPid]),
        redis: cpu([redisPid]),
      },
    };
  };
  const snapshot = (): Snapshot => ({
    nodeRss: nodes.map((n) => usage(n.child.pid!).rssBytes),
    generatorRss: generators.map((g) => usage(g.child.pid!).rssBytes),
    nodeFiles: nodes.map((n) => openFiles(n.child.pid!)),
  });
  // Sampled all along, so that each phase's CPU is read over exactly its own window (a fan-out lasts a few seconds).
  const samples: CpuSample[] = [sampleCpu()];
  const sampler = setInterval(() => samples.push(sampleCpu()), SAMPLE_MS);
  try {
    // 1. setup
    const user = (i: number) => `u${i}`;
    const setupStart = epochNow();
    const smallTopics: string[] = [];
    await pool(
      Array.from({ length: groupCount }, (_, g) => g),
      SETUP_CONCURRENCY,
      async (g) => {
        const users = Array.from({ length: Math.min(GROUP_SIZE, CONNECTIONS - g * GROUP_SIZE) }, (_, j) =>
          user(g * GROUP_SIZE + j),
        );
        const { id } = await api(nodes[g % NODES]!, users[0]!, 'POST', '/groups', {
          name: `small ${g}`,
          members: users.slice(1),
        });
        smallTopics[g] = `groups/${id}/messages`;
      },
    );
    const firstBatch = Math.min(CONNECTIONS, 1000);
    const big = await api(nodes[0]!, user(0), 'POST', '/groups', {
      name: 'everyone',
      members: Array.from({ length: firstBatch - 1 }, (_, i) => user(i + 1)),
    });
    const batches = Array.from(
      { length: Math.ceil((CONNECTIONS - firstBatch) / 1000) },
      (_, b) => firstBatch + b * 1000,
    );
    await pool(batches, 8, async (from, b) => {
      const userIds = Array.from({ length: Math.min(1000, CONNECTIONS - from) }, (_, i) => user(from + i));
      await api(nodes[b % NODES]!, user(0), 'POST', `/groups/${big.id}/members/batch`, { userIds });
    });
    const setupPhase = { name: 'setup', from: setupStart, to: epochNow() };
    const memberships = CONNECTIONS * 2;
    const setupSeconds = (setupPhase.to - setupStart) / 1000;
    const setupUse = used(samples, setupPhase);
    console.log(
      `setup: ${memberships} memberships in ${fmt(setupSeconds, 1)} s (${fmt(memberships / setupSeconds)}/s); box CPU ${pct(setupUse.busy)} (nodes ${pct(setupUse.shares.nodes)}, Cassandra ${pct(setupUse.shares.cassandra)}, Redis ${pct(setupUse.shares.redis)})`,
    );

    // 2..4 through one generator per node
    const bigTopic = `groups/${big.id}/messages`;
    const specs: Member[][] = nodes.map(() => []);
    for (let i = 0; i < CONNECTIONS; i++) {
      specs[i % NODES]!.push({
        username: user(i),
        password: await signToken(config, user(i), 7200),
        clientId: user(i),
        topics: [smallTopics[Math.floor(i / GROUP_SIZE)]!, bigTopic],
      });
    }
    const stepsFor = (k: number): Step[] => [
      { kind: 'connect', concurrency: 50 },
      { kind: 'rate', rate: PROBE_RATE / NODES, warmupMs: 3000, measureMs: PROBE_MS, latencies: true },
      ...Array.from(
        { length: FANOUTS },
        (): Step => ({
          kind: 'fanout',
          ...(k === 0 ? { from: 0 } : {}),
          topicIndex: 1,
          delayMs: 2000,
          timeoutMs: 30_000,
        }),
      ),
    ];
    const beforeConnect = snapshot();
    for (const [k, node] of nodes.entries()) {
      const spec: GroupsLoadSpec = {
        port: node.mqttPort,
        members: specs[k]!,
        clean: true,
        bodyBytes: 100,
        steps: stepsFor(k),
      };
      generators.push(new LoadGenerator(spec, { nodeArgs: ['--max-old-space-size=4096'] }));
    }
    const results: Record<string, unknown>[][] = [];
    let afterConnect = beforeConnect;
    let commitsBeforeProbe: CommitHistogram = new Map();
    let probeReadings: ProbeReadings = {
      count: 0,
      p50Ms: Number.NaN,
      p99Ms: Number.NaN,
      loopDelayP99Ms: Number.NaN,
      loopDelayMaxMs: Number.NaN,
    };
    const stepNames = stepsFor(0).map((s) => s.kind);
    for (const name of stepNames) {
      const step = await nextOfAll(generators);
      results.push(step);
      if (name === 'connect') {
        afterConnect = snapshot();
        const failed = step.reduce((n, r) => n + Number(r.failed), 0);
        console.log(
          `connect: ${CONNECTIONS - failed} connected, ${failed} failed ${JSON.stringify(mergeCounts(step.map((r) => r.failures as Record<string, number>)))}`,
        );
        commitsBeforeProbe = (await readNodes(nodes)).commits;
      }
      if (name === 'rate') {
        const { commits, loopDelayP99Ms, loopDelayMaxMs } = await readNodes(nodes);
        probeReadings = { ...commitsBetween(commitsBeforeProbe, commits), loopDelayP99Ms, loopDelayMaxMs };
      }
    }
    // 5. shutdown: every node gets SIGTERM while all its clients are still connected.
    const exitMs = await Promise.all(nodes.map((n) => stop(n.child)));
    await sleep(SAMPLE_MS * 2); // a sample past the last window
    report(results, samples, beforeConnect, afterConnect, exitMs, probeReadings);
  } finally {
    clearInterval(sampler);
    for (const gen of generators) gen.kill();
    await Promise.all(nodes.map((n) => stop(n.child)));
    await dropKeyspace();
  }
}

const mergeCounts = (counts: Record<string, number>[]) => {
  const merged: Record<string, number> = {};
  for (const c of counts) for (const [k, v] of Object.entries(c ?? {})) merged[k] = (merged[k] ?? 0) + v;
  return merged;
};

interface Phase {
  name: string;
  /** Epoch ms. */
  from: number;
  to: number;
}

/** What a window used: the box's busy share, each component's share of the box, the least memory available. */
function used(samples: CpuSample[], { from, to }: Phase) {
  const first = [...samples].reverse().find((s) => s.at <= from) ?? samples[0]!;
  const last = samples.find((s) => s.at >= to) ?? samples.at(-1)!;
  const seconds = (last.at - first.at) / 1000;
  const cores = cpus().length;
  const share = (c: Component) => (last.cpu[c] - first.cpu[c]) / seconds / cores;
  return {
    busy: (last.box.busy - first.box.busy) / (last.box.total - first.box.total),
    /** The nodes' CPU seconds over the window (widened to the samples around it, SAMPLE_MS at most each side). */
    nodesCpuSeconds: last.cpu.nodes - first.cpu.nodes,
    shares: {
      nodes: share('nodes'),
      generators: share('generators'),
      cassandra: share('cassandra'),
      redis: share('redis'),
    },
    memAvailable: Math.min(...samples.filter((s) => s.at >= first.at && s.at <= last.at).map((s) => s.memAvailable)),
  };
}

const pct = (x: number) => `${fmt(x * 100)}%`;

/** The resource that limited a phase that fell short, with its figure. */
function limit(u: ReturnType<typeof used>, failures: Record<string, number> = {}): string {
  if (failures.EMFILE || failures.ENFILE)
    return `file descriptors: ${failures.EMFILE ?? failures.ENFILE} connects failed with EMFILE/ENFILE (20,000 per process)`;
  if (u.memAvailable < 2 ** 30) return `memory: ${mb(u.memAvailable)} MB available`;
  if (u.busy > 0.9)
    return `CPU: the box was ${pct(u.busy)} busy (nodes ${pct(u.shares.nodes)}, generators ${pct(u.shares.generators)}, Cassandra ${pct(u.shares.cassandra)}, Redis ${pct(u.shares.redis)})`;
  return `not CPU (${pct(u.busy)} busy) nor memory (${mb(u.memAvailable)} MB available): see the node logs`;
}

function report(
  results: Record<string, unknown>[][],
  samples: CpuSample[],
  beforeConnect: Snapshot,
  afterConnect: Snapshot,
  exitMs: number[],
  probeReadings: ProbeReadings,
): void {
  console.log("\n**Cluster on one box** (bench/scale.ts; CPU read over each phase's own window)");
  console.log('| phase | result | target | box CPU busy (nodes / generators / Cassandra / Redis) | what limited it |');
  console.log('|---|---|---|---|---|');
  const row = (phase: Phase, result: string, target: string, met: boolean, failures?: Record<string, number>) => {
    const u = used(samples, phase);
    const shares = `${pct(u.busy)} (${pct(u.shares.nodes)} / ${pct(u.shares.generators)} / ${pct(u.shares.cassandra)} / ${pct(u.shares.redis)})`;
    console.log(`| ${phase.name} | ${result} | ${target} | ${shares} | ${met ? 'met' : limit(u, failures)} |`);
  };

  const connect = results[0]!;
  const failed = connect.reduce((n, r) => n + Number(r.failed), 0);
  const failures = mergeCounts(connect.map((r) => r.failures as Record<string, number>));
  const connected = CONNECTIONS - failed;
  const connectPhase = {
    name: 'connect',
    from: Math.min(...connect.map((r) => Number(r.startedAt))),
    to: Math.max(...connect.map((r) => Number(r.endedAt))),
  };
  const connectSeconds = (connectPhase.to - connectPhase.from) / 1000;
  const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
  const nodeGrowth = sum(afterConnect.nodeRss) - sum(beforeConnect.nodeRss);
  row(
    connectPhase,
    `${fmt(connected)} of ${fmt(CONNECTIONS)} in ${fmt(connectSeconds, 1)} s: ${fmt(connected / connectSeconds)}/s; failed ${failed} ${failed ? JSON.stringify(failures) : ''}`,
    'all',
    failed === 0,
    failures,
  );

  const probe = results[1]!;
  const latencies = probe.flatMap((r) => r.latencies as number[]).sort((a, b) => a - b);
  const offered = probe.reduce((n, r) => n + Number(r.offered), 0);
  const delivered = probe.reduce((n, r) => n + Number(r.delivered), 0);
  const share = offered === 0 ? 0 : delivered / (offered * GROUP_SIZE);
  const p99 = percentile(latencies, 99);
  const probePhase = {
    name: 'probe',
    from: Math.max(...probe.map((r) => Number(r.measureFrom))),
    to: Math.min(...probe.map((r) => Number(r.measureTo))),
  };
  row(
    probePhase,
    `${fmt(offered / (PROBE_MS / 1000))} msg/s offered, ${pct(share)} delivered: p50 ${fmt(percentile(latencies, 50), 1)} ms, p99 ${fmt(p99, 1)} ms; over the step (warm-up included) its ${fmt(probeReadings.count)} commits took p50 ≤ ${fmt(probeReadings.p50Ms)} ms, p99 ≤ ${fmt(probeReadings.p99Ms)} ms, and the nodes' event loops were delayed up to p99 ${fmt(probeReadings.loopDelayP99Ms)} ms, max ${fmt(probeReadings.loopDelayMaxMs)} ms`,
    `p99 < ${P99_TARGET_MS} ms`,
    p99 < P99_TARGET_MS && share > 0.99,
  );

  const fanouts = results.slice(2, 2 + FANOUTS).map((step, i) => {
    const sentAt = Number(step.find((r) => r.sentAt !== undefined)?.sentAt);
    const lastAt = Math.max(...step.map((r) => Number(r.lastDeliveryAt)));
    const phase = { name: `big group ${i + 1}`, from: sentAt, to: lastAt };
    const receivers = sum(step.map((r) => Number(r.receivers)));
    return {
      phase,
      lastMs: lastAt - sentAt,
      receivers,
      missing: sum(step.map((r) => Number(r.missing))),
      nodeUsPerDelivery: (used(samples, phase).nodesCpuSeconds * 1e6) / receivers,
    };
  });
  for (const f of fanouts) {
    row(
      f.phase,
      `${fmt(f.receivers)} receivers, ${f.missing} missing: last delivery ${fmt(f.lastMs)} ms; the nodes' CPU ${fmt(f.nodeUsPerDelivery, 1)} µs per delivery`,
      `< ${BIG_GROUP_TARGET_MS} ms`,
      f.missing === 0 && f.lastMs < BIG_GROUP_TARGET_MS,
    );
  }

  const slowestExit = Math.max(...exitMs);
  console.log(
    `| shutdown | SIGTERM to all ${exitMs.length} nodes with their clients connected: slowest exit ${fmt(slowestExit)} ms | < ${SHUTDOWN_TARGET_MS} ms | - | ${slowestExit < SHUTDOWN_TARGET_MS ? 'met' : 'not met: see the node logs'} |`,
  );
  console.log(
    `\nbig group, median of ${FANOUTS}: last delivery ${fmt(median(fanouts.map((f) => f.lastMs)))} ms; the nodes' CPU ${fmt(median(fanouts.map((f) => f.nodeUsPerDelivery)), 1)} µs per delivery (target: ${BIG_GROUP_TARGET_US} µs at most)`,
  );
  console.log('\n**Per node** (after connect)');
  console.log('| node | connections | RSS MB | memory per connection KB | open files |');
  console.log('|---|---|---|---|---|');
  afterConnect.nodeRss.forEach((rss, k) => {
    const conns = Number(connect[k]!.connections) - Number(connect[k]!.failed);
    console.log(
      `| ${k} | ${fmt(conns)} | ${mb(rss)} | ${fmt((rss - beforeConnect.nodeRss[k]!) / 1024 / conns, 1)} | ${fmt(afterConnect.nodeFiles[k]!)} |`,
    );
  });
  const lowest = Math.min(...samples.map((s) => s.memAvailable));
  console.log(
    `\nall nodes: ${fmt(nodeGrowth / 1024 / connected, 1)} KB per connection; generators: ${mb(sum(afterConnect.generatorRss))} MB; memory available at the lowest: ${mb(lowest)} MB`,
  );
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: Error) => {
    console.error(`bench:scale failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
