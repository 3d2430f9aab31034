import Database from 'better-sqlite3';
import { isVisible } from '../groups/visible-ranges.js';
import { groupToken, type MessageRow, rowToMessage, SEARCH_TABLE } from '../sequencer/message-log-sqlite.js';
import type { Term } from './query.js';
import { type GroupSearch, hitOf, type Search, type SearchHit } from './search.js';

/** Rows read per step while hits fall outside the caller's visible ranges. */
const STEP = 200;

/** A term in FTS5 query syntax: tokens are letters and digits only (tokensOf), so quoting them is safe. */
const ftsTerm = (term: Term): string =>
  term.kind === 'phrase'
    ? `"${term.tokens.join(' ')}"`
    : term.kind === 'prefix'
      ? `"${term.token}"*`
      : `"${term.token}"`;

/**
 * Search on the embedded tier: SQLite FTS5 over the index the message log keeps in the append's transaction
 * (sequencer/message-log-sqlite.ts), read through a connection of its own. The group is a token of the index, so a
 * group's search walks only its own postings, newest document first.
 */
export class SearchSqlite implements Search {
  private readonly db: Database.Database;
  private readonly select: Database.Statement<unknown[], MessageRow & { doc: number }>;

  /** `path`: the message log's database file, which the log has created. */
  constructor(path: string) {
    this.db = new Database(path, { fileMustExist: true });
    this.db.pragma('query_only = ON');
    this.select = this.db.prepare(`
      SELECT m.*, f.rowid AS doc FROM ${SEARCH_TABLE} f JOIN messages m ON m.text_doc = f.rowid
      WHERE ${SEARCH_TABLE} MATCH ? AND f.rowid < ? AND m.group_id = ? AND m.seq < ? AND m.deleted_at IS NULL
        AND (? IS NULL OR m.sender_id = ?) AND m.created_at >= ? AND m.created_at < ?
      ORDER BY f.rowid DESC LIMIT ?`);
  }

  async searchGroup({ groupId, query, ranges, beforeSeq, limit }: GroupSearch): Promise<SearchHit[]> {
    const match = `grp:"${groupToken(groupId)}" AND text:(${query.terms.map(ftsTerm).join(' AND ')})`;
    const hits: SearchHit[] = [];
    let belowDoc = Number.MAX_SAFE_INTEGER;
    for (;;) {
      const rows = this.select.all(
        match,
        belowDoc,
        groupId,
        beforeSeq ?? Number.MAX_SAFE_INTEGER,
        query.from ?? null,
        query.from ?? null,
        query.afterMs ?? 0,
        query.beforeMs ?? Number.MAX_SAFE_INTEGER,
        STEP,
      );
      for (const row of rows) {
        if (!isVisible(ranges, row.seq)) continue;
        hits.push(hitOf(rowToMessage(groupId, row), query.terms));
        if (hits.length === limit) return hits;
      }
      if (rows.length < STEP) return hits;
      belowDoc = rows.at(-1)!.doc;
    }
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
