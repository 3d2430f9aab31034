/**
 * A token bucket: `capacity` tokens, refilled at `perSecond`. `take()` spends one token and answers how many
 * milliseconds the caller must wait before the token it took is really there (0: at once). Callers that wait that long
 * before acting keep to the rate on average and to `capacity` in a burst.
 */
export class TokenBucket {
  private tokens: number;
  private updated: number;

  constructor(
    private readonly capacity: number,
    private readonly perSecond: number,
    now = performance.now(),
  ) {
    this.tokens = capacity;
    this.updated = now;
  }

  take(now = performance.now()): number {
    this.refill(now);
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.perSecond) * 1000;
  }

  /** Whether a token is there now, without taking it. */
  hasToken(now = performance.now()): boolean {
    this.refill(now);
    return this.tokens >= 1;
  }

  /** Whether the bucket is full again (nothing spent is still owed). */
  isFull(now = performance.now()): boolean {
    this.refill(now);
    return this.tokens >= this.capacity;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.updated) / 1000) * this.perSecond);
    this.updated = now;
  }
}

/**
 * Failed authentications per client address, shared by MQTT CONNECT and the REST API: each address may fail `burst`
 * times in a row and earns one more try every 60 / perMinute seconds. An address over its budget is refused before its
 * credentials are even checked. At most `maxAddresses` are tracked (the oldest forgotten first), so a flood from many
 * addresses cannot grow it without bound.
 */
export class FailedAuthThrottle {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly perMinute: number,
    private readonly maxAddresses = 100_000,
  ) {}

  /** Whether `address` has used up its failures: refuse it without checking its credentials. */
  blocked(address: string): boolean {
    const bucket = this.buckets.get(address);
    if (!bucket) return false;
    if (bucket.isFull()) {
      this.buckets.delete(address);
      return false;
    }
    return !bucket.hasToken();
  }

  failed(address: string): void {
    let bucket = this.buckets.get(address);
    if (bucket) this.buckets.delete(address); // re-inserted last: the Map's order is least recently failed first
    else {
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = new TokenBucket(this.perMinute, this.perMinute / 60);
    }
    bucket.take();
    this.buckets.set(address, bucket);
  }
}
