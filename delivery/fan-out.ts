import type { StampedMessage } from '../protocol/index.js';

/** Hands a stamped message, serialized, to this node's subscribers of its group topic. */
export type Deliver = (groupId: string, seq: number, payload: Buffer) => void;

/**
 * Live delivery of stamped messages to every node's subscribers: the seam between the sequencer and the brokers.
 *
 * Contract:
 * - `publish` is called on the node that writes the group, once per newly stored message, per group in seq order.
 * - The publishing node's own `deliver` receives each message at once (within the same call): it never depends on a
 *   shared medium, so the writer's own subscribers are served while that medium is away.
 * - Every other node's `deliver` receives each message at most once, per group in publish order. A node cut off from
 *   the shared medium misses messages, never reorders them.
 * - Once such a node can hear again, `missed` is called: every message published from then on reaches it, and what
 *   it may have missed is in the message log (the delivery pipeline reads it from there).
 * - The payload is the message as JSON (UTF-8), byte for byte as every node delivers it, with its group id and seq.
 * - `close` stops deliveries to this node.
 */
export interface FanOut {
  onDeliver(deliver: Deliver): void;
  onMissed(missed: () => void): void;
  publish(message: StampedMessage): void;
  close(): Promise<void>;
}

/**
 * Fan-out between the nodes of one process (one node, or several in tests): the memory implementation. Every node made
 * by the same `FanOutLocal.hub()` receives what any of them publishes.
 */
export class FanOutLocal implements FanOut {
  private deliver: Deliver | undefined;

  private constructor(private readonly peers: Set<FanOutLocal>) {}

  /** A medium shared by the nodes it makes: `hub()()` is one node; call the result again for more. */
  static hub(): () => FanOutLocal {
    const peers = new Set<FanOutLocal>();
    return () => {
      const node = new FanOutLocal(peers);
      peers.add(node);
      return node;
    };
  }

  onDeliver(deliver: Deliver): void {
    this.deliver = deliver;
  }

  /** Never called: the nodes of one process are never cut off from each other. */
  onMissed(_missed: () => void): void {}

  publish(message: StampedMessage): void {
    const payload = Buffer.from(JSON.stringify(message));
    this.deliver?.(message.groupId, message.seq, payload);
    for (const peer of this.peers) if (peer !== this) peer.deliver?.(message.groupId, message.seq, payload);
  }

  async close(): Promise<void> {
    this.peers.delete(this);
    this.deliver = undefined;
  }
}
