/**
 * The seq of a stamped message from its serialized form, without parsing it: toStampedMessage puts groupId first and
 * seq second, and a group id holds no quote. NaN when the bytes are not such a message.
 */
export function seqOfPayload(payload: Buffer): number {
  const at = payload.indexOf('"seq":');
  if (at < 0 || at > 100) return Number.NaN;
  let seq = 0;
  let i = at + 6;
  for (; i < payload.length && payload[i]! >= 0x30 && payload[i]! <= 0x39; i++) seq = seq * 10 + (payload[i]! - 0x30);
  return i === at + 6 ? Number.NaN : seq;
}

/** QoS 1 deliveries a clean-session client may have unacknowledged before its PUBACKs stop being matched. */
const MAX_AWAITED = 1024;

/**
 * Which delivery a clean-session client's PUBACK acknowledges. Aedes keeps no copy of a QoS 1 packet sent to a clean
 * session, so its ack event names none; but a client sends its PUBACKs in the order the PUBLISH packets arrived
 * [MQTT-4.6.0-2], and the broker writes each client's packets in the order it forwards them. So the forwards, queued
 * per client, are matched to PUBACKs in order. Past MAX_AWAITED unacknowledged, the queue is dropped and as many
 * PUBACKs are skipped: a mark may then lag, but never runs ahead of what arrived.
 */
export class PubackOrder<C extends object> {
  private readonly awaited = new WeakMap<C, { queue: ({ groupId: string; seq: number } | null)[]; skip: number }>();

  /** A QoS 1 delivery written to the client: a group message (with its seq) or anything else (null). */
  forwarded(client: C, delivery: { groupId: string; seq: number } | null): void {
    let state = this.awaited.get(client);
    if (!state) this.awaited.set(client, (state = { queue: [], skip: 0 }));
    if (state.queue.length >= MAX_AWAITED) {
      state.skip += state.queue.length;
      state.queue = [];
    }
    state.queue.push(delivery);
  }

  /** A PUBACK from the client: the delivery it acknowledges, when that was a group message. */
  acknowledged(client: C): { groupId: string; seq: number } | null {
    const state = this.awaited.get(client);
    if (!state) return null;
    if (state.skip > 0) {
      state.skip -= 1;
      return null;
    }
    return state.queue.shift() ?? null;
  }
}
