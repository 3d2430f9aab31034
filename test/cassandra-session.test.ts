import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { hedged } from '../cassandra/session.js';

/** A read that answers `value` (or fails with it) after `ms`, counting its calls. */
const reads = (...answers: { ms: number; value?: string; error?: string }[]) => {
  let calls = 0;
  const read = async () => {
    const answer = answers[calls++]!;
    await sleep(answer.ms);
    if (answer.error) throw new Error(answer.error);
    return answer.value!;
  };
  return { read, calls: () => calls };
};

describe('hedged reads', () => {
  it('a read that answers in time is sent once', async () => {
    const r = reads({ ms: 10, value: 'first' });
    expect(await hedged(r.read, 200)).toBe('first');
    await sleep(250);
    expect(r.calls()).toBe(1);
  });

  it('a read held past the limit is sent again, and the second answer wins when it comes first', async () => {
    const r = reads({ ms: 2_000, value: 'held' }, { ms: 10, value: 'second' });
    const started = performance.now();
    expect(await hedged(r.read, 100)).toBe('second');
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(r.calls()).toBe(2);
  });

  it('the first answer still wins when it comes before the second', async () => {
    const r = reads({ ms: 150, value: 'first' }, { ms: 1_000, value: 'second' });
    expect(await hedged(r.read, 100)).toBe('first');
  });

  it('one failure is covered by the other request; two report the first', async () => {
    expect(await hedged(reads({ ms: 200, error: 'timed out' }, { ms: 10, value: 'second' }).read, 100)).toBe('second');
    expect(await hedged(reads({ ms: 150, value: 'first' }, { ms: 10, error: 'down' }).read, 100)).toBe('first');
    await expect(hedged(reads({ ms: 200, error: 'first' }, { ms: 10, error: 'second' }).read, 100)).rejects.toThrow(
      'first',
    );
  });

  it('a read that fails before the limit fails at once, without a second request', async () => {
    const r = reads({ ms: 10, error: 'refused' }, { ms: 10, value: 'second' });
    await expect(hedged(r.read, 200)).rejects.toThrow('refused');
    await sleep(250);
    expect(r.calls()).toBe(1);
  });
});
