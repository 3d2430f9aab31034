import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { CASSANDRA_PORT, REDIS_PORT, dropKeyspaces } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Names this run's Cassandra keyspaces (chorus_test_<runId>_...), so its teardown drops only its own. */
    runId: string;
  }
}

const services = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'services.sh');

const answers = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

/**
 * Before the whole run: the real Redis and Cassandra the cluster tests use. Whichever does not answer is started (and,
 * the first time, installed) by scripts/services.sh, and stopped again after the run; one that already answers is left
 * as it is. A server that cannot be started fails the run here.
 */
export async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = randomBytes(3).toString('hex');
  project.provide('runId', runId);
  const started: string[] = [];
  for (const [name, port] of [
    ['redis', REDIS_PORT],
    ['cassandra', CASSANDRA_PORT],
  ] as const) {
    if (await answers(port)) continue;
    execFileSync('bash', [services, 'start', name], { stdio: 'inherit' });
    started.push(name);
  }
  return async () => {
    // Only this run's: another run on the same Cassandra keeps its own. It judges no test: all are done by then.
    await dropKeyspaces(`chorus_test_${runId}_`);
    for (const name of started) execFileSync('bash', [services, 'stop', name], { stdio: 'inherit' });
  };
}
