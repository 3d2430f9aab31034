/**
 * Every error Chorus reports, in one place. The code is the stable, machine-readable part: clients branch on it. The
 * same codes appear in REST error bodies and in `rejected` events on a user's events topic.
 */
export const errorCatalog = {
  UNAUTHORIZED: { status: 401, message: 'missing, invalid or expired token' },
  FORBIDDEN: { status: 403, message: 'not allowed' },
  NOT_A_MEMBER: { status: 403, message: 'you are not a member of this group' },
  NOT_ADMIN: { status: 403, message: 'only group admins may do this' },
  TOPIC_NOT_ALLOWED: { status: 403, message: 'this topic does not accept publishes from clients' },
  NOT_FOUND: { status: 404, message: 'no such resource' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'this resource does not take that method' },
  GROUP_NOT_FOUND: { status: 404, message: 'no such group' },
  MEMBER_NOT_FOUND: { status: 404, message: 'no such member in this group' },
  VALIDATION_FAILED: { status: 400, message: 'the request does not match its schema' },
  INVALID_JSON: { status: 400, message: 'the payload is not valid JSON' },
  UNKNOWN_FIELD: { status: 400, message: 'the payload has a field Chorus does not know' },
  INVALID_MESSAGE: { status: 400, message: 'the message does not match the send schema' },
  REPLY_TO_UNKNOWN: { status: 400, message: 'replyToSeq names a message that does not exist in this group' },
  TARGET_UNKNOWN: { status: 400, message: 'targetSeq names no message of this group that this can apply to' },
  NOT_SENDER: { status: 403, message: 'only the sender of that message may do this (or, to delete it, an admin)' },
  TARGET_DELETED: { status: 409, message: 'the target message was deleted' },
  TARGET_EXPIRED: { status: 410, message: 'the target message is older than the retention period' },
  RETENTION_TOO_LONG: {
    status: 400,
    message: "a group may keep its messages at most as long as the server's retention",
  },
  INVALID_QUERY: { status: 400, message: 'the search query cannot be read' },
  MESSAGE_NOT_FOUND: { status: 404, message: 'no such message visible to you in this group' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'the message body is larger than allowed' },
  ALREADY_MEMBER: { status: 409, message: 'the user is already a member of this group' },
  GROUP_FULL: { status: 409, message: 'the group has reached its member limit' },
  LAST_ADMIN: { status: 409, message: 'a group with other members must keep at least one admin' },
  TOO_MANY_SUBSCRIPTIONS: {
    status: 409,
    message: 'this user has the most push subscriptions allowed; delete one first',
  },
  INVALID_PUSH_ENDPOINT: { status: 400, message: 'the push endpoint must be an https URL of a public push service' },
  SUBSCRIPTION_NOT_FOUND: { status: 404, message: 'no such push subscription for this user' },
  RATE_LIMITED: { status: 429, message: 'too many requests' },
  REQUEST_TIMEOUT: { status: 408, message: 'the request did not arrive in time' },
  URI_TOO_LONG: { status: 414, message: 'a path parameter is longer than allowed' },
  HEADERS_TOO_LARGE: { status: 431, message: 'the request headers are larger than allowed' },
  BAD_REQUEST: { status: 400, message: 'the request is not valid HTTP' },
  OVERLOADED: { status: 503, message: 'the sequencer queue is full; retry with the same clientMsgId' },
  STORE_UNAVAILABLE: { status: 503, message: 'the message store is unavailable; retry with the same clientMsgId' },
  UNAVAILABLE: {
    status: 503,
    message: 'a service this node depends on did not answer; retry shortly (a write may or may not have been applied)',
  },
  DRAINING: { status: 503, message: 'this node is shutting down; connect to another' },
  INTERNAL: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof errorCatalog;

export const errorCodes = Object.keys(errorCatalog) as ErrorCode[];

/** Shape of every REST error body and of the error part of a `rejected` event. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

export class ChorusError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly details?: unknown;

  constructor(code: ErrorCode, message?: string, details?: unknown) {
    super(message ?? errorCatalog[code].message);
    this.name = 'ChorusError';
    this.code = code;
    this.statusCode = errorCatalog[code].status;
    this.details = details;
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export const isChorusError = (err: unknown): err is ChorusError => err instanceof ChorusError;
