/**
 * CPU per delivery of servers measured in turns under the same load: the many-groups load of bench/groups.ts (50
 * groups x 20 members, open loop at BENCH_INTERLEAVED_RATE msg/s, default 500, where every server here keeps up) on
 * each target in turn, BENCH_INTERLEAVED_WINDOWS times (default 8). Every server is up, with its members connected,
 * from the first window to the last, and the order rotates each window. What the machine does meanwhile (another
 * tenant, a change of clock) then falls on all of them alike, and each window's ratio compares servers measured
 * seconds apart. bench/groups.ts measures each server in a run of its own, one after the other: on a shared 2-core
 * machine the ratio of two such runs swings by a third, this one's per-window ratios by far less.
 *
 * Targets: bare Aedes and Chorus (SQLite). BENCH_INTERLEAVED_BASELINE=<another build's server/cli.js> adds that
 * build of Chorus as a third, to measure a change against the code before it (build it beside, e.g. a copy of dist/
 * made before the change).
 *
 * Reports, per target, the medians over windows of the server's CPU per delivery (process, all threads; and its main
 * thread) and of the per-window ratios against bare Aedes.
 */
import { env } from './env-number.js';
import { fmt, median } from './figures.js';
import type { GroupsLoadSpec, Step } from './groups-loadgen.js';
import { LoadGenerator } from './load-generator.js';
import { untilAtRest } from './process-usage.js';
import { bareAedes, chorusTarget, type Server, type Target } from './targets.js';

const RATE = env('BENCH_INTERLEAVED_RATE', 500);
const WINDOWS = env('BENCH_INTERLEAVED_WINDOWS', 8);
const BASELINE = process.env.BENCH_INTERLEAVED_BASELINE;
const SIZES = Array.from({ length: 50 }, () => 20);

interface RateReport {
  delivered: number;
  offeredPerSec: number;
  deliveredPerSec: number;
  p50Ms: number;
  p99Ms: number;
  windowCpuSeconds: { server: number; generator: number };
  windowMainThreadCpuSeconds: { server: number };
}

interface Running {
  target: Target;
  generator: LoadGenerator<RateReport>;
  perDelivery: number[];
  mainPerDelivery: number[];
}

const targets = [bareAedes, chorusTarget(), ...(BASELINE ? [chorusTarget(BASELINE, 'Chorus (baseline build)')] : [])];
// One warm-up window each before the measured ones: the first load a process sees compiles its code.
const steps: Step[] = [
  { kind: 'connect', concurrency: 100 },
  ...Array.from({ length: WINDOWS + 1 }, (): Step => ({ kind: 'rate', rate: RATE, warmupMs: 2000, measureMs: 5000 })),
];

const servers: Server[] = [];
const running: Running[] = [];
try {
  for (const target of targets) {
    const server = await target.start();
    servers.push(server);
    const spec: GroupsLoadSpec = {
      port: server.port,
      members: await server.members(SIZES, false),
      clean: true,
      bodyBytes: 100,
      steps,
      watch: { server: server.child.pid! },
    };
    await untilAtRest(server.child.pid!);
    const generator = new LoadGenerator<RateReport>(spec);
    running.push({ target, generator, perDelivery: [], mainPerDelivery: [] });
    await generator.next(); // the connects
  }
  for (const r of running) await r.generator.next();
  for (let window = 0; window < WINDOWS; window++) {
    const order = running.map((_, i) => running[(i + window) % running.length]!);
    for (const r of order) {
      const report = await r.generator.next();
      r.perDelivery.push((report.windowCpuSeconds.server * 1e6) / report.delivered);
      r.mainPerDelivery.push((report.windowMainThreadCpuSeconds.server * 1e6) / report.delivered);
      console.log(
        `window ${window + 1}, ${r.target.name}: ${fmt(r.perDelivery.at(-1)!, 1)} µs per delivery (main thread ${fmt(r.mainPerDelivery.at(-1)!, 1)}); ${fmt(report.offeredPerSec)} msg/s offered, ${fmt(report.deliveredPerSec)} deliveries/s, p50 / p99 ${fmt(report.p50Ms, 1)} / ${fmt(report.p99Ms, 1)} ms`,
      );
    }
  }
} finally {
  for (const r of running) r.generator.kill();
  for (const server of servers) server.child.kill('SIGTERM');
}

const base = running[0]!;
const ratios = (r: Running, pick: (r: Running) => number[]) => pick(r).map((value, i) => value / pick(base)[i]!);
const spread = (values: number[]) => `${fmt(Math.min(...values), 2)}-${fmt(Math.max(...values), 2)}`;
console.log(
  `\n**CPU per delivery, in turns** (50 groups x 20 at ${RATE} msg/s, ${WINDOWS} windows of 5 s each, medians; ratios per window against bare Aedes, their median and range)`,
);
console.log('| target | µs per delivery | main thread µs | vs bare Aedes | range | main thread vs bare Aedes |');
console.log('|---|---|---|---|---|---|');
for (const r of running) {
  const all = ratios(r, (x) => x.perDelivery);
  const main = ratios(r, (x) => x.mainPerDelivery);
  console.log(
    `| ${r.target.name} | ${fmt(median(r.perDelivery), 1)} | ${fmt(median(r.mainPerDelivery), 1)} | ${fmt(median(all), 2)}x | ${spread(all)} | ${fmt(median(main), 2)}x |`,
  );
}
