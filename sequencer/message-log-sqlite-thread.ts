import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { ChorusError, isChorusError, type ReactionCount, type StampedMessage } from '../protocol/index.js';
import type { AppendOutcome, ExpiringLog, GroupAppend, MessageLog } from './message-log.js';
import { MessageLogSqlite, type SqliteLogOptions } from './message-log-sqlite.js';

/** Calls waiting for the writer thread; past this a write is refused as OVERLOADED instead of queued. */
const MAX_PENDING_WRITES = 1_000;

type WriteCall =
  | { id: number; method: 'append'; args: [GroupAppend[]] }
  | { id: number; method: 'deleteGroup'; args: [string] }
  | { id: number; method: 'expire'; args: [string, number, number] }
  | { id: number; method: 'close'; args: [] };
type WriteReply = {
  id: number;
  result?: unknown;
  error?: { name: string; code?: string; message: string; chorus: boolean };
};

interface ThreadData {
  role: 'chorus-message-log-writer';
  path: string;
  options: SqliteLogOptions;
}

/**
 * The SQLite message log with its writes on a thread of their own: the same file and the same rules as
 * MessageLogSqlite (it is one, on each side), but a commit's fsync no longer stops the event loop. better-sqlite3 is
 * synchronous, so in the main thread every commit held up every socket for its 0.5-2.5 ms (measured: 75-95 ms of each
 * second at 500-1,500 msg/s across 50 groups); here the loop keeps delivering and gathering the next commit meanwhile.
 *
 * Writes (append, deleteGroup, expire) run on the writer thread one after another, in the order they were called: the log's
 * atomicity and per-group ordering are the single connection's, as before. Reads run on the main thread through a
 * second connection: WAL lets them run beside a write, and a write has committed before its promise resolves, so a read
 * started after it sees it. A writer thread that dies fails its calls with STORE_UNAVAILABLE (a transaction it had
 * begun is rolled back by SQLite) and the next write starts a new one.
 */
export class MessageLogSqliteThread implements MessageLog, ExpiringLog {
  private readonly reader: MessageLogSqlite;
  private worker: Worker | null = null;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly options: SqliteLogOptions,
  ) {
    // Opened here first, so the schema exists (and is migrated) before the writer opens the file.
    this.reader = new MessageLogSqlite(path, options);
    // Started now, not at the first write: that write does not wait for a thread to boot, and the thread's memory
    // (its own V8 isolate: 19-20 MB of RSS, measured) is there from the start rather than appearing under load.
    this.startWorker();
  }

  append(batch: GroupAppend[]): Promise<AppendOutcome[][]> {
    return this.write('append', [batch]) as Promise<AppendOutcome[][]>;
  }

  async deleteGroup(groupId: string): Promise<void> {
    await this.write('deleteGroup', [groupId]);
  }

  async expire(groupId: string, beforeMs: number, limit: number): Promise<number> {
    return (await this.write('expire', [groupId, beforeMs, limit])) as number;
  }

  groupsAfter(afterGroupId: string, limit: number): Promise<string[]> {
    return this.reader.groupsAfter(afterGroupId, limit);
  }

  firstSeq(groupId: string): Promise<number> {
    return this.reader.firstSeq(groupId);
  }

  readAfter(groupId: string, afterSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.reader.readAfter(groupId, afterSeq, limit);
  }

  readBefore(groupId: string, beforeSeq: number, limit: number): Promise<StampedMessage[]> {
    return this.reader.readBefore(groupId, beforeSeq, limit);
  }

  lastSeq(groupId: string): Promise<number> {
    return this.reader.lastSeq(groupId);
  }

  reactions(groupId: string, seqs: number[], viewerId: string): Promise<Map<number, ReactionCount[]>> {
    return this.reader.reactions(groupId, seqs, viewerId);
  }

  /** Waits for the writes already called (the thread runs them in order), then closes both connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.worker) {
      const worker = this.worker;
      await this.call('close', []).catch(() => undefined);
      await worker.terminate();
    }
    await this.reader.close();
  }

  private write(method: WriteCall['method'], args: WriteCall['args']): Promise<unknown> {
    if (this.closed) return Promise.reject(new ChorusError('STORE_UNAVAILABLE', 'the message log is closed'));
    if (this.pending.size >= MAX_PENDING_WRITES)
      return Promise.reject(new ChorusError('OVERLOADED', 'the message log has too many writes waiting'));
    return this.call(method, args);
  }

  private call(method: WriteCall['method'], args: WriteCall['args']): Promise<unknown> {
    const worker = this.worker ?? this.startWorker();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, method, args } as WriteCall);
    });
  }

  private startWorker(): Worker {
    const data: ThreadData = { role: 'chorus-message-log-writer', path: this.path, options: this.options };
    const self = new URL(import.meta.url);
    // Run from TypeScript sources (tests), the thread loads this same file through tsx's loader, as its parent did.
    const worker = self.pathname.endsWith('.ts')
      ? new Worker(
          `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(self.href)}); })`,
          { eval: true, workerData: data },
        )
      : new Worker(self, { workerData: data });
    worker.unref(); // only while calls wait on it does it keep the process alive (call, below)
    worker.on('message', (reply: WriteReply) => {
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (!reply.error) call.resolve(reply.result);
      else if (reply.error.chorus) call.reject(new ChorusError(reply.error.code as never, reply.error.message));
      else
        call.reject(
          Object.assign(
            new Error(reply.error.message),
            { name: reply.error.name },
            reply.error.code ? { code: reply.error.code } : {},
          ),
        );
    });
    const stopped = (reason: string) => {
      if (this.worker !== worker) return;
      this.worker = null;
      for (const call of this.pending.values())
        call.reject(new ChorusError('STORE_UNAVAILABLE', `the message log's writer stopped: ${reason}`));
      this.pending.clear();
    };
    worker.on('error', (err) => stopped(err.message));
    worker.on('exit', (code) => stopped(`exit code ${code}`));
    this.worker = worker;
    return worker;
  }
}

/** The writer thread: one MessageLogSqlite, its calls run in the order they arrive. */
function serveWrites(data: ThreadData): void {
  const log = new MessageLogSqlite(data.path, data.options);
  const port = parentPort!;
  port.on('message', async (call: WriteCall) => {
    try {
      const result =
        call.method === 'append'
          ? await log.append(call.args[0])
          : call.method === 'deleteGroup'
            ? await log.deleteGroup(call.args[0])
            : call.method === 'expire'
              ? await log.expire(...call.args)
              : await log.close();
      port.postMessage({ id: call.id, result } satisfies WriteReply);
    } catch (err) {
      const error = err as Error & { code?: unknown };
      port.postMessage({
        id: call.id,
        error: {
          name: error.name,
          message: error.message,
          chorus: isChorusError(err),
          ...(typeof error.code === 'string' ? { code: error.code } : {}),
        },
      } satisfies WriteReply);
    }
  });
}

if (!isMainThread && (workerData as ThreadData | undefined)?.role === 'chorus-message-log-writer')
  serveWrites(workerData as ThreadData);
