import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import cassandra from 'cassandra-driver';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { CassandraSession } from '../cassandra/session.js';

/**
 * The real Redis and Cassandra that `scripts/services.sh start` runs on loopback (the global setup starts them when
 * they do not answer). Tests that need them connect here and fail, never skip, when a server is missing.
 */
export const REDIS_PORT = Number(process.env.CHORUS_TEST_REDIS_PORT ?? 6399);
export const CASSANDRA_PORT = Number(process.env.CHORUS_TEST_CASSANDRA_PORT ?? 9142);
export const redisUrl = `redis://127.0.0.1:${REDIS_PORT}`;
export const cassandraContactPoint = `127.0.0.1:${CASSANDRA_PORT}`;

/** `scripts/services.sh start ring`: three Cassandra nodes on addresses of their own, one port. */
export const RING_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
export const ringContactPoints = RING_ADDRESSES.map((address) => `${address}:${CASSANDRA_PORT}`).join(',');
/** `scripts/services.sh start sentinel`: a Redis primary and replica, and three Sentinels watching SENTINEL_NAME. */
export const SENTINEL_PORTS = [26400, 26401, 26402];
export const SENTINEL_REDIS_PORTS = [6400, 6401];
export const SENTINEL_NAME = 'chorus';

const STATE = new URL('../.services/', import.meta.url).pathname;
/** The pid file of the single Cassandra node scripts/services.sh starts. */
export const CASSANDRA_PID_FILE = `${STATE}cassandra/cassandra.pid`;
/** The pid file of one node (0, 1, 2) of the Cassandra ring scripts/services.sh starts. */
export const ringPidFile = (node: number): string => `${STATE}cassandra-ring/node${node + 1}/cassandra.pid`;

/** The port of the Redis server that one Sentinel (the first unless told) names as primary now. */
export async function namedPrimary(sentinelPort = SENTINEL_PORTS[0]!): Promise<string> {
  const { stdout } = await promisify(execFile)('redis-cli', [
    '-p',
    String(sentinelPort),
    'SENTINEL',
    'get-master-addr-by-name',
    SENTINEL_NAME,
  ]);
  return stdout.split('\n')[1]!;
}

/**
 * Chorus's settings for the replicated dependencies: the Cassandra ring at replication factor 3 and Redis found
 * through its Sentinels (for Cluster's settings).
 */
export const replicatedSettings: NodeJS.ProcessEnv = {
  CHORUS_CASSANDRA_CONTACT_POINTS: ringContactPoints,
  CHORUS_CASSANDRA_REPLICATION: "{'class': 'SimpleStrategy', 'replication_factor': 3}",
  CHORUS_REDIS_URL: '', // unset: the Sentinels name the primary
  CHORUS_REDIS_SENTINELS: SENTINEL_PORTS.map((port) => `127.0.0.1:${port}`).join(','),
  CHORUS_REDIS_SENTINEL_NAME: SENTINEL_NAME,
};

/** A keyspace of its own for each test file, so files never see each other's data; named after the run (global-setup). */
export const testKeyspace = (): string => `chorus_test_${inject('runId')}_${randomBytes(4).toString('hex')}`;

export async function connectRedis(): Promise<Redis> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: true });
  try {
    await redis.connect();
  } catch (err) {
    throw new Error(`Redis is not answering on ${redisUrl}: run scripts/services.sh start (${(err as Error).message})`);
  }
  return redis;
}

/** A Redis connection that reconnects by itself, as a node's do (connectRedis's give up), its errors ignored. */
export function reconnectingRedis(): Redis {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  redis.on('error', () => undefined);
  return redis;
}

/** Redis connections for one test file, all closed by closeAll (in its afterAll). */
export function redisConnections(): { connect: () => Promise<Redis>; closeAll: () => void } {
  const open: Redis[] = [];
  return {
    connect: async () => {
      const redis = await connectRedis();
      open.push(redis);
      return redis;
    },
    closeAll: () => {
      for (const redis of open) redis.disconnect();
    },
  };
}

export async function connectCassandra(keyspace: string): Promise<CassandraSession> {
  try {
    return await CassandraSession.connect({
      contactPoints: [cassandraContactPoint],
      localDataCenter: 'datacenter1',
      keyspace,
      replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    });
  } catch (err) {
    throw new Error(
      `Cassandra is not answering on ${cassandraContactPoint}: run scripts/services.sh start (${(err as Error).message})`,
    );
  }
}

/**
 * Drops the keyspaces whose names start with `prefix`, so that a developer's local Cassandra does not gather one set
 * of tables per test file per run, each of which it opens at every start. Best effort: a Cassandra that is down, or a
 * drop that timed out, leaves tables behind.
 */
export async function dropKeyspaces(prefix: string, contactPoints = [cassandraContactPoint]): Promise<void> {
  const db = new cassandra.Client({ contactPoints, localDataCenter: 'datacenter1' });
  try {
    const { rows } = await db.execute('SELECT keyspace_name FROM system_schema.keyspaces');
    for (const row of rows) {
      const name = row.get('keyspace_name') as string;
      if (name.startsWith(prefix)) await db.execute(`DROP KEYSPACE IF EXISTS ${name}`, [], { readTimeout: 60_000 });
    }
  } catch {
    // left to the next tidying
  } finally {
    await db.shutdown();
  }
}
