import type { Duplex } from 'node:stream';

/**
 * Watches the MQTT fixed headers going by on a TCP stream and reports the first packet whose Remaining Length is
 * larger than `maxBytes`, as soon as its header arrives: the broker can then drop the connection before buffering the
 * body. MQTT 3.1.1 has no way to refuse a packet for its size, so closing is the only answer (clause 3.1.1 §2.2.3).
 *
 * It is passive: a 'data' listener beside Aedes's 'readable' one sees every chunk Aedes reads, and changes nothing.
 */
export function watchFrameSizes(stream: Duplex, maxBytes: number, onTooLarge: (size: number) => void): void {
  let state: 'type' | 'length' | 'body' = 'type';
  let length = 0;
  let multiplier = 1;
  let remaining = 0;
  stream.on('data', (chunk: Buffer) => {
    let i = 0;
    while (i < chunk.length) {
      if (state === 'type') {
        state = 'length';
        length = 0;
        multiplier = 1;
        i += 1;
      } else if (state === 'length') {
        const byte = chunk[i]!;
        i += 1;
        length += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if (length > maxBytes) {
          onTooLarge(length);
          return;
        }
        if ((byte & 0x80) === 0) {
          remaining = length;
          state = remaining === 0 ? 'type' : 'body';
        }
      } else {
        const step = Math.min(remaining, chunk.length - i);
        remaining -= step;
        i += step;
        if (remaining === 0) state = 'type';
      }
    }
  });
}
