import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageDraft, MessageLog } from '../sequencer/message-log.js';

/** Groups whose id starts with this keep their messages EXPIRING_RETENTION_MS; the others keep them for good. */
export const EXPIRING = 'expiring-';
export const EXPIRING_RETENTION_MS = 3_600_000;

/**
 * The MessageLog contract as one suite. A backend runs it with a factory that opens the log on the same underlying
 * storage every time it is called (so the suite can check what survives a reopen), and with `expireAsOf`, which brings
 * a group to the state it has at `asOfMs` (in the next few seconds) as far as expiry goes: the messages of an EXPIRING
 * group created more than EXPIRING_RETENTION_MS before it are gone. Every test uses fresh group ids, so the storage
 * needs no wiping between tests.
 */
export function messageLogContract(
  name: string,
  openLog: () => Promise<MessageLog>,
  expireAsOf: (log: MessageLog, groupId: string, asOfMs: number) => Promise<void>,
): void {
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
      expect(await log.firstSeq(groupId)).toBe(1);
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
            draft('bob', 'b1', {
              type: 'note',
              body: 'héllo 👋 "quoted"',
              replyToSeq: 1,
              mentions: ['alice', 'carol'],
            }),
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
      await log.append([{ groupId, drafts: Array.from({ length: 25 }, (_, i) => draft('a', `m${i + 1}`)) }]);
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
      expect(one!.map((o) => [o.message.seq, o.duplicate])).toEqual([
        [1, false],
        [2, false],
      ]);
      expect(two!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([
        [3, 'c', false],
        [1, 'a', true],
      ]);
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

    const at = (ms: number) => new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678) + ms).toISOString();

    it('applies edits in seq order to the target, and returns the events themselves as stored', async () => {
      const groupId = newGroup();
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'm1', {
              body: 'first',
              attachments: [{ url: 'https://cdn.example/p.jpg', mimeType: 'image/jpeg', sizeBytes: 10 }],
            }),
          ],
        },
      ]);
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'e1', {
              type: 'edit',
              targetSeq: 1,
              body: 'second',
              createdAtMs: Date.UTC(2026, 0, 2, 3, 4, 5, 678) + 1000,
            }),
            draft('alice', 'e2', {
              type: 'edit',
              targetSeq: 1,
              body: 'third',
              createdAtMs: Date.UTC(2026, 0, 2, 3, 4, 5, 678) + 2000,
            }),
          ],
        },
      ]);
      const [target, e1, e2] = await log.readAfter(groupId, 0, 10);
      expect(target).toMatchObject({
        seq: 1,
        body: 'third',
        editedAt: at(2000),
        attachments: [{ url: 'https://cdn.example/p.jpg' }],
      });
      expect(e1).toMatchObject({ seq: 2, type: 'edit', targetSeq: 1, body: 'second' });
      expect(e2).toMatchObject({ seq: 3, type: 'edit', targetSeq: 1, body: 'third' });
      // A retried edit is a duplicate: it changes nothing again.
      const [retry] = await log.append([
        { groupId, drafts: [draft('alice', 'e1', { type: 'edit', targetSeq: 1, body: 'second' })] },
      ]);
      expect(retry![0]!.duplicate).toBe(true);
      expect((await log.readAfter(groupId, 0, 1))[0]).toMatchObject({ body: 'third' });
    });

    it('erases a deleted message and its edits from the store, and no later edit brings a body back', async () => {
      const groupId = newGroup();
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'm1', { body: 'secret', mentions: ['bob'] }),
            draft('alice', 'e1', { type: 'edit', targetSeq: 1, body: 'secret too' }),
            draft('bob', 'r1', { type: 'reaction', targetSeq: 1, emoji: '👍' }),
          ],
        },
      ]);
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'd1', {
              type: 'delete',
              targetSeq: 1,
              createdAtMs: Date.UTC(2026, 0, 2, 3, 4, 5, 678) + 5000,
            }),
          ],
        },
      ]);
      await log.append([
        { groupId, drafts: [draft('alice', 'e2', { type: 'edit', targetSeq: 1, body: 'after the delete' })] },
      ]);
      const stored = await log.readAfter(groupId, 0, 10);
      expect(stored[0]).toEqual({
        groupId,
        seq: 1,
        senderId: 'alice',
        clientMsgId: 'm1',
        type: 'text',
        createdAt: at(0),
        deletedAt: at(5000),
      });
      expect(stored[1]).toMatchObject({ seq: 2, type: 'edit', targetSeq: 1, deletedAt: at(5000) });
      expect(stored[1]).not.toHaveProperty('body');
      expect(stored[3]).toMatchObject({ seq: 4, type: 'delete', targetSeq: 1 });
      expect(stored[4]).toMatchObject({ seq: 5, type: 'edit', targetSeq: 1 });
      expect(stored[4]).not.toHaveProperty('body');
      expect(JSON.stringify(stored)).not.toContain('secret');
      expect(JSON.stringify(stored)).not.toContain('after the delete');
      expect((await log.reactions(groupId, [1], 'bob')).size).toBe(0);
    });

    it('counts reactions per message, most used first, with the viewer own marked; remove takes one back', async () => {
      const groupId = newGroup();
      const react = (user: string, id: string, targetSeq: number, emoji: string, remove = false) =>
        draft(user, id, { type: 'reaction', targetSeq, emoji, ...(remove ? { remove: true as const } : {}) });
      await log.append([{ groupId, drafts: [draft('alice', 'm1'), draft('alice', 'm2'), draft('alice', 'm3')] }]);
      await log.append([
        {
          groupId,
          drafts: [
            react('bob', 'r1', 1, '👍'),
            react('carol', 'r2', 1, '👍'),
            react('bob', 'r3', 1, '🎉'),
            react('dan', 'r4', 1, '🎉'),
            react('dan', 'r5', 3, '❤️'),
          ],
        },
      ]);
      await log.append([{ groupId, drafts: [react('dan', 'r6', 1, '🎉', true), react('bob', 'r7', 1, '👍')] }]); // a second 👍 of bob's counts once
      const counts = await log.reactions(groupId, [1, 2, 3], 'bob');
      expect(counts.get(1)).toEqual([
        { emoji: '👍', count: 2, mine: true },
        { emoji: '🎉', count: 1, mine: true },
      ]);
      expect(counts.has(2)).toBe(false);
      expect(counts.get(3)).toEqual([{ emoji: '❤️', count: 1, mine: false }]);
      expect((await log.readAfter(groupId, 8, 1))[0]).toMatchObject({
        seq: 9,
        type: 'reaction',
        targetSeq: 1,
        emoji: '🎉',
        remove: true,
      });
    });

    it('deletes a group: messages, dedup entries and reactions', async () => {
      const groupId = newGroup();
      await log.append([
        {
          groupId,
          drafts: [draft('alice', 'm1'), draft('bob', 'r1', { type: 'reaction', targetSeq: 1, emoji: '👍' })],
        },
      ]);
      await log.deleteGroup(groupId);
      expect(await log.readAfter(groupId, 0, 10)).toEqual([]);
      expect(await log.lastSeq(groupId)).toBe(0);
      expect((await log.reactions(groupId, [1], 'bob')).size).toBe(0);
    });

    it('lets the oldest messages expire as a prefix, with their reactions and dedup entries, and reuses no seq', async () => {
      const groupId = `${EXPIRING}${randomUUID()}`;
      const now = Date.now();
      // Past the retention 5 s from now: the checks before expireAsOf must see every message, also on a busy machine
      // (with 0.5 s, Cassandra's TTL had already taken them once in CI).
      const old = now - EXPIRING_RETENTION_MS + 5_000;
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'm1', { createdAtMs: old }),
            draft('alice', 'm2', { createdAtMs: old }),
            draft('bob', 'r1', { type: 'reaction', targetSeq: 1, emoji: '👍', createdAtMs: old }),
          ],
        },
      ]);
      await log.append([
        {
          groupId,
          drafts: [
            draft('alice', 'm4', { createdAtMs: now }),
            draft('bob', 'r4', { type: 'reaction', targetSeq: 4, emoji: '🎉', createdAtMs: now }),
          ],
        },
      ]);
      expect(await log.firstSeq(groupId)).toBe(1);
      expect((await log.reactions(groupId, [1], 'bob')).has(1)).toBe(true);

      await expireAsOf(log, groupId, now + 5_500);
      expect(await log.firstSeq(groupId)).toBe(4);
      expect(await log.lastSeq(groupId)).toBe(5);
      expect((await log.readAfter(groupId, 0, 10)).map((m) => m.seq)).toEqual([4, 5]);
      expect((await log.readAfter(groupId, 1, 10)).map((m) => m.seq)).toEqual([4, 5]);
      expect((await log.readBefore(groupId, 100, 10)).map((m) => m.seq)).toEqual([5, 4]);
      const reactions = await log.reactions(groupId, [1, 4], 'bob');
      expect(reactions.has(1)).toBe(false);
      expect(reactions.get(4)).toEqual([{ emoji: '🎉', count: 1, mine: true }]);
      // A clientMsgId is a retry only while its message is kept: m1 again is a new message, after the last seq.
      const [outcomes] = await log.append([
        { groupId, drafts: [draft('alice', 'm1', { createdAtMs: Date.now() }), draft('alice', 'm4')] },
      ]);
      expect(outcomes!.map((o) => [o.message.seq, o.duplicate])).toEqual([
        [6, false],
        [4, true],
      ]);
      expect(await log.firstSeq(groupId)).toBe(4);
    });

    it('goes on counting seqs once every message has expired, across a reopen', async () => {
      const groupId = `${EXPIRING}${randomUUID()}`;
      const old = Date.now() - EXPIRING_RETENTION_MS + 500;
      await log.append([
        { groupId, drafts: [draft('a', 'm1', { createdAtMs: old }), draft('a', 'm2', { createdAtMs: old })] },
      ]);
      await expireAsOf(log, groupId, Date.now() + 1000);
      expect(await log.readAfter(groupId, 0, 10)).toEqual([]);
      expect(await log.lastSeq(groupId)).toBe(2);
      expect(await log.firstSeq(groupId)).toBe(3);
      const reopened = await openLog();
      try {
        expect(await reopened.lastSeq(groupId)).toBe(2);
        expect(await reopened.firstSeq(groupId)).toBe(3);
        const [outcomes] = await reopened.append([
          { groupId, drafts: [draft('a', 'm3', { createdAtMs: Date.now() })] },
        ]);
        expect(outcomes![0]!.message.seq).toBe(3);
        expect(await reopened.firstSeq(groupId)).toBe(3);
      } finally {
        await reopened.close();
      }
    });
  });
}
