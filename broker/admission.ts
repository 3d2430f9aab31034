import type { IncomingMessage, Server as HttpServer } from 'node:http';
import { createServer, Socket, type Server as TcpServer } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { addressKey, forwardedClient, type ProxyTrust, trustedProxies } from '../auth/client-address.js';
import { gatherOutput } from './connection-output.js';
import { readProxyHeader } from './proxy-header.js';

/** The longest a connection waits, unread, for a place among the unauthenticated ones (see admit). */
const WAITING_TIMEOUT_MS = 10_000;
/**
 * Under pressure (more than half of maxUnauthenticatedConnections taken), a connection that has not authenticated
 * this long after it was served is closed, instead of holding its place for Aedes's 10 s CONNECT deadline: a client
 * on a working network sends CONNECT at once, and its login takes milliseconds. Idle ones are shed, oldest first,
 * until the pool is half full.
 */
const PRESSED_CONNECT_DEADLINE_MS = 2000;
/** How long a trusted proxy's connection may take to send its PROXY header. */
const PROXY_HEADER_TIMEOUT_MS = 5000;
/** Connections the kernel may hold for accept() (capped by net.core.somaxconn). */
export const LISTEN_BACKLOG = 4096;
/**
 * Idle time after which the kernel probes an MQTT connection (TCP keepalive). A client may turn MQTT's keep alive off
 * (0, MQTT 3.1.1 §3.1.2.10), and then the broker never hears that it is gone: one that vanishes without a FIN (a phone
 * that leaves coverage) would hold its connection, and show its user online, until its token expires (up to
 * jwtMaxLifetimeSeconds, 7 days by default). The probes find it: this long after the last segment, then 10 probes
 * 1 s apart (libuv sets them with the idle time: `strace -e setsockopt` shows TCP_KEEPINTVL 1, TCP_KEEPCNT 10), so
 * about 70 s after the peer went.
 */
export const TCP_KEEPALIVE_IDLE_MS = 60_000;

export interface AdmissionLimits {
  maxUnauthenticatedConnections: number;
  maxWaitingConnections: number;
  maxUnauthenticatedPerAddress: number;
  /** 0: no limit. */
  maxConnectionsPerAddress: number;
  /**
   * Comma-separated addresses or CIDRs of load balancers that pass their clients' addresses: the PROXY protocol on the
   * MQTT port, X-Forwarded-For on WebSocket. Their connections count under the address they pass.
   */
  trustedProxies: string;
  maxPacketBytes: number;
  maxClientBufferBytes: number;
}

/** Why a connection was refused before it authenticated. */
export type RefusalReason = 'unauthenticated-limit' | 'address-limit';

/** Connections of one client address: open ones, and those not authenticated yet (served or waiting). */
interface AddressCount {
  /** The address (addressKey); null for the connections that have none, which are counted but never limited. */
  readonly key: string | null;
  /** The admission that counts them (and holds this count under its key until the last one closes). */
  readonly admission: Admission;
  open: number;
  readonly unauthenticated: Set<Duplex>;
}

/**
 * Each admitted connection's address count: one entry per connection, and no closure, since the one close listener
 * every connection has (connectionClosed) is shared by all of them. Kept after the close (the login's failure
 * throttle still asks for the address), and gone with the stream.
 */
const admitted = new WeakMap<Duplex, AddressCount>();

/**
 * The close listener of every admitted connection (a stream emits 'close' once): one function for all, `this` being
 * the stream, so that a connection holds no closure of its own for its life; and with Aedes's own listener its stream
 * has two listeners of 'close', which Node keeps in an array of two (a third grows it by sixteen slots).
 */
function connectionClosed(this: Duplex): void {
  const count = admitted.get(this);
  if (count) count.admission.closed(this, count);
}

/**
 * An error on a connection closes it, until the connection is handed to Aedes, which listens for errors itself. Shared
 * by every connection: `this` is the stream.
 */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

export interface AdmissionDeps {
  limits: AdmissionLimits;
  /** Hands an admitted connection to the MQTT protocol (Aedes's handle; `req` for WebSocket). */
  handle: (stream: Duplex, req?: IncomingMessage) => void;
  /** A connection was refused before authenticating: too many unauthenticated ones, in all or from its address. */
  onRefused: (reason: RefusalReason) => void;
  /** A connection whose unsent output passed maxClientBufferBytes was closed. */
  onSlowConsumerCut: () => void;
  logger: Logger;
}

