import type { Redis } from 'ioredis';
import type { Presence } from './presence.js';

const HEARTBEAT_MS = 3_000;
const NODE_TTL_SECONDS = 10;
/** The node key's value once a heartbeat has written all of this node's counts since the key was last missing. */
const COUNTS_WRITTEN = 'counts';
/** The node key's value when a connect made it: the node is alive, but its other users' counts may be missing. */
const ALIVE = 'alive';
/** How long a user who left this node is remembered, to take them out again after Redis lost the removal. */
const LEFT_MEMORY_MS = 60_000;
const MAX_LEFT = 100_000;
/** A node's heartbeat key: while it stands, the node's counts in the users' hashes count. */
const nodeKeyOf = (nodeId: string): string => `chorus:node:${nodeId}`;

/**
 * Presence across nodes in Redis: per user a hash of node id -> connected clients, and per node a heartbeat key that
 * expires when the node dies, so a crashed node's clients stop counting within NODE_TTL_SECONDS. A heartbeat is one
 * command while the node key stands. When the key was gone (Redis lost its data, or the node stalled past its TTL), or
 * a connect made it anew, that heartbeat writes every count of this node again: presence comes back by itself within
 * one heartbeat, and a node with 17,000 users does not rewrite 17,000 hashes every few seconds to get that.
 * The same rewrite follows a reconnection to Redis and a presence write that failed: a failover to a replica may have
 * lost writes the old primary had acknowledged, so the rewrite also takes out again the users who left this node in the
 * last minute.
 */
export class PresenceRedis implements Presence {
  private readonly local = new Map<string, number>();
  /** Users who left this node lately, with when, oldest first. */
  private readonly left = new Map<string, number>();
  /** Set when Redis may have lost this node's writes: the next heartbeat writes them all again. */
  private rewrite = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly nodeId: string,
    heartbeatMs = HEARTBEAT_MS,
  ) {
    this.timer = setInterval(() => void this.heartbeat().catch(() => undefined), heartbeatMs);
    this.timer.unref();
    redis.on('ready', () => (this.rewrite = true)); // connected again: to a new primary, perhaps
    void this.heartbeat().catch(() => undefined);
  }

  /** A presence write: one that fails leaves the next heartbeat to write everything again. */
  private async write<T>(command: Promise<T>): Promise<T> {
    try {
      return await command;
    } catch (err) {
      this.rewrite = true;
      throw err;
    }
  }

  private key(userId: string): string {
    return `chorus:presence:${userId}`;
  }

  private get nodeKey(): string {
    return nodeKeyOf(this.nodeId);
  }

  private async heartbeat(): Promise<void> {
    const forgetBefore = Date.now() - LEFT_MEMORY_MS;
    for (const [userId, at] of this.left) {
      if (at >= forgetBefore) break;
      this.left.delete(userId);
    }
    const before = await this.redis.set(this.nodeKey, COUNTS_WRITTEN, 'EX', NODE_TTL_SECONDS, 'GET');
    if (before === COUNTS_WRITTEN && !this.rewrite) return;
    this.rewrite = false;
    const pipeline = this.redis.pipeline();
    for (const [userId, count] of this.local) pipeline.hset(this.key(userId), this.nodeId, String(count));
    for (const userId of this.left.keys()) pipeline.hdel(this.key(userId), this.nodeId);
    const results = await pipeline.exec().catch(() => null);
    // A rewrite cut short must not leave the key saying the counts are written: the next heartbeat tries again.
    if (!results || results.some(([err]) => err)) {
      this.rewrite = true;
      await this.redis.set(this.nodeKey, ALIVE, 'EX', NODE_TTL_SECONDS);
    }
  }

  /**
   * Each user's clients on nodes that are alive: one HGETALL per user (auto-pipelined), then one MGET for every node
   * those hashes name, not one per user.
   */
  private async totalsOnLiveNodes(userIds: string[]): Promise<number[]> {
    const counts = await Promise.all(userIds.map((id) => this.redis.hgetall(this.key(id))));
    const named = [
      ...new Set(counts.flatMap((perNode) => Object.keys(perNode).filter((node) => Number(perNode[node]) > 0))),
    ];
    const alive = named.length === 0 ? [] : await this.redis.mget(named.map(nodeKeyOf));
    const live = new Set(named.filter((_, i) => alive[i]));
    return counts.map((perNode) =>
      Object.entries(perNode).reduce(
        (sum, [node, count]) => sum + (live.has(node) && Number(count) > 0 ? Number(count) : 0),
        0,
      ),
    );
  }

  async connected(userId: string): Promise<boolean> {
    const count = (this.local.get(userId) ?? 0) + 1;
    this.local.set(userId, count);
    this.left.delete(userId);
    // Only when missing (NX): a key that says the counts are written must keep saying so.
    await this.write(this.redis.set(this.nodeKey, ALIVE, 'EX', NODE_TTL_SECONDS, 'NX'));
    await this.write(this.redis.hset(this.key(userId), this.nodeId, String(count)));
    return (await this.totalsOnLiveNodes([userId]))[0] === 1;
  }

  async disconnected(userId: string): Promise<boolean> {
    const count = (this.local.get(userId) ?? 1) - 1;
    if (count > 0) {
      this.local.set(userId, count);
      await this.write(this.redis.hset(this.key(userId), this.nodeId, String(count)));
      return false;
    }
    this.local.delete(userId);
    this.left.set(userId, Date.now());
    if (this.left.size > MAX_LEFT) this.left.delete(this.left.keys().next().value!);
    await this.write(this.redis.hdel(this.key(userId), this.nodeId));
    return (await this.totalsOnLiveNodes([userId]))[0] === 0;
  }

  async online(userIds: string[]): Promise<Set<string>> {
    const totals = await this.totalsOnLiveNodes(userIds);
    return new Set(userIds.filter((_, i) => totals[i]! > 0));
  }

  /** A node that stops on purpose takes its clients out of presence at once. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const pipeline = this.redis.pipeline().del(this.nodeKey);
    for (const userId of this.local.keys()) pipeline.hdel(this.key(userId), this.nodeId);
    await pipeline.exec().catch(() => undefined);
  }
}
