import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CassandraSession } from '../sequencer/cassandra-session.js';
import { GroupWritersCassandra } from '../sequencer/group-writers-cassandra.js';
import type { AppendOutcome, MessageDraft } from '../sequencer/message-log.js';
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

describe('MessageLogCassandra dedup entries', () => {
  const draft = (clientMsgId: string): MessageDraft => ({ senderId: 'u', clientMsgId, type: 'text', body: clientMsgId, createdAtMs: Date.now() });

  it('ignores an entry whose seqs hold other messages (left by a write that failed), and stamps the send anew', async () => {
    const log = await MessageLogCassandra.open(db, writers, { ttlSeconds: 3600 });
    const groupId = `g-${randomUUID()}`;
    // What a failed commit leaves: the entry for "lost" went in, its message did not, and seq 1 went to "other".
    await db.execute('UPDATE message_dedup SET first_seq = 1, last_seq = 1 WHERE group_id = ? AND sender_id = ? AND client_msg_id IN ?', [groupId, 'u', ['lost']]);
    await log.append([{ groupId, drafts: [draft('other')] }]);
    const [[outcome]] = (await log.append([{ groupId, drafts: [draft('lost')] }])) as [[AppendOutcome]];
    expect([outcome.message.seq, outcome.duplicate]).toEqual([2, false]);
    // And the entry now names the stored message: a retry is a duplicate of seq 2.
    const [[retry]] = (await log.append([{ groupId, drafts: [draft('lost')] }])) as [[AppendOutcome]];
    expect([retry.message.seq, retry.duplicate]).toEqual([2, true]);
  });

  it('finds a sender whose messages in one commit were interleaved with another sender', async () => {
    const log = await MessageLogCassandra.open(db, writers, { ttlSeconds: 3600 });
    const groupId = `g-${randomUUID()}`;
    const mixed = ['a1', 'b1', 'a2', 'b2', 'a3'].map((id) => ({ ...draft(id), senderId: id[0]! }));
    await log.append([{ groupId, drafts: mixed }]);
    const [retries] = await log.append([{ groupId, drafts: [mixed[2]!, mixed[3]!] }]);
    expect(retries!.map((o) => [o.message.seq, o.message.clientMsgId, o.duplicate])).toEqual([
      [3, 'a2', true],
      [4, 'b2', true],
    ]);
  });
});
