import type { Duplex } from 'node:stream';

type WriteCallback = (err?: Error | null) => void;

/**
 * Chunks this large are written by reference, not copied: a big message to many subscribers would otherwise be held
 * once per connection wherever a socket cannot take it at once, instead of once for all of them.
 */
const SHARED_CHUNK_BYTES = 1024;

/**
 * Gathers what is written to one connection within a turn of the event loop, and writes it at the turn's end as one
 * write: small chunks copied together, large ones (payloads) passed by reference, several buffers in one corked batch.
 *
 * Aedes delivers each packet in its own setImmediate, and mqtt-packet writes a PUBLISH as six chunks (header, length,
 * topic length, topic, message id, payload): a commit of n messages is 6n writes on every subscriber's stream. Corked,
 * they still cost the stream machinery 6n times and the syscall 6n iovecs (the topic, a string, encoded by the handle);
 * over a WebSocket each chunk is a frame of its own. Gathered here, the stream sees a write per turn (and per large
 * chunk): one syscall, for a delay of one turn (until the loop's next check phase).
 *
 * Writes report "keep going" (true): applied over boundOutput, which cuts off a connection that stops reading instead
 * of making anybody wait for it. Gathered bytes are dropped if the stream is destroyed before the turn ends, as corked
 * ones would be; end() writes them first.
 */
export function coalesceWrites(stream: Duplex): void {
  const write = stream.write as (chunk: Buffer, callback?: WriteCallback) => boolean;
  const end = stream.end;
  let chunks: Buffer[] = [];
  let callbacks: WriteCallback[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (chunks.length === 0) return;
    const gathered = chunks;
    const waiting = callbacks;
    chunks = [];
    callbacks = [];
    if (stream.destroyed || stream.writableEnded) return;
    // Runs of small chunks become one buffer each; a large chunk stands on its own between them.
    const batch: Buffer[] = [];
    let run: Buffer[] = [];
    const endRun = () => {
      if (run.length > 0) batch.push(run.length === 1 ? run[0]! : Buffer.concat(run));
      run = [];
    };
    for (const chunk of gathered) {
      if (chunk.length < SHARED_CHUNK_BYTES) run.push(chunk);
      else {
        endRun();
        batch.push(chunk);
      }
    }
    endRun();
    const last = batch.pop()!;
    // Corked only when there is more than one buffer, so that they leave in one syscall; the usual single one goes as is.
    const corked = batch.length > 0;
    if (corked) stream.cork();
    for (const buffer of batch) write.call(stream, buffer);
    if (waiting.length === 0) write.call(stream, last);
    else
      write.call(stream, last, (err?: Error | null) => {
        for (const callback of waiting) callback(err);
      });
    if (corked) stream.uncork();
  };
  stream.write = function gatheredWrite(chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : (chunk as Buffer));
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') callbacks.push(done as WriteCallback);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    return true;
  } as Duplex['write'];
  stream.end = function gatheredEnd(this: Duplex, ...args: unknown[]): Duplex {
    flush();
    return (end as (...a: unknown[]) => Duplex).apply(this, args);
  } as Duplex['end'];
}
