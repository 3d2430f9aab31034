import { describe, expect, it } from 'vitest';
import { GroupStream } from '../clients/group-stream.js';
import type { StampedMessage } from '../protocol/index.js';

const msg = (seq: number): StampedMessage => ({
  groupId: 'g',
  seq,
  senderId: 'u',
  clientMsgId: `c${seq}`,
  type: 'text',
  body: `b${seq}`,
  createdAt: new Date(0).toISOString(),
});

function setup(historyUpTo: number, from = 0) {
  const delivered: number[] = [];
  const fetches: number[] = [];
  const stream = new GroupStream(
    'g',
    from,
    async (after, limit) => {
      fetches.push(after);
      const out: StampedMessage[] = [];
      for (let s = after + 1; s <= Math.min(historyUpTo, after + limit); s++) out.push(msg(s));
      return { messages: out, retainedFrom: 1 };
    },
    (m) => delivered.push(m.seq),
    (err) => {
      throw err;
    },
    () => {
      throw new Error('nothing expires here');
    },
  );
  return { stream, delivered, fetches };
}

describe('GroupStream', () => {
  it('delivers in-order arrivals directly, without reading history', () => {
    const { stream, delivered, fetches } = setup(3);
    for (const s of [1, 2, 3]) stream.offer(msg(s));
    expect(delivered).toEqual([1, 2, 3]);
    expect(fetches).toEqual([]);
  });

  it('drops duplicates and anything at or below the position', () => {
    const { stream, delivered } = setup(3, 1);
    for (const s of [1, 2, 2, 3, 1, 3]) stream.offer(msg(s));
    expect(delivered).toEqual([2, 3]);
  });

  it('fills a gap from history and then delivers what was buffered, exactly once', async () => {
    const { stream, delivered, fetches } = setup(6);
    stream.offer(msg(1));
    stream.offer(msg(4)); // 2 and 3 were missed
    stream.offer(msg(6));
    stream.offer(msg(5));
    await stream.catchUp();
    expect(delivered).toEqual([1, 2, 3, 4, 5, 6]);
    expect(fetches[0]).toBe(1);
  });

  it('catches up across several pages from a stored position', async () => {
    const { stream, delivered } = setup(1234, 100);
    await stream.catchUp();
    expect(delivered).toEqual(Array.from({ length: 1134 }, (_, i) => i + 101));
    expect(stream.lastDelivered).toBe(1234);
  });

  it('reorders a reversed burst', async () => {
    const { stream, delivered } = setup(20);
    for (let s = 20; s >= 1; s--) stream.offer(msg(s));
    await stream.catchUp();
    expect(delivered).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });
});
