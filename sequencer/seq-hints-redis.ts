import type { Redis } from 'ioredis';
import type { SeqHints } from './seq-hints.js';

// Raises a counter to ARGV[1] if it is lower, atomically (Redis runs a script as one step).
const RAISE = `local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1`;

/** Seq hints in Redis, one key per group (`chorus:seq:{groupId}`). */
export class SeqHintsRedis implements SeqHints {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'chorus:seq:',
  ) {}

  async get(groupId: string): Promise<number | undefined> {
    const value = await this.redis.get(this.prefix + groupId);
    return value === null ? undefined : Number(value);
  }

  async raise(groupId: string, seq: number): Promise<void> {
    await this.redis.eval(RAISE, 1, this.prefix + groupId, String(seq));
  }
}
