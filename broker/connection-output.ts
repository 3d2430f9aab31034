import type { Duplex } from 'node:stream';

type WriteCallback = (err?: Error | null) => void;

/**
 * Chunks this large are written by reference, not copied: a big message to many subscribers would otherwise be held
 * once per connection wherever a socket cannot take it at once, instead of once for all of them.
 */
export const SHARED_CHUNK_BYTES = 1024;

/** One connection's output: what its turn gathered, and its bound. One object, no closures: it is kept per connection. */
interface Output {
  readonly stream: Duplex;
  /** The stream's own write and end, under the ones installed here. */
  readonly write: (chunk: Buffer, callback?: WriteCallback) => boolean;
  readonly end: Duplex['end'];
  readonly uncork: Duplex['uncork'];
  readonly maxBytes: number;
  readonly onOverflow: (stream: Duplex, bufferedBytes: number) => void;
  /** Gathered this turn (null when nothing is). */
  chunks: Buffer[] | null;
  callbacks: WriteCallback[] | null;
  /** Past its bound: destroyed, and whatever is written from then on is dropped. */
  cut: boolean;
}

const outputs = new WeakMap<Duplex, Output>();
/** The connections with gathered output, flushed together at the end of the turn by one setImmediate. */
let due: Output[] = [];
/** Whether that setImmediate is already set for this turn (a slice flushed meanwhile leaves `due` empty). */
let flushSet = false;
/**
 * This many connections with gathered output are flushed at once, before the turn ends: one message to a big group is
 * written to each of its members in one synchronous loop (Aedes's router), and held to the end of the turn none of the
 * bytes would leave until the whole loop had run. Flushed in slices, the first members' bytes are on their way (and
 * their readers, on another core, at work) while the loop goes on. A slice is far more connections than a turn of
 * small groups' traffic has, so their writes stay one per turn.
 */
export const FLUSH_SLICE_CONNECTIONS = 512;

/**
 * Each connection's output: what is written to it within a turn of the event loop goes out at the turn's end as one
 * write, and its unsent bytes are bounded.
 *
 * Gathering: Aedes delivers each packet in its own setImmediate, and mqtt-packet writes a PUBLISH as six chunks (header,
 * length, topic length, topic, message id, payload): a commit of n messages is 6n writes on every subscriber's stream,
 * and over a WebSocket each chunk is a frame of its own. Gathered, the stream sees one write per turn (and per large
 * chunk): one syscall, for a delay of one turn (until the loop's next check phase). Small chunks are copied together,
 * large ones (payloads) passed by reference, several buffers in one corked batch. One setImmediate per turn flushes
 * every connection that has output, not one per connection (and FLUSH_SLICE_CONNECTIONS of them are flushed at once).
 *
 * Bounding: Aedes waits for a socket's 'drain' when a write returns false, inside the router it shares with every other
 * client: one client that stops reading would hold up deliveries to everyone on the node, and its backlog pile up in
 * memory. Here every write reports "keep going" (true), and a connection whose unsent bytes (`writableLength`: what the
 * kernel, or for a WebSocket the socket under it, has not taken) pass `maxBytes` after a flush is destroyed at once,
 * with `onOverflow` told which connection it was and how many bytes were waiting. What it missed is in the history
 * API, where clients catch up after a reconnect. The check follows each flush, so a burst that a reading client takes
 * at once is not held against it.
 *
 * Gathered bytes are dropped if the stream is destroyed before the turn ends, as corked ones would be; end() writes
 * them first. Writes after the cut are dropped.
 */
export function gatherOutput(
  stream: Duplex,
  maxBytes: number,
  onOverflow: (stream: Duplex, bufferedBytes: number) => void,
): void {
  outputs.set(stream, {
    stream,
    write: stream.write as Output['write'],
    end: stream.end,
    uncork: stream.uncork,
    maxBytes,
    onOverflow,
    chunks: null,
    callbacks: null,
    cut: false,
  });
  stream.write = gatheredWrite as Duplex['write'];
  stream.end = gatheredEnd as Duplex['end'];
  stream.uncork = boundedUncork;
}

// Shared by every connection (its output found by the stream), so that a connection costs no function objects.
function gatheredWrite(this: Duplex, chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
  const output = outputs.get(this)!;
  // As the stream's own write does: anything but bytes or text is refused here, where the writer can catch it (Aedes
  // does, and closes that client), not later in the flush, where nobody could.
  if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array))
    throw new TypeError('The "chunk" argument must be of type string or an instance of Buffer or Uint8Array');
  if (output.cut) return true;
  const buffer =
    typeof chunk === 'string'
      ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
      : (chunk as Buffer);
  const done = typeof encoding === 'function' ? encoding : callback;
  if (output.chunks === null) {
    output.chunks = [buffer];
    if (!flushSet) {
      flushSet = true;
      setImmediate(flushTurn);
    }
    due.push(output);
  } else output.chunks.push(buffer);
  if (typeof done === 'function') (output.callbacks ??= []).push(done as WriteCallback);
  if (due.length >= FLUSH_SLICE_CONNECTIONS) flushDue();
  return true;
}

function gatheredEnd(this: Duplex, ...args: unknown[]): Duplex {
  const output = outputs.get(this)!;
  flush(output);
  return (output.end as (...a: unknown[]) => Duplex).apply(this, args);
}

// mqtt-packet corks a stream for each packet until the next tick: a flush made meanwhile is checked here.
function boundedUncork(this: Duplex): void {
  const output = outputs.get(this)!;
  output.uncork.call(this);
  checkBound(output);
}

function flushTurn(): void {
  flushSet = false;
  flushDue();
}

function flushDue(): void {
  const flushing = due;
  due = []; // what the flushes' callbacks write is gathered for the next turn
  for (const output of flushing) flush(output);
}

function flush(output: Output): void {
  const { chunks, callbacks, stream } = output;
  if (chunks === null) return;
  output.chunks = null;
  output.callbacks = null;
  if (output.cut || stream.destroyed || stream.writableEnded) return;
  const batch = chunks.length === 1 ? chunks : batchOf(chunks);
  const last = batch.pop()!;
  // Corked only when there is more than one buffer, so that they leave in one syscall; the usual single one goes as is.
  const corked = batch.length > 0;
  if (corked) stream.cork();
  for (const buffer of batch) output.write.call(stream, buffer);
  if (callbacks === null) output.write.call(stream, last);
  else
    output.write.call(stream, last, (err?: Error | null) => {
      for (const callback of callbacks) callback(err);
    });
  if (corked) output.uncork.call(stream);
  checkBound(output);
}

/** Runs of small chunks become one buffer each; a large chunk stands on its own between them. */
function batchOf(chunks: Buffer[]): Buffer[] {
  const batch: Buffer[] = [];
  let runStart = 0;
  for (let i = 0; i <= chunks.length; i++) {
    if (i < chunks.length && chunks[i]!.length < SHARED_CHUNK_BYTES) continue;
    if (i - runStart === 1) batch.push(chunks[runStart]!);
    else if (i > runStart) batch.push(Buffer.concat(chunks.slice(runStart, i)));
    if (i < chunks.length) batch.push(chunks[i]!);
    runStart = i + 1;
  }
  return batch;
}

/** Cuts the connection off when its unsent bytes pass the bound. Corked, they are not on their way yet: not counted. */
function checkBound(output: Output): void {
  const { stream } = output;
  if (output.cut || stream.writableCorked > 0) return;
  const buffered = stream.writableLength;
  if (buffered <= output.maxBytes) return;
  output.cut = true;
  output.onOverflow(stream, buffered);
  stream.destroy();
}
