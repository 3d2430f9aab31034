import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { MembershipChange, MembershipFeed, MembershipListener } from './membership-feed.js';

const CHANGES = 'chorus:membership';
const APPLIED = 'chorus:membership:applied';
/** How long a change waits for every node to say it applied it; a node that does not answer is down or partitioned. */
const APPLY_TIMEOUT_MS = 2_000;
/** Published on CHANGES in place of a change: some change was stored but not published, so every node read again. */
const MISSED_NOTICE = JSON.stringify({ missed: true });
/** How often a node whose publish failed tries to publish MISSED_NOTICE, until it goes out. */
const MISSED_NOTICE_RETRY_MS = 1_000;

/**
 * Membership changes over Redis pub/sub, to every node. publish() resolves once every node subscribed at that moment
 * has applied the change (each answers on a second channel), so a removal is in force everywhere when the REST call
 * that made it returns.
 *
 * Pub/sub keeps nothing: a change published while a node's subscriber is disconnected (Redis away, failing over) never
 * reaches that node. So once the subscriber is back and subscribed again, the node is told it missed changes
 * (onMissed), and reads its state again from the store. A change whose publish fails (Redis away) is stored already:
 * this node's listeners get it at once, the call fails (UNAVAILABLE), and once Redis takes publishes again this node
 * publishes a notice that tells every node to read again (a node whose subscriber stayed connected, when Redis refused
 * only the publish, would hear of the change no other way).
 */
export class MembershipFeedRedis implements MembershipFeed {
  private readonly listeners = new Set<MembershipListener>();
  private readonly missedListeners = new Set<() => void>();
  private readonly waiting = new Map<string, { acks: number; expected?: number; done: () => void }>();
  /** A MISSED_NOTICE is waiting to go out. */
  private noticePending = false;

  private constructor(private readonly publisher: Redis) {}

  /** `subscriber` must be a connection of its own: Redis reserves a subscribed connection for pub/sub. */
  static async start(publisher: Redis, subscriber: Redis): Promise<MembershipFeedRedis> {
    const feed = new MembershipFeedRedis(publisher);
    // A change that cannot be applied or answered (Redis away) is left to the publisher's timeout.
    subscriber.on(
      'message',
      (channel: string, text: string) => void feed.onMessage(channel, text).catch(() => undefined),
    );
    await subscriber.subscribe(CHANGES, APPLIED);
    let lost = false;
    subscriber.on('close', () => (lost = true));
    subscriber.on('ready', () => {
      if (!lost) return;
      lost = false;
      // ioredis has sent its own SUBSCRIBE again; once this one is answered, that one was too (a connection's
      // commands are answered in order), so every change published from then on reaches this node.
      subscriber.subscribe(CHANGES, APPLIED).then(
        () => feed.missed(),
        () => undefined, // lost again: the next 'ready' tries again
      );
    });
    return feed;
  }

  private async onMessage(channel: string, text: string): Promise<void> {
    if (channel === APPLIED) {
      const waiter = this.waiting.get(text);
      if (!waiter) return;
      waiter.acks += 1; // acks may come before PUBLISH has returned how many nodes will send one
      if (waiter.expected !== undefined && waiter.acks >= waiter.expected) waiter.done();
      return;
    }
    const envelope = JSON.parse(text) as { id: string; change: MembershipChange } | { missed: true };
    if ('missed' in envelope) return this.missed();
    await this.applyHere(envelope.change);
    await this.publisher.publish(APPLIED, envelope.id);
  }

  private missed(): void {
    for (const listener of this.missedListeners) listener();
  }

  /** Publishes MISSED_NOTICE, every MISSED_NOTICE_RETRY_MS until Redis takes it. */
  private noticeMissed(): void {
    if (this.noticePending) return;
    this.noticePending = true;
    const attempt = () =>
      this.publisher.publish(CHANGES, MISSED_NOTICE).then(
        () => (this.noticePending = false),
        () => setTimeout(attempt, MISSED_NOTICE_RETRY_MS).unref(),
      );
    setTimeout(attempt, MISSED_NOTICE_RETRY_MS).unref();
  }

  private async applyHere(change: MembershipChange): Promise<void> {
    await Promise.all([...this.listeners].map((listener) => listener(change)));
  }

  async publish(change: MembershipChange): Promise<void> {
    const id = randomUUID();
    let timer: NodeJS.Timeout | undefined;
    const applied = new Promise<void>((resolve) => {
      this.waiting.set(id, { acks: 0, done: resolve });
      timer = setTimeout(resolve, APPLY_TIMEOUT_MS);
    });
    const waiter = this.waiting.get(id)!;
    try {
      try {
        waiter.expected = await this.publisher.publish(CHANGES, JSON.stringify({ id, change }));
      } catch (err) {
        this.noticeMissed();
        await this.applyHere(change);
        throw err;
      }
      if (waiter.acks >= waiter.expected) waiter.done();
      await applied;
    } finally {
      clearTimeout(timer);
      this.waiting.delete(id);
    }
  }

  subscribe(listener: MembershipListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onMissed(listener: () => void): () => void {
    this.missedListeners.add(listener);
    return () => this.missedListeners.delete(listener);
  }
}
