import type { StampedMessage } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';
import type { SequencerOutput } from '../sequencer/sequencer.js';
import type { FanOut } from './fan-out.js';
import { OrderedDelivery } from './ordered-delivery.js';

/** Where live delivery ends on a node: the broker's subscribers of group topics. */
export interface LocalSubscribers {
  /** Delivers a stamped message, serialized, to every subscriber of its group topic on this node (QoS 1). */
  deliverSerialized(groupId: string, seq: number, payload: Buffer): void;
}

/** Told of each newly stored message once its live delivery has started (push notifications: they only queue it). */
export interface StoredMessageHook {
  onMessage(message: StampedMessage): void;
}

export interface DeliveryPipelineDeps {
  /** Where a gap in what arrives is read from. */
  log: MessageLog;
  fanOut: FanOut;
  subscribers: LocalSubscribers;
  hook: StoredMessageHook;
  /** Reading the log to keep a group's delivery in order failed: its subscribers may see a hole (they read history). */
  onGapReadError: (err: unknown, groupId: string) => void;
}

/** A stamped message as it arrives from the fan-out, serialized. */
interface Arrival {
  seq: number;
  payload: Buffer;
}

/** The writer's own output: a dead writer's last messages are recent (delivered again), older ones are history. */
const WRITER_ORDERING = { recoverWindowMs: 30_000, gapWindowMs: 30_000, maxRead: 256, maxGap: 256, maxGroups: 100_000 };

/**
 * Arrivals: a node that starts takes what comes; a gap is filled whole, in pages of 1,000, up to its newest 100,000
 * messages (a Redis outage of a minute at 1,600 messages a second); beyond that, subscribers read history.
 */
const ARRIVAL_ORDERING = {
  recoverWindowMs: 0,
  gapWindowMs: Number.POSITIVE_INFINITY,
  maxRead: 1000,
  maxGap: 100_000,
  maxGroups: 100_000,
};

/**
 * Live delivery of stored messages, from the sequencer to this node's subscribers:
 *
 *   sequencer (the group's writer) -> in order -> fan-out (to every node) -> arrivals in order -> local subscribers
 *                                                \-> the stored-message hook (push)
 *
 * On the writer, what the sequencer stored goes out per group in seq order, without holes, each seq once; after a
 * writer change the recent messages are handed on again (at-least-once, same seq). The fan-out comes first: live
 * delivery never waits for push. What arrives on each node is delivered per group in seq order; a gap (messages this
 * node missed while Redis was away, say) is read from the log first, and once the fan-out says this node may have
 * missed messages, every group it delivers is read up to date at once.
 */
export class DeliveryPipeline {
  /** The sequencer's output (see SequencerOutput). */
  readonly fromSequencer: SequencerOutput;

  constructor(deps: DeliveryPipelineDeps) {
    const stored = new OrderedDelivery<StampedMessage>(
      deps.log,
      (_groupId, message) => {
        deps.fanOut.publish(message);
        deps.hook.onMessage(message);
      },
      (message) => message,
      { ...WRITER_ORDERING, onError: deps.onGapReadError },
    );
    this.fromSequencer = {
      stored: (groupId, messages) => stored.offer(groupId, messages),
      writerLost: (groupId) => stored.forget(groupId),
    };
    const arrivals = new OrderedDelivery<Arrival>(
      deps.log,
      (groupId, arrival) => deps.subscribers.deliverSerialized(groupId, arrival.seq, arrival.payload),
      (message) => ({ seq: message.seq, payload: Buffer.from(JSON.stringify(message)) }),
      { ...ARRIVAL_ORDERING, onError: deps.onGapReadError },
    );
    deps.fanOut.onDeliver((groupId, seq, payload) => arrivals.offer(groupId, [{ seq, payload }]));
    deps.fanOut.onMissed(() => void catchUp(arrivals));
  }
}

/** Groups whose missed messages are read from the log at once, after the fan-out was cut. */
const CATCH_UP_CONCURRENCY = 16;

/**
 * Reads what this node may have missed while its fan-out was cut, for every group it delivers, so that its
 * subscribers get it now rather than when the group's next message shows the gap (a quiet group's may be hours away).
 */
async function catchUp(arrivals: OrderedDelivery<Arrival>): Promise<void> {
  const groups = arrivals.groups();
  for (let at = 0; at < groups.length; at += CATCH_UP_CONCURRENCY)
    await Promise.all(groups.slice(at, at + CATCH_UP_CONCURRENCY).map((groupId) => arrivals.catchUp(groupId)));
}
