/** Errors of Chorus's own code: a bug on one draft's path fails that draft every time. */
const BUG_NAMES = new Set(['TypeError', 'RangeError', 'SyntaxError', 'ReferenceError']);
/** SQLite result codes (better-sqlite3's `code`) for a statement the database refuses whatever the moment. */
const SQLITE_REFUSALS = /^SQLITE_(CONSTRAINT|MISMATCH|TOOBIG|RANGE|ERROR)(_|$)/;
/** Cassandra's response codes for a request it refuses as such: syntax, invalid, configuration (native protocol §9). */
const CASSANDRA_REFUSALS = new Set([0x2000, 0x2200, 0x2300]);

/**
 * Whether an append failed for a reason that will not pass by trying again: the store refused what it was given (a
 * constraint, a value it cannot hold, a statement it rejects), or Chorus's own code threw on it (a bug in one message
 * type's path). Everything else passes (the store away, busy, full or slow, a writer thread that died), and is retried:
 * a misjudged passing error is retried as before, and a misjudged lasting one only costs its draft's isolation.
 */
export function isLastingStoreError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const { code } = err as { code?: unknown };
  if (BUG_NAMES.has(err.name)) return true;
  if (typeof code === 'string') return SQLITE_REFUSALS.test(code);
  return err.name === 'ResponseError' && typeof code === 'number' && CASSANDRA_REFUSALS.has(code);
}

/** Redis's error replies from a server that cannot serve now: a replica after a failover, a primary still loading. */
const REDIS_PASSING = /^(READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|OOM) /;
/** SQLite result codes for a database file that cannot be used now: locked, an I/O error, a full disk. */
const SQLITE_PASSING = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN)(_|$)/;
/** ioredis's own errors for a command that got no answer: retries used up, or the connection closed under it. */
const REDIS_CLIENT_ERRORS = new Set(['MaxRetriesPerRequestError']);
const REDIS_CONNECTION_CLOSED = 'Connection is closed.';

/**
 * Whether an error says that a store this node depends on (Redis; the SQLite file; Cassandra's are STORE_UNAVAILABLE
 * already, see cassandra/session.ts) cannot serve for now: unreachable, failing over, busy or full. Such an error is
 * the request's UNAVAILABLE (503, retry), not INTERNAL: nothing is wrong with the request or with Chorus's code.
 */
export function isStoreOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (REDIS_CLIENT_ERRORS.has(err.name) || err.message === REDIS_CONNECTION_CLOSED) return true;
  if (err.name === 'ReplyError') return REDIS_PASSING.test(err.message);
  const { code } = err as { code?: unknown };
  return typeof code === 'string' && SQLITE_PASSING.test(code);
}