/**
 * Every connection, TCP or WebSocket, before the MQTT protocol sees it: the listeners, the bound on connections that
 * have not authenticated yet, the packet-size watch and the bound on unsent output.
 */
export class Admission {
  /** Connections served and not yet authenticated, each with its deadline (see serve). */
  private readonly unauthenticated = new Map<Duplex, NodeJS.Timeout>();
  /** Connections waiting for a place among the unauthenticated ones, oldest first, each with what lets it in. */
  private readonly waiting = new Map<Duplex, () => void>();
  /** Per client address (an IPv6 /64): bounded by the open connections, each of which has one. */
  private readonly addresses = new Map<string, AddressCount>();
  /** The connections without a client address. */
  private readonly unaddressed: AddressCount = {
    key: null,
    admission: this,
    open: 0,
    unauthenticated: new Set(),
  };
  private readonly trust: ProxyTrust;
  private tcpServer: TcpServer | null = null;
  private wsServer: WebSocketServer | null = null;
  private closing = false;

  constructor(private readonly deps: AdmissionDeps) {
    this.trust = trustedProxies(deps.limits.trustedProxies);
  }

  /** Connections waiting for a place among the unauthenticated ones. */
  get waitingConnections(): number {
    return this.waiting.size;
  }

  /** The client address of an admitted connection, as its limits count it (addressKey; 'unknown' when there is none). */
  addressOf(stream: Duplex): string {
    return admitted.get(stream)?.key ?? 'unknown';
  }

  /** The connection authenticated: it no longer counts as unauthenticated, in all or at its address. */
  authenticated(stream: Duplex): void {
    admitted.get(stream)?.unauthenticated.delete(stream);
    const deadline = this.unauthenticated.get(stream);
    if (deadline === undefined) return;
    clearTimeout(deadline);
    this.unauthenticated.delete(stream);
    this.admitWaiting();
  }

  /** An admitted connection closed (connectionClosed, its shared close listener): its places are free. */
  closed(stream: Duplex, count: AddressCount): void {
    this.authenticated(stream); // or gone: either way
    count.open -= 1;
    if (count.open === 0 && count.key !== null) this.addresses.delete(count.key);
  }

