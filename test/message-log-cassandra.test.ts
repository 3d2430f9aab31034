import { afterAll } from 'vitest';
import type { Redis } from 'ioredis';
import type { CassandraSession } from '../sequencer/cassandra-session.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { SeqHintsRedis } from '../sequencer/seq-hints-redis.js';
import { messageLogContract } from './message-log.contract.js';
import { connectCassandra, connectRedis, testKeyspace } from './services.js';

const keyspace = testKeyspace();
const open: { db: CassandraSession; redis: Redis }[] = [];
afterAll(async () => {
  await Promise.all(open.map(async ({ db, redis }) => (await db.close(), redis.disconnect())));
});

messageLogContract('cassandra + redis hints', async () => {
  const db = await connectCassandra(keyspace);
  const redis = await connectRedis();
  open.push({ db, redis });
  return MessageLogCassandra.open(db, new SeqHintsRedis(redis, `${keyspace}:seq:`), { ttlSeconds: 3600, nodeId: `test-${open.length}` });
});
