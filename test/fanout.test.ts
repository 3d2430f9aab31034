import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { FanOutLocal, PUBLISHERS_KEPT, Publishers } from '../delivery/fan-out.js';
import { FanOutRedis } from '../delivery/fan-out-redis.js';
import { fanOutContract, stamped } from './fanout.contract.js';
import { until } from './harness.js';
import { redisConnections } from './services.js';

const { connect, closeAll } = redisConnections();
afterAll(closeAll);

fanOutContract('FanOutLocal', async () => {
  const node = FanOutLocal.hub();
  return { node: async () => node(randomUUID()), close: async () => {} };
});

fanOutContract('FanOutRedis (real Redis)', async () => {
  const nodes: FanOutRedis[] = [];
  return {
    node: async () => {
      const node = await FanOutRedis.start(await connect(), await connect(), randomUUID());
      nodes.push(node);
      return node;
    },
    close: async () => {
      for (const node of nodes) await node.close();
    },
  };
});

describe('FanOutRedis (real Redis)', () => {
  it('carries a big commit to the other nodes in Redis messages of at most 256 KiB', async () => {
    const writer = await FanOutRedis.start(await connect(), await connect(), 'writer');
    const raw = await connect();
    const sizes: number[] = [];
    let lines = 0;
    raw.on('messageBuffer', (_channel: Buffer, body: Buffer) => {
      sizes.push(body.length);
      lines += body.toString().split('\n').length - 1; // the first line names the publishing node
    });
    await raw.subscribe('chorus:fanout');
    const body = `${'é'.repeat(1000)}\n"quoted" text`;
    for (let seq = 1; seq <= 300; seq++) writer.publish(stamped('g1', seq, body));
    await until(() => lines === 300, 'all 300 lines');
    expect(sizes.length).toBeGreaterThan(1);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(256 * 1024);
    await writer.close();
  });
});

describe('Publishers', () => {
  it(`remembers the publishers of ${PUBLISHERS_KEPT} groups, forgetting first the one whose publisher changed longest ago`, () => {
    const publishers = new Publishers();
    publishers.heard('first', 'a');
    publishers.heard('second', 'a');
    for (let i = 0; i < PUBLISHERS_KEPT - 2; i++) publishers.heard(`g${i}`, 'a');
    publishers.heard('first', 'b'); // a new publisher: now the newest entry
    publishers.heard('one-more', 'a');
    expect(publishers.of('second')).toBeUndefined();
    expect(publishers.of('first')).toBe('b');
    expect(publishers.of('one-more')).toBe('a');
    expect(publishers.of('g0')).toBe('a');
  });
});
