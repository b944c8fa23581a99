import t, { Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { CausewayError } from '../src/errors';
import { parseTrust, trustKeys, TrustKey, TRUST_MAX_KEYS } from '../src/kernel/trust';
import { bpfUnavailable, causeway, readEvents, tmpdir } from './helpers';
import { makeHosts, subnet, subnet6, Host } from './netns';
import { newTraceId } from '../src/kernel/record';

/** An address as the shim keys a peer: 16 bytes, IPv4 as ::ffff:a.b.c.d. */
function peer(a: string): Buffer {
  if (!a.includes(':')) return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...a.split('.').map(Number)]);
  const [head, tail = ''] = a.split('::');
  const words = (s: string) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const r = words(tail);
  const all = a.includes('::') ? [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r] : h;
  return Buffer.from(all.flatMap((w) => [w >> 8, w & 0xff]));
}

function bitsOf(b: Buffer): bigint {
  return BigInt('0x' + b.toString('hex'));
}

/** What bpf_map_lookup_elem on the LPM trie answers for a /128 key: does any prefix hold it? */
function trusted(keys: TrustKey[], addr: string): boolean {
  const a = bitsOf(peer(addr));
  return keys.some((k) => {
    const shift = BigInt(128 - k.prefixlen);
    return a >> shift === bitsOf(k.addr) >> shift;
  });
}

function refused(t: Test, input: string, says: RegExp) {
  t.throws(() => parseTrust(input), CausewayError, `${input} is refused`);
  try {
    parseTrust(input);
  } catch (err) {
    t.match((err as Error).message, new RegExp(`^--trust ${input.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `), `${input}: the message names the input`);
    t.match((err as Error).message, says, `${input}: ${(err as Error).message}`);
  }
}

t.test('the three forms from the issue are refused, each with what to write', async (t) => {
  // Were 8.0.0.0/8, 0.0.0.0/8 and every IPv4 peer.
  refused(t, '010.0.0.0/8', /leading zero.*write 10\.0\.0\.0\/8/);
  refused(t, '10/8', /not a four-part IPv4 address.*0\.0\.0\.10.*write all four parts, such as 10\.0\.0\.0\/8/);
  refused(t, '::/64', /contains the IPv4-mapped block ::ffff:0:0\/96.*every IPv4 peer.*give IPv4 networks as IPv4/);
});

