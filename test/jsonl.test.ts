/**
 * The native JSON Lines formatter (native/jsonl.cc) against its
 * specification, the TypeScript path (decodeEvents, eventToJson,
 * JSON.stringify), byte for byte: on the raw batches of real runs that make
 * every event type and channel kind, and on random struct contents (every type
 * value, random ids and counts, comm and path bytes with controls, quotes and
 * invalid UTF-8). And `-e FILE` fed raw: the file holds what the TypeScript
 * path gives for the run's batches, and nothing decodes events in JavaScript.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { bpfUnavailable, tmpdir, waitFor } from './helpers';
import { run } from '../src/runtime/runtime';
import { native } from '../src/kernel/native';
import { CausalEvent, decodeEvents, eventToJson, EVENT_BYTES } from '../src/kernel/events';

const skip = bpfUnavailable();
const FIXTURE = path.join(__dirname, 'fixtures', 'every_event.py');
/** The fixture's odd bytes (quote, backslash, controls, é, invalid UTF-8, a surrogate, a cut emoji). */
const ODD_BYTES = Buffer.concat([Buffer.from('q"\\\n\t\x01\x7f', 'latin1'), Buffer.from([0xc3, 0xa9, 0xff, 0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98])]);
const ODD = ODD_BYTES.toString('utf8');

/** The specification: what `-e FILE` wrote before the native path. */
const specified = (raw: Buffer, clockOffset: bigint) => Buffer.from(decodeEvents(raw, clockOffset).map((e) => JSON.stringify(eventToJson(e))).join('\n') + '\n');

/** Compares the native bytes with the specification's; on a difference, names the first event that differs and its raw bytes. */
function same(t: Test, raw: Buffer, clockOffset: bigint, what: string): boolean {
  const got = native().formatJsonLines(raw, clockOffset);
  const want = specified(raw, clockOffset);
  if (got.equals(want)) return true;
  const g = got.toString('latin1').split('\n');
  const w = want.toString('latin1').split('\n');
  const i = w.findIndex((line, k) => line !== g[k]);
  t.fail(`${what}: event ${i} differs (clock offset ${clockOffset})`, {
    native: Buffer.from(g[i] ?? '', 'latin1').toString('utf8'),
    typescript: Buffer.from(w[i] ?? '', 'latin1').toString('utf8'),
    raw: raw.subarray(i * EVENT_BYTES, (i + 1) * EVENT_BYTES).toString('hex'),
  });
  return false;
}

/** A free TCP port on loopback. */
async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Connects from outside the run, sends a line and waits for the echo and the close. */
function outside(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => c.write('from outside\n'));
    c.on('data', () => {});
    c.on('close', () => resolve());
    c.on('error', reject);
  });
}

