import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageDraft, MessageLog } from '../sequencer/message-log.js';

/**
 * The MessageLog contract as one suite. A backend runs it with a factory that opens the log on the same underlying
 * storage every time it is called (so the suite can check what survives a reopen). Every test uses fresh group ids,
 * so the storage needs no wiping between tests.
 */
export function messageLogContract(name: string, openLog: () => Promise<MessageLog>): void {
  describe(`MessageLog contract: ${name}`, () => {
    let log: MessageLog;
    beforeAll(async () => {
      log = await openLog();
    });
    afterAll(async () => {
      await log.close();
    });

    const newGroup = () => `g-${randomUUID()}`;
    const draft = (senderId: string, clientMsgId: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
      senderId,
      clientMsgId,
      type: 'text',
      body: `body of ${clientMsgId}`,
      createdAtMs: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
      ...extra,
    });

    it('reports an empty group as lastSeq 0 with no messages', async () => {
      const groupId = newGroup();
      expect(await log.lastSeq(groupId)).toBe(0);
      expect(await log.readAfter(groupId, 0, 10)).toEqual([]);
      expect(await log.readBefore(groupId, 100, 10)).toEqual([]);
    });

    it('stamps seqs from 1 in draft order and round-trips every field', async () => {
      const groupId = newGroup();
      const [outcomes] = await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'a1'),
            draft('bob', 'b1', { type: 'note', body: 'héllo 👋 "quoted"', replyToSeq: 1, mentions: ['alice', 'carol'] }),
          ],
        },
      ]);
      expect(outcomes!.map((o) => [o.message.seq, o.duplicate])).toEqual([
        [1, false],
        [2, false],
      ]);
      const stored = await log.readAfter(groupId, 0, 10);
      expect(stored).toEqual([
        {
          groupId,
          seq: 1,
          senderId: 'alice',
          clientMsgId: 'a1',
          type: 'text',
          body: 'body of a1',
          createdAt: '2026-01-02T03:04:05.678Z',
        },
        {
          groupId,
          seq: 2,
          senderId: 'bob',
          clientMsgId: 'b1',
          type: 'note',
          body: 'héllo 👋 "quoted"',
          replyToSeq: 1,
          mentions: ['alice', 'carol'],
          createdAt: '2026-01-02T03:04:05.678Z',
        },
      ]);
      expect(outcomes!.map((o) => o.message)).toEqual(stored);
      expect(await log.lastSeq(groupId)).toBe(2);
    });

    it('keeps each group its own sequence within one call', async () => {
      const [g1, g2] = [newGroup(), newGroup()];
      await log.append([{ groupId: g1, drafts: [draft('a', '1')] }]);
      const outcomes = await log.append([
        { groupId: g1, drafts: [draft('a', '2'), draft('a', '3')] },
        { groupId: g2, drafts: [draft('a', '2')] },
      ]);
      expect(outcomes.map((group) => group.map((o) => o.message.seq))).toEqual([[2, 3], [1]]);
      expect(await log.lastSeq(g1)).toBe(3);
      expect(await log.lastSeq(g2)).toBe(1);
    });

    it('returns the original message for a retried clientMsgId and consumes no seq', async () => {
      const groupId = newGroup();
      await log.append([{ groupId, drafts: [draft('alice', 'x'), draft('alice', 'y')] }]);
      const [retry] = await log.append([
        { groupId, drafts: [draft('alice', 'x', { body: 'changed on retry', createdAtMs: 1 }), draft('alice', 'z')] },
      ]);
      expect(retry![0]).toEqual({
        duplicate: true,
        message: expect.objectContaining({ seq: 1, body: 'body of x', createdAt: '2026-01-02T03:04:05.678Z' }),
      });
      expect(retry![1]).toEqual({ duplicate: false, message: expect.objectContaining({ seq: 3, clientMsgId: 'z' }) });
      expect((await log.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual(['x', 'y', 'z']);
    });

    it('dedups a clientMsgId repeated inside one call', async () => {
      const groupId = newGroup();
      const [outcomes] = await log.append([{ groupId, drafts: [draft('a', 'same'), draft('a', 'same')] }]);
      expect(outcomes!.map((o) => [o.message.seq, o.duplicate])).toEqual([
        [1, false],
        [1, true],
      ]);
      expect(await log.lastSeq(groupId)).toBe(1);
    });

    it('scopes dedup to (group, sender, clientMsgId)', async () => {
      const [g1, g2] = [newGroup(), newGroup()];
      const outcomes = await log.append([
        { groupId: g1, drafts: [draft('alice', 'm'), draft('bob', 'm')] },
        { groupId: g2, drafts: [draft('alice', 'm')] },
      ]);
      expect(outcomes.flat().map((o) => [o.message.seq, o.duplicate])).toEqual([
        [1, false],
        [2, false],
        [1, false],
      ]);
    });

    it('pages forward from afterSeq and backward from beforeSeq', async () => {
      const groupId = newGroup();
      await log.append([
        { groupId, drafts: Array.from({ length: 25 }, (_, i) => draft('a', `m${i + 1}`)) },
      ]);
      expect((await log.readAfter(groupId, 0, 10)).map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect((await log.readAfter(groupId, 20, 10)).map((m) => m.seq)).toEqual([21, 22, 23, 24, 25]);
      expect(await log.readAfter(groupId, 25, 10)).toEqual([]);
      expect((await log.readBefore(groupId, 26, 3)).map((m) => m.seq)).toEqual([25, 24, 23]);
      expect((await log.readBefore(groupId, 3, 10)).map((m) => m.seq)).toEqual([2, 1]);
      expect(await log.readBefore(groupId, 1, 10)).toEqual([]);
    });

    it('keeps seq gap-free under concurrent appends to one group', async () => {
      const groupId = newGroup();
      const calls = Array.from({ length: 20 }, (_, call) =>
        log.append([{ groupId, drafts: Array.from({ length: 5 }, (_, i) => draft(`u${call}`, `c${i}`)) }]),
      );
      const outcomes = (await Promise.all(calls)).flat(2);
      const seqs = outcomes.map((o) => o.message.seq).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      expect((await log.readAfter(groupId, 0, 200)).map((m) => m.seq)).toEqual(seqs);
    });

    it('stamps calls of one group in call order, and finds a retry in a call made while its original is in flight', async () => {
      const groupId = newGroup();
      const first = log.append([{ groupId, drafts: [draft('u', 'a'), draft('u', 'b')] }]);
      const second = log.append([{ groupId, drafts: [draft('u', 'c'), draft('u', 'a')] }]);
      const third = log.append([{ groupId, drafts: [draft('u', 'd')] }]);
      const [[one], [two], [three]] = await Promise.all([first, second, third]);
      expect(one!.map((o) => [o.message.seq, o.duplicate])).toEqual([[1, false], [2, false]]);
      expect(two!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([[3, 'c', false], [1, 'a', true]]);
      expect(three!.map((o) => o.message.seq)).toEqual([4]);
      expect((await log.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual(['a', 'b', 'c', 'd']);
    });

    it('stores a large batch in one call', async () => {
      const groupId = newGroup();
      const drafts = Array.from({ length: 1000 }, (_, i) => draft('bulk', `b${i}`));
      const [outcomes] = await log.append([{ groupId, drafts }]);
      expect(outcomes!.at(-1)!.message.seq).toBe(1000);
      expect(await log.lastSeq(groupId)).toBe(1000);
    });

    it('keeps messages, seq and dedup across a reopen', async () => {
      const groupId = newGroup();
      await log.append([{ groupId, drafts: [draft('a', 'before-1'), draft('a', 'before-2')] }]);
      const reopened = await openLog();
      try {
        const [outcomes] = await reopened.append([{ groupId, drafts: [draft('a', 'before-1'), draft('a', 'after')] }]);
        expect(outcomes!.map((o) => [o.message.seq, o.duplicate])).toEqual([
          [1, true],
          [3, false],
        ]);
        expect((await reopened.readAfter(groupId, 0, 10)).map((m) => m.clientMsgId)).toEqual([
          'before-1',
          'before-2',
          'after',
        ]);
      } finally {
        await reopened.close();
      }
    });
  });
}
