import { afterAll, beforeAll } from 'vitest';
import type { CassandraSession } from '../sequencer/cassandra-session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import { MessageLogCassandra } from '../sequencer/message-log-cassandra.js';
import { messageLogContract } from './message-log.contract.js';
import { connectCassandra, testKeyspace } from './services.js';

const keyspace = testKeyspace();
let db: CassandraSession;
// One node: every log the suite opens (a reopen stands for a restart) writes under this node's holds.
let writers: GroupWritersCassandra;
beforeAll(async () => {
  db = await connectCassandra(keyspace);
  writers = await GroupWritersCassandra.start(db, 'contract');
});
afterAll(async () => {
  await writers.close();
  await db.close();
});

messageLogContract('cassandra', () => MessageLogCassandra.open(db, writers, { ttlSeconds: 3600 }));
