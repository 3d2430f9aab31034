import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  contentOf,
  effectOf,
  type MessageContent,
  type ReactionCount,
  type StampedMessage,
  searchableText,
} from '../protocol/index.js';
import { pagedStatement } from '../sqlite/paged-statement.js';
import {
  countReactions,
  toStampedMessage,
  type AppendOutcome,
  type GroupAppend,
  type MessageDraft,
  type ExpiringLog,
  type MessageLog,
} from './message-log.js';

export interface MessageRow {
  seq: number;
  sender_id: string;
  client_msg_id: string;
  type: string;
  /** '' when the message has none (a reaction, a deletion, attachments only) or it was erased. */
  body: string;
  reply_to_seq: number | null;
  mentions: string | null;
  created_at: number;
  /** JSON of the content fields without a column of their own (mentionEveryone, attachments, emoji, remove, ...). */
  extra: string | null;
  /** The message's document in the search index; null for events and text-less messages. */
  text_doc: number | null;
  target_seq: number | null;
  edited_at: number | null;
  deleted_at: number | null;
  last_edit_seq: number | null;
}

/** Content fields stored in columns of their own; every other one goes to `extra`, so a new field needs no column. */
const COLUMN_FIELDS = new Set<string>(['body', 'replyToSeq', 'mentions', 'targetSeq']);

function extraOf(draft: MessageDraft): string | null {
  const extra = Object.entries(contentOf(draft)).filter(([field]) => !COLUMN_FIELDS.has(field));
  return extra.length > 0 ? JSON.stringify(Object.fromEntries(extra)) : null;
}

/** Columns added since the first release, for files made by it: (name, declaration). */
const ADDED_COLUMNS: [string, string][] = [
  ['extra', 'TEXT'],
  ['target_seq', 'INTEGER'],
  ['edited_at', 'INTEGER'],
  ['deleted_at', 'INTEGER'],
  ['last_edit_seq', 'INTEGER'],
  ['text_doc', 'INTEGER'],
];

/**
 * The search index, in the same database: one document per message with text (searchableText), its rowid in
 * messages.text_doc. `grp` holds the group id as one token (its hex), so a group's search intersects posting lists
 * instead of filtering every match. Contentless: the index keeps no copy of the text, and a deleted message's document
 * is deleted from it (an edit replaces it).
 *
 * Documents are indexed SEARCH_INDEX_BATCH at a time, in the transaction of the append that makes that many wait: FTS5
 * writes a segment of its own per transaction, and one per commit of a few messages cost the log about a fifth of its
 * CPU (bench/sqlite-log.ts). SEARCH_PROGRESS_TABLE holds the last document indexed, in the same transactions; those after it are read from
 * the messages table by a search (search-sqlite.ts), so every stored message is found, and a crash loses no document.
 */
export const SEARCH_TABLE = 'message_text';
/** One row: the last document in the search index; every later text_doc is waiting to be indexed. */
export const SEARCH_PROGRESS_TABLE = 'message_text_progress';
/** Documents that wait before they are indexed together (see SEARCH_TABLE). */
export const SEARCH_INDEX_BATCH = 64;
export const groupToken = (groupId: string): string => Buffer.from(groupId).toString('hex');

export interface SqliteLogOptions {
  /** 'full' fsyncs every commit (power-loss safe); 'normal' in WAL mode is safe against process crashes only. */
  synchronous: 'full' | 'normal';
  /** Documents indexed together (default SEARCH_INDEX_BATCH); 1 indexes each message in its own append. */
  searchIndexBatch?: number;
}

/** The text a stored row is found by, as it stands now (an edit replaced its body). */
const rowText = (row: Pick<MessageRow, 'type' | 'body' | 'extra'>): string | null =>
  searchableText(row.type, {
    ...(row.extra === null ? {} : (JSON.parse(row.extra) as MessageContent)),
    body: row.body,
  });

