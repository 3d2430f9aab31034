import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { signToken } from '../auth/token-verifier.js';
import { type CostSample, fitCosts, type MeasuredCosts, nodeCores } from '../bench/capacity-model.js';
import type { GroupsLoadSpec, Member, Step } from '../bench/groups-loadgen.js';
import { serveProcess, tempDir } from './harness.js';

/**
 * The capacity model (`npm run capacity`) against measurement on this machine: costs fitted on loads of two group
 * shapes (20 groups of 10, 60 groups of 2) at two rates predict the CPU of a third shape (10 groups of 10 and 30 of
 * 3) at two other rates within 20%. CPU is the server process's, every thread, from /proc, over each load's measured
 * window, as `npm run bench` reads it. The three shapes stay connected throughout and their loads take turns, round
 * after round, each figure the median of its rounds: a busy machine's drift then falls on every shape alike.
 */
const LOADGEN = new URL('../dist/bench/groups-loadgen.js', import.meta.url).pathname;
const ROUNDS = 3;
const WINDOW = { warmupMs: 2000, measureMs: 6000 };

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

/** One load generator process, stepped by the test: each `next()` runs its next step and returns its report. */
class Generator {
  private readonly lines: AsyncIterator<string>;
  private readonly child: ChildProcess;
  private started = false;

  constructor(spec: GroupsLoadSpec) {
    const file = join(tempDir(), 'spec.json');
    writeFileSync(file, JSON.stringify(spec));
    this.child = spawn(process.execPath, [LOADGEN, file], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(this.child);
    this.lines = createInterface({ input: this.child.stdout! })[Symbol.asyncIterator]();
  }

  async next(): Promise<StepReport> {
    if (this.started) this.child.stdin!.write('next\n'); // the first step (connect) runs as the process starts
    this.started = true;
    const line = await this.lines.next();
    if (line.done) throw new Error('the load generator exited early');
    return JSON.parse(line.value) as StepReport;
  }
}

const cores = (r: StepReport) => r.windowCpuSeconds.server / r.seconds;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

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
      tens: {
        members: await groups(
          'ten',
          Array.from({ length: 20 }, () => 10),
        ),
        rates: [300, 500],
      },
      twos: {
        members: await groups(
          'two',
          Array.from({ length: 60 }, () => 2),
        ),
        rates: [300, 500],
      },
      mixed: {
        members: await groups('mix', [...Array.from({ length: 10 }, () => 10), ...Array.from({ length: 30 }, () => 3)]),
        rates: [250, 400],
      },
    };
    type Shape = keyof typeof shapes;
    const generators = new Map<Shape, Generator>();
    for (const [shape, { members, rates }] of Object.entries(shapes) as [Shape, (typeof shapes)[Shape]][]) {
      const steps: Step[] = [
        { kind: 'connect', concurrency: 50 },
        ...Array.from({ length: ROUNDS }, () => rates.map((rate): Step => ({ kind: 'rate', rate, ...WINDOW }))).flat(),
        ...(shape === 'tens' ? [{ kind: 'rate', rate: 0, ...WINDOW } as Step] : []), // idle, every shape connected
        { kind: 'close' },
      ];
      const gen = new Generator({
        port: chorus.mqttPort,
        members,
        clean: true,
        bodyBytes: 100,
        steps,
        watch: { server: server.pid! },
      });
      expect((await gen.next()).failed).toBe(0);
      generators.set(shape, gen);
    }

    // The first load warms the server up (its JIT compiles the hot paths in the first seconds) and is not counted.
    const reports = new Map<string, StepReport[]>();
    for (let round = -1; round < ROUNDS; round++) {
      for (const rateIndex of [0, 1]) {
        for (const [shape, gen] of generators) {
          if (round < 0) {
            if (shape === 'tens' && rateIndex === 0) await gen.next(); // the warm-up: tens' first round
            continue;
          }
          if (round === 0 && shape === 'tens' && rateIndex === 0) continue; // consumed as the warm-up above
          const key = `${shape}@${shapes[shape].rates[rateIndex]}`;
          reports.set(key, [...(reports.get(key) ?? []), await gen.next()]);
        }
      }
    }
    const idle = cores(await generators.get('tens')!.next());
    for (const gen of generators.values()) await gen.next(); // close

    const sample = (shape: Shape, rateIndex: number): CostSample => {
      const runs = reports.get(`${shape}@${shapes[shape].rates[rateIndex]}`)!;
      return {
        messagesPerSec: median(runs.map((r) => r.offeredPerSec)),
        deliveriesPerSec: median(runs.map((r) => r.deliveredPerSec)),
        cores: median(runs.map(cores)),
      };
    };
    const fit = fitCosts([sample('tens', 0), sample('tens', 1), sample('twos', 0), sample('twos', 1)], idle);
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
        redisUsPerMessage: 0,
        redisCommandsPerMessage: 0,
        fanInUs: 0,
      },
    };
    console.log(
      `fitted: ${fit.activeCores.toFixed(3)} cores once messages flow, ${fit.storeUs.toFixed(1)} µs per message, ${fit.deliveryUs.toFixed(1)} µs per delivery (idle ${idle.toFixed(3)} cores)`,
    );
    for (const rateIndex of [0, 1]) {
      const measured = sample('mixed', rateIndex);
      const predicted = nodeCores(costs, measured);
      console.log(
        `mixed groups at ${measured.messagesPerSec.toFixed(0)} msg/s, ${(measured.deliveriesPerSec / measured.messagesPerSec).toFixed(1)} deliveries each: predicted ${predicted.toFixed(3)} cores, measured ${measured.cores.toFixed(3)}`,
      );
      expect(Math.abs(predicted - measured.cores) / measured.cores).toBeLessThanOrEqual(0.2);
    }
  }, 300_000);
});
