import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { GroupsLoadSpec } from './groups-loadgen.js';

export interface LoadGeneratorOptions {
  /** Node.js flags for the generator's process. */
  nodeArgs?: string[];
  /** The generator's script: the built groups-loadgen.js beside this file unless given (tests run from the source). */
  script?: string;
}

/**
 * The load generator (groups-loadgen.ts) in a process of its own, stepped from the bench. It runs its first step
 * (connect) as it starts and reports each step as one JSON line, then waits: `next()` gives the next report, asking
 * for the step after it the second time on, so that between two calls the caller reads the servers' counters while
 * nothing is sent. The spec goes in a file: ten thousand members' tokens are more than one argument may hold.
 */
export class LoadGenerator<Report = Record<string, unknown>> {
  readonly child: ChildProcess;
  private readonly reports: AsyncIterator<string>;
  private started = false;

  constructor(spec: GroupsLoadSpec, options: LoadGeneratorOptions = {}) {
    const file = join(mkdtempSync(join(tmpdir(), 'chorus-loadgen-')), 'spec.json');
    writeFileSync(file, JSON.stringify(spec));
    const script = options.script ?? new URL('./groups-loadgen.js', import.meta.url).pathname;
    this.child = spawn(process.execPath, [...(options.nodeArgs ?? []), script, file], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.reports = createInterface({ input: this.child.stdout! })[Symbol.asyncIterator]();
  }

  async next(): Promise<Report> {
    if (this.started) this.child.stdin!.write('next\n');
    this.started = true;
    const line = await this.reports.next();
    if (line.done) throw new Error('the load generator exited early');
    return JSON.parse(line.value) as Report;
  }

  /** Lets the generator end after its last step; resolves once it has exited. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.write('next\n');
    await exited;
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

/** Generators that run side by side (one per node): each one's next step at once, their reports in order. */
export const nextOfAll = <Report>(generators: LoadGenerator<Report>[]): Promise<Report[]> =>
  Promise.all(generators.map((generator) => generator.next()));