t.test('real batches: every event type and channel kind, byte for byte', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const ready = path.join(dir, 'ready');
  const [mint, plain] = [await freePort(), await freePort()];
  const batches: [Buffer, bigint][] = [];
  const done = run({
    command: FIXTURE,
    args: [dir, String(mint), String(plain), ready],
    eventsFile: file,
    actors: [`ingress-mint:ports=${mint}`],
    summary: false,
    onRawEvents: (b, offset) => batches.push([b, offset]),
  });
  await waitFor(() => fs.existsSync(ready), 30000, 'the fixture');
  await outside(mint);
  await outside(plain);
  const r = await done;
  t.equal(r.status, 0, 'the fixture ran to its end');
  t.equal(r.counters?.ringbufDrops, 0, 'no event lost in the kernel');
  t.equal(r.eventsFileLost, 0, 'none lost by the events file');

  let ok = 0;
  for (const [i, [b, offset]] of batches.entries()) if (same(t, b, offset, `batch ${i}`)) ok++;
  t.equal(ok, batches.length, `each of the run's ${batches.length} batches (${r.events} events) formats alike`);
  const expected = Buffer.concat(batches.map(([b, offset]) => specified(b, offset)));
  t.ok(fs.readFileSync(file).equals(expected), 'the events file holds exactly what the TypeScript path gives for those batches');

  // What the batches covered: each case checked above is really there.
  const events: CausalEvent[] = batches.flatMap(([b, offset]) => decodeEvents(b, offset));
  const has = (what: string, f: (e: CausalEvent) => boolean) => t.ok(events.some(f), what);
  for (const type of ['fork', 'exec', 'exit', 'send', 'recv', 'join', 'ingress']) has(`a ${type} event`, (e) => e.type === type);
  for (const kind of ['pipe', 'fifo']) has(`a ${kind}`, (e) => e.channel?.kind === kind);
  for (const [type, tag] of [['stream', 's'], ['dgram', 'd'], ['seqpacket', 'p']]) {
    const unix = events.filter((e) => e.channel?.kind === 'unix' && e.channel.type === type).map((e) => (e.channel as { name: string }).name);
    t.ok(unix.includes(`${dir}/${tag}${ODD}`), `UNIX ${type} bound to a path with odd bytes`);
    t.ok(unix.includes(`abstract:cw-${tag}${ODD}`), `UNIX ${type} with an abstract name with odd bytes`);
    t.ok(unix.includes(`${dir}/${'x'.repeat(61 - dir.length)}\ufffd`), `UNIX ${type} with a name cut inside a UTF-8 character`);
    t.ok(unix.includes('socketpair'), `UNIX ${type} socketpair`);
  }
  has('TCP over IPv4', (e) => e.channel?.kind === 'tcp' && e.channel.local === '127.0.0.1' && e.channel.remote === '127.0.0.1');
  has('TCP over IPv6', (e) => e.channel?.kind === 'tcp' && e.channel.local === '::1' && e.channel.remote === '::1');
  has('a thread started', (e) => e.type === 'fork' && e.thread === true);
  has('a thread ended', (e) => e.type === 'exit' && e.thread === true);
  has('a process forked', (e) => e.type === 'fork' && e.thread === false);
  for (const code of [0, 3, 42]) has(`an exit with code ${code}`, (e) => e.type === 'exit' && e.exitCode === code);
  for (const sig of [9, 15, 11]) has(`a death by signal ${sig}`, (e) => e.type === 'exit' && e.signal === sig);
  has('an exec of a file with odd bytes in its name', (e) => e.type === 'exec' && e.path === `${dir}/run${ODD}`);
  has('a thread named with odd bytes', (e) => e.comm === ODD_BYTES.subarray(0, 15).toString('utf8'));
  has('a join of bytes partly without a record, four of its parents named', (e) => e.type === 'join' && e.parents.length === 4 && e.ingress === true);
  has('a record minted on ingress', (e) => e.type === 'ingress' && e.minted === true && e.channel?.kind === 'tcp' && e.channel.localPort === mint);
  has('an ingress not minted', (e) => e.type === 'ingress' && !e.minted && e.channel?.kind === 'tcp' && e.channel.localPort === plain);
});

t.test('-e FILE alone: raw batches written natively, no event decoded in JavaScript', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const batches: [Buffer, bigint][] = [];
  let listeners = -1;
  const r = await run({
    command: 'sh',
    args: ['-c', 'for i in 1 2 3; do echo $i | cat >/dev/null; done'],
    eventsFile: file,
    summary: false,
    onRawEvents: (b, offset) => batches.push([b, offset]),
    onStart: ({ shim }) => (listeners = shim.listenerCount('events')),
  });
  t.equal(r.status, 0);
  t.equal(listeners, 0, "the shim's decoded 'events' have no listener: the shim decodes nothing");
  t.ok(r.events > 10, `the run made events (${r.events})`);
  t.ok(fs.readFileSync(file).equals(Buffer.concat(batches.map(([b, offset]) => specified(b, offset)))), 'the file holds what the TypeScript path gives');
});

/** mulberry32: a small seeded generator, so that a failure can be replayed (CAUSEWAY_JSONL_SEED). */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (((x ^ (x >>> 14)) >>> 0) / 4294967296) * n;
  };
}

