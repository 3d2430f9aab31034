/**
 * What a process has used so far, from /proc: CPU time of every thread (user + system) and resident memory. The
 * benches read it before and after a measured window, for the servers they measure, the load generator and the
 * services (Redis, Cassandra) the servers use.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim() || 100);

/** CPU seconds of every thread of the process so far (utime + stime, /proc/PID/stat fields 14 and 15). */
export const cpuSeconds = (pid: number): number => statCpuSeconds(`/proc/${pid}/stat`);

/**
 * CPU seconds of the process's main thread alone so far: for a Node process its JavaScript, without the threads
 * beside it (a worker such as the SQLite log's, the garbage collector's and the compiler's).
 */
export const mainThreadCpuSeconds = (pid: number): number => statCpuSeconds(`/proc/${pid}/task/${pid}/stat`);

function statCpuSeconds(file: string): number {
  const stat = readFileSync(file, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * Resolves once the process is at rest: under `restCores` of CPU over two windows of `windowMs` in a row, or after
 * `maxMs` whatever it does. A window measured right after a set-up would otherwise carry what the set-up left behind
 * (the collection of its garbage, its writes being flushed).
 */
export async function untilAtRest(pid: number, windowMs = 250, restCores = 0.05, maxMs = 15_000): Promise<void> {
  const deadline = performance.now() + maxMs;
  let quiet = 0;
  let last = cpuSeconds(pid);
  while (quiet < 2 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const now = cpuSeconds(pid);
    quiet = now - last < (restCores * windowMs) / 1000 ? quiet + 1 : 0;
    last = now;
  }
}

/** Resident memory in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) * 1024;
}

const ROOT = join(new URL('.', import.meta.url).pathname, '..', '..');
const STATE = join(ROOT, '.services');

/** Starts scripts/services.sh's single Redis and Cassandra if they do not answer, and waits until they do. */
export function startServices(): void {
  execFileSync('bash', [join(ROOT, 'scripts', 'services.sh'), 'start'], { stdio: 'inherit' });
}

/** The pid of a service scripts/services.sh started (single Redis or single Cassandra), when it runs. */
export function servicePid(service: 'redis' | 'cassandra'): number | undefined {
  const file = join(STATE, service, `${service}.pid`);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return existsSync(`/proc/${pid}`) ? pid : undefined;
}

/** CPU seconds of each named process (or of its main thread alone) from now until the returned function is called. */
export function cpuMeter(
  pids: Record<string, number>,
  read: (pid: number) => number = cpuSeconds,
): () => Record<string, number> {
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, read(pid)]));
  return () => Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, read(pid) - before[name]!]));
}
