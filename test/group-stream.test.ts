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
    () => undefined,
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
  it('tries a failed history read again after the delay it is given, and then delivers what waited behind the gap', async () => {
    const delivered: number[] = [];
    const errors: string[] = [];
    const delays: number[] = [];
    let down = 2; // the first two reads fail (the API answers 503 while its store is away)
    const stream = new GroupStream(
      'g',
      0,
      async (after) => {
        if (down-- > 0) throw new Error('503 UNAVAILABLE');
        return { messages: [msg(after + 1), msg(after + 2)].filter((m) => m.seq <= 3), retainedFrom: 1 };
      },
      (m) => delivered.push(m.seq),
      (err) => errors.push((err as Error).message),
      () => {
        throw new Error('nothing expires here');
      },
      (_err, failures) => {
        delays.push(failures);
        return 10;
      },
    );
    stream.offer(msg(1));
    stream.offer(msg(3)); // 2 was missed; nothing more will come to start another read
    await stream.catchUp();
    expect(delivered).toEqual([1]);
    await expect.poll(() => delivered).toEqual([1, 2, 3]);
    expect(errors).toEqual(['503 UNAVAILABLE', '503 UNAVAILABLE']);
    expect(delays).toEqual([0, 1]); // failures in a row, counted from 0
  });

  it('does not try again when the error lasts, nor once stopped', async () => {
    let reads = 0;
    const failing = (retryDelayMs: () => number | undefined) =>
      new GroupStream(
        'g',
        0,
        async () => {
          reads += 1;
          throw new Error('403 NOT_A_MEMBER');
        },
        () => undefined,
        () => undefined,
        () => undefined,
        retryDelayMs,
      );
    await failing(() => undefined).catchUp();
    const stopped = failing(() => 10);
    await stopped.catchUp();
    stopped.stop();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(reads).toBe(2);
  });
});
