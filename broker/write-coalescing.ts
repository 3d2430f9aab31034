import type { Duplex } from 'node:stream';

type WriteCallback = (err?: Error | null) => void;

/**
 * Gathers what is written to one connection within a turn of the event loop into one buffer, written once.
 *
 * Aedes delivers each packet in its own setImmediate, and mqtt-packet writes a PUBLISH as six chunks (header, length,
 * topic length, topic, message id, payload): a commit of n messages is 6n writes on every subscriber's stream. Corked,
 * they still cost the stream machinery 6n times and the syscall 6n iovecs (the topic, a string, encoded by the handle);
 * over a WebSocket each chunk is a frame of its own. Gathered here, the stream sees one write per turn: one syscall,
 * one frame, for a delay of one turn (until the loop's next check phase).
 *
 * Writes report "keep going" (true): applied over boundOutput, which cuts off a connection that stops reading instead
 * of making anybody wait for it. Gathered bytes are dropped if the stream is destroyed before the turn ends, as corked
 * ones would be; end() writes them first.
 */
export function coalesceWrites(stream: Duplex): void {
  const write = stream.write as (chunk: Buffer, callback?: WriteCallback) => boolean;
  const end = stream.end;
  let chunks: Buffer[] = [];
  let bytes = 0;
  let callbacks: WriteCallback[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (chunks.length === 0) return;
    const gathered = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
    const waiting = callbacks;
    chunks = [];
    bytes = 0;
    callbacks = [];
    if (stream.destroyed || stream.writableEnded) return;
    if (waiting.length === 0) write.call(stream, gathered);
    else write.call(stream, gathered, (err?: Error | null) => {
      for (const callback of waiting) callback(err);
    });
  };
  stream.write = function gatheredWrite(chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : (chunk as Buffer);
    chunks.push(buffer);
    bytes += buffer.length;
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
