import type { LookupFunction } from 'node:net';
import { rootCertificates } from 'node:tls';
import { RequestFilteringHttpsAgent } from 'request-filtering-agent';
import webPush, { WebPushError } from 'web-push';
import type { Logger } from 'pino';
import { SPECIAL_RANGES_UNCLASSIFIED } from './endpoint-policy.js';
import type { PushStore, PushSubscriptionRecord } from './push-store.js';
import type { VapidKeys } from './vapid.js';

export interface PushOptions {
  urgency: 'normal' | 'high';
  /** Replaces an earlier undelivered push with the same topic at the push service (RFC 8030 §5.4). */
  topic: string;
}

/** Where pushes may go. */
export interface PushNetwork {
  /** CAs trusted besides the system ones (pushCaFile). */
  extraCa?: Buffer;
  /** Tests only: a push service on loopback (pushAllowLoopback). */
  allowLoopback?: boolean;
  /** Name resolution, for tests; the system's otherwise. */
  lookup?: LookupFunction;
}

const MAX_ATTEMPTS = 5;
const MAX_IN_FLIGHT = 32;
const MAX_WAITING = 10_000;
const MAX_RETRY_DELAY_MS = 60_000;

/** Seconds or an HTTP date, as Retry-After may carry (RFC 9110 §10.2.3); undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Sends encrypted pushes (aes128gcm, RFC 8291) signed with VAPID (RFC 8292), at most MAX_IN_FLIGHT at once, and acts
 * on what the push service answers: 404/410 remove the subscription; 429 and 5xx retry, after Retry-After when given,
 * else with exponential backoff; anything else is logged with the endpoint's host only, never the keys.
 */
export class PushSender {
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  private dropped = 0;
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  /**
   * Keep-alive connections to push services (a few hosts serve every browser). Each connection is checked on the
   * addresses it actually resolves to and uses (request-filtering-agent): public unicast only, so an endpoint whose name
   * points inside is never connected to, whatever it resolved to when it was registered.
   */
  private readonly agent: RequestFilteringHttpsAgent;

  constructor(
    private readonly vapid: VapidKeys,
    private readonly subject: string,
    private readonly ttlSeconds: number,
    private readonly store: PushStore,
    private readonly logger: Logger,
    network: PushNetwork = {},
  ) {
    this.agent = new RequestFilteringHttpsAgent({
      keepAlive: true,
      maxSockets: MAX_IN_FLIGHT,
      ...(network.extraCa ? { ca: [...rootCertificates, network.extraCa.toString()] } : {}),
      ...(network.allowLoopback ? { allowIPAddressList: ['127.0.0.0/8', '::1'] } : {}),
      ...(network.lookup ? { lookup: network.lookup } : {}),
      denyIPAddressList: SPECIAL_RANGES_UNCLASSIFIED,
    });
  }

  /** Pushes waiting for a free slot were dropped because the queue was full (a push service too slow for the load). */
  get droppedCount(): number {
    return this.dropped;
  }

  /** Queues one push; never throws, never waits for the push service. */
  send(subscription: PushSubscriptionRecord, payload: object, options: PushOptions): void {
    if (this.closed) return;
    if (this.waiting.length >= MAX_WAITING) {
      this.dropped += 1;
      return;
    }
    this.waiting.push(() => void this.attempt(subscription, JSON.stringify(payload), options, 1));
    this.pump();
  }

  private pump(): void {
    while (this.inFlight < MAX_IN_FLIGHT && this.waiting.length > 0) {
      this.inFlight += 1;
      this.waiting.shift()!();
    }
  }

  private async attempt(
    subscription: PushSubscriptionRecord,
    payload: string,
    options: PushOptions,
    attempt: number,
  ): Promise<void> {
    const host = new URL(subscription.endpoint).host;
    let retryIn: number | undefined;
    try {
      await webPush.sendNotification(
        { endpoint: subscription.endpoint, keys: { p256dh: subscription.p256dh, auth: subscription.auth } },
        payload,
        {
          vapidDetails: { subject: this.subject, publicKey: this.vapid.publicKey, privateKey: this.vapid.privateKey },
          TTL: this.ttlSeconds,
          urgency: options.urgency,
          topic: options.topic,
          timeout: 10_000,
          contentEncoding: 'aes128gcm',
          agent: this.agent,
        },
      );
    } catch (err) {
      const status = err instanceof WebPushError ? err.statusCode : undefined;
      if (status === 404 || status === 410) {
        await this.store.removeSubscription(subscription.userId, subscription.endpoint).catch(() => undefined);
        this.logger.info({ host, status }, 'push subscription gone; removed');
      } else if (status === undefined || status === 429 || status >= 500) {
        const header =
          err instanceof WebPushError ? (err.headers as Record<string, string | undefined>)['retry-after'] : undefined;
        retryIn = Math.min(MAX_RETRY_DELAY_MS, retryAfterMs(header) ?? 1000 * 2 ** (attempt - 1));
        if (attempt >= MAX_ATTEMPTS) {
          retryIn = undefined;
          this.logger.warn({ host, status, attempt }, 'push failed; giving up');
        }
      } else {
        this.logger.warn({ host, status }, 'push refused by the push service');
      }
    } finally {
      this.inFlight -= 1;
      this.pump();
    }
    if (retryIn !== undefined && !this.closed) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.waiting.push(() => void this.attempt(subscription, payload, options, attempt + 1));
        this.pump();
      }, retryIn);
      this.timers.add(timer);
    }
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.waiting.length = 0;
    this.agent.destroy();
  }
}
