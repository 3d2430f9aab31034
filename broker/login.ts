import type { Duplex } from 'node:stream';
import type { Aedes, AuthenticateError, Client, ConnectPacket } from 'aedes';
import type { Logger } from 'pino';
import type { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import type { TokenVerifier, VerifiedToken } from '../auth/token-verifier.js';
import { clientById, refuseProtocolLevel } from './aedes.js';
import { ReasonCode } from './reason-codes.js';
import type { LiveEvents } from './live-events.js';
import type { LiveUsers } from './live-users.js';
import type { Presence } from './presence.js';
import { TokenExpiries } from './token-expiries.js';

/** Logins refused because the group store failed are logged at most this often (an outage refuses thousands). */
const LOGIN_FAILURE_LOG_MS = 10_000;

export interface LoginDeps {
  aedes: Aedes;
  live: LiveUsers;
  events: LiveEvents;
  verifier: TokenVerifier;
  /** Failed logins per client address, shared with the REST API. */
  authThrottle: FailedAuthThrottle;
  presence: Presence;
  /** The user's group ids, for the live ACL. */
  groupIdsOf: (userId: string) => Promise<string[]>;
  /** The client address of a connection as the limits count it (a trusted proxy's client's, or the peer's). */
  addressOf: (conn: Duplex) => string;
  /** The connection authenticated (it no longer counts as unauthenticated). */
  onAuthenticated: (conn: Duplex) => void;
  /** A failed login was refused as "retry later" because its address failed too often. */
  onThrottled: () => void;
  maxConnections: number;
  logger: Logger;
}

/**
 * A refused login: its CONNACK return code for MQTT 3.1.1 (table 3.1, [MQTT-3.2.2-5]) and reason code for MQTT 5
 * (table 3-1; sent by the patched Aedes, patches/).
 */
const authError = (message: string, returnCode: 2 | 3 | 4 | 5, reasonCode: number): AuthenticateError =>
  Object.assign(new Error(message), { returnCode, reasonCode }) as AuthenticateError;

/**
 * A connection's life as a user's: CONNECT checked (the JWT in the password, the client id), the user's groups loaded
 * into the live ACL, presence told, the connection closed when its token expires; and on disconnect, the reverse.
 */
export class Logins {
  /** MQTT 5: DISCONNECT 0x87 (not authorized): the session's authorization ended (a 3.1.1 client is just closed). */
  private readonly expiries = new TokenExpiries<Client>((client) =>
    client.disconnect({ reasonCode: ReasonCode.NOT_AUTHORIZED }),
  );
  /** Clients that sent an empty client id with CleanSession 0, refused when they authenticate ([MQTT-3.1.3-8]). */
  private readonly anonymousPersistent = new WeakSet<Client>();
  /**
   * Each client's CONNECT, from preConnect until its login settles. mqtt-packet's parser keeps the packet for the
   * connection's life (for its protocol version): the password, the token, is dropped from it once checked, so that
   * no token outlives its check in memory, nor the read buffer it is a view of (0.4 KB per connection).
   */
  private readonly connects = new WeakMap<Client, ConnectPacket>();
  private loginStoreFailures = 0;
  private loginStoreFailureLoggedAt = 0;
  /** Set by close(): disconnects from then on are the node's own. */
  private closing = false;

  constructor(private readonly deps: LoginDeps) {}

  /** Aedes's preConnect: Aedes gives an empty client id a generated one whatever CleanSession says. */
  readonly preConnect = (
    client: Client,
    packet: ConnectPacket,
    done: (err: Error | null, ok: boolean) => void,
  ): void => {
    if (packet.clientId === '' && !packet.clean) this.anonymousPersistent.add(client);
    this.connects.set(client, packet);
    // [MQTT-3.1.2-2]: "MQTT" is level 4 (3.1.1) or 5, "MQIsdp" level 3 (3.1); another pairing is a level not served.
    const version = packet.protocolVersion as number;
    if ((packet.protocolId === 'MQTT') !== (version === 4 || version === 5)) refuseProtocolLevel(packet);
    done(null, true);
  };

  /** Aedes's authenticate. */
  readonly authenticate = (
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (err: AuthenticateError | null, ok: boolean) => void,
  ): void => {
    this.login(client, username, password)
      .finally(() => this.forgetToken(client))
      .then(
        () => done(null, true),
        (err: AuthenticateError) => done(err, false),
      );
  };

  private forgetToken(client: Client): void {
    const packet = this.connects.get(client);
    if (packet) packet.password = undefined;
    this.connects.delete(client);
  }

  /** The client disconnected (for any reason). */
  disconnected(client: Client): void {
    this.expiries.remove(client);
    const userId = this.deps.live.userOf(client);
    if (userId === undefined) return;
    const groupIds = this.deps.live.groupsOf(userId); // read before the last client takes the set away
    this.deps.live.detach(client);
    // A node shutting down closes every client at once: presence leaves with the node (Presence.close), and the
    // clients are back on another node within seconds, so nobody is told they went offline meanwhile.
    if (this.closing) return;
    void this.presenceChanged(userId, groupIds, () => this.deps.presence.disconnected(userId), false);
  }

  close(): void {
    this.closing = true;
    this.expiries.stop();
  }

  private async login(client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
    const { aedes, live, authThrottle } = this.deps;
    // Over the cap, CONNACK 3 "server unavailable" tells the client to come back later ([MQTT-3.2.2-6] table 3.1).
    if (aedes.connectedClients >= this.deps.maxConnections)
      throw authError('too many connections', 3, ReasonCode.SERVER_BUSY);
    // [MQTT-3.1.3-8]: an empty client id with CleanSession 0 gets CONNACK 0x02 (identifier rejected).
    if (this.anonymousPersistent.has(client))
      throw authError('a persistent session needs a client id', 2, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID);
    let verified: VerifiedToken;
    try {
      if (!username || !password) throw new Error('username (user id) and password (token) are required');
      verified = await this.deps.verifier.verify(password.toString('utf8'), { remember: false }).catch(() => {
        throw new Error('invalid token');
      });
      if (verified.userId !== username) throw new Error('token does not belong to this user id');
    } catch (err) {
      // Only failures are throttled: a valid token gets in whatever else came from its address.
      if (await authThrottle.failure(this.deps.addressOf(client.conn as Duplex))) {
        this.deps.onThrottled();
        throw authError('too many failed logins from this address; retry later', 3, ReasonCode.SERVER_BUSY);
      }
      throw authError((err as Error).message, 4, ReasonCode.BAD_USER_NAME_OR_PASSWORD);
    }
    // A client id is a session: another user must not take it over ([MQTT-3.1.4-2] would close the holder).
    const holder = clientById(aedes, client.id);
    const holderUser = holder ? live.userOf(holder) : undefined;
    if (holderUser !== undefined && holderUser !== verified.userId)
      throw authError('client id in use', 2, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID);
    const userId = verified.userId;
    try {
      await live.attach(client, userId, () => this.deps.groupIdsOf(userId));
    } catch (err) {
      // The store could not say which groups are the user's (down, or too busy to answer in time): "server unavailable",
      // so that the client comes back later, never "not authorized" ([MQTT-3.2.2-6] table 3.1).
      this.noteLoginStoreFailure(err as Error);
      throw authError('the group store is unavailable; retry later', 3, ReasonCode.SERVER_UNAVAILABLE);
    }
    this.deps.onAuthenticated(client.conn as Duplex);
    void this.presenceChanged(userId, live.groupsOf(userId), () => this.deps.presence.connected(userId), true);
    if (verified.expiresAt !== undefined) this.expiries.add(client, verified.expiresAt);
  }

  /** Logs logins refused because the store failed, at most once per LOGIN_FAILURE_LOG_MS with how many there were. */
  private noteLoginStoreFailure(err: Error): void {
    this.loginStoreFailures += 1;
    const now = Date.now();
    if (now - this.loginStoreFailureLoggedAt < LOGIN_FAILURE_LOG_MS) return;
    this.deps.logger.warn(
      { refused: this.loginStoreFailures, err: err.message },
      "logins refused (CONNACK 3): the user's groups could not be read",
    );
    this.loginStoreFailures = 0;
    this.loginStoreFailureLoggedAt = now;
  }

  private async presenceChanged(
    userId: string,
    groupIds: string[],
    update: () => Promise<boolean>,
    online: boolean,
  ): Promise<void> {
    try {
      if (await update()) this.deps.events.announcePresence(userId, groupIds, online);
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message, userId }, 'presence update failed');
    }
  }
}
