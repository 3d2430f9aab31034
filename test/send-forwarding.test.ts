import { afterAll } from 'vitest';
import { SendForwardingLocal } from '../sequencer/send-forwarding.js';
import { SendForwardingRedis } from '../sequencer/send-forwarding-redis.js';
import { sendForwardingContract } from './send-forwarding.contract.js';
import { redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

sendForwardingContract('SendForwardingLocal', async () => {
  const node = SendForwardingLocal.hub();
  return { node: async (nodeId, options) => node(nodeId, options) };
});

sendForwardingContract('SendForwardingRedis (real Redis)', async () => ({
  node: async (nodeId, options) => SendForwardingRedis.start(await connect(), await connect(), nodeId, options),
}));
