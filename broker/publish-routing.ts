import type { Client, PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import { TokenBucket } from '../auth/token-bucket.js';
import type { ReadReceipts } from '../groups/read-receipts.js';
import { ChorusError, eventsTopic, isChorusError, parseTopic, type UserEvent } from '../protocol/index.js';
import { parseSendBytes } from '../sequencer/send-validation.js';
import type { SendPath } from '../sequencer/sequencer.js';
import { subscriptionOf } from './aedes.js';
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

/** Aedes's authorizePublish callback: an error closes the connection without a PUBACK. */
type Done = (err?: Error | null) => void;

/**
 * Sends that failed for a reason that passes (the store is away, the sequencer is full, the group changes writers) are
 * never acknowledged: the connection is closed instead, and the client sends them again on its next connection (with
 * DUP set; [MQTT-4.4.0-1] requires it of persistent sessions, and MQTT.js does it for clean ones too), where the
 * clientMsgId makes the retry safe.
 */
const isTransient = (err: unknown): boolean =>
  isChorusError(err) && (err.code === 'STORE_UNAVAILABLE' || err.code === 'OVERLOADED');

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
 * reaches the sender on its events topic (an `ack` with the seq, or a `rejected` with the code).
 */
export class PublishRouting {
  private readonly publishBuckets = new WeakMap<Client, TokenBucket>();
  private readonly heldEvents = new WeakMap<Client, UserEvent[]>();
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
    for (const event of held) this.deps.events.sendEvent(userId, event);
  }

  private route(client: Client | null, packet: PublishPacket, done: Done): void {
    const target = parseTopic(packet.topic);
    const userId = client ? this.deps.live.userOf(client) : undefined;
    const payload = packet.payload;
    packet.topic = VOID_TOPIC;
    packet.payload = EMPTY;
    packet.retain = false;
    if (!client || userId === undefined) return done(null); // a will left by a session that no longer exists
    if (target?.kind === 'typing') {
      done(null); // nothing to store: acknowledged (when sent at QoS 1) at once
      return this.relayTyping(client, userId, target.groupId);
    }
    if (target?.kind === 'read') return this.moveReadPointer(client, userId, target.groupId, payload, done);
    if (target?.kind !== 'group') {
      this.reject(
        client,
        userId,
        new ChorusError('TOPIC_NOT_ALLOWED', `clients may not publish to ${target ? 'events topics' : 'this topic'}`),
      );
      return done(null);
    }
    this.sendToGroup(client, userId, target.groupId, payload, done);
  }

  private sendToGroup(sender: Client, userId: string, groupId: string, payload: Buffer | string, done: Done): void {
    // The live ACL follows every membership change as it is made, so it is current without a store read per message.
    if (!this.deps.live.isMember(sender, groupId)) {
      this.reject(sender, userId, new ChorusError('NOT_A_MEMBER'), groupId, clientMsgIdOf(parseQuietly(payload)));
      return done(null);
    }
    let send: unknown;
    try {
      send = parseSendBytes(typeof payload === 'string' ? Buffer.from(payload) : payload, this.deps.maxBodyBytes);
    } catch (err) {
      this.reject(sender, userId, err, groupId); // unparsed or too large to parse: no clientMsgId to name
      return done(null);
    }
    // The PUBACK (written by Aedes when `done` runs) waits for the commit: a PUBACK means durable.
    this.deps.sends.send(groupId, userId, send).then(
      ({ message, duplicate }) => {
        const { clientMsgId, seq, createdAt } = message;
        this.tellSender(sender, userId, { type: 'ack', groupId, clientMsgId, seq, createdAt, duplicate });
        done(null);
      },
      (err: unknown) => {
        if (isTransient(err)) {
          this.deps.logger.debug(
            { clientId: sender.id, code: (err as ChorusError).code },
            'send not stored yet: closing without PUBACK',
          );
          return done(err as ChorusError);
        }
        this.reject(sender, userId, err, groupId, clientMsgIdOf(send));
        done(null);
      },
    );
  }

  /**
   * A read pointer over MQTT: what `PUT /v1/groups/:id/read` does, for the price of a publish on a connection that is
   * already open. The PUBACK follows once the pointer is stored (or the refusal is final: then a `rejected` event).
   */
  private moveReadPointer(client: Client, userId: string, groupId: string, payload: Buffer | string, done: Done): void {
    if (!this.deps.live.isMember(client, groupId)) {
      this.reject(client, userId, new ChorusError('NOT_A_MEMBER'), groupId);
      return done(null);
    }
    const seq = (parseQuietly(payload) as { seq?: unknown } | null | undefined)?.seq;
    if (!Number.isSafeInteger(seq) || (seq as number) < 0) {
      this.reject(
        client,
        userId,
        new ChorusError('INVALID_MESSAGE', 'a read pointer is {"seq": <integer >= 0>}'),
        groupId,
      );
      return done(null);
    }
    this.deps.readReceipts.markRead(groupId, userId, seq as number).then(
      () => done(null),
      (err: unknown) => {
        if (isTransient(err)) return done(err as ChorusError);
        this.reject(client, userId, err, groupId);
        done(null);
      },
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
    const error = isChorusError(err) ? err : new ChorusError('INTERNAL');
    if (!isChorusError(err)) this.deps.logger.error({ err }, 'publish failed');
    const event: UserEvent = { type: 'rejected', code: error.code, message: error.message };
    if (groupId !== undefined) event.groupId = groupId;
    if (clientMsgId !== undefined) event.clientMsgId = clientMsgId;
    this.tellSender(client, userId, event);
  }

  /**
   * Acks and rejections concern the connection that sent the publish: when it has not subscribed to its events topic
   * nobody is listening, and the publish is skipped. They still go through the router, never straight to the client:
   * Aedes drops, per client, any packet older than the last one it delivered (its duplicate filter), so a direct write
   * could overtake, and so silence, a group message routed just before it.
   */
  private tellSender(client: Client, userId: string, event: UserEvent): void {
    if (subscriptionOf(client, eventsTopic(userId))) return this.deps.events.sendEvent(userId, event);
    // Not subscribed yet: MQTT.js re-sends its unacknowledged publishes before it subscribes on a new connection, so
    // their acks are held for the connection until it subscribes to its events topic (a few, the newest).
    let held = this.heldEvents.get(client);
    if (!held) this.heldEvents.set(client, (held = []));
    if (held.length >= MAX_HELD_EVENTS) held.shift();
    held.push(event);
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
