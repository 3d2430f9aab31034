import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.js';
import { redisConnections } from '../server/redis-connections.js';
import { namedPrimary, redisUrl, replicatedSettings, SENTINEL_PORTS } from './services.js';

const execFileAsync = promisify(execFile);
const SERVICES = new URL('../scripts/services.sh', import.meta.url).pathname;
const STATE = new URL('../.services/sentinel/', import.meta.url).pathname;
const pidOf = (file: string) => Number(readFileSync(`${STATE}${file}.pid`, 'utf8'));
const config = (settings: NodeJS.ProcessEnv) =>
  loadConfig({ CHORUS_JWT_SECRET: 'redis-connections-test-secret-0123456789abcdef', ...settings });

describe("a node's Redis connections", () => {
  it('stay connected through a failover announced while they ask a Sentinel where the primary is', async () => {
    const connect = redisConnections(config(replicatedSettings), pino({ level: 'silent' }));
    const subscriber = connect();
    const publisher = connect();
    const heard: string[] = [];
    let ends = 0;
    subscriber.on('end', () => ends++);
    subscriber.on('message', (_channel: string, message: string) => heard.push(message));
    await subscriber.subscribe('chorus:test:lasting');
    await publisher.publish('chorus:test:lasting', 'before');
    await expect.poll(() => heard).toEqual(['before']);
    await sleep(500); // their failover detectors subscribe to +switch-master on every Sentinel
    // The first Sentinel (the one they ask first) stops answering, then the primary dies: their tries to reconnect
    // wait on that Sentinel while the other two elect a new primary and announce it.
    const [asked, ...voting] = SENTINEL_PORTS;
    const killed = await namedPrimary(asked!);
    process.kill(pidOf(`sentinel-${asked}`), 'SIGSTOP');
    try {
      process.kill(pidOf(`redis-${killed}`), 'SIGKILL');
      await expect
        .poll(() => namedPrimary(voting[0]!).catch(() => killed), { timeout: 30_000, interval: 100 })
        .not.toBe(killed);
      await sleep(500); // the announcement reaches the connections
    } finally {
      process.kill(pidOf(`sentinel-${asked}`), 'SIGCONT');
    }
    try {
      // The race happened: ioredis ended the subscriber's connection (by itself, nobody closed it)...
      await expect.poll(() => ends, { timeout: 5000 }).toBeGreaterThan(0);
      // ...and it is connected again: it answers, and hears what is published on its channel.
      await expect
        .poll(() => publisher.publish('chorus:test:lasting', 'after').catch(() => 0), { timeout: 20_000 })
        .toBe(1);
      await expect.poll(() => heard.includes('after')).toBe(true);
    } finally {
      subscriber.disconnect();
      publisher.disconnect();
      await execFileAsync('bash', [SERVICES, 'start', 'sentinel']); // the killed server back, as a replica
    }
  }, 90_000);

  it('stay closed once closed from here, by disconnect() or quit()', async () => {
    const connect = redisConnections(config({ CHORUS_REDIS_URL: redisUrl }), pino({ level: 'silent' }));
    const [disconnected, quitted] = [connect(), connect()];
    await Promise.all([disconnected.ping(), quitted.ping()]);
    disconnected.disconnect();
    await quitted.quit();
    await sleep(1000); // past the wait before a connection that ended by itself is connected again
    expect([disconnected.status, quitted.status]).toEqual(['end', 'end']);
  });
});
