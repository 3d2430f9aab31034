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
