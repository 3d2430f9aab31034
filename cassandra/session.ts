import cassandra from 'cassandra-driver';
import { ChorusError } from '../protocol/index.js';

export interface CassandraOptions {
  contactPoints: string[];
  localDataCenter: string;
  keyspace: string;
  /** CQL replication map, e.g. {'class': 'SimpleStrategy', 'replication_factor': 1}. */
  replication: string;
}

/** How long a request may take before the driver gives up on it; a write still in flight lands within this. */
export const REQUEST_TIMEOUT_MS = 3_000;

/**
 * One Cassandra session per process, shared by the message log and the group store. It creates the keyspace if it is
 * missing (idempotent), reconnects every second while Cassandra is away, and gives up on a request after 3 s, so a
 * missing Cassandra shows as STORE_UNAVAILABLE rather than as a hang.
 */
export class CassandraSession {
  readonly client: cassandra.Client;
  readonly consistency = cassandra.types.consistencies.localQuorum;
  readonly serialConsistency = cassandra.types.consistencies.localSerial;

  private constructor(client: cassandra.Client) {
    this.client = client;
  }

  static async connect(options: CassandraOptions): Promise<CassandraSession> {
    const bootstrap = new cassandra.Client({
      contactPoints: options.contactPoints,
      localDataCenter: options.localDataCenter,
      socketOptions: { readTimeout: 10_000, connectTimeout: 5_000 },
    });
    await bootstrap.connect();
    await bootstrap.execute(
      `CREATE KEYSPACE IF NOT EXISTS ${options.keyspace} WITH replication = ${options.replication}`,
    );
    await bootstrap.shutdown();
    const client = new cassandra.Client({
      contactPoints: options.contactPoints,
      localDataCenter: options.localDataCenter,
      keyspace: options.keyspace,
      socketOptions: { readTimeout: REQUEST_TIMEOUT_MS, connectTimeout: 2_000 },
      policies: { reconnection: new cassandra.policies.reconnection.ConstantReconnectionPolicy(1_000) },
      pooling: { warmup: true },
    });
    await client.connect();
    return new CassandraSession(client);
  }

  /** Schema changes at start: idempotent, and with a longer timeout than requests. */
  async ddl(statement: string): Promise<void> {
    await this.client.execute(statement, [], { readTimeout: 30_000 });
  }

  async execute(query: string, params: unknown[] = []): Promise<cassandra.types.ResultSet> {
    try {
      return await this.client.execute(query, params, {
        prepare: true,
        consistency: this.consistency,
        serialConsistency: this.serialConsistency,
      });
    } catch (err) {
      throw unavailable(err);
    }
  }

  /** A read that sees every committed lightweight transaction on the row (and completes one left in flight). */
  async readSerial(query: string, params: unknown[] = []): Promise<cassandra.types.ResultSet> {
    try {
      return await this.client.execute(query, params, { prepare: true, consistency: this.serialConsistency });
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
      });
    } catch (err) {
      throw unavailable(err);
    }
  }

  async close(): Promise<void> {
    await this.client.shutdown();
  }
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
