import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const FLOOR = new URL('../dist/bench/socket-floor.js', import.meta.url).pathname;

describe('the socket floor bench', () => {
  it('reports the writer CPU per delivery once every connection has acknowledged each round', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [FLOOR], {
      env: { ...process.env, BENCH_FLOOR_CONNECTIONS: '50', BENCH_FLOOR_ROUNDS: '3' },
      timeout: 60_000,
    });
    const perDelivery = Number(/each of 50 loopback connections .*: ([\d.]+) µs/.exec(stdout)?.[1]);
    expect(perDelivery).toBeGreaterThan(0);
  });
});
