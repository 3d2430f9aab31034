/**
 * The Cassandra nodes scripts/services.sh starts for the tests and the bench (the single node and the ring) run with a
 * timer slack of 1 ms, so that their request threads' timed parks between requests wake about once a millisecond
 * instead of every 10 µs (the script's cassandra_node says why; docs/performance.md measures it).
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CASSANDRA_PID_FILE, RING_ADDRESSES, ringPidFile } from './services.js';

const PID_FILES = [CASSANDRA_PID_FILE, ...RING_ADDRESSES.map((_, node) => ringPidFile(node))];

describe('Cassandra as scripts/services.sh starts it', () => {
  it('runs every node with a timer slack of 1 ms', () => {
    const running = PID_FILES.filter(existsSync)
      .map((file) => Number(readFileSync(file, 'utf8').trim()))
      .filter((pid) => existsSync(`/proc/${pid}`));
    // The global setup starts the single node and the ring through the script when they do not answer; a node started
    // some other way leaves no pid file here.
    expect(running.length, 'no Cassandra started by scripts/services.sh is running').toBeGreaterThan(0);
    for (const pid of running)
      expect(readFileSync(`/proc/${pid}/timerslack_ns`, 'utf8').trim(), `Cassandra pid ${pid}`).toBe('1000000');
  });
});
