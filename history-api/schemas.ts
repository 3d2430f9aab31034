import { Type, type ObjectOptions, type TProperties } from '@sinclair/typebox';
import { type ErrorCode, GroupId, Seq, UserId, errorCodes } from '../protocol/index.js';

export { GroupView, HistoryVisibility, MemberView, Role } from '../protocol/index.js';

export const ErrorResponse = Type.Object(
  {
    // An enum, not a union of literals: Fastify's serializer checks each branch of a union (anyOf) at run time with
    // an Ajv instance of its own, one per route and status that can answer an error (267 of them, 6 MB of the heap).
    code: Type.Unsafe<ErrorCode>({ type: 'string', enum: errorCodes }),
    message: Type.String(),
    details: Type.Optional(Type.Unknown()),
  },
  { $id: 'ErrorResponse', description: 'every 4xx/5xx body; branch on code' },
);

export const GroupName = Type.String({ minLength: 1, maxLength: 200 });
export const GroupDescription = Type.String({ maxLength: 2000 });
export const AvatarUrl = Type.String({ maxLength: 2048, pattern: '^https://[^\\s]+$', description: 'https only' });

/** A group's own retention: at most the server's (RETENTION_TOO_LONG past it). */
export const RetentionDays = Type.Integer({ minimum: 1, maximum: 3650, description: 'days its messages are kept' });

export const GroupParams = Type.Object({ groupId: GroupId });
export const MemberParams = Type.Object({ groupId: GroupId, userId: UserId });

/** Page size when a listing or history read names none. */
export const DEFAULT_PAGE = 100;

/** Query strings take the listed parameters only: an unknown one is refused (UNKNOWN_FIELD), not ignored. */
export const Query = <T extends TProperties>(properties: T, options: ObjectOptions = {}) =>
  Type.Object(properties, { additionalProperties: false, ...options });

export const PageQuery = Query({
  after: Type.Optional(Type.String({ maxLength: 64, description: 'last id of the previous page' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: DEFAULT_PAGE })),
});

/**
 * Error responses for a route, by status: the ones every /v1 route can give (400 for a malformed request or path
 * parameter, 401 without a valid token, 429 over the rate limits, 500 for a bug, 503 while a store it needs does not
 * answer), and the route's own.
 */
export const errors = (...statuses: number[]) =>
  Object.fromEntries([400, 401, 429, 500, 503, ...statuses].map((status) => [status, Type.Ref(ErrorResponse)]));

export const SeqOrZero = Type.Integer({ minimum: 0 });
export { Seq };
