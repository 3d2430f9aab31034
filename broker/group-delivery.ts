import type { Aedes, AedesPublishPacket, Client, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import type { LocalSubscribers } from '../delivery/pipeline.js';
import { groupTopic, parseTopic } from '../protocol/index.js';
import { type DeliveryTarget, maxPacketSizeOf, subscriptionOf, unrouteSubscription, writableTarget } from './aedes.js';
import { SHARED_CHUNK_BYTES } from './connection-output.js';
import type { LiveUsers } from './live-users.js';
import { PubackReads } from './puback-reads.js';

/** A group message's QoS 1 delivery to a member's client was acknowledged (PUBACK). */
export type OnDelivered = (groupId: string, userId: string, seq: number) => void;

/**
 * The last step of live delivery: stamped group messages written to this node's subscribers, and their PUBACKs
 * turned into delivered marks.
 */
export class GroupDelivery implements LocalSubscribers {
  private readonly pubackOrder = new PubackOrder<Client>();
  private readonly groupPublishes = new GroupPublishes();
  private readonly pubackReads = new PubackReads((client) => this.acknowledged(undefined, client));

  constructor(
    private readonly aedes: Aedes,
    private readonly live: LiveUsers,
    private readonly logger: Logger,
    private readonly onDelivered: OnDelivered,
  ) {
    aedes.on('ack', (packet, client) => this.acknowledged(packet as PublishPacket | undefined, client));
    // A clean session's PUBACKs, one per delivery, are read here before Aedes would parse and handle each.
    aedes.on('clientReady', (client) => this.pubackReads.take(client));
  }

  deliverSerialized(groupId: string, seq: number, payload: Buffer): void {
    const topic = groupTopic(groupId);
    const publish = this.groupPublishes.register(topic, groupId, seq, payload);
    this.live.forEachMemberClient(groupId, (client) => {
      if (this.writesDirectly(client, topic) && fits(client, topic, payload)) this.write(client, publish, payload);
    });
    // Aedes still routes the message: to the members it serves itself (persistent sessions, QoS 0 subscriptions), and
    // into the queues of offline persistent sessions [MQTT-3.1.2-5].
    //
    // Aedes names a packet by broker id and counter, in a persistent session's queue and in its filter of duplicates
    // (per client, a packet whose counter is not above the last it delivered under the same broker id is dropped). A
    // group message is named by its topic and seq, the same on every node: in a cluster it is queued once for a
    // persistent session whichever nodes route it (queue-once-redis.ts), and the node that delivers it live clears
    // that one entry on the PUBACK. Counted per group, a message never waits behind an event, which travels another
    // path (splitRouter) and may arrive later, and a message handed on again after a writer change is dropped.
    const packet: PublishPacket & { brokerId: string; brokerCounter: number } = {
      cmd: 'publish',
      topic,
      payload,
      qos: 1,
      retain: false,
      dup: false,
      properties: STAMPED_PROPERTIES, // MQTT 5 subscribers only: 3.1.1 has no properties
      brokerId: topic,
      brokerCounter: seq,
    };
    this.aedes.publish(packet, (err) => {
      if (err) this.logger.error({ err, topic }, 'publish failed');
    });
  }

  /**
   * The client subscribed to these topics. A clean session's QoS 1 subscription to a group topic is taken out of
   * Aedes's router: deliverSerialized writes that client's group messages itself, so Aedes would only copy the packet
   * for it, defer it a turn and find in forward that there is nothing to do, for every member and every message.
   */
  subscribed(client: Client, topics: string[]): void {
    for (const topic of topics) {
      if (parseTopic(topic)?.kind === 'group' && this.writesDirectly(client, topic)) {
        unrouteSubscription(this.aedes, client, topic);
      }
    }
  }

  /**
   * A packet Aedes is about to forward to a client the ACL allows. A group message to a clean-session subscriber at
   * QoS 1 was written by deliverSerialized already: nothing is left to do (the client's subscription may still be in
   * Aedes's router for a moment after its SUBSCRIBE; see subscribed). A persistent session's delivery is left to Aedes,
   * which keeps it until its PUBACK [MQTT-4.3.2-1], and so is a QoS 0 subscription's and anything that is not a fresh
   * routing of a group message (a packet with an identifier comes from a stored queue). Returns the packet for Aedes
   * to write, or null when nothing is left to do.
   */
  forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    if (!fits(client, packet.topic, packet.payload)) return null;
    const fresh = packet.qos === 1 && packet.messageId === undefined;
    if (fresh && this.groupPublishes.of(packet.payload) && this.writesDirectly(client, packet.topic)) return null;
    // A delivery to a clean session whose PUBACK will follow (QoS 1 after the subscription's downgrade), in order.
    const granted = subscriptionOf(client, packet.topic)?.qos ?? 0;
    if (client.clean && packet.qos !== 0 && granted >= 1) this.pubackOrder.forwarded(client, groupDelivery(packet));
    return packet;
  }

  /**
   * Whether this node writes the client's group messages on this topic itself: a clean session subscribed at QoS 1.
   * Aedes keeps nothing of a clean session's QoS 1 deliveries, so the PUBLISH serialized once for all subscribers is
   * written to each in one write, instead of Aedes copying, deferring and serializing the packet for each. A
   * subscription with a Subscription Identifier is left to Aedes, which puts the identifier in each PUBLISH
   * [MQTT-3.3.4-3].
   */
  private writesDirectly(client: Client, topic: string): boolean {
    const subscription = subscriptionOf(client, topic);
    return client.clean && (subscription?.qos ?? 0) >= 1 && subscription?.si === undefined;
  }

  private write(client: Client, publish: GroupPublish, payload: Buffer): void {
    const target = writableTarget(client);
    if (!target) return; // closed or closing: nothing is written, as Aedes's own write refuses it
    const v5 = client.version === 5;
    writeGroupPublish(target, v5 ? publish.head5() : publish.head, payload, v5);
    this.pubackOrder.forwarded(client, publish);
  }

  private acknowledged(packet: PublishPacket | undefined, client: Client | null): void {
    const userId = client ? this.live.userOf(client) : undefined;
    if (!client || userId === undefined) return;
    // A persistent session's packet comes back from the persistence, kept until its PUBACK [MQTT-4.3.2-1]; a clean
    // session's does not (Aedes keeps no copy): its PUBACKs are matched to its forwards in order.
    const delivery = client.clean ? this.pubackOrder.acknowledged(client) : groupDelivery(packet);
    if (delivery) this.onDelivered(delivery.groupId, userId, delivery.seq);
  }
}

