import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { signToken } from '../auth/token-verifier.js';
import { type CostSample, fitCosts, type MeasuredCosts, nodeCores } from '../bench/capacity-model.js';
import { median } from '../bench/figures.js';
import type { Member, Step } from '../bench/groups-loadgen.js';
import { LoadGenerator } from '../bench/load-generator.js';
import { serveProcess } from './harness.js';

/**
 * The capacity model (`npm run capacity`) against measurement on this machine: costs fitted on loads of two group
 * shapes (20 groups of 10, 40 groups of 3) predict the CPU of a third shape (10 groups of 10 and 30 of 3) within 20%,
 * at each of two rates. CPU is the server process's, every thread, from /proc, over each load's measured window, as
 * `npm run bench` reads it. The three shapes stay connected throughout and their loads take turns, round after round,
 * so that a busy machine's drift falls on what is fitted and what is predicted alike; one fit from every round's two
 * shapes predicts each round's mixed loads, and the check is the median of the rounds' errors. Every shape runs at the
 * same two rates, since a message's own cost falls as the rate grows (the sequencer's group commit carries more sends
 * per commit), which a linear fit follows only at the rates it was fitted at.
 */
const LOADGEN = new URL('../dist/bench/groups-loadgen.js', import.meta.url).pathname;
const ROUNDS = 7;
const RATES = [250, 450];
const WINDOW = { warmupMs: 2000, measureMs: 4000 };

interface StepReport {
  step: string;
  failed?: number;
  offeredPerSec: number;
  deliveredPerSec: number;
  seconds: number;
  windowCpuSeconds: { server: number };
}

const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

const cores = (r: StepReport) => r.windowCpuSeconds.server / r.seconds;

describe('capacity model', () => {
  it('predicts the CPU of a third group shape within 20% from costs fitted on two', async () => {
    const chorus = await serveProcess(children);
    const server = await chorus.start();

    /** Groups of the given sizes, each member with a token of its own. */
    const groups = async (name: string, sizes: number[]): Promise<Member[]> => {
      const members: Member[] = [];
      for (const [g, size] of sizes.entries()) {
        const users = Array.from({ length: size }, (_, i) => `${name}${g}-${i}`);
        const created = await chorus.api('POST', '/v1/groups', { name: `${name}${g}`, members: users });
        for (const user of users) {
          members.push({
            username: user,
            password: await signToken(chorus.config, user, 600),
            clientId: user,
            topics: [`groups/${created.id}/messages`],
          });
        }
      }
      return members;
    };
    const shapes = {
      tens: await groups(
        'ten',
        Array.from({ length: 20 }, () => 10),
      ),
      threes: await groups(
        'three',
        Array.from({ length: 40 }, () => 3),
      ),
      mixed: await groups('mix', [...Array.from({ length: 10 }, () => 10), ...Array.from({ length: 30 }, () => 3)]),
    };
    type Shape = keyof typeof shapes;
    const loads = RATES.flatMap((rate) => (Object.keys(shapes) as Shape[]).map((shape) => ({ shape, rate })));
    // Each round starts one load further on, so that what a load leaves behind (garbage to collect, marks to flush)
    // falls on every other load in turn rather than always on the same one.
    const rounds = Array.from({ length: ROUNDS }, (_, r) => loads.map((_, i) => loads[(i + r) % loads.length]!));
    const step: Step = { kind: 'rate', rate: 0, ...WINDOW };
    const generators = new Map<Shape, LoadGenerator<StepReport>>();
    for (const [shape, members] of Object.entries(shapes) as [Shape, Member[]][]) {
      const steps: Step[] = [
        { kind: 'connect', concurrency: 50 },
        // the first load warms the server up (its JIT compiles the hot paths in the first seconds), not counted
        ...(shape === 'tens' ? [{ ...step, rate: RATES[1]! }] : []),
        ...rounds.flatMap((round) =>
          round.filter((load) => load.shape === shape).map(({ rate }) => ({ ...step, rate })),
        ),
        ...(shape === 'tens' ? [step] : []), // idle, every shape connected
        { kind: 'close' },
      ];
      const gen = new LoadGenerator<StepReport>(
        { port: chorus.mqttPort, members, clean: true, bodyBytes: 100, steps, watch: { server: server.pid! } },
        { script: LOADGEN },
      );
      children.push(gen.child);
      expect((await gen.next()).failed).toBe(0);
      generators.set(shape, gen);
    }

    await generators.get('tens')!.next();
    const measured: Map<string, CostSample>[] = [];
    for (const round of rounds) {
      const samples = new Map<string, CostSample>();
      for (const { shape, rate } of round) {
        const report = await generators.get(shape)!.next();
        samples.set(`${shape}@${rate}`, {
          messagesPerSec: report.offeredPerSec,
          deliveriesPerSec: report.deliveredPerSec,
          cores: cores(report),
        });
      }
      measured.push(samples);
    }
    const idle = cores(await generators.get('tens')!.next());
    for (const gen of generators.values()) await gen.next(); // close

    // One fit from every round's two shapes: fitted round by round, four loads gave three costs little to stand on, and
    // one slow window on a busy machine swung a round's cost per message from 0 to 240 µs.
    const fit = fitCosts(
      measured.flatMap((samples) =>
        loads.filter(({ shape }) => shape !== 'mixed').map(({ shape, rate }) => samples.get(`${shape}@${rate}`)!),
      ),
      idle,
    );
    const costs: MeasuredCosts = {
      measuredAt: new Date().toISOString(),
      machine: 'this test',
      node: { idleCores: idle, ...fit, bigGroupDeliveryUs: 0, connectUs: 0, connectionKb: 0, historyPageUs: 0 },
      cluster: {
        storeRatio: 1,
        historyPageUs: 0,
        cassandraUsPerMessage: 0,
        cassandraWritesPerMessage: 0,
        cassandraReadsPerMessage: 0,
        cassandraReadsPerPage: 3,
        redisUsPerMessage: 0,
        redisCommandsPerMessage: 0,
        redisUsPerPresenceLookup: 0,
        redisUsPerPublish: 0,
        fanInUs: 0,
      },
    };
    console.log(
      `fitted ${fit.activeCores.toFixed(3)} cores once messages flow, ${fit.storeUs.toFixed(1)} µs per message, ${fit.deliveryUs.toFixed(1)} µs per delivery (idle ${idle.toFixed(3)})`,
    );
    const errors = new Map<number, number[]>(RATES.map((rate) => [rate, []]));
    for (const [r, samples] of measured.entries()) {
      const line = [...samples].map(([key, s]) => `${key} ${s.cores.toFixed(3)}`).join(', ');
      const predictions = RATES.map((rate) => {
        const measured = samples.get(`mixed@${rate}`)!;
        const predicted = nodeCores(costs, measured);
        errors.get(rate)!.push((predicted - measured.cores) / measured.cores);
        return `mixed@${rate} predicted ${predicted.toFixed(3)}`;
      });
      console.log(`round ${r + 1}: cores ${line}; ${predictions.join(', ')}`);
    }
    for (const [rate, rateErrors] of errors) {
      const error = median(rateErrors);
      console.log(`mixed groups at ${rate} msg/s: median error ${(error * 100).toFixed(1)}%`);
      expect(Math.abs(error)).toBeLessThanOrEqual(0.2);
    }
  }, 420_000);
});
