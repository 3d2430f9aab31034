import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // expect.poll waits as long as the harness's until() does: 1 s (vitest's default) is short on a busy CI machine.
    expect: { poll: { timeout: 10_000, interval: 50 } },
    pool: 'forks',
    // One file at a time: the cluster tests stop and restart the shared Cassandra and flush the shared Redis.
    fileParallelism: false,
  },
});