t.test('IPv4 is four decimal parts without leading zeros', async (t) => {
  refused(t, '10.0.0.010', /leading zero.*write 10\.0\.0\.10 /);
  refused(t, '10.1.2/24', /not a four-part.*10\.1\.0\.2.*10\.1\.2\.0\/24/);
  refused(t, '10', /not a four-part/);
  refused(t, '0x0a.0.0.0/8', /four decimal parts/);
  refused(t, '256.0.0.0/8', /four decimal parts \(0-255/);
  refused(t, '1.2.3.4.5', /four decimal parts/);
  refused(t, ' 10.0.0.0/8', /four decimal parts/);
  refused(t, '10.0.0.0/8 ', /prefix length/);
  refused(t, '', /four decimal parts/);
});

t.test('prefix lengths are digits within range', async (t) => {
  refused(t, '10.0.0.0/33', /prefix length is a decimal number from 0 to 32$/);
  refused(t, '10.0.0.0/08', /without leading zeros: write 10\.0\.0\.0\/8$/);
  refused(t, '10.0.0.0/', /prefix length/);
  refused(t, '10.0.0.0/+8', /prefix length/);
  refused(t, '10.0.0.0/0x8', /prefix length/);
  refused(t, '10.0.0.0/8.0', /prefix length/);
  refused(t, '10.0.0.0/8/8', /prefix length/);
  refused(t, 'fd00::/129', /from 0 to 128$/);
  refused(t, 'fd00::/-1', /prefix length/);
});

t.test('no bits may be set past the prefix', async (t) => {
  refused(t, '10.0.0.1/8', /did you mean 10\.0\.0\.0\/8\?/);
  refused(t, '192.168.1.77/24', /did you mean 192\.168\.1\.0\/24\?/);
  refused(t, '1.0.0.0/0', /did you mean 0\.0\.0\.0\/0\?/);
  refused(t, '2001:db8::1/32', /did you mean 2001:db8::\/32\?/);
  refused(t, 'fd00::1/8', /did you mean fd00::\/8\?/);
  refused(t, '::ffff:10.1.0.0/104', /did you mean ::ffff:10\.0\.0\.0\/104\?/);
});

t.test('IPv6 is RFC 4291 text', async (t) => {
  refused(t, 'fd00:00000::/16', /expected an IPv6 address/);
  refused(t, '1::2::3', /"::" may appear once/);
  refused(t, '1:2:3:4:5:6:7', /expected an IPv6 address/);
  refused(t, '1:2:3:4:5:6:7:8:9', /expected an IPv6 address/);
  refused(t, '1:2:3:4:5:6:7:8::', /expected an IPv6 address/);
  refused(t, ':1::', /expected an IPv6 address/);
  refused(t, 'fd00::g', /expected an IPv6 address/);
  refused(t, '[fd00::1]', /expected an IPv6 address/);
  refused(t, 'fe80::1%eth0', /a zone \(%eth0\) means nothing.*write fe80::1$/);
  refused(t, '::ffff:010.0.0.1', /IPv4 part 010\.0\.0\.1.*without leading zeros/);
  // ipaddr.js reads ::1.2.3.4 as ::ffff:1.2.3.4; RFC 4291 says ::102:304.
  refused(t, '::1.2.3.4', /IPv4-compatible.*write 1\.2\.3\.4, or ::ffff:1\.2\.3\.4/);
});

t.test('an IPv6 prefix may not cover IPv4 peers unless it is an explicit IPv4-mapped one', async (t) => {
  // Each holds ::ffff:0:0/96 (::/90 does not: its bits 80-89 are zero).
  for (const p of ['::/1', '::/8', '::/32', '0:0:0:0::/64', '::/79', '::/80', '::ff00:0:0/88', '::ffc0:0:0/90'])
    refused(t, p, /contains the IPv4-mapped block.*every IPv4 peer/);
  refused(t, '::ffff:10.0.0.0/8', /counts IPv6 bits.*write 10\.0\.0\.0\/8, or ::ffff:10\.0\.0\.0\/104/);
  refused(t, '::ffff:0.0.0.0/0', /write 0\.0\.0\.0\/0, or ::ffff:0\.0\.0\.0\/96/);

  // Explicit IPv4-mapped prefixes are the IPv4 network, keyed the same way.
  t.same(parseTrust('::ffff:10.0.0.0/104'), parseTrust('10.0.0.0/8'));
  t.same(parseTrust('::ffff:a00:0/104'), parseTrust('10.0.0.0/8'));
  t.same(parseTrust('0:0:0:0:0:ffff:10.1.2.3'), parseTrust('10.1.2.3'));
  t.same(parseTrust('::ffff:0:0/96'), parseTrust('0.0.0.0/0'));

  // Prefixes next to the mapped block but not over it are IPv6 only.
  for (const p of ['::/90', '::/96', '::/95', '::fffe:0:0/96', '::1:0:0:0/80', '64:ff9b::/96']) {
    const keys = parseTrust(p);
    t.notOk(trusted(keys, '10.0.0.1') || trusted(keys, '0.0.0.0') || trusted(keys, '255.255.255.255'), `${p} trusts no IPv4 peer`);
  }
});

t.test('good forms give the shim\'s keys', async (t) => {
  const key = (prefixlen: number, hex: string) => [{ prefixlen, addr: Buffer.from(hex, 'hex') }];
  t.same(parseTrust('10.0.0.0/8'), key(104, '00000000000000000000ffff0a000000'));
  t.same(parseTrust('192.168.1.0/24'), key(120, '00000000000000000000ffffc0a80100'));
  t.same(parseTrust('10.1.2.3'), key(128, '00000000000000000000ffff0a010203'));
  t.same(parseTrust('0.0.0.0/0'), key(96, '00000000000000000000ffff00000000'));
  t.same(parseTrust('fd00::/8'), key(8, 'fd000000000000000000000000000000'));
  t.same(parseTrust('FD00:AB::/32'), key(32, 'fd0000ab000000000000000000000000'));
  t.same(parseTrust('2001:db8::1'), key(128, '20010db8000000000000000000000001'));
  t.same(parseTrust('1:2:3:4:5:6:7:8/128'), key(128, '00010002000300040005000600070008'));
  t.same(parseTrust('1:2:3:4:5:6:7::'), key(128, '00010002000300040005000600070000'));
  t.same(parseTrust('::1'), key(128, '00000000000000000000000000000001'));
  t.same(parseTrust('::'), key(128, '00000000000000000000000000000000'));

  const v4 = parseTrust('10.0.0.0/8');
  t.ok(trusted(v4, '10.255.0.1'));
  t.notOk(trusted(v4, '8.0.0.1'), 'not what 010.0.0.0/8 used to be');
  t.notOk(trusted(v4, '11.0.0.1'));
});

t.test('0.0.0.0/0 is every IPv4 peer and no IPv6 one; ::/0 every IPv6 peer and no IPv4 one', async (t) => {
  const all4 = parseTrust('0.0.0.0/0');
  const all6 = parseTrust('::/0');
  for (const a of ['0.0.0.0', '10.0.0.1', '203.0.113.9', '255.255.255.255']) {
    t.ok(trusted(all4, a), `0.0.0.0/0 holds ${a}`);
    t.notOk(trusted(all6, a), `::/0 does not hold ${a}`);
  }
  for (const a of ['::', '::1', '2001:db8::1', 'fe80::1', 'fd00::2', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '::fffe:ffff:ffff', '::1:0:0:0', '::1:ffff:0:0', '0:0:0:0:1:ffff::', '64:ff9b::a00:1']) {
    t.ok(trusted(all6, a), `::/0 holds ${a}`);
    t.notOk(trusted(all4, a), `0.0.0.0/0 does not hold ${a}`);
  }
  // Exactly all of IPv6 but the mapped /96: disjoint prefixes whose sizes add up to 2^128 - 2^32.
  t.equal(all6.length, 96);
  let size = 0n;
  for (const k of all6) size += 1n << BigInt(128 - k.prefixlen);
  t.equal(size, (1n << 128n) - (1n << 32n), 'the prefixes cover 2^128 - 2^32 addresses');
  for (const [i, a] of all6.entries())
    for (const b of all6.slice(i + 1)) {
      const shift = BigInt(128 - Math.min(a.prefixlen, b.prefixlen));
      if (bitsOf(a.addr) >> shift === bitsOf(b.addr) >> shift) t.fail(`${a.addr.toString('hex')}/${a.prefixlen} overlaps ${b.addr.toString('hex')}/${b.prefixlen}`);
    }
  const both = trustKeys(['0.0.0.0/0', '::/0']);
  t.ok(['10.0.0.1', '1.2.3.4', '2001:db8::1', 'fe80::1'].every((a) => trusted(both, a)), 'both together trust every peer');
});

t.test('trustKeys: loopback first, duplicates once, and no more than the map holds', async (t) => {
  const keys = trustKeys(['10.0.0.0/8', '::ffff:10.0.0.0/104', '127.0.0.0/8']);
  t.equal(keys.length, 3, 'loopback (2) and 10.0.0.0/8, each once');
  t.ok(trusted(keys, '127.0.0.1') && trusted(keys, '::1'), 'loopback is trusted');
  t.notOk(trusted(keys, '::2'));
  t.equal(trustKeys(['::/0', '::/0']).length, 98);
  const many = Array.from({ length: TRUST_MAX_KEYS - 2 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  t.equal(trustKeys(many).length, TRUST_MAX_KEYS, 'the map can be filled');
  t.throws(() => trustKeys([...many, '10.9.9.0/24']), /257 prefixes .* do not fit the shim's 256/);
  t.throws(() => trustKeys(['fd00::/8', '010.0.0.0/8']), /^--trust 010\.0\.0\.0\/8: /, 'the first bad one is named');
});

t.test('the CLI refuses a bad --trust before anything loads, the way it reports every CausewayError', async (t) => {
  const r = await causeway(['run', '--trust', '010.0.0.0/8', '--', 'true']);
  t.equal(r.status, 1);
  t.equal(r.stderr, 'causeway: --trust 010.0.0.0/8: 010.0.0.0 has a part with a leading zero, which some parsers read as octal: write 10.0.0.0/8 (four decimal parts, no leading zeros)\n');
  const r2 = await causeway(['run', '--trust', '10.0.0.0/8', '--trust', '::/64', '--', 'sh', '-c', 'echo ran']);
  t.equal(r2.status, 1);
  t.equal(r2.stdout, '', 'the command did not run');
  t.match(r2.stderr, /^causeway: --trust ::\/64: .*IPv4-mapped block/);
  t.notMatch(r2.stderr, /events|dropped/, 'no run summary: nothing was loaded');
  const db = path.join(tmpdir(t), 'traces.db');
  const r3 = await causeway(['trace', '--db', db, '--trust', '10/8', '--', 'true']);
  t.equal(r3.status, 1, 'trace refuses it too');
  t.match(r3.stderr, /^causeway: --trust 10\/8: /);
  t.notOk(fs.existsSync(db), 'before the trace database is opened');
});

t.test('in the kernel: ::/0 trusts an IPv6 peer and no IPv4 one, 0.0.0.0/0 the other way round', { skip: bpfUnavailable() ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const NODE = path.join(__dirname, 'fixtures', 'tcp_node.py');
  const traced = (h: Host, name: string, trust: string, role: string[], trace?: string) =>
    causeway(['run', '-e', path.join(dir, `${name}.jsonl`), '--trust', trust, ...(trace ? ['--trace', trace] : []), '--', 'ip', 'netns', 'exec', h.ns, 'python3', NODE, ...role]);
  /** A client on a that trusts the server and writes records; a server on b that trusts only `trust` (besides loopback). */
  const exchange = async (name: string, trust: string, v6: boolean, port: number) => {
    const trace = newTraceId();
    const [to, net] = v6 ? [b.addr6, subnet6(a)] : [b.addr, subnet(a)];
    const server = traced(b, `${name}-server`, trust, ['server', to, String(port), path.join(dir, `${name}-ready`)]);
    const client = await traced(a, `${name}-client`, net, ['client', to, String(port)], trace);
    const srv = await server;
    t.equal(client.stdout, 'ok:hello\n', `${name}: the conversation works: ${client.stderr}`);
    t.match(client.stderr, /tcpOptionsWritten=[1-9]/, `${name}: the client wrote records`);
    const adopted = readEvents(path.join(dir, `${name}-server.jsonl`)).some((e) => e.trace === trace);
    return { srv: srv.stderr, adopted };
  };

  const v4 = await exchange('all6-over-ipv4', '::/0', false, 7000);
  t.notOk(v4.adopted, '--trust ::/0: the server did not adopt a record from an IPv4 peer');
  t.match(v4.srv, /tcpOptionUntrustedIn=[1-9]/, 'it counted it as untrusted');
  const v6 = await exchange('all6-over-ipv6', '::/0', true, 7001);
  t.ok(v6.adopted, '--trust ::/0: the server adopted the record of an IPv6 peer');
  t.notMatch(v6.srv, /tcpOptionUntrustedIn/);
  const v4only = await exchange('all4-over-ipv6', '0.0.0.0/0', true, 7002);
  t.notOk(v4only.adopted, '--trust 0.0.0.0/0: not from an IPv6 peer');
  t.match(v4only.srv, /tcpOptionUntrustedIn=[1-9]/);
});
