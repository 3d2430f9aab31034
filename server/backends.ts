import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AedesSeams } from '../broker/aedes.js';
import redisPersistence from 'aedes-persistence-redis';
import type { EventEmitter } from 'node:events';
import MQEmitterRedis from 'mqemitter-redis';
import type { ChorusConfig } from '../config/config.js';
import type { GroupStore } from '../groups/group-store.js';
import { GroupStoreCassandra } from '../groups/group-store-cassandra.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { MembershipFeedLocal, type MembershipFeed } from '../groups/membership-feed.js';
import { MembershipFeedRedis } from '../groups/membership-feed-redis.js';
import { Retention } from '../groups/retention.js';
import { CassandraSession } from '../cassandra/session.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { SendForwardingRedis } from '../sequencer/send-forwarding-redis.js';
import type { FanOut } from '../delivery/fan-out.js';
import { FanOutLocal } from '../delivery/fan-out.js';
import { FanOutRedis } from '../delivery/fan-out-redis.js';
import { deliverThroughPersistenceOutage, type DeliveryState } from '../broker/persistence-outage.js';
import { queueGroupMessagesOnce } from '../broker/queue-once-redis.js';
import { splitRouter } from '../broker/split-router.js';
import { GroupWritersLocal, type GroupWriters } from '../sequencer/group-writers.js';
import { SendForwardingLocal, type SendForwarding } from '../sequencer/send-forwarding.js';
import { PresenceLocal, type Presence } from '../broker/presence.js';
import { PresenceRedis } from '../broker/presence-redis.js';
import type { PushStore } from '../push/push-store.js';
import type { Search } from '../search/search.js';
import { SearchByScan } from '../search/search-scan.js';
import { SearchSqlite } from '../search/search-sqlite.js';
import { PushStoreCassandra } from '../push/push-store-cassandra.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';
import { redisConnections } from './redis-connections.js';

/**
 * How long a node waits for the writer of a group to answer a forwarded send. Long, because the writer holds sends
 * while Cassandra is away; it is there for a writer that died holding the request (the sender's retry is safe).
 */
const FORWARD_TIMEOUT_MS = 30_000;

/** How long an offline persistent session's queued QoS 1 packets are kept: the history API keeps the messages. */
const QUEUED_PACKET_TTL_S = 86_400;

/** The stores and shared broker state of one process, per the configured store. */
/** Aedes persistence and router come as BrokerDeps takes them: absent means in-memory (one node). */
export interface Backends extends Pick<AedesSeams, 'persistence' | 'mq'> {
  log: MessageLog;
  groupStore: GroupStore;
  feed: MembershipFeed;
  pushStore: PushStore;
  presence: Presence;
  /** Who writes each group (one node alone: itself). */
  writers: GroupWriters;
  /** How a send reaches its group's writer. */
  forwarding: SendForwarding;
  /** How stamped messages reach every node's subscribers. */
  fanOut: FanOut;
  /** Finds messages by their text. */
  search: Search;
  /** How long each group keeps its messages. */
  retention: Retention;
  close(): Promise<void>;
}

/**
 * One process on embedded defaults: SQLite files under dataDir, in-memory broker state; the node writes every group,
 * and fan-out and forwarding stay in the process.
 */
export function embeddedBackends(config: ChorusConfig): Backends {
  const nodeId = config.nodeId ?? `${hostname()}-${process.pid}`;
  const log = new MessageLogSqliteThread(join(config.dataDir, 'messages.db'), {
    synchronous: config.sqliteSynchronous,
  });
  const search = new SearchSqlite(join(config.dataDir, 'messages.db')); // the index the log keeps
  const groupStore = new GroupStoreSqlite(join(config.dataDir, 'groups.db'), config.sqliteSynchronous);
  const pushStore = new PushStoreSqlite(join(config.dataDir, 'push.db'));
  return {
    log,
    groupStore,
    feed: new MembershipFeedLocal(),
    pushStore,
    presence: new PresenceLocal(),
    writers: new GroupWritersLocal(nodeId),
    forwarding: SendForwardingLocal.hub()(nodeId, {
      timeoutMs: FORWARD_TIMEOUT_MS,
      maxPending: config.maxPendingSends,
      onInternalError: () => {},
    }),
    fanOut: FanOutLocal.hub()(nodeId),
    search,
    retention: new Retention(groupStore, config.retentionDays),
    async close() {
      await search.close();
      await log.close();
      await groupStore.close();
      await pushStore.close();
    },
  };
}

