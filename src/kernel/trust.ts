/**
 * Trusted networks: records are accepted only from peers inside them and
 * written only towards destinations inside them, so that traces do not leak
 * across administrative boundaries. Loopback is trusted by default.
 *
 * The shim keys every peer as IPv6, IPv4 as IPv4-mapped (::ffff:a.b.c.d), in
 * one LPM trie. So the parsing here is strict: a network that looks like one
 * thing must not quietly trust another.
 * - IPv4 is four decimal parts without leading zeros (010.0.0.0 and 10/8
 *   mean 8.0.0.0 and 0.0.0.10 to inet_aton, not what they look like).
 * - IPv6 is RFC 4291 text; no zone (%eth0), no IPv4-compatible ::a.b.c.d.
 * - A prefix length is decimal digits within 0-32 or 0-128, and no bits may be
 *   set past it (10.0.0.1/8 is refused: did you mean 10.0.0.0/8?).
 * - IPv4 networks are given as IPv4, or as an explicit IPv4-mapped prefix
 *   (::ffff:10.0.0.0/104). An IPv6 prefix that would contain the mapped block
 *   ::ffff:0:0/96, such as ::/64, is refused: it would trust every IPv4 peer.
 * - Trusting everything is allowed when it is said: 0.0.0.0/0 is every IPv4
 *   peer; ::/0 is every IPv6 peer and no IPv4 one (it is keyed as the 96
 *   prefixes that cover IPv6 around ::ffff:0:0/96). Both together trust all.
 */
import ipaddr from 'ipaddr.js';
import { CausewayError } from '../errors';

export const DEFAULT_TRUST = ['127.0.0.0/8', '::1/128'];

/** Entries in the shim's trusted_nets map (bpf/shim.bpf.c). */
export const TRUST_MAX_KEYS = 256;

/** One LPM-trie key: IPv4 as IPv4-mapped IPv6 (prefix + 96). */
export interface TrustKey {
  prefixlen: number;
  addr: Buffer;
}

const V4_PART = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const V4 = new RegExp(`^${V4_PART}(\\.${V4_PART}){3}$`);
const MAPPED = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);

/** Parses one --trust value (a CIDR or a single address) into the shim's keys; throws a CausewayError that says what to write instead. */
export function parseTrust(text: string): TrustKey[] {
  const bad = (why: string) => new CausewayError(`--trust ${text}: ${why}`);
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? null : text.slice(slash + 1);
  const v4 = !addrText.includes(':');
  const bits = v4 ? 32 : 128;

  let addr: Buffer;
  if (v4) {
    if (!V4.test(addrText)) throw bad(v4Advice(addrText, prefixText));
    addr = Buffer.concat([MAPPED.subarray(0, 12), Buffer.from(addrText.split('.').map(Number))]);
  } else {
    addr = parseV6(addrText, bad);
  }

  let prefix = bits;
  if (prefixText !== null) {
    if (!/^(0|[1-9][0-9]*)$/.test(prefixText) || Number(prefixText) > bits)
      throw bad(`the prefix length is a decimal number from 0 to ${bits}${/^[0-9]+$/.test(prefixText) && Number(prefixText) <= bits ? `, without leading zeros: write ${addrText}/${Number(prefixText)}` : ''}`);
    prefix = Number(prefixText);
  }
  const prefixlen = v4 ? 96 + prefix : prefix;

  const inMapped = !v4 && addr.subarray(0, 12).equals(MAPPED.subarray(0, 12));
  if (inMapped && prefix < 96 && prefix <= 32) {
    const v4net = format(masked(addr, 96 + prefix), true);
    throw bad(`the prefix of an IPv4-mapped address counts IPv6 bits (96 + the IPv4 prefix): write ${v4net}/${prefix}, or ::ffff:${v4net}/${96 + prefix}`);
  }
  const net = masked(addr, prefixlen);
  if (!net.equals(addr)) throw bad(`bits are set past the /${prefix} prefix: did you mean ${format(net, v4)}/${prefix}?`);

  if (!v4 && prefixlen < 96 && masked(MAPPED, prefixlen).equals(net)) {
    if (prefixlen === 0) return everyIPv6();
    throw bad(
      `/${prefix} contains the IPv4-mapped block ::ffff:0:0/96, so it would trust every IPv4 peer: ` +
        'give IPv4 networks as IPv4 (0.0.0.0/0 for all of them), and for IPv6 a prefix that leaves ::ffff:0:0/96 out (::/0 is every IPv6 peer and no IPv4 one)',
    );
  }
  return [{ prefixlen, addr: net }];
}

/** The keys for loopback plus the given networks, without duplicates; throws if they do not fit the shim's map. */
export function trustKeys(extra: string[] = []): TrustKey[] {
  const seen = new Set<string>();
  const keys: TrustKey[] = [];
  for (const text of [...DEFAULT_TRUST, ...extra]) {
    for (const k of parseTrust(text)) {
      const id = `${k.addr.toString('hex')}/${k.prefixlen}`;
      if (seen.has(id)) continue;
      seen.add(id);
      keys.push(k);
    }
  }
  if (keys.length > TRUST_MAX_KEYS)
    throw new CausewayError(`--trust: ${keys.length} prefixes (::/0 alone takes 96, loopback 2) do not fit the shim's ${TRUST_MAX_KEYS}: merge networks into shorter prefixes`);
  return keys;
}

