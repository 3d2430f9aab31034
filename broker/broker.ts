import type { Server as HttpServer } from 'node:http';
import type { Aedes, Client } from 'aedes';
import type { Logger } from 'pino';
import type { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import type { TokenVerifier } from '../auth/token-verifier.js';
import type { ChorusConfig } from '../config/config.js';
import type { Groups } from '../groups/groups.js';
import type { ReadReceipts } from '../groups/read-receipts.js';
import { parseTopic } from '../protocol/index.js';
import type { SendPath } from '../sequencer/sequencer.js';
import { Admission, type RefusalReason } from './admission.js';
import { ReasonCode } from './reason-codes.js';
import { clientsOf, silenceTopics, storeSubscriptions } from './aedes.js';
import type { GroupDelivery } from './group-delivery.js';
import type { LiveEvents } from './live-events.js';
import type { LiveUsers } from './live-users.js';
import { Logins } from './login.js';
import { LiveMemberships } from './memberships.js';
import type { Presence } from './presence.js';
import { PublishRouting, VOID_TOPIC } from './publish-routing.js';

/**
 * Stored with every persistent session once it is accepted, and refused by the ACL whenever the session is restored:
 * Aedes reports a session as present only when it has stored subscriptions, and a session whose subscriptions were all
 * refused still exists ([MQTT-3.2.2-2]). QoS 0, so nothing is ever routed or queued for it.
 */
const SESSION_MARKER = { topic: '$chorus/session', qos: 0 as const };

/** What the broker counts for /metrics. */
export interface BrokerCounters {
  /** A connection whose unsent output passed maxClientBufferBytes was closed. */
  slowConsumerCut(): void;
  /** A publish was held back by the per-connection publish rate. */
  publishThrottled(): void;
  /** A connection was refused before authenticating: too many unauthenticated ones, or its address failed too often. */
  connectionRefused(reason: RefusalReason | 'auth-failures'): void;
}

export interface BrokerDeps {
  /** The node's Aedes (createAedes), with the parts that write to its clients, built before the broker. */
  aedes: Aedes;
  live: LiveUsers;
  events: LiveEvents;
  subscribers: GroupDelivery;
  config: ChorusConfig;
  verifier: TokenVerifier;
  /** Failed logins per client address, shared with the REST API. */
  authThrottle: FailedAuthThrottle;
  groups: Groups;
  presence: Presence;
  /** Where group publishes go to be sequenced. */
  sends: SendPath;
  /** Where read pointers published on `groups/{g}/read` go. */
  readReceipts: ReadReceipts;
  /** Whether other nodes share this node's router (a cluster). */
  clustered: boolean;
  counters: BrokerCounters;
  logger: Logger;
}

/**
 * The MQTT face of Chorus: Aedes with JWT logins (login.ts), the group ACL (checked on SUBSCRIBE, on session restore,
 * and again before every forward), publishes routed by topic (publish-routing.ts: group messages through the
 * sequencer), subscriptions that follow membership changes at once (memberships.ts), and connections bounded before
 * they authenticate (admission.ts). This file installs them as Aedes's hooks.
 */
export class ChorusBroker {
  readonly aedes: Aedes;
  readonly live: LiveUsers;
  private readonly admission: Admission;
  private readonly logins: Logins;
  private readonly memberships: LiveMemberships;

  constructor(private readonly deps: BrokerDeps) {
    const { aedes, live, events, subscribers, config, counters, logger } = deps;
    this.aedes = aedes;
    this.live = live;
    this.admission = new Admission({
      limits: config,
      handle: (stream, req) => aedes.handle(stream, req as never),
      onRefused: (reason) => counters.connectionRefused(reason),
      onSlowConsumerCut: () => counters.slowConsumerCut(),
      logger,
    });
    this.logins = new Logins({
      aedes,
      live,
      events,
      verifier: deps.verifier,
      authThrottle: deps.authThrottle,
      presence: deps.presence,
      groupIdsOf: (userId) => deps.groups.allGroupIds(userId),
      addressOf: (conn) => this.admission.addressOf(conn),
      onAuthenticated: (conn) => this.admission.authenticated(conn),
      onThrottled: () => counters.connectionRefused('auth-failures'),
      maxConnections: config.maxConnections,
      logger,
    });
    const publishes = new PublishRouting({
      live,
      events,
      sends: deps.sends,
      readReceipts: deps.readReceipts,
      mqttPublishRate: config.mqttPublishRate,
      maxBodyBytes: config.maxBodyBytes,
      onThrottled: () => counters.publishThrottled(),
      logger,
    });
    this.memberships = new LiveMemberships(deps.groups, live, events, logger);

    aedes.preConnect = this.logins.preConnect;
    aedes.authenticate = this.logins.authenticate;
    aedes.authorizeSubscribe = (client, sub, callback) => {
      if (!this.mayReceive(client, sub.topic)) return callback(null, null); // SUBACK 0x80 / 0x87 [MQTT-3.9.3-2]
      // Granted at most QoS 1, the most Chorus delivers (advertised to MQTT 5 clients) [MQTT-3.8.4-6].
      callback(null, sub.qos > 1 ? { ...sub, qos: 1 } : sub);
    };
    aedes.authorizeForward = (client, packet) =>
      this.mayReceive(client, packet.topic) ? subscribers.forward(client, packet) : null;
    aedes.authorizePublish = publishes.authorizePublish;
    // A voided client publish has nobody to reach: skip the routing pipeline (offline queues, mq match) entirely. So
    // have Aedes's notices of each disconnect, subscribe and unsubscribe ($SYS/<broker id>/...): clients may not
    // subscribe to $SYS (the ACL) and Aedes itself follows only heartbeat, birth and new/clients (for takeovers), yet
    // in a cluster each notice is a Redis message that every node reads (a tenth of a 17,000-connection node's
    // shutdown, and a Redis message per subscribe when clients connect).
    // new/clients tells the other nodes to close their client of the same id (a takeover, [MQTT-3.1.4-2]); a node
    // alone (no shared router) closes its own in registerClient, so its notice would reach nobody.
    const notices = [
      'disconnect/clients',
      'new/subscribes',
      'new/unsubscribes',
      ...(deps.clustered ? [] : ['new/clients']),
    ];
    silenceTopics(aedes, new Set([VOID_TOPIC, ...notices.map((notice) => `$SYS/${aedes.id}/${notice}`)]));
    aedes.on('clientDisconnect', (client) => this.logins.disconnected(client));
    aedes.on('clientReady', (client) => {
      if (client.clean) return;
      storeSubscriptions(aedes, client, [SESSION_MARKER]).catch((err: Error) =>
        logger.debug({ clientId: client.id, err: err.message }, 'session marker not stored'),
      );
    });
    aedes.on('subscribe', (subscriptions, client) => {
      const topics = subscriptions.map((sub) => sub.topic);
      subscribers.subscribed(client, topics);
      publishes.subscribed(client, topics);
    });
    aedes.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'client error'));
    aedes.on('connectionError', (_client, err) => logger.debug({ err: err.message }, 'connection error'));
  }

  /** Connections waiting for a place among the unauthenticated ones. */
  get waitingConnections(): number {
    return this.admission.waitingConnections;
  }

  /** Serves MQTT over TCP. Resolves with the bound port. */
  listenTcp(host: string, port: number): Promise<number> {
    return this.admission.listenTcp(host, port);
  }

  /** Serves MQTT over WebSocket on `path` of an HTTP server (subprotocol "mqtt"). */
  attachWebSocket(server: HttpServer, path: string): void {
    this.admission.attachWebSocket(server, path);
  }

  async close(): Promise<void> {
    this.logins.close(); // disconnects from here on are the node's own
    this.deps.events.close(); // presence leaves with the node (see Logins.disconnected)
    this.memberships.close();
    // No new connections from here on; the open ones are closed below.
    const listenersClosed = this.admission.close();
    // Newest first: closing a client removes its listeners from the router, whose list for a topic is in subscription
    // order and searched from the end (qlobber's lastIndexOf and splice), so closing a big group's members oldest
    // first (as Aedes's close does) is quadratic: a quarter of a 17,000-connection node's shutdown.
    // MQTT 5 clients hear why: 0x8B, server shutting down [MQTT-3.14.4-1] (a 3.1.1 connection is just closed).
    const clients = clientsOf(this.aedes).reverse();
    await Promise.all(
      clients.map(
        (client) =>
          new Promise<void>((resolve) =>
            client.disconnect({ reasonCode: ReasonCode.SERVER_SHUTTING_DOWN }, () => resolve()),
          ),
      ),
    );
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await listenersClosed;
  }

  /** Whether this client may receive messages on `topic`: its groups' topics and its own events topic only. */
  private mayReceive(client: Client | null, topic: string): boolean {
    if (!client) return false;
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'group') return this.live.isMember(client, parsed.groupId);
    if (parsed?.kind === 'events') return parsed.userId === this.live.userOf(client);
    return false;
  }
}
