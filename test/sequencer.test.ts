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
