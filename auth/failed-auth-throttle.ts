import { setTimeout as sleep } from 'node:timers/promises';
import { TokenBucket } from './token-bucket.js';

/** How long a failed authentication from an address over its budget waits for its refusal. */
const FAILURE_BACKOFF_MS = 1000;
/** Refusals waiting at once; beyond this they answer at once (the wait must not hold memory without bound). */
const MAX_WAITING_REFUSALS = 10_000;

/**
 * Failed authentications per client address, shared by MQTT CONNECT and the REST API: each address may fail
 * `perMinute` times in a row and earns one more try every 60 / perMinute seconds. Only failures are throttled: a valid
 * token is checked and accepted whatever its address did (a JWT check costs microseconds), so the clients behind a NAT
 * or a proxy are not shut out by one misbehaving neighbour. A failure from an address over its budget is answered
 * only after FAILURE_BACKOFF_MS, as "retry later": an attacker's connection (of the few per address the broker serves
 * before login) is held, and its tries are slowed to a few a second. At most `maxAddresses` are tracked (the oldest
 * forgotten first), so a flood from many addresses cannot grow it without bound.
 */
export class FailedAuthThrottle {
  private readonly buckets = new Map<string, TokenBucket>();
  private waitingRefusals = 0;

  constructor(
    private readonly perMinute: number,
    private readonly maxAddresses = 100_000,
  ) {}

  /**
   * A failed authentication from `address`, counted. Resolves false when the address is within its budget (refuse it
   * as usual), or true, after FAILURE_BACKOFF_MS, when it is over it (refuse it as "too many failures; retry later").
   */
  async failure(address: string): Promise<boolean> {
    const over = this.blocked(address);
    this.failed(address);
    if (!over) return false;
    if (this.waitingRefusals < MAX_WAITING_REFUSALS) {
      this.waitingRefusals += 1;
      try {
        await sleep(FAILURE_BACKOFF_MS);
      } finally {
        this.waitingRefusals -= 1;
      }
    }
    return true;
  }

  /** Whether `address` has used up its failures. */
  private blocked(address: string): boolean {
    const bucket = this.buckets.get(address);
    if (!bucket) return false;
    if (bucket.isFull()) {
      this.buckets.delete(address);
      return false;
    }
    return !bucket.hasToken();
  }

  private failed(address: string): void {
    let bucket = this.buckets.get(address);
    if (bucket)
      this.buckets.delete(address); // re-inserted last: the Map's order is least recently failed first
    else {
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = new TokenBucket(this.perMinute, this.perMinute / 60);
    }
    bucket.take();
    this.buckets.set(address, bucket);
  }
}
