/**
 * The scale part of `npm run bench`: the shapes of load that matter with many groups and connections, each run
 * against Mosquitto (when installed), bare Aedes and Chorus (SQLite log), one after another in each round, so that
 * machine noise hits all alike. Medians over BENCH_GROUPS_ROUNDS rounds (default 3), ratios against bare Aedes.
 *
 * 1. Many groups: 50 groups x 20 members (1,000 connections), open-loop publishing at rising rates; p50 / p99 of
 *    delivery, and server CPU per delivery. The highest rate with p99 < 200 ms and every delivery made.
 * 2. Connections: BENCH_CONNECTIONS (default 10,000) members of groups of 20 connect and subscribe, 200 at a time:
 *    the rate, and server memory per idle connection.
 * 3. One big group: BENCH_BIG_GROUP (default 10,000) members of one group connect and subscribe; then one message to
 *    all of them: the time until the last has it.
 * 4. Reconnect storm: 2,000 persistent sessions (groups of 20) go away, 10 messages are sent to each group, and all
 *    reconnect at once: refused or reset connections, and the time until every member has every message.
 * Each server runs in its own process, the load generator (bench/groups-loadgen.ts) in another. BENCH_TARGETS and
 * BENCH_SCENARIOS (comma-separated names or prefixes) run a part; BENCH_PROFILE_DIR writes CPU profiles of the Node servers (bare Aedes, Chorus) there;
 * BENCH_HEAP=1 adds their live heap per idle connection (heap snapshots before and after the connect step).
 */
import mqtt from 'mqtt';
import type { GroupsLoadSpec, Member, Step } from './groups-loadgen.js';
import { env } from './env-number.js';
import { fmt, median } from './figures.js';
import { LoadGenerator } from './load-generator.js';
import { bareAedes, chorusTarget, HEAP, MOSQUITTO, mosquitto, type Target } from './targets.js';
import { cpuSeconds, rssBytes, untilAtRest } from './process-usage.js';
import { COSTS_FILE, fitCosts, machineName, type MeasuredCosts, recordCosts } from './capacity-model.js';

const ROUNDS = env('BENCH_GROUPS_ROUNDS', 3);
const CONNECTIONS = env('BENCH_CONNECTIONS', 10_000);
const BIG_GROUP = env('BENCH_BIG_GROUP', 10_000);
const RATES = (process.env.BENCH_RATES ?? '500,1000,1500,2000,2500').split(',').map(Number);
const P99_LIMIT_MS = 200;
/** The rates at which store and delivery costs are fitted, on both group sizes: well below saturation here. */
const FIT_RATES = RATES.filter((rate) => rate <= 1000);

/** The server process's CPU seconds so far and its resident memory in bytes. */
const usage = (pid: number) => ({ cpuSeconds: cpuSeconds(pid), rssBytes: rssBytes(pid) });

type StepResult = Record<string, number | string | null | Record<string, number>> & {
  step: string;
  /** Rate steps: CPU seconds of the server and the generator over the measured window. */
  windowCpuSeconds?: { server: number; generator: number };
  /** The same for the server's main thread alone. */
  windowMainThreadCpuSeconds?: { server: number };
  cpuSeconds: number;
  rssBytes: number;
  rssBeforeBytes: number;
  liveHeapBytes: number | null;
};

/** Connects as `member`, subscribes to its topics and disconnects. */
async function connectOnce(port: number, member: Member): Promise<void> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    username: member.username,
    password: member.password,
    clientId: member.clientId,
    clean: true,
    reconnectPeriod: 0,
  });
  await client.subscribeAsync(member.topics, { qos: 1 });
  await client.endAsync();
}

