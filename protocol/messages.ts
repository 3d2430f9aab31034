import { Type, type Static } from '@sinclair/typebox';
import { GROUP_ID_PATTERN, USER_ID_PATTERN } from './topics.js';

export const UserId = Type.String({ pattern: USER_ID_PATTERN, description: 'user id: 1-64 of A-Z a-z 0-9 _ . @ -' });
export const GroupId = Type.String({ pattern: GROUP_ID_PATTERN, description: 'group id: 1-64 of A-Z a-z 0-9 _ -' });
export const Seq = Type.Integer({ minimum: 1, description: 'per-group sequence number, from 1, gap-free' });
export const ClientMsgId = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9._:-]+$',
  description: 'sender-chosen id; a retry with the same id never makes a second message',
});

/** Hard upper bound on mentions per message; the byte limit on body comes from config. */
export const MAX_MENTIONS = 50;

/** What a client publishes to `groups/{groupId}/messages` (and POSTs to the REST send route). */
export const SendPayload = Type.Object(
  {
    clientMsgId: ClientMsgId,
    body: Type.String({ minLength: 1, description: 'message text; its UTF-8 size is bounded by config' }),
    type: Type.Optional(Type.String({ pattern: '^[a-z][a-z0-9._-]{0,31}$', description: 'defaults to "text"' })),
    replyToSeq: Type.Optional(Seq),
    mentions: Type.Optional(Type.Array(UserId, { maxItems: MAX_MENTIONS, uniqueItems: true })),
  },
  { additionalProperties: false },
);
export type SendPayload = Static<typeof SendPayload>;

/** What every member receives on `groups/{groupId}/messages`, and what the history API returns. */
export const StampedMessage = Type.Object({
  groupId: GroupId,
  seq: Seq,
  senderId: UserId,
  clientMsgId: ClientMsgId,
  type: Type.String(),
  body: Type.String(),
  replyToSeq: Type.Optional(Seq),
  mentions: Type.Optional(Type.Array(UserId)),
  createdAt: Type.String({ format: 'date-time' }),
});
export type StampedMessage = Static<typeof StampedMessage>;

export type MemberRole = 'admin' | 'member';

/** Events on `users/{userId}/events`: what concerns only that user. */
export type UserEvent =
  | { type: 'ack'; groupId: string; clientMsgId: string; seq: number; createdAt: string; duplicate: boolean }
  | { type: 'rejected'; groupId?: string; clientMsgId?: string; code: string; message: string }
  | { type: 'member-added'; groupId: string; userId: string; role: MemberRole; by: string }
  | { type: 'member-removed'; groupId: string; userId: string; by: string }
  | { type: 'role-changed'; groupId: string; userId: string; role: MemberRole; by: string }
  | { type: 'presence'; userId: string; online: boolean }
  | { type: 'typing'; groupId: string; userId: string }
  | { type: 'read'; groupId: string; userId: string; seq: number };
