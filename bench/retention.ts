/**
 * Retention on the embedded tier: what a sweep of expired messages costs, and what it does to the sends beside it.
 * A SQLite log (writes on their own thread, as the server runs it) holds BENCH_RETENTION_EXPIRED (200,000) messages
 * past a 30-day retention in BENCH_RETENTION_GROUPS (200) groups, with text (so each has a search entry) and reactions.
 * Sends go to another group at BENCH_RETENTION_RATE (200) per second, one message per append as a quiet group's are,
 * first alone for BENCH_RETENTION_SECONDS (5), then while a sweep removes the expired messages. Prints the sweep's
 * time and rate, and the sends' p50 / p99 / max commit latency in both phases, side by side. Run:
 * `npm run bench:retention`.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DAY_MS } from '../groups/retention.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import { RetentionPruner } from '../sequencer/retention-pruner.js';
import { env } from './env-number.js';

const EXPIRED = env('BENCH_RETENTION_EXPIRED', 200_000);
const GROUPS = env('BENCH_RETENTION_GROUPS', 200);
const RATE = env('BENCH_RETENTION_RATE', 200);
const SECONDS = env('BENCH_RETENTION_SECONDS', 5);
const RETENTION_MS = 30 * DAY_MS;

const log = new MessageLogSqliteThread(join(mkdtempSync(join(tmpdir(), 'chorus-bench-retention-')), 'messages.db'), {
  synchronous: 'normal',
});
const old = Date.now() - 40 * DAY_MS;
const draft = (i: number, createdAtMs: number, extra: Partial<MessageDraft> = {}): MessageDraft => ({
  senderId: `user-${i % 50}`,
  clientMsgId: `m-${i}`,
  type: 'text',
  body: `release notes number ${i} for the weekly deploy review`,
  createdAtMs,
  ...extra,
});

const filled = performance.now();
const PER_APPEND = 1000;
for (let written = 0; written < EXPIRED; written += PER_APPEND) {
  const batch = Array.from({ length: GROUPS }, (_, g) => ({ groupId: `g-${g}`, drafts: [] as MessageDraft[] }));
  for (let i = written; i < Math.min(EXPIRED, written + PER_APPEND); i++) {
    const part = batch[i % GROUPS]!;
    // One message in ten is a reaction to the one before it in its group.
    const seq = part.drafts.length;
    part.drafts.push(
      i % 10 === 9 && seq > 0
        ? draft(i, old, {
            type: 'reaction',
            body: undefined,
            emoji: '👍',
            targetSeq: Math.floor(written / GROUPS) + seq,
          })
        : draft(i, old),
    );
  }
  await log.append(batch.filter((part) => part.drafts.length > 0));
}
console.log(
  `filled ${EXPIRED} expired messages in ${GROUPS} groups in ${((performance.now() - filled) / 1000).toFixed(1)} s`,
);

/** Sends one message at a time to a live group at RATE per second until `until` resolves; their commit latencies. */
async function sendsUntil(until: Promise<unknown>, from: number): Promise<number[]> {
  const latencies: number[] = [];
  let done = false;
  void until.then(() => (done = true));
  for (let i = from; !done; i++) {
    const started = performance.now();
    await log.append([{ groupId: 'live', drafts: [draft(i, Date.now())] }]);
    latencies.push(performance.now() - started);
    await sleep(Math.max(0, 1000 / RATE - (performance.now() - started)));
  }
  return latencies;
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
};
const row = (name: string, latencies: number[]) =>
  `| ${name} | ${latencies.length} | ${percentile(latencies, 50).toFixed(2)} | ${percentile(latencies, 99).toFixed(2)} | ${Math.max(...latencies).toFixed(2)} |`;

const quiet = await sendsUntil(sleep(SECONDS * 1000), 10_000_000);
const pruner = new RetentionPruner(log, {
  retentionMs: async (groupId) => (groupId === 'live' ? 0 : RETENTION_MS),
  intervalMs: 3_600_000,
  onError: (err) => console.error(err),
});
const sweepStarted = performance.now();
const sweep = pruner.sweep();
const during = await sendsUntil(sweep, 20_000_000);
const removed = await sweep;
const sweepSeconds = (performance.now() - sweepStarted) / 1000;
const left = (await Promise.all(Array.from({ length: GROUPS }, (_, g) => log.readAfter(`g-${g}`, 0, 1)))).flat().length;

console.log(
  `\nsweep: removed ${removed} messages (and their reactions and search entries) in ${sweepSeconds.toFixed(1)} s, ` +
    `${Math.round(removed / sweepSeconds)} messages/s; ${left} left in the expired groups\n`,
);
console.log('| sends to another group, one per append | sends | p50 ms | p99 ms | max ms |');
console.log('|---|---|---|---|---|');
console.log(row('alone', quiet));
console.log(row('during the sweep', during));
await log.close();
