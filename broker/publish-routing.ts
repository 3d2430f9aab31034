import type { Client, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import { TokenBucket } from '../auth/token-bucket.js';
import type { ReadReceipts } from '../groups/read-receipts.js';
import { ChorusError, eventsTopic, isChorusError, parseTopic, type UserEvent } from '../protocol/index.js';
import { parseSendBytes } from '../sequencer/send-validation.js';
import { isStoreOutage } from '../sequencer/store-errors.js';
import type { SendPath } from '../sequencer/sequencer.js';
import { subscriptionOf, wantsProblemInformation } from './aedes.js';
import { pubackReasonCode, ReasonCode } from './reason-codes.js';
import type { LiveEvents } from './live-events.js';
import type { LiveUsers } from './live-users.js';

/**
 * Client publishes are acknowledged but never forwarded as they are: the sequencer fans out the stamped message
 * instead. Aedes has no way to acknowledge a QoS 1 publish without routing it, so the raw packet is re-addressed to
 * this topic, which no client can subscribe to (the ACL allows only group and own-events topics).
 */
export const VOID_TOPIC = '$chorus/void';
const EMPTY = Buffer.alloc(0);
/** At most one typing indicator per user and group in this long; users whose last one is older are forgotten first. */
const TYPING_INTERVAL_MS = 2000;
const MAX_TYPING_ENTRIES = 100_000;
/** Acks and rejections kept for a connection that has not subscribed to its events topic yet (the newest win). */
const MAX_HELD_EVENTS = 256;
/**
 * How long after the first of them they are kept. The re-sends they answer go out as a connection opens, and its
 * subscriptions follow within moments; a connection that has not subscribed by then is taken not to listen (a device
 * that only publishes), and what it would otherwise hold all its life is dropped: up to MAX_HELD_EVENTS of about
 * 0.15 KB each (heap snapshot), each of them kept long enough to be promoted and collected by a full collection.
 */
export const HELD_EVENTS_MS = 10_000;
/** What a connection that did not listen in time holds from then on: nothing. */
const NOT_LISTENING = { until: 0, events: [] as UserEvent[] };

/**
 * Aedes's authorizePublish callback. MQTT 3.1.1: an error closes the connection without a PUBACK. MQTT 5 (the
 * patched Aedes, patches/): an error's `reasonCode` and `userProperties` go in the PUBACK instead, one with
 * `disconnectReasonCode` closes with that DISCONNECT and no PUBACK, and a success may hand the PUBACK user properties.
 */
type Done = (err?: PublishRefusal | null, ack?: { userProperties: Record<string, string> }) => void;
type PublishRefusal = Error & {
  reasonCode?: number;
  userProperties?: Record<string, string>;
  disconnectReasonCode?: number;
};

/**
 * Sends that failed for a reason that passes (the store is away, the sequencer is full, the group changes writers) are
 * never acknowledged: the connection is closed instead (MQTT 5: DISCONNECT 0x89, server busy), and the client sends
 * them again on its next connection ([MQTT-4.4.0-1] requires it of persistent sessions, and MQTT.js does it for clean
 * ones too, though without the DUP flag [MQTT-3.3.1-1] asks for), where the clientMsgId makes the retry safe.
 */
const isTransient = (err: unknown): boolean =>
  isStoreOutage(err) ||
  (isChorusError(err) && (err.code === 'STORE_UNAVAILABLE' || err.code === 'OVERLOADED' || err.code === 'UNAVAILABLE'));

export interface PublishRoutingDeps {
  live: LiveUsers;
  events: LiveEvents;
  /** Where group publishes go to be sequenced. */
  sends: SendPath;
  /** Where read pointers published on `groups/{g}/read` go. */
  readReceipts: ReadReceipts;
  mqttPublishRate: number;
  maxBodyBytes: number;
  /** A publish was held back by the per-connection publish rate. */
  onThrottled: () => void;
  logger: Logger;
}

/**
 * What a client's PUBLISH does, by topic: a group message is sequenced (its PUBACK waits for the commit: a PUBACK
 * means durable), a read pointer is stored, a typing indicator is relayed; anything else is refused. The outcome
 * reaches the sender in the PUBACK itself for an MQTT 5 QoS 1 publish (a reason code, with user properties `seq`,
 * `createdAt`, `duplicate` or the Chorus error `code`), and otherwise on its events topic (an `ack` with the seq, or a
 * `rejected` with the code).
 */
export class PublishRouting {
  private readonly publishBuckets = new WeakMap<Client, TokenBucket>();
  private readonly heldEvents = new WeakMap<Client, { until: number; events: UserEvent[] }>();
  /** When each user last typed in each group (performance.now()), for the typing rate. */
  private readonly lastTyping = new Map<string, number>();

  constructor(private readonly deps: PublishRoutingDeps) {}

  /**
   * Aedes's authorizePublish. Keeps each connection to mqttPublishRate publishes per second: a publish over it is
   * handled only when its token is there; meanwhile Aedes reads nothing more from that connection (it reads on once
   * every packet of the last read was handled), so the sender slows down through TCP, and nothing it sent is dropped.
   */
  readonly authorizePublish = (client: Client | null, packet: PublishPacket, done: Done): void => {
    // [MQTT-2.3.1-1]: a QoS 1 or 2 PUBLISH carries a non-zero packet identifier; one that does not is a protocol error,
    // and the connection is closed without an acknowledgement.
    if (packet.qos > 0 && packet.messageId === 0)
      return done(new Error('a QoS 1 or 2 PUBLISH with packet identifier 0'));
    // Chorus takes QoS 1 at most (advertised to MQTT 5 clients in CONNACK): a QoS 2 publish ends the connection
    // [MQTT-3.2.2-11], so no QoS 2 state is ever kept for a client.
    if (packet.qos === 2)
      return done(
        Object.assign(new Error('QoS 2 is not supported'), { disconnectReasonCode: ReasonCode.QOS_NOT_SUPPORTED }),
      );
    if (!client) return this.route(client, packet, done);
    let bucket = this.publishBuckets.get(client);
    if (!bucket) {
      const rate = this.deps.mqttPublishRate;
      this.publishBuckets.set(client, (bucket = new TokenBucket(rate, rate)));
    }
    const waitMs = bucket.take();
    if (waitMs === 0) return this.route(client, packet, done);
    this.deps.onThrottled();
    setTimeout(() => this.route(client, packet, done), waitMs);
  };

  /** The client subscribed: acks and rejections held for it until it listens on its events topic go out now. */
  subscribed(client: Client, topics: string[]): void {
    const userId = this.deps.live.userOf(client);
    if (userId === undefined || !topics.includes(eventsTopic(userId))) return;
    const held = this.heldEvents.get(client);
    if (!held) return;
    this.heldEvents.delete(client);
    for (const event of held.events) this.deps.events.sendEvent(userId, event);
  }

  private route(client: Client | null, packet: PublishPacket, done: Done): void {
    const target = parseTopic(packet.topic);
    const userId = client ? this.deps.live.userOf(client) : undefined;
    const payload = packet.payload;
    packet.topic = VOID_TOPIC;
    packet.payload = EMPTY;
    packet.retain = false;
    if (!client || userId === undefined) return done(null); // a will left by a session that no longer exists
    const outcome = new PublishOutcome(this, client, userId, packet.qos, done);
    if (target?.kind === 'typing') {
      done(null); // nothing to store: acknowledged (when sent at QoS 1) at once
      return this.relayTyping(client, userId, target.groupId);
    }
    if (target?.kind === 'read') return this.moveReadPointer(client, userId, target.groupId, payload, outcome);
    if (target?.kind !== 'group') {
      return outcome.refused(
        new ChorusError('TOPIC_NOT_ALLOWED', `clients may not publish to ${target ? 'events topics' : 'this topic'}`),
      );
    }
    this.sendToGroup(client, userId, target.groupId, payload, outcome);
  }

  private sendToGroup(
    sender: Client,
    userId: string,
    groupId: string,
    payload: Buffer | string,
    outcome: PublishOutcome,
  ): void {
    // The live ACL follows every membership change as it is made, so it is current without a store read per message.
    if (!this.deps.live.isMember(sender, groupId))
      return outcome.refused(new ChorusError('NOT_A_MEMBER'), groupId, clientMsgIdOf(parseQuietly(payload)));
    let send: unknown;
    try {
      send = parseSendBytes(typeof payload === 'string' ? Buffer.from(payload) : payload, this.deps.maxBodyBytes);
    } catch (err) {
      return outcome.refused(err, groupId); // unparsed or too large to parse: no clientMsgId to name
    }
    // The PUBACK (written by Aedes when the outcome is told) waits for the commit: a PUBACK means durable.
    this.deps.sends.send(groupId, userId, send).then(
      ({ message, duplicate }) => {
        const { clientMsgId, seq, createdAt } = message;
        outcome.stored({ type: 'ack', groupId, clientMsgId, seq, createdAt, duplicate });
      },
      (err: unknown) => {
        if (!isTransient(err)) return outcome.refused(err, groupId, clientMsgIdOf(send));
        const error = this.chorusError(err);
        this.deps.logger.debug(
          { clientId: sender.id, code: error.code },
          'send not stored yet: closing without PUBACK',
        );
        outcome.notYet(error);
      },
    );
  }

  /**
   * A read pointer over MQTT: what `PUT /v1/groups/:id/read` does, for the price of a publish on a connection that is
   * already open. The PUBACK follows once the pointer is stored (or the refusal is final: then a `rejected` event).
   */
  private moveReadPointer(
    client: Client,
    userId: string,
    groupId: string,
    payload: Buffer | string,
    outcome: PublishOutcome,
  ): void {
    if (!this.deps.live.isMember(client, groupId)) return outcome.refused(new ChorusError('NOT_A_MEMBER'), groupId);
    const seq = (parseQuietly(payload) as { seq?: unknown } | null | undefined)?.seq;
    if (!Number.isSafeInteger(seq) || (seq as number) < 0)
      return outcome.refused(new ChorusError('INVALID_MESSAGE', 'a read pointer is {"seq": <integer >= 0>}'), groupId);
    this.deps.readReceipts.markRead(groupId, userId, seq as number).then(
      () => outcome.stored(null),
      (err: unknown) => (isTransient(err) ? outcome.notYet(this.chorusError(err)) : outcome.refused(err, groupId)),
    );
  }

  /**
   * Typing indicators: ephemeral, never stored or sequenced. The sender is the connection's user, whatever the payload
   * says; at most one per user and group every TYPING_INTERVAL_MS is relayed (more are dropped); and only in groups of
   * at most liveEventsMaxGroupMembers, to the other members' events topics at QoS 0 (on every node).
   */
  private relayTyping(client: Client, userId: string, groupId: string): void {
    if (!this.deps.live.isMember(client, groupId))
      return this.reject(client, userId, new ChorusError('NOT_A_MEMBER'), groupId);
    const key = `${userId}\n${groupId}`;
    const now = performance.now();
    if (now - (this.lastTyping.get(key) ?? Number.NEGATIVE_INFINITY) < TYPING_INTERVAL_MS) return;
    this.lastTyping.delete(key); // re-inserted last: the Map's order is least recently typed first
    this.lastTyping.set(key, now);
    if (this.lastTyping.size > MAX_TYPING_ENTRIES) this.lastTyping.delete(this.lastTyping.keys().next().value!);
    void this.deps.events.tellGroup(groupId, { type: 'typing', groupId, userId }, userId);
  }

  private reject(client: Client, userId: string, err: unknown, groupId?: string, clientMsgId?: string): void {
    this.tellSender(client, userId, rejection(this.chorusError(err), groupId, clientMsgId));
  }

  /** The Chorus error a refusal reports: a store that does not answer is UNAVAILABLE; a bug's is logged, INTERNAL. */
  chorusError(err: unknown): ChorusError {
    if (isChorusError(err)) return err;
    if (isStoreOutage(err)) return new ChorusError('UNAVAILABLE');
    this.deps.logger.error({ err }, 'publish failed');
    return new ChorusError('INTERNAL');
  }

  /**
   * Acks and rejections concern the connection that sent the publish: when it has not subscribed to its events topic
   * nobody is listening, and the publish is skipped. They still go through the router, never straight to the client:
   * Aedes drops, per client, any packet older than the last one it delivered (its duplicate filter), so a direct write
   * could overtake, and so silence, a group message routed just before it.
   */
  tellSender(client: Client, userId: string, event: UserEvent): void {
    if (subscriptionOf(client, eventsTopic(userId))) return this.deps.events.sendEvent(userId, event);
    // Not subscribed yet: MQTT.js re-sends its unacknowledged publishes before it subscribes on a new connection, so
    // their acks are held for the connection until it subscribes to its events topic (the newest, for HELD_EVENTS_MS).
    const now = performance.now();
    let held = this.heldEvents.get(client);
    if (!held) this.heldEvents.set(client, (held = { until: now + HELD_EVENTS_MS, events: [] }));
    if (now > held.until) {
      this.heldEvents.set(client, NOT_LISTENING); // what it held goes with its list
      return;
    }
    if (held.events.length >= MAX_HELD_EVENTS) held.events.shift();
    held.events.push(event);
  }
}

const rejection = (error: ChorusError, groupId?: string, clientMsgId?: string): UserEvent => {
  const event: UserEvent = { type: 'rejected', code: error.code, message: error.message };
  if (groupId !== undefined) event.groupId = groupId;
  if (clientMsgId !== undefined) event.clientMsgId = clientMsgId;
  return event;
};

/**
 * How one publish's outcome reaches its sender. An MQTT 5 QoS 1 publish gets it in its PUBACK: the reason code, and
 * the seq or the Chorus code as user properties, which Aedes leaves out for a client that asked for no problem
 * information [MQTT-3.1.2-29]; such a client, and every other publish, gets it as an event on its events topic too.
 * Either way a passing failure gets no PUBACK at all.
 */
class PublishOutcome {
  private readonly inPuback: boolean;
  private readonly asEvent: boolean;

  constructor(
    private readonly routing: PublishRouting,
    private readonly client: Client,
    private readonly userId: string,
    qos: number,
    private readonly done: Done,
  ) {
    this.inPuback = qos === 1 && client.version === 5;
    this.asEvent = !this.inPuback || !wantsProblemInformation(client);
  }

  /** Stored: the ack (for a group message) with its seq. */
  stored(ack: Extract<UserEvent, { type: 'ack' }> | null): void {
    if (ack && this.asEvent) this.routing.tellSender(this.client, this.userId, ack);
    if (!ack || !this.inPuback) return this.done(null);
    const userProperties: Record<string, string> = { seq: String(ack.seq), createdAt: ack.createdAt };
    if (ack.duplicate) userProperties.duplicate = 'true';
    this.done(null, { userProperties });
  }

  /** Refused for good: the same send will be refused again. */
  refused(err: unknown, groupId?: string, clientMsgId?: string): void {
    const error = this.routing.chorusError(err);
    if (this.asEvent) this.routing.tellSender(this.client, this.userId, rejection(error, groupId, clientMsgId));
    if (!this.inPuback) return this.done(null);
    this.done(
      Object.assign(new Error(error.message), {
        reasonCode: pubackReasonCode(error.code),
        userProperties: { code: error.code },
      }),
    );
  }

  /** Not stored yet, for a reason that passes: no PUBACK, the connection ends and the client sends it again. */
  notYet(err: ChorusError): void {
    this.done(this.client.version === 5 ? Object.assign(err, { disconnectReasonCode: ReasonCode.SERVER_BUSY }) : err);
  }
}

function parseQuietly(payload: Buffer | string): unknown {
  try {
    return JSON.parse(payload.toString());
  } catch {
    return undefined;
  }
}

/** Best effort: names the clientMsgId in a rejection even when the payload as a whole is bad. */
function clientMsgIdOf(send: unknown): string | undefined {
  const id = (send as { clientMsgId?: unknown } | null | undefined)?.clientMsgId;
  return typeof id === 'string' && id.length <= 64 ? id : undefined;
}
