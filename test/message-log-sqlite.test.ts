import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageLogSqlite } from '../sequencer/message-log-sqlite.js';
import { messageLogContract } from './message-log.contract.js';

const file = join(mkdtempSync(join(tmpdir(), 'chorus-log-')), 'messages.db');
messageLogContract('sqlite', async () => new MessageLogSqlite(file, { synchronous: 'full' }));
