import cassandra from 'cassandra-driver';
import { ChorusError } from '../protocol/index.js';

export interface CassandraOptions {
  contactPoints: string[];
  localDataCenter: string;
  keyspace: string;
  /** CQL replication map, e.g. {'class': 'SimpleStrategy', 'replication_factor': 1}. */
  replication: string;
}

/** How long a read may take before the driver gives up on it (a page of history is the largest). */
export const REQUEST_TIMEOUT_MS = 3_000;
/** How long one attempt at a write may take before the driver gives up on it. */
const WRITE_TIMEOUT_MS = 800;
/**
 * A statement whose coordinator has not answered in this long is sent to a second one as well (speculative
 * execution), when sending it twice is harmless: a paused or overloaded Cassandra node then costs this much, not a
 * timeout. Lightweight transactions and counter updates are never sent twice.
 */
const SPECULATE_AFTER_MS = 200;
/**
 * A write sent at t has landed by t + this, or never will: its attempts start by t + SPECULATE_AFTER_MS, each is given
 * up after WRITE_TIMEOUT_MS, none is retried after a timeout, and Cassandra's own write_request_timeout must be no
 * longer (scripts/cassandra/cassandra.yaml.in sets it; so must a production cluster). A writer taking over a group
 * waits this out past the old writer's lease.
 */
export const WRITE_LANDS_WITHIN_MS = SPECULATE_AFTER_MS + WRITE_TIMEOUT_MS;

/** A read not answered in this long is sent again as a request of its own (see hedged). */
const HEDGE_READ_AFTER_MS = 400;
const LATE = Symbol('late');

/**
 * How long a run of schema changes waits for every Cassandra node to hold them before Chorus goes on. A keyspace created
 * through one node and not yet known at another fails the session's first connection there ("Keyspace ... does not
 * exist"; seen on the test ring beside two CPU hogs), and a table not yet known fails its first statement. A node that
 * is down keeps its old schema version in the others' peers table, so the whole wait is spent then, once per run.
 */
const SCHEMA_AGREEMENT_WAIT_MS = 60_000;
/** How often the schema versions are compared while waiting for them to agree. */
const SCHEMA_AGREEMENT_POLL_MS = 200;

/** The table option every table gets (see ddl). */
const FAST_READS = "speculative_retry = 'MIN(99p,50ms)'";

/** Lightweight transactions (IF ...) and counter updates (x = x + ?): their repetition is not harmless. */
const NOT_REPEATABLE = /\bIF\b|\b(\w+)\s*=\s*\1\s*[-+]/i;
const isIdempotent = (query: string) => !NOT_REPEATABLE.test(query);
const isRead = (query: string) => /^\s*SELECT\b/i.test(query);

/**
 * After a client-side timeout, a request is not sent again elsewhere (the driver's default): that retry could land
 * past WRITE_LANDS_WITHIN_MS, and speculative execution already covered a slow node. A request whose connection
 * broke (the node stopped) is sent to the next node when it is idempotent.
 */
class BoundedRetryPolicy extends cassandra.policies.retry.RetryPolicy {
  override onRequestError(
    info: cassandra.policies.retry.OperationInfo,
    consistency: cassandra.types.consistencies,
    err: Error,
  ): cassandra.policies.retry.DecisionInfo {
    if (err.name === 'OperationTimedOutError' || !info.executionOptions.isIdempotent()) return this.rethrowResult();
    return super.onRequestError(info, consistency, err);
  }
}

/**
 * One Cassandra session per process, shared by the message log and the group store. It creates the keyspace if it is
 * missing (idempotent), reconnects every second while Cassandra is away, and gives up on a read after 3 s and on a
 * write after WRITE_LANDS_WITHIN_MS, so a missing Cassandra shows as STORE_UNAVAILABLE rather than as a hang. With
 * replicas (replication factor 3, LOCAL_QUORUM) one node stopped or paused costs at most SPECULATE_AFTER_MS a request.
 */
