import type { Duplex } from 'node:stream';
import { Aedes, type AedesOptions, type Client, type ConnectPacket, type PublishPacket } from 'aedes';
import { BoundedMemoryPersistence } from './persistence-bounded.js';

/**
 * Every use Chorus makes of Aedes beyond its public API (its client map, router, persistence, per-client state and
 * QoS 0 write), in one place: moving to another Aedes version means reading this file, and test/aedes-internals.test.ts
 * checks each of these against the installed Aedes.
 */

/** Aedes's message router (mqemitter: in memory, or Redis in a cluster), as Chorus uses it for live events. */
export interface MessageBus {
  emit(
    packet: { cmd: 'publish'; topic: string; payload: Buffer; qos: 0; retain: false },
    done: (err?: Error) => void,
  ): void;
  on(topic: string, listener: (packet: { topic: string; payload: Buffer }, done: () => void) => void): void;
}

/** What Aedes keeps per client that a QoS 1 delivery written by Chorus needs: its connection and next packet id. */
export interface DeliveryTarget {
  conn: Duplex;
  _nextId: number;
}

export interface AedesSeams {
  /** Aedes persistence and message router; in-memory when absent (one node), Redis-backed in a cluster. */
  persistence?: AedesOptions['persistence'];
  mq?: AedesOptions['mq'];
  /** Queued QoS 1 packets per offline session of the in-memory persistence. */
  maxOfflineQueue: number;
  /** The largest packet a client may send (advertised to MQTT 5 clients in CONNACK). */
  maxPacketBytes: number;
  /** The most an MQTT 5 Session Expiry Interval is granted, in seconds. */
  maxSessionExpirySeconds: number;
}

/** Topic aliases an MQTT 5 client may set up per connection [MQTT-3.2.2-17]: a group topic is sent once per alias. */
const TOPIC_ALIAS_MAXIMUM = 32;
/** Sessions waiting for their expiry at once: past this, a session that ends is dropped at once (aedes's bound). */
const MAX_PENDING_SESSIONS = 100_000;

export function createAedes(seams: AedesSeams): Promise<Aedes> {
  const { persistence, mq, maxOfflineQueue } = seams;
  return Aedes.createBroker({
    persistence: persistence ?? (new BoundedMemoryPersistence(maxOfflineQueue) as never),
    ...(mq ? { mq } : {}),
    connectTimeout: 10_000,
    maxClientsIdLength: 128,
    heartbeatInterval: 60_000,
    // No queue in the router: deliveries never wait for a socket (gatherOutput), so each emit finishes in its turn.
    // A bounded router queue only stalls every group behind one, and draining it recurses (qlobber stack overflow).
    concurrency: 0,
    // MQTT 5: Chorus delivers and takes QoS 1 at most [MQTT-3.2.2-9] (maximumQoS is the patch's: patches/).
    maximumQoS: 1,
    // A connect's queued packets and a SUBSCRIBE's retained messages read by async iteration instead of a stream
    // pipeline (iterateStores is the patch's): Aedes's pipeline cost each connect about 25 us with nothing to read.
    iterateStores: true,
    // Per connection, one timer's worth and the listeners of stream.finished less (both the patch's): one sweep a
    // second checks every client's keep alive, and a connection's 'end' or 'close' closes its client. Together about
    // 1 KB of each idle connection's heap (7.2 to 6.1 KB at 5,000 connections; docs/performance.md).
    keepaliveSweep: true,
    closeOnConnClose: true,
    maximumPacketSize: seams.maxPacketBytes,
    topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
    sessionExpiryIntervalLimit: seams.maxSessionExpirySeconds,
    pendingSessionsLimit: MAX_PENDING_SESSIONS,
  } as AedesOptions);
}