/**
 * Many processes: Cassandra holds everything that matters (messages, dedup entries, groups, memberships, read
 * pointers, which node writes each group); Redis carries what must be shared and fast (sends forwarded to their
 * group's writer, MQTT sessions and in-flight QoS 1 packets, cross-node delivery, membership changes, presence), and
 * may lose it all at any time.
 */
export async function clusterBackends(
  config: ChorusConfig,
  logger: Logger,
  onRedisError: () => void = () => {},
): Promise<Backends> {
  const connectRedis = redisConnections(config, logger, onRedisError);
  const nodeId = config.nodeId ?? `${hostname()}-${process.pid}`;
  const started = performance.now();
  const db = await CassandraSession.connect({
    contactPoints: config.cassandraContactPoints.split(',').map((p) => p.trim()),
    localDataCenter: config.cassandraLocalDataCenter,
    keyspace: config.cassandraKeyspace,
    replication: config.cassandraReplication,
  });
  const redis = connectRedis({ maxRetriesPerRequest: 2 });
  const feedConnection = connectRedis();
  const writers = await GroupWritersCassandra.start(db, nodeId);
  const forwardingConnection = connectRedis();
  const forwarding = await SendForwardingRedis.start(redis, forwardingConnection, writers.nodeId, {
    timeoutMs: FORWARD_TIMEOUT_MS,
    maxPending: config.maxPendingSends,
    onInternalError: (err, send) =>
      logger.error({ err, groupId: send.groupId, senderId: send.senderId }, 'serving a forwarded send failed'),
  });
  const groupStore = await GroupStoreCassandra.open(db);
  const retention = new Retention(groupStore, config.retentionDays);
  const log = await MessageLogCassandra.open(db, writers, {
    retentionSeconds: async (groupId) => (await retention.days(groupId)) * 86_400,
  });
  const pushStore = await PushStoreCassandra.open(db);
  // A first start on an empty keyspace waits for every Cassandra node to hold the new tables: this says how long the
  // backends took to get here (the writer lease and the forwarding channel's Redis subscription among them).
  logger.debug(
    { msSinceBackendsBegan: Math.round(performance.now() - started) },
    'Cassandra keyspace and tables ready',
  );
  const feed = await MembershipFeedRedis.start(redis, feedConnection);
  const presence = new PresenceRedis(redis, nodeId);
  // Sessions wait for Redis at most one retry: a persistent session's delivery must not hold up the router for long.
  const persistenceConnection = connectRedis({ maxRetriesPerRequest: 1 });
  const persistence = redisPersistence({
    conn: persistenceConnection,
    maxSessionDelivery: config.maxOfflineQueue,
    packetTTL: () => QUEUED_PACKET_TTL_S,
  } as never) as unknown as DeliveryState;
  queueGroupMessagesOnce(persistence, persistenceConnection, {
    ttlSeconds: QUEUED_PACKET_TTL_S,
    maxQueued: config.maxOfflineQueue,
  });
  // Aedes keeps no outgoing packets for a clean session, so its PUBACKs have nothing to clear (and nothing to look up).
  const clearMessageId = persistence.outgoingClearMessageId.bind(persistence);
  persistence.outgoingClearMessageId = (client, packet) =>
    client.clean ? Promise.resolve(undefined) : clearMessageId(client, packet);
  deliverThroughPersistenceOutage(persistence, logger);
  const sharedRouter = MQEmitterRedis({ pubConn: connectRedis(), subConn: connectRedis() }) as unknown as {
    state: EventEmitter;
  };
  sharedRouter.state.on('error', () => undefined); // its connections' errors, already reported by watch()
  const mq = splitRouter(sharedRouter as never);
  const fanOutConnection = connectRedis();
  const fanOut = await FanOutRedis.start(redis, fanOutConnection, writers.nodeId);
  return {
    log,
    groupStore,
    feed,
    pushStore,
    presence,
    writers,
    forwarding,
    fanOut,
    // Cassandra 5.0's storage-attached indexes take no text analyzer (test/search.test.ts): a group's recent history
    // is read and matched instead.
    search: new SearchByScan(log, config.searchScanMessages),
    retention,
    persistence: persistence as never,
    mq: mq as never,
    async close() {
      await fanOut.close();
      await presence.close();
      await forwarding.close();
      await log.close();
      await writers.close();
      await db.close();
      redis.disconnect();
      feedConnection.disconnect();
      forwardingConnection.disconnect();
      fanOutConnection.disconnect();
      persistenceConnection.disconnect();
    },
  };
}
