import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { MemberRole } from '../protocol/index.js';
import type {
  AddMemberResult,
  GroupRecord,
  GroupStore,
  MemberRecord,
  RemoveMemberResult,
  SetRoleResult,
} from './group-store.js';

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

  constructor(path: string, synchronous: 'full' | 'normal') {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
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
    `);
    const stmt = {
      insertGroup: db.prepare('INSERT INTO groups (id, name, created_by, created_at) VALUES (?, ?, ?, ?)'),
      getGroup: db.prepare<[string], { id: string; name: string; created_by: string; created_at: number }>(
        'SELECT * FROM groups WHERE id = ?',
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
      listMembers: db.prepare<[string, string, number], MemberRow>(
        'SELECT * FROM members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?',
      ),
      listMemberships: db.prepare<[string, string, number], MemberRow>(
        'SELECT * FROM members WHERE user_id = ? AND group_id > ? ORDER BY group_id LIMIT ?',
      ),
      raiseReadSeq: db.prepare(
        'UPDATE members SET read_seq = MAX(read_seq, ?) WHERE group_id = ? AND user_id = ?',
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

    this.tx = {
      createGroup: db.transaction((group: GroupRecord) => {
        stmt.insertGroup.run(group.id, group.name, group.createdBy, group.createdAtMs);
        stmt.insertMember.run(group.id, group.createdBy, 'admin', group.createdAtMs);
      }),
      addMember: db.transaction((groupId: string, userId: string, role: MemberRole, max: number): AddMemberResult => {
        if (!stmt.getGroup.get(groupId)) return 'no-group';
        if (stmt.getMember.get(groupId, userId)) return 'already-member';
        if (stmt.countMembers.get(groupId)!.n >= max) return 'group-full';
        stmt.insertMember.run(groupId, userId, role, Date.now());
        return 'added';
      }),
      removeMember: db.transaction((groupId: string, userId: string, keep: boolean): RemoveMemberResult => {
        if (!stmt.getMember.get(groupId, userId)) return 'not-member';
        if (keep && wouldOrphan(groupId, userId, true)) return 'last-admin';
        stmt.deleteMember.run(groupId, userId);
        return 'removed';
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
    return row ? { id: row.id, name: row.name, createdBy: row.created_by, createdAtMs: row.created_at } : null;
  }

  async getMember(groupId: string, userId: string): Promise<MemberRecord | null> {
    const row = this.stmt.getMember.get(groupId, userId);
    return row ? toMember(row) : null;
  }

  async addMember(groupId: string, userId: string, role: MemberRole, maxMembers: number): Promise<AddMemberResult> {
    return this.tx.addMember(groupId, userId, role, maxMembers);
  }

  async removeMember(groupId: string, userId: string, keepAnAdmin: boolean): Promise<RemoveMemberResult> {
    return this.tx.removeMember(groupId, userId, keepAnAdmin);
  }

  async setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult> {
    return this.tx.setRole(groupId, userId, role, keepAnAdmin);
  }

  async countMembers(groupId: string): Promise<number> {
    return this.stmt.countMembers.get(groupId)!.n;
  }

  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    return this.stmt.listMembers.all(groupId, afterUserId, limit).map(toMember);
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    return this.stmt.listMemberships.all(userId, afterGroupId, limit).map(toMember);
  }

  async setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null> {
    this.stmt.raiseReadSeq.run(seq, groupId, userId);
    return this.stmt.getMember.get(groupId, userId)?.read_seq ?? null;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
