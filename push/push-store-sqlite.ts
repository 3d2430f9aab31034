import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { PushMode, PushStore, PushSubscriptionRecord } from './push-store.js';

interface SubscriptionRow {
  user_id: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  device_id: string | null;
  created_at: number;
}

const toRecord = (row: SubscriptionRow): PushSubscriptionRecord => ({
  userId: row.user_id,
  endpoint: row.endpoint,
  p256dh: row.p256dh,
  auth: row.auth,
  ...(row.device_id === null ? {} : { deviceId: row.device_id }),
  createdAtMs: row.created_at,
});

/** Push subscriptions and preferences in their own SQLite file. */
export class PushStoreSqlite implements PushStore {
  private readonly db: Database.Database;
  private readonly save: (s: PushSubscriptionRecord, max: number) => 'saved' | 'limit';
  /** The notifier asks this once per page of members on every pass: prepared once, here. */
  private readonly selectReachable: Database.Statement<[string, string], { user_id: string; mode: PushMode | null }>;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS push_subscriptions (
        user_id TEXT NOT NULL, endpoint TEXT NOT NULL, p256dh TEXT NOT NULL, auth TEXT NOT NULL, device_id TEXT,
        created_at INTEGER NOT NULL, PRIMARY KEY (user_id, endpoint)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS push_modes (
        user_id TEXT NOT NULL, group_id TEXT NOT NULL, mode TEXT NOT NULL, PRIMARY KEY (user_id, group_id)) WITHOUT ROWID;
    `);
    const exists = this.db.prepare<[string, string]>(
      'SELECT 1 FROM push_subscriptions WHERE user_id = ? AND endpoint = ?',
    );
    const count = this.db.prepare<[string], { n: number }>(
      'SELECT COUNT(*) AS n FROM push_subscriptions WHERE user_id = ?',
    );
    const upsert = this.db.prepare(
      `INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, device_id, created_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (user_id, endpoint) DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth, device_id = excluded.device_id`,
    );
    this.selectReachable = this.db.prepare(
      `SELECT s.user_id, m.mode FROM (SELECT DISTINCT user_id FROM push_subscriptions WHERE user_id IN (SELECT value FROM json_each(?))) s
       LEFT JOIN push_modes m ON m.user_id = s.user_id AND m.group_id = ?`,
    );
    this.save = this.db.transaction((s: PushSubscriptionRecord, max: number) => {
      if (!exists.get(s.userId, s.endpoint) && count.get(s.userId)!.n >= max) return 'limit';
      upsert.run(s.userId, s.endpoint, s.p256dh, s.auth, s.deviceId ?? null, s.createdAtMs);
      return 'saved';
    });
  }

  async saveSubscription(subscription: PushSubscriptionRecord, maxPerUser: number): Promise<'saved' | 'limit'> {
    return this.save(subscription, maxPerUser);
  }

  async removeSubscription(userId: string, endpoint: string): Promise<boolean> {
    return (
      this.db.prepare('DELETE FROM push_subscriptions WHERE user_id = ? AND endpoint = ?').run(userId, endpoint)
        .changes > 0
    );
  }

  async listSubscriptions(userId: string): Promise<PushSubscriptionRecord[]> {
    return this.db
      .prepare<[string], SubscriptionRow>('SELECT * FROM push_subscriptions WHERE user_id = ?')
      .all(userId)
      .map(toRecord);
  }

  async setMode(userId: string, groupId: string, mode: PushMode): Promise<void> {
    this.db
      .prepare(
        'INSERT INTO push_modes (user_id, group_id, mode) VALUES (?, ?, ?) ON CONFLICT (user_id, group_id) DO UPDATE SET mode = excluded.mode',
      )
      .run(userId, groupId, mode);
  }

  async getMode(userId: string, groupId: string): Promise<PushMode> {
    const row = this.db
      .prepare<[string, string], { mode: PushMode }>('SELECT mode FROM push_modes WHERE user_id = ? AND group_id = ?')
      .get(userId, groupId);
    return row?.mode ?? 'all';
  }

  async reachable(userIds: string[], groupId: string): Promise<Map<string, PushMode>> {
    const rows = this.selectReachable.all(JSON.stringify(userIds), groupId);
    return new Map(rows.map((row) => [row.user_id, row.mode ?? 'all']));
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
