/**
 * What storing a message costs the embedded tier's log itself, apart from any broker: `node dist/bench/sqlite-log.js`.
 * The message log as Chorus runs it (MessageLogSqliteThread: the writer on a thread of its own, every commit fsync'd)
 * appends BENCH_LOG_MESSAGES (default 4,000) messages per round, five per commit (about what the sequencer commits
 * together at 1,000 msg/s), one commit at a time, over 50 groups. Two logs side by side, their rounds taken in turn
 * (BENCH_LOG_ROUNDS, default 5): each message indexed for search in its own commit, and documents indexed
 * SEARCH_INDEX_BATCH at a time as configured. Prints the process's CPU (every thread) per message and each commit's
 * latency, medians of the rounds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MessageDraft } from '../sequencer/message-log.js';
import { SEARCH_INDEX_BATCH } from '../sequencer/message-log-sqlite.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import { env } from './env-number.js';
import { fmt, median } from './figures.js';

const MESSAGES = env('BENCH_LOG_MESSAGES', 4000);
const ROUNDS = env('BENCH_LOG_ROUNDS', 5);
const PER_COMMIT = 5;
const GROUPS = 50;
const WORDS = 'the team ships the release tonight after review of logs metrics alerts and the dashboard numbers'.split(
  ' ',
);

interface Variant {
  name: string;
  log: MessageLogSqliteThread;
  dir: string;
  usPerMessage: number[];
  commitP50Ms: number[];
  commitP99Ms: number[];
}

let sent = 0;
/** A text message of about 12 words, as people write them, from a rotating sender. */
function draft(): MessageDraft {
  const n = sent++;
  const words = Array.from({ length: 12 }, (_, i) => WORDS[(n * 7 + i * 3) % WORDS.length]);
  return {
    senderId: `user-${n % 1000}`,
    clientMsgId: `m-${n}`,
    type: 'text',
    body: `${words.join(' ')} ${n}`,
    createdAtMs: Date.now(),
  };
}

async function round(variant: Variant, messages: number): Promise<void> {
  const latencies: number[] = [];
  const before = process.cpuUsage();
  for (let i = 0; i < messages; i += PER_COMMIT) {
    const groupId = `group-${(i / PER_COMMIT) % GROUPS}`;
    const start = performance.now();
    await variant.log.append([{ groupId, drafts: Array.from({ length: PER_COMMIT }, draft) }]);
    latencies.push(performance.now() - start);
  }
  const cpu = process.cpuUsage(before);
  latencies.sort((a, b) => a - b);
  variant.usPerMessage.push((cpu.user + cpu.system) / messages);
  variant.commitP50Ms.push(latencies[Math.floor(latencies.length / 2)]!);
  variant.commitP99Ms.push(latencies[Math.floor(latencies.length * 0.99)]!);
}

const open = (name: string, searchIndexBatch: number): Variant => {
  const dir = mkdtempSync(join(tmpdir(), 'chorus-bench-log-'));
  const log = new MessageLogSqliteThread(join(dir, 'messages.db'), { synchronous: 'full', searchIndexBatch });
  return { name, log, dir, usPerMessage: [], commitP50Ms: [], commitP99Ms: [] };
};
const variants = [
  open('each message indexed in its commit', 1),
  open(`indexed ${SEARCH_INDEX_BATCH} at a time`, SEARCH_INDEX_BATCH),
];
for (const variant of variants) await round(variant, MESSAGES / 2); // warm-up, not counted
for (const variant of variants)
  variant.usPerMessage.length = variant.commitP50Ms.length = variant.commitP99Ms.length = 0;
for (let r = 0; r < ROUNDS; r++) {
  for (const variant of r % 2 === 0 ? variants : [...variants].reverse()) await round(variant, MESSAGES);
}
for (const variant of variants) {
  await variant.log.close();
  rmSync(variant.dir, { recursive: true, force: true });
}

const [each, batched] = variants as [Variant, Variant];
console.log(
  `\n**The SQLite log alone** (bench/sqlite-log.ts): ${MESSAGES} messages per round, ${PER_COMMIT} per fsync'd commit over ${GROUPS} groups; medians of ${ROUNDS} rounds taken in turn`,
);
console.log('| search index | CPU µs per message (every thread) | commit p50 ms | commit p99 ms |');
console.log('|---|---|---|---|');
for (const v of variants) {
  console.log(
    `| ${v.name} | ${fmt(median(v.usPerMessage), 1)} | ${fmt(median(v.commitP50Ms), 2)} | ${fmt(median(v.commitP99Ms), 2)} |`,
  );
}
console.log(
  `batched against each in its commit: CPU ${fmt(median(batched.usPerMessage) / median(each.usPerMessage), 2)}x, commit p50 ${fmt(median(batched.commitP50Ms) / median(each.commitP50Ms), 2)}x`,
);
