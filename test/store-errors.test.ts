import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isLastingStoreError, isStoreOutage } from '../sequencer/store-errors.js';
import { freePort } from './harness.js';
import { connectRedis, SENTINEL_REDIS_PORTS } from './services.js';

/** What a promise rejected with (a test failure if it fulfilled). */
const rejection = async (promise: Promise<unknown>): Promise<unknown> => {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
};

/**
 * The errors the stores really give, each read from a real server: an outage (UNAVAILABLE to a REST client, a send
 * retried over MQTT) or not (a bug, INTERNAL). A driver that renames its errors fails here, not in production.
 */
describe('store errors, as the stores give them', () => {
  it('takes a Redis that does not answer for an outage: retries used up, or the connection closed', async () => {
    const port = await freePort(); // nothing listens there
    const away = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1, retryStrategy: () => 20 });
    away.on('error', () => undefined);
    try {
      expect(isStoreOutage(await rejection(away.get('k')))).toBe(true);
    } finally {
      away.disconnect();
    }
    const closed = await connectRedis();
    closed.disconnect();
    expect(isStoreOutage(await rejection(closed.get('k')))).toBe(true);
  });

  it('takes a Redis replica (a primary demoted by a failover) for an outage, and a command Redis refuses for a bug', async () => {
    const servers = SENTINEL_REDIS_PORTS.map((port) => new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 }));
    try {
      const roles = await Promise.all(servers.map((s) => s.call('ROLE') as Promise<[string]>));
      const replica = servers[roles.findIndex(([role]) => role === 'slave')];
      expect(replica, 'the Sentinel set has a replica (scripts/services.sh start sentinel)').toBeDefined();
      expect(isStoreOutage(await rejection(replica!.set('chorus:store-errors', '1')))).toBe(true);
      const primary = servers[roles.findIndex(([role]) => role === 'master')]!;
      await primary.set('chorus:store-errors', 'a string');
      const wrongType = await rejection(primary.hget('chorus:store-errors', 'field'));
      expect((wrongType as Error).message).toMatch(/^WRONGTYPE/);
      expect(isStoreOutage(wrongType)).toBe(false);
      await primary.del('chorus:store-errors');
    } finally {
      for (const server of servers) server.disconnect();
    }
  });

  it('takes a locked SQLite file for an outage that passes, and a constraint for a refusal that lasts', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'chorus-store-errors-')), 'locked.db');
    const holder = new Database(file);
    const other = new Database(file, { timeout: 0 });
    try {
      holder.exec('CREATE TABLE t (id INTEGER PRIMARY KEY)');
      holder.exec('BEGIN EXCLUSIVE');
      let busy: unknown;
      try {
        other.prepare('INSERT INTO t VALUES (1)').run();
      } catch (err) {
        busy = err;
      }
      expect((busy as { code?: string }).code).toMatch(/^SQLITE_BUSY/);
      expect(isStoreOutage(busy)).toBe(true);
      expect(isLastingStoreError(busy)).toBe(false);
      holder.exec('COMMIT');
      other.prepare('INSERT INTO t VALUES (1)').run();
      let constraint: unknown;
      try {
        other.prepare('INSERT INTO t VALUES (1)').run();
      } catch (err) {
        constraint = err;
      }
      expect(isStoreOutage(constraint)).toBe(false);
      expect(isLastingStoreError(constraint)).toBe(true);
    } finally {
      holder.close();
      other.close();
    }
  });

  it("takes Chorus's own bugs for no outage", () => {
    expect(isStoreOutage(new TypeError("Cannot read properties of undefined (reading 'seq')"))).toBe(false);
    expect(isStoreOutage('READONLY a string, not an error')).toBe(false);
  });
});
