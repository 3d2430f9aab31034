/**
 * `npm run capacity -- --users 100000 --groups 10000 --msgs-per-s 5000 --avg-members 20 --big-group 100000`: what a
 * load needs, from the costs `npm run bench` measured (bench/costs.json, or --costs FILE). Prints the cores of Chorus
 * nodes, Redis commands/s and Cassandra reads and writes/s, each tier's cores, and the assumptions.
 */
import { parseArgs } from 'node:util';
import { ConfigSchema } from '../config/config.js';
import { COSTS_FILE, type FleetLoad, type FleetSize, readCosts, sizeFleet } from './capacity-model.js';

/** Chorus's own defaults for the settings the model reads. */
const defaults = {
  deliveredFlushMs: String(ConfigSchema.properties.deliveredFlushMs.default),
  liveEventsMaxGroupMembers: String(ConfigSchema.properties.liveEventsMaxGroupMembers.default),
};

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '100000' },
    groups: { type: 'string', default: '10000' },
    'msgs-per-s': { type: 'string', default: '5000' },
    'avg-members': { type: 'string', default: '20' },
    'big-group': { type: 'string', default: '100000' },
    'big-group-msgs-per-s': { type: 'string', default: '1' },
    'online-share': { type: 'string', default: '1' },
    'reconnect-every-s': { type: 'string', default: '600' },
    'pages-per-connect': { type: 'string', default: '1' },
    'delivered-flush-ms': { type: 'string', default: defaults.deliveredFlushMs },
    'live-events-max-members': { type: 'string', default: defaults.liveEventsMaxGroupMembers },
    headroom: { type: 'string', default: '0.5' },
    'cores-per-node': { type: 'string', default: '8' },
    costs: { type: 'string', default: COSTS_FILE },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log(`npm run capacity -- [flags]
  --users N                 concurrent connected users, one connection each (100000)
  --groups N                groups with traffic (10000)
  --msgs-per-s N            messages per second over those groups (5000)
  --avg-members N           members per group (20)
  --big-group N             members of one big group, 0 for none (100000)
  --big-group-msgs-per-s N  messages per second to it (1)
  --online-share F          share of members online when a message arrives (1)
  --reconnect-every-s N     each user reconnects this often on average, and reads history pages then (600)
  --pages-per-connect N     history pages read per reconnect (1)
  --delivered-flush-ms N    the deliveredFlushMs setting: delivered marks written and told this often (${defaults.deliveredFlushMs})
  --live-events-max-members N
                            the liveEventsMaxGroupMembers setting: larger groups are told no receipts (${defaults.liveEventsMaxGroupMembers})
  --headroom F              share of each node's CPU left free, for bursts and p99 < 200 ms (0.5)
  --cores-per-node N        cores of one Chorus node (8)
  --costs FILE              the measured costs (${COSTS_FILE})`);
  process.exit(0);
}

/** A flag as a number, refused unless it is a finite number within its range. */
const flag = (name: keyof typeof values, min: number, max = Number.POSITIVE_INFINITY): number => {
  const value = Number(values[name]);
  if (!Number.isFinite(value) || value < min || value > max) {
    console.error(`--${name} must be a number from ${min}${Number.isFinite(max) ? ` to ${max}` : ''}`);
    process.exit(2);
  }
  return value;
};

