import { MembershipFeedLocal } from '../groups/membership-feed.js';
import { MembershipFeedRedis } from '../groups/membership-feed-redis.js';
import { membershipFeedContract } from './membership-feed.contract.js';
import { redisConnections } from './services.js';

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
