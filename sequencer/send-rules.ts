import { ChorusError, isEventType, type MemberRole, messageTypeOf, type SendPayload } from '../protocol/index.js';
import type { MessageLog } from './message-log.js';

export interface SendRulesOptions {
  /** The sender's role in the group (null: not a member); read only for the sends whose rule depends on it. */
  roleOf: (groupId: string, userId: string) => Promise<MemberRole | null>;
  /** The group's retention: edits and deletes of messages older than it are refused (TARGET_EXPIRED); 0: any age. */
  retentionMs: (groupId: string) => Promise<number>;
  /** Who may mention @everyone. */
  mentionEveryone: 'admins' | 'members';
}

/**
 * The rules a valid send must also pass against the group's state, checked by the group's writer before the send is
 * queued: a reply names a stored message; an edit, delete or reaction names a message (not an event) that it may
 * change; @everyone is the admins' (by default). Every refusal is a ChorusError with its own code.
 *
 * A retry with the same clientMsgId passes the same checks (a delete of a deleted message is allowed for that reason),
 * and the log's dedup then answers with the original seq. Only an edit or reaction whose target was deleted between
 * the first attempt and the retry is refused (TARGET_DELETED) instead.
 */
export class SendRules {
  constructor(
    private readonly log: MessageLog,
    private readonly options: SendRulesOptions,
  ) {}

  async check(groupId: string, senderId: string, send: SendPayload): Promise<void> {
    if (send.replyToSeq !== undefined && send.replyToSeq > (await this.log.lastSeq(groupId))) {
      throw new ChorusError('REPLY_TO_UNKNOWN', `no message ${send.replyToSeq} in this group`);
    }
    if (
      send.mentionEveryone &&
      this.options.mentionEveryone === 'admins' &&
      (await this.options.roleOf(groupId, senderId)) !== 'admin'
    ) {
      throw new ChorusError('NOT_ADMIN', 'only group admins may mention @everyone');
    }
    if (send.targetSeq !== undefined) await this.checkTarget(groupId, senderId, send.type ?? 'text', send.targetSeq);
  }

  /** Whether an event of `type` may name message `targetSeq` (its declaration in protocol/message-types.ts says). */
  private async checkTarget(groupId: string, senderId: string, type: string, targetSeq: number): Promise<void> {
    const event = messageTypeOf(type).event;
    if (!event) return; // send-validation lets targetSeq through for events only
    const [target] = await this.log.readAfter(groupId, targetSeq - 1, 1);
    if (target?.seq !== targetSeq) {
      // Seqs have no gaps: one at or below the last that cannot be read has expired.
      if (targetSeq <= (await this.log.lastSeq(groupId))) throw new ChorusError('TARGET_EXPIRED');
      throw new ChorusError('TARGET_UNKNOWN', `no message ${targetSeq} in this group`);
    }
    if (isEventType(target.type))
      throw new ChorusError('TARGET_UNKNOWN', `message ${targetSeq} is a ${target.type} event`);
    if (event.withinRetention) {
      // Not yet removed is not kept: the pruner (or the TTL) takes it at any moment.
      const retentionMs = await this.options.retentionMs(groupId);
      if (retentionMs > 0 && Date.parse(target.createdAt) < Date.now() - retentionMs)
        throw new ChorusError('TARGET_EXPIRED');
    }
    if (target.senderId !== senderId) {
      if (event.of === 'own') throw new ChorusError('NOT_SENDER', `only the sender of a message may ${type} it`);
      if (event.of === 'own-or-admin' && (await this.options.roleOf(groupId, senderId)) !== 'admin') {
        throw new ChorusError('NOT_SENDER', `only the sender of a message or a group admin may ${type} it`);
      }
    }
    if (!event.ofDeleted && target.deletedAt !== undefined) throw new ChorusError('TARGET_DELETED');
  }
}
