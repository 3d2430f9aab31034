import { setTimeout as sleep } from 'node:timers/promises';
import { ChorusError } from '../protocol/index.js';
import { backoffMs } from './backoff.js';
import { WriterMovedError, type GroupWriter, type GroupWriters } from './group-writers.js';
import type { ForwardedSend, SendForwarding } from './send-forwarding.js';
import type { SendPath, SendResult, Sequencer } from './sequencer.js';

/**
 * How long a send keeps looking for its group's writer while the writer moves (a dead writer's groups are taken over
 * within a lease and a wait, under 3 s) before it is refused as unavailable.
 */
const MAX_REROUTE_MS = 30_000;
/** While Cassandra is away. */
const MAX_BACKOFF_MS = 1000;
/** While a writer moves: the new one is asked for often, so that its groups' sends go on soon after it takes them. */
const MAX_REROUTE_BACKOFF_MS = 200;

const isUnavailable = (err: unknown) => err instanceof ChorusError && err.code === 'STORE_UNAVAILABLE';

/**
 * Each send goes to the sequencer of the node that writes its group, here or forwarded there (a node alone writes every
 * group, and never forwards). While the writer cannot be known (Cassandra away) or is moving (a writer died), the send
 * is held, neither acknowledged nor refused, as a send queued in the sequencer is while its append fails. A send
 * forwarded here is served only while this node writes the group, never forwarded again, so sends cannot circle.
 */
export class SendRouter implements SendPath {
  /** Sends held meanwhile; beyond maxHeld a send is refused with OVERLOADED. */
  private held = 0;

  constructor(
    private readonly writers: GroupWriters,
    private readonly sequencer: Sequencer,
    private readonly forwarding: SendForwarding,
    private readonly maxHeld: number,
  ) {
    forwarding.onRequest((send) => this.serve(send));
  }

  async send(groupId: string, senderId: string, payload: unknown): Promise<SendResult> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      const writer = await this.writerOf(groupId);
      try {
        if (writer.here) return await this.sequencer.send(groupId, senderId, payload);
        return await this.forwarding.forward(writer.nodeId, { groupId, senderId, payload });
      } catch (err) {
        const moved = err instanceof WriterMovedError;
        if (!writer.here && (moved || isUnavailable(err))) this.writers.forget(groupId);
        if (!moved) throw err;
        if (Date.now() - started > MAX_REROUTE_MS) {
          throw new ChorusError(
            'STORE_UNAVAILABLE',
            `group ${groupId} is changing writers; retry with the same clientMsgId`,
          );
        }
        if (attempt > 0) await this.hold(() => sleep(backoffMs(attempt, MAX_REROUTE_BACKOFF_MS)));
      }
    }
  }

  /** The group's writer, waiting (with backoff) while it cannot be known. */
  private async writerOf(groupId: string): Promise<GroupWriter> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.writers.writerOf(groupId);
      } catch (err) {
        if (!isUnavailable(err) || this.writers.closed) throw err;
      }
      await this.hold(() => sleep(backoffMs(attempt, MAX_BACKOFF_MS)));
    }
  }

  private async hold(wait: () => Promise<unknown>): Promise<void> {
    if (this.held >= this.maxHeld) throw new ChorusError('OVERLOADED');
    this.held += 1;
    try {
      await wait();
    } finally {
      this.held -= 1;
    }
  }

  private async serve({ groupId, senderId, payload }: ForwardedSend): Promise<SendResult> {
    const writer = await this.writerOf(groupId);
    if (!writer.here) throw new WriterMovedError([groupId]);
    return this.sequencer.send(groupId, senderId, payload);
  }
}
