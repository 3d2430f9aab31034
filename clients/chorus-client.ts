import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { v7 as uuidv7 } from 'uuid';
import {
  errorCatalog,
  eventsTopic,
  readTopic,
  typingTopic,
  groupTopic,
  parseTopic,
  isEventType,
  type Attachment,
  type SendPayload,
  type StampedMessage,
  type UserEvent,
} from '../protocol/index.js';
import { ChorusApi, ChorusApiError, type SendReceipt } from './chorus-api.js';
import { GroupStream } from './group-stream.js';
import { applyEvent } from './message-state.js';
import { MemoryPositionStore, type PositionStore } from './position-store.js';

export interface ChorusClientOptions {
  /** mqtt://host:1883, or ws://host:8080/mqtt in a browser; several (one per node) to fail over between them. */
  mqttUrl: string | string[];
  /** http://host:8080 */
  apiUrl: string;
  userId: string;
  token: string;
  /** Where the last delivered seq of each group is kept; defaults to memory. */
  positions?: PositionStore;
  /** Defaults to `${userId}-<random>`, fixed for this client's lifetime. */
  clientId?: string;
  /** How long a send waits for its acknowledgement over MQTT before it is retried over REST. Default 10 s. */
  sendTimeoutMs?: number;
  /** Join every group this user is added to while connected. Default true. */
  autoJoin?: boolean;
  /**
   * MQTT 5 (default): a send learns its seq, or why it was refused, from its PUBACK. 4 (MQTT 3.1.1): from the ack and
   * rejected events on the user's events topic.
   */
  protocolVersion?: 4 | 5;
  /** Extra MQTT.js options (reconnectPeriod, keepalive, ...). */
  mqttOptions?: Partial<IClientOptions>;
}

export interface OutgoingMessage {
  /** The text; a message needs a body, attachments, or both. */
  body?: string;
  type?: string;
  replyToSeq?: number;
  mentions?: string[];
  /** @everyone (admins only, unless the server allows every member). */
  mentionEveryone?: boolean;
  /** Files the app stored itself (https URLs; see the README on uploads). */
  attachments?: Attachment[];
  /** Give one to make a send idempotent across process restarts; otherwise a UUID is generated. */
  clientMsgId?: string;
}

interface Listeners {
  message: (message: StampedMessage) => void;
  /**
   * Messages from..through of a group expired (the server's or the group's retention) before this client could
   * deliver them: they will never come, and the stream goes on with the next one kept.
   */
  expired: (range: { groupId: string; from: number; through: number }) => void;
  event: (event: UserEvent) => void;
  error: (err: Error) => void;
  connect: () => void;
  offline: () => void;
  /** A fellow member is typing in a group (at most one every 2 s per member; groups up to liveEventsMaxGroupMembers). */
  typing: (typing: { groupId: string; userId: string }) => void;
  /** A fellow member's read pointer moved (groups up to liveEventsMaxGroupMembers): they have read up to `seq`. */
  read: (receipt: { groupId: string; userId: string; seq: number }) => void;
  /** A member's delivered watermark moved: `seq` reached one of their devices (groups up to liveEventsMaxGroupMembers). */
  delivered: (receipt: { groupId: string; userId: string; seq: number }) => void;
  /**
   * A message this client delivered recently (the last RECENT_PER_GROUP of each group) was edited, deleted or reacted
   * to: here it is as it stands now. The event itself is delivered as a message too, in seq order.
   */
  update: (message: StampedMessage, event: StampedMessage) => void;
}

/** Messages remembered per group so that edits, deletes and reactions can be applied to them (update events). */
const RECENT_PER_GROUP = 1000;

interface PendingSend {
  /** groupId + clientMsgId: the send's identity in `pending`. */
  key: string;
  groupId: string;
  payload: SendPayload;
  promise: Promise<SendReceipt>;
  resolve: (receipt: SendReceipt) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout> | null;
  attempts: number;
}

