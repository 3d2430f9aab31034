import type { Redis } from 'ioredis';
import msgpack from 'msgpack-lite';
import { parseTopic } from '../protocol/index.js';

/** A subscription Aedes queues a packet for: the offline (or online) persistent session's client id. */
interface QueuedFor {
  clientId: string;
}

/** What Aedes hands the persistence to queue: a group message, named by its topic and seq (GroupDelivery). */
interface QueuedPacket {
  topic: string;
  brokerId: string;
  brokerCounter: number;
  payload: Buffer;
  qos: number;
  retain: boolean;
  dup: boolean;
  properties?: object;
}

/**
 * How long a message's claim keeps other nodes from queueing it. It must outlive every way a node routes a message
 * late: the fan-out (milliseconds), a new writer handing the last 30 s on again, a node filling what it missed while cut
 * off from Redis. It costs Redis a small key per group message that a persistent session subscribes to, for as long.
 */
const CLAIM_TTL_S = 3600;

type WithQueueOnce = Redis & {
  chorusQueueOnce(keyCount: number, ...keysAndArgs: (string | number | Buffer)[]): Promise<number>;
};

/**
 * The claim, then the message's place at the end of each queue that has room, the packet and its count of queues, in
 * one step: a node that delivers the message live to an online persistent session, and clears it on the PUBACK, finds
 * it queued already. A full queue takes nothing more (the persistence itself never trims one). KEYS: claim, packet,
 * count, then the queues; ARGV: the packet's bytes, its TTL in seconds, the most a queue holds, the claim's TTL in
 * seconds. Returns how many queues took it.
 */
const QUEUE_ONCE_SCRIPT = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then return 0 end
local queued = 0
for i = 4, #KEYS do
  if redis.call('LLEN', KEYS[i]) < tonumber(ARGV[3]) then
    redis.call('RPUSH', KEYS[i], KEYS[2])
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[3], queued, 'EX', ARGV[2])
end
return queued
`;

/**
 * Queues each group message once for the persistent sessions, however many nodes route it. Every node of a cluster
 * routes every group message through its Aedes (each delivers to its own clients), and Aedes queues what it routes for
 * every persistent session subscribed anywhere (the Redis persistence's subscriptions are the cluster's): each session
 * would find the message in its queue once per node on its return. The first node to queue a message (named the same
 * on every node: GroupDelivery) claims it; the others queue nothing. A session's queue holds at most `maxQueued`
 * messages, as the in-memory persistence's does (BoundedMemoryPersistence): past that, later ones are not queued (the
 * history API has them). The keys and the encoding are aedes-persistence-redis's own (11.x: `packet:<broker id>:
 * <counter>`, its `:offlineCount`, `outgoing:<client id>`, msgpack), checked against it by
 * test/queue-once-redis.test.ts. Anything else is queued by the persistence itself.
 */
export function queueGroupMessagesOnce(
  persistence: { outgoingEnqueueCombi(subs: QueuedFor[], packet: QueuedPacket): Promise<void> },
  redis: Redis,
  limits: { ttlSeconds: number; maxQueued: number },
): void {
  redis.defineCommand('chorusQueueOnce', { lua: QUEUE_ONCE_SCRIPT });
  const queueWithRedis = redis as WithQueueOnce;
  const queue = persistence.outgoingEnqueueCombi.bind(persistence);
  persistence.outgoingEnqueueCombi = async (subs, packet) => {
    if (parseTopic(packet.topic)?.kind !== 'group' || subs.length === 0) return queue(subs, packet);
    const packetKey = `packet:${packet.brokerId}:${packet.brokerCounter}`;
    const queues = subs.map((sub) => `outgoing:${encodeURIComponent(sub.clientId)}`);
    const stored = {
      cmd: 'publish',
      brokerId: packet.brokerId,
      brokerCounter: packet.brokerCounter,
      topic: packet.topic,
      payload: packet.payload,
      qos: packet.qos,
      retain: packet.retain,
      dup: packet.dup,
      ...(packet.properties ? { properties: packet.properties } : {}),
    };
    await queueWithRedis.chorusQueueOnce(
      3 + queues.length,
      `chorus:queued:${packetKey}`,
      packetKey,
      `${packetKey}:offlineCount`,
      ...queues,
      msgpack.encode(stored),
      limits.ttlSeconds,
      limits.maxQueued,
      CLAIM_TTL_S,
    );
  };
}
