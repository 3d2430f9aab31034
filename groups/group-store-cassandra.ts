import type cassandra from 'cassandra-driver';
import type { MemberRole } from '../protocol/index.js';
import type { CassandraSession } from '../sequencer/cassandra-session.js';
import type {
  AddMemberResult,
  GroupRecord,
  GroupStore,
  MemberRecord,
  RemoveMemberResult,
  SetRoleResult,
} from './group-store.js';

type Row = cassandra.types.Row;

const toMember = (row: Row, readSeq?: number): MemberRecord => ({
  groupId: row.get('group_id') as string,
  userId: row.get('user_id') as string,
  role: row.get('role') as MemberRole,
  joinedAtMs: (row.get('joined_at') as Date).getTime(),
  readSeq: readSeq ?? Number(row.get('read_seq') ?? 0),
});

/**
 * The group store on Cassandra: memberships are kept twice, by group and by user, written together in a logged batch;
 * admins are also listed in their own small partition so "is this the last admin" is one cheap read.
 *
 * Cassandra has no multi-row transactions, so two contract clauses hold here per row, not per group: adding a member is
 * a conditional insert (never a duplicate), but the member limit and the last-admin rule are checked just before the
 * write, and simultaneous changes to one group can pass them by the number of changes racing. Read pointers move
 * with a conditional update and never go back.
 */
export class GroupStoreCassandra implements GroupStore {
  private constructor(private readonly db: CassandraSession) {}

  static async open(db: CassandraSession): Promise<GroupStoreCassandra> {
    await db.ddl('CREATE TABLE IF NOT EXISTS groups (id text PRIMARY KEY, name text, created_by text, created_at timestamp)');
    await db.ddl(`CREATE TABLE IF NOT EXISTS members_by_group (
      group_id text, user_id text, role text, joined_at timestamp, read_seq bigint, PRIMARY KEY ((group_id), user_id))`);
    await db.ddl(`CREATE TABLE IF NOT EXISTS members_by_user (
      user_id text, group_id text, role text, joined_at timestamp, PRIMARY KEY ((user_id), group_id))`);
    await db.ddl('CREATE TABLE IF NOT EXISTS group_admins (group_id text, user_id text, PRIMARY KEY ((group_id), user_id))');
    return new GroupStoreCassandra(db);
  }

