import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { HistoryVisibility, MemberRole } from '../protocol/index.js';
import { pagedStatement } from '../sqlite/paged-statement.js';
import {
  nextRanges,
  type AddMemberResult,
  type AddMembersResult,
  type DeliveredMark,
  type GroupChanges,
  type GroupRecord,
  type GroupStore,
  type MemberRecord,
  type ReceiptCounts,
  type RemoveMemberResult,
  type SeqRange,
  type SetRoleResult,
} from './group-store.js';

interface GroupRow {
  id: string;
  name: string;
  description: string | null;
  avatar_url: string | null;
  history_visibility: HistoryVisibility;
  retention_days: number | null;
  created_by: string;
  created_at: number;
}

const toGroup = (row: GroupRow): GroupRecord => ({
  id: row.id,
  name: row.name,
  ...(row.description === null ? {} : { description: row.description }),
  ...(row.avatar_url === null ? {} : { avatarUrl: row.avatar_url }),
  historyVisibility: row.history_visibility,
  ...(row.retention_days === null ? {} : { retentionDays: row.retention_days }),
  createdBy: row.created_by,
  createdAtMs: row.created_at,
});

/** Columns added since the first release, for files made by it: (table, name, declaration). */
const ADDED_COLUMNS: [string, string, string][] = [
  ['groups', 'description', 'TEXT'],
  ['groups', 'avatar_url', 'TEXT'],
  ['groups', 'history_visibility', "TEXT NOT NULL DEFAULT 'all'"],
  ['groups', 'retention_days', 'INTEGER'],
  ['members', 'delivered_seq', 'INTEGER NOT NULL DEFAULT 0'],
];

interface MemberRow {
  group_id: string;
  user_id: string;
  role: MemberRole;
  joined_at: number;
  read_seq: number;
}

const toMember = (row: MemberRow): MemberRecord => ({
  groupId: row.group_id,
  userId: row.user_id,
  role: row.role,
  joinedAtMs: row.joined_at,
  readSeq: row.read_seq,
});

/** The embedded group store: one SQLite file in WAL mode; each mutating call is one transaction. */
export class GroupStoreSqlite implements GroupStore {
  private readonly db: Database.Database;
  private readonly stmt;
  private readonly tx;
  private readonly pointerDb: Database.Database;
  private readonly pointers;
  private readonly ranges: (groupId: string, userId: string) => SeqRange[];

