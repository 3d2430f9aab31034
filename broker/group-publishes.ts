import type { DeliveryTarget } from './aedes.js';

/** A stamped group message as this node delivers it: which one it is, and its PUBLISH up to the packet identifier. */
export interface GroupPublish {
  groupId: string;
  seq: number;
  /** Fixed header (QoS 1, DUP 0, RETAIN 0), Remaining Length and topic name: the same for every subscriber. */
  head: Buffer;
}

/**
 * The PUBLISH of each stamped group message delivered on this node, serialized once per message instead of once per
 * subscriber. Keyed by the payload Buffer, which Aedes passes along by reference in every per-subscriber copy of the
 * packet; an entry lives as long as the message's payload does. MQTT 3.1 and 3.1.1 framing, the versions Aedes 1.2
 * accepts: an MQTT 5 PUBLISH would carry properties after the packet identifier.
 */
export class GroupPublishes {
  private readonly known = new WeakMap<Buffer, GroupPublish>();

  register(topic: string, groupId: string, seq: number, payload: Buffer): void {
    this.known.set(payload, { groupId, seq, head: publishHead(topic, payload.length) });
  }

  of(payload: unknown): GroupPublish | undefined {
    return Buffer.isBuffer(payload) ? this.known.get(payload) : undefined;
  }
}

/** Fixed header and variable header up to the packet identifier of a QoS 1 PUBLISH (MQTT 3.1.1 §3.3.1, §3.3.2). */
export function publishHead(topic: string, payloadBytes: number): Buffer {
  const topicBytes = Buffer.byteLength(topic);
  let remaining = 2 + topicBytes + 2 + payloadBytes;
  const length: number[] = [];
  // Remaining Length: 7 bits per byte, least significant first, the high bit saying another byte follows (§2.2.3).
  do {
    let byte = remaining % 128;
    remaining = Math.floor(remaining / 128);
    if (remaining > 0) byte |= 0x80;
    length.push(byte);
  } while (remaining > 0);
  const head = Buffer.allocUnsafe(1 + length.length + 2 + topicBytes);
  head[0] = 0x32; // PUBLISH, DUP 0 [MQTT-3.3.1-2], QoS 1, RETAIN 0 [MQTT-3.3.1-9]
  let at = 1;
  for (const byte of length) head[at++] = byte;
  head.writeUInt16BE(topicBytes, at);
  head.write(topic, at + 2, 'utf8');
  return head;
}

/**
 * Writes a group message to one client at QoS 1 under the client's next packet identifier, drawn as Aedes draws its
 * own (1 to 65535, then 1 again: never 0 [MQTT-2.3.1-1]), so that the two never hand out the same one at once.
 */
export function writeGroupPublish(target: DeliveryTarget, publish: GroupPublish, payload: Buffer): void {
  const messageId = target._nextId;
  target._nextId = messageId >= 65535 ? 1 : messageId + 1;
  const id = Buffer.allocUnsafe(2);
  id.writeUInt16BE(messageId, 0);
  target.conn.write(publish.head);
  target.conn.write(id);
  target.conn.write(payload);
}
