import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CassandraSession } from '../cassandra/session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogSqlite, SEARCH_PROGRESS_TABLE, SEARCH_TABLE } from '../sequencer/message-log-sqlite.js';
import { WHOLE_HISTORY } from '../groups/visible-ranges.js';
import { parseQuery } from '../search/query.js';
import { SearchByScan } from '../search/search-scan.js';
import { SearchSqlite } from '../search/search-sqlite.js';
import { tempDir } from './harness.js';
import { searchContract } from './search.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

const sqliteSearch = (searchIndexBatch?: number) => async () => {
  const file = join(tempDir(), 'messages.db');
  const log = new MessageLogSqlite(file, { synchronous: 'normal', ...(searchIndexBatch ? { searchIndexBatch } : {}) });
  return { log, search: new SearchSqlite(file) };
};
// As configured, the suite's few messages all wait to be indexed; one at a time, all are indexed; seven at a time, a
// search meets some of a group's messages in the index and the newer ones still waiting.
searchContract('SQLite FTS5 (documents waiting in the messages table)', sqliteSearch());
searchContract('SQLite FTS5, each message indexed in its append', sqliteSearch(1));
searchContract('SQLite FTS5, messages indexed seven at a time', sqliteSearch(7));

searchContract('scan over the SQLite log', async () => {
  const log = new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' });
  return { log, search: new SearchByScan(log, 10_000) };
});

let db: CassandraSession;
let writers: GroupWritersCassandra;
beforeAll(async () => {
  db = await connectCassandra(testKeyspace());
  writers = await GroupWritersCassandra.start(db, `search-${process.pid}`);
});
afterAll(async () => {
  await writers.close();
  await db.close();
});

searchContract('scan over the Cassandra log (real Cassandra)', async () => {
  const log = await MessageLogCassandra.open(db, writers, { retentionSeconds: () => 0 });
  return { log, search: new SearchByScan(log, 10_000) };
});

/** A text message from alice, sent now. */
const draft = (clientMsgId: string, body: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
  senderId: 'alice',
  clientMsgId,
  type: 'text',
  body,
  createdAtMs: Date.now(),
  ...extra,
});

describe('the SQLite search index', () => {
  it('loses a deleted message and a pre-edit text, not just hides them, and is filled for a database made before it', async () => {
    const file = join(tempDir(), 'messages.db');
    const log = new MessageLogSqlite(file, { synchronous: 'normal', searchIndexBatch: 1 });
    await log.append([{ groupId: 'g', drafts: [draft('1', 'secret plan'), draft('2', 'old wording')] }]);
    await log.append([
      {
        groupId: 'g',
        drafts: [
          draft('d', '', { type: 'delete', targetSeq: 1, body: undefined }),
          draft('e', 'new', { type: 'edit', targetSeq: 2 }),
        ],
      },
    ]);
    await log.close();
    const raw = new Database(file);
    const count = (match: string) =>
      (
        raw.prepare(`SELECT count(*) AS n FROM ${SEARCH_TABLE} WHERE ${SEARCH_TABLE} MATCH ?`).get(match) as {
          n: number;
        }
      ).n;
    expect([count('secret'), count('old'), count('new')]).toEqual([0, 0, 1]);
    // A database from before search: its index is built at open from what is stored (deleted messages left out).
    raw.exec(`DROP TABLE ${SEARCH_TABLE}; UPDATE messages SET text_doc = NULL`);
    raw.close();
    const reopened = new MessageLogSqlite(file, { synchronous: 'normal' });
    await reopened.close();
    const again = new Database(file);
    expect(
      (
        again.prepare(`SELECT count(*) AS n FROM ${SEARCH_TABLE} WHERE ${SEARCH_TABLE} MATCH 'new'`).get() as {
          n: number;
        }
      ).n,
    ).toBe(1);
    expect(
      (
        again.prepare(`SELECT count(*) AS n FROM ${SEARCH_TABLE} WHERE ${SEARCH_TABLE} MATCH 'secret'`).get() as {
          n: number;
        }
      ).n,
    ).toBe(0);
    again.close();
  });
});

