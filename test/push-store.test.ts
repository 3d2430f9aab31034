import { join } from 'node:path';
import { afterAll } from 'vitest';
import { PushStoreCassandra } from '../push/push-store-cassandra.js';
import { PushStoreSqlite } from '../push/push-store-sqlite.js';
import type { CassandraSession } from '../cassandra/session.js';
import { tempDir } from './harness.js';
import { pushStoreContract } from './push-store.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

pushStoreContract('sqlite', async () => new PushStoreSqlite(join(tempDir(), 'push.db')));

const sessions: CassandraSession[] = [];
afterAll(async () => {
  await Promise.all(sessions.map((s) => s.close()));
});
pushStoreContract('cassandra', async () => {
  const db = await connectCassandra(testKeyspace());
  sessions.push(db);
  return PushStoreCassandra.open(db);
});