  private membershipWrites(groupId: string, userId: string, role: MemberRole, joinedAt: Date) {
    return [
      { query: 'INSERT INTO members_by_user (user_id, group_id, role, joined_at) VALUES (?, ?, ?, ?)', params: [userId, groupId, role, joinedAt] },
      role === 'admin'
        ? { query: 'INSERT INTO group_admins (group_id, user_id) VALUES (?, ?)', params: [groupId, userId] }
        : { query: 'DELETE FROM group_admins WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
    ];
  }

  async createGroup(group: GroupRecord): Promise<void> {
    const created = new Date(group.createdAtMs);
    const result = await this.db.execute('INSERT INTO groups (id, name, created_by, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS', [
      group.id,
      group.name,
      group.createdBy,
      created,
    ]);
    if (!result.wasApplied()) throw new Error(`group ${group.id} exists`);
    await this.db.batch([
      {
        query: 'INSERT INTO members_by_group (group_id, user_id, role, joined_at, read_seq) VALUES (?, ?, ?, ?, 0)',
        params: [group.id, group.createdBy, 'admin', created],
      },
      ...this.membershipWrites(group.id, group.createdBy, 'admin', created),
    ]);
  }

  async getGroup(groupId: string): Promise<GroupRecord | null> {
    const row = (await this.db.execute('SELECT * FROM groups WHERE id = ?', [groupId])).first();
    return row
      ? { id: groupId, name: row.get('name') as string, createdBy: row.get('created_by') as string, createdAtMs: (row.get('created_at') as Date).getTime() }
      : null;
  }

  async getMember(groupId: string, userId: string): Promise<MemberRecord | null> {
    const row = (await this.db.execute('SELECT * FROM members_by_group WHERE group_id = ? AND user_id = ?', [groupId, userId])).first();
    return row ? toMember(row) : null;
  }

  async addMember(groupId: string, userId: string, role: MemberRole, maxMembers: number): Promise<AddMemberResult> {
    if (!(await this.getGroup(groupId))) return 'no-group';
    if (await this.getMember(groupId, userId)) return 'already-member';
    if ((await this.countMembers(groupId)) >= maxMembers) return 'group-full';
    const joinedAt = new Date();
    const inserted = await this.db.execute(
      'INSERT INTO members_by_group (group_id, user_id, role, joined_at, read_seq) VALUES (?, ?, ?, ?, 0) IF NOT EXISTS',
      [groupId, userId, role, joinedAt],
    );
    if (!inserted.wasApplied()) return 'already-member';
    await this.db.batch(this.membershipWrites(groupId, userId, role, joinedAt));
    return 'added';
  }

  /** True when taking `userId` out of the admins leaves other members without one. */
  private async wouldOrphan(groupId: string, userId: string, leaving: boolean): Promise<boolean> {
    const admins = (await this.db.execute('SELECT user_id FROM group_admins WHERE group_id = ? LIMIT 2', [groupId])).rows;
    if (admins.length !== 1 || admins[0]!.get('user_id') !== userId) return false;
    const members = (await this.db.execute('SELECT user_id FROM members_by_group WHERE group_id = ? LIMIT 2', [groupId])).rows;
    return leaving ? members.length > 1 : true;
  }

  async removeMember(groupId: string, userId: string, keepAnAdmin: boolean): Promise<RemoveMemberResult> {
    const member = await this.getMember(groupId, userId);
    if (!member) return 'not-member';
    if (keepAnAdmin && member.role === 'admin' && (await this.wouldOrphan(groupId, userId, true))) return 'last-admin';
    await this.db.batch([
      { query: 'DELETE FROM members_by_group WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
      { query: 'DELETE FROM members_by_user WHERE user_id = ? AND group_id = ?', params: [userId, groupId] },
      { query: 'DELETE FROM group_admins WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
    ]);
    return 'removed';
  }

  async setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult> {
    const member = await this.getMember(groupId, userId);
    if (!member) return 'not-member';
    if (keepAnAdmin && role === 'member' && member.role === 'admin' && (await this.wouldOrphan(groupId, userId, false))) {
      return 'last-admin';
    }
    await this.db.batch([
      { query: 'UPDATE members_by_group SET role = ? WHERE group_id = ? AND user_id = ?', params: [role, groupId, userId] },
      ...this.membershipWrites(groupId, userId, role, new Date(member.joinedAtMs)),
    ]);
    return 'changed';
  }

  async countMembers(groupId: string): Promise<number> {
    const row = (await this.db.execute('SELECT COUNT(*) AS n FROM members_by_group WHERE group_id = ?', [groupId])).first();
    return Number(row?.get('n') ?? 0);
  }

  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    const result = await this.db.execute('SELECT * FROM members_by_group WHERE group_id = ? AND user_id > ? LIMIT ?', [groupId, afterUserId, limit]);
    return result.rows.map((row) => toMember(row));
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    const result = await this.db.execute('SELECT * FROM members_by_user WHERE user_id = ? AND group_id > ? LIMIT ?', [userId, afterGroupId, limit]);
    return Promise.all(
      result.rows.map(async (row) => toMember(row, (await this.getMember(row.get('group_id') as string, userId))?.readSeq ?? 0)),
    );
  }

  async setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null> {
    for (;;) {
      const member = await this.getMember(groupId, userId);
      if (!member) return null;
      if (seq <= member.readSeq) return member.readSeq;
      const moved = await this.db.execute('UPDATE members_by_group SET read_seq = ? WHERE group_id = ? AND user_id = ? IF read_seq = ?', [
        seq,
        groupId,
        userId,
        member.readSeq,
      ]);
      if (moved.wasApplied()) return seq;
    }
  }

  async close(): Promise<void> {}
}
