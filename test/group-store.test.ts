import { join } from 'node:path';
import { afterAll } from 'vitest';
import { GroupStoreCassandra } from '../groups/group-store-cassandra.js';
import { GroupStoreSqlite } from '../groups/group-store-sqlite.js';
import type { CassandraSession } from '../cassandra/session.js';
import { groupStoreContract } from './group-store.contract.js';
import { tempDir } from './harness.js';
import { connectCassandra, testKeyspace } from './services.js';

const sessions: CassandraSession[] = [];
afterAll(async () => {
  for (const db of sessions) await db.close();
});

groupStoreContract('GroupStoreSqlite', async () => new GroupStoreSqlite(join(tempDir(), 'groups.db'), 'normal'));

groupStoreContract(
  'GroupStoreCassandra (real Cassandra)',
  async () => {
    const db = await connectCassandra(testKeyspace());
    sessions.push(db);
    return GroupStoreCassandra.open(db);
  },
  { racingAddsBounded: false },
);
