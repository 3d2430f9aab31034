import type { Duplex } from 'node:stream';

/**
 * Bounds what one connection may have waiting to be sent, and makes writing to it never wait.
 *
 * Aedes waits for a socket's 'drain' when a write returns false, inside the router it shares with every other client:
 * one client that stops reading holds up deliveries to everyone on the node, and its backlog piles up in memory. Here
 * every write reports "keep going", and a connection whose unsent bytes pass `maxBytes` is destroyed at once instead.
 * What it missed is in the history API, where clients catch up after a reconnect.
 *
 * Unsent bytes are `writableLength` once the stream is uncorked: what the kernel (or, for a WebSocket, the socket under
 * it) has not taken. While corked (mqtt-packet corks for each packet), writes only gather, so the check waits for the
 * uncork. Write coalescing sits over this bound: each turn's writes reach it as one, checked as it is made, so a burst
 * that a reading client takes at once is not held against it. Writes after the cut are dropped.
 */
export function boundOutput(stream: Duplex, maxBytes: number, onOverflow: (bufferedBytes: number) => void): void {
  const write = stream.write;
  const uncork = stream.uncork;
  let cut = false;
  const check = () => {
    if (cut || stream.writableCorked > 0) return;
    const buffered = stream.writableLength;
    if (buffered <= maxBytes) return;
    cut = true;
    onOverflow(buffered);
    stream.destroy();
  };
  stream.write = function boundedWrite(this: Duplex, ...args: unknown[]): boolean {
    if (cut) return true;
    (write as (...a: unknown[]) => boolean).apply(this, args);
    check();
    return true;
  } as Duplex['write'];
  stream.uncork = function boundedUncork(this: Duplex): void {
    uncork.call(this);
    check();
  };
}