const pendingKey = (groupId: string, clientMsgId: string): string => `${groupId}\n${clientMsgId}`;

/** Codes after which the same send, or read, may succeed later. */
const RETRYABLE = new Set(['OVERLOADED', 'STORE_UNAVAILABLE', 'UNAVAILABLE', 'INTERNAL', 'RATE_LIMITED']);
/** The wait before the next try after `failures` failed ones: 0.5 s, doubling, at most 30 s. */
const backoffMs = (failures: number): number => Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
/**
 * How long a failed read of a group's history waits before it is tried again: what the server's Retry-After says, or
 * backoffMs; never for a refusal that lasts (not a member any more, say). A read that never reached the API (fetch's
 * own error) is tried again too.
 */
const historyRetryDelayMs = (err: unknown, failures: number): number | undefined => {
  if (err instanceof ChorusApiError && !RETRYABLE.has(err.code)) return undefined;
  if (err instanceof ChorusApiError && err.retryAfterMs !== undefined) return err.retryAfterMs;
  return backoffMs(failures);
};
const TYPING_INTERVAL_MS = 2000;
/** A send refused over MQTT, as the same refusal over REST would be thrown (its status from the error catalogue). */
const refusal = (code: string, message: string): ChorusApiError =>
  new ChorusApiError(
    (errorCatalog as Record<string, { status: number } | undefined>)[code]?.status ?? 400,
    code,
    message,
  );

/** PUBACK user properties kept until their publish callback reads them (it runs right after: a bound, not a cache). */
const MAX_PUBACKS_UNREAD = 1000;
/**
 * CONNACK refusals that pass, after which the client connects again: 3.1.1 "server unavailable" (3); MQTT 5 server
 * unavailable (0x88), server busy (0x89), quota exceeded (0x97), connection rate exceeded (0x9F).
 */
const PASSING_REFUSALS: Record<4 | 5, Set<number>> = { 4: new Set([3]), 5: new Set([0x88, 0x89, 0x97, 0x9f]) };
/** How long after its PUBACK a send waits for its ack event before it asks for its seq over REST. */
const ACK_AFTER_PUBACK_MS = 2000;

/**
 * The Chorus SDK for Node and browsers. Each joined group is a stream delivered strictly in seq order, without gaps or
 * duplicates: gaps and out-of-order arrivals are filled from the history API, and after a reconnect the stream resumes
 * from the last delivered seq (kept in the PositionStore). send() is idempotent: its clientMsgId is fixed before the
 * first attempt, so retries (MQTT's own, and the REST fallback) can never make a second message.
 */
