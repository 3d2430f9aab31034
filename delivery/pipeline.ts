import type { StampedMessage } from '../protocol/index.js';
import type { MessageLog } from '../sequencer/message-log.js';
import { OrderedDelivery } from '../sequencer/ordered-delivery.js';
import type { FanOut } from './fan-out.js';

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
  /** Reading the log to fill a gap failed: those subscribers may see a hole (they read history to fill it). */
  onGapReadError: (err: unknown, groupId: string) => void;
}

/** A stamped message as it arrives from the fan-out, serialized. */
interface Arrival {
  seq: number;
  payload: Buffer;
}

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
 * Live delivery of stored messages, from the sequencer's output to this node's subscribers:
 *
 *   sequencer (the group's writer) -> publish -> fan-out (every node) -> arrivals in seq order -> local subscribers
 *                                          \-> the stored-message hook (push)
 *
 * The fan-out comes first: live delivery never waits for push. What arrives is delivered per group in seq order; a
 * gap (messages this node missed while Redis was away, say) is read from the log first.
 */
export class DeliveryPipeline {
  private readonly arrivals: OrderedDelivery<Arrival>;

  constructor(private readonly deps: DeliveryPipelineDeps) {
    this.arrivals = new OrderedDelivery<Arrival>(
      deps.log,
      (groupId, arrival) => deps.subscribers.deliverSerialized(groupId, arrival.seq, arrival.payload),
      (message) => ({ seq: message.seq, payload: Buffer.from(JSON.stringify(message)) }),
      { ...ARRIVAL_ORDERING, onError: deps.onGapReadError },
    );
    deps.fanOut.onDeliver((groupId, seq, payload) => this.arrivals.offer(groupId, [{ seq, payload }]));
  }

  /** The sequencer's output: each newly stored message, per group in seq order. */
  readonly publish = (message: StampedMessage): void => {
    this.deps.fanOut.publish(message);
    this.deps.hook.onMessage(message);
  };
}