/**
 * The columns a message is built from (all but the search document and the last edit's seq), in the order a history
 * page selects them. Page statements return arrays (better-sqlite3's raw mode): an object per row is built property by
 * property in native code, twice the cost of an array (250 against 125 us for a page of 100), and the object
 * rowToMessage reads is then built in JavaScript: readAfter of 100 messages took 370-410 us with every column as objects,
 * 220-250 us so (docs/performance.md). One list of the columns makes both the SQL and the object, so their orders agree.
 */
const MESSAGE_COLUMNS = [
  'seq',
  'sender_id',
  'client_msg_id',
  'type',
  'body',
  'reply_to_seq',
  'mentions',
  'created_at',
  'extra',
  'target_seq',
  'edited_at',
  'deleted_at',
] as const satisfies readonly (keyof MessageRow)[];
type MessageColumns = Pick<MessageRow, (typeof MESSAGE_COLUMNS)[number]>;

export const rowToMessage = (groupId: string, row: MessageColumns): StampedMessage =>
  toStampedMessage(
    groupId,
    row.seq,
    {
      senderId: row.sender_id,
      clientMsgId: row.client_msg_id,
      type: row.type,
      body: row.body,
      ...(row.reply_to_seq === null ? {} : { replyToSeq: row.reply_to_seq }),
      ...(row.mentions === null ? {} : { mentions: JSON.parse(row.mentions) as string[] }),
      ...(row.extra === null ? {} : (JSON.parse(row.extra) as MessageContent)),
      ...(row.target_seq === null ? {} : { targetSeq: row.target_seq }),
      createdAtMs: row.created_at,
    },
    {
      ...(row.edited_at === null ? {} : { editedAtMs: row.edited_at }),
      ...(row.deleted_at === null ? {} : { deletedAtMs: row.deleted_at }),
    },
  );

/** A history page's row, an array in MESSAGE_COLUMNS's order, as a message. */
function pageRowToMessage(groupId: string, values: unknown[]): StampedMessage {
  const row: Record<string, unknown> = {};
  for (let i = 0; i < MESSAGE_COLUMNS.length; i++) row[MESSAGE_COLUMNS[i]!] = values[i];
  return rowToMessage(groupId, row as MessageColumns);
}

/**
 * The embedded message log: one SQLite file in WAL mode. A whole append call is one transaction, so a call that
 * carries many groups' drafts costs one commit (group commit); better-sqlite3 is synchronous, so calls never interleave.
 */
export class MessageLogSqlite implements MessageLog, ExpiringLog {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  /** Takes the group id twice. */
  private readonly selectLast: Database.Statement<[string, string], { seq: number }>;
  private readonly selectByClientMsgId: Database.Statement<[string, string, string], MessageRow>;
  private readonly selectAfter: (limit: number) => Database.Statement<[string, number], unknown[]>;
  private readonly selectBefore: (limit: number) => Database.Statement<[string, number], unknown[]>;
  private readonly appendTx: (batch: GroupAppend[]) => AppendOutcome[][];
  private readonly effects;
  private readonly selectReactions: Database.Statement<
    [string, number, number],
    { target_seq: number; emoji: string; user_id: string }
  >;
  private readonly deleteGroupTx: (groupId: string) => void;
  private readonly selectExpiredThrough: Database.Statement<[string], { through_seq: number }>;
  private readonly expireTx: (groupId: string, beforeMs: number, limit: number) => number;
  private readonly selectNextGroup: Database.Statement<[string], { group_id: string }>;
  private search!: {
    index: Database.Statement<[number, string, string]>;
    unindex: Database.Statement<[number]>;
    waiting: Database.Statement<[number], MessageRow & { group_id: string; text_doc: number }>;
    progress: Database.Statement<[], { doc: number }>;
    setProgress: Database.Statement<[number]>;
    lastDoc: Database.Statement<[], { doc: number | null }>;
  };
  /** The highest document id given to a message: the next message with text takes the one after. */
  private lastTextDoc = 0;
  /** The last document in the search index (SEARCH_PROGRESS_TABLE); the ones after it wait to be indexed together. */
  private indexedThrough = 0;
  private readonly searchIndexBatch: number;