export class ChorusClient {
  readonly api: ChorusApi;
  readonly userId: string;
  private readonly mqtt: MqttClient;
  private readonly positions: PositionStore;
  private readonly streams = new Map<string, GroupStream>();
  private readonly pending = new Map<string, PendingSend>();
  /** User properties of MQTT 5 PUBACKs, by packet identifier, until their publish callback runs. */
  private readonly pubackProperties = new Map<number, Record<string, string>>();
  private readonly listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    message: new Set(),
    expired: new Set(),
    event: new Set(),
    error: new Set(),
    connect: new Set(),
    offline: new Set(),
    typing: new Set(),
    read: new Set(),
    delivered: new Set(),
    update: new Set(),
  };
  /** Per group, the newest delivered messages (oldest first) with who reacted to each with what, as seen live. */
  private readonly recent = new Map<string, Map<number, { message: StampedMessage; reactors: Set<string> }>>();
  /** When this client last said it was typing in each group: the server relays one every 2 s, so no more are sent. */
  private readonly typedAt = new Map<string, number>();
  private closed = false;

  private constructor(private readonly options: ChorusClientOptions) {
    this.userId = options.userId;
    this.api = new ChorusApi(options.apiUrl, options.token);
    this.positions = options.positions ?? new MemoryPositionStore();
    const urls = Array.isArray(options.mqttUrl) ? options.mqttUrl : [options.mqttUrl];
    // With several nodes, MQTT.js moves to the next one on each reconnect.
    const servers = urls.map((u) => {
      const url = new URL(u);
      return { host: url.hostname, port: Number(url.port), protocol: url.protocol.replace(':', '') as 'mqtt' };
    });
    this.mqtt = mqtt.connect(urls[0]!, {
      ...(urls.length > 1 ? { servers } : {}),
      protocolVersion: options.protocolVersion ?? 5,
      clean: true,
      clientId: options.clientId ?? `${options.userId}-${crypto.randomUUID().slice(0, 12)}`,
      username: options.userId,
      password: options.token,
      reconnectPeriod: 1000,
      // A refusal that passes (the server's store away, a login throttle) is tried again like a lost connection;
      // a final one (a bad token) ends the client: see the 'error' listener.
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
      keepalive: 30,
      // Subscriptions are renewed by onConnect, which must finish before catching up (see there).
      resubscribe: false,
      ...options.mqttOptions,
    });
    this.mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
    // An MQTT 5 PUBACK's user properties (a stored send's seq) are read here: MQTT.js hands the publish callback the
    // packet it sent, not the PUBACK, which arrives just before (see sendPayload).
    this.mqtt.on('packetreceive', (packet) => {
      if (packet.cmd !== 'puback' || packet.messageId === undefined) return;
      const properties = packet.properties?.userProperties as Record<string, string> | undefined;
      if (properties?.seq === undefined) return;
      this.pubackProperties.set(packet.messageId, properties);
      if (this.pubackProperties.size > MAX_PUBACKS_UNREAD)
        this.pubackProperties.delete(this.pubackProperties.keys().next().value!);
    });
    this.mqtt.on('connect', () => void this.onConnect());
    this.mqtt.on('offline', () => this.emit('offline'));
    this.mqtt.on('error', (err) => {
      const code = (err as { code?: number }).code;
      const passing = PASSING_REFUSALS[this.mqtt.options.protocolVersion === 5 ? 5 : 4];
      // Ended before MQTT.js schedules its reconnect (it does so after the listeners ran).
      if (err.message.startsWith('Connection refused') && !passing.has(code ?? -1)) this.mqtt.end(true);
      this.emit('error', err);
    });
  }

  /** Connects and resolves once the first connection is up and the events topic subscribed. */
  static async connect(options: ChorusClientOptions): Promise<ChorusClient> {
    const client = new ChorusClient(options);
    await new Promise<void>((resolve, reject) => {
      // Only the first connection's outcome settles connect(); later errors (a node going away) are the reconnect's.
      const settle = () => {
        client.off('connect', onConnect);
        client.off('error', onError);
      };
      const onConnect = () => {
        settle();
        resolve();
      };
      const onError = (err: Error) => {
        settle();
        void client.close();
        reject(err);
      };
      client.on('connect', onConnect);
      client.on('error', onError);
    });
    return client;
  }

  on<K extends keyof Listeners>(event: K, listener: Listeners[K]): this {
    this.listeners[event].add(listener);
    return this;
  }

  off<K extends keyof Listeners>(event: K, listener: Listeners[K]): this {
    this.listeners[event].delete(listener);
    return this;
  }

  private emit<K extends keyof Listeners>(event: K, ...args: Parameters<Listeners[K]>): void {
    for (const listener of [...this.listeners[event]]) (listener as (...a: unknown[]) => void)(...args);
  }

  /** Updates the token used for reconnects and REST calls (before the current one expires). */
  setToken(token: string): void {
    this.mqtt.options.password = token;
    this.api.setToken(token);
  }

  /** Groups whose stream this client delivers. */
  get joined(): string[] {
    return [...this.streams.keys()];
  }

  /** The last seq delivered for the group, or undefined when it is not joined. */
  position(groupId: string): number | undefined {
    return this.streams.get(groupId)?.lastDelivered;
  }

  /**
   * Starts delivering a group's messages. They start after `from` when given, else after the stored position, else
   * after the group's last seq at the time of joining (only new messages). Resolves once caught up to the present.
   */
  async join(groupId: string, options: { from?: number } = {}): Promise<void> {
    if (this.streams.has(groupId)) return;
    const from = options.from ?? (await this.positions.load(groupId)) ?? (await this.api.getGroup(groupId)).lastSeq;
    if (this.streams.has(groupId)) return;
    const stream = new GroupStream(
      groupId,
      from,
      (afterSeq, limit) => this.api.messagesAfter(groupId, afterSeq, limit),
      (message) => this.deliver(message),
      (err) => this.emit('error', err instanceof Error ? err : new Error(String(err))),
      (from, through) => {
        this.positions.save(groupId, through).catch((err: Error) => this.emit('error', err));
        this.emit('expired', { groupId, from, through });
      },
      historyRetryDelayMs,
    );
    this.streams.set(groupId, stream);
    try {
      await this.subscribe([groupTopic(groupId)]);
    } catch (err) {
      this.dropStream(groupId);
      throw err;
    }
    await stream.catchUp();
  }

  /** Stops delivering a group's messages (membership is unchanged: see api.removeMember to leave the group). */
  async unjoin(groupId: string): Promise<void> {
    if (!this.dropStream(groupId)) return;
    if (this.mqtt.connected) await this.mqtt.unsubscribeAsync(groupTopic(groupId));
  }

  /**
   * Moves this user's read pointer forward to `seq` (never back); the group's other members get a read receipt.
   * Over the MQTT connection when it is up (resolves on its PUBACK: the pointer is stored), else over REST. For the
   * resulting unread count, see `api.markRead`.
   */
  async markRead(groupId: string, seq: number): Promise<void> {
    if (this.mqtt.connected) await this.mqtt.publishAsync(readTopic(groupId), JSON.stringify({ seq }), { qos: 1 });
    else await this.api.markRead(groupId, seq);
  }

  /** Tells the group's other connected members that this user is typing (QoS 0, never stored; call it on keystrokes). */
  typing(groupId: string): void {
    const now = Date.now();
    if (now - (this.typedAt.get(groupId) ?? 0) < TYPING_INTERVAL_MS || !this.mqtt.connected) return;
    this.typedAt.set(groupId, now);
    this.mqtt.publish(typingTopic(groupId), '', { qos: 0 });
  }

  /**
   * Sends a message. Resolves with its seq once it is durable; a retry of the same clientMsgId resolves the same.
   * Without one given, the clientMsgId is a UUIDv7: ids that grow with time let the sequencer skip its dedup lookup.
   */
  send(groupId: string, message: OutgoingMessage): Promise<SendReceipt> {
    const payload: SendPayload = { clientMsgId: message.clientMsgId ?? uuidv7() };
    if (message.body !== undefined) payload.body = message.body;
    if (message.type !== undefined) payload.type = message.type;
    if (message.replyToSeq !== undefined) payload.replyToSeq = message.replyToSeq;
    if (message.mentions !== undefined) payload.mentions = message.mentions;
    if (message.mentionEveryone) payload.mentionEveryone = true;
    if (message.attachments !== undefined) payload.attachments = message.attachments;
    return this.sendPayload(groupId, payload);
  }

  /** Replaces the body of a message of this user's (a sequenced edit event; members see `update`). */
  edit(groupId: string, seq: number, body: string, clientMsgId: string = uuidv7()): Promise<SendReceipt> {
    return this.sendPayload(groupId, { clientMsgId, type: 'edit', targetSeq: seq, body });
  }

  /** Deletes a message of this user's (or anyone's, for an admin): its body is erased from the store. */
  deleteMessage(groupId: string, seq: number, clientMsgId: string = uuidv7()): Promise<SendReceipt> {
    return this.sendPayload(groupId, { clientMsgId, type: 'delete', targetSeq: seq });
  }

  /** Adds this user's emoji to a message, or (remove) takes it back. */
  react(
    groupId: string,
    seq: number,
    emoji: string,
    options: { remove?: boolean; clientMsgId?: string } = {},
  ): Promise<SendReceipt> {
    const payload: SendPayload = {
      clientMsgId: options.clientMsgId ?? uuidv7(),
      type: 'reaction',
      targetSeq: seq,
      emoji,
    };
    if (options.remove) payload.remove = true;
    return this.sendPayload(groupId, payload);
  }

  private sendPayload(groupId: string, payload: SendPayload): Promise<SendReceipt> {
    const key = pendingKey(groupId, payload.clientMsgId);
    const existing = this.pending.get(key);
    if (existing) return existing.promise;

    let resolve!: (receipt: SendReceipt) => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<SendReceipt>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const send: PendingSend = { key, groupId, payload, promise, resolve, reject, timer: null, attempts: 0 };
    this.pending.set(key, send);
    // MQTT.js keeps an unacknowledged QoS 1 publish and sends it again after a reconnect, with the same payload. Once
    // it is acknowledged the message is durable and its ack event follows at once; if that event was lost (the node
    // died between the two), the seq is asked for over REST with the same clientMsgId, which answers the original.
    this.mqtt.publish(groupTopic(groupId), JSON.stringify(payload), { qos: 1 }, (err, packet) => {
      if (!this.pending.has(key)) return;
      if (err) return this.refusedInPuback(send, err, packet);
      const stored = packet?.messageId === undefined ? undefined : this.pubackProperties.get(packet.messageId);
      if (stored) {
        this.pubackProperties.delete(packet!.messageId!);
        return this.settle(send, {
          seq: Number(stored.seq),
          createdAt: stored.createdAt!,
          clientMsgId: payload.clientMsgId,
          duplicate: stored.duplicate === 'true',
        });
      }
      this.retryLater(send, ACK_AFTER_PUBACK_MS); // MQTT 3.1.1: the ack event follows
    });
    this.retryLater(send, this.options.sendTimeoutMs ?? 10_000);
    return promise;
  }

  /** An MQTT 5 PUBACK with a failure reason code: the Chorus code is its user property `code`. */
  private refusedInPuback(send: PendingSend, err: Error & { code?: unknown }, puback: unknown): void {
    const properties = (puback as { properties?: { userProperties?: Record<string, string>; reasonString?: string } })
      ?.properties;
    const code = properties?.userProperties?.code;
    if (typeof err.code !== 'number' || code === undefined) return this.retryLater(send, 500);
    if (RETRYABLE.has(code)) return this.retryLater(send, 500);
    this.fail(send, refusal(code, properties?.reasonString ?? err.message));
  }

  private retryLater(send: PendingSend, delayMs: number): void {
    if (send.timer) clearTimeout(send.timer);
    send.timer = setTimeout(() => void this.sendOverRest(send), delayMs);
  }

  private async sendOverRest(send: PendingSend): Promise<void> {
    send.timer = null;
    send.attempts += 1;
    try {
      this.settle(send, await this.api.send(send.groupId, send.payload));
    } catch (err) {
      const retryable = !(err instanceof ChorusApiError) || RETRYABLE.has(err.code);
      if (!retryable) return this.fail(send, err as Error);
      if (!this.closed && this.pending.has(send.key)) {
        this.retryLater(send, backoffMs(send.attempts));
      }
    }
  }

  private settle(send: PendingSend, receipt: SendReceipt): void {
    if (!this.pending.delete(send.key)) return;
    if (send.timer) clearTimeout(send.timer);
    send.resolve(receipt);
  }

  private fail(send: PendingSend, err: Error): void {
    if (!this.pending.delete(send.key)) return;
    if (send.timer) clearTimeout(send.timer);
    send.reject(err);
  }

  private async subscribe(topics: string[]): Promise<void> {
    try {
      await this.mqtt.subscribeAsync(topics, { qos: 1 });
    } catch (err) {
      // MQTT.js rejects when any return code is 0x80, the broker's refusal [MQTT-3.9.3-2].
      const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
      if (!granted) throw err;
      const refused = topics.filter((_, i) => granted[i] === 0x80);
      throw new ChorusApiError(403, 'NOT_A_MEMBER', `subscription refused: ${refused.join(', ')}`);
    }
  }

  /**
   * On every (re)connect: subscribe first, then catch up from each stream's position. In this order nothing falls
   * between the history read and the live subscription.
   */
  private async onConnect(): Promise<void> {
    try {
      await this.subscribe([eventsTopic(this.userId)]);
      for (const groupId of this.streams.keys()) {
        await this.subscribe([groupTopic(groupId)]).catch(() => this.dropStream(groupId));
      }
      this.emit('connect');
      await Promise.all([...this.streams.values()].map((stream) => stream.catchUp()));
    } catch (err) {
      this.emit('error', err as Error);
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    let body: unknown;
    try {
      body = JSON.parse(payload.toString());
    } catch {
      return;
    }
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'group') this.streams.get(parsed.groupId)?.offer(body as StampedMessage);
    else if (parsed?.kind === 'events' && parsed.userId === this.userId) this.onEvent(body as UserEvent);
  }

  private onEvent(event: UserEvent): void {
    if (event.type === 'ack' || event.type === 'rejected') {
      const send =
        event.clientMsgId && event.groupId ? this.pending.get(pendingKey(event.groupId, event.clientMsgId)) : undefined;
      if (send && event.type === 'ack') {
        this.settle(send, {
          seq: event.seq,
          createdAt: event.createdAt,
          clientMsgId: event.clientMsgId,
          duplicate: event.duplicate,
        });
      } else if (send && event.type === 'rejected') {
        if (RETRYABLE.has(event.code)) this.retryLater(send, 500);
        else this.fail(send, refusal(event.code, event.message));
      }
    } else if (event.type === 'member-added' && this.options.autoJoin !== false) {
      this.join(event.groupId).catch((err: Error) => this.emit('error', err));
    } else if (event.type === 'member-removed' || event.type === 'group-deleted') {
      this.dropStream(event.groupId);
      this.recent.delete(event.groupId);
    } else if (event.type === 'typing') {
      this.emit('typing', { groupId: event.groupId, userId: event.userId });
    } else if (event.type === 'read') {
      this.emit('read', { groupId: event.groupId, userId: event.userId, seq: event.seq });
    } else if (event.type === 'delivered') {
      for (const { userId, seq } of event.marks) this.emit('delivered', { groupId: event.groupId, userId, seq });
    }
    this.emit('event', event);
  }

  private deliver(message: StampedMessage): void {
    this.positions.save(message.groupId, message.seq).catch((err: Error) => this.emit('error', err));
    let recent = this.recent.get(message.groupId);
    if (!recent) this.recent.set(message.groupId, (recent = new Map()));
    if (!isEventType(message.type)) {
      recent.set(message.seq, { message, reactors: new Set() });
      if (recent.size > RECENT_PER_GROUP) recent.delete(recent.keys().next().value!);
    }
    this.emit('message', message);
    const target = message.targetSeq === undefined ? undefined : recent.get(message.targetSeq);
    const updated = target ? applyEvent(target.message, message, this.userId, target.reactors) : null;
    if (target && updated) {
      target.message = updated;
      this.emit('update', updated, message);
    }
  }

  /** Forgets a group's stream (and stops its retries); false when there was none. */
  private dropStream(groupId: string): boolean {
    this.streams.get(groupId)?.stop();
    return this.streams.delete(groupId);
  }

  /** Disconnects. Sends still waiting are rejected; they may still have been stored, so retry with their clientMsgId. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams.values()) stream.stop();
    for (const send of [...this.pending.values()])
      this.fail(send, new Error('client closed before the send was acknowledged'));
    await this.mqtt.endAsync(true);
  }
}
