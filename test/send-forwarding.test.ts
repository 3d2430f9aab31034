import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { SendForwardingRedis, type ForwardedSend } from '../sequencer/send-forwarding-redis.js';
import { redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

describe('SendForwardingRedis (real Redis)', () => {
  it('answers a failure that is not a ChorusError as INTERNAL, and tells the serving node of it', async () => {
    const internal: [unknown, ForwardedSend][] = [];
    const options = { timeoutMs: 5000, maxPending: 10, onInternalError: (err: unknown, send: ForwardedSend) => void internal.push([err, send]) };
    const servingId = `serving-${randomUUID()}`;
    const serving = await SendForwardingRedis.start(await connect(), await connect(), servingId, options);
    const asking = await SendForwardingRedis.start(await connect(), await connect(), `asking-${randomUUID()}`, options);
    serving.onRequest(async () => {
      throw new TypeError('a bug');
    });
    await expect(asking.forward(servingId, { groupId: 'g1', senderId: 'alice', payload: { clientMsgId: 'c1', body: 'x' } })).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(internal.map(([err, send]) => [(err as Error).message, send.groupId, send.senderId])).toEqual([['a bug', 'g1', 'alice']]);
    await serving.close();
    await asking.close();
  });
});