/** UTF-8 pieces for comm and path: escapes, valid sequences of every length and edge, and invalid ones of every WHATWG case. */
const PIECES: number[][] = [
  [0x22], [0x5c], [0x08], [0x0c], [0x0a], [0x0d], [0x09], [0x01], [0x0b], [0x1b], [0x1f], [0x7f], [0x2f], [0x3c], [0x27],
  [0xc2, 0x80], [0xc3, 0xa9], [0xdf, 0xbf], [0xe0, 0xa0, 0x80], [0xe2, 0x82, 0xac], [0xe2, 0x80, 0xa8], [0xe2, 0x80, 0xa9],
  [0xed, 0x9f, 0xbf], [0xee, 0x80, 0x80], [0xef, 0xbb, 0xbf], [0xef, 0xbf, 0xbd], [0xef, 0xbf, 0xbf],
  [0xf0, 0x90, 0x80, 0x80], [0xf0, 0x9f, 0x98, 0x80], [0xf4, 0x8f, 0xbf, 0xbf],
  [0x80], [0xbf], [0xc0, 0x80], [0xc1, 0xbf], [0xc2], [0xc3, 0x28], [0xe0, 0x80, 0x80], [0xe0, 0x9f, 0xbf], [0xe2, 0x82],
  [0xe2, 0x28, 0xa1], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xed, 0xa0], [0xf0, 0x80, 0x80, 0x80], [0xf0, 0x8f, 0xbf, 0xbf],
  [0xf0, 0x9f, 0x98], [0xf0, 0x9f], [0xf0], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xf7, 0xbf, 0xbf, 0xbf],
  [0xf8, 0x88, 0x80, 0x80, 0x80], [0xfc], [0xfe], [0xff], [0xe1, 0x80, 0xe1, 0x80],
];

/** Random struct cw_event contents: every type value, ids, counts beyond the maximum, numbers about 2^53, odd strings and addresses. */
function randomBatch(rand: (n: number) => number, count: number, unaligned: boolean): Buffer {
  const int = (n: number) => Math.floor(rand(n));
  const u32 = () => (int(4) === 0 ? int(100000) : int(2 ** 32));
  const u64 = (): bigint => {
    const hi = BigInt(int(2 ** 32));
    const lo = BigInt(int(2 ** 32));
    switch (int(8)) {
      case 0: return BigInt(int(1e6));
      case 1: return 2n ** 53n + BigInt(int(9) - 4);
      case 2: return (hi << 32n) | lo;
      case 3: return 2n ** 64n - 1n - BigInt(int(5000));
      case 4: return ((hi & 0x1fffffn) << 32n) | lo; // below 2^53
      case 5: return 0n;
      case 6: return 10n ** BigInt(int(20)) + BigInt(int(3) - 1); // about powers of ten
      default: return 2n ** BigInt(53 + int(11)) * BigInt(1 + int(2047)) & (2n ** 64n - 1n); // round and tie-breaking doubles
    }
  };
  const text = (b: Buffer, off: number, len: number) => {
    switch (int(5)) {
      case 0: // random bytes, NULs included
        for (let i = 0; i < len; i++) b[off + i] = int(256);
        return;
      case 1: // printable ASCII, NUL-terminated or filling the field
        for (let i = 0; i < len; i++) b[off + i] = 0x20 + int(95);
        if (int(2)) b[off + int(len)] = 0;
        return;
      case 2: // empty
        return;
      default: { // pieces, cut wherever the field or a NUL ends them
        let i = 0;
        while (i < len) {
          const p = int(3) ? PIECES[int(PIECES.length)] : [0x20 + int(95)];
          for (const x of p) if (i < len) b[off + i++] = x;
        }
        if (int(3) === 0) b[off + int(len)] = 0;
      }
    }
  };
  const ip = (b: Buffer, off: number) => {
    const mode = int(7);
    if (mode === 0) for (let i = 0; i < 16; i++) b[off + i] = int(256);
    else if (mode === 1 || mode === 2) {
      // IPv4-mapped, or nearly (one byte off)
      b[off + 10] = b[off + 11] = 0xff;
      for (let i = 12; i < 16; i++) b[off + i] = int(256);
      if (mode === 2) b[off + int(12)] ^= 1 + int(255);
    } else if (mode === 3) {
      if (int(2)) b[off + 15] = int(3); // ::, ::1, ::2
    } else
      for (let g = 0; g < 8; g++) {
        // zero groups here and there (runs of every length), others short or long
        if (int(2)) continue;
        const v = int(3) === 0 ? int(16) : int(3) === 0 ? int(4096) : int(65536);
        b.writeUInt16BE(v, off + 2 * g);
      }
  };
  const buf = Buffer.alloc(count * EVENT_BYTES + (unaligned ? 1 : 0)).subarray(unaligned ? 1 : 0);
  for (let k = 0; k < count; k++) {
    const o = k * EVENT_BYTES;
    buf.writeBigUInt64LE(u64(), o);
    buf.writeUInt32LE(u32(), o + 8);
    buf.writeUInt32LE(u32(), o + 12);
    buf[o + 16] = int(2) ? int(9) : int(256); // type: 0-8 (unknown ones are exits), or any
    buf[o + 17] = int(2) ? int(7) : int(256); // nparents: beyond 4 too
    buf[o + 18] = int(3) ? int(6) : int(256); // chan_kind
    buf[o + 19] = int(256); // flags
    const arg = int(3);
    buf.writeUInt32LE(arg === 0 ? u32() : arg === 1 ? int(256) << 8 : int(128), o + 20); // exit: a code, a signal, or noise
    buf.writeUInt32LE(u32(), o + 24);
    buf.writeUInt32LE(int(2 ** 32), o + 28); // chan_dev
    buf.writeBigUInt64LE(u64(), o + 32); // chan_ino
    buf.writeBigUInt64LE(u64(), o + 40); // bytes
    for (let i = 0; i < 4; i++) buf.writeBigUInt64LE(u64(), o + 48 + 8 * i);
    for (let i = 80; i < 144; i++) buf[o + i] = int(256); // the record
    text(buf, o + 144, 16); // comm
    text(buf, o + 160, 64); // path or UNIX name
    if (int(4) === 0) buf[o + 160] = 0; // abstract names, socketpairs
    ip(buf, o + 224);
    ip(buf, o + 240);
    buf.writeUInt16LE(int(65536), o + 256);
    buf.writeUInt16LE(int(65536), o + 258);
    buf[o + 260] = int(2) ? int(7) : int(256); // sotype
    for (let i = 261; i < 264; i++) buf[o + i] = int(256);
    for (let i = 0; i < 3; i++) buf.writeBigUInt64LE(u64(), o + 264 + 8 * i);
  }
  return buf;
}

