/**
 * `npm run chaos`: the long fault-injection run. Starts Redis and Cassandra (scripts/services.sh), three Chorus nodes in
 * a keyspace of its own, ten raw MQTT senders and ten raw subscribers, and takes the cluster through a SIGKILLed node,
 * Redis stopped for 60 s and started empty, Cassandra stopped for 60 s, Cassandra paused for 30 s and a second node
 * SIGKILLed. Prints the table of faults and the invariant checks; exits 1 when an invariant failed.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { formatReport, runChaos } from './chaos.js';
import { Cluster } from './cluster-harness.js';
import { dropKeyspaces } from './services.js';

const SERVICES = new URL('../scripts/services.sh', import.meta.url).pathname;
const DOWN_MS = Number(process.env.CHAOS_DOWN_MS ?? 60_000);

execFileSync('bash', [SERVICES, 'start'], { stdio: 'inherit' });
const keyspace = `chorus_chaos_${randomBytes(4).toString('hex')}`;
const cluster = new Cluster(keyspace);
try {
  await cluster.add('chaos-1', 'all');
  await Promise.all([cluster.add('chaos-2', 'all'), cluster.add('chaos-3', 'all')]);
  const report = await runChaos(cluster, 'chaos-admin', {
    senders: 10,
    subscribers: 10,
    rate: 20,
    quietMs: 15_000,
    recoveryLimitMs: 30_000,
    writerNode: 1, // the node killed first: its groups must be taken over
    faults: [
      { kind: 'kill-node', node: 1, downMs: 10_000 },
      { kind: 'stop-redis', downMs: DOWN_MS },
      { kind: 'stop-cassandra', downMs: DOWN_MS },
      { kind: 'pause-cassandra', downMs: DOWN_MS / 2 },
      { kind: 'kill-node', node: 2, downMs: 10_000 },
    ],
  });
  console.log(formatReport(report));
  const held =
    report.ackedMissing === 0 &&
    report.storedTwice === 0 &&
    report.seqsContiguous &&
    report.streamsOutOfOrder === 0 &&
    report.faults.every((f) => f.crashed.length === 0 && Number.isFinite(f.recoveryMs));
  console.log(held ? 'every invariant held' : 'AN INVARIANT FAILED');
  process.exitCode = held ? 0 : 1;
} finally {
  await cluster.stop();
  await dropKeyspaces(keyspace);
}
