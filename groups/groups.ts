import { randomBytes } from 'node:crypto';
import { ChorusError, type MemberRole } from '../protocol/index.js';
import type { GroupRecord, GroupStore, MemberRecord } from './group-store.js';

export type MembershipChange =
  | { kind: 'added'; groupId: string; userId: string; role: MemberRole; by: string }
  | { kind: 'removed'; groupId: string; userId: string; by: string }
  | { kind: 'role-changed'; groupId: string; userId: string; role: MemberRole; by: string };

/** May return a promise: the local feed waits for it, so a change's REST call returns once this node has followed. */
export type MembershipListener = (change: MembershipChange) => void | Promise<void>;

/**
 * Carries membership changes to every part of Chorus that acts on them (in this process, or on every node).
 *
 * Contract:
 * - Every listener subscribed on any node when a change is published receives it once.
 * - `publish` resolves once every such listener has acted on the change (its promise settled), so a removal is in
 *   force everywhere when the call that made it returns; a node that does not answer is waited for a bounded time only.
 * - The function `subscribe` returns unsubscribes: that listener receives nothing published afterwards.
 */
export interface MembershipFeed {
  publish(change: MembershipChange): Promise<void>;
  subscribe(listener: MembershipListener): () => void;
}

/** The single-process feed: publish resolves once every listener has acted on the change. */
export class MembershipFeedLocal implements MembershipFeed {
  private readonly listeners = new Set<MembershipListener>();

  async publish(change: MembershipChange): Promise<void> {
    await Promise.all([...this.listeners].map((listener) => listener(change)));
  }

  subscribe(listener: MembershipListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export const newGroupId = (): string => `g_${randomBytes(12).toString('base64url')}`;

/**
 * Group rules on top of the group store: who may do what, and the announcement of every membership change once it is
 * stored: on the feed, so that live subscriptions follow at once on every node, then to this node's announcement
 * listeners, exactly once per change (where the user hears of it).
 */
export class Groups {
  private readonly announcers = new Set<MembershipListener>();

  constructor(
    private readonly store: GroupStore,
    private readonly feed: MembershipFeed,
    private readonly maxMembers: number,
  ) {}

  async create(creatorId: string, name: string, memberIds: string[]): Promise<GroupRecord> {
    const others = [...new Set(memberIds)].filter((id) => id !== creatorId);
    if (others.length + 1 > this.maxMembers) throw new ChorusError('GROUP_FULL');
    const group: GroupRecord = { id: newGroupId(), name, createdBy: creatorId, createdAtMs: Date.now() };
    await this.store.createGroup(group);
    await this.changed({ kind: 'added', groupId: group.id, userId: creatorId, role: 'admin', by: creatorId });
    for (const userId of others) await this.addMember(group.id, creatorId, userId, 'member');
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

  async addMember(groupId: string, actorId: string, userId: string, role: MemberRole): Promise<MemberRecord> {
    await this.requireAdmin(groupId, actorId);
    const result = await this.store.addMember(groupId, userId, role, this.maxMembers);
    if (result === 'already-member') throw new ChorusError('ALREADY_MEMBER');
    if (result === 'group-full') throw new ChorusError('GROUP_FULL');
    if (result === 'no-group') throw new ChorusError('GROUP_NOT_FOUND');
    await this.changed({ kind: 'added', groupId, userId, role, by: actorId });
    return (await this.store.getMember(groupId, userId))!;
  }

  /** Admins remove anyone; any member may remove themself (leave). */
  async removeMember(groupId: string, actorId: string, userId: string): Promise<void> {
    if (actorId === userId) await this.requireMember(groupId, actorId);
    else await this.requireAdmin(groupId, actorId);
    const result = await this.store.removeMember(groupId, userId, true);
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

  async listMembers(groupId: string, actorId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    await this.requireMember(groupId, actorId);
    return this.store.listMembers(groupId, afterUserId, limit);
  }

  /** A page of members without an actor check: for server-side work (push, presence), never for a client. */
  async membersPage(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]> {
    return this.store.listMembers(groupId, afterUserId, limit);
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]> {
    return this.store.listMemberships(userId, afterGroupId, limit);
  }

  /** Every group the user is in, for the broker's connection-time ACL cache. */
  async allGroupIds(userId: string): Promise<string[]> {
    const ids: string[] = [];
    for (let after = ''; ; ) {
      const page = await this.store.listMemberships(userId, after, 1000);
      for (const member of page) ids.push(member.groupId);
      if (page.length < 1000) return ids;
      after = page.at(-1)!.groupId;
    }
  }

  async markRead(groupId: string, userId: string, seq: number): Promise<number> {
    await this.requireMember(groupId, userId);
    const readSeq = await this.store.setReadSeq(groupId, userId, seq);
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

  /** This node only: called once for each change made here, after every node has followed it (to tell the user). */
  onAnnounce(listener: MembershipListener): () => void {
    this.announcers.add(listener);
    return () => this.announcers.delete(listener);
  }
}
