import { ChorusError } from '../protocol/index.js';
import { WriterMovedError, type GroupWriter, type GroupWriters } from './group-writers.js';
import type { SendForwardingRedis, ForwardedSend } from './send-forwarding-redis.js';
import type { SendPath, SendResult, Sequencer } from './sequencer.js';

/** Attempts at finding a group's writer before a send is refused as unavailable (each after the writer moved). */
const MAX_ROUTES = 3;
const MAX_BACKOFF_MS = 1000;

/**
 * Many nodes: each send goes to the sequencer of the node that writes its group, here or forwarded there. A send
 * forwarded here is served only while this node writes the group, never forwarded again, so sends cannot circle.
 */
export class SendRouter implements SendPath {
  /** Sends waiting for their group's writer to be known. */
  private waiting = 0;

  constructor(
    private readonly writers: GroupWriters,
    private readonly sequencer: Sequencer,
    private readonly forwarding: SendForwardingRedis,
    private readonly maxWaiting: number,
  ) {
    forwarding.onRequest((send) => this.serve(send));
  }

  async send(groupId: string, senderId: string, payload: unknown): Promise<SendResult> {
    for (let route = 1; ; route++) {
      const writer = await this.writerOf(groupId);
      try {
        if (writer.here) return await this.sequencer.send(groupId, senderId, payload);
        return await this.forwarding.forward(writer.nodeId, { groupId, senderId, payload });
      } catch (err) {
        const moved = err instanceof WriterMovedError;
        if (!writer.here && (moved || (err instanceof ChorusError && err.code === 'STORE_UNAVAILABLE'))) this.writers.forget(groupId);
        if (!moved) throw err;
        if (route === MAX_ROUTES) throw new ChorusError('STORE_UNAVAILABLE', `group ${groupId} is changing writers; retry with the same clientMsgId`);
      }
    }
  }

  /**
   * The group's writer, waiting while it cannot be known (Cassandra away): like a send queued in the sequencer, the
   * send is held, neither acknowledged nor refused, until the store answers again.
   */
  private async writerOf(groupId: string): Promise<GroupWriter> {
    try {
      return await this.writers.writerOf(groupId);
    } catch (err) {
      if (!(err instanceof ChorusError && err.code === 'STORE_UNAVAILABLE')) throw err;
      if (this.waiting >= this.maxWaiting) throw new ChorusError('OVERLOADED');
    }
    this.waiting += 1;
    try {
      for (let attempt = 0; ; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(MAX_BACKOFF_MS, 50 * 2 ** attempt)));
        try {
          return await this.writers.writerOf(groupId);
        } catch (err) {
          if (!(err instanceof ChorusError && err.code === 'STORE_UNAVAILABLE') || this.writers.closed) throw err;
        }
      }
    } finally {
      this.waiting -= 1;
    }
  }

  private async serve({ groupId, senderId, payload }: ForwardedSend): Promise<SendResult> {
    const writer = await this.writers.writerOf(groupId);
    if (!writer.here) throw new WriterMovedError([groupId]);
    return this.sequencer.send(groupId, senderId, payload);
  }
}
