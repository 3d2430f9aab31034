/**
 * `npm run chaos`: the long fault-injection run, on both topologies. Starts what it needs (scripts/services.sh), three
 * Chorus nodes in a keyspace of their own, ten raw MQTT senders and ten raw subscribers, and:
 * - on single dependencies (one Redis, one Cassandra): a SIGKILLed node, Redis stopped for 60 s and started empty,
 *   Cassandra stopped for 60 s, Cassandra paused for 30 s, a second node SIGKILLed;
 * - on replicated ones (three Cassandra nodes at replication factor 3, Redis under Sentinel): one Cassandra node
 *   stopped for 60 s, another paused for 30 s, two stopped for 30 s, the Redis primary killed, the writer SIGKILLed,
 *   and a rolling restart of every node.
 * Prints each run's table of faults and invariant checks; exits 1 when an invariant failed. CHAOS_ONLY=single or
 * replicated runs one of them; CHAOS_DOWN_MS sets the long outages.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { brokenInvariants, type ChaosPlan, formatReport, runChaos } from './chaos.js';
import { Cluster } from './cluster-harness.js';
import { dropKeyspaces, replicatedSettings, ringContactPoints } from './services.js';

const SERVICES = new URL('../scripts/services.sh', import.meta.url).pathname;
const DOWN_MS = Number(process.env.CHAOS_DOWN_MS ?? 60_000);
const ONLY = process.env.CHAOS_ONLY;

const load: Omit<ChaosPlan, 'faults'> = {
  senders: 10,
  subscribers: 10,
  rate: 20,
  quietMs: 15_000,
  recoveryLimitMs: 30_000,
  writerNode: 1, // the node killed first: its groups must be taken over
};

const runs: { name: string; services: string[]; settings: NodeJS.ProcessEnv; plan: ChaosPlan }[] = [
  {
    name: 'single',
    services: ['redis', 'cassandra'],
    settings: {},
    plan: {
      ...load,
      faults: [
        { kind: 'kill-node', node: 1, downMs: 10_000 },
        { kind: 'stop-redis', downMs: DOWN_MS },
        { kind: 'stop-cassandra', downMs: DOWN_MS },
        { kind: 'pause-cassandra', downMs: DOWN_MS / 2 },
        { kind: 'kill-node', node: 2, downMs: 10_000 },
      ],
    },
  },
  {
    name: 'replicated',
    services: ['ring', 'sentinel'],
    settings: replicatedSettings,
    plan: {
      ...load,
      faults: [
        { kind: 'stop-cassandra-nodes', nodes: [1], downMs: DOWN_MS },
        { kind: 'pause-cassandra-node', node: 2, downMs: DOWN_MS / 2 },
        { kind: 'stop-cassandra-nodes', nodes: [0, 2], downMs: DOWN_MS / 2 },
        { kind: 'kill-redis-primary', downMs: 10_000 },
        { kind: 'kill-node', node: 1, downMs: 10_000 },
        { kind: 'rolling-restart', downMs: 1000 },
      ],
    },
  },
];

let held = true;
for (const run of runs.filter((r) => !ONLY || r.name === ONLY)) {
  for (const service of run.services) execFileSync('bash', [SERVICES, 'start', service], { stdio: 'inherit' });
  const keyspace = `chorus_chaos_${randomBytes(4).toString('hex')}`;
  const cluster = new Cluster(keyspace, run.settings);
  try {
    await cluster.addAll(['chaos-1', 'chaos-2', 'chaos-3'], 'all');
    const report = await runChaos(cluster, 'chaos-admin', run.plan);
    console.log(`\n## ${run.name} dependencies\n\n${formatReport(report)}`);
    const broken = brokenInvariants(report);
    console.log(broken.length === 0 ? 'every invariant held' : `AN INVARIANT FAILED: ${broken.join('; ')}`);
    held &&= broken.length === 0;
  } finally {
    await cluster.stop();
    await dropKeyspaces(keyspace, run.name === 'replicated' ? ringContactPoints.split(',') : undefined);
  }
}
process.exitCode = held ? 0 : 1;
