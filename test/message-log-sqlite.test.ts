import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { MessageLogSqliteThread } from '../sequencer/message-log-sqlite-thread.js';
import { messageLogContract } from './message-log.contract.js';

const file = join(mkdtempSync(join(tmpdir(), 'chorus-log-')), 'messages.db');
messageLogContract('sqlite', async () => new MessageLogSqlite(file, { synchronous: 'full' }));

const threadFile = join(mkdtempSync(join(tmpdir(), 'chorus-log-thread-')), 'messages.db');
messageLogContract('sqlite, writes on their own thread', async () => new MessageLogSqliteThread(threadFile, { synchronous: 'full' }));
