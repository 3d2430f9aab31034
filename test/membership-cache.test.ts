import type { Redis } from 'ioredis';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { MembershipCache } from '../groups/membership-cache.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import { Groups } from '../groups/groups.js';
import { MembershipFeedLocal } from '../groups/membership-feed.js';
import { MembershipFeedRedis } from '../groups/membership-feed-redis.js';
import { reconnectingRedis } from './services.js';

describe('membership cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'chorus-group-sizes-'));
  const groups = new Groups(new GroupStoreSqlite(join(dir, 'groups.db'), 'normal'), new MembershipFeedLocal(), 100);
  /** A cache of member counts, counting the store reads and holding each one for `delayMs`. */
  const counted = (delayMs = 0) => {
    const reads = { count: 0 };
    const cache = new MembershipCache<number>(groups, { maxWeight: 100 });
    const size = (groupId: string) =>
      cache.get(groupId, async () => {
        reads.count += 1;
        const members = await groups.countMembers(groupId);
        await sleep(delayMs);
        return members;
      });
    return { cache, size, reads };
  };

  it('reads a group’s count once, then keeps it until a membership change on the feed', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'g', members: ['bob'] });
    const { cache, size, reads } = counted();
    expect(await size(groupId)).toBe(2);
    expect(await size(groupId)).toBe(2);
    expect(reads.count).toBe(1);
    await groups.addMember(groupId, 'alice', 'carol', 'member');
    expect(await size(groupId)).toBe(3);
    expect(reads.count).toBe(2);
    cache.close();
    await groups.addMember(groupId, 'alice', 'dave', 'member');
    expect(await size(groupId)).toBe(3); // closed: it follows the feed no longer
  });

  it('does not keep a count that a membership change overtook', async () => {
    const { id: groupId } = await groups.create('alice', { name: 'g2', members: ['bob'] });
    const { cache, size, reads } = counted(100);
    const first = size(groupId); // counts 2, then waits
    await sleep(20);
    await groups.addMember(groupId, 'alice', 'carol', 'member');
    expect(await first).toBe(2);
    expect(await size(groupId)).toBe(3);
    expect(reads.count).toBe(2);
    cache.close();
  });

  it('keeps entries up to maxWeight, dropping the least recently used first, and never one heavier than the bound', async () => {
    const cache = new MembershipCache<string[]>(groups, { maxWeight: 5, weigh: (ids) => ids.length });
    let reads = 0;
    const ids = (groupId: string, n: number) =>
      cache.get(groupId, async () => {
        reads += 1;
        return Array.from({ length: n }, (_, i) => `${groupId}-${i}`);
      });
    await ids('a', 2);
    await ids('b', 2);
    await ids('a', 2); // read again from the cache: a is now the most recently read
    expect(reads).toBe(2);
    await ids('c', 2); // 6 > 5: b, the least recently used, goes
    await ids('a', 2);
    await ids('c', 2);
    expect(reads).toBe(3);
    await ids('b', 2);
    expect(reads).toBe(4);
    await ids('big', 6); // heavier than the bound: handed out, never kept
    await ids('big', 6);
    expect(reads).toBe(6);
    cache.close();
  });
});

describe('membership cache on the Redis feed', () => {
  it('drops every entry when the feed says changes may have been missed (its Redis link was cut and is back)', async () => {
    const connections = [reconnectingRedis(), reconnectingRedis()];
    const [publisher, subscriber] = connections as [Redis, Redis];
    try {
      const feed = await MembershipFeedRedis.start(publisher, subscriber);
      const cache = new MembershipCache<number>(feed, { maxWeight: 100 });
      let reads = 0;
      const count = () => cache.get('g1', async () => ++reads);
      expect(await count()).toBe(1);
      expect(await count()).toBe(1); // kept
      const missed = new Promise<void>((resolve) => feed.onMissed(resolve));
      subscriber.disconnect(true); // a change published now would reach no listener here
      await missed;
      expect(await count()).toBe(2); // read again, not the minute-old entry
      cache.close();
    } finally {
      for (const redis of connections) redis.disconnect();
    }
  });
});
