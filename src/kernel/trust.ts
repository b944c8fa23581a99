/**
 * Trusted networks: records are accepted only from peers inside them and
 * written only towards destinations inside them, so that traces do not leak
 * across administrative boundaries. Loopback is trusted by default.
 */
import ipaddr from 'ipaddr.js';
import { CausewayError } from '../errors';

export const DEFAULT_TRUST = ['127.0.0.0/8', '::1/128'];

/** One LPM-trie key: IPv4 as IPv4-mapped IPv6 (prefix + 96). */
export interface TrustKey {
  prefixlen: number;
  addr: Buffer;
}

/** Parses a CIDR (or a single address) into the shim's key; throws a CausewayError that says what is wrong. */
export function parseTrust(cidr: string): TrustKey {
  try {
    const [addr, prefix] = cidr.includes('/') ? ipaddr.parseCIDR(cidr) : [ipaddr.parse(cidr), -1];
    if (addr.kind() === 'ipv4') {
      const v4 = addr as ipaddr.IPv4;
      return { prefixlen: 96 + (prefix < 0 ? 32 : prefix), addr: Buffer.from(v4.toIPv4MappedAddress().toByteArray()) };
    }
    return { prefixlen: prefix < 0 ? 128 : prefix, addr: Buffer.from(addr.toByteArray()) };
  } catch {
    throw new CausewayError(`--trust ${cidr}: expected an address or CIDR, such as 10.0.0.0/8 or fd00::/8`);
  }
}

/** The keys for loopback plus the given networks. */
export function trustKeys(extra: string[] = []): TrustKey[] {
  return [...DEFAULT_TRUST, ...extra].map(parseTrust);
}
