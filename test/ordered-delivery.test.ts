import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { OrderedDelivery, type OrderedDeliveryOptions } from '../delivery/ordered-delivery.js';
import { TestChorus, collect, tempDir, until } from './harness.js';

const draft = (clientMsgId: string, createdAtMs = Date.now()) => ({
  senderId: 'alice',
  clientMsgId,
  type: 'text',
  body: clientMsgId,
  createdAtMs,
});

describe('OrderedDelivery on a real SQLite log', () => {
  const log = new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' });
  afterAll(() => log.close());

  /** As on the writer: recent messages recovered on a first commit and in gaps. */
  const fanOut = (options: Partial<OrderedDeliveryOptions> = {}, from = log) => {
    const published: number[] = [];
    const errors: unknown[] = [];
    const ordered = new OrderedDelivery<StampedMessage>(
      from,
      (_g, m) => published.push(m.seq),
      (m) => m,
      {
        recoverWindowMs: 60_000,
        gapWindowMs: 60_000,
        maxRead: 100,
        maxGap: 100,
        maxGroups: 2,
        onError: (err) => errors.push(err),
        ...options,
      },
    );
    return { ordered, published, errors };
  };

  /** Stores drafts in one append and returns their messages. */
  const append = async (groupId: string, ...drafts: ReturnType<typeof draft>[]) =>
    (await log.append([{ groupId, drafts }]))[0]!.map((o) => o.message);

  it('on a first commit, delivers the recent messages an earlier writer left, then the commit; older ones count as delivered', async () => {
    const [old] = await append('g1', draft('old', Date.now() - 3_600_000));
    const [left1, left2] = await append('g1', draft('left-1'), draft('left-2'));
    expect([old!.seq, left1!.seq, left2!.seq]).toEqual([1, 2, 3]);
    const [fresh] = await append('g1', draft('fresh'));
    const { ordered, published } = fanOut();
    ordered.offer('g1', [fresh!]);
    await until(() => published.length === 3, 'the recovered messages and the new one');
    expect(published).toEqual([2, 3, 4]);
    ordered.offer('g1', [fresh!, left1!]); // retries of delivered messages: nothing again
    const [next] = await append('g1', draft('next'));
    ordered.offer('g1', [next!]);
    expect(published).toEqual([2, 3, 4, 5]);
  });

  it('fills a gap from the log before the message above it, and keeps later commits behind the read', async () => {
    const { ordered, published } = fanOut();
    const [first] = await append('g2', draft('a'));
    ordered.offer('g2', [first!]);
    await until(() => published.length === 1, 'the first message');
    const [, unseen] = await append('g2', draft('b'), draft('c')); // stored, never offered
    const [d] = await append('g2', draft('d'));
    const [e] = await append('g2', draft('e'));
    ordered.offer('g2', [d!]);
    ordered.offer('g2', [e!]); // while the gap is read: must wait its turn
    await until(() => published.length === 5, 'the gap, then d and e');
    expect(published).toEqual([1, 2, 3, 4, 5]);
    expect(unseen!.seq).toBe(3);
  });

  it('as on a receiving node: takes a first message as it comes, and fills a whole gap page by page, old messages too', async () => {
    const { ordered, published } = fanOut({ recoverWindowMs: 0, gapWindowMs: Number.POSITIVE_INFINITY, maxRead: 1 });
    await append('g4', draft('old-1', Date.now() - 3_600_000), draft('old-2', Date.now() - 3_600_000));
    const [third] = await append('g4', draft('c'));
    ordered.offer('g4', [third!]);
    expect(published).toEqual([3]); // at once, no read
    const [, , sixth] = await append('g4', draft('d', Date.now() - 3_600_000), draft('e'), draft('f'));
    ordered.offer('g4', [sixth!]);
    await until(() => published.length === 4, 'the gap and the message');
    expect(published).toEqual([3, 4, 5, 6]);
  });

  it('catches a group up from the log page by page when it may have missed messages, with nothing newer arriving; leaves a group it does not know alone', async () => {
    const { ordered, published } = fanOut({ recoverWindowMs: 0, gapWindowMs: Number.POSITIVE_INFINITY, maxRead: 2 });
    const [first] = await append('g7', draft('a'));
    ordered.offer('g7', [first!]);
    await append('g7', draft('b'), draft('c'), draft('d')); // stored, never offered: this node's fan-out was cut
    await append('g8', draft('elsewhere'));
    await Promise.all([ordered.catchUp('g7'), ordered.catchUp('g8')]);
    expect(published).toEqual([1, 2, 3, 4]);
    expect(ordered.groups()).toEqual(['g7']);
    const [e] = await append('g7', draft('e'));
    ordered.offer('g7', [e!]);
    expect(published).toEqual([1, 2, 3, 4, 5]); // at once: the group is caught up, so no gap is read
  });

  it('delivers only the newest maxGap messages of a longer gap', async () => {
    const { ordered, published } = fanOut({ recoverWindowMs: 0, gapWindowMs: Number.POSITIVE_INFINITY, maxGap: 2 });
    const [first] = await append('g5', draft('a'));
    ordered.offer('g5', [first!]);
    const [, , , , last] = await append('g5', draft('b'), draft('c'), draft('d'), draft('e'), draft('f'));
    ordered.offer('g5', [last!]);
    await until(() => published.length === 4, 'the newest two of the gap and the message');
    expect(published).toEqual([1, 4, 5, 6]);
  });

  it('delivers what is at hand when the log cannot be read, and reports it', async () => {
    const broken = new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' });
    const m = (await broken.append([{ groupId: 'g3', drafts: [draft('x')] }]))[0]![0]!;
    await broken.close(); // reads now fail
    const { ordered, published, errors } = fanOut({}, broken);
    ordered.offer('g3', [m.message]);
    await until(() => published.length === 1, 'the message itself');
    expect(errors).toHaveLength(1);
  });
});

describe('a message a dead writer stored but never delivered', () => {
  let t: TestChorus;
  afterAll(() => t?.close());

  it('is delivered live, in its place, when its sender retries it on the next writer', async () => {
    const dataDir = tempDir();
    // The earlier process: it stored alice's message, then died before its fan-out.
    const earlier = new MessageLogSqlite(join(dataDir, 'messages.db'), { synchronous: 'full' });
    t = await TestChorus.start({ dataDir, sqliteSynchronous: 'normal' });
    const groupId = await t.group('alice', ['bob']);
    await earlier.append([{ groupId, drafts: [draft('lost')] }]);
    await earlier.close();

    const bob = await t.mqtt('bob');
    const bobGot = collect(bob);
    await bob.subscribeAsync(`groups/${groupId}/messages`, { qos: 1 });
    const alice = await t.mqtt('alice');
    const topic = `groups/${groupId}/messages`;
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'lost', body: 'lost' }), { qos: 1 }); // the retry
    await alice.publishAsync(topic, JSON.stringify({ clientMsgId: 'after', body: 'after' }), { qos: 1 });
    await until(() => bobGot.all.length === 2, 'bob to receive both');
    expect(bobGot.all.map((m) => [m.body.seq, m.body.clientMsgId])).toEqual([
      [1, 'lost'],
      [2, 'after'],
    ]);
    await Promise.all([alice.endAsync(), bob.endAsync()]);
  });
});
