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
