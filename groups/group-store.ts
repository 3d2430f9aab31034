import type { HistoryVisibility, MemberRole } from '../protocol/index.js';

export interface GroupRecord {
  id: string;
  name: string;
  description?: string;
  avatarUrl?: string;
  historyVisibility: HistoryVisibility;
  /** Days the group keeps its messages, when its admins chose (at most the operator's); absent: the operator's. */
  retentionDays?: number;
  createdBy: string;
  /** Milliseconds since the epoch. */
  createdAtMs: number;
}

/** What an admin may change of a group; null clears an optional field. */
export interface GroupChanges {
  name?: string;
  description?: string | null;
  avatarUrl?: string | null;
  historyVisibility?: HistoryVisibility;
  retentionDays?: number | null;
}

/** Seqs a member could see while a member: (after, until], until null while still a member. */
export interface SeqRange {
  after: number;
  until: number | null;
}

/** Who has a message: counts over all members, and one page of those who read it, by user id. */
export interface ReceiptCounts {
  members: number;
  /** Members whose delivered watermark or read pointer is at or past the seq. */
  deliveredTo: number;
  readBy: number;
  readers: { userId: string; readSeq: number }[];
}

/** A member's delivered watermark: the highest seq that reached one of their devices. */
export interface DeliveredMark {
  groupId: string;
  userId: string;
  seq: number;
}

export interface MemberRecord {
  groupId: string;
  userId: string;
  role: MemberRole;
  joinedAtMs: number;
  /** Highest seq the member has marked read; 0 when none. */
  readSeq: number;
}

/** Seq ranges kept per member: older ones are dropped (that history is then hidden under since-joined). */
export const MAX_RANGES = 50;

/** Opens a range (join) or closes the open one (leave), keeping the newest MAX_RANGES. */
export function nextRanges(ranges: SeqRange[], change: { join: number } | { leave: number }): SeqRange[] {
  const next = ranges.filter((r) => r.until !== null);
  const open = ranges.find((r) => r.until === null);
  if ('join' in change) next.push(open ?? { after: change.join, until: null });
  else if (open) next.push({ after: open.after, until: Math.max(open.after, change.leave) });
  return next.slice(-MAX_RANGES);
}

export type AddMemberResult = 'added' | 'already-member' | 'group-full' | 'no-group';
/** Who was added, and who already was a member (left as they were); both in the order asked. */
export type AddMembersResult = { added: string[]; alreadyMembers: string[] } | 'group-full' | 'no-group';
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
 * - Seq ranges (history visibility): createGroup and addMember open a range after `atSeq` for the member, removeMember
 *   closes it at `atSeq`; a member's earlier ranges are kept across leave and re-join (the newest MAX_RANGES).
 * - raiseDelivered moves delivered watermarks forward only, whatever order the marks arrive in; one call is one batch.
 * - deleteGroup removes the group, its memberships, pointers, watermarks and ranges; afterwards getGroup is null.
 */
export interface GroupStore {
  createGroup(group: GroupRecord): Promise<void>;
  getGroup(groupId: string): Promise<GroupRecord | null>;
  /** Applies the changes; null when there is no such group. */
  updateGroup(groupId: string, changes: GroupChanges): Promise<GroupRecord | null>;
  deleteGroup(groupId: string): Promise<void>;
  getMember(groupId: string, userId: string): Promise<MemberRecord | null>;
  addMember(
    groupId: string,
    userId: string,
    role: MemberRole,
    maxMembers: number,
    atSeq?: number,
  ): Promise<AddMemberResult>;
  /**
   * Adds several users (distinct ids) with one role, as addMember one by one would, in far fewer writes. Users already
   * in the group are left as they are. 'group-full' when the newcomers would take the group past `maxMembers`: then
   * none is added (the check has addMember's atomicity on each backend).
   */
  addMembers(
    groupId: string,
    userIds: string[],
    role: MemberRole,
    maxMembers: number,
    atSeq?: number,
  ): Promise<AddMembersResult>;
  removeMember(groupId: string, userId: string, keepAnAdmin: boolean, atSeq?: number): Promise<RemoveMemberResult>;
  /** The member's seq ranges, oldest first; empty for one who never was a member. */
  seqRanges(groupId: string, userId: string): Promise<SeqRange[]>;
  raiseDelivered(marks: DeliveredMark[]): Promise<void>;
  /** Receipt counts of `seq`; readers paged by user id after `afterUserId`. */
  receipts(groupId: string, seq: number, afterUserId: string, limit: number): Promise<ReceiptCounts>;
  setRole(groupId: string, userId: string, role: MemberRole, keepAnAdmin: boolean): Promise<SetRoleResult>;
  countMembers(groupId: string): Promise<number>;
  listMembers(groupId: string, afterUserId: string, limit: number): Promise<MemberRecord[]>;
  listMemberships(userId: string, afterGroupId: string, limit: number): Promise<MemberRecord[]>;
  /**
   * The ids of the user's groups after `afterGroupId`, ordered, at most `limit`: what listMemberships pages through,
   * without the member rows (read for every connection, so kept to the user's own index).
   */
  listGroupIds(userId: string, afterGroupId: string, limit: number): Promise<string[]>;
  setReadSeq(groupId: string, userId: string, seq: number): Promise<number | null>;
  close(): Promise<void>;
}
