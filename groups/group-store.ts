import type { MemberRole } from '../protocol/index.js';

export interface GroupRecord {
  id: string;
  name: string;
  createdBy: string;
  /** Milliseconds since the epoch. */
  createdAtMs: number;
}

export interface MemberRecord {
  groupId: string;
  userId: string;
  role: MemberRole;
  joinedAtMs: number;
  /** Highest seq the member has marked read; 0 when none. */
  readSeq: number;
}

export type AddMemberResult = 'added' | 'already-member' | 'group-full' | 'no-group';
export type RemoveMemberResult = 'removed' | 'not-member' | 'last-admin';
export type SetRoleResult = 'changed' | 'not-member' | 'last-admin';

/**
 * The group store: groups, memberships (readable by group and by user) and read pointers.
 *
 * Contract:
 * - createGroup stores the group and its creator as admin atomically; it rejects when the id exists.
 * - addMember is atomic with its checks: it never takes a group past maxMembers, never duplicates a member.
 * - removeMember and setRole with keepAnAdmin refuse ('last-admin') to leave a group that still has members without
 *   an admin; the check and the write are atomic.
 * - setReadSeq only moves a pointer forward and returns the pointer as stored afterwards; a non-member is a no-op
 *   that returns null.
 * - Listings are ordered by id (members by userId, memberships by groupId) and paged by the last id seen ('' = start).
 */
export interface GroupStore {
  createGroup(group: GroupRecord): Promise<void>;
  getGroup(groupId: string): Promise<GroupRecord | null>;
  getMember(groupId: string, userId: string): Promise<MemberRecord | null>;
  addMember(groupId: string, userId: string, role: MemberRole, maxMembers: number): Promise<AddMemberResult>;
  removeMember(groupId: string, userId: string, keepAnAdmin: boolean): Promise<RemoveMemberResult>;
  setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult>;
  countMembers(groupId: string): Promise<number>;
  listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]>;
  listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]>;
  setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null>;
  close(): Promise<void>;
}