/** Why an IPv4-looking address was refused, and what to write instead. */
function v4Advice(a: string, prefix: string | null): string {
  const p = prefix === null ? '' : `/${prefix}`;
  const parts = a.split('.');
  const decimal = parts.every((s) => /^[0-9]+$/.test(s));
  if (decimal && parts.length === 4 && parts.every((s) => Number(s) <= 255))
    return `${a} has a part with a leading zero, which some parsers read as octal: write ${parts.map(Number).join('.')}${p} (four decimal parts, no leading zeros)`;
  if (decimal && parts.length < 4 && parts.every((s) => Number(s) <= 255))
    return `${a} is not a four-part IPv4 address (inet_aton would read it as ${shortForm(parts)}): write all four parts, such as ${[...parts.map(Number), 0, 0, 0].slice(0, 4).join('.')}${p}`;
  return 'expected an IPv4 address of four decimal parts (0-255, no leading zeros) or an IPv6 address, with an optional /prefix, such as 10.0.0.0/8 or fd00::/8';
}

/** What inet_aton makes of a.b / a.b.c / a: the last part fills the rest. */
function shortForm(parts: string[]): string {
  const n = parts.map(Number);
  const last = n.pop() as number;
  const bytes = [...n, ...[0, 0, 0, 0].slice(n.length)];
  for (let i = 3, v = last; i >= n.length; i--, v = Math.floor(v / 256)) bytes[i] = v % 256;
  return bytes.join('.');
}

/** Strict RFC 4291 text: eight groups of 1-4 hex digits, one "::" at most, an IPv4 tail only as ::ffff:a.b.c.d. */
function parseV6(a: string, bad: (why: string) => CausewayError): Buffer {
  const form = 'expected an IPv6 address such as fd00::/8 or 2001:db8::1';
  if (a.includes('%')) throw bad(`a zone (${a.slice(a.indexOf('%'))}) means nothing in a network: write ${a.slice(0, a.indexOf('%'))}`);
  if (!/^[0-9a-fA-F:.]+$/.test(a)) throw bad(form);
  const halves = a.split('::');
  if (halves.length > 2) throw bad(`"::" may appear once: ${form}`);
  const groups = halves.map((h) => (h === '' ? [] : h.split(':')));
  let tail: number[] = [];
  const last = groups[groups.length - 1];
  if (last.length && last[last.length - 1].includes('.')) {
    const v4 = last.pop() as string;
    if (!V4.test(v4)) throw bad(`the IPv4 part ${v4} must be four decimal parts without leading zeros: ${form}`);
    tail = v4.split('.').map(Number);
  }
  for (const g of groups.flat()) if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad(form);
  const words = groups.flat().length + tail.length / 2;
  if (halves.length === 1 ? words !== 8 : words > 7) throw bad(form);
  const hex = (gs: string[]) => gs.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
  const head = hex(groups[0]);
  const rest = halves.length === 2 ? hex(groups[1]) : [];
  const bytes = Buffer.from([...head, ...new Array<number>(16 - head.length - rest.length - tail.length).fill(0), ...rest, ...tail]);
  if (tail.length && !bytes.subarray(0, 12).equals(MAPPED.subarray(0, 12))) {
    const v4 = tail.join('.');
    if (bytes.subarray(0, 12).every((b) => b === 0))
      throw bad(`IPv4-compatible addresses (::a.b.c.d) are deprecated (RFC 4291) and no peer has one: write ${v4}, or ::ffff:${v4} for IPv4-mapped`);
  }
  return bytes;
}

/** The first prefixlen bits of addr, the rest zero. */
function masked(addr: Buffer, prefixlen: number): Buffer {
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, prefixlen - 8 * i));
    out[i] = addr[i] & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

function format(addr: Buffer, v4: boolean): string {
  if (v4) return [...addr.subarray(12)].join('.');
  if (addr.subarray(0, 12).equals(MAPPED.subarray(0, 12))) return `::ffff:${[...addr.subarray(12)].join('.')}`;
  return ipaddr.fromByteArray([...addr]).toString();
}

/** ::/0 without ::ffff:0:0/96: for each bit of the mapped prefix, the prefix that agrees up to it and differs there. */
function everyIPv6(): TrustKey[] {
  const keys: TrustKey[] = [];
  for (let bit = 0; bit < 96; bit++) {
    const addr = masked(MAPPED, bit);
    if (!(MAPPED[bit >> 3] & (0x80 >> (bit & 7)))) addr[bit >> 3] |= 0x80 >> (bit & 7);
    keys.push({ prefixlen: bit + 1, addr });
  }
  return keys;
}
