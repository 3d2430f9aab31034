import { ECDH } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import { ChorusError } from '../protocol/index.js';

/** Resolves a host name to its addresses. */
export type Resolve = (host: string) => Promise<string[]>;

export const systemResolve: Resolve = async (host) =>
  (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address);

/**
 * Special-purpose ranges that ipaddr.js's range() calls unicast: IPv4-compatible IPv6 (::/96, deprecated by RFC 4291
 * §2.5.5.1), which may carry traffic to the IPv4 address in its last 32 bits. Refused at registration here, and on
 * every connection by the sender's agent (its denyIPAddressList): one list for both checks.
 */
export const SPECIAL_RANGES_UNCLASSIFIED = ['::/96'];
const unclassified = SPECIAL_RANGES_UNCLASSIFIED.map((cidr) => ipaddr.parseCIDR(cidr));

/**
 * Whether Chorus may send requests to `address`: public unicast only, as ipaddr.js classifies ranges (not loopback,
 * private, link-local, carrier-grade NAT, NAT64, site-local, multicast, broadcast, reserved, documentation...), and
 * none of SPECIAL_RANGES_UNCLASSIFIED. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  const parsed = ipaddr.process(address);
  if (parsed.range() !== 'unicast') return false;
  return !unclassified.some(([network, bits]) => parsed.kind() === network.kind() && parsed.match(network, bits));
}

const isLoopback = (host: string): boolean =>
  host === 'localhost' || (ipaddr.isValid(host) && ipaddr.process(host).range() === 'loopback');

export interface EndpointPolicy {
  /** Tests only: a push service on loopback, on any port. */
  allowLoopback: boolean;
  resolve: Resolve;
}

const refuse = (message: string) => new ChorusError('INVALID_PUSH_ENDPOINT', message);

/**
 * The server sends requests to endpoints that users give it, so an endpoint is checked like any untrusted URL (SSRF):
 * https on port 443, no credentials, and a host that is, or resolves to, at least one public address. The sender's
 * agent checks again, on the addresses each connection actually uses (a name may resolve differently later).
 */
export async function checkPushEndpoint(endpoint: string, policy: EndpointPolicy): Promise<URL> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw refuse('endpoint is not a URL');
  }
  if (url.username || url.password) throw refuse('endpoint must not carry credentials');
  if (url.protocol !== 'https:') throw refuse('endpoint must be https');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (policy.allowLoopback && isLoopback(host)) return url;
  if (url.port !== '') throw refuse('endpoint must use port 443');
  let addresses: string[];
  try {
    addresses = ipaddr.isValid(host) ? [host] : await policy.resolve(host);
  } catch {
    throw refuse('endpoint host does not resolve');
  }
  if (!addresses.some(isPublicAddress)) throw refuse('endpoint must be a public push service');
  return url;
}

/**
 * The keys a browser gives with its subscription (RFC 8291): p256dh a P-256 public key as an uncompressed point on the
 * curve, auth a 16-byte secret. Anything else could never be encrypted to, and is refused when it is registered.
 */
export function checkPushKeys(p256dh: string, auth: string): void {
  const point = Buffer.from(p256dh, 'base64url');
  try {
    if (point.length !== 65 || point[0] !== 0x04) throw new Error('not an uncompressed point');
    ECDH.convertKey(point, 'prime256v1'); // throws when the point is not on the curve
  } catch {
    throw new ChorusError('VALIDATION_FAILED', 'keys.p256dh is not a P-256 public key');
  }
  if (Buffer.from(auth, 'base64url').length !== 16)
    throw new ChorusError('VALIDATION_FAILED', 'keys.auth is not 16 bytes');
}
