import { TokenBucket } from './token-bucket.js';

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
