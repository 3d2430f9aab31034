import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { FLUSH_SLICE_CONNECTIONS, gatherOutput } from '../broker/connection-output.js';

/** A loopback pair: the server side is returned to write on, the client side collects what arrives. */
async function pair(): Promise<{ writer: Socket; received: () => Buffer; reader: Socket; close: () => void }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const reader = connect((server.address() as { port: number }).port, '127.0.0.1');
  const [writer] = (await once(server, 'connection')) as [Socket];
  const chunks: Buffer[] = [];
  reader.on('data', (chunk: Buffer) => chunks.push(chunk));
  const close = () => {
    reader.destroy();
    writer.destroy();
    server.close();
  };
  return { writer, reader, received: () => Buffer.concat(chunks), close };
}

/** Counts the writes that reach the socket's handle: one per _write or _writev, i.e. one syscall each. */
function countHandleWrites(socket: Socket): () => number {
  let count = 0;
  const internals = socket as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  for (const name of ['_write', '_writev'] as const) {
    const original = internals[name].bind(socket);
    internals[name] = (...args: unknown[]) => {
      count += 1;
      original(...args);
    };
  }
  return () => count;
}

/** Writes like Aedes delivers: each packet from its own setImmediate, uncorked on the next tick as mqtt-packet does. */
async function writePacketsLikeAedes(socket: Socket, packets: Buffer[]): Promise<void> {
  await Promise.all(
    packets.map(
      (packet) =>
        new Promise<void>((resolve) =>
          setImmediate(() => {
            socket.cork();
            socket.write(packet.subarray(0, 2));
            socket.write(packet.subarray(2), () => resolve());
            process.nextTick(() => socket.uncork());
          }),
        ),
    ),
  );
}

const unexpectedOverflow = (_stream: unknown, buffered: number) => {
  throw new Error(`cut off with ${buffered} bytes unsent`);
};

describe('connection output: gathered per turn', () => {
  let close: () => void = () => undefined;
  afterEach(() => close());

  it('sends what one turn of the loop writes as one handle write, bytes intact and in order', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    const packets = Array.from({ length: 50 }, (_, i) => Buffer.from(`packet ${i} ${'x'.repeat(i)}|`));
    const expected = Buffer.concat(packets);

    gatherOutput(writer, Number.POSITIVE_INFINITY, unexpectedOverflow);
    const writes = countHandleWrites(writer);
    await writePacketsLikeAedes(writer, packets);
    while (received().length < expected.length) await once(reader, 'data');
    expect(received().equals(expected)).toBe(true);
    expect(writes()).toBe(1);

    // A later turn gets its own write: nothing waits for a next burst.
    await writePacketsLikeAedes(writer, packets.slice(0, 3));
    while (received().length < expected.length + Buffer.concat(packets.slice(0, 3)).length) await once(reader, 'data');
    expect(writes()).toBe(2);
  });

  it('keeps strings, callbacks and end(): UTF-8 bytes in order, each callback once written, gathered bytes before the end', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    gatherOutput(writer, Number.POSITIVE_INFINITY, unexpectedOverflow);
    const writes = countHandleWrites(writer);
    const called: string[] = [];
    writer.write(Buffer.from('a|'), () => called.push('a'));
    writer.write('ü|', 'utf8', () => called.push('ü'));
    writer.write('c|');
    writer.end();
    await once(reader, 'end');
    expect(received().toString()).toBe('a|ü|c|');
    expect(called).toEqual(['a', 'ü']);
    expect(writes()).toBe(1);
  });

  it('refuses at once what is neither bytes nor text, as the stream would, and sends the rest', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    gatherOutput(writer, Number.POSITIVE_INFINITY, unexpectedOverflow);
    writer.write(Buffer.from('a|'));
    expect(() => writer.write(undefined as never)).toThrow(TypeError);
    expect(() => writer.write(42 as never)).toThrow(TypeError);
    writer.write('b|');
    while (received().length < 4) await once(reader, 'data');
    expect(received().toString()).toBe('a|b|');
  });

  it('passes a large chunk on by reference, not copied per connection, still in one handle write', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    const passedOn: Buffer[] = [];
    const write = writer.write.bind(writer) as (chunk: Buffer) => boolean;
    writer.write = ((chunk: Buffer) => {
      passedOn.push(chunk);
      return write(chunk);
    }) as Socket['write'];
    gatherOutput(writer, Number.POSITIVE_INFINITY, unexpectedOverflow);
    const writes = countHandleWrites(writer);
    const payload = Buffer.alloc(4096, 0x70);
    for (const chunk of [Buffer.from('h1'), Buffer.from('i1'), payload, Buffer.from('h2'), Buffer.from('i2'), payload])
      writer.write(chunk);
    const expected = Buffer.concat([Buffer.from('h1i1'), payload, Buffer.from('h2i2'), payload]);
    while (received().length < expected.length) await once(reader, 'data');
    expect(received().equals(expected)).toBe(true);
    expect(passedOn.map((chunk) => (chunk === payload ? 'payload' : chunk.toString()))).toEqual([
      'h1i1',
      'payload',
      'h2i2',
      'payload',
    ]);
    expect(writes()).toBe(1);
  });

  it('sends a slice of connections at once when that many have output, before the turn ends; the rest at its end', async () => {
    // One message to a big group is written to every member in one loop: the first members' bytes must not wait for it.
    const streams = Array.from({ length: FLUSH_SLICE_CONNECTIONS + 10 }, () => {
      const stream = new PassThrough();
      gatherOutput(stream, Number.POSITIVE_INFINITY, unexpectedOverflow);
      return stream;
    });
    const sent = () => streams.filter((stream) => stream.readableLength > 0).length;
    for (const [n, stream] of streams.entries()) {
      stream.write(Buffer.from(`${n}a|`));
      stream.write(Buffer.from(`${n}b|`));
    }
    expect(sent()).toBe(FLUSH_SLICE_CONNECTIONS);
    await new Promise((resolve) => setImmediate(resolve));
    expect(sent()).toBe(streams.length);
    for (const [n, stream] of streams.entries()) expect(String(stream.read())).toBe(`${n}a|${n}b|`);
  });

  it('is what makes the difference: without it the same writes reach the handle one by one', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    const packets = Array.from({ length: 50 }, (_, i) => Buffer.from(`packet ${i}|`));
    const writes = countHandleWrites(writer);
    await writePacketsLikeAedes(writer, packets);
    while (received().length < Buffer.concat(packets).length) await once(reader, 'data');
    expect(writes()).toBeGreaterThan(10);
  });
});

