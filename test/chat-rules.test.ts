import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PubackOrder, seqOfPayload } from '../broker/group-delivery.js';
import { applyEvent } from '../clients/message-state.js';
import { messageLine } from '../protocol/index.js';
import type { StampedMessage } from '../protocol/index.js';
import { previewOf } from '../push/notifier.js';
import { toStampedMessage } from '../sequencer/message-log.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { SendRules } from '../sequencer/send-rules.js';
import { tempDir } from './harness.js';

describe('send rules against the group state', () => {
  it('refuses edits and deletes past the retention (TARGET_EXPIRED), and admins delete what members may not', async () => {
    const log = new MessageLogSqlite(join(tempDir(), 'm.db'), { synchronous: 'normal' });
    const day = 86_400_000;
    await log.append([
      {
        groupId: 'g',
        drafts: [
          { senderId: 'ann', clientMsgId: 'old', type: 'text', body: 'old', createdAtMs: Date.now() - 31 * day },
          { senderId: 'ann', clientMsgId: 'new', type: 'text', body: 'new', createdAtMs: Date.now() },
        ],
      },
    ]);
    const rules = new SendRules(log, {
      roleOf: async (_g, user) => (user === 'boss' ? 'admin' : 'member'),
      retentionMs: async () => 30 * day,
      mentionEveryone: 'admins',
    });
    const code = (sender: string, send: Record<string, unknown>) =>
      rules.check('g', sender, { clientMsgId: 'x', ...send }).then(
        () => 'ok',
        (err: { code: string }) => err.code,
      );
    expect(await code('ann', { type: 'edit', targetSeq: 1, body: 'late' })).toBe('TARGET_EXPIRED');
    expect(await code('ann', { type: 'delete', targetSeq: 1 })).toBe('TARGET_EXPIRED');
    expect(await code('bob', { type: 'reaction', targetSeq: 1, emoji: '👍' })).toBe('ok'); // reactions have no age limit
    expect(await code('ann', { type: 'edit', targetSeq: 2, body: 'fine' })).toBe('ok');
    expect(await code('bob', { type: 'delete', targetSeq: 2 })).toBe('NOT_SENDER');
    expect(await code('boss', { type: 'delete', targetSeq: 2 })).toBe('ok');
    expect(await code('bob', { body: 'hi', mentionEveryone: true })).toBe('NOT_ADMIN');
    expect(await code('boss', { body: 'hi', mentionEveryone: true })).toBe('ok');
    expect(await code('bob', { body: 'hi', replyToSeq: 3 })).toBe('REPLY_TO_UNKNOWN');
    await log.close();
  });
});

describe('delivered watermarks: matching PUBACKs to deliveries', () => {
  it('reads the seq from the start of a stamped message, and nothing from other bytes', () => {
    const message = toStampedMessage('g_1', 4321, {
      senderId: 'a',
      clientMsgId: 'c',
      type: 'text',
      body: '"seq":9',
      createdAtMs: 0,
    });
    expect(seqOfPayload(Buffer.from(JSON.stringify(message)))).toBe(4321);
    expect(seqOfPayload(Buffer.from('{"type":"ack"}'))).toBeNaN();
  });

  it('matches PUBACKs to forwards in order [MQTT-4.6.0-2], and after an overflow lags rather than runs ahead', () => {
    const order = new PubackOrder<object>();
    const client = {};
    order.forwarded(client, { groupId: 'g', seq: 1 });
    order.forwarded(client, null); // an event
    order.forwarded(client, { groupId: 'g', seq: 2 });
    expect([
      order.acknowledged(client),
      order.acknowledged(client),
      order.acknowledged(client),
      order.acknowledged(client),
    ]).toEqual([{ groupId: 'g', seq: 1 }, null, { groupId: 'g', seq: 2 }, null]);
    for (let seq = 1; seq <= 1025; seq++) order.forwarded(client, { groupId: 'g', seq });
    // 1,024 were dropped with the overflow: their PUBACKs are skipped, the 1,025th is matched to its own.
    for (let i = 0; i < 1024; i++) expect(order.acknowledged(client)).toBeNull();
    expect(order.acknowledged(client)).toEqual({ groupId: 'g', seq: 1025 });
  });
});

