import type { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import { EXPIRING_RETENTION_MS, messageLogContract } from './message-log.contract.js';
import { isExpiringLog, type MessageLog } from '../sequencer/message-log.js';

/** The pruner's work for one group, in batches of two (so that a batch boundary falls inside the expired range). */
const expireAsOf = (log: MessageLog, groupId: string, asOfMs: number) =>
  (async () => {
    if (!isExpiringLog(log)) throw new Error('the SQLite log expires its messages itself');
    while ((await log.expire(groupId, asOfMs - EXPIRING_RETENTION_MS, 2)) === 2);
  })();

const file = join(mkdtempSync(join(tmpdir(), 'chorus-log-')), 'messages.db');
messageLogContract('sqlite', async () => new MessageLogSqlite(file, { synchronous: 'full' }), expireAsOf);

const threadFile = join(mkdtempSync(join(tmpdir(), 'chorus-log-thread-')), 'messages.db');
messageLogContract(
  'sqlite, writes on their own thread',
  async () => new MessageLogSqliteThread(threadFile, { synchronous: 'full' }),
  expireAsOf,
);

describe('the SQLite log with writes on their own thread', () => {
  it('fails the writes in flight with STORE_UNAVAILABLE when its thread dies, then starts another and reuses no seq', async () => {
    const log = new MessageLogSqliteThread(join(mkdtempSync(join(tmpdir(), 'chorus-log-thread-')), 'messages.db'), {
      synchronous: 'full',
    });
    try {
      const draft = (clientMsgId: string) => ({
        senderId: 'alice',
        clientMsgId,
        type: 'text',
        body: clientMsgId,
        createdAtMs: Date.now(),
      });
      const first = (await log.append([{ groupId: 'g', drafts: [draft('one')] }]))[0]![0];
      expect(first!.message.seq).toBe(1);
      // Fsynced writes of another group queued ahead, so that the thread dies before it reaches 'two' (alone, 'two' was
      // sometimes stored and answered before the termination landed).
      const ahead = Array.from({ length: 20 }, (_, i) => log.append([{ groupId: 'h', drafts: [draft(`ahead-${i}`)] }]));
      const inFlight = log.append([{ groupId: 'g', drafts: [draft('two')] }]);
      await (log as unknown as { worker: Worker }).worker.terminate();
      await expect(inFlight).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
      await Promise.allSettled(ahead);
      // The retry of the same send, on a new thread: stored once, with the next seq whether or not the first try landed.
      const retried = (await log.append([{ groupId: 'g', drafts: [draft('two')] }]))[0]![0];
      const next = (await log.append([{ groupId: 'g', drafts: [draft('three')] }]))[0]![0];
      expect(retried!.message.seq).toBe(2);
      expect(next!.message.seq).toBe(3);
      expect((await log.readAfter('g', 0, 10)).map((m) => m.clientMsgId)).toEqual(['one', 'two', 'three']);
    } finally {
      await log.close();
    }
  });

  it('refuses writes once closed, after finishing those already called', async () => {
    const log = new MessageLogSqliteThread(join(mkdtempSync(join(tmpdir(), 'chorus-log-thread-')), 'messages.db'), {
      synchronous: 'full',
    });
    const draft = { senderId: 'alice', clientMsgId: 'last', type: 'text', body: 'x', createdAtMs: Date.now() };
    const pending = log.append([{ groupId: 'g', drafts: [draft] }]);
    await log.close();
    expect((await pending)[0]![0]!.message.seq).toBe(1);
    await expect(log.append([{ groupId: 'g', drafts: [{ ...draft, clientMsgId: 'after' }] }])).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
    });
  });
});
