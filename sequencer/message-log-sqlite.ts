import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { StampedMessage } from '../protocol/index.js';
import { toStampedMessage, type AppendOutcome, type GroupAppend, type MessageDraft, type MessageLog } from './message-log.js';

interface MessageRow {
  seq: number;
  sender_id: string;
  client_msg_id: string;
  type: string;
  body: string;
  reply_to_seq: number | null;
  mentions: string | null;
  created_at: number;
}

export interface SqliteLogOptions {
  /** 'full' fsyncs every commit (power-loss safe); 'normal' in WAL mode is safe against process crashes only. */
  synchronous: 'full' | 'normal';
}

const rowToMessage = (groupId: string, row: MessageRow): StampedMessage =>
  toStampedMessage(groupId, row.seq, {
    senderId: row.sender_id,
    clientMsgId: row.client_msg_id,
    type: row.type,
    body: row.body,
    ...(row.reply_to_seq === null ? {} : { replyToSeq: row.reply_to_seq }),
    ...(row.mentions === null ? {} : { mentions: JSON.parse(row.mentions) as string[] }),
    createdAtMs: row.created_at,
  });

/**
 * The embedded message log: one SQLite file in WAL mode. A whole append call is one transaction, so a call that
 * carries many groups' drafts costs one commit (group commit); better-sqlite3 is synchronous, so calls never interleave.
 */
export class MessageLogSqlite implements MessageLog {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  private readonly selectLast: Database.Statement<[string], { seq: number | null }>;
  private readonly selectByClientMsgId: Database.Statement<[string, string, string], MessageRow>;
  private readonly selectAfter: Database.Statement<[string, number, number], MessageRow>;
  private readonly selectBefore: Database.Statement<[string, number, number], MessageRow>;
  private readonly appendTx: (batch: GroupAppend[]) => AppendOutcome[][];

  constructor(path: string, options: SqliteLogOptions) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
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
    `);
    this.insert = this.db.prepare(
      `INSERT INTO messages (group_id, seq, sender_id, client_msg_id, type, body, reply_to_seq, mentions, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (group_id, sender_id, client_msg_id) DO NOTHING`,
    );
    this.selectLast = this.db.prepare('SELECT MAX(seq) AS seq FROM messages WHERE group_id = ?');
    this.selectByClientMsgId = this.db.prepare(
      'SELECT * FROM messages WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?',
    );
    this.selectAfter = this.db.prepare('SELECT * FROM messages WHERE group_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?');
    this.selectBefore = this.db.prepare(
      'SELECT * FROM messages WHERE group_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?',
    );
    this.appendTx = this.db.transaction((batch: GroupAppend[]) => batch.map((part) => this.appendGroup(part)));
  }

  private appendGroup({ groupId, drafts }: GroupAppend): AppendOutcome[] {
    let last = this.selectLast.get(groupId)?.seq ?? 0;
    const inThisCall = new Map<string, StampedMessage>();
    return drafts.map((draft: MessageDraft) => {
      const key = `${draft.senderId}\u0000${draft.clientMsgId}`;
      const earlier = inThisCall.get(key);
      if (earlier) return { message: earlier, duplicate: true };
      // The dedup index decides: a conflicting insert changes nothing and the original is read back.
      const inserted = this.insert.run(
        groupId,
        last + 1,
        draft.senderId,
        draft.clientMsgId,
        draft.type,
        draft.body,
        draft.replyToSeq ?? null,
        draft.mentions && draft.mentions.length > 0 ? JSON.stringify(draft.mentions) : null,
        draft.createdAtMs,
      );
      if (inserted.changes === 0) {
        const stored = this.selectByClientMsgId.get(groupId, draft.senderId, draft.clientMsgId)!;
        return { message: rowToMessage(groupId, stored), duplicate: true };
      }
      last += 1;
      const message = toStampedMessage(groupId, last, draft);
      inThisCall.set(key, message);
      return { message, duplicate: false };
    });
  }

  async append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    return this.appendTx(batch);
  }

  async readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.selectAfter.all(groupId, afterSeq, limit).map((row) => rowToMessage(groupId, row));
  }

  async readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.selectBefore.all(groupId, beforeSeq, limit).map((row) => rowToMessage(groupId, row));
  }

  async lastSeq(groupId: string): Promise<number> {
    return this.selectLast.get(groupId)?.seq ?? 0;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
