import type { Duplex } from 'node:stream';
import type { Client } from 'aedes';
import { packetArrived, parserBetweenPackets } from './aedes.js';

/** A PUBACK with nothing after its packet identifier: type 4, flags 0 [MQTT-3.4.1], Remaining Length 2. */
const PUBACK_FIRST_BYTE = 0x40;
const PUBACK_REMAINING_LENGTH = 2;
const PUBACK_BYTES = 4;

/**
 * A clean session's PUBACKs, taken as its connection reads them, before Aedes's parser sees them.
 *
 * Every QoS 1 delivery comes back as a PUBACK, so on a node that delivers group messages most of what its connections
 * read is PUBACKs, one per delivery. Through Aedes each read is buffered in the stream, announced a tick later
 * ('readable'), read out, appended to the parser's buffer list and parsed into packets; each is handled with a lookup
 * in the persistence that finds nothing for a clean session (Aedes keeps no copy of its QoS 1 deliveries) and an 'ack'
 * event a promise's turn later, and only then is the connection read again. Here a read that is nothing but whole
 * PUBACKs of Remaining Length 2 (MQTT 3.1.1 §3.4; in MQTT 5 the Reason Code may be left out when it is Success and
 * there are no properties [MQTT-3.4.2-1]) is taken as it arrives: the keep alive is told a packet came
 * [MQTT-3.1.2-24], and each PUBACK is reported to `onPuback`, in order.
 *
 * Everything else goes to Aedes, as before: a read with any other packet in it (a PUBACK with a Reason Code, a
 * PINGREQ, part of a PUBACK), a packet identifier of 0 [MQTT-2.3.1-1], and the PUBACKs of a persistent session, which
 * clear the deliveries its session keeps [MQTT-4.3.2-1]. A read is taken only when nothing read before it is still
 * waiting for Aedes, in the stream or in the parser, so PUBACKs are reported in the order they came.
 */
export class PubackReads {
  /** The connections' push: one function for all of them, so that a connection holds no closure of its own. */
  private readonly push: Duplex['push'];

  constructor(onPuback: (client: Client) => void) {
    this.push = function pushPubacksFirst(
      this: Duplex & { client?: Client },
      chunk: unknown,
      encoding?: BufferEncoding,
    ) {
      const client = this.client;
      if (
        client?.connected &&
        client.clean &&
        this.readableLength === 0 &&
        onlyPubacks(chunk) &&
        parserBetweenPackets(client)
      ) {
        packetArrived(client);
        for (let at = 0; at < chunk.length; at += PUBACK_BYTES) onPuback(client);
        return true; // read on
      }
      // The stream's own push (a net.Socket's or a WebSocket stream's: Readable's), which this one stands in front of.
      return (Object.getPrototypeOf(this) as Duplex).push.call(this, chunk, encoding);
    };
  }

  /** Takes the client's PUBACKs from now on, when it is a clean session. */
  take(client: Client): void {
    const conn = client.conn as Duplex;
    // A connection whose push something else has replaced is left as it is.
    if (!client.clean || Object.hasOwn(conn, 'push')) return;
    conn.push = this.push;
  }
}

/** Whether the chunk is one or more whole PUBACKs of Remaining Length 2, none with packet identifier 0. */
function onlyPubacks(chunk: unknown): chunk is Buffer {
  if (!Buffer.isBuffer(chunk) || chunk.length === 0 || chunk.length % PUBACK_BYTES !== 0) return false;
  for (let at = 0; at < chunk.length; at += PUBACK_BYTES) {
    if (chunk[at] !== PUBACK_FIRST_BYTE || chunk[at + 1] !== PUBACK_REMAINING_LENGTH) return false;
    if (chunk[at + 2] === 0 && chunk[at + 3] === 0) return false;
  }
  return true;
}
