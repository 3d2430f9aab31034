import { isIP } from 'node:net';
import { ChorusError } from '../protocol/index.js';

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** IPv4 and IPv6 literals Chorus must never be made to call: loopback, private, link-local, unspecified. */
function isInternalAddress(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 4) {
    const [a, b] = bare.split('.').map(Number) as [number, number];
    return a === 10 || a === 127 || a === 0 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
  }
  if (isIP(bare) === 6) return /^(::1?|fc|fd|fe80|::ffff:)/i.test(bare);
  return host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.internal');
}

/**
 * The server sends requests to endpoints that users give it, so an endpoint is checked like any untrusted URL (SSRF):
 * https only, no credentials, no internal addresses. Tests may allow loopback (pushAllowLoopback).
 */
export function checkPushEndpoint(endpoint: string, allowLoopback: boolean): URL {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ChorusError('INVALID_PUSH_ENDPOINT', 'endpoint is not a URL');
  }
  if (url.username || url.password) throw new ChorusError('INVALID_PUSH_ENDPOINT', 'endpoint must not carry credentials');
  if (url.protocol !== 'https:') throw new ChorusError('INVALID_PUSH_ENDPOINT', 'endpoint must be https');
  if (allowLoopback && LOOPBACK_HOSTS.has(url.hostname)) return url;
  if (isInternalAddress(url.hostname)) throw new ChorusError('INVALID_PUSH_ENDPOINT', 'endpoint must be a public push service');
  return url;
}
