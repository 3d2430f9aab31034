/** How often the expiries are looked at while any is pending: a JWT's exp is in whole seconds. */
const TICK_MS = 1000;

/** The connections whose token expires in one second. */
class Bucket<C> extends Set<C> {
  constructor(readonly second: number) {
    super();
  }
}

/**
 * When each connection's token runs out, under one timer for all of them instead of a timer per connection (a Timeout
 * with its closure, about 0.25 KB held for the connection's whole life). Connections are kept by the second their token
 * expires in; once a second a tick ends those whose second has begun: never before their exp, and at most about a
 * second after it. The timer runs only while some connection is pending, and never holds the process open.
 */
export class TokenExpiries<C extends object> {
  /** Per second (since the epoch), the connections whose token expires then. */
  private readonly bySecond = new Map<number, Bucket<C>>();
  /** Each pending connection's entry in bySecond, so that a disconnect removes it. */
  private readonly bucketOf = new WeakMap<C, Bucket<C>>();
  /** Every second up to this one has been ended. */
  private doneThrough = 0;
  private ticker: NodeJS.Timeout | null = null;

  constructor(private readonly expire: (connection: C) => void) {}

  /** `connection` is ended (expire) once the clock reaches `expiresAt` (seconds since the epoch). */
  add(connection: C, expiresAt: number): void {
    if (this.ticker === null) {
      this.doneThrough = Math.floor(Date.now() / 1000) - 1;
      this.ticker = setInterval(() => this.tick(), TICK_MS);
      this.ticker.unref();
    }
    // A token that expired already (within the verifier's clock tolerance) goes at the next tick.
    const second = Math.max(Math.ceil(expiresAt), this.doneThrough + 1);
    let bucket = this.bySecond.get(second);
    if (!bucket) this.bySecond.set(second, (bucket = new Bucket(second)));
    bucket.add(connection);
    this.bucketOf.set(connection, bucket);
  }

  /** The connection ended first: nothing is left of it here. */
  remove(connection: C): void {
    const bucket = this.bucketOf.get(connection);
    if (!bucket) return;
    this.bucketOf.delete(connection);
    bucket.delete(connection);
    if (bucket.size > 0) return;
    this.bySecond.delete(bucket.second);
    if (this.bySecond.size === 0) this.stop();
  }

  /** Ends no more connections (the node is shutting down). */
  stop(): void {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.bySecond.clear();
  }

  private tick(): void {
    const now = Math.floor(Date.now() / 1000);
    for (let second = this.doneThrough + 1; second <= now; second++) {
      const bucket = this.bySecond.get(second);
      if (!bucket) continue;
      this.bySecond.delete(second);
      for (const connection of bucket) {
        this.bucketOf.delete(connection);
        this.expire(connection);
      }
    }
    this.doneThrough = now;
    if (this.bySecond.size === 0) this.stop();
  }
}
