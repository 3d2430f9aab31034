/**
 * The horizontal phase of `npm run bench:scale`: what a node pays for being one of several. The cluster grows from one
 * node to BENCH_SCALE_HORIZONTAL_NODES (default 3) on the real Redis and Cassandra, and at each size every node carries
 * the same load: BENCH_SCALE_HORIZONTAL_MEMBERS (default 400) connections in groups of 20 and
 * BENCH_SCALE_HORIZONTAL_RATE (default 150) msg/s sent through it, and writing an equal share of the groups. Each
 * group's members are spread over all the nodes, as a load balancer places them, so every message is sent through one
 * node, forwarded to its group's writer, and delivered on every node: each node's deliveries and writes stay the same
 * while the sends it forwards and the messages it reads from the Redis fan-out (the other writers' commits, each
 * checked for gaps) grow with the cluster.
 *
 * Measured per node over the same window: CPU (every thread, /proc) per delivery, and the cluster's cost per message
 * from another node ((node CPU now − a lone node's) / messages read from the fan-out); and over the same windows, from
 * Redis's INFO commandstats, the members whose presence the push passes read, Redis's CPU per member and per
 * PUBLISH. Target: adding a node raises no other node's CPU per delivery by more than 10%. Medians of
 * BENCH_SCALE_HORIZONTAL_ROUNDS (default 3) windows.
 */
import { signToken } from '../auth/token-verifier.js';
import { recordCosts, machineName } from './capacity-model.js';
import { env } from './env-number.js';
import { fmt, median } from './figures.js';
import type { Member, Step } from './groups-loadgen.js';
import { LoadGenerator, nextOfAll } from './load-generator.js';
import { api, config, type Node, redisCommandStats, startNode, stop } from './scale-cluster.js';

const MAX_NODES = env('BENCH_SCALE_HORIZONTAL_NODES', 3);
const MEMBERS_PER_NODE = env('BENCH_SCALE_HORIZONTAL_MEMBERS', 400);
const RATE_PER_NODE = env('BENCH_SCALE_HORIZONTAL_RATE', 150);
const ROUNDS = env('BENCH_SCALE_HORIZONTAL_ROUNDS', 3);
const GROUP_SIZE = 20;
const WINDOW = { warmupMs: 3000, measureMs: 8000 };
/** Adding a node may raise another node's CPU per delivery by this much at most. */
const TARGET_RISE = 0.1;
const LIMITS = { maxConnections: 5000, maxGroupMembers: 1000, nodeFlags: [] };

interface RateReport {
  offeredPerSec: number;
  deliveredPerSec: number;
  seconds: number;
  windowCpuSeconds: { node: number };
}

/** One node's figures at one cluster size (medians of the rounds). */
interface NodeFigures {
  sentPerSec: number;
  deliveredPerSec: number;
  /** Messages other nodes' writers stored, which this node read from the fan-out. */
  fannedInPerSec: number;
  cores: number;
  usPerDelivery: number;
}

/**
 * Redis's work over a window: the push notifier's presence reads, members looked up (one HGETALL each, inside the
 * script); and its CPU per PUBLISH (fan-out commits, forwarded sends and their answers, live events, relayed marks).
 */
interface RedisWork {
  lookupsPerSec: number;
  /** Redis's CPU per lookup: the presence script's time over the lookups it made. */
  redisUsPerLookup: number;
  redisUsPerPublish: number;
}

/** Redis's work between two INFO commandstats. */
function redisWork(
  before: Awaited<ReturnType<typeof redisCommandStats>>,
  after: Awaited<ReturnType<typeof redisCommandStats>>,
  seconds: number,
): RedisWork {
  const delta = (name: string, key: 'calls' | 'usec') => (after.get(name)?.[key] ?? 0) - (before.get(name)?.[key] ?? 0);
  const lookups = delta('hgetall', 'calls');
  return {
    lookupsPerSec: lookups / seconds,
    redisUsPerLookup: (delta('evalsha', 'usec') + delta('eval', 'usec')) / lookups,
    redisUsPerPublish: delta('publish', 'usec') / delta('publish', 'calls'),
  };
}

