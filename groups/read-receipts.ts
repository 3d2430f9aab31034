import type { UserEvent } from '../protocol/index.js';
import type { Groups } from './groups.js';

/**
 * Moving a member's read pointer, over REST (`PUT /v1/groups/:id/read`) or MQTT (`groups/{g}/read`) alike: forward
 * only, capped at the group's last seq; when it moved, the group's other members are told (a `read` event, in groups
 * up to liveEventsMaxGroupMembers: see the broker's tellGroup).
 */
export class ReadReceipts {
  constructor(
    private readonly groups: Groups,
    private readonly log: { lastSeq(groupId: string): Promise<number> },
    private readonly tell: (groupId: string, event: UserEvent, except: string) => Promise<void>,
  ) {}

  /** NOT_A_MEMBER (or GROUP_NOT_FOUND) for anyone but a member. */
  async markRead(groupId: string, userId: string, seq: number): Promise<{ readSeq: number; unread: number }> {
    const [before, lastSeq] = await Promise.all([
      this.groups.requireMember(groupId, userId),
      this.log.lastSeq(groupId),
    ]);
    const readSeq = await this.groups.markRead(groupId, userId, Math.min(seq, lastSeq));
    // A receipt only when the pointer moved; told after the answer is on its way, never holding it up.
    if (readSeq > before.readSeq) void this.tell(groupId, { type: 'read', groupId, userId, seq: readSeq }, userId);
    return { readSeq, unread: Math.max(0, lastSeq - readSeq) };
  }
}