t.test('random struct contents: 100,000 events and more, byte for byte', async (t) => {
  const seed = Number(process.env.CAUSEWAY_JSONL_SEED ?? Math.floor(Math.random() * 2 ** 32));
  const rand = prng(seed);
  const offsets = [0n, 1764000000000000000n, -1n, 2n ** 63n - 1n, -(2n ** 63n)];
  let events = 0;
  let batches = 0;
  let failed = 0;
  // At least 260 batches and 100,000 events, whatever sizes the seed draws.
  for (let i = 0; (i < 260 || events < 100000) && failed < 3; i++) {
    const count = i === 0 ? 0 : i === 1 ? 1 : 1 + Math.floor(rand(800));
    let raw = randomBatch(rand, count, i % 2 === 1);
    if (i % 7 === 3) raw = Buffer.concat([raw, Buffer.alloc(1 + Math.floor(rand(EVENT_BYTES - 1)), 0xa5)]); // a trailing partial event
    const offset = i % 3 === 0 ? BigInt.asIntN(64, BigInt(Math.floor(rand(2 ** 32))) << BigInt(Math.floor(rand(33)))) : offsets[Math.floor(rand(offsets.length))];
    if (!same(t, raw, offset, `seed ${seed}, batch ${i}`)) failed++;
    events += count;
    batches++;
  }
  t.equal(failed, 0, `every batch the same (seed ${seed}; replay with CAUSEWAY_JSONL_SEED=${seed})`);
  t.ok(events >= 100000, `${events} events in ${batches} batches`);
});

t.test('formatJsonLines takes a Buffer and a 64-bit clock offset', async (t) => {
  const f = native().formatJsonLines;
  t.equal(f(Buffer.alloc(0), 0n).toString(), '\n', 'no events: a lone newline, as [].join() + "\\n" is');
  t.throws(() => f('x' as unknown as Buffer, 0n), TypeError);
  t.throws(() => f(Buffer.alloc(EVENT_BYTES), 0 as unknown as bigint), TypeError);
  t.throws(() => f(Buffer.alloc(EVENT_BYTES), 2n ** 63n), RangeError);
});