  /** Serves MQTT over TCP. Resolves with the bound port. */
  async listenTcp(host: string, port: number): Promise<number> {
    // No Nagle: PUBACKs and deliveries are small packets, and with Nagle each connection's next write waits for the
    // client to acknowledge the last one (Node's HTTP server, and so the WebSocket path, already sets TCP_NODELAY).
    // Probed when idle, too (TCP_KEEPALIVE_IDLE_MS).
    const options = { noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_IDLE_MS };
    const server = createServer(options, (socket) => {
      socket.on('error', destroyOnError);
      if (!this.isTrustedProxy(socket.remoteAddress))
        return this.admit(socket, socket.remoteAddress, () => this.deps.handle(socket));
      readProxyHeader(socket, PROXY_HEADER_TIMEOUT_MS).then(
        (address) => this.admit(socket, address, () => this.deps.handle(socket)),
        (err: Error) => {
          this.deps.logger.warn(
            { remote: socket.remoteAddress, err: err.message },
            'no valid PROXY header from a trusted proxy: closing',
          );
          socket.destroy();
        },
      );
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
    const wss = new WebSocketServer({ noServer: true, maxPayload: this.deps.limits.maxPacketBytes });
    this.wsServer = wss;
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== path) {
        socket.destroy();
        return;
      }
      if (socket instanceof Socket) socket.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
      wss.handleUpgrade(req, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        stream.on('error', destroyOnError);
        // maxPayload bounds one WebSocket message; an MQTT packet may span many, so its header is watched as on TCP.
        this.admit(stream, this.webSocketClient(req), () => this.deps.handle(stream, req));
      });
    });
  }

  /** Stops listening and drops the connections still waiting; resolves once the TCP listener is closed. */
  close(): Promise<void> {
    this.closing = true;
    const listenersClosed = new Promise<void>((resolve) =>
      this.tcpServer ? this.tcpServer.close(() => resolve()) : resolve(),
    );
    for (const stream of this.waiting.keys()) stream.destroy();
    for (const client of this.wsServer?.clients ?? []) client.terminate();
    this.wsServer?.close();
    return listenersClosed;
  }

  /**
   * At most maxUnauthenticatedConnections are served before they authenticate; those beyond wait, unread, in arrival
   * order, for a place (a reconnect storm is served as fast as logins complete instead of being refused), up to
   * maxWaitingConnections of them for at most WAITING_TIMEOUT_MS; beyond that a connection is closed at once.
   */
  private admit(stream: Duplex, remote: string | undefined, handle: () => void): void {
    const { limits, logger } = this.deps;
    if (!this.countAddress(stream, addressKey(remote))) {
      this.deps.onRefused('address-limit');
      logger.warn({ remote }, 'too many connections from this address: refusing');
      stream.destroy();
      return;
    }
    if (this.unauthenticated.size < limits.maxUnauthenticatedConnections && this.waiting.size === 0)
      return this.serve(stream, remote, handle);
    if (this.waiting.size >= limits.maxWaitingConnections || this.closing) {
      this.deps.onRefused('unauthenticated-limit');
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

  /**
   * Counts a new connection against its client address; false when the address is over maxUnauthenticatedPerAddress
   * or maxConnectionsPerAddress (one address cannot take the whole pre-login pool, so others still get in).
   */
  private countAddress(stream: Duplex, key: string | null): boolean {
    const { maxUnauthenticatedPerAddress, maxConnectionsPerAddress } = this.deps.limits;
    let count = this.unaddressed;
    if (key !== null) {
      count = this.addresses.get(key) ?? {
        key,
        admission: this,
        open: 0,
        unauthenticated: new Set<Duplex>(),
      };
      if (
        count.unauthenticated.size >= maxUnauthenticatedPerAddress ||
        (maxConnectionsPerAddress > 0 && count.open >= maxConnectionsPerAddress)
      )
        return false;
      this.addresses.set(key, count);
    }
    count.open += 1;
    count.unauthenticated.add(stream);
    admitted.set(stream, count);
    stream.on('close', connectionClosed);
    return true;
  }

  /** The client of a WebSocket upgrade: what a trusted proxy names in X-Forwarded-For, else the peer. */
  private webSocketClient(req: IncomingMessage): string | undefined {
    return req.socket.remoteAddress === undefined ? undefined : forwardedClient(req, this.trust);
  }

  private isTrustedProxy(remote: string | undefined): boolean {
    return remote !== undefined && this.trust(remote, 0);
  }

  /** Lets waiting connections in while there is room among the unauthenticated ones. */
  private admitWaiting(): void {
    while (this.waiting.size > 0 && this.unauthenticated.size < this.deps.limits.maxUnauthenticatedConnections) {
      this.waiting.values().next().value!(); // the oldest: a Map keeps arrival order
    }
  }

  /**
   * Hands a connection to the protocol: it counts as unauthenticated until it authenticates or closes, and is cut off
   * when its unsent output passes maxClientBufferBytes. (A packet over maxPacketBytes is Aedes's to refuse, as soon as
   * its header is read: its maximumPacketSize, which closes with DISCONNECT 0x95 for MQTT 5.)
   */
  private serve(stream: Duplex, remote: string | undefined, handle: () => void): void {
    const { limits, logger } = this.deps;
    const deadline = setTimeout(() => {
      if (this.unauthenticated.has(stream) && this.unauthenticated.size > limits.maxUnauthenticatedConnections / 2) {
        logger.debug({ remote }, 'no login within the deadline while many wait: closing');
        // Its place is free now, not when its close lands: the next deadline sees the pool as it is.
        this.authenticated(stream);
        stream.destroy();
      }
    }, PRESSED_CONNECT_DEADLINE_MS);
    deadline.unref();
    this.unauthenticated.set(stream, deadline);
    // Each turn's writes go out as one, and a connection whose unsent output passes the bound is cut off.
    gatherOutput(stream, limits.maxClientBufferBytes, this.slowConsumerCut);
    // Aedes listens for the stream's errors from here on: the stream keeps only its listeners, as a bare Aedes one does.
    stream.off('error', destroyOnError);
    handle();
  }

  /**
   * A connection cut off as a slow consumer: counted and logged. One function for every connection, so that none holds
   * a closure of its own for its whole life; the address is the one its limits count (an IPv6 client's /64).
   */
  private readonly slowConsumerCut = (stream: Duplex, buffered: number): void => {
    this.deps.onSlowConsumerCut();
    this.deps.logger.warn(
      { address: this.addressOf(stream), clientId: (stream as { client?: { id: string } }).client?.id, buffered },
      'client not reading: closing (slow consumer)',
    );
  };
}
