import { Type, type Static } from '@sinclair/typebox';
import { GROUP_ID_PATTERN, USER_ID_PATTERN } from './topics.js';

export const Role = Type.Union([Type.Literal('admin'), Type.Literal('member')]);
export type MemberRole = Static<typeof Role>;

export const HistoryVisibility = Type.Union([Type.Literal('all'), Type.Literal('since-joined')], {
  description: 'all: members read the whole retained history; since-joined: only what was sent while they were members',
});
/** Who may see a group's history: everything retained (all), or what was sent while they were a member. */
export type HistoryVisibility = Static<typeof HistoryVisibility>;

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
/** Attachments per message: a few, as chat apps allow (an album, a document or two). */
export const MAX_ATTACHMENTS = 10;

/**
 * A file the app stored elsewhere (Chorus carries no uploads: a client puts the file in the app's object store, by a
 * presigned URL say, and sends its https URL here).
 */
export const Attachment = Type.Object(
  {
    url: Type.String({
      minLength: 9,
      maxLength: 2048,
      pattern: '^https://[^\\s]+$',
      description: 'https only, without user:password@',
    }),
    mimeType: Type.String({
      pattern: '^[a-z]+/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$',
      description: 'type/subtype, e.g. image/jpeg',
    }),
    sizeBytes: Type.Integer({ minimum: 0, maximum: 1e13 }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    width: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    height: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  },
  { additionalProperties: false },
);
export type Attachment = Static<typeof Attachment>;

/** One emoji, or a short code such as :+1: (no spaces, no control characters). */
export const Emoji = Type.String({ minLength: 1, maxLength: 32, pattern: '^[^\\s\\x00-\\x1f\\x7f]+$' });

/**
 * What a client publishes to `groups/{groupId}/messages` (and POSTs to the REST send route). Which fields a message
 * takes depends on its type (checked after the schema, see send-validation):
 * - text, or any app type: body and/or attachments; replyToSeq, mentions, mentionEveryone.
 * - edit: targetSeq (a message of the sender's) and the new body.
 * - delete: targetSeq (the sender's, or anyone's for an admin).
 * - reaction: targetSeq and emoji; remove: true takes the sender's reaction back.
 */
export const SendPayload = Type.Object(
  {
    clientMsgId: ClientMsgId,
    body: Type.Optional(
      Type.String({ minLength: 1, description: 'message text; its UTF-8 size is bounded by config' }),
    ),
    type: Type.Optional(
      Type.String({
        pattern: '^[a-z][a-z0-9._-]{0,31}$',
        description: 'defaults to "text"; edit, delete and reaction are events',
      }),
    ),
    replyToSeq: Type.Optional(Seq),
    mentions: Type.Optional(Type.Array(UserId, { maxItems: MAX_MENTIONS, uniqueItems: true })),
    mentionEveryone: Type.Optional(
      Type.Boolean({ description: '@everyone: notifies every member not muted (admins only, by default)' }),
    ),
    attachments: Type.Optional(Type.Array(Attachment, { minItems: 1, maxItems: MAX_ATTACHMENTS })),
    targetSeq: Type.Optional(Seq),
    emoji: Type.Optional(Emoji),
    remove: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type SendPayload = Static<typeof SendPayload>;

export const ReactionCount = Type.Object({
  emoji: Type.String(),
  count: Type.Integer({ minimum: 1 }),
  mine: Type.Boolean(),
});
export type ReactionCount = Static<typeof ReactionCount>;

/**
 * What every member receives on `groups/{groupId}/messages`, and what the history API returns. Live deliveries carry a
 * message as it was stamped; the history API returns it as it is now: editedAt (body is the latest edit), or deletedAt
 * without body (a tombstone; an edit of it loses its body too), and reactions when asked for.
 */
export const StampedMessage = Type.Object({
  groupId: GroupId,
  seq: Seq,
  senderId: UserId,
  clientMsgId: ClientMsgId,
  type: Type.String(),
  body: Type.Optional(Type.String()),
  replyToSeq: Type.Optional(Seq),
  mentions: Type.Optional(Type.Array(UserId)),
  mentionEveryone: Type.Optional(Type.Literal(true)),
  attachments: Type.Optional(Type.Array(Attachment)),
  targetSeq: Type.Optional(Seq),
  emoji: Type.Optional(Type.String()),
  remove: Type.Optional(Type.Literal(true)),
  createdAt: Type.String({ format: 'date-time' }),
  editedAt: Type.Optional(Type.String({ format: 'date-time' })),
  deletedAt: Type.Optional(Type.String({ format: 'date-time' })),
  reactions: Type.Optional(Type.Array(ReactionCount)),
});
export type StampedMessage = Static<typeof StampedMessage>;

/** Events on `users/{userId}/events`: what concerns only that user. */
export type UserEvent =
  | { type: 'ack'; groupId: string; clientMsgId: string; seq: number; createdAt: string; duplicate: boolean }
  | { type: 'rejected'; groupId?: string; clientMsgId?: string; code: string; message: string }
  | { type: 'member-added'; groupId: string; userId: string; role: MemberRole; by: string }
  | { type: 'member-removed'; groupId: string; userId: string; by: string }
  | { type: 'role-changed'; groupId: string; userId: string; role: MemberRole; by: string }
  | { type: 'presence'; groupId: string; userId: string; online: boolean }
  | { type: 'typing'; groupId: string; userId: string }
  | { type: 'read'; groupId: string; userId: string; seq: number }
  | { type: 'delivered'; groupId: string; marks: { userId: string; seq: number }[] }
  | {
      type: 'group-updated';
      groupId: string;
      by: string;
      name: string;
      description?: string;
      avatarUrl?: string;
      historyVisibility: HistoryVisibility;
      /** The group's own retention, when its admins chose one (absent: the server's). */
      retentionDays?: number;
    }
  | { type: 'group-deleted'; groupId: string; by: string };
