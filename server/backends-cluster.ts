import type { EventEmitter } from 'node:events';
import redisPersistence from 'aedes-persistence-redis';
import MQEmitterRedis from 'mqemitter-redis';
import type { Logger } from 'pino';
import { deliverThroughPersistenceOutage, type DeliveryState } from '../broker/persistence-outage.js';
import { PresenceRedis } from '../broker/presence-redis.js';
import { queueGroupMessagesOnce } from '../broker/queue-once-redis.js';
import { splitRouter } from '../broker/split-router.js';
import { CassandraSession } from '../cassandra/session.js';
import type { ChorusConfig } from '../config/config.js';
import { FanOutRedis } from '../delivery/fan-out-redis.js';
import { GroupStoreCassandra } from '../groups/group-store-cassandra.js';
import { MembershipFeedRedis } from '../groups/membership-feed-redis.js';
import { Retention } from '../groups/retention.js';
import { PushStoreCassandra } from '../push/push-store-cassandra.js';
import { SearchByScan } from '../search/search-scan.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { SendForwardingRedis } from '../sequencer/send-forwarding-redis.js';
import { type Backends, FORWARD_TIMEOUT_MS, nodeIdOf } from './backends.js';
import { redisConnections } from './redis-connections.js';

/** How long an offline persistent session's queued QoS 1 packets are kept: the history API keeps the messages. */
const QUEUED_PACKET_TTL_S = 86_400;

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
  const nodeId = nodeIdOf(config);
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
