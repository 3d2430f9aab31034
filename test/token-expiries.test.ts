import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TokenExpiries } from '../broker/token-expiries.js';

// The clock is vitest's: Date.now() and the timers move only when a test advances them.
const START_MS = Date.UTC(2026, 0, 1, 12, 0, 0, 250);

describe('TokenExpiries: one timer ends every connection when its token expires', () => {
  let ended: { name: string; atMs: number }[];
  let expiries: TokenExpiries<{ name: string }>;

  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(START_MS);
    ended = [];
    expiries = new TokenExpiries((connection) => ended.push({ name: connection.name, atMs: Date.now() }));
  });
  afterEach(() => {
    expiries.stop();
    vi.useRealTimers();
  });

  it('ends each connection at or after its exp, within about a second, in order', () => {
    const startSecond = Math.floor(START_MS / 1000);
    const a = { name: 'a' };
    const b = { name: 'b' };
    const c = { name: 'c' };
    expiries.add(b, startSecond + 3);
    expiries.add(a, startSecond + 1);
    expiries.add(c, startSecond + 3);
    vi.advanceTimersByTime(10_000);
    expect(ended.map((e) => e.name)).toEqual(['a', 'b', 'c']);
    for (const [e, exp] of [
      [ended[0]!, startSecond + 1],
      [ended[1]!, startSecond + 3],
      [ended[2]!, startSecond + 3],
    ] as const) {
      expect(e.atMs).toBeGreaterThanOrEqual(exp * 1000);
      expect(e.atMs - exp * 1000).toBeLessThanOrEqual(1000);
    }
  });

  it('ends a connection whose token has just expired at the next tick, and never one removed first', () => {
    const startSecond = Math.floor(START_MS / 1000);
    const late = { name: 'late' };
    const gone = { name: 'gone' };
    expiries.add(late, startSecond - 2); // within the verifier's clock tolerance
    expiries.add(gone, startSecond + 2);
    expiries.remove(gone);
    vi.advanceTimersByTime(5000);
    expect(ended.map((e) => e.name)).toEqual(['late']);
    expect(ended[0]!.atMs - START_MS).toBeLessThanOrEqual(1000);
  });

  it('runs its timer only while a connection is pending', () => {
    const startSecond = Math.floor(START_MS / 1000);
    expect(vi.getTimerCount()).toBe(0);
    const a = { name: 'a' };
    expiries.add(a, startSecond + 3600);
    expect(vi.getTimerCount()).toBe(1);
    expiries.remove(a);
    expect(vi.getTimerCount()).toBe(0);
    expiries.add(a, startSecond + 1);
    vi.advanceTimersByTime(3000);
    expect(ended.map((e) => e.name)).toEqual(['a']);
    expect(vi.getTimerCount()).toBe(0);
  });
});
