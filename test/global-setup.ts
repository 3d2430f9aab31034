import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import {
  CASSANDRA_PORT,
  REDIS_PORT,
  RING_ADDRESSES,
  SENTINEL_PORTS,
  SENTINEL_REDIS_PORTS,
  dropKeyspaces,
  ringContactPoints,
} from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Names this run's Cassandra keyspaces (chorus_test_<runId>_...), so its teardown drops only its own. */
    runId: string;
  }
}

const services = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'services.sh');

const answers = (port: number, host = '127.0.0.1'): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

/** Each service scripts/services.sh starts, and whether all of it answers. */
const SERVICES: [string, () => Promise<boolean>][] = [
  ['redis', () => answers(REDIS_PORT)],
  ['cassandra', () => answers(CASSANDRA_PORT)],
  // The replicated forms, for the high-availability tests: three Cassandra nodes, and Redis with Sentinel.
  ['ring', async () => (await Promise.all(RING_ADDRESSES.map((a) => answers(CASSANDRA_PORT, a)))).every(Boolean)],
  [
    'sentinel',
    async () => (await Promise.all([...SENTINEL_REDIS_PORTS, ...SENTINEL_PORTS].map((p) => answers(p)))).every(Boolean),
  ],
];

/**
 * Before the whole run: the real Redis and Cassandra the cluster tests use, single and replicated. Whichever does not
 * answer is started (and, the first time, installed) by scripts/services.sh, and stopped again after the run; one that
 * already answers is left as it is. A server that cannot be started fails the run here.
 */
export async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = randomBytes(3).toString('hex');
  project.provide('runId', runId);
  const started: string[] = [];
  const stopStarted = () => {
    for (const name of started) execFileSync('bash', [services, 'stop', name], { stdio: 'inherit' });
  };
  for (const [name, up] of SERVICES) {
    if (await up()) continue;
    started.push(name); // a start that fails half way leaves processes to stop too
    try {
      execFileSync('bash', [services, 'start', name], { stdio: 'inherit' });
    } catch (err) {
      stopStarted();
      throw err;
    }
  }
  return async () => {
    // Only this run's: another run on the same Cassandra keeps its own. It judges no test: all are done by then.
    await dropKeyspaces(`chorus_test_${runId}_`);
    await dropKeyspaces(`chorus_test_${runId}_`, ringContactPoints.split(','));
    stopStarted();
  };
}
