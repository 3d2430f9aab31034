import { afterAll, describe, expect, it } from 'vitest';
import { FanOutRedis } from '../broker/fanout-redis.js';
import type { StampedMessage } from '../protocol/index.js';
import { until } from './harness.js';
import { redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

const message = (groupId: string, seq: number, body: string): StampedMessage => ({
  groupId,
  seq,
  senderId: 'alice',
  clientMsgId: `c${seq}`,
  type: 'text',
  body,
  createdAt: new Date(0).toISOString(),
});

describe('FanOutRedis (real Redis)', () => {
  it('carries one commit to every node in order, split into bounded Redis messages', async () => {
    const stamping = await FanOutRedis.start(await connect(), await connect());
    const other = await FanOutRedis.start(await connect(), await connect());
    const received: [FanOutRedis, string, StampedMessage][] = [];
    for (const node of [stamping, other]) node.onDeliver((groupId, payload) => received.push([node, groupId, JSON.parse(payload.toString())]));
    const raw = await connect();
    const sizes: number[] = [];
    let lines = 0;
    raw.on('messageBuffer', (_channel: Buffer, body: Buffer) => {
      sizes.push(body.length);
      lines += body.toString().split('\n').length;
    });
    await raw.subscribe('chorus:fanout');

    const body = 'é'.repeat(1000) + '\n"quoted" text'; // multi-byte characters, and a newline the framing must survive
    const commit = Array.from({ length: 300 }, (_, i) => message(i % 2 ? 'g-one' : 'g_two', i + 1, body));
    for (const m of commit) stamping.publish(m);

    // The raw subscriber has a connection of its own: it may see the last Redis message after the nodes do.
    await until(() => received.length === 600 && lines === 300, 'both nodes and the raw subscriber receive all 300', 10_000);
    for (const node of [stamping, other]) {
      const mine = received.filter(([n]) => n === node);
      expect(mine.map(([, , m]) => m)).toEqual(commit);
      expect(mine.every(([, groupId, m]) => groupId === m.groupId)).toBe(true);
    }
    expect(sizes.length).toBeGreaterThan(1);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(256 * 1024);
  });
});
