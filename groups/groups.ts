import { randomBytes } from 'node:crypto';
import { ChorusError, type HistoryVisibility, type MemberRole } from '../protocol/index.js';
import type { GroupChanges, GroupRecord, GroupStore, MemberRecord, ReceiptCounts, SeqRange } from './group-store.js';
import { MembershipCache } from './membership-cache.js';
import { Retention } from './retention.js';
import type { MembershipChange, MembershipFeed, MembershipListener } from './membership-feed.js';

/** Groups whose member count is kept (each a few bytes; the least recently asked go first). */
const MAX_COUNTED_GROUPS = 10_000;

/** What concerns a group's members as a whole, told to each of them (from the node where it happened). */
export type GroupAnnouncement =
  | { kind: 'group-updated'; group: GroupRecord; by: string }
  | { kind: 'group-deleted'; groupId: string; by: string; memberIds: string[] };

export interface NewGroup {
  name: string;
  members?: string[];
  description?: string;
  avatarUrl?: string;
  historyVisibility?: HistoryVisibility;
  retentionDays?: number;
}

export const newGroupId = (): string => `g_${randomBytes(12).toString('base64url')}`;

/**
 * Group rules on top of the group store: who may do what, and the announcement of every membership change once it is
 * stored: on the feed, so that live subscriptions follow at once on every node, then to this node's announcement
 * listeners, exactly once per change (where the user hears of it).
 */
export class Groups {
  private readonly announcers = new Set<MembershipListener>();
  private readonly groupAnnouncers = new Set<(announcement: GroupAnnouncement) => void>();
  /** Member counts, for what depends on a group's size: one for the node's live events and push alike. */
  private readonly memberCounts: MembershipCache<number>;

  /**
   * @param log the message log's lastSeq (where a member's visible history starts or ends when they join or leave)
   *   and deleteGroup (a deleted group's messages go with it).
   */
  constructor(
    private readonly store: GroupStore,
    private readonly feed: MembershipFeed,
    private readonly maxMembers: number,
    private readonly log: { lastSeq(groupId: string): Promise<number>; deleteGroup(groupId: string): Promise<void> } = {
      lastSeq: async () => 0,
      deleteGroup: async () => undefined,
    },
    /** Checks the retention a group's admins choose, and hears that it changed. */
    private readonly retention: Retention = new Retention(store, 0),
  ) {
    this.memberCounts = new MembershipCache<number>(this, { maxWeight: MAX_COUNTED_GROUPS });
  }

  async create(creatorId: string, spec: NewGroup): Promise<GroupRecord> {
    const others = [...new Set(spec.members ?? [])].filter((id) => id !== creatorId);
    if (others.length + 1 > this.maxMembers) throw new ChorusError('GROUP_FULL');
    if (spec.retentionDays !== undefined) this.retention.check(spec.retentionDays);
    const group: GroupRecord = {
      id: newGroupId(),
      name: spec.name,
      historyVisibility: spec.historyVisibility ?? 'all',
      createdBy: creatorId,
      createdAtMs: Date.now(),
    };
    if (spec.description !== undefined) group.description = spec.description;
    if (spec.avatarUrl !== undefined) group.avatarUrl = spec.avatarUrl;
    if (spec.retentionDays !== undefined) group.retentionDays = spec.retentionDays;
    await this.store.createGroup(group);
    await this.changed({ kind: 'added', groupId: group.id, userId: creatorId, role: 'admin', by: creatorId });
    if (others.length > 0) await this.addMembers(group.id, creatorId, others, 'member');
    return group;
  }

  async getGroup(groupId: string): Promise<GroupRecord> {
    const group = await this.store.getGroup(groupId);
    if (!group) throw new ChorusError('GROUP_NOT_FOUND');
    return group;
  }

  /** The caller's membership; GROUP_NOT_FOUND for an unknown group, NOT_A_MEMBER otherwise. */
  async requireMember(groupId: string, userId: string): Promise<MemberRecord> {
    const member = await this.store.getMember(groupId, userId);
    if (member) return member;
    await this.getGroup(groupId);
    throw new ChorusError('NOT_A_MEMBER');
  }

