import type { IncomingMessage } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';
import ipaddr from 'ipaddr.js';

/**
 * What connections are counted under: the IPv4 address (an IPv4-mapped IPv6 address as the IPv4 it carries), or an
 * IPv6 address's /64 (a host is given a /64, so each of its addresses would otherwise count apart). null: unknown.
 */
export function addressKey(remote: string | undefined): string | null {
  if (remote === undefined || !ipaddr.isValid(remote)) return null;
  const address = ipaddr.process(remote);
  if (address.kind() === 'ipv4') return address.toString();
  const parts = (address as ipaddr.IPv6).parts.slice(0, 4);
  return new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString();
}

/** Whether a hop is a trusted proxy: proxy-addr's trust function, as Fastify's trustProxy takes it. */
export type ProxyTrust = (address: string, hop: number) => boolean;

/**
 * The load balancers named in `list` (comma-separated addresses or CIDRs), as one trust function that the MQTT
 * listeners and the REST API both use, so that every port agrees on who may name a client's address.
 */
export function trustedProxies(list: string): ProxyTrust {
  return proxyAddr.compile(
    list
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry !== ''),
  );
}

/** The client of an HTTP request (a WebSocket upgrade): the nearest X-Forwarded-For hop not trusted, or the peer. */
export const forwardedClient = (req: IncomingMessage, trust: ProxyTrust): string => proxyAddr(req, trust);