/** Runs the load generator's steps against a fresh server; each result carries the server's CPU and memory. */
async function runSteps(target: Target, sizes: number[], persistent: boolean, steps: Step[]): Promise<StepResult[]> {
  const server = await target.start();
  try {
    const members = await server.members(sizes, persistent);
    const spec: GroupsLoadSpec = {
      port: server.port,
      members,
      clean: !persistent,
      bodyBytes: 100,
      steps,
      watch: { server: server.child.pid! },
    };
    const pid = server.child.pid!;
    // One connection in and out before the live heap's baseline: what the first connection sets up once for all
    // (mqtt-packet's cache of 65,536 packet identifiers, 6.3 MB, at its first write; compiled code) is no connection's.
    if (server.heap) await connectOnce(server.port, members[0]!);
    await untilAtRest(pid); // the first step (the connects) measured without the members' set-up behind it
    const heapBefore = server.heap ? await server.heap.liveHeapBytes(server.child) : Number.NaN;
    let before = usage(pid);
    const gen = new LoadGenerator<Omit<StepResult, 'cpuSeconds' | 'rssBytes' | 'rssBeforeBytes' | 'liveHeapBytes'>>(
      spec,
    );
    const results: StepResult[] = [];
    for (let i = 0; i < steps.length; i++) {
      const step = await gen.next();
      const after = usage(pid);
      const liveHeapBytes =
        server.heap && step.step === 'connect' ? (await server.heap.liveHeapBytes(server.child)) - heapBefore : null;
      results.push({
        ...step,
        step: String(step.step),
        cpuSeconds: after.cpuSeconds - before.cpuSeconds,
        rssBytes: after.rssBytes,
        rssBeforeBytes: before.rssBytes,
        liveHeapBytes,
      });
      before = usage(pid);
    }
    await gen.close();
    return results;
  } finally {
    server.child.kill('SIGTERM');
    await new Promise((resolve) => server.child.once('exit', resolve));
  }
}

const hasMosquitto = MOSQUITTO !== '';
const onlyTargets = process.env.BENCH_TARGETS?.split(',');
const chorus = chorusTarget();
const targets = (hasMosquitto ? [mosquitto, bareAedes, chorus] : [bareAedes, chorus]).filter(
  (t) => !onlyTargets || onlyTargets.some((name) => t.name.startsWith(name)),
);
if (!hasMosquitto) console.log('Mosquitto is not installed (scripts/install.sh installs it): left out');

type Scenario = { title: string; sizes: number[]; persistent: boolean; steps: Step[] };
const scenarios: Scenario[] = [
  {
    title: 'many groups',
    sizes: Array.from({ length: 50 }, () => 20),
    persistent: false,
    steps: [
      { kind: 'connect', concurrency: 100 },
      { kind: 'rate', rate: 0, warmupMs: 1000, measureMs: 4000 }, // idle: the node's own cost with no traffic
      ...RATES.map((rate): Step => ({ kind: 'rate', rate, warmupMs: 2000, measureMs: 5000 })),
    ],
  },
  {
    // Groups of another size, so that a message's own cost (sequencing, storing) and a delivery's can be told apart.
    title: 'small groups',
    sizes: Array.from({ length: 250 }, () => 2),
    persistent: false,
    steps: [
      { kind: 'connect', concurrency: 100 },
      ...FIT_RATES.map((rate): Step => ({ kind: 'rate', rate, warmupMs: 2000, measureMs: 5000 })),
    ],
  },
  {
    title: 'connections',
    sizes: Array.from({ length: Math.ceil(CONNECTIONS / 20) }, () => 20),
    persistent: false,
    steps: [{ kind: 'connect', concurrency: 200 }],
  },
  {
    title: 'big group',
    sizes: [BIG_GROUP],
    persistent: false,
    steps: [
      { kind: 'connect', concurrency: 200 },
      { kind: 'fanout', from: 0, topicIndex: 0, delayMs: 0, timeoutMs: 20_000 },
    ],
  },
  {
    title: 'reconnect storm',
    sizes: Array.from({ length: 100 }, () => 20),
    persistent: true,
    steps: [
      { kind: 'connect', concurrency: 200 },
      { kind: 'storm', perGroup: 10, timeoutMs: 60_000 },
    ],
  },
];

