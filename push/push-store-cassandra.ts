import type { CassandraSession } from '../cassandra/session.js';
import type { PushMode, PushStore, PushSubscriptionRecord } from './push-store.js';

/** Push subscriptions and preferences on Cassandra, partitioned by user. The per-user limit is checked before the write. */
export class PushStoreCassandra implements PushStore {
  private constructor(private readonly db: CassandraSession) {}

  static async open(db: CassandraSession): Promise<PushStoreCassandra> {
    await db.ddl([
      `CREATE TABLE IF NOT EXISTS push_subscriptions (
        user_id text, endpoint text, p256dh text, auth text, device_id text, created_at timestamp, PRIMARY KEY ((user_id), endpoint))`,
      'CREATE TABLE IF NOT EXISTS push_modes (user_id text, group_id text, mode text, PRIMARY KEY ((user_id), group_id))',
    ]);
    return new PushStoreCassandra(db);
  }

  async saveSubscription(s: PushSubscriptionRecord, maxPerUser: number): Promise<'saved' | 'limit'> {
    const existing = await this.listSubscriptions(s.userId);
    if (!existing.some((e) => e.endpoint === s.endpoint) && existing.length >= maxPerUser) return 'limit';
    await this.db.execute(
      'INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, device_id, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      [s.userId, s.endpoint, s.p256dh, s.auth, s.deviceId ?? null, new Date(s.createdAtMs)],
    );
    return 'saved';
  }

  async removeSubscription(userId: string, endpoint: string): Promise<boolean> {
    const result = await this.db.execute(
      'DELETE FROM push_subscriptions WHERE user_id = ? AND endpoint = ? IF EXISTS',
      [userId, endpoint],
    );
    return result.wasApplied();
  }

  async listSubscriptions(userId: string): Promise<PushSubscriptionRecord[]> {
    const result = await this.db.execute('SELECT * FROM push_subscriptions WHERE user_id = ?', [userId]);
    return result.rows.map((row) => ({
      userId,
      endpoint: row.get('endpoint') as string,
      p256dh: row.get('p256dh') as string,
      auth: row.get('auth') as string,
      ...(row.get('device_id') ? { deviceId: row.get('device_id') as string } : {}),
      createdAtMs: (row.get('created_at') as Date).getTime(),
    }));
  }

  async setMode(userId: string, groupId: string, mode: PushMode): Promise<void> {
    await this.db.execute('INSERT INTO push_modes (user_id, group_id, mode) VALUES (?, ?, ?)', [userId, groupId, mode]);
  }

  async getMode(userId: string, groupId: string): Promise<PushMode> {
    const row = (
      await this.db.execute('SELECT mode FROM push_modes WHERE user_id = ? AND group_id = ?', [userId, groupId])
    ).first();
    return (row?.get('mode') as PushMode | undefined) ?? 'all';
  }

  /** Two reads whatever the number of users: each is one partition per user, asked together with IN. */
  async reachable(userIds: string[], groupId: string): Promise<Map<string, PushMode>> {
    if (userIds.length === 0) return new Map();
    const subscribed = (
      await this.db.execute('SELECT user_id FROM push_subscriptions WHERE user_id IN ? PER PARTITION LIMIT 1', [
        userIds,
      ])
    ).rows.map((row) => row.get('user_id') as string);
    if (subscribed.length === 0) return new Map();
    const modes = await this.db.execute('SELECT user_id, mode FROM push_modes WHERE user_id IN ? AND group_id = ?', [
      subscribed,
      groupId,
    ]);
    const reachable = new Map<string, PushMode>(subscribed.map((userId) => [userId, 'all']));
    for (const row of modes.rows) reachable.set(row.get('user_id') as string, row.get('mode') as PushMode);
    return reachable;
  }

  async close(): Promise<void> {}
}