describe('documents waiting to be indexed', () => {
  const indexed = (file: string) => {
    const raw = new Database(file, { readonly: true });
    const docs = raw.prepare(`SELECT rowid FROM ${SEARCH_TABLE} ORDER BY rowid`).pluck().all();
    const progress = raw.prepare(`SELECT doc FROM ${SEARCH_PROGRESS_TABLE}`).pluck().get();
    const matches = (word: string) =>
      raw.prepare(`SELECT count(*) FROM ${SEARCH_TABLE} WHERE ${SEARCH_TABLE} MATCH ?`).pluck().get(word);
    const found = { docs, progress, alpha: matches('alpha'), beta: matches('beta'), gamma: matches('gamma') };
    raw.close();
    return found;
  };

  it('are found meanwhile, wait across a restart, and are indexed together as they stand then', async () => {
    const file = join(tempDir(), 'messages.db');
    let log = new MessageLogSqlite(file, { synchronous: 'full', searchIndexBatch: 4 });
    const search = new SearchSqlite(file);
    const find = async (text: string) =>
      (await search.searchGroup({ groupId: 'g', query: parseQuery(text), ranges: WHOLE_HISTORY, limit: 10 })).map(
        (hit) => hit.message.seq,
      );
    await log.append([{ groupId: 'g', drafts: [draft('1', 'alpha one'), draft('2', 'alpha two')] }]);
    await log.append([{ groupId: 'g', drafts: [draft('3', 'alpha three')] }]);
    expect(indexed(file)).toMatchObject({ docs: [], progress: 0 });
    expect(await find('alpha')).toEqual([3, 2, 1]);
    // A restart keeps them waiting (the messages table is what holds them), and a waiting message that is deleted or
    // edited is indexed as it stands when its batch is: not at all, and by its new text.
    await log.close();
    log = new MessageLogSqlite(file, { synchronous: 'full', searchIndexBatch: 4 });
    expect(await find('alpha')).toEqual([3, 2, 1]);
    await log.append([
      {
        groupId: 'g',
        drafts: [
          draft('d', '', { type: 'delete', targetSeq: 1, body: undefined }),
          draft('e', 'beta', { type: 'edit', targetSeq: 2 }),
        ],
      },
    ]);
    expect(await find('alpha')).toEqual([3]);
    expect(await find('beta')).toEqual([2]);
    await log.append([{ groupId: 'g', drafts: [draft('4', 'gamma four')] }]);
    expect(indexed(file)).toEqual({ docs: [2, 3, 4], progress: 4, alpha: 1, beta: 1, gamma: 1 });
    expect([await find('alpha'), await find('beta'), await find('gamma')]).toEqual([[3], [2], [6]]); // seq 4 and 5 are the events
    // Indexed now: an edit and a deletion reach the index itself.
    await log.append([
      {
        groupId: 'g',
        drafts: [
          draft('d2', '', { type: 'delete', targetSeq: 3, body: undefined }),
          draft('e2', 'gamma again', { type: 'edit', targetSeq: 2 }),
        ],
      },
    ]);
    expect(indexed(file)).toMatchObject({ docs: [2, 4], alpha: 0, beta: 0, gamma: 2 });
    expect(await find('gamma')).toEqual([6, 2]);
    await search.close();
    await log.close();
  });

  it('are given up with their group, and an expired message leaves the index', async () => {
    const file = join(tempDir(), 'messages.db');
    const log = new MessageLogSqlite(file, { synchronous: 'normal', searchIndexBatch: 2 });
    await log.append([{ groupId: 'old', drafts: [draft('1', 'alpha'), draft('2', 'beta')] }]);
    await log.append([{ groupId: 'gone', drafts: [draft('1', 'gamma')] }]);
    expect(indexed(file)).toMatchObject({ docs: [1, 2], progress: 2 });
    await log.deleteGroup('gone'); // waiting: nothing of it was indexed
    expect(await log.expire('old', Date.now() + 1, 10)).toBe(2);
    await log.append([{ groupId: 'new', drafts: [draft('1', 'gamma'), draft('2', 'gamma')] }]);
    expect(indexed(file)).toEqual({ docs: [4, 5], progress: 5, alpha: 0, beta: 0, gamma: 2 });
    await log.close();
  });

  it('a file from before documents waited: every document it has counts as indexed', async () => {
    const file = join(tempDir(), 'messages.db');
    const log = new MessageLogSqlite(file, { synchronous: 'normal', searchIndexBatch: 1 });
    await log.append([{ groupId: 'g', drafts: [draft('1', 'alpha'), draft('2', 'beta')] }]);
    await log.close();
    const raw = new Database(file);
    raw.exec(`DROP TABLE ${SEARCH_PROGRESS_TABLE}`);
    raw.close();
    const reopened = new MessageLogSqlite(file, { synchronous: 'normal' });
    expect(indexed(file)).toEqual({ docs: [1, 2], progress: 2, alpha: 1, beta: 1, gamma: 0 });
    await reopened.close();
  });
});

describe('why the cluster tier scans', () => {
  it("is Cassandra 5.0's storage-attached index: it takes no text analyzer, and CQL has no match operator", async () => {
    await db.execute('CREATE TABLE IF NOT EXISTS sai_probe (g text, s bigint, body text, PRIMARY KEY (g, s))');
    // The analyzed index that word search would need (Cassandra 5.1, DataStax's builds) is refused here.
    await expect(
      db.execute(
        "CREATE CUSTOM INDEX IF NOT EXISTS sai_probe_body ON sai_probe (body) USING 'StorageAttachedIndex' WITH OPTIONS = {'index_analyzer': 'standard'}",
      ),
    ).rejects.toThrow(/index_analyzer.*not understood/);
    await expect(db.execute("SELECT s FROM sai_probe WHERE g = 'a' AND body : 'deploy'")).rejects.toThrow(
      /no viable alternative/,
    );
  });
});