  constructor(path: string, synchronous: 'full' | 'normal') {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    this.db = db;
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.exec(`
      CREATE TABLE IF NOT EXISTS groups (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS members (
        group_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
        joined_at INTEGER NOT NULL, read_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, user_id)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, group_id);
      CREATE TABLE IF NOT EXISTS member_ranges (
        group_id TEXT NOT NULL, user_id TEXT NOT NULL, ranges TEXT NOT NULL, PRIMARY KEY (group_id, user_id)
      ) WITHOUT ROWID;
    `);
    for (const [table, name, declaration] of ADDED_COLUMNS) {
      const columns = db.prepare<[string], { name: string }>('SELECT name FROM pragma_table_info(?)').all(table);
      if (!columns.some((c) => c.name === name)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${name} ${declaration}`);
    }
    // Read pointers and delivered watermarks move often and matter little if the last moments of them are lost with
    // the power: they are written through a second connection to the same file that commits without an fsync (WAL
    // NORMAL); the next commit of the main connection, or a checkpoint, makes them durable too.
    const pointerDb = new Database(path);
    pointerDb.pragma('synchronous = NORMAL');
    this.pointerDb = pointerDb;
    const pointers = {
      raiseReadSeq: pointerDb.prepare(
        'UPDATE members SET read_seq = MAX(read_seq, ?) WHERE group_id = ? AND user_id = ?',
      ),
      raiseDelivered: pointerDb.prepare(
        'UPDATE members SET delivered_seq = MAX(delivered_seq, ?) WHERE group_id = ? AND user_id = ?',
      ),
    };
    this.pointers = pointers;
    const stmt = {
      insertGroup: db.prepare(
        'INSERT INTO groups (id, name, description, avatar_url, history_visibility, retention_days, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      getGroup: db.prepare<[string], GroupRow>('SELECT * FROM groups WHERE id = ?'),
      updateGroup: db.prepare(
        'UPDATE groups SET name = ?, description = ?, avatar_url = ?, history_visibility = ?, retention_days = ? WHERE id = ?',
      ),
      deleteGroup: db.prepare('DELETE FROM groups WHERE id = ?'),
      deleteMembers: db.prepare('DELETE FROM members WHERE group_id = ?'),
      deleteRanges: db.prepare('DELETE FROM member_ranges WHERE group_id = ?'),
      getRanges: db.prepare<[string, string], { ranges: string }>(
        'SELECT ranges FROM member_ranges WHERE group_id = ? AND user_id = ?',
      ),
      putRanges: db.prepare('INSERT OR REPLACE INTO member_ranges (group_id, user_id, ranges) VALUES (?, ?, ?)'),
      counts: db.prepare<[number, number, string], { members: number; delivered: number | null; read: number | null }>(
        'SELECT COUNT(*) AS members, SUM(MAX(delivered_seq, read_seq) >= ?) AS delivered, SUM(read_seq >= ?) AS read FROM members WHERE group_id = ?',
      ),
      readers: pagedStatement<[string, number, string], { user_id: string; read_seq: number }>(
        db,
        'SELECT user_id, read_seq FROM members WHERE group_id = ? AND read_seq >= ? AND user_id > ? ORDER BY user_id LIMIT ?',
      ),
      insertMember: db.prepare(
        'INSERT INTO members (group_id, user_id, role, joined_at, read_seq) VALUES (?, ?, ?, ?, 0)',
      ),
      getMember: db.prepare<[string, string], MemberRow>('SELECT * FROM members WHERE group_id = ? AND user_id = ?'),
      deleteMember: db.prepare('DELETE FROM members WHERE group_id = ? AND user_id = ?'),
      updateRole: db.prepare('UPDATE members SET role = ? WHERE group_id = ? AND user_id = ?'),
      countMembers: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM members WHERE group_id = ?'),
      countAdmins: db.prepare<[string], { n: number }>(
        "SELECT COUNT(*) AS n FROM members WHERE group_id = ? AND role = 'admin'",
      ),
      listMembers: pagedStatement<[string, string], MemberRow>(
        db,
        'SELECT * FROM members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?',
      ),
      listMemberships: pagedStatement<[string, string], MemberRow>(
        db,
        'SELECT * FROM members WHERE user_id = ? AND group_id > ? ORDER BY group_id LIMIT ?',
      ),
      // Answered from the members_by_user index alone.
      listGroupIds: pagedStatement<[string, string], string>(
        db,
        'SELECT group_id FROM members WHERE user_id = ? AND group_id > ? ORDER BY group_id LIMIT ?',
        { pluck: true },
      ),
    };
    this.stmt = stmt;

    /** True when taking `userId` out of the admins would leave other members without one. */
    const wouldOrphan = (groupId: string, userId: string, leaving: boolean): boolean => {
      const member = stmt.getMember.get(groupId, userId);
      if (member?.role !== 'admin') return false;
      const admins = stmt.countAdmins.get(groupId)!.n;
      const members = stmt.countMembers.get(groupId)!.n;
      const remainingMembers = leaving ? members - 1 : members;
      return admins === 1 && remainingMembers > 0;
    };

    const ranges = (groupId: string, userId: string): SeqRange[] =>
      JSON.parse(stmt.getRanges.get(groupId, userId)?.ranges ?? '[]') as SeqRange[];
    const changeRanges = (groupId: string, userId: string, change: { join: number } | { leave: number }) =>
      stmt.putRanges.run(groupId, userId, JSON.stringify(nextRanges(ranges(groupId, userId), change)));
    this.ranges = ranges;

    this.tx = {
      createGroup: db.transaction((group: GroupRecord) => {
        stmt.insertGroup.run(
          group.id,
          group.name,
          group.description ?? null,
          group.avatarUrl ?? null,
          group.historyVisibility,
          group.retentionDays ?? null,
          group.createdBy,
          group.createdAtMs,
        );
        stmt.insertMember.run(group.id, group.createdBy, 'admin', group.createdAtMs);
        changeRanges(group.id, group.createdBy, { join: 0 });
      }),
      updateGroup: db.transaction((groupId: string, changes: GroupChanges): GroupRecord | null => {
        const row = stmt.getGroup.get(groupId);
        if (!row) return null;
        const next: GroupRow = {
          ...row,
          name: changes.name ?? row.name,
          description: changes.description === undefined ? row.description : changes.description,
          avatar_url: changes.avatarUrl === undefined ? row.avatar_url : changes.avatarUrl,
          history_visibility: changes.historyVisibility ?? row.history_visibility,
          retention_days: changes.retentionDays === undefined ? row.retention_days : changes.retentionDays,
        };
        stmt.updateGroup.run(
          next.name,
          next.description,
          next.avatar_url,
          next.history_visibility,
          next.retention_days,
          groupId,
        );
        return toGroup(next);
      }),
      deleteGroup: db.transaction((groupId: string) => {
        stmt.deleteGroup.run(groupId);
        stmt.deleteMembers.run(groupId);
        stmt.deleteRanges.run(groupId);
      }),
      addMember: db.transaction(
        (groupId: string, userId: string, role: MemberRole, max: number, atSeq: number): AddMemberResult => {
          if (!stmt.getGroup.get(groupId)) return 'no-group';
          if (stmt.getMember.get(groupId, userId)) return 'already-member';
          if (stmt.countMembers.get(groupId)!.n >= max) return 'group-full';
          stmt.insertMember.run(groupId, userId, role, Date.now());
          changeRanges(groupId, userId, { join: atSeq });
          return 'added';
        },
      ),
      addMembers: db.transaction(
        (groupId: string, userIds: string[], role: MemberRole, max: number, atSeq: number): AddMembersResult => {
          if (!stmt.getGroup.get(groupId)) return 'no-group';
          const alreadyMembers = userIds.filter((userId) => stmt.getMember.get(groupId, userId));
          const added = userIds.filter((userId) => !alreadyMembers.includes(userId));
          if (stmt.countMembers.get(groupId)!.n + added.length > max) return 'group-full';
          const joinedAt = Date.now();
          for (const userId of added) {
            stmt.insertMember.run(groupId, userId, role, joinedAt);
            changeRanges(groupId, userId, { join: atSeq });
          }
          return { added, alreadyMembers };
        },
      ),
      removeMember: db.transaction(
        (groupId: string, userId: string, keep: boolean, atSeq: number): RemoveMemberResult => {
          if (!stmt.getMember.get(groupId, userId)) return 'not-member';
          if (keep && wouldOrphan(groupId, userId, true)) return 'last-admin';
          stmt.deleteMember.run(groupId, userId);
          changeRanges(groupId, userId, { leave: atSeq });
          return 'removed';
        },
      ),
      raiseDelivered: pointerDb.transaction((marks: DeliveredMark[]) => {
        for (const mark of marks) pointers.raiseDelivered.run(mark.seq, mark.groupId, mark.userId);
      }),
      setRole: db.transaction((groupId: string, userId: string, role: MemberRole, keep: boolean): SetRoleResult => {
        if (!stmt.getMember.get(groupId, userId)) return 'not-member';
        if (keep && role === 'member' && wouldOrphan(groupId, userId, false)) return 'last-admin';
        stmt.updateRole.run(role, groupId, userId);
        return 'changed';
      }),
    };
  }

  async createGroup(group: GroupRecord): Promise<void> {
    this.tx.createGroup(group);
  }

  async getGroup(groupId: string): Promise<GroupRecord | null> {
    const row = this.stmt.getGroup.get(groupId);
    return row ? toGroup(row) : null;
  }

  async updateGroup(groupId: string, changes: GroupChanges): Promise<GroupRecord | null> {
    return this.tx.updateGroup(groupId, changes);
  }

  async deleteGroup(groupId: string): Promise<void> {
    this.tx.deleteGroup(groupId);
  }

  async seqRanges(groupId: string, userId: string): Promise<SeqRange[]> {
    return this.ranges(groupId, userId);
  }

  async raiseDelivered(marks: DeliveredMark[]): Promise<void> {
    this.tx.raiseDelivered(marks);
  }

  async receipts(groupId: string, seq: number, afterUserId: string, limit: number): Promise<ReceiptCounts> {
    const counts = this.stmt.counts.get(seq, seq, groupId)!;
    const readers = this.stmt
      .readers(limit)
      .all(groupId, seq, afterUserId)
      .map((r) => ({ userId: r.user_id, readSeq: r.read_seq }));
    return { members: counts.members, deliveredTo: counts.delivered ?? 0, readBy: counts.read ?? 0, readers };
  }

  async getMember(groupId: string, userId: string): Promise<MemberRecord | null> {
    const row = this.stmt.getMember.get(groupId, userId);
    return row ? toMember(row) : null;
  }

  async addMember(
    groupId: string,
    userId: string,
    role: MemberRole,
    maxMembers: number,
    atSeq = 0,
  ): Promise<AddMemberResult> {
    return this.tx.addMember(groupId, userId, role, maxMembers, atSeq);
  }

  async addMembers(
    groupId: string,
    userIds: string[],
    role: MemberRole,
    maxMembers: number,
    atSeq = 0,
  ): Promise<AddMembersResult> {
    return this.tx.addMembers(groupId, userIds, role, maxMembers, atSeq);
  }

  async removeMember(groupId: string, userId: string, keepAnAdmin: boolean, atSeq = 0): Promise<RemoveMemberResult> {
    return this.tx.removeMember(groupId, userId, keepAnAdmin, atSeq);
  }

  async setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult> {
    return this.tx.setRole(groupId, userId, role, keepAnAdmin);
  }

  async countMembers(groupId: string): Promise<number> {
    return this.stmt.countMembers.get(groupId)!.n;
  }

  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    return this.stmt.listMembers(limit).all(groupId, afterUserId).map(toMember);
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    return this.stmt.listMemberships(limit).all(userId, afterGroupId).map(toMember);
  }

  async listGroupIds(userId: string, afterGroupId: string, limit: number): Promise<string[]> {
    return this.stmt.listGroupIds(limit).all(userId, afterGroupId);
  }

  async setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null> {
    this.pointers.raiseReadSeq.run(seq, groupId, userId);
    return this.stmt.getMember.get(groupId, userId)?.read_seq ?? null;
  }

  async close(): Promise<void> {
    if (this.pointerDb.open) this.pointerDb.close();
    if (this.db.open) this.db.close();
  }
}