/**
 * Whether a PUBLISH of this topic and payload may be sent to the client: nothing larger than an MQTT 5 client's Maximum
 * Packet Size is [MQTT-3.1.2-25]. What does not fit is dropped as if sent (the client's stream reads the message from
 * history when it sees the gap).
 */
function fits(client: Client, topic: string, payload: Buffer | string): boolean {
  const maxBytes = client.version === 5 ? maxPacketSizeOf(client) : undefined;
  return maxBytes === undefined || largestPublishBytes(topic, payload.length) <= maxBytes;
}

/** The group and seq of a stamped group message being delivered; null for anything else. */
function groupDelivery(packet: PublishPacket | undefined): { groupId: string; seq: number } | null {
  if (!packet) return null;
  const target = parseTopic(packet.topic);
  if (target?.kind !== 'group') return null;
  const seq = seqOfPayload(packet.payload as Buffer);
  return Number.isSafeInteger(seq) && seq > 0 ? { groupId: target.groupId, seq } : null;
}

/** What MQTT 5 subscribers are told of a stamped message: UTF-8 JSON [MQTT-3.3.2-18]. */
const STAMPED_PROPERTIES = { payloadFormatIndicator: true, contentType: 'application/json' };
/**
 * STAMPED_PROPERTIES as bytes, with their length in front (MQTT 5.0 §3.3.2.3): Payload Format Indicator (0x01) 1,
 * Content Type (0x03) "application/json".
 */
