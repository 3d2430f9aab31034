import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { StampedMessage } from '../protocol/index.js';
import type { GroupAppend } from '../sequencer/message-log.js';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { Sequencer } from '../sequencer/sequencer.js';
import { WrappedLog, tempDir } from './harness.js';

/** The real SQLite log, each append answering 30 ms late (a log whose commit is a few round trips), counting overlap. */
class SlowLog extends WrappedLog {
  inFlight = 0;
  mostInFlight = 0;
  override async append(batch: GroupAppend[]) {
    this.inFlight += 1;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    try {
      const outcomes = await this.inner.append(batch);
      await sleep(30);
      return outcomes;
    } finally {
      this.inFlight -= 1;
    }
  }
}

describe('sequencer commits in flight together', () => {
  it('takes the next commit while one is being written, and still acknowledges and fans out in seq order', async () => {
    const log = new SlowLog(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' }));
    const fannedOut: StampedMessage[] = [];
    const sequencer = new Sequencer(
      log,
      { stored: (_groupId, messages) => void fannedOut.push(...messages), writerLost: () => {} },
      { maxBodyBytes: 1000, maxPendingSends: 1000 },
    );
    const acked: number[] = [];
    const sends: Promise<void>[] = [];
    for (let burst = 0; burst < 6; burst++) {
      for (let i = 0; i < 5; i++) {
        const n = burst * 5 + i;
        sends.push(
          sequencer
            .send('g', 'u', { clientMsgId: `m${n}`, body: `message ${n}` })
            .then((r) => void acked.push(r.message.seq)),
        );
      }
      await sleep(10); // a new burst while the previous commit is still being written
    }
    await Promise.all(sends);
    expect(log.mostInFlight).toBe(2);
    const inOrder = Array.from({ length: 30 }, (_, i) => i + 1);
    expect(acked).toEqual(inOrder);
    expect(fannedOut.map((m) => [m.seq, m.clientMsgId])).toEqual(inOrder.map((seq) => [seq, `m${seq - 1}`]));
    await log.close();
  });
});

/** The real SQLite log, refusing every append that carries a draft whose body is `poison` (as a bug would throw). */
class PoisonLog extends WrappedLog {
  appends = 0;
  override async append(batch: GroupAppend[]) {
    this.appends += 1;
    if (batch.some((part) => part.drafts.some((draft) => draft.body === 'poison'))) {
      throw new TypeError("Cannot read properties of undefined (reading 'length')");
    }
    return this.inner.append(batch);
  }
}

describe('a send the store refuses for a lasting reason', () => {
  it('is refused with INTERNAL and never retried, and the sends committed with it are stored, each group in order', async () => {
    const log = new PoisonLog(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' }));
    const refusedDrafts: string[] = [];
    const sequencer = new Sequencer(
      log,
      { stored: () => {}, writerLost: () => {} },
      {
        maxBodyBytes: 1000,
        maxPendingSends: 1000,
        onRefusedDraft: (_err, groupId, draft) => refusedDrafts.push(`${groupId}/${draft.clientMsgId}`),
      },
    );
    // One turn: all of them share a commit, the poison among them.
    const sends = ['a', 'b', 'c'].flatMap((groupId) =>
      Array.from({ length: 5 }, (_, i) => {
        const body = groupId === 'b' && i === 2 ? 'poison' : `${groupId}${i}`;
        return sequencer.send(groupId, 'u', { clientMsgId: `${groupId}${i}`, body }).then(
          (result) => ({ groupId, i, seq: result.message.seq }),
          (err: { code?: string }) => ({ groupId, i, code: err.code }),
        );
      }),
    );
    const outcomes = await Promise.all(sends);
    expect(outcomes.filter((o) => 'code' in o)).toEqual([{ groupId: 'b', i: 2, code: 'INTERNAL' }]);
    expect(refusedDrafts).toEqual(['b/b2']);
    for (const groupId of ['a', 'b', 'c']) {
      const stored = await log.readAfter(groupId, 0, 100);
      expect(stored.map((m) => m.seq)).toEqual(stored.map((_, i) => i + 1)); // no holes
      expect(stored.map((m) => m.clientMsgId)).toEqual(
        Array.from({ length: 5 }, (_, i) => `${groupId}${i}`).filter((id) => id !== 'b2'),
      );
    }
    // The whole commit once, then each of its 15 drafts alone: the poison was appended twice, and is not tried again.
    expect(log.appends).toBeLessThanOrEqual(1 + 15);
    const later = await sequencer.send('b', 'u', { clientMsgId: 'later', body: 'fine' });
    expect(later.message.seq).toBe(5);
    await log.close();
  });

  it('still holds and retries a send whose append fails for a passing reason (the database busy)', async () => {
    let failing = 3;
    const busy = new (class extends WrappedLog {
      override async append(batch: GroupAppend[]) {
        if (failing-- > 0) throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
        return this.inner.append(batch);
      }
    })(new MessageLogSqlite(join(tempDir(), 'messages.db'), { synchronous: 'normal' }));
    const sequencer = new Sequencer(
      busy,
      { stored: () => {}, writerLost: () => {} },
      { maxBodyBytes: 1000, maxPendingSends: 1000 },
    );
    const result = await sequencer.send('g', 'u', { clientMsgId: 'held', body: 'x' });
    expect(result.message.seq).toBe(1);
    expect(failing).toBe(-1);
    await busy.close();
  });
});