const onlyScenarios = process.env.BENCH_SCENARIOS?.split(',');
const results = new Map<string, StepResult[][]>(); // `${scenario}|${target}` -> per round
for (let round = 1; round <= ROUNDS; round++) {
  for (const scenario of scenarios.filter(
    (s) => !onlyScenarios || onlyScenarios.some((name) => s.title.startsWith(name)),
  )) {
    for (const target of targets) {
      const steps = await runSteps(target, scenario.sizes, scenario.persistent, scenario.steps);
      const key = `${scenario.title}|${target.name}`;
      results.set(key, [...(results.get(key) ?? []), steps]);
      console.log(`round ${round} ${scenario.title}, ${target.name}: ${steps.map((s) => JSON.stringify(s)).join(' ')}`);
    }
  }
}

/** The median over rounds of one number of one step. */
const stat = (scenario: string, target: Target, pick: (steps: StepResult[]) => number) =>
  median((results.get(`${scenario}|${target.name}`) ?? []).map(pick));
const ratio = (value: number, base: number) =>
  Number.isFinite(value) && Number.isFinite(base) && base !== 0 ? `${(value / base).toFixed(2)}x` : '-';

console.log(`\nmedians of ${ROUNDS} rounds; ratios against bare Aedes\n`);
console.log(
  '**Many groups** (50 groups x 20 members, open loop): p99 / p50 ms of delivery at each rate asked (rate offered); server CPU µs per delivery',
);
/** Where CPU per delivery is compared: the second rate asked (1,000 msg/s by default), or the only one. */
const CPU_RATE = RATES[Math.min(1, RATES.length - 1)]!;
console.log(
  `| target | ${RATES.map((r) => `${r} msg/s`).join(' | ')} | highest rate with p99 < ${P99_LIMIT_MS} ms | vs bare Aedes | CPU µs per delivery at ${CPU_RATE} msg/s |`,
);
console.log(`|---|${RATES.map(() => '---|').join('')}---|---|---|`);
const rateStep = (steps: StepResult[], rate: number) => steps.find((s) => s.step === 'rate' && s.rate === rate)!;
/** A rate is met when the generator offered it (it saturates near 1,300 msg/s here), all was delivered, and p99 held. */
const met = (s: StepResult) =>
  Number(s.offeredPerSec) >= 0.95 * Number(s.rate) && Number(s.deliveredShare) > 0.99 && Number(s.p99Ms) < P99_LIMIT_MS;
const highest = (steps: StepResult[]) => Math.max(0, ...RATES.filter((r) => met(rateStep(steps, r))));
/** Server CPU µs per delivery over the measured window. */
const cpuPerDelivery = (s: StepResult) => perDelivery(s, s.windowCpuSeconds!.server);
/** CPU µs per delivery of a rate step, for CPU seconds read over its measured window. */
const perDelivery = (s: StepResult, cpuSeconds: number) => (cpuSeconds * 1e6) / (Number(s.delivered) + 1e-9);
const highestAedes = stat('many groups', bareAedes, highest);
for (const t of targets) {
  const cells = RATES.map(
    (r) =>
      `${fmt(
        stat('many groups', t, (s) => Number(rateStep(s, r).p99Ms)),
        1,
      )} / ${fmt(
        stat('many groups', t, (s) => Number(rateStep(s, r).p50Ms)),
        1,
      )} (${fmt(stat('many groups', t, (s) => Number(rateStep(s, r).offeredPerSec)))})`,
  );
  const best = stat('many groups', t, highest);
  console.log(
    `| ${t.name} | ${cells.join(' | ')} | ${fmt(best)} | ${ratio(best, highestAedes)} | ${fmt(
      stat('many groups', t, (s) => cpuPerDelivery(rateStep(s, CPU_RATE))),
      1,
    )} |`,
  );
}

