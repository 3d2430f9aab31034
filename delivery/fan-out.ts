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
 * - `publisherOf(groupId)` names the node whose publish of the group was delivered here last (this node for its own):
 *   the group's writer then, as far as this node heard. Undefined for a group not heard of lately (at most
 *   PUBLISHERS_KEPT groups are remembered).
 * - `close` stops deliveries to this node.
 */
export interface FanOut {
  onDeliver(deliver: Deliver): void;
  onMissed(missed: () => void): void;
  publish(message: StampedMessage): void;
  publisherOf(groupId: string): string | undefined;
  close(): Promise<void>;
}

/** Groups whose last publisher a node remembers (one dropped may be heard again at its next message). */
export const PUBLISHERS_KEPT = 100_000;

/** Which node published each group's last message heard here, for the PUBLISHERS_KEPT groups heard most recently. */
export class Publishers {
  private readonly last = new Map<string, string>();

  heard(groupId: string, nodeId: string): void {
    if (this.last.get(groupId) === nodeId) return; // nothing new: one lookup per message
    // Taken out and put back, so that the map's first entry is the group whose publisher changed longest ago.
    this.last.delete(groupId);
    this.last.set(groupId, nodeId);
    if (this.last.size > PUBLISHERS_KEPT) this.last.delete(this.last.keys().next().value!);
  }

  of(groupId: string): string | undefined {
    return this.last.get(groupId);
  }
}

/**
 * Fan-out between the nodes of one process (one node, or several in tests): the memory implementation. Every node made
 * by the same `FanOutLocal.hub()` receives what any of them publishes.
 */
export class FanOutLocal implements FanOut {
  private deliver: Deliver | undefined;
  private readonly publishers = new Publishers();

  private constructor(
    private readonly peers: Set<FanOutLocal>,
    private readonly nodeId: string,
  ) {}

  /** A medium shared by the nodes it makes: `hub()(nodeId)` is one node; call the result again for more. */
  static hub(): (nodeId: string) => FanOutLocal {
    const peers = new Set<FanOutLocal>();
    return (nodeId) => {
      const node = new FanOutLocal(peers, nodeId);
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
    this.heard(message, payload, this.nodeId);
    for (const peer of this.peers) if (peer !== this) peer.heard(message, payload, this.nodeId);
  }

  private heard(message: StampedMessage, payload: Buffer, publisher: string): void {
    this.publishers.heard(message.groupId, publisher);
    this.deliver?.(message.groupId, message.seq, payload);
  }

  publisherOf(groupId: string): string | undefined {
    return this.publishers.of(groupId);
  }

  async close(): Promise<void> {
    this.peers.delete(this);
    this.deliver = undefined;
  }
}