  constructor(path: string, options: SqliteLogOptions) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.searchIndexBatch = Math.max(1, options.searchIndexBatch ?? SEARCH_INDEX_BATCH);
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    // A deleted message's body is overwritten in its page where that costs no extra write (the WAL keeps the old page
    // until its next checkpoint).
    this.db.pragma('secure_delete = FAST');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS messages (
        group_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sender_id TEXT NOT NULL,
        client_msg_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        reply_to_seq INTEGER,
        mentions TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (group_id, seq)
      ) WITHOUT ROWID;
      CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (group_id, sender_id, client_msg_id);
      CREATE TABLE IF NOT EXISTS reactions (
        group_id TEXT NOT NULL, target_seq INTEGER NOT NULL, emoji TEXT NOT NULL, user_id TEXT NOT NULL,
        PRIMARY KEY (group_id, target_seq, emoji, user_id)
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS expired_heads (
        group_id TEXT PRIMARY KEY, through_seq INTEGER NOT NULL
      ) WITHOUT ROWID;
    `);
    const columns = new Set(
      this.db
        .prepare<[], { name: string }>("SELECT name FROM pragma_table_info('messages')")
        .all()
        .map((c) => c.name),
    );
    for (const [name, declaration] of ADDED_COLUMNS)
      if (!columns.has(name)) this.db.exec(`ALTER TABLE messages ADD COLUMN ${name} ${declaration}`);
    this.db.exec(
      'CREATE INDEX IF NOT EXISTS messages_by_target ON messages (group_id, target_seq) WHERE target_seq IS NOT NULL',
    );
    this.openSearchIndex();
    this.insert = this.db.prepare(
      `INSERT INTO messages (group_id, seq, sender_id, client_msg_id, type, body, reply_to_seq, mentions, created_at, extra, target_seq, text_doc)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (group_id, sender_id, client_msg_id) DO NOTHING`,
    );
    const db = this.db;
    this.effects = {
      target: db.prepare<[string, number], MessageRow>('SELECT * FROM messages WHERE group_id = ? AND seq = ?'),
      edit: db.prepare('UPDATE messages SET body = ?, edited_at = ?, last_edit_seq = ? WHERE group_id = ? AND seq = ?'),
      erase: db.prepare(
        "UPDATE messages SET body = '', mentions = NULL, extra = NULL, deleted_at = COALESCE(deleted_at, ?) WHERE group_id = ? AND seq = ?",
      ),
      eraseEdits: db.prepare(
        "UPDATE messages SET body = '', deleted_at = COALESCE(deleted_at, ?) WHERE group_id = ? AND target_seq = ? AND type = 'edit'",
      ),
      dropReactions: db.prepare('DELETE FROM reactions WHERE group_id = ? AND target_seq = ?'),
      react: db.prepare('INSERT OR IGNORE INTO reactions (group_id, target_seq, emoji, user_id) VALUES (?, ?, ?, ?)'),
      unreact: db.prepare('DELETE FROM reactions WHERE group_id = ? AND target_seq = ? AND emoji = ? AND user_id = ?'),
    };
    this.selectReactions = db.prepare(
      'SELECT target_seq, emoji, user_id FROM reactions WHERE group_id = ? AND target_seq BETWEEN ? AND ? ORDER BY target_seq',
    );
    const deleteMessages = db.prepare('DELETE FROM messages WHERE group_id = ?');
    const deleteReactions = db.prepare('DELETE FROM reactions WHERE group_id = ?');
    const deleteExpiredHead = db.prepare('DELETE FROM expired_heads WHERE group_id = ?');
    const unindexGroup = db.prepare(
      `DELETE FROM ${SEARCH_TABLE} WHERE rowid IN (SELECT text_doc FROM messages WHERE group_id = ? AND text_doc <= ?)`,
    );
    this.deleteGroupTx = db.transaction((groupId: string) => {
      unindexGroup.run(groupId, this.indexedThrough);
      deleteMessages.run(groupId);
      deleteReactions.run(groupId);
      deleteExpiredHead.run(groupId);
    });
    // The last seq counts the expired ones: once every message of a group has expired, its seqs still go on.
    this.selectLast = this.db.prepare(`SELECT MAX(
        COALESCE((SELECT MAX(seq) FROM messages WHERE group_id = ?), 0),
        COALESCE((SELECT through_seq FROM expired_heads WHERE group_id = ?), 0)) AS seq`);
    this.selectExpiredThrough = db.prepare('SELECT through_seq FROM expired_heads WHERE group_id = ?');
    this.selectNextGroup = db.prepare('SELECT group_id FROM messages WHERE group_id > ? ORDER BY group_id LIMIT 1');
    const oldest = db.prepare<[string, number], { seq: number; created_at: number; text_doc: number | null }>(
      'SELECT seq, created_at, text_doc FROM messages WHERE group_id = ? ORDER BY seq LIMIT ?',
    );
    const expireMessages = db.prepare('DELETE FROM messages WHERE group_id = ? AND seq <= ?');
    const expireReactions = db.prepare('DELETE FROM reactions WHERE group_id = ? AND target_seq <= ?');
    const raiseExpiredHead = db.prepare(
      `INSERT INTO expired_heads (group_id, through_seq) VALUES (?, ?)
       ON CONFLICT (group_id) DO UPDATE SET through_seq = MAX(through_seq, excluded.through_seq)`,
    );
    this.expireTx = db.transaction((groupId: string, beforeMs: number, limit: number) => {
      // A prefix in seq order, so that what is kept stays one range without holes: it stops at the first message
      // that is not old enough, even if a later one is (a clock that went back).
      const rows = oldest.all(groupId, limit);
      const end = rows.findIndex((row) => row.created_at >= beforeMs);
      const expired = end === -1 ? rows : rows.slice(0, end);
      if (expired.length === 0) return 0;
      const through = expired.at(-1)!.seq;
      for (const row of expired) if (this.isIndexed(row.text_doc)) this.search.unindex.run(row.text_doc!);
      expireMessages.run(groupId, through);
      expireReactions.run(groupId, through);
      raiseExpiredHead.run(groupId, through);
      return expired.length;
    });
    this.selectByClientMsgId = this.db.prepare(
      'SELECT * FROM messages WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?',
    );
    this.selectAfter = pagedStatement(
      this.db,
      `SELECT ${MESSAGE_COLUMNS.join(', ')} FROM messages WHERE group_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?`,
      { raw: true },
    );
    this.selectBefore = pagedStatement(
      this.db,
      `SELECT ${MESSAGE_COLUMNS.join(', ')} FROM messages WHERE group_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
      { raw: true },
    );
    this.appendTx = this.db.transaction((batch: GroupAppend[]) => {
      const outcomes = batch.map((part) => this.appendGroup(part));
      if (this.lastTextDoc - this.indexedThrough >= this.searchIndexBatch) this.indexWaiting();
      return outcomes;
    });
  }

  /**
   * Creates the search index when it is missing, and fills it from the messages already stored (a database made
   * before search existed): in one transaction, at open. A database made before documents waited to be indexed had
   * each indexed in its append: its progress starts at its last document.
   */
  private openSearchIndex(): void {
    const exists = (name: string) =>
      this.db.prepare('SELECT 1 FROM sqlite_master WHERE name = ?').get(name) !== undefined;
    const indexExisted = exists(SEARCH_TABLE);
    const progressExisted = exists(SEARCH_PROGRESS_TABLE);
    this.db.exec(
      `CREATE VIRTUAL TABLE IF NOT EXISTS ${SEARCH_TABLE} USING fts5(grp, text, tokenize = 'unicode61 remove_diacritics 2', content = '', contentless_delete = 1)`,
    );
    this.db.exec('CREATE INDEX IF NOT EXISTS messages_by_text_doc ON messages (text_doc) WHERE text_doc IS NOT NULL');
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS ${SEARCH_PROGRESS_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 0), doc INTEGER NOT NULL)`,
    );
    this.search = {
      index: this.db.prepare(`INSERT INTO ${SEARCH_TABLE} (rowid, grp, text) VALUES (?, ?, ?)`),
      unindex: this.db.prepare(`DELETE FROM ${SEARCH_TABLE} WHERE rowid = ?`),
      waiting: this.db.prepare('SELECT * FROM messages WHERE text_doc > ? AND deleted_at IS NULL ORDER BY text_doc'),
      progress: this.db.prepare(`SELECT doc FROM ${SEARCH_PROGRESS_TABLE} WHERE id = 0`),
      setProgress: this.db.prepare(
        `INSERT INTO ${SEARCH_PROGRESS_TABLE} (id, doc) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`,
      ),
      lastDoc: this.db.prepare('SELECT MAX(text_doc) AS doc FROM messages WHERE text_doc IS NOT NULL'),
    };
    this.readSearchProgress();
    if (indexExisted && progressExisted) return;
    // In pages (a statement that is being read cannot be written beside on one connection), in one transaction.
    const page = this.db.prepare<[string, number], MessageRow & { group_id: string }>(
      'SELECT * FROM messages WHERE (group_id, seq) > (?, ?) AND deleted_at IS NULL ORDER BY group_id, seq LIMIT 1000',
    );
    const setDoc = this.db.prepare('UPDATE messages SET text_doc = ? WHERE group_id = ? AND seq = ?');
    this.db.transaction(() => {
      if (!indexExisted) {
        for (let rows = page.all('', 0); rows.length > 0; rows = page.all(rows.at(-1)!.group_id, rows.at(-1)!.seq)) {
          for (const row of rows) {
            const text = rowText(row);
            if (text === null) continue;
            this.lastTextDoc += 1;
            this.search.index.run(this.lastTextDoc, groupToken(row.group_id), text);
            setDoc.run(this.lastTextDoc, row.group_id, row.seq);
          }
        }
      }
      this.search.setProgress.run(this.lastTextDoc);
    })();
    this.indexedThrough = this.lastTextDoc;
  }

  /** The last document given and the last indexed, as stored: at open, and after a transaction that was undone. */
  private readSearchProgress(): void {
    this.lastTextDoc = this.search.lastDoc.get()?.doc ?? 0;
    this.indexedThrough = this.search.progress.get()?.doc ?? 0;
  }

  /** Whether a message's document is in the search index (not waiting, not a message without text). */
  private isIndexed(textDoc: number | null): boolean {
    return textDoc !== null && textDoc <= this.indexedThrough;
  }

  /**
   * In the append's transaction: indexes the documents waiting, as their messages stand now (an edit's text, not the
   * original; a deleted message not at all), and moves the progress past them.
   */
  private indexWaiting(): void {
    for (const row of this.search.waiting.all(this.indexedThrough)) {
      const text = rowText(row);
      if (text !== null) this.search.index.run(row.text_doc, groupToken(row.group_id), text);
    }
    this.search.setProgress.run(this.lastTextDoc);
    this.indexedThrough = this.lastTextDoc;
  }

  private appendGroup({ groupId, drafts }: GroupAppend): AppendOutcome[] {
    let last = this.selectLast.get(groupId, groupId)!.seq;
    const inThisCall = new Map<string, StampedMessage>();
    return drafts.map((draft: MessageDraft) => {
      const key = `${draft.senderId}\u0000${draft.clientMsgId}`;
      const earlier = inThisCall.get(key);
      if (earlier) return { message: earlier, duplicate: true };
      const text = searchableText(draft.type, draft);
      // The dedup index decides: a conflicting insert changes nothing and the original is read back.
      const inserted = this.insert.run(
        groupId,
        last + 1,
        draft.senderId,
        draft.clientMsgId,
        draft.type,
        draft.body ?? '',
        draft.replyToSeq ?? null,
        draft.mentions && draft.mentions.length > 0 ? JSON.stringify(draft.mentions) : null,
        draft.createdAtMs,
        extraOf(draft),
        draft.targetSeq ?? null,
        text === null ? null : this.lastTextDoc + 1,
      );
      if (inserted.changes === 0) {
        const stored = this.selectByClientMsgId.get(groupId, draft.senderId, draft.clientMsgId)!;
        return { message: rowToMessage(groupId, stored), duplicate: true };
      }
      last += 1;
      if (text !== null) this.lastTextDoc += 1;
      const message = toStampedMessage(groupId, last, draft);
      inThisCall.set(key, message);
      if (draft.targetSeq !== undefined) this.applyEvent(groupId, last, draft);
      return { message, duplicate: false };
    });
  }

  /** In the append's transaction: the event and its effect on the target are one commit. */
  private applyEvent(groupId: string, seq: number, event: MessageDraft): void {
    const targetSeq = event.targetSeq!;
    const target = this.effects.target.get(groupId, targetSeq);
    if (!target) return;
    const effect = effectOf(event.type);
    if (effect === 'edit') {
      if (target.deleted_at !== null) this.effects.erase.run(target.deleted_at, groupId, seq);
      else if ((target.last_edit_seq ?? 0) < seq) {
        this.effects.edit.run(event.body, event.createdAtMs, seq, groupId, targetSeq);
        // The index holds the text as it is now: the edit's body replaces the old one, which is no longer found (a
        // document still waiting is indexed from the row, edited by then).
        if (this.isIndexed(target.text_doc)) {
          this.search.unindex.run(target.text_doc!);
          const text = rowText({ ...target, body: event.body ?? target.body });
          if (text !== null) this.search.index.run(target.text_doc!, groupToken(groupId), text);
        }
      }
    } else if (effect === 'delete') {
      if (this.isIndexed(target.text_doc)) this.search.unindex.run(target.text_doc!);
      this.effects.erase.run(event.createdAtMs, groupId, targetSeq);
      this.effects.eraseEdits.run(event.createdAtMs, groupId, targetSeq);
      this.effects.dropReactions.run(groupId, targetSeq);
    } else if (effect === 'reaction' && target.deleted_at === null) {
      if (event.remove) this.effects.unreact.run(groupId, targetSeq, event.emoji, event.senderId);
      else this.effects.react.run(groupId, targetSeq, event.emoji, event.senderId);
    }
  }

  async append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    try {
      return this.appendTx(batch);
    } catch (err) {
      this.readSearchProgress(); // the transaction was undone, documents given and indexed in it with it
      throw err;
    }
  }

  async readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.selectAfter(limit)
      .all(groupId, afterSeq)
      .map((row) => pageRowToMessage(groupId, row));
  }

  async readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.selectBefore(limit)
      .all(groupId, beforeSeq)
      .map((row) => pageRowToMessage(groupId, row));
  }

  async lastSeq(groupId: string): Promise<number> {
    return this.selectLast.get(groupId, groupId)!.seq;
  }

  async firstSeq(groupId: string): Promise<number> {
    return (this.selectExpiredThrough.get(groupId)?.through_seq ?? 0) + 1;
  }

  async expire(groupId: string, beforeMs: number, limit: number): Promise<number> {
    return this.expireTx(groupId, beforeMs, limit);
  }

  async groupsAfter(afterGroupId: string, limit: number): Promise<string[]> {
    const ids: string[] = [];
    // One index seek per group: DISTINCT would read every message row.
    for (let row = this.selectNextGroup.get(afterGroupId); row && ids.length < limit; ) {
      ids.push(row.group_id);
      row = this.selectNextGroup.get(row.group_id);
    }
    return ids;
  }

  async reactions(groupId: string, seqs: number[], viewerId: string): Promise<Map<number, ReactionCount[]>> {
    if (seqs.length === 0) return new Map();
    const rows = this.selectReactions.all(groupId, Math.min(...seqs), Math.max(...seqs));
    return countReactions(
      rows.map((r) => ({ seq: r.target_seq, emoji: r.emoji, userId: r.user_id })),
      new Set(seqs),
      viewerId,
    );
  }

  async deleteGroup(groupId: string): Promise<void> {
    this.deleteGroupTx(groupId);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
