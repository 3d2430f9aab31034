import { type Static, Type } from '@sinclair/typebox';
import { GroupId, HistoryVisibility, Role, Seq, StampedMessage, UserId } from './messages.js';

/**
 * What the REST API answers, as schemas: the routes validate and document their responses with them, and the SDK
 * takes its types from them, so the two cannot drift apart.
 */

const SeqOrZero = Type.Integer({ minimum: 0 });

export const GroupView = Type.Object({
  id: GroupId,
  name: Type.String(),
  description: Type.Optional(Type.String()),
  avatarUrl: Type.Optional(Type.String()),
  historyVisibility: HistoryVisibility,
  retentionDays: Type.Integer({ minimum: 0, description: 'days its messages are kept (0: for good)' }),
  createdBy: UserId,
  createdAt: Type.String({ format: 'date-time' }),
  role: Role,
  lastSeq: SeqOrZero,
  readSeq: SeqOrZero,
  unread: SeqOrZero,
});
export type GroupView = Static<typeof GroupView>;

/** A page of history, with where the kept history begins. */
export const HistoryPageView = Type.Object({
  messages: Type.Array(StampedMessage),
  lastSeq: SeqOrZero,
  retainedFrom: Type.Integer({
    minimum: 1,
    description: 'the lowest seq still kept: every message below it has expired (retention); lastSeq + 1 when all have',
  }),
});
export type HistoryPageView = Static<typeof HistoryPageView>;

export const MemberView = Type.Object({
  userId: UserId,
  role: Role,
  joinedAt: Type.String({ format: 'date-time' }),
  readSeq: SeqOrZero,
});
export type MemberView = Static<typeof MemberView>;

/** Who has a message: counts over all members, and a page of the readers' user ids. */
export const ReceiptsView = Type.Object({
  seq: Seq,
  members: SeqOrZero,
  deliveredTo: SeqOrZero,
  readBy: SeqOrZero,
  readers: Type.Array(UserId),
  next: Type.Optional(Type.String()),
});
export type ReceiptsView = Static<typeof ReceiptsView>;

/** A send's outcome: its seq (the original one for a retried clientMsgId) and the message as stored. */
export const SendView = Type.Object({
  seq: Seq,
  createdAt: Type.String({ format: 'date-time' }),
  clientMsgId: Type.String(),
  duplicate: Type.Boolean({ description: 'true when this clientMsgId was already stored; seq is the original' }),
  message: StampedMessage,
});
export type SendView = Static<typeof SendView>;

export const PushMode = Type.Union([Type.Literal('all'), Type.Literal('mentions'), Type.Literal('muted')]);
export type PushMode = Static<typeof PushMode>;

/** A message that matched a search, with the stretch of its text around the match. */
export const SearchHitView = Type.Object({
  groupId: GroupId,
  seq: Seq,
  senderId: UserId,
  createdAt: Type.String({ format: 'date-time' }),
  snippet: Type.String({ description: 'up to 160 characters of the text around the first match' }),
  highlights: Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 2, maxItems: 2 }), {
    description: '[start, end) of each match in the snippet, in UTF-16 units',
  }),
  message: StampedMessage,
});
export type SearchHitView = Static<typeof SearchHitView>;
