import { afterAll, describe, expect, it } from 'vitest';
import { WriterMovedError } from '../sequencer/group-writers.js';
import { SendForwardingLocal } from '../sequencer/send-forwarding.js';
import { MAX_ENVELOPE_ITEMS, SendForwardingRedis } from '../sequencer/send-forwarding-redis.js';
import { until } from './harness.js';
import { sendForwardingContract } from './send-forwarding.contract.js';
import { reconnectingRedis, redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

sendForwardingContract('SendForwardingLocal', async () => {
  const node = SendForwardingLocal.hub();
  return { node: async (nodeId, options) => node(nodeId, options) };
});

sendForwardingContract('SendForwardingRedis (real Redis)', async () => ({
  node: async (nodeId, options) => SendForwardingRedis.start(await connect(), await connect(), nodeId, options),
}));

describe('SendForwardingRedis: requests posted again', () => {
  const options = { timeoutMs: 10_000, maxPending: 100, onInternalError: () => undefined };
  const message = { groupId: 'g1', seq: 1, senderId: 'alice', clientMsgId: 'c1', type: 'text', createdAt: '' };
  const send = { groupId: 'g1', senderId: 'alice', payload: { clientMsgId: 'c1' } };
  const id = (role: string) => `${role}-${process.pid}-${Date.now()}`;

  it('gets an answer lost on the way (a Redis failover) sent again, and the send is served once', async () => {
    const publisher = await connect();
    const serving = await SendForwardingRedis.start(publisher, await connect(), id('serving'), options);
    const asking = await SendForwardingRedis.start(await connect(), await connect(), id('asking'), options);
    let served = 0;
    serving.onRequest(async () => {
      served += 1;
      return { message, duplicate: false };
    });
    const publish = publisher.publish.bind(publisher);
    let dropped = 0;
    publisher.publish = ((channel: string, payload: string) => {
      if (dropped === 0 && payload.includes('"answers"')) {
        dropped += 1;
        return Promise.resolve(1); // "delivered", and lost
      }
      return publish(channel, payload);
    }) as typeof publisher.publish;
    const started = Date.now();
    await expect(asking.forward(serving.nodeId, send)).resolves.toEqual({ message, duplicate: false });
    expect(dropped).toBe(1);
    expect(served).toBe(1);
    expect(Date.now() - started).toBeLessThan(5000); // posted again after 1 s, not failed after timeoutMs
    await Promise.all([serving.close(), asking.close()]);
  });

  it('posts a waiting request again as soon as its own channel is back from an outage', async () => {
    const publisher = await connect();
    const subscriber = reconnectingRedis();
    const subscriberId = String(await subscriber.client('ID')); // before it subscribes, which allows no other command
    const serving = await SendForwardingRedis.start(publisher, await connect(), id('serving'), options);
    const asking = await SendForwardingRedis.start(await connect(), subscriber, id('asking'), options);
    serving.onRequest(async () => ({ message, duplicate: false }));
    // Every answer is lost until the asking node's channel reconnects (its reposts after 1 and 3 s too); the next
    // repost of the schedule would be 7 s after the send.
    const publish = publisher.publish.bind(publisher);
    let losing = true;
    publisher.publish = ((channel: string, payload: string) =>
      losing && payload.includes('"answers"')
        ? Promise.resolve(1)
        : publish(channel, payload)) as typeof publisher.publish;
    const started = Date.now();
    const forwarded = asking.forward(serving.nodeId, send);
    await new Promise((resolve) => setTimeout(resolve, 3500));
    losing = false;
    // Redis drops the asking node's channel, which reconnects at once, as after a failover.
    await publisher.client('KILL', 'ID', subscriberId);
    await expect(forwarded).resolves.toEqual({ message, duplicate: false });
    expect(Date.now() - started).toBeLessThan(6000);
    await Promise.all([serving.close(), asking.close()]);
    subscriber.disconnect();
  });

  it('posts at most MAX_ENVELOPE_ITEMS requests, and answers, in one Redis message', async () => {
    const askingPublisher = await connect();
    const servingPublisher = await connect();
    const many = { ...options, maxPending: 1000 };
    const serving = await SendForwardingRedis.start(servingPublisher, await connect(), id('serving'), many);
    const asking = await SendForwardingRedis.start(askingPublisher, await connect(), id('asking'), many);
    serving.onRequest(async () => ({ message, duplicate: false }));
    const sizes = (publisher: typeof askingPublisher, kind: string) => {
      const counted: number[] = [];
      const publish = publisher.publish.bind(publisher);
      publisher.publish = ((channel: string, payload: string) => {
        counted.push((JSON.parse(payload) as Record<string, unknown[]>)[kind]?.length ?? 0);
        return publish(channel, payload);
      }) as typeof publisher.publish;
      return counted;
    };
    const requests = sizes(askingPublisher, 'requests');
    const answers = sizes(servingPublisher, 'answers');
    const sends = MAX_ENVELOPE_ITEMS * 2 + 10;
    const results = await Promise.all(Array.from({ length: sends }, () => asking.forward(serving.nodeId, send)));
    expect(results).toHaveLength(sends);
    expect(requests).toEqual([MAX_ENVELOPE_ITEMS, MAX_ENVELOPE_ITEMS, 10]);
    expect(Math.max(...answers)).toBeLessThanOrEqual(MAX_ENVELOPE_ITEMS);
    expect(answers.reduce((a, b) => a + b, 0)).toBe(sends);
    await Promise.all([serving.close(), asking.close()]);
  });

  it('moves a send at once when the node serving it dies before answering', async () => {
    const subscriber = await connect();
    const serving = await SendForwardingRedis.start(await connect(), subscriber, id('serving'), options);
    const asking = await SendForwardingRedis.start(await connect(), await connect(), id('asking'), options);
    let received: () => void;
    const arrived = new Promise<void>((resolve) => (received = resolve));
    serving.onRequest(() => {
      received();
      return new Promise(() => undefined); // dies holding it
    });
    const forwarded = asking.forward(serving.nodeId, send);
    await arrived;
    subscriber.disconnect(); // nobody listens on its channel any more
    const started = Date.now();
    await expect(forwarded).rejects.toBeInstanceOf(WriterMovedError);
    expect(Date.now() - started).toBeLessThan(5000);
    await asking.close();
  });
});

describe('SendForwardingRedis: relayed marks', () => {
  const options = { timeoutMs: 10_000, maxPending: 100, onInternalError: () => undefined };

  it('takes from its channel only well-formed delivered marks', async () => {
    const publisher = await connect();
    const nodeId = `marks-${process.pid}-${Date.now()}`;
    const serving = await SendForwardingRedis.start(publisher, await connect(), nodeId, options);
    const got: unknown[][] = [];
    serving.onMarks((marks) => got.push(marks));
    const good = { groupId: 'g1', userId: 'bob', seq: 4 };
    const bad = [
      { groupId: 'g1', userId: 'bob', seq: 0 },
      { groupId: 'g1', userId: 'bob', seq: 1.5 },
      { groupId: 'g1', userId: 'bob', seq: '4' },
      { groupId: 7, userId: 'bob', seq: 4 },
      { groupId: 'g1', seq: 4 },
      null,
      'g1',
    ];
    await publisher.publish(`chorus:sends:${nodeId}`, JSON.stringify({ marks: [...bad, good] }));
    await publisher.publish(`chorus:sends:${nodeId}`, JSON.stringify({ marks: bad }));
    await publisher.publish(`chorus:sends:${nodeId}`, JSON.stringify({ marks: 'all of them' }));
    await publisher.publish(`chorus:sends:${nodeId}`, 'not json');
    await until(() => got.length >= 1, 'the good mark arrives');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(got).toEqual([[good]]);
    await serving.close();
  });

  it('refuses a relay while Redis cannot be reached', async () => {
    const publisher = await connect();
    const asking = await SendForwardingRedis.start(publisher, await connect(), `asking-${process.pid}`, options);
    publisher.disconnect();
    await expect(asking.relayMarks('anyone', [{ groupId: 'g1', userId: 'bob', seq: 1 }])).rejects.toThrow();
    await asking.close();
  });
});
