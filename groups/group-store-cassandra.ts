import cassandra from 'cassandra-driver';
import type { HistoryVisibility, MemberRole } from '../protocol/index.js';
import type { CassandraSession } from '../cassandra/session.js';
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

/** Rows read per page when a whole partition is scanned (receipt counts, deleting a group). */
const SCAN_PAGE = 5000;
/** Delivered watermarks per batch, and batches written at once, by raiseDelivered. */
export const MARKS_PER_BATCH = 100;
const MARK_BATCHES_IN_FLIGHT = 4;
/** Members added per batch by addMembers: one conditional batch each, well under Cassandra's batch size limits. */
const BULK_CHUNK = 50;

const toGroup = (id: string, row: Row): GroupRecord => {
  const description = row.get('description') as string | null;
  const avatarUrl = row.get('avatar_url') as string | null;
  const retentionDays = row.get('retention_days') as number | null;
  return {
    id,
    name: row.get('name') as string,
    ...(description === null ? {} : { description }),
    ...(avatarUrl === null ? {} : { avatarUrl }),
    historyVisibility: (row.get('history_visibility') as HistoryVisibility | null) ?? 'all',
    ...(retentionDays === null ? {} : { retentionDays }),
    createdBy: row.get('created_by') as string,
    createdAtMs: (row.get('created_at') as Date).getTime(),
  };
};

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
 * with a conditional update and never go back. Delivered watermarks are written with the seq as the cell's write
 * timestamp, so the highest one wins whatever order the nodes' batches land in, without a read or a lightweight
 * transaction (a deleted group's partition tombstone, written at the current time, still shadows them all).
 *
 * A group's size is a counter (group_sizes), moved after each add and removal, so checking the member limit costs one
 * read however big the group (counting the partition cost one row per member: adding the 100,000th member read
 * 100,000 rows). Counters are not idempotent: a process that dies between a membership write and its count, or two
 * removals of one member racing, leave it off by one each time. Groups made before the counter existed have no row
 * and are counted the old way.
 */
export class GroupStoreCassandra implements GroupStore {
  private constructor(private readonly db: CassandraSession) {}

  static async open(db: CassandraSession): Promise<GroupStoreCassandra> {
    await db.ddl([
      `CREATE TABLE IF NOT EXISTS groups (
        id text PRIMARY KEY, name text, created_by text, created_at timestamp, description text, avatar_url text,
        history_visibility text, retention_days int)`,
      // Keyspaces made before these columns existed.
      ...['description text', 'avatar_url text', 'history_visibility text', 'retention_days int'].map(
        (column) => `ALTER TABLE groups ADD IF NOT EXISTS ${column}`,
      ),
      'CREATE TABLE IF NOT EXISTS member_ranges (group_id text, user_id text, ranges text, PRIMARY KEY ((group_id), user_id))',
      'CREATE TABLE IF NOT EXISTS delivered_marks (group_id text, user_id text, seq bigint, PRIMARY KEY ((group_id), user_id))',
      `CREATE TABLE IF NOT EXISTS members_by_group (
        group_id text, user_id text, role text, joined_at timestamp, read_seq bigint, PRIMARY KEY ((group_id), user_id))`,
      `CREATE TABLE IF NOT EXISTS members_by_user (
        user_id text, group_id text, role text, joined_at timestamp, PRIMARY KEY ((user_id), group_id))`,
      'CREATE TABLE IF NOT EXISTS group_admins (group_id text, user_id text, PRIMARY KEY ((group_id), user_id))',
      'CREATE TABLE IF NOT EXISTS group_sizes (group_id text PRIMARY KEY, members counter)',
    ]);
    return new GroupStoreCassandra(db);
  }

  private membershipWrites(groupId: string, userId: string, role: MemberRole, joinedAt: Date) {
    return [
      {
        query: 'INSERT INTO members_by_user (user_id, group_id, role, joined_at) VALUES (?, ?, ?, ?)',
        params: [userId, groupId, role, joinedAt],
      },
      role === 'admin'
        ? { query: 'INSERT INTO group_admins (group_id, user_id) VALUES (?, ?)', params: [groupId, userId] }
        : { query: 'DELETE FROM group_admins WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
    ];
  }

  async createGroup(group: GroupRecord): Promise<void> {
    const created = new Date(group.createdAtMs);
    const result = await this.db.execute(
      'INSERT INTO groups (id, name, description, avatar_url, history_visibility, retention_days, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS',
      [
        group.id,
        group.name,
        group.description ?? null,
        group.avatarUrl ?? null,
        group.historyVisibility,
        group.retentionDays ?? null,
        group.createdBy,
        created,
      ],
    );
    if (!result.wasApplied()) throw new Error(`group ${group.id} exists`);
    await this.db.batch([
      {
        query: 'INSERT INTO members_by_group (group_id, user_id, role, joined_at, read_seq) VALUES (?, ?, ?, ?, 0)',
        params: [group.id, group.createdBy, 'admin', created],
      },
      ...this.membershipWrites(group.id, group.createdBy, 'admin', created),
      {
        query: 'INSERT INTO member_ranges (group_id, user_id, ranges) VALUES (?, ?, ?)',
        params: [group.id, group.createdBy, JSON.stringify(nextRanges([], { join: 0 }))],
      },
    ]);
    await this.countMember(group.id, 1);
  }

  /** Moves the group's size counter (counters cannot share a batch with other tables). */
  private async countMember(groupId: string, by: 1 | -1): Promise<void> {
    await this.db.execute('UPDATE group_sizes SET members = members + ? WHERE group_id = ?', [
      cassandra.types.Long.fromNumber(by),
      groupId,
    ]);
  }

  async getGroup(groupId: string): Promise<GroupRecord | null> {
    const row = (await this.db.execute('SELECT * FROM groups WHERE id = ?', [groupId])).first();
    return row ? toGroup(groupId, row) : null;
  }

  async updateGroup(groupId: string, changes: GroupChanges): Promise<GroupRecord | null> {
    const group = await this.getGroup(groupId);
    if (!group) return null;
    const next: GroupRecord = {
      ...group,
      name: changes.name ?? group.name,
      historyVisibility: changes.historyVisibility ?? group.historyVisibility,
    };
    if (changes.description === null) delete next.description;
    else if (changes.description !== undefined) next.description = changes.description;
    if (changes.avatarUrl === null) delete next.avatarUrl;
    else if (changes.avatarUrl !== undefined) next.avatarUrl = changes.avatarUrl;
    if (changes.retentionDays === null) delete next.retentionDays;
    else if (changes.retentionDays !== undefined) next.retentionDays = changes.retentionDays;
    await this.db.execute(
      'UPDATE groups SET name = ?, description = ?, avatar_url = ?, history_visibility = ?, retention_days = ? WHERE id = ? IF EXISTS',
      [
        next.name,
        next.description ?? null,
        next.avatarUrl ?? null,
        next.historyVisibility,
        next.retentionDays ?? null,
        groupId,
      ],
    );
    return next;
  }

  /** Every member's by-user row first (they name the rows to drop), then the group's partitions and its row. */
  async deleteGroup(groupId: string): Promise<void> {
    for (let after = ''; ; ) {
      const page = await this.listMembers(groupId, after, SCAN_PAGE);
      for (const member of page)
        await this.db.execute('DELETE FROM members_by_user WHERE user_id = ? AND group_id = ?', [
          member.userId,
          groupId,
        ]);
      if (page.length < SCAN_PAGE) break;
      after = page.at(-1)!.userId;
    }
    for (const table of ['members_by_group', 'group_admins', 'member_ranges', 'delivered_marks', 'group_sizes']) {
      await this.db.execute(`DELETE FROM ${table} WHERE group_id = ?`, [groupId]);
    }
    await this.db.execute('DELETE FROM groups WHERE id = ?', [groupId]);
  }

  async seqRanges(groupId: string, userId: string): Promise<SeqRange[]> {
    const row = (
      await this.db.execute('SELECT ranges FROM member_ranges WHERE group_id = ? AND user_id = ?', [groupId, userId])
    ).first();
    return JSON.parse((row?.get('ranges') as string | undefined) ?? '[]') as SeqRange[];
  }

  /** A member's own ranges change only with their own membership: a read and a write, not a transaction. */
  private async changeRanges(
    groupId: string,
    userId: string,
    change: { join: number } | { leave: number },
  ): Promise<void> {
    const ranges = nextRanges(await this.seqRanges(groupId, userId), change);
    await this.db.execute('INSERT INTO member_ranges (group_id, user_id, ranges) VALUES (?, ?, ?)', [
      groupId,
      userId,
      JSON.stringify(ranges),
    ]);
  }

  /**
   * One unlogged batch per group (a single partition: applied as one write, no coordinator fan-out) of at most
   * MARKS_PER_BATCH marks, MARK_BATCHES_IN_FLIGHT at a time.
   */
  async raiseDelivered(marks: DeliveredMark[]): Promise<void> {
    const byGroup = new Map<string, DeliveredMark[]>();
    for (const mark of marks) {
      const list = byGroup.get(mark.groupId);
      if (list) list.push(mark);
      else byGroup.set(mark.groupId, [mark]);
    }
    const batches = [...byGroup.values()].flatMap((list) =>
      Array.from({ length: Math.ceil(list.length / MARKS_PER_BATCH) }, (_, i) =>
        list.slice(i * MARKS_PER_BATCH, (i + 1) * MARKS_PER_BATCH),
      ),
    );
    let next = 0;
    const lane = async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        await this.db.batch(
          batch.map((m) => ({
            query: 'UPDATE delivered_marks USING TIMESTAMP ? SET seq = ? WHERE group_id = ? AND user_id = ?',
            params: [cassandra.types.Long.fromNumber(m.seq), m.seq, m.groupId, m.userId],
          })),
          false,
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(MARK_BATCHES_IN_FLIGHT, batches.length) }, lane));
  }

  /** Scans the group's members and watermarks: a cost per member, paid only when someone asks. */
  async receipts(groupId: string, seq: number, afterUserId: string, limit: number): Promise<ReceiptCounts> {
    const delivered = new Map<string, number>();
    for (let after = ''; ; ) {
      const rows = (
        await this.db.execute('SELECT user_id, seq FROM delivered_marks WHERE group_id = ? AND user_id > ? LIMIT ?', [
          groupId,
          after,
          SCAN_PAGE,
        ])
      ).rows;
      for (const row of rows) delivered.set(row.get('user_id') as string, Number(row.get('seq')));
      if (rows.length < SCAN_PAGE) break;
      after = rows.at(-1)!.get('user_id') as string;
    }
    const counts: ReceiptCounts = { members: 0, deliveredTo: 0, readBy: 0, readers: [] };
    for (let after = ''; ; ) {
      const rows = (
        await this.db.execute(
          'SELECT user_id, read_seq FROM members_by_group WHERE group_id = ? AND user_id > ? LIMIT ?',
          [groupId, after, SCAN_PAGE],
        )
      ).rows;
      for (const row of rows) {
        const userId = row.get('user_id') as string;
        const readSeq = Number(row.get('read_seq') ?? 0);
        counts.members += 1;
        if (Math.max(readSeq, delivered.get(userId) ?? 0) >= seq) counts.deliveredTo += 1;
        if (readSeq < seq) continue;
        counts.readBy += 1;
        if (userId > afterUserId && counts.readers.length < limit) counts.readers.push({ userId, readSeq });
      }
      if (rows.length < SCAN_PAGE) break;
      after = rows.at(-1)!.get('user_id') as string;
    }
    return counts;
  }

  async getMember(groupId: string, userId: string): Promise<MemberRecord | null> {
    const row = (
      await this.db.execute('SELECT * FROM members_by_group WHERE group_id = ? AND user_id = ?', [groupId, userId])
    ).first();
    return row ? toMember(row) : null;
  }

  async addMember(
    groupId: string,
    userId: string,
    role: MemberRole,
    maxMembers: number,
    atSeq = 0,
  ): Promise<AddMemberResult> {
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
    await this.countMember(groupId, 1);
    await this.changeRanges(groupId, userId, { join: atSeq });
    return 'added';
  }

  /**
   * Newcomers go in chunks, each one conditional batch on the group's partition (one Paxos round for the chunk instead
   * of one per member); a chunk that meets a member added meanwhile is read again and retried without them.
   */
  async addMembers(
    groupId: string,
    userIds: string[],
    role: MemberRole,
    maxMembers: number,
    atSeq = 0,
  ): Promise<AddMembersResult> {
    if (!(await this.getGroup(groupId))) return 'no-group';
    const existing = new Set<string>();
    for (let i = 0; i < userIds.length; i += BULK_CHUNK) {
      for (const userId of await this.membersAmong(groupId, userIds.slice(i, i + BULK_CHUNK))) existing.add(userId);
    }
    const newcomers = userIds.filter((userId) => !existing.has(userId));
    if ((await this.countMembers(groupId)) + newcomers.length > maxMembers) return 'group-full';
    const added: string[] = [];
    const joinedAt = new Date();
    for (let i = 0; i < newcomers.length; i += BULK_CHUNK) {
      let chunk = newcomers.slice(i, i + BULK_CHUNK);
      while (chunk.length > 0) {
        const inserted = await this.db.batch(
          chunk.map((userId) => ({
            query:
              'INSERT INTO members_by_group (group_id, user_id, role, joined_at, read_seq) VALUES (?, ?, ?, ?, 0) IF NOT EXISTS',
            params: [groupId, userId, role, joinedAt],
          })),
        );
        if (inserted.wasApplied()) break;
        const raced = new Set(await this.membersAmong(groupId, chunk));
        for (const userId of raced) existing.add(userId);
        chunk = chunk.filter((userId) => !raced.has(userId));
      }
      if (chunk.length === 0) continue;
      await this.db.batch(chunk.flatMap((userId) => this.membershipWrites(groupId, userId, role, joinedAt)));
      await this.db.execute('UPDATE group_sizes SET members = members + ? WHERE group_id = ?', [
        cassandra.types.Long.fromNumber(chunk.length),
        groupId,
      ]);
      const ranges = await this.rangesAmong(groupId, chunk);
      await this.db.batch(
        chunk.map((userId) => ({
          query: 'INSERT INTO member_ranges (group_id, user_id, ranges) VALUES (?, ?, ?)',
          params: [groupId, userId, JSON.stringify(nextRanges(ranges.get(userId) ?? [], { join: atSeq }))],
        })),
        false, // one partition: applied together anyway
      );
      added.push(...chunk);
    }
    return { added, alreadyMembers: userIds.filter((userId) => existing.has(userId)) };
  }

  private async membersAmong(groupId: string, userIds: string[]): Promise<string[]> {
    const rows = (
      await this.db.execute('SELECT user_id FROM members_by_group WHERE group_id = ? AND user_id IN ?', [
        groupId,
        userIds,
      ])
    ).rows;
    return rows.map((row) => row.get('user_id') as string);
  }

  private async rangesAmong(groupId: string, userIds: string[]): Promise<Map<string, SeqRange[]>> {
    const rows = (
      await this.db.execute('SELECT user_id, ranges FROM member_ranges WHERE group_id = ? AND user_id IN ?', [
        groupId,
        userIds,
      ])
    ).rows;
    return new Map(
      rows.map((row) => [row.get('user_id') as string, JSON.parse(row.get('ranges') as string) as SeqRange[]]),
    );
  }

  /** True when taking `userId` out of the admins leaves other members without one. */
  private async wouldOrphan(groupId: string, userId: string, leaving: boolean): Promise<boolean> {
    const admins = (await this.db.execute('SELECT user_id FROM group_admins WHERE group_id = ? LIMIT 2', [groupId]))
      .rows;
    if (admins.length !== 1 || admins[0]!.get('user_id') !== userId) return false;
    const members = (
      await this.db.execute('SELECT user_id FROM members_by_group WHERE group_id = ? LIMIT 2', [groupId])
    ).rows;
    return leaving ? members.length > 1 : true;
  }

  async removeMember(groupId: string, userId: string, keepAnAdmin: boolean, atSeq = 0): Promise<RemoveMemberResult> {
    const member = await this.getMember(groupId, userId);
    if (!member) return 'not-member';
    if (keepAnAdmin && member.role === 'admin' && (await this.wouldOrphan(groupId, userId, true))) return 'last-admin';
    await this.db.batch([
      { query: 'DELETE FROM members_by_group WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
      { query: 'DELETE FROM members_by_user WHERE user_id = ? AND group_id = ?', params: [userId, groupId] },
      { query: 'DELETE FROM group_admins WHERE group_id = ? AND user_id = ?', params: [groupId, userId] },
    ]);
    await this.countMember(groupId, -1);
    await this.changeRanges(groupId, userId, { leave: atSeq });
    return 'removed';
  }

  async setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult> {
    const member = await this.getMember(groupId, userId);
    if (!member) return 'not-member';
    if (
      keepAnAdmin &&
      role === 'member' &&
      member.role === 'admin' &&
      (await this.wouldOrphan(groupId, userId, false))
    ) {
      return 'last-admin';
    }
    await this.db.batch([
      {
        query: 'UPDATE members_by_group SET role = ? WHERE group_id = ? AND user_id = ?',
        params: [role, groupId, userId],
      },
      ...this.membershipWrites(groupId, userId, role, new Date(member.joinedAtMs)),
    ]);
    return 'changed';
  }

  async countMembers(groupId: string): Promise<number> {
    const size = (await this.db.execute('SELECT members FROM group_sizes WHERE group_id = ?', [groupId])).first();
    if (size) return Math.max(0, Number(size.get('members')));
    const row = (
      await this.db.execute('SELECT COUNT(*) AS n FROM members_by_group WHERE group_id = ?', [groupId])
    ).first();
    return Number(row?.get('n') ?? 0);
  }

  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    const result = await this.db.execute('SELECT * FROM members_by_group WHERE group_id = ? AND user_id > ? LIMIT ?', [
      groupId,
      afterUserId,
      limit,
    ]);
    return result.rows.map((row) => toMember(row));
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    const result = await this.db.execute('SELECT * FROM members_by_user WHERE user_id = ? AND group_id > ? LIMIT ?', [
      userId,
      afterGroupId,
      limit,
    ]);
    return Promise.all(
      result.rows.map(async (row) =>
        toMember(row, (await this.getMember(row.get('group_id') as string, userId))?.readSeq ?? 0),
      ),
    );
  }

  async listGroupIds(userId: string, afterGroupId: string, limit: number): Promise<string[]> {
    const result = await this.db.execute(
      'SELECT group_id FROM members_by_user WHERE user_id = ? AND group_id > ? LIMIT ?',
      [userId, afterGroupId, limit],
    );
    return result.rows.map((row) => row.get('group_id') as string);
  }

  async setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null> {
    for (;;) {
      const member = await this.getMember(groupId, userId);
      if (!member) return null;
      if (seq <= member.readSeq) return member.readSeq;
      const moved = await this.db.execute(
        'UPDATE members_by_group SET read_seq = ? WHERE group_id = ? AND user_id = ? IF read_seq = ?',
        [seq, groupId, userId, member.readSeq],
      );
      if (moved.wasApplied()) return seq;
    }
  }

  async close(): Promise<void> {}
}
