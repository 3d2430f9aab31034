/**
 * Search on the embedded tier: a SQLite message log of BENCH_SEARCH_MESSAGES (1,000,000) messages in
 * BENCH_SEARCH_GROUPS (1,000) groups, written through the log (so the FTS5 index is kept as sends keep it), then
 * BENCH_SEARCH_QUERIES (2,000) searches of random groups for words, prefixes and phrases, a page of 20 each.
 * Prints the build rate and the search latency (p50, p99, max). Run: `npm run bench:search`.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WHOLE_HISTORY } from '../groups/visible-ranges.js';
import { parseQuery } from '../search/query.js';
import { SearchSqlite } from '../search/search-sqlite.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { env } from './env-number.js';

const MESSAGES = env('BENCH_SEARCH_MESSAGES', 1_000_000);
const GROUPS = env('BENCH_SEARCH_GROUPS', 1_000);
const QUERIES = env('BENCH_SEARCH_QUERIES', 2_000);
const BATCH = 1_000;

/** A vocabulary with a long tail, as chat text has: a few words are everywhere, most are rare. */
const VOCABULARY = Array.from({ length: 5_000 }, (_, i) => `w${i.toString(36)}x`);
const COMMON = ['the', 'deploy', 'build', 'ok', 'thanks', 'review', 'meeting', 'today'];
let seed = 42;
const random = () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
  return seed / 2 ** 31;
};
const word = () =>
  random() < 0.3
    ? COMMON[Math.floor(random() * COMMON.length)]!
    : VOCABULARY[Math.floor(random() ** 2 * VOCABULARY.length)]!;
const sentence = () => Array.from({ length: 4 + Math.floor(random() * 12) }, word).join(' ');

const file = join(mkdtempSync(join(tmpdir(), 'chorus-bench-search-')), 'messages.db');
const log = new MessageLogSqlite(file, { synchronous: 'normal' });
const started = performance.now();
for (let written = 0; written < MESSAGES; written += BATCH) {
  const batch = Array.from({ length: Math.min(GROUPS, BATCH) }, (_, g) => ({
    groupId: `g${(written / BATCH + g) % GROUPS}`,
    drafts: [] as MessageDraft[],
  }));
  for (let i = 0; i < BATCH; i++) {
    const part = batch[i % batch.length]!;
    part.drafts.push({
      senderId: `u${i % 50}`,
      clientMsgId: `${written + i}`,
      type: 'text',
      body: sentence(),
      createdAtMs: Date.now(),
    });
  }
  await log.append(batch);
}
const buildSeconds = (performance.now() - started) / 1000;
await log.close();

const search = new SearchSqlite(file);
const kinds = [
  () => word(),
  () => `${word().slice(0, 3)}*`,
  () => `"${word()} ${word()}"`,
  () => `${COMMON[0]} ${word()}`,
];
const latencies: number[] = [];
let hits = 0;
for (let i = 0; i < QUERIES; i++) {
  const q = kinds[i % kinds.length]!();
  const groupId = `g${Math.floor(random() * GROUPS)}`;
  const t0 = performance.now();
  const found = await search.searchGroup({ groupId, query: parseQuery(q), ranges: WHOLE_HISTORY, limit: 20 });
  latencies.push(performance.now() - t0);
  hits += found.length;
}
await search.close();
latencies.sort((a, b) => a - b);
const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(2);
process.stdout.write(
  `${[
    `**Search** (SQLite FTS5): ${MESSAGES.toLocaleString('en')} messages in ${GROUPS.toLocaleString('en')} groups, built through the log at ${Math.round(MESSAGES / buildSeconds).toLocaleString('en')} messages/s`,
    '| queries | hits per query | p50 ms | p99 ms | max ms |',
    '|---|---|---|---|---|',
    `| ${QUERIES} (words, prefixes, phrases, a common word with another) | ${(hits / QUERIES).toFixed(1)} | ${at(0.5)} | ${at(0.99)} | ${latencies.at(-1)!.toFixed(2)} |`,
  ].join('\n')}\n`,
);
