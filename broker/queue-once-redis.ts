import type { Redis } from 'ioredis';
import msgpack from 'msgpack-lite';

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

type WithQueueOnce = Redis & {
  chorusQueueOnce(keyCount: number, ...keysAndArgs: (string | number | Buffer)[]): Promise<number>;
};

/**
 * The claim, then the packet, its count of queues and its place at the end of each queue, in one step: a node that
 * delivers the message live to an online persistent session, and clears it on the PUBACK, finds it queued already.
 * KEYS: claim, packet, count, then the queues; ARGV: the packet's bytes, the TTL in seconds.
 */
const QUEUE_ONCE_SCRIPT = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[3], #KEYS - 3, 'EX', ARGV[2])
for i = 4, #KEYS do redis.call('RPUSH', KEYS[i], KEYS[2]) end
return 1
`;

/**
 * Queues each group message once for the persistent sessions, however many nodes route it. Every node of a cluster
 * routes every group message through its Aedes (each delivers to its own clients), and Aedes queues what it routes for
 * every persistent session subscribed anywhere (the Redis persistence's subscriptions are the cluster's): each session
 * would find the message in its queue once per node on its return. The first node to queue a message (named the same
 * on every node: GroupDelivery) claims it; the others queue nothing. The keys and the encoding are
 * aedes-persistence-redis's own (11.x: `packet:<broker id>:<counter>`, its `:offlineCount`, `outgoing:<client id>`,
 * msgpack), checked by test/aedes-internals.test.ts. Anything else is queued by the persistence itself.
 */
export function queueGroupMessagesOnce(
  persistence: { outgoingEnqueueCombi(subs: QueuedFor[], packet: QueuedPacket): Promise<void> },
  redis: Redis,
  ttlSeconds: number,
): void {
  redis.defineCommand('chorusQueueOnce', { lua: QUEUE_ONCE_SCRIPT });
  const queueWithRedis = redis as WithQueueOnce;
  const queue = persistence.outgoingEnqueueCombi.bind(persistence);
  persistence.outgoingEnqueueCombi = async (subs, packet) => {
    if (!packet.topic.startsWith('groups/') || subs.length === 0) return queue(subs, packet);
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
      ttlSeconds,
    );
  };
}
