import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type MembershipChange, MembershipFeedLocal } from '../groups/membership-feed.js';
import { MembershipFeedRedis } from '../groups/membership-feed-redis.js';
import { membershipFeedContract } from './membership-feed.contract.js';
import { reconnectingRedis, redisConnections } from './services.js';

// One process has one feed, whichever part of it listens.
membershipFeedContract(
  'MembershipFeedLocal',
  async () => {
    const feed = new MembershipFeedLocal();
    return { node: async () => feed };
  },
  async () => {},
);

const redis = redisConnections();
membershipFeedContract(
  'MembershipFeedRedis (real Redis)',
  async () => ({ node: async () => MembershipFeedRedis.start(await redis.connect(), await redis.connect()) }),
  async () => redis.closeAll(),
);

describe('MembershipFeedRedis when Redis goes away', () => {
  const change = (userId: string): MembershipChange => ({ kind: 'removed', groupId: 'g1', userId, by: 'ann' });
  /** Connections that reconnect by themselves, as a node's do. */
  const open: Redis[] = [];
  const connect = () => {
    const redis = reconnectingRedis();
    open.push(redis);
    return redis;
  };
  afterAll(() => {
    for (const redis of open) redis.disconnect();
  });

  it('tells its node it may have missed changes once its subscriber is back, and hears every change from then on', async () => {
    const feed = await MembershipFeedRedis.start(connect(), connect());
    const other = await MembershipFeedRedis.start(connect(), connect());
    const heard: string[] = [];
    feed.subscribe((c) => void heard.push(c.userId));
    let missed = 0;
    const told = new Promise<void>((resolve) =>
      feed.onMissed(() => {
        missed += 1;
        resolve();
      }),
    );
    // The subscriber's connection drops and comes back (as in a failover); nothing was published meanwhile here, but
    // the node cannot know that.
    const subscriber = open[1]!;
    subscriber.disconnect(true);
    await told;
    await other.publish(change('fay'));
    expect(heard).toEqual(['fay']);
    expect(missed).toBe(1);
  });

  it('tells every node changes were missed once its publish works again, though their subscribers stayed connected', async () => {
    const publisher = connect();
    const feed = await MembershipFeedRedis.start(publisher, connect());
    const other = await MembershipFeedRedis.start(connect(), connect());
    let missed = 0;
    other.onMissed(() => void (missed += 1));
    publisher.disconnect(); // the publish alone fails: the other node's subscriber never notices a thing
    await expect(feed.publish(change('hal'))).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(missed).toBe(0); // nothing goes out while the publisher is away
    await publisher.connect();
    await expect.poll(() => missed).toBe(1);
  });

  it("gives a change whose publish failed to its own node's listeners, and fails the call", async () => {
    const publisher = connect();
    const feed = await MembershipFeedRedis.start(publisher, connect());
    const heard: string[] = [];
    feed.subscribe((c) => void heard.push(c.userId));
    publisher.disconnect(); // for good: every command fails
    await expect(feed.publish(change('gus'))).rejects.toThrow();
    expect(heard).toEqual(['gus']);
  });
});