export class CassandraSession {
  readonly client: cassandra.Client;
  readonly consistency = cassandra.types.consistencies.localQuorum;
  readonly serialConsistency = cassandra.types.consistencies.localSerial;

  private constructor(
    client: cassandra.Client,
    private readonly schemaClient: cassandra.Client,
  ) {
    this.client = client;
  }

  static async connect(options: CassandraOptions): Promise<CassandraSession> {
    // The driver reaches the nodes it discovers (beyond the contact points) on protocolOptions.port, 9042 unless told:
    // a cluster on another port would otherwise be used through its contact points alone.
    const ports = new Set(options.contactPoints.map((point) => /:(\d+)$/.exec(point)?.[1] ?? '9042'));
    const port = ports.size === 1 ? { port: Number([...ports][0]) } : {};
    // Schema changes go through clients of their own that return as soon as the node they asked has applied one
    // (maxSchemaAgreementWaitSeconds 0); applySchema waits once for a whole run instead. The driver's wait after each
    // change cost 0.6-2.7 s on the idle three-node test ring, and the 15 tables 21 s of a first start.
    const schemaClient = (keyspace?: string) =>
      new cassandra.Client({
        contactPoints: options.contactPoints,
        localDataCenter: options.localDataCenter,
        protocolOptions: { ...port, maxSchemaAgreementWaitSeconds: 0 },
        socketOptions: { readTimeout: 30_000, connectTimeout: 5_000 },
        isMetadataSyncEnabled: false,
        pooling: { warmup: false },
        ...(keyspace ? { keyspace } : {}),
      });
    const bootstrap = schemaClient();
    try {
      await bootstrap.connect();
      await applySchema(bootstrap, [
        `CREATE KEYSPACE IF NOT EXISTS ${options.keyspace} WITH replication = ${options.replication}`,
      ]);
    } finally {
      await bootstrap.shutdown();
    }
    const schema = schemaClient(options.keyspace);
    const client = new cassandra.Client({
      contactPoints: options.contactPoints,
      localDataCenter: options.localDataCenter,
      protocolOptions: port,
      keyspace: options.keyspace,
      socketOptions: { readTimeout: REQUEST_TIMEOUT_MS, connectTimeout: 2_000 },
      policies: {
        reconnection: new cassandra.policies.reconnection.ConstantReconnectionPolicy(1_000),
        retry: new BoundedRetryPolicy(),
        speculativeExecution: new cassandra.policies.speculativeExecution.ConstantSpeculativeExecutionPolicy(
          SPECULATE_AFTER_MS,
          1,
        ),
      },
      pooling: { warmup: true },
    });
    try {
      await Promise.all([schema.connect(), client.connect()]);
    } catch (err) {
      await Promise.all([schema.shutdown(), client.shutdown()]);
      throw err;
    }
    return new CassandraSession(client, schema);
  }

  /**
   * Schema changes at start, idempotent (`IF NOT EXISTS`), applied in order and all through one Cassandra node, then
   * waited on once until every node holds them (or SCHEMA_AGREEMENT_WAIT_MS has passed, when Chorus goes on as the
   * driver would). Every table is created reading speculatively: a coordinator that has not heard from a replica
   * within 50 ms (or its usual 99th percentile, if less) asks another, so a paused or overloaded replica costs a read
   * 50 ms, not the seconds until it is judged down.
   */
  async ddl(statements: string[]): Promise<void> {
    await applySchema(
      this.schemaClient,
      statements.map((statement) =>
        /^\s*CREATE TABLE/i.test(statement)
          ? `${statement} ${/\bWITH\b/i.test(statement) ? 'AND' : 'WITH'} ${FAST_READS}`
          : statement,
      ),
    );
  }

