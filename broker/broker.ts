import { createServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type AedesOptions, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { ChorusConfig } from '../config/config.js';
import type { GroupAnnouncement, Groups } from '../groups/groups.js';
import type { MembershipChange } from '../groups/membership-feed.js';
import type { ReadReceipts } from '../groups/read-receipts.js';
import {
  ChorusError,
  eventsTopic,
  groupTopic,
  isChorusError,
  parseTopic,
  type UserEvent,
} from '../protocol/index.js';
import { parseSendBytes } from '../sequencer/send-validation.js';
import type { SendPath } from '../sequencer/sequencer.js';
import type { TokenVerifier } from '../auth/token-verifier.js';
import { PubackOrder, seqOfPayload } from './delivered-marks.js';
import { type DeliveryTarget, GroupPublishes, writeGroupPublish } from './group-publishes.js';
import { watchFrameSizes } from './frame-limit.js';
import { LiveUsers } from './live-users.js';
import { gatherOutput } from './connection-output.js';
import type { Presence } from './presence.js';
import { BoundedMemoryPersistence } from './persistence-bounded.js';
import type { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import { TokenBucket } from '../auth/token-bucket.js';

/**
 * Client publishes are acknowledged but never forwarded as they are: the sequencer fans out the stamped message
 * instead. Aedes has no way to acknowledge a QoS 1 publish without routing it, so the raw packet is re-addressed to
 * this topic, which no client can subscribe to (the ACL allows only group and own-events topics).
 */
const VOID_TOPIC = '$chorus/void';
/**
 * Stored with every persistent session once it is accepted, and refused by the ACL whenever the session is restored:
 * Aedes reports a session as present only when it has stored subscriptions, and a session whose subscriptions were all
 * refused still exists ([MQTT-3.2.2-2]). QoS 0, so nothing is ever routed or queued for it.
 */
const SESSION_MARKER = { topic: '$chorus/session', qos: 0 as const };
const EMPTY = Buffer.alloc(0);
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Logins refused because the group store failed are logged at most this often (an outage refuses thousands). */
const LOGIN_FAILURE_LOG_MS = 10_000;
/** The longest a connection waits, unread, for a place among the unauthenticated ones (see admit). */
const WAITING_TIMEOUT_MS = 10_000;
/** Connections the kernel may hold for accept() (capped by net.core.somaxconn). */
export const LISTEN_BACKLOG = 4096;
/** At most one typing indicator per user and group in this long; users whose last one is older are forgotten first. */
const TYPING_INTERVAL_MS = 2000;
const MAX_TYPING_ENTRIES = 100_000;
/** Acks and rejections kept for a connection that has not subscribed to its events topic yet (the newest win). */
const MAX_HELD_EVENTS = 256;
/** Where live events of a group travel between nodes: no client may subscribe to `$` topics [MQTT-4.7.2-1]. */
const LIVE_TOPIC_PREFIX = '$chorus/live/';
/** A live event on the bus: the event, and the one member not to tell (its author; '' for nobody). */
type LiveEntry = { except: string; event: UserEvent };
/** (group, user) presence changes held for the next batch; one more sends the batch at once. */
const MAX_PENDING_PRESENCE = 10_000;
const noop = () => {};

interface LiveBus {
  emit(packet: { topic: string; payload: Buffer }, done: (err?: Error) => void): void;
  on(topic: string, listener: (packet: { topic: string; payload: Buffer }, done: () => void) => void): void;
}


/** What the broker counts for /metrics. */
export interface BrokerCounters {
  /** A connection whose unsent output passed maxClientBufferBytes was closed. */
  slowConsumerCut(): void;
  /** A publish was held back by the per-connection publish rate. */
  publishThrottled(): void;
  /** A connection was refused before authenticating: too many unauthenticated ones, or its address failed too often. */
  connectionRefused(reason: 'unauthenticated-limit' | 'auth-failures'): void;
}

/**
 * Sends that failed for a reason that passes (the store is away, the sequencer is full, the group changes writers) are
 * never acknowledged: the connection is closed instead, and the client sends them again on its next connection (with
 * DUP set; [MQTT-4.4.0-1] requires it of persistent sessions, and MQTT.js does it for clean ones too), where the
 * clientMsgId makes the retry safe.
 */
const isTransient = (err: unknown): boolean => isChorusError(err) && (err.code === 'STORE_UNAVAILABLE' || err.code === 'OVERLOADED');

export interface BrokerDeps {
  config: ChorusConfig;
  verifier: TokenVerifier;
  groups: Groups;
  logger: Logger;
  presence: Presence;
  /** Failed logins per client address, shared with the REST API. */
  authThrottle: FailedAuthThrottle;
  counters?: BrokerCounters;
  /** A group message's QoS 1 delivery to a member's client was acknowledged (PUBACK). */
  onDelivered?: (groupId: string, userId: string, seq: number) => void;
  /** Aedes persistence and message router; in-memory when absent (one node), Redis-backed in a cluster. */
  persistence?: AedesOptions['persistence'];
  mq?: AedesOptions['mq'];
}

/** CONNACK return codes, MQTT 3.1.1 table 3.1 ([MQTT-3.2.2-5]). */
const authError = (message: string, returnCode: 2 | 3 | 4 | 5): AuthenticateError =>
  Object.assign(new Error(message), { returnCode }) as AuthenticateError;

/**
 * The MQTT face of Chorus: Aedes with JWT authentication, the group ACL (checked on SUBSCRIBE, on session restore,
 * and again before every forward), publishes to group topics routed through the sequencer, and subscriptions that
 * follow membership changes at once.
 */
export class ChorusBroker {
  readonly aedes: Aedes;
  readonly live = new LiveUsers();
  private sends: SendPath | null = null;
  private readReceipts: ReadReceipts | null = null;
  private tcpServer: TcpServer | null = null;
  private wsServer: WebSocketServer | null = null;
  private readonly expiryTimers = new WeakMap<Client, NodeJS.Timeout>();
  private readonly publishBuckets = new WeakMap<Client, TokenBucket>();
  private readonly heldEvents = new WeakMap<Client, UserEvent[]>();
  /** When each user last typed in each group (performance.now()), for the typing rate. */
  private readonly lastTyping = new Map<string, number>();
  /** Clients that sent an empty client id with CleanSession 0, refused when they authenticate ([MQTT-3.1.3-8]). */
  private readonly anonymousPersistent = new WeakSet<Client>();
  private loginStoreFailures = 0;
  private loginStoreFailureLoggedAt = 0;
  /** Connections accepted and not yet authenticated, each with what ends its count. */
  private readonly unauthenticated = new Map<Duplex, () => void>();
  /** Connections waiting for a place among the unauthenticated ones, oldest first, each with what lets it in. */
  private readonly waiting = new Map<Duplex, () => void>();
  /** Set by close(): disconnects from then on are the node's own. */
  private closing = false;
  private readonly unsubscribeFeed: () => void;
  private readonly unsubscribeAnnouncements: () => void;
  private readonly unsubscribeGroupAnnouncements: () => void;
  private readonly pubackOrder = new PubackOrder<Client>();
  private readonly groupPublishes = new GroupPublishes();
  /** The node's message bus (Aedes's mqemitter: in memory, or Redis in a cluster), for live events. */
  private readonly mq: LiveBus;
  /** Presence changes for the next batch: group id -> user id -> online. */
  private pendingPresence = new Map<string, Map<string, boolean>>();
  private pendingPresenceCount = 0;
  private presenceTimer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly deps: BrokerDeps,
    aedes: Aedes,
  ) {
    this.aedes = aedes;
    const { logger } = deps;
    aedes.authenticate = (client, username, password, callback) => {
      this.authenticate(client, username, password).then(
        () => callback(null, true),
        (err: AuthenticateError) => callback(err, false),
      );
    };
    aedes.authorizeSubscribe = (client, sub, callback) => {
      callback(null, this.mayReceive(client, sub.topic) ? sub : null); // null: SUBACK 0x80 [MQTT-3.9.3-2]
    };
    aedes.authorizeForward = (client, packet) => {
      if (!this.mayReceive(client, packet.topic)) return null;
      if (this.deliverGroupPublish(client, packet)) return null; // written: Aedes has nothing left to do
      if (deps.onDelivered && client.clean) this.noteForward(client, packet);
      return packet;
    };
    aedes.authorizePublish = (client, packet, callback) => this.pacePublish(client, packet, callback);
    // Aedes gives an empty client id a generated one whatever CleanSession says; a persistent session needs a name.
    aedes.preConnect = (client, packet, callback) => {
      if (packet.clientId === '' && !packet.clean) this.anonymousPersistent.add(client);
      callback(null, true);
    };
    // A voided client publish has nobody to reach: skip the routing pipeline (offline queues, mq match) entirely. So
    // have Aedes's notices of each disconnect, subscribe and unsubscribe ($SYS/<broker id>/...): clients may not
    // subscribe to $SYS (the ACL) and Aedes itself follows only heartbeat, birth and new/clients (for takeovers), yet
    // in a cluster each notice is a Redis message that every node reads (a tenth of a 17,000-connection node's
    // shutdown, and a Redis message per subscribe when clients connect).
    // new/clients tells the other nodes to close their client of the same id (a takeover, [MQTT-3.1.4-2]); a node
    // alone (no shared router) closes its own in registerClient, so its notice would reach nobody.
    const route = aedes.publish.bind(aedes) as (packet: PublishPacket, client: unknown, done: unknown) => void;
    const notices = ['disconnect/clients', 'new/subscribes', 'new/unsubscribes', ...(deps.mq ? [] : ['new/clients'])];
    const unheard = new Set([VOID_TOPIC, ...notices.map((notice) => `$SYS/${aedes.id}/${notice}`)]);
    aedes.publish = ((packet: PublishPacket, client: unknown, done?: (err?: Error) => void) => {
      if (!unheard.has(packet.topic)) return route(packet, client, done);
      (typeof client === 'function' ? (client as () => void) : (done ?? (() => {})))();
    }) as typeof aedes.publish;
    aedes.on('clientDisconnect', (client) => this.onDisconnect(client));
    aedes.on('clientReady', (client) => {
      if (client.clean) return;
      const { persistence } = aedes as unknown as { persistence: { addSubscriptions(c: Client, subs: (typeof SESSION_MARKER)[]): Promise<void> } };
      persistence.addSubscriptions(client, [SESSION_MARKER]).catch((err: Error) => logger.debug({ clientId: client.id, err: err.message }, 'session marker not stored'));
    });
    aedes.on('subscribe', (subscriptions, client) => {
      const topic = eventsTopic(this.live.userOf(client) ?? '');
      if (subscriptions.some((sub) => sub.topic === topic)) this.releaseHeldEvents(client);
    });
    this.mq = (aedes as unknown as { mq: LiveBus }).mq;
    this.mq.on(`${LIVE_TOPIC_PREFIX}+`, (packet, done) => {
      this.deliverLive(packet.topic.slice(LIVE_TOPIC_PREFIX.length), packet.payload);
      done();
    });
    aedes.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'client error'));
    aedes.on('connectionError', (_client, err) => logger.debug({ err: err.message }, 'connection error'));
    this.unsubscribeFeed = deps.groups.subscribe((change) => this.followMembership(change));
    this.unsubscribeAnnouncements = deps.groups.onAnnounce((change) => this.announceMembership(change));
    this.unsubscribeGroupAnnouncements = deps.groups.onGroupAnnounce((announcement) => void this.announceGroup(announcement));
    const { onDelivered } = deps;
    if (onDelivered) {
      aedes.on('ack', (packet, client) => {
        const userId = client ? this.live.userOf(client) : undefined;
        if (!client || userId === undefined) return;
        // A persistent session's packet comes back from the persistence, kept until its PUBACK [MQTT-4.3.2-1]; a clean
        // session's does not (Aedes keeps no copy): its PUBACKs are matched to its forwards in order.
        const delivery = client.clean ? this.pubackOrder.acknowledged(client) : groupDelivery(packet as PublishPacket | undefined);
        if (delivery) onDelivered(delivery.groupId, userId, delivery.seq);
      });
    }
  }

  static async create(deps: BrokerDeps): Promise<ChorusBroker> {
    const aedes = await Aedes.createBroker({
      persistence: deps.persistence ?? (new BoundedMemoryPersistence(deps.config.maxOfflineQueue) as never),
      ...(deps.mq ? { mq: deps.mq } : {}),
      connectTimeout: 10_000,
      maxClientsIdLength: 128,
      heartbeatInterval: 60_000,
      // No queue in the router: deliveries never wait for a socket (gatherOutput), so each emit finishes in its turn.
      // A bounded router queue only stalls every group behind one, and draining it recurses (qlobber stack overflow).
      concurrency: 0,
    });
    return new ChorusBroker(deps, aedes);
  }

  /** Where group publishes go to be sequenced. Until it is set, group publishes are refused as unavailable. */
  useSendPath(sends: SendPath): void {
    this.sends = sends;
  }

  /** Where read pointers published on `groups/{g}/read` go. Until it is set, they are refused as unavailable. */
  useReadReceipts(receipts: ReadReceipts): void {
    this.readReceipts = receipts;
  }

  /** Delivers a stamped message, serialized, to every subscriber of its group topic on this node (QoS 1). */
  deliverSerialized(groupId: string, seq: number, payload: Buffer): void {
    const topic = groupTopic(groupId);
    this.groupPublishes.register(topic, groupId, seq, payload);
    // Aedes drops, per client, a packet whose counter is below the last one it delivered under the same broker id.
    // In a cluster group messages and events travel different paths (splitRouter), so an event published before a
    // group message can arrive after it: group messages count under a broker id of their own.
    this.publish(topic, payload, `${this.aedes.id}/groups`);
  }

  /**
   * Writes a group message to a clean-session subscriber at QoS 1 from its PUBLISH serialized once for all
   * of them, instead of letting Aedes copy, defer and serialize the packet again for each (in 6 writes). Aedes keeps
   * nothing of a clean session's QoS 1 deliveries anyway; a persistent session's delivery is left to Aedes, which keeps
   * it until its PUBACK [MQTT-4.3.2-1], and so is a QoS 0 subscription's and anything that is not a fresh routing of
   * a group message (a packet with an identifier comes from a stored queue). Returns whether it wrote the packet.
   */
  private deliverGroupPublish(client: Client, packet: PublishPacket): boolean {
    const publish = this.groupPublishes.of(packet.payload);
    if (!publish || !client.clean || packet.qos !== 1 || packet.messageId !== undefined) return false;
    const target = client as unknown as DeliveryTarget & { connecting: boolean; connected: boolean };
    if ((subscriptionOf(client, packet.topic)?.qos ?? 0) < 1) return false;
    // A connection closed or closing gets nothing, as Aedes's own write refuses it ("connection closed").
    if (!target.connecting && !target.connected) return true;
    writeGroupPublish(target, publish, packet.payload as Buffer);
    if (this.deps.onDelivered) this.pubackOrder.forwarded(client, publish);
    return true;
  }

  /** Publishes an event on a user's own events topic. */
  sendEvent(userId: string, event: UserEvent, qos: 0 | 1 = 1): void {
    this.publish(eventsTopic(userId), Buffer.from(JSON.stringify(event)), undefined, qos);
  }

  private publish(topic: string, payload: Buffer, brokerId?: string, qos: 0 | 1 = 1): void {
    const packet: PublishPacket & { brokerId?: string } = {
      cmd: 'publish',
      topic,
      payload,
      qos,
      retain: false,
      dup: false,
      ...(brokerId ? { brokerId } : {}),
    };
    this.aedes.publish(packet, (err) => {
      if (err) this.deps.logger.error({ err, topic }, 'publish failed');
    });
  }

  private async authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
    // Over the cap, CONNACK 3 "server unavailable" tells the client to come back later ([MQTT-3.2.2-6] table 3.1).
    if (this.aedes.connectedClients >= this.deps.config.maxConnections) throw authError('too many connections', 3);
    // [MQTT-3.1.3-8]: an empty client id with CleanSession 0 gets CONNACK 0x02 (identifier rejected).
    if (this.anonymousPersistent.has(client)) throw authError('a persistent session needs a client id', 2);
    const address = addressOf(client);
    const { authThrottle } = this.deps;
    if (authThrottle.blocked(address)) {
      this.deps.counters?.connectionRefused('auth-failures');
      throw authError('too many failed logins from this address; retry later', 3);
    }
    const refuse = (message: string) => {
      authThrottle.failed(address);
      return authError(message, 4);
    };
    if (!username || !password) throw refuse('username (user id) and password (token) are required');
    let verified: Awaited<ReturnType<TokenVerifier['verify']>>;
    try {
      verified = await this.deps.verifier.verify(password.toString('utf8'));
    } catch {
      throw refuse('invalid token');
    }
    if (verified.userId !== username) throw refuse('token does not belong to this user id');
    // A client id is a session: another user must not take it over ([MQTT-3.1.4-2] would close the holder).
    const holder = (this.aedes as unknown as { clients: Record<string, Client | undefined> }).clients[client.id];
    const holderUser = holder ? this.live.userOf(holder) : undefined;
    if (holderUser !== undefined && holderUser !== verified.userId) throw authError('client id in use', 2);
    const userId = verified.userId;
    try {
      await this.live.attach(client, userId, () => this.deps.groups.allGroupIds(userId));
    } catch (err) {
      // The store could not say which groups are the user's (down, or too busy to answer in time): "server unavailable",
      // so that the client comes back later, never "not authorized" ([MQTT-3.2.2-6] table 3.1).
      this.noteLoginStoreFailure(err as Error);
      throw authError('the group store is unavailable; retry later', 3);
    }
    this.unauthenticated.get(client.conn as Duplex)?.();
    void this.presenceChanged(userId, this.live.groupsOf(userId), () => this.deps.presence.connected(userId), true);
    if (verified.expiresAt !== undefined) {
      const ms = verified.expiresAt * 1000 - Date.now();
      if (ms < MAX_TIMER_MS) {
        const timer = setTimeout(() => client.close(), Math.max(0, ms));
        timer.unref();
        this.expiryTimers.set(client, timer);
      }
    }
  }

  /** Logs logins refused because the store failed, at most once per LOGIN_FAILURE_LOG_MS with how many there were. */
  private noteLoginStoreFailure(err: Error): void {
    this.loginStoreFailures += 1;
    const now = Date.now();
    if (now - this.loginStoreFailureLoggedAt < LOGIN_FAILURE_LOG_MS) return;
    this.deps.logger.warn({ refused: this.loginStoreFailures, err: err.message }, "logins refused (CONNACK 3): the user's groups could not be read");
    this.loginStoreFailures = 0;
    this.loginStoreFailureLoggedAt = now;
  }

  private onDisconnect(client: Client): void {
    clearTimeout(this.expiryTimers.get(client));
    const userId = this.live.userOf(client);
    if (userId === undefined) return;
    const groupIds = this.live.groupsOf(userId); // read before the last client takes the set away
    this.live.detach(client);
    // A node shutting down closes every client at once: presence leaves with the node (Presence.close), and the
    // clients are back on another node within seconds, so nobody is told they went offline meanwhile.
    if (this.closing) return;
    void this.presenceChanged(userId, groupIds, () => this.deps.presence.disconnected(userId), false);
  }

  private async presenceChanged(userId: string, groupIds: string[], update: () => Promise<boolean>, online: boolean): Promise<void> {
    try {
      if (await update()) this.announcePresence(userId, groupIds, online);
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message, userId }, 'presence update failed');
    }
  }

  /**
   * Tells the user's fellow members that the user came online or went offline, on their events topics, in groups of
   * at most liveEventsMaxGroupMembers (in larger ones presence is read on demand: GET /v1/groups/:id/presence). The
   * changes of presenceBatchMs are told together, one bus message per group (tellGroupAll: each node hands the events
   * to its own clients), each user's last state only: a reconnect storm, or a node's clients moving to the others,
   * costs a message per group instead of one per member and group, and a member who flapped counts once. The groups
   * come from the live ACL set, which connecting already loaded: no second scan of the user's memberships, and no read
   * of any group's members on this path.
   */
  private announcePresence(userId: string, groupIds: string[], online: boolean): void {
    if (this.closing) return; // presence leaves with the node (see onDisconnect)
    for (const groupId of groupIds) {
      let changes = this.pendingPresence.get(groupId);
      if (!changes) this.pendingPresence.set(groupId, (changes = new Map()));
      if (!changes.has(userId)) this.pendingPresenceCount += 1;
      changes.set(userId, online);
    }
    if (this.pendingPresenceCount > MAX_PENDING_PRESENCE) this.tellPresence();
    else this.presenceTimer ??= setTimeout(() => this.tellPresence(), this.deps.config.presenceBatchMs).unref();
  }

  private tellPresence(): void {
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    const pending = this.pendingPresence;
    this.pendingPresence = new Map();
    this.pendingPresenceCount = 0;
    for (const [groupId, changes] of pending) {
      const entries = [...changes].map(([userId, online]): LiveEntry => ({ except: userId, event: { type: 'presence', groupId, userId, online } }));
      void this.tellGroupAll(groupId, entries);
    }
  }

  /** A delivery to a clean session whose PUBACK will follow (QoS 1 after the subscription's downgrade), in order. */
  private noteForward(client: Client, packet: PublishPacket): void {
    const granted = subscriptionOf(client, packet.topic)?.qos ?? 0;
    if (packet.qos === 0 || granted === 0) return;
    this.pubackOrder.forwarded(client, groupDelivery(packet));
  }

  /** Whether this client may receive messages on `topic`: its groups' topics and its own events topic only. */
  private mayReceive(client: Client | null, topic: string): boolean {
    if (!client) return false;
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'group') return this.live.isMember(client, parsed.groupId);
    if (parsed?.kind === 'events') return parsed.userId === this.live.userOf(client);
    return false;
  }

  /**
   * Keeps each connection to mqttPublishRate publishes per second. A publish over it is handled only when its token is
   * there; meanwhile Aedes reads nothing more from that connection (it reads on once every packet of the last read was
   * handled), so the sender slows down through TCP, and nothing it sent is dropped.
   */
  private pacePublish(client: Client | null, packet: PublishPacket, callback: (err?: Error | null) => void): void {
    if (!client) return this.routePublish(client, packet, callback);
    let bucket = this.publishBuckets.get(client);
    if (!bucket) {
      const rate = this.deps.config.mqttPublishRate;
      this.publishBuckets.set(client, (bucket = new TokenBucket(rate, rate)));
    }
    const waitMs = bucket.take();
    if (waitMs === 0) return this.routePublish(client, packet, callback);
    this.deps.counters?.publishThrottled();
    setTimeout(() => this.routePublish(client, packet, callback), waitMs);
  }

  private routePublish(client: Client | null, packet: PublishPacket, callback: (err?: Error | null) => void): void {
    const target = parseTopic(packet.topic);
    const userId = client ? this.live.userOf(client) : undefined;
    const payload = packet.payload;
    packet.topic = VOID_TOPIC;
    packet.payload = EMPTY;
    packet.retain = false;
    if (userId === undefined) return callback(null); // a will left by a session that no longer exists
    if (target?.kind === 'typing') {
      callback(null); // nothing to store: acknowledged (when sent at QoS 1) at once
      return void this.relayTyping(client!, userId, target.groupId);
    }
    if (target?.kind === 'read') return this.moveReadPointer(client!, userId, target.groupId, payload, callback);
    if (target?.kind !== 'group') {
      this.reject(client!, userId, new ChorusError('TOPIC_NOT_ALLOWED', `clients may not publish to ${target ? 'events topics' : 'this topic'}`));
      return callback(null);
    }
    const { groupId } = target;
    const sends = this.sends;
    if (!sends) return callback(new ChorusError('STORE_UNAVAILABLE', 'this node is not ready for sends yet'));
    const sender = client!;
    // The live ACL follows every membership change as it is made, so it is current without a store read per message.
    if (!this.live.isMember(sender, groupId)) {
      this.reject(sender, userId, new ChorusError('NOT_A_MEMBER'), groupId, clientMsgIdOf(parseQuietly(payload)));
      return callback(null);
    }
    let send: unknown;
    try {
      send = parseSendBytes(typeof payload === 'string' ? Buffer.from(payload) : payload, this.deps.config.maxBodyBytes);
    } catch (err) {
      this.reject(sender, userId, err, groupId); // unparsed or too large to parse: no clientMsgId to name
      return callback(null);
    }
    // The PUBACK (written by Aedes when this callback runs) waits for the commit: a PUBACK means durable.
    sends.send(groupId, userId, send).then(
      ({ message, duplicate }) => {
        this.tellSender(sender, userId, {
          type: 'ack',
          groupId,
          clientMsgId: message.clientMsgId,
          seq: message.seq,
          createdAt: message.createdAt,
          duplicate,
        });
        callback(null);
      },
      (err: unknown) => {
        if (isTransient(err)) {
          this.deps.logger.debug({ clientId: sender.id, code: (err as ChorusError).code }, 'send not stored yet: closing without PUBACK');
          return callback(err as ChorusError);
        }
        this.reject(sender, userId, err, groupId, clientMsgIdOf(send));
        callback(null);
      },
    );
  }

  /**
   * A read pointer over MQTT: what `PUT /v1/groups/:id/read` does, for the price of a publish on a connection that is
   * already open. The PUBACK follows once the pointer is stored (or the refusal is final: then a `rejected` event).
   */
  private moveReadPointer(client: Client, userId: string, groupId: string, payload: Buffer | string, callback: (err?: Error | null) => void): void {
    const receipts = this.readReceipts;
    if (!receipts) return callback(new ChorusError('STORE_UNAVAILABLE', 'this node is not ready for read receipts yet'));
    if (!this.live.isMember(client, groupId)) {
      this.reject(client, userId, new ChorusError('NOT_A_MEMBER'), groupId);
      return callback(null);
    }
    let seq: unknown;
    try {
      seq = (JSON.parse(payload.toString()) as { seq?: unknown }).seq;
    } catch {}
    if (!Number.isSafeInteger(seq) || (seq as number) < 0) {
      this.reject(client, userId, new ChorusError('INVALID_MESSAGE', 'a read pointer is {"seq": <integer >= 0>}'), groupId);
      return callback(null);
    }
    receipts.markRead(groupId, userId, seq as number).then(
      () => callback(null),
      (err: unknown) => {
        if (isTransient(err)) return callback(err as ChorusError);
        this.reject(client, userId, err, groupId);
        callback(null);
      },
    );
  }

  /**
   * Typing indicators: ephemeral, never stored or sequenced. The sender is the connection's user, whatever the payload
   * says; at most one per user and group every TYPING_INTERVAL_MS is relayed (more are dropped); and only in groups of
   * at most liveEventsMaxGroupMembers, to the other members' events topics at QoS 0 (on every node).
   */
  private async relayTyping(client: Client, userId: string, groupId: string): Promise<void> {
    if (!this.live.isMember(client, groupId)) return this.reject(client, userId, new ChorusError('NOT_A_MEMBER'), groupId);
    const key = `${userId}\n${groupId}`;
    const now = performance.now();
    if (now - (this.lastTyping.get(key) ?? -Infinity) < TYPING_INTERVAL_MS) return;
    this.lastTyping.delete(key); // re-inserted last: the Map's order is least recently typed first
    this.lastTyping.set(key, now);
    if (this.lastTyping.size > MAX_TYPING_ENTRIES) this.lastTyping.delete(this.lastTyping.keys().next().value!);
    await this.tellGroup(groupId, { type: 'typing', groupId, userId }, userId);
  }

  /**
   * Tells a group's members but one of a live event (typing, read and delivered receipts) on their events topics, on
   * every node. One message per event (a list of them: see tellPresence) crosses the node's message bus (Redis in a
   * cluster), not one per member: each node hands it to its own clients of the group's members (deliverLive). Only
   * groups of at most liveEventsMaxGroupMembers: in larger ones such events are not pushed (read them on request).
   * Best effort: when the group's size cannot be read, nobody is told.
   */
  tellGroup(groupId: string, event: UserEvent, except: string): Promise<void> {
    return this.tellGroupAll(groupId, [{ except, event }]);
  }

  /** tellGroup for several events of one group, as one message on the bus. */
  private async tellGroupAll(groupId: string, entries: LiveEntry[]): Promise<void> {
    try {
      if (!(await this.smallForLiveEvents(groupId))) return;
    } catch (err) {
      this.deps.logger.debug({ err: (err as Error).message, groupId, type: entries[0]!.event.type }, 'live event not told: group size unreadable');
      return;
    }
    const packet = { cmd: 'publish', topic: `${LIVE_TOPIC_PREFIX}${groupId}`, payload: Buffer.from(JSON.stringify(entries)), qos: 0, retain: false };
    this.mq.emit(packet, (err?: Error) => {
      if (err) this.deps.logger.debug({ err: err.message, groupId, type: entries[0]!.event.type }, 'live event not told');
    });
  }

  /**
   * A live event from any node, to this node's clients of the group's members, at QoS 0: these are hints that the next
   * one supersedes, and the receipts route has the truth, so none is queued for an offline session or waits for a
   * PUBACK. The members are those the live ACL knows here, kept current by every membership change: no store read,
   * so that an event costs each node in proportion to its own clients of the group, and nothing when it has none.
   */
  private deliverLive(groupId: string, raw: Buffer): void {
    const members = this.live.membersOf(groupId);
    if (members.length === 0) return;
    const entries = (JSON.parse(raw.toString()) as LiveEntry[]).map(({ except, event }) => ({ except, payload: Buffer.from(JSON.stringify(event)) })); // once for all of them
    for (const userId of members) {
      const topic = eventsTopic(userId);
      for (const client of this.live.clientsOf(userId)) {
        if (!subscriptionOf(client, topic)) continue;
        for (const { except, payload } of entries) {
          if (userId === except) continue;
          // Aedes's own QoS 0 delivery to one client: the forward check, then the write [MQTT-3.3.5-1].
          (client as unknown as { deliver0(packet: object, done: () => void): void }).deliver0({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, noop);
        }
      }
    }
  }

  /** Whether the group has at most liveEventsMaxGroupMembers members (its count as kept by Groups). */
  private async smallForLiveEvents(groupId: string): Promise<boolean> {
    const members = await this.deps.groups.keptMemberCount(groupId);
    return members <= this.deps.config.liveEventsMaxGroupMembers;
  }

  /**
   * Acks and rejections concern the connection that sent the publish: when it has not subscribed to its events topic
   * nobody is listening, and the publish is skipped. They still go through the router, never straight to the client:
   * Aedes drops, per client, any packet older than the last one it delivered (its duplicate filter), so a direct write
   * could overtake, and so silence, a group message routed just before it.
   */
  private tellSender(client: Client, userId: string, event: UserEvent): void {
    const topic = eventsTopic(userId);
    if (subscriptionOf(client, topic)) return this.sendEvent(userId, event);
    // Not subscribed yet: MQTT.js re-sends its unacknowledged publishes before it subscribes on a new connection, so
    // their acks are held for the connection until it subscribes to its events topic (a few, the newest).
    let held = this.heldEvents.get(client);
    if (!held) this.heldEvents.set(client, (held = []));
    if (held.length >= MAX_HELD_EVENTS) held.shift();
    held.push(event);
  }

  private releaseHeldEvents(client: Client): void {
    const held = this.heldEvents.get(client);
    const userId = this.live.userOf(client);
    if (!held || userId === undefined) return;
    this.heldEvents.delete(client);
    for (const event of held) this.sendEvent(userId, event);
  }

  private reject(client: Client, userId: string, err: unknown, groupId?: string, clientMsgId?: string): void {
    const error = isChorusError(err) ? err : new ChorusError('INTERNAL');
    if (!isChorusError(err)) this.deps.logger.error({ err }, 'publish failed');
    const event: UserEvent = { type: 'rejected', code: error.code, message: error.message };
    if (groupId !== undefined) event.groupId = groupId;
    if (clientMsgId !== undefined) event.clientMsgId = clientMsgId;
    this.tellSender(client, userId, event);
  }

  /** Makes live subscriptions on this node follow a membership change; resolves when every client has followed. */
  private async followMembership(change: MembershipChange): Promise<void> {
    const clients = this.live.apply(change);
    const topic = groupTopic(change.groupId);
    await Promise.all(
      clients.map(
        (client) =>
          new Promise<void>((resolve) => {
            if (change.kind === 'added') client.subscribe({ topic, qos: 1 }, () => resolve());
            // The forward check already refuses the removed member; dropping the subscription frees it.
            else if (change.kind === 'removed' || change.kind === 'group-deleted') client.unsubscribe({ unsubscriptions: [topic] } as never, () => resolve());
            else resolve();
          }),
      ),
    );
  }

  /**
   * Tells the user of a change made on this node, once: the event is routed to the user's clients on every node, so
   * announcing it from each node's feed listener would deliver it once per node.
   */
  private announceMembership(change: MembershipChange): void {
    const { groupId, userId, by } = change;
    if (change.kind === 'added') this.sendEvent(userId, { type: 'member-added', groupId, userId, role: change.role, by });
    else if (change.kind === 'removed') this.sendEvent(userId, { type: 'member-removed', groupId, userId, by });
    else if (change.kind === 'role-changed') this.sendEvent(userId, { type: 'role-changed', groupId, userId, role: change.role, by });
  }

  /** Tells every member (of any group size: these are rare admin acts) of a group update or deletion, once. */
  private async announceGroup(announcement: GroupAnnouncement): Promise<void> {
    if (announcement.kind === 'group-deleted') {
      const { groupId, by } = announcement;
      for (const userId of announcement.memberIds) this.sendEvent(userId, { type: 'group-deleted', groupId, by });
      return;
    }
    const { group, by } = announcement;
    const event: Extract<UserEvent, { type: 'group-updated' }> = { type: 'group-updated', groupId: group.id, by, name: group.name, historyVisibility: group.historyVisibility };
    if (group.description !== undefined) event.description = group.description;
    if (group.avatarUrl !== undefined) event.avatarUrl = group.avatarUrl;
    try {
      for await (const page of this.deps.groups.memberPages(group.id, 1000)) for (const member of page) this.sendEvent(member.userId, event);
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message, groupId: group.id }, 'group update not told to every member: members unreadable');
    }
  }

  /**
   * Every connection, TCP or WebSocket, before Aedes sees it. At most maxUnauthenticatedConnections are served before
   * they authenticate; those beyond wait, unread, in arrival order, for a place (a reconnect storm is served as fast
   * as logins complete instead of being refused), up to maxWaitingConnections of them for at most WAITING_TIMEOUT_MS;
   * beyond that a connection is closed at once.
   */
  private admit(stream: Duplex, remote: string | undefined, handle: () => void): void {
    const { config, logger, counters } = this.deps;
    if (this.unauthenticated.size < config.maxUnauthenticatedConnections && this.waiting.size === 0) return this.serve(stream, remote, handle);
    if (this.waiting.size >= config.maxWaitingConnections || this.closing) {
      counters?.connectionRefused('unauthenticated-limit');
      logger.warn({ remote }, 'too many connections waiting to authenticate: refusing');
      stream.destroy();
      return;
    }
    const timer = setTimeout(() => stream.destroy(), WAITING_TIMEOUT_MS);
    timer.unref();
    const leave = () => {
      clearTimeout(timer);
      this.waiting.delete(stream);
    };
    stream.once('close', leave);
    this.waiting.set(stream, () => {
      stream.off('close', leave);
      leave();
      this.serve(stream, remote, handle);
    });
  }

  /** Connections waiting for a place among the unauthenticated ones. */
  get waitingConnections(): number {
    return this.waiting.size;
  }

  /** Lets waiting connections in while there is room among the unauthenticated ones. */
  private admitWaiting(): void {
    while (this.waiting.size > 0 && this.unauthenticated.size < this.deps.config.maxUnauthenticatedConnections) {
      this.waiting.values().next().value!(); // the oldest: a Map keeps arrival order
    }
  }

  /**
   * Hands a connection to Aedes: it counts as unauthenticated until it authenticates or closes, is closed at the first
   * packet header over maxPacketBytes, and is cut off when its unsent output passes maxClientBufferBytes.
   */
  private serve(stream: Duplex, remote: string | undefined, handle: () => void): void {
    const { config, logger, counters } = this.deps;
    const authenticated = () => {
      if (this.unauthenticated.delete(stream)) this.admitWaiting();
    };
    this.unauthenticated.set(stream, authenticated);
    stream.once('close', authenticated);
    watchFrameSizes(stream, config.maxPacketBytes, (size) => {
      logger.warn({ size, remote }, 'packet larger than maxPacketBytes: closing');
      stream.destroy();
    });
    // Each turn's writes go out as one, and a connection whose unsent output passes the bound is cut off.
    gatherOutput(stream, config.maxClientBufferBytes, (buffered) => {
      counters?.slowConsumerCut();
      logger.warn({ remote, clientId: (stream as { client?: Client }).client?.id, buffered }, 'client not reading: closing (slow consumer)');
    });
    handle();
  }

  /** Serves MQTT over TCP. Resolves with the bound port. */
  async listenTcp(host: string, port: number): Promise<number> {
    // No Nagle: PUBACKs and deliveries are small packets, and with Nagle each connection's next write waits for the
    // client to acknowledge the last one (Node's HTTP server, and so the WebSocket path, already sets TCP_NODELAY).
    const server = createServer({ noDelay: true }, (socket) => {
      socket.on('error', () => socket.destroy());
      this.admit(socket, socket.remoteAddress, () => this.aedes.handle(socket));
    });
    this.tcpServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // A deep accept queue: in a reconnect storm connections wait there rather than being dropped while the event
      // loop is busy (Node's default is 511).
      server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => resolve());
    });
    return (server.address() as { port: number }).port;
  }

  /** Serves MQTT over WebSocket on `path` of an HTTP server (subprotocol "mqtt"). */
  attachWebSocket(server: HttpServer, path: string): void {
    const wss = new WebSocketServer({ noServer: true, maxPayload: this.deps.config.maxPacketBytes });
    this.wsServer = wss;
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== path) {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        stream.on('error', () => stream.destroy());
        // maxPayload bounds one WebSocket message; an MQTT packet may span many, so its header is watched as on TCP.
        this.admit(stream, req.socket.remoteAddress, () => this.aedes.handle(stream, req));
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    // No new connections from here on; the open ones are closed by Aedes below.
    const listenersClosed = new Promise<void>((resolve) => (this.tcpServer ? this.tcpServer.close(() => resolve()) : resolve()));
    this.unsubscribeFeed();
    if (this.presenceTimer) clearTimeout(this.presenceTimer); // see onDisconnect: presence leaves with the node
    this.unsubscribeAnnouncements();
    this.unsubscribeGroupAnnouncements();
    for (const stream of this.waiting.keys()) stream.destroy();
    for (const client of this.wsServer?.clients ?? []) client.terminate();
    this.wsServer?.close();
    // Newest first: closing a client removes its listeners from the router, whose list for a topic is in subscription
    // order and searched from the end (qlobber's lastIndexOf and splice), so closing a big group's members oldest
    // first (as Aedes's close does) is quadratic: a quarter of a 17,000-connection node's shutdown.
    const clients = Object.values((this.aedes as unknown as { clients: Record<string, Client> }).clients).reverse();
    await Promise.all(clients.map((client) => new Promise<void>((resolve) => client.close(() => resolve()))));
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await listenersClosed;
  }
}

/** The client's IP address, over TCP or WebSocket. */
function addressOf(client: Client): string {
  const conn = client.conn as Partial<Socket>;
  const req = (client as { req?: IncomingMessage }).req;
  return conn.remoteAddress ?? req?.socket.remoteAddress ?? 'unknown';
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

/** The group and seq of a stamped group message being delivered; null for anything else. */
function groupDelivery(packet: PublishPacket | undefined): { groupId: string; seq: number } | null {
  if (!packet) return null;
  const target = parseTopic(packet.topic);
  if (target?.kind !== 'group') return null;
  const seq = seqOfPayload(packet.payload as Buffer);
  return Number.isSafeInteger(seq) && seq > 0 ? { groupId: target.groupId, seq } : null;
}

/** The client's subscription to exactly this topic (Aedes keeps them by filter; Chorus topics have no wildcards). */
function subscriptionOf(client: Client, topic: string): { qos?: number } | undefined {
  return (client as unknown as { subscriptions: Record<string, { qos?: number } | undefined> }).subscriptions[topic];
}
