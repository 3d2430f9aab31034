import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CassandraSession } from '../cassandra/session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import type { MessageDraft } from '../sequencer/message-log.js';
import { MessageLogSqlite, SEARCH_TABLE } from '../sequencer/message-log-sqlite.js';
import { SearchByScan } from '../search/search-scan.js';
import { SearchSqlite } from '../search/search-sqlite.js';
import { tempDir } from './harness.js';
import { searchContract } from './search.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

searchContract('SQLite FTS5', async () => {
  const file = join(tempDir(), 'messages.db');
  const log = new MessageLogSqlite(file, { synchronous: 'normal' });
  return { log, search: new SearchSqlite(file) };
});

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

describe('the SQLite search index', () => {
  it('loses a deleted message and a pre-edit text, not just hides them, and is filled for a database made before it', async () => {
    const file = join(tempDir(), 'messages.db');
    const log = new MessageLogSqlite(file, { synchronous: 'normal' });
    const draft = (clientMsgId: string, body: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
      senderId: 'alice',
      clientMsgId,
      type: 'text',
      body,
      createdAtMs: Date.now(),
      ...extra,
    });
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