/** Messages this node's sequencer has stored since it started (its batch-size histogram's sum). */
async function storedSoFar(node: Node): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.httpPort}/metrics`)).text();
  return Number(/^chorus_sequencer_batch_messages_sum (\S+)$/m.exec(text)?.[1] ?? Number.NaN);
}

/** Runs the load on `nodes` (every one carrying its share) and returns each node's figures. */
async function measure(nodes: Node[]): Promise<{ figures: NodeFigures[]; redis: RedisWork }> {
  const n = nodes.length;
  const members: Member[][] = nodes.map(() => []);
  const groupCount = (n * MEMBERS_PER_NODE) / GROUP_SIZE;
  for (let g = 0; g < groupCount; g++) {
    const users = Array.from({ length: GROUP_SIZE }, (_, j) => `h${n}-${g}-${j}`);
    const home = nodes[g % n]!;
    const { id } = await api(home, users[0]!, 'POST', '/groups', { name: `h${n}-${g}`, members: users.slice(1) });
    // The first send makes its node the group's writer: each node writes an equal share of the groups.
    await api(home, users[0]!, 'POST', `/groups/${id}/messages`, { clientMsgId: `writer-${n}-${g}`, body: 'hello' });
    for (const [j, user] of users.entries()) {
      members[j % n]!.push({
        username: user,
        password: await signToken(config, user, 7200),
        clientId: user,
        topics: [`groups/${id}/messages`],
      });
    }
  }
  const steps: Step[] = [
    { kind: 'connect', concurrency: 50 },
    ...Array.from({ length: ROUNDS + 1 }, (): Step => ({ kind: 'rate', rate: RATE_PER_NODE, ...WINDOW })),
    { kind: 'close' },
  ];
  const generators = nodes.map(
    (node, k) =>
      new LoadGenerator<{ failed?: number } & RateReport>({
        port: node.mqttPort,
        members: members[k]!,
        clean: true,
        bodyBytes: 100,
        steps,
        watch: { node: node.child.pid! },
      }),
  );
  try {
    /** Every generator's next step at once (they run side by side), with their reports. */
    const step = () => nextOfAll(generators);
    const connected = await step();
    if (connected.some((r) => r.failed)) throw new Error(`connects failed: ${JSON.stringify(connected)}`);
    await step(); // warm-up: the first seconds of load compile the hot paths
    const rounds: RateReport[][] = [];
    const storedBefore = await Promise.all(nodes.map(storedSoFar));
    const redisBefore = await redisCommandStats();
    const started = performance.now();
    for (let round = 0; round < ROUNDS; round++) rounds.push(await step());
    const redis = redisWork(redisBefore, await redisCommandStats(), (performance.now() - started) / 1000);
    const stored = (await Promise.all(nodes.map(storedSoFar))).map((count, k) => count - storedBefore[k]!);
    const storedAll = stored.reduce((a, b) => a + b, 0);
    await step(); // close
    const figures = nodes.map((_, k) => {
      const mine = rounds.map((r) => r[k]!);
      const sentPerSec = median(mine.map((r) => r.offeredPerSec));
      const deliveredPerSec = median(mine.map((r) => r.deliveredPerSec));
      const allSent = median(rounds.map((r) => r.reduce((sum, g) => sum + g.offeredPerSec, 0)));
      return {
        sentPerSec,
        deliveredPerSec,
        // A group's writer is one node: the messages of the groups written elsewhere come in through the fan-out.
        fannedInPerSec: allSent * (1 - stored[k]! / storedAll),
        cores: median(mine.map((r) => r.windowCpuSeconds.node / r.seconds)),
        usPerDelivery: median(mine.map((r) => (r.windowCpuSeconds.node * 1e6) / (r.deliveredPerSec * r.seconds))),
      };
    });
    return { figures, redis };
  } finally {
    for (const gen of generators) gen.kill();
  }
}

/** Grows the cluster node by node and prints what each node pays at each size; false when the target is not met. */
export async function measureHorizontal(): Promise<boolean> {
  console.log(
    `\n**Horizontal** (bench/scale-horizontal.ts): every node ${MEMBERS_PER_NODE} connections in groups of ${GROUP_SIZE} spread over all nodes, ${RATE_PER_NODE} msg/s sent through it; medians of ${ROUNDS} windows of ${WINDOW.measureMs / 1000} s`,
  );
  console.log(
    '| nodes | node | sent msg/s | read from the fan-out msg/s | deliveries/s | CPU cores | µs per delivery | vs this node one size smaller |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  const nodes: Node[] = [];
  const sizes: NodeFigures[][] = [];
  const redisBySize: RedisWork[] = [];
  let met = true;
  try {
    for (let n = 1; n <= MAX_NODES; n++) {
      nodes.push(await startNode(`horizontal-${n - 1}`, LIMITS));
      const { figures, redis } = await measure(nodes);
      const smaller = sizes.at(-1);
      sizes.push(figures);
      redisBySize.push(redis);
      for (const [k, f] of figures.entries()) {
        const before = smaller?.[k];
        const rise = before ? f.usPerDelivery / before.usPerDelivery - 1 : Number.NaN;
        if (rise > TARGET_RISE) met = false;
        console.log(
          `| ${n} | ${k} | ${fmt(f.sentPerSec)} | ${fmt(f.fannedInPerSec)} | ${fmt(f.deliveredPerSec)} | ${fmt(f.cores, 3)} | ${fmt(f.usPerDelivery, 1)} | ${before ? `${rise >= 0 ? '+' : ''}${fmt(rise * 100)}%` : '-'} |`,
        );
      }
    }
  } finally {
    await Promise.all(nodes.map((node) => stop(node.child)));
  }
  // The cluster's cost per message from another node: what a node pays more than a lone one, per message it read.
  const lone = sizes[0]![0]!;
  const largest = sizes.at(-1)!;
  const fanInUs = median(largest.map((f) => ((f.cores - lone.cores) * 1e6) / f.fannedInPerSec));
  console.log(
    `\nbeing one of ${largest.length} nodes costs a node ${fmt(fanInUs, 1)} µs of CPU per message another node stored (median over the nodes); target: adding a node raises no node's CPU per delivery by more than ${TARGET_RISE * 100}%: ${met ? 'met' : 'not met'}`,
  );
  // A node answers for its own clients' presence: the members on other nodes are read from Redis, by the push
  // notifier of each group's writer, once per pass.
  const redis = redisBySize.at(-1)!;
  console.log(
    `presence read from Redis (push notifier passes): ${redisBySize.map((p, n) => `${n + 1} node${n ? 's' : ''} ${fmt(p.lookupsPerSec)} members/s`).join(', ')}; Redis ${fmt(redis.redisUsPerLookup, 2)} µs per member at ${largest.length} nodes`,
  );
  // Each figure is recorded when it was measured: a run whose passes read no presence still records the fan-in.
  if (largest.length > 1) {
    const cluster: { fanInUs?: number; redisUsPerPresenceLookup?: number; redisUsPerPublish?: number } = {};
    // A cost at or below zero is the lone node's window measuring high (noise), not a free fan-in: the file keeps the
    // figure it had, rather than a zero that would size clusters too small.
    if (fanInUs > 0) cluster.fanInUs = fanInUs;
    else console.log('the cost per message read from the fan-out was within the noise: not recorded');
    if (Number.isFinite(redis.redisUsPerLookup)) cluster.redisUsPerPresenceLookup = redis.redisUsPerLookup;
    if (Number.isFinite(redis.redisUsPerPublish)) cluster.redisUsPerPublish = redis.redisUsPerPublish;
    recordCosts({ cluster }, machineName());
  }
  return met;
}
