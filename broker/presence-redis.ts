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
const NODE_KEY_PREFIX = 'chorus:node:';
/** A node's heartbeat key: while it stands, the node's counts in the users' hashes count. */
const nodeKeyOf = (nodeId: string): string => `${NODE_KEY_PREFIX}${nodeId}`;
/** Users one TOTALS_SCRIPT call reads: it runs alone in Redis, so a call stays well under a millisecond. */
export const PRESENCE_USERS_PER_CALL = 500;
/**
 * Each user's clients on nodes that are alive, in one command: KEYS are the users' hashes, ARGV[1] the node key
 * prefix. A node key is read once per call whoever names it. The node keys are not among KEYS (which nodes a hash
 * names is known only inside): Chorus's Redis is one primary (with Sentinel), never a Redis Cluster, where a script
 * may read only the keys it is given. A key that is not a hash counts as no clients, as an absent one does.
 */
const TOTALS_SCRIPT = `
local alive = {}
local totals = {}
for i, key in ipairs(KEYS) do
  local total = 0
  local fields = redis.pcall('HGETALL', key)
  if fields.err == nil then
    for j = 1, #fields, 2 do
      local node, count = fields[j], tonumber(fields[j + 1])
      if count and count > 0 then
        local live = alive[node]
        if live == nil then
          live = redis.call('EXISTS', ARGV[1] .. node) == 1
          alive[node] = live
        end
        if live then total = total + count end
      end
    end
  end
  totals[i] = total
end
return totals
`;
type WithTotals = Redis & {
  chorusPresenceTotals(keyCount: number, ...keysThenPrefix: string[]): Promise<number[]>;
};

/**
 * Presence across nodes in Redis: per user a hash of node id -> connected clients, and per node a heartbeat key that
 * expires when the node dies, so a crashed node's clients stop counting within NODE_TTL_SECONDS. A heartbeat is one
 * command while the node key stands. When the key was gone (Redis lost its data, or the node stalled past its TTL), or
 * a connect made it anew, that heartbeat writes every count of this node again: presence comes back by itself within
 * one heartbeat, and a node with 17,000 users does not rewrite 17,000 hashes every few seconds to get that.
 * The same rewrite follows a reconnection to Redis and a presence write that failed: a failover to a replica may have
 * lost writes the old primary had acknowledged, so the rewrite also takes out again the users who left this node in the
 * last minute.
 *
 * Reading presence is one script call per PRESENCE_USERS_PER_CALL users (not a command per user: a pass of the push
 * notifier asks for every member of the groups that had news), and asks Redis only about users with no client on this
 * node.
 */
export class PresenceRedis implements Presence {
  private readonly local = new Map<string, number>();
  /** Users who left this node lately, with when, oldest first. */
  private readonly left = new Map<string, number>();
  /** Set when Redis may have lost this node's writes: the next heartbeat writes them all again. */
  private rewrite = false;
  private readonly timer: NodeJS.Timeout;
  private readonly redis: WithTotals;

  constructor(
    redis: Redis,
    private readonly nodeId: string,
    heartbeatMs = HEARTBEAT_MS,
  ) {
    // ioredis sends it by its hash, and the script itself to a server that lacks it (one that was failed over to).
    redis.defineCommand('chorusPresenceTotals', { lua: TOTALS_SCRIPT });
    this.redis = redis as WithTotals;
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

  /** Each user's clients on nodes that are alive. */
  private async totalsOnLiveNodes(userIds: string[]): Promise<number[]> {
    const calls: Promise<number[]>[] = [];
    for (let at = 0; at < userIds.length; at += PRESENCE_USERS_PER_CALL) {
      const keys = userIds.slice(at, at + PRESENCE_USERS_PER_CALL).map((id) => this.key(id));
      calls.push(this.redis.chorusPresenceTotals(keys.length, ...keys, NODE_KEY_PREFIX));
    }
    return (await Promise.all(calls)).flat();
  }

  async connected(userId: string): Promise<boolean> {
    const count = (this.local.get(userId) ?? 0) + 1;
    this.local.set(userId, count);
    this.left.delete(userId);
    // Issued together, so they leave in one write and come back in one read; Redis runs them in this order. The node
    // key only when missing (NX): a key that says the counts are written must keep saying so.
    const [, , totals] = await Promise.all([
      this.write(this.redis.set(this.nodeKey, ALIVE, 'EX', NODE_TTL_SECONDS, 'NX')),
      this.write(this.redis.hset(this.key(userId), this.nodeId, String(count))),
      this.totalsOnLiveNodes([userId]),
    ]);
    return totals[0] === 1;
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
    const [, totals] = await Promise.all([
      this.write(this.redis.hdel(this.key(userId), this.nodeId)),
      this.totalsOnLiveNodes([userId]),
    ]);
    return totals[0] === 0;
  }

  async online(userIds: string[]): Promise<Set<string>> {
    const online = new Set<string>();
    const elsewhere: string[] = [];
    for (const userId of userIds) {
      if (this.local.has(userId)) online.add(userId);
      else elsewhere.push(userId);
    }
    if (elsewhere.length === 0) return online;
    const totals = await this.totalsOnLiveNodes(elsewhere);
    for (const [i, userId] of elsewhere.entries()) if (totals[i]! > 0) online.add(userId);
    return online;
  }

  /** A node that stops on purpose takes its clients out of presence at once. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const pipeline = this.redis.pipeline().del(this.nodeKey);
    for (const userId of this.local.keys()) pipeline.hdel(this.key(userId), this.nodeId);
    await pipeline.exec().catch(() => undefined);
  }
}
