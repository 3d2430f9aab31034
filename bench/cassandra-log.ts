/**
 * What storing a message costs Cassandra, apart from any broker: `node dist/bench/cassandra-log.js` (a step of
 * `npm run bench`). The cluster tier's message log (MessageLogCassandra, under this process's hold of the group)
 * appends to one group from 4 senders, BENCH_CASSANDRA_LOG_PER_APPEND messages per append (default 64, about what the
 * sequencer commits together at saturation), 4 appends in flight, at each rate of BENCH_CASSANDRA_LOG_RATES msg/s
 * (default 3500,7000,0; 0: as fast as it goes) for BENCH_CASSANDRA_LOG_SECONDS (default 10) after a warm-up. Prints,
 * per rate, the local Cassandra's CPU (every thread, /proc) per message and in cores, its threads' context switches
 * a second, and this process's CPU per message: a Cassandra whose CPU grows with time under load rather than with
 * messages shows it here. Uses the Cassandra of scripts/services.sh (started if it does not answer); BENCH_CASSANDRA=0
 * leaves it out, as it does `npm run bench`'s Cassandra run.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CassandraSession } from '../cassandra/session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { env } from './env-number.js';
import { fmt } from './figures.js';
import { cpuSeconds, servicePid, startServices } from './process-usage.js';

const RATES = (process.env.BENCH_CASSANDRA_LOG_RATES ?? '3500,7000,0').split(',').map(Number);
const PER_APPEND = env('BENCH_CASSANDRA_LOG_PER_APPEND', 64);
const SECONDS = env('BENCH_CASSANDRA_LOG_SECONDS', 10);
const IN_FLIGHT = 4;
const SENDERS = 4;

if (process.env.BENCH_CASSANDRA === '0') {
  console.log('BENCH_CASSANDRA=0: the Cassandra log alone is not measured');
  process.exit(0);
}
startServices();
const cassandraPid = servicePid('cassandra');
if (cassandraPid === undefined) throw new Error('no Cassandra started by scripts/services.sh is running');

/** Context switches of every thread of the process so far (threads that ended are not counted). */
function contextSwitches(pid: number): number {
  let sum = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      for (const match of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) sum += Number(match[1]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return sum;
}

const keyspace = `chorus_bench_log_${process.pid}`;
const db = await CassandraSession.connect({
  contactPoints: [`127.0.0.1:${process.env.CHORUS_TEST_CASSANDRA_PORT ?? 9142}`],
  localDataCenter: 'datacenter1',
  keyspace,
  replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
});
const writers = await GroupWritersCassandra.start(db, 'bench-cassandra-log');
const log = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => 0 });

let sent = 0;
const draft = (): MessageDraft => {
  const n = sent++;
  return {
    senderId: `user-${n % SENDERS}`,
    clientMsgId: `m-${String(n).padStart(12, '0')}`, // grows, as the SDK's ids do: no dedup lookup
    type: 'text',
    body: 'x'.repeat(100),
    createdAtMs: Date.now(),
  };
};

/** Appends at `rate` msg/s (0: as fast as it goes) for `seconds`; returns how many messages it appended. */
async function load(rate: number, seconds: number): Promise<number> {
  const started = performance.now();
  const until = started + seconds * 1000;
  let appended = 0;
  const lane = async () => {
    while (performance.now() < until) {
      const drafts = Array.from({ length: PER_APPEND }, draft);
      await log.append([{ groupId: 'bench-group', drafts }]);
      appended += drafts.length;
      if (rate > 0) await sleep(Math.max(0, started + (appended / rate) * 1000 - performance.now()));
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  return appended;
}

const rows: string[] = [];
await load(0, 15); // Cassandra's JVM compiles the write path first
for (const rate of RATES) {
  await load(rate, 2);
  const before = { cassandra: cpuSeconds(cassandraPid), switches: contextSwitches(cassandraPid) };
  const self = process.cpuUsage();
  const startedAt = performance.now();
  const messages = await load(rate, SECONDS);
  const seconds = (performance.now() - startedAt) / 1000;
  const cassandraCpu = cpuSeconds(cassandraPid) - before.cassandra;
  const own = process.cpuUsage(self);
  rows.push(
    `| ${rate === 0 ? 'as fast as it goes' : rate} | ${fmt(messages / seconds)} | ${fmt((cassandraCpu * 1e6) / messages, 1)} | ${fmt(cassandraCpu / seconds, 2)} | ${fmt((contextSwitches(cassandraPid) - before.switches) / seconds)} | ${fmt((own.user + own.system) / messages, 1)} |`,
  );
}
await writers.close();
// Each run's keyspace is its own; a drop that outlasts the driver's timeout still completes in Cassandra.
await db.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`).catch(() => undefined);
await db.close();

console.log(
  `\n**The Cassandra log alone** (bench/cassandra-log.ts): one group, ${PER_APPEND} messages per append, ${IN_FLIGHT} appends in flight, ${SECONDS} s per rate; Cassandra's timer slack ${readFileSync(`/proc/${cassandraPid}/timerslack_ns`, 'utf8').trim()} ns`,
);
console.log(
  '| offered msg/s | appended msg/s | Cassandra CPU µs per message | Cassandra cores | its context switches/s | this process µs per message |',
);
console.log('|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