const CONTENT_TYPE = Buffer.from(STAMPED_PROPERTIES.contentType);
const STAMPED_PROPERTY_BYTES = Buffer.concat([
  Buffer.from([2 + 3 + CONTENT_TYPE.length, 0x01, 1, 0x03, 0, CONTENT_TYPE.length]),
  CONTENT_TYPE,
]);

/**
 * The most bytes a PUBLISH of this topic and payload takes, whoever frames it: fixed header and Remaining Length (at
 * most 5 bytes), topic, packet identifier, and room for properties (the stamped message's, or a subscription
 * identifier's).
 */
const largestPublishBytes = (topic: string, payloadBytes: number): number =>
  5 + 2 + Buffer.byteLength(topic) + 2 + STAMPED_PROPERTY_BYTES.length + 8 + payloadBytes;

/** A stamped group message as this node delivers it: which one it is, and its PUBLISH up to the packet identifier. */
interface GroupPublish {
  groupId: string;
  seq: number;
  /** Fixed header (QoS 1, DUP 0, RETAIN 0), Remaining Length and topic name: the same for every subscriber. */
  head: Buffer;
  /** The same for MQTT 5 subscribers (whose Remaining Length counts the properties), made at the first one. */
  head5(): Buffer;
}

/**
 * The PUBLISH of each stamped group message delivered on this node, serialized once per message instead of once per
 * subscriber. Keyed by the payload Buffer, which Aedes passes along by reference in every per-subscriber copy of the
 * packet; an entry lives as long as the message's payload does. MQTT 3.1 and 3.1.1 framing, and MQTT 5 framing (the
 * properties after the packet identifier) for MQTT 5 subscribers.
 */
class GroupPublishes {
  private readonly known = new WeakMap<Buffer, GroupPublish>();

  register(topic: string, groupId: string, seq: number, payload: Buffer): GroupPublish {
    let head5: Buffer | undefined;
    const publish: GroupPublish = {
      groupId,
      seq,
      head: publishHead(topic, payload.length),
      head5: () => (head5 ??= publishHead(topic, payload.length, STAMPED_PROPERTY_BYTES.length)),
    };
    this.known.set(payload, publish);
    return publish;
  }

  of(payload: unknown): GroupPublish | undefined {
    return Buffer.isBuffer(payload) ? this.known.get(payload) : undefined;
  }
}

/**
 * Fixed header and variable header up to the packet identifier of a QoS 1 PUBLISH (MQTT 3.1.1 §3.3.1, §3.3.2; MQTT 5
 * §3.3.2, whose properties, `propertyBytes` of them with their length, follow the packet identifier).
 */
export function publishHead(topic: string, payloadBytes: number, propertyBytes = 0): Buffer {
  const topicBytes = Buffer.byteLength(topic);
  let remaining = 2 + topicBytes + 2 + propertyBytes + payloadBytes;
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
 * own (1 to 65535, then 1 again: never 0 [MQTT-2.3.1-1]), so that the two never hand out the same one at once. `head`
 * is the message's head for the client's version; an MQTT 5 client gets the stamped message's properties too.
 *
 * One write: the packet in one buffer, as the connection's output would have copied its pieces together anyway. A
 * payload of SHARED_CHUNK_BYTES or more is a second write, by reference, so that a big message to many subscribers is
 * held once, not once per connection that cannot take it at once.
 */
export function writeGroupPublish(target: DeliveryTarget, head: Buffer, payload: Buffer, v5: boolean): void {
  const messageId = target._nextId;
  target._nextId = messageId >= 65535 ? 1 : messageId + 1;
  const shared = payload.length >= SHARED_CHUNK_BYTES;
  const properties = v5 ? STAMPED_PROPERTY_BYTES.length : 0;
  const packet = Buffer.allocUnsafe(head.length + 2 + properties + (shared ? 0 : payload.length));
  head.copy(packet, 0);
  let at = packet.writeUInt16BE(messageId, head.length);
  if (v5) at += STAMPED_PROPERTY_BYTES.copy(packet, at);
  if (shared) {
    target.conn.write(packet);
    target.conn.write(payload);
  } else {
    payload.copy(packet, at);
    target.conn.write(packet);
  }
}

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