  private async requireAdmin(groupId: string, actorId: string): Promise<void> {
    const actor = await this.requireMember(groupId, actorId);
    if (actor.role !== 'admin') throw new ChorusError('NOT_ADMIN');
  }

  /** The user's role, or null for a non-member (no error: for rules that depend on it). */
  async roleOf(groupId: string, userId: string): Promise<MemberRole | null> {
    return (await this.store.getMember(groupId, userId))?.role ?? null;
  }

  /** Admins change the name, description, avatar, history visibility or retention; every member is told. */
  async update(groupId: string, actorId: string, changes: GroupChanges): Promise<GroupRecord> {
    await this.requireAdmin(groupId, actorId);
    if (typeof changes.retentionDays === 'number') this.retention.check(changes.retentionDays);
    const group = await this.store.updateGroup(groupId, changes);
    if (!group) throw new ChorusError('GROUP_NOT_FOUND');
    this.retention.forget(groupId);
    this.announceGroup({ kind: 'group-updated', group, by: actorId });
    return group;
  }

  /**
   * Admins delete a group: its memberships end first (on every node, live subscriptions too, so nothing more can be
   * sent), then its messages go; the former members are told.
   */
  async delete(groupId: string, actorId: string): Promise<void> {
    await this.requireAdmin(groupId, actorId);
    const memberIds: string[] = [];
    for await (const page of this.memberPages(groupId, 1000)) for (const member of page) memberIds.push(member.userId);
    await this.store.deleteGroup(groupId);
    await this.feed.publish({ kind: 'group-deleted', groupId, userId: actorId, by: actorId });
    await this.log.deleteGroup(groupId);
    this.announceGroup({ kind: 'group-deleted', groupId, by: actorId, memberIds });
  }

  /**
   * The seq ranges this member may read: everything up to the group's end under `all`, their own membership ranges
   * under `since-joined`. The caller has checked membership.
   */
  async visibleRanges(groupId: string, userId: string): Promise<SeqRange[]> {
    const group = await this.getGroup(groupId);
    const ranges = group.historyVisibility === 'all' ? [] : await this.store.seqRanges(groupId, userId);
    // No ranges: the whole history (also for a member who joined before ranges were kept).
    return ranges.length > 0 ? ranges : [{ after: 0, until: null }];
  }

  async receipts(groupId: string, seq: number, afterUserId: string, limit: number): Promise<ReceiptCounts> {
    return this.store.receipts(groupId, seq, afterUserId, limit);
  }

  async addMember(groupId: string, actorId: string, userId: string, role: MemberRole): Promise<MemberRecord> {
    await this.requireAdmin(groupId, actorId);
    const result = await this.store.addMember(groupId, userId, role, this.maxMembers, await this.log.lastSeq(groupId));
    if (result === 'already-member') throw new ChorusError('ALREADY_MEMBER');
    if (result === 'group-full') throw new ChorusError('GROUP_FULL');
    if (result === 'no-group') throw new ChorusError('GROUP_NOT_FOUND');
    await this.changed({ kind: 'added', groupId, userId, role, by: actorId });
    return (await this.store.getMember(groupId, userId))!;
  }

  /** Admins add many users at once; each newcomer is announced as addMember would; members already there are listed. */
  async addMembers(
    groupId: string,
    actorId: string,
    userIds: string[],
    role: MemberRole,
  ): Promise<{ added: string[]; alreadyMembers: string[] }> {
    await this.requireAdmin(groupId, actorId);
    const result = await this.store.addMembers(
      groupId,
      [...new Set(userIds)],
      role,
      this.maxMembers,
      await this.log.lastSeq(groupId),
    );
    if (result === 'group-full') throw new ChorusError('GROUP_FULL');
    if (result === 'no-group') throw new ChorusError('GROUP_NOT_FOUND');
    for (const userId of result.added) await this.changed({ kind: 'added', groupId, userId, role, by: actorId });
    return result;
  }

  /** Admins remove anyone; any member may remove themself (leave). */
  async removeMember(groupId: string, actorId: string, userId: string): Promise<void> {
    if (actorId === userId) await this.requireMember(groupId, actorId);
    else await this.requireAdmin(groupId, actorId);
    const result = await this.store.removeMember(groupId, userId, true, await this.log.lastSeq(groupId));
    if (result === 'not-member') throw new ChorusError('MEMBER_NOT_FOUND');
    if (result === 'last-admin') throw new ChorusError('LAST_ADMIN');
    await this.changed({ kind: 'removed', groupId, userId, by: actorId });
  }

