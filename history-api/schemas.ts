import { Type, type Static } from '@sinclair/typebox';
import { GroupId, Seq, UserId, errorCodes } from '../protocol/index.js';

export const ErrorResponse = Type.Object(
  {
    code: Type.Union(errorCodes.map((code) => Type.Literal(code))),
    message: Type.String(),
    details: Type.Optional(Type.Unknown()),
  },
  { $id: 'ErrorResponse', description: 'every 4xx/5xx body; branch on code' },
);

export const Role = Type.Union([Type.Literal('admin'), Type.Literal('member')]);

export const GroupView = Type.Object({
  id: GroupId,
  name: Type.String(),
  createdBy: UserId,
  createdAt: Type.String({ format: 'date-time' }),
  role: Role,
  lastSeq: Type.Integer({ minimum: 0 }),
  readSeq: Type.Integer({ minimum: 0 }),
  unread: Type.Integer({ minimum: 0 }),
});
export type GroupView = Static<typeof GroupView>;

export const MemberView = Type.Object({
  userId: UserId,
  role: Role,
  joinedAt: Type.String({ format: 'date-time' }),
  readSeq: Type.Integer({ minimum: 0 }),
});
export type MemberView = Static<typeof MemberView>;

export const GroupParams = Type.Object({ groupId: GroupId });
export const MemberParams = Type.Object({ groupId: GroupId, userId: UserId });

export const PageQuery = Type.Object({
  after: Type.Optional(Type.String({ maxLength: 64, description: 'last id of the previous page' })),
  limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 }),
});

/** Standard error responses for a route, by status. */
export const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [status, Type.Ref(ErrorResponse)]));

export const SeqOrZero = Type.Integer({ minimum: 0 });
export { Seq };