  async execute(query: string, params: unknown[] = []): Promise<cassandra.types.ResultSet> {
    const options = {
      prepare: true,
      consistency: this.consistency,
      serialConsistency: this.serialConsistency,
      isIdempotent: isIdempotent(query),
      readTimeout: isRead(query) ? REQUEST_TIMEOUT_MS : WRITE_TIMEOUT_MS,
    };
    try {
      return await (isRead(query)
        ? hedged(() => this.client.execute(query, params, options), HEDGE_READ_AFTER_MS)
        : this.client.execute(query, params, options));
    } catch (err) {
      throw unavailable(err);
    }
  }

  /** A read that sees every committed lightweight transaction on the row (and completes one left in flight). */
  async readSerial(query: string, params: unknown[] = []): Promise<cassandra.types.ResultSet> {
    try {
      // Idempotent: a serial read only completes what is in flight.
      return await this.client.execute(query, params, {
        prepare: true,
        consistency: this.serialConsistency,
        isIdempotent: true,
      });
    } catch (err) {
      throw unavailable(err);
    }
  }

  async batch(queries: { query: string; params: unknown[] }[], logged = true): Promise<cassandra.types.ResultSet> {
    try {
      return await this.client.batch(queries, {
        prepare: true,
        logged,
        consistency: this.consistency,
        serialConsistency: this.serialConsistency,
        isIdempotent: queries.every(({ query }) => isIdempotent(query)),
        readTimeout: WRITE_TIMEOUT_MS,
      });
    } catch (err) {
      throw unavailable(err);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.client.shutdown(), this.schemaClient.shutdown()]);
  }
}

/**
 * Runs schema changes in order on one node (the driver's advice for a series of them), then waits until every node
 * reports the same schema version. On one node, each change sees the ones before it without a wait between them.
 */
async function applySchema(schemaClient: cassandra.Client, statements: string[]): Promise<void> {
  const host = schemaClient.hosts.values().find((candidate) => candidate.isUp());
  for (const statement of statements) await schemaClient.execute(statement, [], { host });
  // Metadata#checkSchemaAgreement is the driver's documented API, missing from its type declarations.
  const metadata = schemaClient.metadata as unknown as { checkSchemaAgreement(): Promise<boolean> };
  const deadline = Date.now() + SCHEMA_AGREEMENT_WAIT_MS;
  while (!(await metadata.checkSchemaAgreement()) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, SCHEMA_AGREEMENT_POLL_MS));
  }
}

/**
 * Runs `read`, and runs it again if it has not answered in `afterMs`; the first answer wins (a failure of both reports
 * the first's). The driver's speculative execution covers a slow coordinator, but not a healthy one that waits on a
 * paused replica: right after a node is paused its peers sometimes hold reads for seconds (measured: 2.3–2.7 s)
 * despite the tables' speculative retry. The second request goes to the next coordinator, which picks its replicas
 * afresh. A read that fails before `afterMs` fails at once.
 */
export async function hedged<T>(read: () => Promise<T>, afterMs: number): Promise<T> {
  const first = read();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof LATE>((resolve) => {
    timer = setTimeout(resolve, afterMs, LATE);
  });
  try {
    const early = await Promise.race([first, late]);
    if (early !== LATE) return early;
  } finally {
    clearTimeout(timer);
  }
  return Promise.any([first, read()]).catch((err: AggregateError) => {
    throw err.errors[0];
  });
}

/** Cassandra being away or slow is STORE_UNAVAILABLE to callers; anything else is a bug and stays as it is. */
function unavailable(err: unknown): unknown {
  const name = (err as { name?: string }).name ?? '';
  const code = (err as { code?: number }).code;
  const { responseErrorCodes: codes } = cassandra.types;
  const transient =
    name === 'NoHostAvailableError' ||
    name === 'OperationTimedOutError' ||
    name === 'BusyConnectionError' ||
    (name === 'ResponseError' &&
      [
        codes.unavailableException,
        codes.writeTimeout,
        codes.readTimeout,
        codes.overloaded,
        codes.isBootstrapping,
      ].includes(code as number));
  return transient ? new ChorusError('STORE_UNAVAILABLE', `Cassandra: ${(err as Error).message}`) : err;
}