const users = flag('users', 0);
const connectsPerSec = users / flag('reconnect-every-s', 1);
const load: FleetLoad = {
  users,
  groups: flag('groups', 1),
  messagesPerSec: flag('msgs-per-s', 0),
  avgMembers: flag('avg-members', 1),
  bigGroup: flag('big-group', 0),
  bigGroupMessagesPerSec: flag('big-group', 0) > 0 ? flag('big-group-msgs-per-s', 0) : 0,
  onlineShare: flag('online-share', 0, 1),
  connectsPerSec,
  historyPagesPerSec: connectsPerSec * flag('pages-per-connect', 0),
  deliveredFlushMs: flag('delivered-flush-ms', 50, 60_000),
  liveEventsMaxGroupMembers: flag('live-events-max-members', 0),
  headroom: flag('headroom', 0, 0.95),
  coresPerNode: flag('cores-per-node', 1),
};
const costs = readCosts(String(values.costs));
let fleet: FleetSize;
try {
  fleet = sizeFleet(costs, load);
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
const n = (value: number, digits = 0) =>
  value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

console.log(`costs measured ${costs.measuredAt} on ${costs.machine} (${values.costs})`);
console.log(
  `load: ${n(load.users)} users online, ${n(load.groups)} groups of ${load.avgMembers} at ${n(load.messagesPerSec)} msg/s` +
    `${load.bigGroup ? `, one group of ${n(load.bigGroup)} at ${load.bigGroupMessagesPerSec} msg/s` : ''}; ` +
    `${n(load.connectsPerSec)} connects/s and ${n(load.historyPagesPerSec)} history pages/s; ${load.onlineShare * 100}% of members online`,
);
console.log('');
console.log('| tier | needs | at the measured costs |');
console.log('|---|---|---|');
console.log(
  `| Chorus nodes | ${fleet.nodes} x ${load.coresPerNode} cores (${n(fleet.nodeCores, 1)} cores busy, ${load.headroom * 100}% left free), ${n(fleet.nodeMemoryGb, 1)} GB for connections | ${n(costs.node.storeUs * costs.cluster.storeRatio, 1)} µs per message, ${n(costs.node.deliveryUs, 1)} µs per delivery, ${n(costs.node.bigGroupDeliveryUs, 1)} µs per big-group delivery, ${n(costs.node.connectUs)} µs per connect, ${n(costs.cluster.historyPageUs)} µs per history page; each node ${n(costs.cluster.fanInUs, 1)} µs per message another node stored |`,
);
console.log(
  `| Redis | ${n(fleet.redisOpsPerSec)} commands/s (${n(fleet.presenceLookupsPerSec)} members' presence read by push passes), ${n(fleet.redisCores, 1)} cores | ${n(costs.cluster.redisCommandsPerMessage, 2)} commands and ${n(costs.cluster.redisUsPerMessage, 1)} µs per message; ${n(costs.cluster.redisUsPerPresenceLookup, 1)} µs per member's presence; ${n(costs.cluster.redisUsPerPublish, 1)} µs per receipt event or relay of marks |`,
);
console.log(
  `| Cassandra | ${n(fleet.cassandraWritesPerSec)} writes/s (${n(fleet.markWritesPerSec)} of them delivered marks) and ${n(fleet.cassandraReadsPerSec)} reads/s (coordinator requests), ${n(fleet.cassandraCores, 1)} cores per replica | ${n(costs.cluster.cassandraWritesPerMessage, 2)} writes, ${n(costs.cluster.cassandraReadsPerMessage, 2)} reads and ${n(costs.cluster.cassandraUsPerMessage, 1)} µs per message on one node; ${n(costs.cluster.cassandraReadsPerPage, 2)} reads per history page; a write of marks as one of messages |`,
);
console.log(
  `\nDelivered marks: each group's are written and told by its writer once per ${load.deliveredFlushMs} ms with deliveries, ${n(fleet.markEventDeliveriesPerSec)} receipt events/s to members (counted in the nodes' cores at a delivery's cost each).`,
);
if (fleet.redisCores > 1)
  console.log(
    `\nRedis runs its commands on one thread: with ${load.headroom * 100}% left free this load needs ${n(fleet.redisCores, 1)} of its cores, more than the one it can use. The push passes' presence reads grow with the nodes, the receipt events with the groups that hear messages: fewer, busier groups, fewer nodes or a longer --delivered-flush-ms ask less.`,
  );
console.log(
  '\nCassandra cores are per replica: with replication factor 3 every replica does that work. Re-measure on your hardware with `npm run bench` (it rewrites the costs file).',
);