describe('connection output: bounded', () => {
  let close: () => void = () => undefined;
  afterEach(() => close());

  it('cuts off a connection whose reader stopped once its unsent bytes pass the bound, and drops later writes', async () => {
    const { writer, reader, close: closePair } = await pair();
    close = closePair;
    reader.pause(); // reads nothing: the kernel's buffers fill, then the stream's
    const cuts: number[] = [];
    gatherOutput(writer, 256 * 1024, (stream, buffered) => {
      expect(stream).toBe(writer);
      cuts.push(buffered);
    });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let returned = true;
    for (let turn = 0; turn < 400 && !writer.destroyed; turn++) {
      returned &&= writer.write(chunk);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(writer.destroyed).toBe(true);
    expect(cuts).toHaveLength(1);
    expect(cuts[0]).toBeGreaterThan(256 * 1024);
    expect(returned).toBe(true); // never "wait for drain": nobody waits for this reader
    expect(writer.write(chunk)).toBe(true);
    expect(cuts).toHaveLength(1);
  });

  it('does not hold a burst that a reading client takes at once against it', async () => {
    const { writer, reader, received, close: closePair } = await pair();
    close = closePair;
    gatherOutput(writer, 16 * 1024, unexpectedOverflow);
    const burst = Array.from({ length: 64 }, (_, i) => Buffer.alloc(1000, 0x30 + (i % 10)));
    for (const chunk of burst) writer.write(chunk); // 64,000 bytes in one turn, four times the bound
    const expected = Buffer.concat(burst);
    while (received().length < expected.length) await once(reader, 'data');
    expect(received().equals(expected)).toBe(true);
    expect(writer.destroyed).toBe(false);
  });

  it('flushes every connection written to in a turn, each in one handle write', async () => {
    const pairs = await Promise.all([pair(), pair(), pair()]);
    close = () => {
      for (const p of pairs) p.close();
    };
    const writes = pairs.map(({ writer }) => {
      gatherOutput(writer, Number.POSITIVE_INFINITY, unexpectedOverflow);
      return countHandleWrites(writer);
    });
    for (let i = 0; i < 10; i++) for (const [n, { writer }] of pairs.entries()) writer.write(Buffer.from(`${n}:${i}|`));
    for (const [n, { reader, received }] of pairs.entries()) {
      const expected = Array.from({ length: 10 }, (_, i) => `${n}:${i}|`).join('');
      while (received().length < expected.length) await once(reader, 'data');
      expect(received().toString()).toBe(expected);
    }
    expect(writes.map((count) => count())).toEqual([1, 1, 1]);
  });
});