console.log(
  `\n**Connections** (${CONNECTIONS} members of groups of 20, and ${BIG_GROUP} members of one group; connect + subscribe, 200 at a time)`,
);
console.log(
  `| target | connections/s | vs bare Aedes | failed | memory per idle connection KB | live heap per idle connection KB${HEAP ? '' : ' (BENCH_HEAP=1)'} | one big group: connections/s | vs bare Aedes | one message to all: last delivery ms |`,
);
console.log('|---|---|---|---|---|---|---|---|---|');
const connectStep = (steps: StepResult[]) => steps.find((s) => s.step === 'connect')!;
const perConnKb = (steps: StepResult[]) => {
  const s = connectStep(steps);
  return (s.rssBytes - s.rssBeforeBytes) / 1024 / Number(s.connections);
};
const liveHeapPerConnKb = (steps: StepResult[]) => {
  const s = connectStep(steps);
  return s.liveHeapBytes === null ? Number.NaN : Number(s.liveHeapBytes) / 1024 / Number(s.connections);
};
const connRate = (scenario: string, t: Target) => stat(scenario, t, (s) => Number(connectStep(s).perSec));
for (const t of targets) {
  const fanout = (steps: StepResult[]) => Number(steps.find((s) => s.step === 'fanout')!.lastDeliveryMs);
  console.log(
    `| ${t.name} | ${fmt(connRate('connections', t))} | ${ratio(connRate('connections', t), connRate('connections', bareAedes))} | ${fmt(stat('connections', t, (s) => Number(connectStep(s).failed)))} | ${fmt(stat('connections', t, perConnKb), 1)} | ${fmt(stat('connections', t, liveHeapPerConnKb), 1)} | ${fmt(connRate('big group', t))} | ${ratio(connRate('big group', t), connRate('big group', bareAedes))} | ${fmt(stat('big group', t, fanout))} |`,
  );
}

console.log(
  '\n**Reconnect storm** (2,000 persistent sessions, groups of 20, 10 messages each while away, all back at once)',
);
console.log('| target | refused or reset | all connected ms | all caught up ms | vs bare Aedes |');
console.log('|---|---|---|---|---|');
const stormStep = (steps: StepResult[]) => steps.find((s) => s.step === 'storm')!;
const caughtUp = (t: Target) => stat('reconnect storm', t, (s) => Number(stormStep(s).caughtUpMs ?? Number.NaN));
for (const t of targets) {
  console.log(
    `| ${t.name} | ${fmt(stat('reconnect storm', t, (s) => Number(stormStep(s).failed)))} | ${fmt(stat('reconnect storm', t, (s) => Number(stormStep(s).connectedMs)))} | ${fmt(caughtUp(t))} | ${ratio(caughtUp(t), caughtUp(bareAedes))} |`,
  );
}

// ---- CPU per operation, and the costs the capacity model reads --------------------------------------------------

const idleCores = (steps: StepResult[]) => {
  const idle = steps.find((s) => s.step === 'rate' && s.rate === 0)!;
  return idle.windowCpuSeconds!.server / Number(idle.seconds);
};
const bigGroupUs = (steps: StepResult[]) => {
  const s = steps.find((step) => step.step === 'fanout')!;
  return (s.cpuSeconds * 1e6) / Number(s.receivers);
};
const connectUs = (steps: StepResult[]) => {
  const s = connectStep(steps);
  return (s.cpuSeconds * 1e6) / (Number(s.connections) - Number(s.failed));
};
const generatorPerDelivery = (steps: StepResult[]) => {
  const s = rateStep(steps, CPU_RATE);
  return perDelivery(s, s.windowCpuSeconds!.generator);
};
/** One round's store and delivery costs, fitted on both group sizes at FIT_RATES. */
const fitted = (round: number) => {
  const samples = ['many groups', 'small groups'].flatMap((scenario) =>
    FIT_RATES.map((rate) => {
      const s = rateStep(results.get(`${scenario}|${chorus.name}`)![round]!, rate);
      return {
        messagesPerSec: Number(s.offeredPerSec),
        deliveriesPerSec: Number(s.deliveredPerSec),
        cores: s.windowCpuSeconds!.server / Number(s.seconds),
      };
    }),
  );
  return fitCosts(samples, idleCores(results.get(`many groups|${chorus.name}`)![round]!));
};

