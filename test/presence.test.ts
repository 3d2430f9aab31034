import { randomUUID } from 'node:crypto';
import { afterAll } from 'vitest';
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
