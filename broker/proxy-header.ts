import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';
import { IPv4ProxyAddress, IPv6ProxyAddress, V1ProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js';

/** The PROXY protocol's v2 signature (its spec, §2.2), and the longest header of each version Chorus reads. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_MAX_BYTES = 107; // §2.1
const V2_MAX_BYTES = 16 + 216; // the fixed part and the longest addresses with room for a few TLVs

/**
 * Reads the PROXY protocol header (v1 or v2, as HAProxy's `send-proxy` and `send-proxy-v2` write it) that a trusted
 * load balancer puts before a client's bytes, and resolves with the client's address; the bytes after the header are
 * put back for MQTT. A header for the proxy's own connection (v1 UNKNOWN, v2 LOCAL: a health check) resolves with the
 * proxy's address. Rejects when the header is missing, malformed or longer than the protocol allows, or does not
 * arrive within `timeoutMs`.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const done = (err: Error | null, address?: string) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(address!);
    };
    const onClose = () => done(new Error('closed before its PROXY header'));
    const timer = setTimeout(() => done(new Error('no PROXY header in time')), timeoutMs);
    const onReadable = () => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
        buffered = Buffer.concat([buffered, chunk]);
      }
      let parsed: { length: number; address: string } | null;
      try {
        parsed = parseHeader(buffered, socket.remoteAddress ?? '');
      } catch (err) {
        return done(err as Error);
      }
      if (!parsed) return;
      const rest = buffered.subarray(parsed.length);
      if (rest.length > 0) socket.unshift(rest);
      done(null, parsed.address);
    };
    socket.on('readable', onReadable);
    socket.once('close', onClose);
  });
}

/** The header at the start of `bytes` and the client address it names; null while more bytes are needed. */
function parseHeader(bytes: Buffer, proxyAddress: string): { length: number; address: string } | null {
  if (bytes.length >= V2_SIGNATURE.length && bytes.subarray(0, V2_SIGNATURE.length).equals(V2_SIGNATURE)) {
    if (bytes.length < 16) return null;
    const length = 16 + bytes.readUInt16BE(14);
    if (length > V2_MAX_BYTES) throw new Error('PROXY v2 header too long');
    if (bytes.length < length) return null;
    const header = V2ProxyProtocol.parse(new Uint8Array(bytes.subarray(0, length)));
    const { proxyAddress: addresses } = header;
    // LOCAL (command 0) and unspecified or unix families carry no client address: the proxy speaks for itself.
    if (addresses instanceof IPv4ProxyAddress || addresses instanceof IPv6ProxyAddress) {
      if ((bytes[12]! & 0x0f) === 0) return { length, address: proxyAddress };
      return { length, address: ipaddr.fromByteArray([...addresses.sourceAddress.address]).toString() };
    }
    return { length, address: proxyAddress };
  }
  if (
    V2_SIGNATURE.subarray(0, Math.min(bytes.length, V2_SIGNATURE.length)).equals(bytes.subarray(0, V2_SIGNATURE.length))
  ) {
    return null; // the start of a v2 signature
  }
  const end = bytes.indexOf('\r\n');
  if (end === -1) {
    if (bytes.length >= V1_MAX_BYTES || !'PROXY '.startsWith(bytes.subarray(0, 6).toString('latin1')))
      throw new Error('no PROXY header');
    return null;
  }
  const line = bytes.subarray(0, end + 2).toString('latin1');
  if (line.length > V1_MAX_BYTES) throw new Error('PROXY v1 header too long');
  if (line === 'PROXY UNKNOWN\r\n' || line.startsWith('PROXY UNKNOWN '))
    return { length: line.length, address: proxyAddress };
  return { length: line.length, address: V1ProxyProtocol.parse(line).source.ipAddress };
}