console.log('\n**CPU per operation** (server process, every thread, from /proc; medians; ratios against bare Aedes)');
console.log(`| operation | ${targets.map((t) => t.name).join(' | ')} | Chorus vs bare Aedes |`);
console.log(`|---|${targets.map(() => '---|').join('')}---|`);
const row = (label: string, scenario: string, pick: (steps: StepResult[]) => number, digits = 1) => {
  if (!results.has(`${scenario}|${chorus.name}`)) return;
  const values = targets.map((t) => stat(scenario, t, pick));
  const chorusValue = stat(scenario, chorus, pick);
  console.log(
    `| ${label} | ${values.map((v) => fmt(v, digits)).join(' | ')} | ${ratio(chorusValue, stat(scenario, bareAedes, pick))} |`,
  );
};
row(`per delivery, 50 groups x 20 at ${CPU_RATE} msg/s (µs)`, 'many groups', (s) =>
  cpuPerDelivery(rateStep(s, CPU_RATE)),
);
// the rest: a Node server's worker (the SQLite log's), GC and compiler threads
row(`of which the server's main thread (µs)`, 'many groups', (steps) => {
  const s = rateStep(steps, CPU_RATE);
  return perDelivery(s, s.windowMainThreadCpuSeconds!.server);
});
row(`load generator per delivery, same run (µs)`, 'many groups', generatorPerDelivery);
row('idle, 1,000 connections (share of a core)', 'many groups', idleCores, 4);
row(`per connect + subscribe, ${CONNECTIONS} members of groups of 20 (µs)`, 'connections', connectUs, 0);
row(`per delivery, one message to ${BIG_GROUP} members (µs)`, 'big group', bigGroupUs);

// Three costs are fitted: two shapes at one rate cannot tell them apart, and a run at other rates (BENCH_RATES) must not
// overwrite the costs a full run measured.
if (FIT_RATES.length < 2) console.log(`\nno costs fitted or written: that needs two rates of at most 1,000 msg/s`);
else if (results.has(`small groups|${chorus.name}`) && results.has(`many groups|${chorus.name}`)) {
  const fits = Array.from({ length: ROUNDS }, (_, round) => fitted(round));
  const storeUs = median(fits.map((f) => f.storeUs));
  const activeCores = median(fits.map((f) => f.activeCores));
  const deliveryUs = median(fits.map((f) => f.deliveryUs));
  console.log(
    `\nChorus, fitted on groups of 20 and of 2 at ${FIT_RATES.join(' and ')} msg/s: ${fmt(activeCores, 3)} of a core once messages flow, ${fmt(storeUs, 1)} µs per message stored, ${fmt(deliveryUs, 1)} µs per delivery`,
  );
  const node: Partial<MeasuredCosts['node']> = {
    activeCores,
    storeUs,
    deliveryUs,
    idleCores: stat('many groups', chorus, idleCores),
  };
  if (results.has(`connections|${chorus.name}`)) {
    node.connectUs = stat('connections', chorus, connectUs);
    node.connectionKb = stat('connections', chorus, perConnKb);
  }
  if (results.has(`big group|${chorus.name}`)) node.bigGroupDeliveryUs = stat('big group', chorus, bigGroupUs);
  recordCosts({ node }, machineName());
  console.log(`costs written to ${COSTS_FILE} (npm run capacity reads them)`);
}