describe('what clients show of messages and events', () => {
  const base: StampedMessage = {
    groupId: 'g',
    seq: 1,
    senderId: 'ann',
    clientMsgId: 'c1',
    type: 'text',
    body: 'hi',
    createdAt: '2026-01-01T00:00:00.000Z',
  };
  const event = (seq: number, fields: Partial<StampedMessage>): StampedMessage => ({
    ...base,
    seq,
    clientMsgId: `e${seq}`,
    targetSeq: 1,
    ...fields,
  });

  it('applies edits, reactions (a repeat counts once) and deletes to a delivered message', () => {
    const reactors = new Set<string>();
    const edited = applyEvent(
      base,
      event(2, { type: 'edit', body: 'hello', createdAt: '2026-01-01T00:01:00.000Z' }),
      'bob',
      reactors,
    )!;
    expect(edited).toMatchObject({ body: 'hello', editedAt: '2026-01-01T00:01:00.000Z' });
    expect(applyEvent(base, event(3, { type: 'edit', senderId: 'mallory', body: 'x' }), 'bob', reactors)).toBeNull();
    const liked = applyEvent(edited, event(4, { type: 'reaction', senderId: 'bob', emoji: '👍' }), 'bob', reactors)!;
    expect(applyEvent(liked, event(5, { type: 'reaction', senderId: 'bob', emoji: '👍' }), 'bob', reactors)).toBeNull();
    const twice = applyEvent(liked, event(6, { type: 'reaction', senderId: 'cy', emoji: '👍' }), 'bob', reactors)!;
    expect(twice.reactions).toEqual([{ emoji: '👍', count: 2, mine: true }]);
    const unliked = applyEvent(
      twice,
      event(7, { type: 'reaction', senderId: 'bob', emoji: '👍', remove: true }),
      'bob',
      reactors,
    )!;
    expect(unliked.reactions).toEqual([{ emoji: '👍', count: 1, mine: false }]);
    // Counts from history name nobody: a removal by someone not seen live is taken from them; the viewer's own only if mine.
    const fromHistory = { ...base, reactions: [{ emoji: '🎉', count: 2, mine: false }] };
    expect(
      applyEvent(
        fromHistory,
        event(10, { type: 'reaction', senderId: 'cy', emoji: '🎉', remove: true }),
        'bob',
        new Set(),
      )!.reactions,
    ).toEqual([{ emoji: '🎉', count: 1, mine: false }]);
    expect(
      applyEvent(
        fromHistory,
        event(11, { type: 'reaction', senderId: 'bob', emoji: '🎉', remove: true }),
        'bob',
        new Set(),
      ),
    ).toBeNull();
    const deleted = applyEvent(
      unliked,
      event(8, { type: 'delete', createdAt: '2026-01-01T00:02:00.000Z' }),
      'bob',
      reactors,
    )!;
    expect(deleted).toEqual({
      groupId: 'g',
      seq: 1,
      senderId: 'ann',
      clientMsgId: 'c1',
      type: 'text',
      createdAt: base.createdAt,
      deletedAt: '2026-01-01T00:02:00.000Z',
    });
    expect(applyEvent(deleted, event(9, { type: 'edit', body: 'back' }), 'bob', reactors)).toBeNull();
  });

  it('describes attachments in push previews and terminal lines', () => {
    const photo = {
      url: 'https://cdn.example/p.jpg',
      mimeType: 'image/jpeg',
      sizeBytes: 2048,
      name: 'p.jpg',
      width: 4,
      height: 3,
    };
    const { body: _body, ...noBody } = base;
    expect(
      previewOf({
        ...noBody,
        attachments: [photo, { url: 'https://cdn.example/x.pdf', mimeType: 'application/pdf', sizeBytes: 1 }],
      }),
    ).toBe('📎 p.jpg, 1 more');
    expect(
      previewOf({ ...noBody, attachments: [{ url: 'https://cdn.example/v', mimeType: 'video/mp4', sizeBytes: 1 }] }),
    ).toBe('📎 a video');
    expect(messageLine({ ...base, mentionEveryone: true, attachments: [photo], editedAt: base.createdAt })).toBe(
      '[1] ann: @everyone hi 📎 p.jpg (image/jpeg, 2.0 KB, 4×3) (edited)',
    );
    expect(messageLine(event(2, { type: 'reaction', senderId: 'bob', emoji: '🎉' }))).toBe('[2] bob reacted 🎉 to #1');
    expect(messageLine({ ...noBody, deletedAt: base.createdAt })).toBe('[1] ann: (deleted)');
  });
});