  async setRole(groupId: string, actorId: string, userId: string, role: MemberRole): Promise<MemberRecord> {
    await this.requireAdmin(groupId, actorId);
    const result = await this.store.setRole(groupId, userId, role, true);
    if (result === 'not-member') throw new ChorusError('MEMBER_NOT_FOUND');
    if (result === 'last-admin') throw new ChorusError('LAST_ADMIN');
    await this.changed({ kind: 'role-changed', groupId, userId, role, by: actorId });
    return (await this.store.getMember(groupId, userId))!;
  }

  async countMembers(groupId: string): Promise<number> {
    return this.store.countMembers(groupId);
  }

  /**
   * The member count as kept until the group's next membership change (at most a minute old: see MembershipCache),
   * for decisions by group size on hot paths; rejects when the store cannot say.
   */
  keptMemberCount(groupId: string): Promise<number> {
    return this.memberCounts.get(groupId, () => this.store.countMembers(groupId));
  }

  async listMembers(groupId: string, actorId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    await this.requireMember(groupId, actorId);
    return this.store.listMembers(groupId, afterUserId, limit);
  }

  /** A page of members without an actor check: for server-side work (push, presence), never for a client. */
  async membersPage(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    return this.store.listMembers(groupId, afterUserId, limit);
  }

  /** The user's membership of the group, or null, without an actor check: server-side work only. */
  async findMember(groupId: string, userId: string): Promise<MemberRecord | null> {
    return this.store.getMember(groupId, userId);
  }

  /** Every member, a page of `pageSize` at a time by user id, without an actor check: server-side work only. */
  async *memberPages(groupId: string, pageSize: number): AsyncGenerator<MemberRecord[]> {
    for (let after = ''; ; ) {
      const page = await this.store.listMembers(groupId, after, pageSize);
      yield page;
      if (page.length < pageSize) return;
      after = page.at(-1)!.userId;
    }
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    return this.store.listMemberships(userId, afterGroupId, limit);
  }

  /** Every group the user is in, for the broker's connection-time ACL cache. */
  async allGroupIds(userId: string): Promise<string[]> {
    const ids: string[] = [];
    for (let after = ''; ; ) {
      const page = await this.store.listGroupIds(userId, after, 1000);
      ids.push(...page);
      if (page.length < 1000) return ids;
      after = page.at(-1)!;
    }
  }

  /** Moves the member's read pointer forward; NOT_A_MEMBER (or GROUP_NOT_FOUND) for anyone else. */
  async markRead(groupId: string, userId: string, seq: number): Promise<number> {
    const readSeq = await this.store.setReadSeq(groupId, userId, seq);
    if (readSeq === null) await this.requireMember(groupId, userId); // throws the right code
    if (readSeq === null) throw new ChorusError('NOT_A_MEMBER');
    return readSeq;
  }

  private async changed(change: MembershipChange): Promise<void> {
    await this.feed.publish(change);
    await Promise.all([...this.announcers].map((announce) => announce(change)));
  }

  /** Every node: called for every change, made here or on another node (live subscriptions follow these). */
  subscribe(listener: MembershipListener): () => void {
    return this.feed.subscribe(listener);
  }

  /** This node: called when it may have missed changes; memberships derived from them must be read again. */
  onMissed(listener: () => void): () => void {
    return this.feed.onMissed(listener);
  }

  /** This node only: called once for each change made here, after every node has followed it (to tell the user). */
  onAnnounce(listener: MembershipListener): () => void {
    this.announcers.add(listener);
    return () => this.announcers.delete(listener);
  }

  /** This node only: group updates and deletions made here, to tell the members. */
  onGroupAnnounce(listener: (announcement: GroupAnnouncement) => void): () => void {
    this.groupAnnouncers.add(listener);
    return () => this.groupAnnouncers.delete(listener);
  }

  private announceGroup(announcement: GroupAnnouncement): void {
    for (const announce of this.groupAnnouncers) announce(announcement);
  }
}
