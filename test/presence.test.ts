import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { PresenceLocal } from '../broker/presence.js';
import { PresenceRedis } from '../broker/presence-redis.js';
import { presenceContract } from './presence.contract.js';
import { redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

// One process has one presence, whichever part of it asks.
presenceContract('PresenceLocal', async () => {
  const presence = new PresenceLocal();
  return { node: async () => presence, close: () => presence.close() };
});

presenceContract('PresenceRedis (real Redis)', async () => {
  const made: PresenceRedis[] = [];
  return {
    node: async () => {
      const node = new PresenceRedis(await connect(), `node-${randomUUID()}`);
      made.push(node);
      return node;
    },
    close: async () => {
      for (const node of made) await node.close();
    },
  };
});

describe('PresenceRedis heartbeat (real Redis)', () => {
  const HEARTBEAT_MS = 50;
  const nodeKey = (nodeId: string) => `chorus:node:${nodeId}`;
  const userKey = (userId: string) => `chorus:presence:${userId}`;
  /**
   * A node with a fast heartbeat and two users of its own, and another node that reads their presence from Redis (a
   * node answers for its own clients without asking Redis).
   */
  const heartbeatNode = async () => {
    const redis = await connect();
    const nodeId = `node-${randomUUID()}`;
    const node = new PresenceRedis(redis, nodeId, HEARTBEAT_MS);
    const other = new PresenceRedis(await connect(), `other-${randomUUID()}`, HEARTBEAT_MS);
    const close = async () => {
      await node.close();
      await other.close();
    };
    return { redis, nodeId, node, other, close, a: `a_${randomUUID()}`, b: `b_${randomUUID()}` };
  };

  it("writes the node's counts again within one heartbeat after Redis lost them", async () => {
    const { redis, nodeId, node, a, b, other, close } = await heartbeatNode();
    await node.connected(a);
    await node.connected(b);
    await node.connected(b);
    await redis.del(nodeKey(nodeId), userKey(a), userKey(b)); // what a Redis restarted without its data has
    await vi.waitFor(async () => expect(await other.online([a, b])).toEqual(new Set([a, b])), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    expect(await redis.hget(userKey(b), nodeId)).toBe('2');
    await close();
  });

  it('writes the counts again after a connect made the node key anew, and not while the key stands', async () => {
    const { redis, nodeId, node, a, b, other, close } = await heartbeatNode();
    await node.connected(a);
    await vi.waitFor(async () => expect(await redis.get(nodeKey(nodeId))).toBe('counts'), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    // Redis loses everything; the next connect makes the node key again, with a's count missing. (A heartbeat may come
    // between the two and write a's count itself; when it does not, the key the connect made must not hide the loss.)
    await redis.del(nodeKey(nodeId), userKey(a));
    await node.connected(b);
    await vi.waitFor(async () => expect(await other.online([a, b])).toEqual(new Set([a, b])), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    // With the key standing, heartbeats leave the hashes alone: a count removed by hand stays removed.
    await redis.hdel(userKey(a), nodeId);
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS * 6));
    expect(await redis.hget(userKey(a), nodeId)).toBeNull();
    await close();
  });

  it('after a reconnection (a failover), writes the counts again and takes out again who left lately', async () => {
    const { redis, nodeId, node, a, b, other, close } = await heartbeatNode();
    await node.connected(a);
    await node.connected(b);
    await node.disconnected(b);
    await vi.waitFor(async () => expect(await redis.get(nodeKey(nodeId))).toBe('counts'), { timeout: 5_000 });
    // What a promoted replica may hold: the node key and b's entry (the primary had acknowledged the removal, and died
    // before passing it on), and no entry for a.
    await redis.hset(userKey(b), nodeId, '1');
    await redis.hdel(userKey(a), nodeId);
    await sleep(3 * HEARTBEAT_MS);
    expect(await other.online([a, b])).toEqual(new Set([b])); // the node key stands: no heartbeat rewrites by itself
    redis.emit('ready'); // ioredis: connected again, to whichever server is primary now
    await vi.waitFor(async () => expect(await other.online([a, b])).toEqual(new Set([a])), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    await close();
  });

  it("counts no client of a node whose key is gone (a crashed node's)", async () => {
    const { redis, node, a, b, other, close } = await heartbeatNode();
    await redis.hset(userKey(a), `crashed-${randomUUID()}`, '3');
    await node.connected(b);
    expect(await other.online([a, b])).toEqual(new Set([b]));
    await node.connected(a);
    expect(await other.online([a, b])).toEqual(new Set([a, b]));
    await close();
  });

  it('tries the rewrite again at the next heartbeat when one was cut short', async () => {
    const { redis, nodeId, node, a, other, close } = await heartbeatNode();
    await node.connected(a);
    await vi.waitFor(async () => expect(await redis.get(nodeKey(nodeId))).toBe('counts'), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    // The counts are lost, and a's cannot be written back (a key of the wrong type fails its HSET) for a few heartbeats.
    await redis.multi().del(nodeKey(nodeId)).set(userKey(a), 'not a hash').exec();
    await vi.waitFor(async () => expect(await redis.exists(nodeKey(nodeId))).toBe(1), { timeout: 5_000, interval: 10 });
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS * 4));
    await redis.del(userKey(a));
    await vi.waitFor(async () => expect(await other.online([a])).toEqual(new Set([a])), {
      timeout: 5_000,
      interval: HEARTBEAT_MS,
    });
    await close();
  });

  it("answers for this node's own clients without Redis, and for the others from Redis", async () => {
    const { redis, nodeId, node, a, b, other, close } = await heartbeatNode();
    await node.connected(a);
    await other.connected(b);
    await redis.del(nodeKey(nodeId), userKey(a)); // Redis lost a's count: only this node still knows
    expect(await node.online([a, b])).toEqual(new Set([a, b]));
    expect(await other.online([a, b])).toEqual(new Set([b]));
    await close();
  });

  it('reads many users in calls of a bounded size, and after the server forgot the script (a failover)', async () => {
    const { redis, node, other, close } = await heartbeatNode();
    const users = Array.from({ length: 1_234 }, (_, i) => `many_${i}_${randomUUID()}`);
    const connected = users.filter((_, i) => i % 7 === 0 || i === users.length - 1);
    for (const user of connected) await node.connected(user);
    await redis.set(userKey(users[1]!), 'not a hash'); // counts as no clients, and fails nothing else
    expect(await other.online(users)).toEqual(new Set(connected));
    await redis.script('FLUSH');
    expect(await other.online(users)).toEqual(new Set(connected));
    await close();
  });
});
