import Database from 'better-sqlite3';
import { isVisible } from '../groups/visible-ranges.js';
import {
  groupToken,
  type MessageRow,
  rowToMessage,
  SEARCH_PROGRESS_TABLE,
  SEARCH_TABLE,
} from '../sequencer/message-log-sqlite.js';
import type { Term } from './query.js';
import { type GroupSearch, hitOf, type Search, type SearchHit, textMatches } from './search.js';

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
 * Search on the embedded tier: SQLite FTS5 over the index the message log keeps (sequencer/message-log-sqlite.ts),
 * read through a connection of its own. The group is a token of the index, so a group's search walks only its own
 * postings, newest document first. The group's messages whose documents still wait to be indexed (at most a batch's
 * worth, all newer than those indexed) are read from the messages table first and matched as the index would
 * (tokensOf), in the same read transaction as the index, so a message is found once whether or not it was indexed.
 */
export class SearchSqlite implements Search {
  private readonly db: Database.Database;
  private readonly select: Database.Statement<unknown[], MessageRow & { doc: number }>;
  private readonly selectWaiting: Database.Statement<unknown[], MessageRow>;
  private readonly indexedThrough: Database.Statement<[], { doc: number }>;
  private readonly searchSnapshot: (search: GroupSearch) => SearchHit[];

  /** `path`: the message log's database file, which the log has created. */
  constructor(path: string) {
    this.db = new Database(path, { fileMustExist: true });
    this.db.pragma('query_only = ON');
    this.select = this.db.prepare(`
      SELECT m.*, f.rowid AS doc FROM ${SEARCH_TABLE} f JOIN messages m ON m.text_doc = f.rowid
      WHERE ${SEARCH_TABLE} MATCH ? AND f.rowid < ? AND m.group_id = ? AND m.seq < ? AND m.deleted_at IS NULL
        AND (? IS NULL OR m.sender_id = ?) AND m.created_at >= ? AND m.created_at < ?
      ORDER BY f.rowid DESC LIMIT ?`);
    this.selectWaiting = this.db.prepare(`
      SELECT * FROM messages INDEXED BY messages_by_text_doc
      WHERE text_doc > ? AND group_id = ? AND seq < ? AND deleted_at IS NULL
        AND (? IS NULL OR sender_id = ?) AND created_at >= ? AND created_at < ?
      ORDER BY seq DESC`);
    this.indexedThrough = this.db.prepare(`SELECT doc FROM ${SEARCH_PROGRESS_TABLE} WHERE id = 0`);
    this.searchSnapshot = this.db.transaction((search: GroupSearch) => this.searchNow(search));
  }

  async searchGroup(search: GroupSearch): Promise<SearchHit[]> {
    return this.searchSnapshot(search);
  }

  private searchNow({ groupId, query, ranges, beforeSeq, limit }: GroupSearch): SearchHit[] {
    const filters = [
      groupId,
      beforeSeq ?? Number.MAX_SAFE_INTEGER,
      query.from ?? null,
      query.from ?? null,
      query.afterMs ?? 0,
      query.beforeMs ?? Number.MAX_SAFE_INTEGER,
    ];
    const hits: SearchHit[] = [];
    const indexedThrough = this.indexedThrough.get()?.doc ?? 0;
    for (const row of this.selectWaiting.all(indexedThrough, ...filters)) {
      const message = rowToMessage(groupId, row);
      if (!isVisible(ranges, row.seq) || !textMatches(message, query.terms)) continue;
      hits.push(hitOf(message, query.terms));
      if (hits.length === limit) return hits;
    }
    const match = `grp:"${groupToken(groupId)}" AND text:(${query.terms.map(ftsTerm).join(' AND ')})`;
    let belowDoc = indexedThrough + 1;
    for (;;) {
      const rows = this.select.all(match, belowDoc, ...filters, STEP);
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