/** The connected client of this id on this node (Aedes's `clients` map). */
export function clientById(aedes: Aedes, clientId: string): Client | undefined {
  return (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[clientId];
}

/** Every client connected to this node, in connection order. */
export function clientsOf(aedes: Aedes): Client[] {
  return Object.values((aedes as unknown as { clients: Record<string, Client> }).clients);
}

export function messageBus(aedes: Aedes): MessageBus {
  return (aedes as unknown as { mq: MessageBus }).mq;
}

/** Stores subscriptions with a client's persistent session, as Aedes does for a SUBSCRIBE. */
export function storeSubscriptions(
  aedes: Aedes,
  client: Client,
  subscriptions: { topic: string; qos: 0 | 1 }[],
): Promise<void> {
  const { persistence } = aedes as unknown as {
    persistence: { addSubscriptions(c: Client, subs: { topic: string; qos: 0 | 1 }[]): Promise<void> };
  };
  return persistence.addSubscriptions(client, subscriptions);
}

/**
 * What Aedes keeps of a client's subscription: its granted QoS, its MQTT 5 Subscription Identifier if any, and the
 * listener it put in its router for it.
 */
export interface ClientSubscription {
  qos?: number;
  si?: number;
  func?: unknown;
}

/** The client's subscription to exactly this topic (Aedes keeps them by filter; Chorus topics have no wildcards). */
export function subscriptionOf(client: Client, topic: string): ClientSubscription | undefined {
  return (client as unknown as { subscriptions: Record<string, ClientSubscription | undefined> }).subscriptions[topic];
}

/**
 * Takes the client's subscription to `topic` out of Aedes's router, leaving it with the client (its QoS, its
 * UNSUBSCRIBE): what is published on the topic no longer reaches the client through Aedes. Aedes's own removal of it
 * later (an UNSUBSCRIBE, a re-SUBSCRIBE, the client's close) then finds nothing, as the router allows.
 */
export function unrouteSubscription(aedes: Aedes, client: Client, topic: string): void {
  const subscription = subscriptionOf(client, topic);
  if (subscription?.func) aedes.unsubscribe(topic, subscription.func as never, () => {});
}

/**
 * Whether an MQTT 5 client accepts a Reason String and User Properties on packets other than PUBLISH, CONNACK and
 * DISCONNECT (its CONNECT's Request Problem Information, absent meaning yes) [MQTT-3.1.2-29].
 */
export function wantsProblemInformation(client: Client): boolean {
  return (client as unknown as { _requestProblemInformation?: boolean })._requestProblemInformation !== false;
}

/** The Maximum Packet Size an MQTT 5 client asked for in its CONNECT (undefined: none, or an older version). */
export function maxPacketSizeOf(client: Client): number | undefined {
  return (client as unknown as { maximumPacketSize?: number }).maximumPacketSize;
}

/** Aedes's own QoS 0 delivery to one client: the forward check, then the write [MQTT-3.3.5-1]. */
export function deliver0(client: Client, packet: PublishPacket, done: () => void): void {
  (client as unknown as { deliver0(packet: PublishPacket, done: () => void): void }).deliver0(packet, done);
}

/**
 * Whether Aedes's parser of the client's packets stands between two packets: no part of one read and not yet parsed
 * (mqtt-packet's parser: its state at the fixed header, its buffer list empty, no error held).
 */
export function parserBetweenPackets(client: Client): boolean {
  const parser = (
    client as unknown as { _parser: { _stateCounter: number; _list: { length: number }; error: unknown } }
  )._parser;
  return parser._stateCounter === 0 && parser._list.length === 0 && !parser.error;
}

/**
 * Tells the client's keep alive that a packet arrived, as Aedes's handler does for each packet it handles: the sweep
 * (keepaliveSweep, the patch's) reads the second of the last one, a client's own timer is refreshed [MQTT-3.1.2-24].
 */
export function packetArrived(client: Client): void {
  const keepalive = client as unknown as {
    _keepaliveInterval: number;
    _keepaliveTimer: { refresh(): void } | null;
    _lastPacketSecond: number;
    broker: { _keepaliveSecond: number };
  };
  if (keepalive._keepaliveInterval <= 0) return;
  if (keepalive._keepaliveTimer === null) keepalive._lastPacketSecond = keepalive.broker._keepaliveSecond;
  else keepalive._keepaliveTimer.refresh();
}

/** The client's connection and packet-id counter; null when the connection is closed or closing (Aedes writes nothing then). */
export function writableTarget(client: Client): DeliveryTarget | null {
  const target = client as unknown as DeliveryTarget & { connecting: boolean; connected: boolean };
  return target.connecting || target.connected ? target : null;
}

/**
 * Stops Aedes from routing the packets it publishes on these topics (each a voided client publish or a `$SYS` notice
 * nobody follows): their publish completes at once.
 */
export function silenceTopics(aedes: Aedes, topics: Set<string>): void {
  const route = aedes.publish.bind(aedes) as (packet: PublishPacket, client: unknown, done: unknown) => void;
  aedes.publish = ((packet: PublishPacket, client: unknown, done?: (err?: Error) => void) => {
    if (!topics.has(packet.topic)) return route(packet, client, done);
    (typeof client === 'function' ? (client as () => void) : (done ?? (() => {})))();
  }) as typeof aedes.publish;
}

/**
 * Makes Aedes answer this CONNECT with CONNACK 0x01 (unacceptable protocol version) [MQTT-3.1.2-2]: called from
 * preConnect, it marks the packet's level as one Aedes serves none of, which Aedes checks right after preConnect.
 * (Aedes's authenticate hook can answer 2 to 5 only.)
 */
export function refuseProtocolLevel(packet: ConnectPacket): void {
  (packet as { protocolVersion: number }).protocolVersion = 0;
}
