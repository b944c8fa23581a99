/**
 * The trace store's raw path: event blobs give back every field the tracer
 * reads, exactly, for every kind of event of real runs and for random
 * structs; a version 1 database reads as it did, and is migrated when
 * written; a newer one is refused; `show` reads only the batches that hold
 * the trace; the writer's queue is bounded and what it drops is counted.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import Database from 'better-sqlite3';
import { bpfUnavailable, causeway, tmpdir } from './helpers';
import { run } from '../src/runtime/runtime';
import { native } from '../src/kernel/native';
import { CausalEvent, decodeEvents, EVENT_BYTES } from '../src/kernel/events';
import { newRecord, newTraceId } from '../src/kernel/record';
import { toTraceEvent, TraceEvent } from '../src/tracer/graph';
import { BLOB_FORMAT, packRaw, TraceStore, unpackBlob } from '../src/tracer/store';
import { TraceWriter } from '../src/tracer/writer';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
const OFFSET = 1_795_000_000_000_000_000n;

/** One line per event, bigints as strings: what the tracer would store. */
const line = (e: TraceEvent) => JSON.stringify(e, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));
const expected = (raw: Buffer[], offset: bigint) => raw.flatMap((b) => decodeEvents(b, offset).map((e) => toTraceEvent(e, 'h')));

/** Checks that a blob of `raw` gives back what decodeEvent + toTraceEvent give, whole and per trace, deflated or not. */
function checkRoundTrip(t: Test, raw: Buffer[], offset: bigint, what: string): void {
  const want = expected(raw, offset).map(line);
  const whole = native().packEvents([Buffer.concat(raw)], offset, 0).blob;
  for (const level of [0, 1]) {
    const { blob, traces, pids } = native().packEvents(raw, offset, level);
    if (level === 0) t.ok(blob.equals(whole), `${what}: batches packed together or apart make one blob`);
    const got = unpackBlob(blob, BLOB_FORMAT, 'h', null).map(line);
    const bad = got.findIndex((g, i) => g !== want[i]);
    t.equal(got.length, want.length, `${what} (deflate ${level}): as many events`);
    t.equal(bad, -1, `${what} (deflate ${level}): every field of every event as decodeEvent gives it${bad >= 0 ? `\n got ${got[bad]}\nwant ${want[bad]}` : ''}`);
    // Per trace: the filtered unpack, and the directory (count, first and last time, processes).
    let at = 0;
    let mismatches = 0;
    const events = expected(raw, offset);
    for (let o = 0; o < traces.length; o += 40) {
      const id = traces.subarray(o, o + 16);
      const hex = id.toString('hex');
      const mine = events.filter((e) => e.trace === hex);
      const one = unpackBlob(blob, BLOB_FORMAT, 'h', id).map(line);
      if (one.join('\n') !== mine.map(line).join('\n')) mismatches++;
      const n = traces.readUInt32LE(o + 36);
      const listed = new Set<number>();
      for (let k = 0; k < n; k++) listed.add(pids.readUInt32LE(at + 4 * k));
      at += 4 * n;
      if (level === 0 && raw.length) {
        // The directory's times are the events' as signed 64-bit numbers (what SQLite holds).
        const ts = mine.map((e) => BigInt.asIntN(64, e.ts));
        const ok =
          traces.readUInt32LE(o + 32) === mine.length &&
          traces.readBigInt64LE(o + 16) === ts.reduce((a, b) => (b < a ? b : a)) &&
          traces.readBigInt64LE(o + 24) === ts.reduce((a, b) => (b > a ? b : a)) &&
          listed.size === n &&
          [...new Set(mine.map((e) => e.pid))].sort().join() === [...listed].sort().join();
        if (!ok) mismatches++;
      }
    }
    t.equal(mismatches, 0, `${what} (deflate ${level}): each of ${traces.length / 40} trace(s) alone, and its directory entry, exact`);
  }
}

/** Runs a command under the shim and keeps its raw batches. Its output must not reach stdout (the TAP stream). */
async function capture(command: string, args: string[], opts: { actors?: string[]; priority?: number; during?: () => Promise<void> } = {}): Promise<Buffer[]> {
  const raw: Buffer[] = [];
  const done = run({
    command,
    args,
    summary: false,
    actors: opts.actors,
    record: newRecord({ priority: opts.priority ?? 0 }),
    onRawEvents: (b) => raw.push(Buffer.from(b)),
  });
  await opts.during?.();
  const res = await done;
  if (res.status !== 0) throw new Error(`${command} exited with ${res.status}`);
  return raw;
}

t.test('blobs give back every field of every kind of event of real runs', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const port = 23000 + (process.pid % 20000);
  const ready = path.join(dir, 'ready');
  const runs: [string, Buffer[]][] = [
    ['a pipeline', await capture('sh', ['-c', 'seq 1 50000 | gzip -1 | gunzip | wc -l >/dev/null'], { priority: 9 })],
    ['a fork-join', await capture('sh', ['-c', `python3 ${path.join(FIXTURES, 'forkjoin.py')} >/dev/null`])],
    ['UNIX socketpairs', (await Promise.all(['stream', 'dgram', 'seqpacket'].map((k) => capture('sh', ['-c', `python3 ${path.join(FIXTURES, 'pair.py')} ${k} >/dev/null`])))).flat()],
    ['TCP request/response', await capture('sh', ['-c', `python3 ${path.join(FIXTURES, 'reqresp.py')} 200 >/dev/null`])],
    ['threads, named and abstract sockets, a FIFO, exits', await capture('python3', [path.join(FIXTURES, 'kinds.py'), dir])],
    [
      'ingress, minted',
      await capture('python3', [path.join(FIXTURES, 'tcp_once.py'), 'serve', String(port), ready], {
        actors: [`ingress-mint:ports=${port}`],
        during: async () => {
          for (let i = 0; i < 200 && !fs.existsSync(ready); i++) await new Promise((r) => setTimeout(r, 25));
          for (const text of ['one', 'quit'])
            await new Promise<void>((resolve, reject) => {
              const c = net.connect(port, '127.0.0.1', () => c.end(`${text}\n`));
              c.on('data', () => {});
              c.on('close', () => resolve());
              c.on('error', reject);
            });
        },
      }),
    ],
  ];
  const all = runs.flatMap(([, raw]) => raw);
  const events: CausalEvent[] = all.flatMap((b) => decodeEvents(b, OFFSET));
  // The runs cover what the store must keep: every type, channel kind and detail.
  const has = (what: string, f: (e: CausalEvent) => boolean) => t.ok(events.some(f), `the runs have ${what}`);
  for (const type of ['fork', 'exec', 'exit', 'send', 'recv', 'join', 'ingress']) has(`${type} events`, (e) => e.type === type);
  for (const kind of ['pipe', 'fifo', 'unix', 'tcp']) has(`${kind} channels`, (e) => e.channel?.kind === kind);
  has('a named UNIX socket', (e) => e.channel?.kind === 'unix' && e.channel.name.startsWith('/'));
  has('an abstract UNIX socket', (e) => e.channel?.kind === 'unix' && e.channel.name.startsWith('abstract:'));
  has('a socketpair', (e) => e.channel?.kind === 'unix' && e.channel.name === 'socketpair');
  for (const type of ['stream', 'dgram', 'seqpacket']) has(`UNIX ${type}`, (e) => e.channel?.kind === 'unix' && e.channel.type === type);
  has('a thread', (e) => e.type === 'fork' && e.thread === true);
  has('an exit status', (e) => e.exitCode === 3);
  has('a signal', (e) => e.signal === 9);
  has('a minted record', (e) => e.minted === true);
  has('a priority', (e) => e.record.priority === 9);
  has('a join of two', (e) => e.type === 'join' && e.parents.length === 2);
  has('several traces', () => new Set(events.map((e) => e.record.traceId)).size > 2);
  for (const [what, raw] of runs) checkRoundTrip(t, raw, OFFSET, what);
  checkRoundTrip(t, all, OFFSET, 'every run in one blob');
  // Real blobs are small: the 288-byte structs are mostly padding.
  const bytes = native().packEvents(all, OFFSET, 0).blob.length;
  t.ok(bytes / events.length < 40, `${(bytes / events.length).toFixed(1)} bytes per event (raw: ${EVENT_BYTES})`);
});

/** Random structs: any byte anywhere, with enough repetition that every shortcut of the packer is taken. */
function randomBatch(n: number, seed: number): Buffer {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  const buf = crypto.randomBytes(n * EVENT_BYTES);
  const traces = Array.from({ length: 40 }, () => crypto.randomBytes(16));
  const whos = Array.from({ length: 30 }, () => crypto.randomBytes(24));
  const chans = Array.from({ length: 20 }, () => crypto.randomBytes(EVENT_BYTES));
  const ids: bigint[] = [];
  let ts = BigInt.asUintN(64, BigInt(`0x${crypto.randomBytes(8).toString('hex')}`));
  for (let i = 0; i < n; i++) {
    const o = i * EVENT_BYTES;
    const r = () => rnd();
    if (r() < 0.8) buf[o + 16] = 1 + Math.floor(r() * 7); // else any type byte
    if (r() < 0.8) buf[o + 17] = Math.floor(r() * 5); // else any count (more than 4 is truncated)
    if (r() < 0.7) buf[o + 18] = Math.floor(r() * 5);
    if (r() < 0.5) buf[o + 19] = 0;
    if (r() < 0.5) buf.fill(0, o + 20, o + 28); // no args
    if (r() < 0.7) {
      ts += BigInt(Math.floor(r() * 1e6)) - 1000n; // mostly forward, sometimes back
      buf.writeBigUInt64LE(BigInt.asUintN(64, ts), o);
    }
    if (r() < 0.8) pick(whos).copy(buf, o + 8, 0, 8); // pid, tid from a few threads
    if (r() < 0.8) pick(whos).copy(buf, o + 144, 8, 24); // comm (any bytes, a NUL or none)
    if (r() < 0.3) buf[o + 144 + Math.floor(r() * 16)] = 0;
    if (r() < 0.9) pick(traces).copy(buf, o + 88);
    if (r() < 0.6) buf[o + 82] = 0; // priority
    // Ids: 48 bits mostly; sometimes wider, sometimes an earlier event's.
    let id = BigInt(`0x${crypto.randomBytes(6).toString('hex')}`);
    if (r() < 0.1) id = BigInt(`0x${crypto.randomBytes(8).toString('hex')}`);
    if (r() < 0.05 && ids.length) id = pick(ids);
    buf.writeBigUInt64LE(id, o + 104);
    for (let p = 0; p < 4; p++) {
      const x = r();
      if (x < 0.6 && ids.length) buf.writeBigUInt64LE(ids[Math.max(0, ids.length - 1 - Math.floor(r() * 8))], o + 48 + 8 * p);
      else if (x < 0.8) buf.writeBigUInt64LE(BigInt(`0x${crypto.randomBytes(6).toString('hex')}`), o + 48 + 8 * p);
    }
    ids.push(id);
    // Channel and path bytes: a few channels repeated, or random, or none; paths with a NUL anywhere, or none.
    const c = r();
    if (c < 0.5) {
      const src = pick(chans);
      src.copy(buf, o + 18, 18, 19);
      src.copy(buf, o + 28, 28, 40);
      src.copy(buf, o + 160, 160, 264);
    } else if (c < 0.7) {
      buf.fill(0, o + 28, o + 40);
      buf.fill(0, o + 160, o + 264);
      buf[o + 18] = 0;
    }
    const p = r();
    if (p < 0.2) buf[o + 160] = 0; // abstract-style name
    else if (p < 0.4) buf[o + 160 + Math.floor(r() * 64)] = 0;
    else if (p < 0.5) buf.fill(0, o + 160, o + 224);
    if (r() < 0.3) buf.fill(0, o + 224, o + 256); // no addresses
    if (r() < 0.3) buf.fill(0, o + 256, o + 260); // no ports
  }
  return buf;
}

t.test('blobs give back every field of random structs', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const raw = randomBatch(4000, seed);
    const parts = [raw.subarray(0, 1000 * EVENT_BYTES), raw.subarray(1000 * EVENT_BYTES, 1001 * EVENT_BYTES), raw.subarray(1001 * EVENT_BYTES)];
    for (const offset of [0n, OFFSET, -OFFSET]) checkRoundTrip(t, parts, offset, `random structs, seed ${seed}, clock offset ${offset}`);
  }
  checkRoundTrip(t, [], 0n, 'no events');
});

t.test('new trace ids begin with the time; show takes a unique prefix or suffix', async (t) => {
  const before = Date.now();
  const ids = Array.from({ length: 1000 }, () => newTraceId());
  const ms = ids.map((id) => parseInt(id.slice(0, 12), 16));
  t.ok(ms.every((x) => x >= before && x <= Date.now()), 'the first 48 bits are the time in ms');
  t.ok(ms.every((x, i) => i === 0 || x >= ms[i - 1]), 'so ids made later sort after');
  t.equal(new Set(ids.map((id) => id.slice(12))).size, ids.length, 'and the other 80 bits differ');

  // A store of traces whose ids share a start (one millisecond) or an end.
  const db = path.join(tmpdir(t), 'traces.db');
  const store = TraceStore.open(db);
  const run = store.beginRun('test', 'h');
  const same = 'aaaaaaaaaaaa';
  const named = [`${same}11111111111111111111`, `${same}22222222222222222222`, `bbbbbbbbbbbb3333333333333333cafe`, `cccccccccccc4444444444444444cafe`];
  const raw = randomBatch(named.length, 7);
  named.forEach((id, i) => Buffer.from(id, 'hex').copy(raw, i * EVENT_BYTES + 88));
  store.appendRaw([raw], 0n, run, 'h');
  t.equal(store.resolve(named[0]), named[0], 'a whole id');
  t.equal(store.resolve(`${same}1`), named[0], 'a unique prefix');
  t.equal(store.resolve('2222'), named[1], 'a unique suffix');
  t.equal(store.resolve('3cafe'), named[2], 'a suffix that ends two ids, long enough to tell them apart');
  t.throws(() => store.resolve(same), /names more than one trace/, 'a prefix shared by two traces is refused');
  t.throws(() => store.resolve('cafe'), /names more than one trace/, 'a suffix shared by two traces is refused');
  t.throws(() => store.resolve('dddd'), /no trace dddd/, 'neither');
  t.throws(() => store.resolve('xyz'), /hex digits/, 'not hex');
  store.close();
});

t.test('a corrupt or unknown blob is an error, never a crash', async (t) => {
  const { blob } = native().packEvents([randomBatch(300, 9)], OFFSET, 0);
  let errors = 0;
  let wrong = 0;
  for (let n = 0; n < blob.length; n++) {
    try {
      native().unpackEvents(blob.subarray(0, n));
    } catch (err) {
      errors++;
      if (!/^corrupt event blob|is not known/.test((err as Error).message)) wrong++;
    }
  }
  t.equal(errors, blob.length, 'every truncation is refused');
  t.equal(wrong, 0, 'as a corrupt blob');
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(blob);
    for (let k = 0; k < 4; k++) b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
    try {
      native().unpackEvents(b);
    } catch (err) {
      if (!/^corrupt event blob|is not known/.test((err as Error).message)) wrong++;
    }
  }
  t.equal(wrong, 0, 'random damage is either read or refused as corrupt');
  const future = Buffer.from(blob);
  future[2] = 9;
  t.throws(() => native().unpackEvents(future), /event blob format 9 is not known to this causeway/);
  t.throws(() => unpackBlob(blob, 2, 'h', null), /in event blob format 2; this causeway reads format 1/);
});

const gunzip = (file: string) => zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, file)));

t.test('a version 1 database reads as it did, and is brought to version 2 when written', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'v1.db');
  fs.writeFileSync(db, gunzip('traces-v1.db.gz'));
  // What causeway with the version 1 store printed for this file.
  const want = JSON.parse(gunzip('traces-v1.expected.json.gz').toString()) as { ls: { id: string }[]; show: Record<string, unknown>; tree: Record<string, string> };
  const sha = () => crypto.createHash('sha256').update(fs.readFileSync(db)).digest('hex');
  const before = sha();
  const ls = await causeway(['ls', '--db', db, '--json']);
  t.equal(ls.status, 0, ls.stderr);
  t.same(JSON.parse(ls.stdout), want.ls, 'ls: the same as version 1 printed');
  for (const { id } of want.ls) {
    const js = await causeway(['show', id, '--db', db, '--json']);
    t.same(JSON.parse(js.stdout), want.show[id], `show ${id.slice(0, 8)} --json: the same`);
    const tree = await causeway(['show', id, '--db', db]);
    t.equal(tree.stdout, want.tree[id], `show ${id.slice(0, 8)}: the same tree`);
  }
  t.equal(sha(), before, 'reading does not change the file');

  const r = await causeway(['trace', '--db', db, '--', 'sh', '-c', 'echo hi | cat']);
  t.equal(r.status, 0, r.stderr);
  const sql = new Database(db, { readonly: true });
  t.equal((sql.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string }).value, '2', 'written: now version 2');
  t.equal((sql.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 610, "the version 1 rows stay where they were");
  sql.close();
  const after = JSON.parse((await causeway(['ls', '--db', db, '--json'])).stdout) as { id: string; events: number }[];
  t.equal(after.length, want.ls.length + 1, 'ls lists the old traces and the new one');
  for (const { id } of want.ls) t.same(JSON.parse((await causeway(['show', id, '--db', db, '--json'])).stdout), want.show[id], `show ${id.slice(0, 8)}: still the same`);
  const added = after.find((x) => !want.ls.some((o) => o.id === x.id))!;
  const g = JSON.parse((await causeway(['show', added.id, '--db', db, '--json'])).stdout) as { events: { type: string }[] };
  t.equal(g.events.length, added.events, 'the new trace reads back whole');
});

t.test('a database newer than this causeway is refused, and left alone', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'new.db');
  fs.writeFileSync(db, gunzip('traces-v1.db.gz'));
  const sql = new Database(db);
  sql.prepare("UPDATE meta SET value = '3' WHERE key = 'schema_version'").run();
  sql.close();
  const before = fs.readFileSync(db);
  for (const args of [['ls', '--db', db], ['show', 'c1d9', '--db', db], ['trace', '--db', db, '--', 'true']]) {
    const r = await causeway(args);
    t.equal(r.status, 1, `${args[0]} fails`);
    t.match(r.stderr, /has trace schema version 3; this causeway reads versions 1 to 2: upgrade causeway or use another --db/, `${args[0]}: a clear error`);
  }
  t.ok(fs.readFileSync(db).equals(before), 'the file is unchanged');
});

/** The batches whose directory names a trace, from the database itself. */
function batchesHolding(db: string, trace: string): number[] {
  const sql = new Database(db, { readonly: true });
  const rows = sql.prepare('SELECT id, traces FROM batches ORDER BY id').all() as { id: number; traces: Buffer }[];
  sql.close();
  return rows.filter((r) => [...Array(r.traces.length / 40).keys()].some((i) => r.traces.toString('hex', 40 * i, 40 * i + 16) === trace)).map((r) => r.id);
}

t.test('show reads only the batches that hold the trace', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'traces.db');
  const ids = [newTraceId(), newTraceId(), newTraceId()];
  // Three runs into one file; the first one long enough for several batches.
  const cmds = [['sh', '-c', 'for i in $(seq 60); do seq 1 20000 | gzip -1 | gunzip >/dev/null; sleep 0.01; done'], ['sh', '-c', 'echo b | cat'], ['sh', '-c', 'echo c | cat']];
  for (let i = 0; i < 3; i++) {
    const r = await causeway(['trace', '--db', db, '--trace', ids[i], '--', ...cmds[i]]);
    t.equal(r.status, 0, r.stderr);
  }
  const sql = new Database(db);
  const total = (sql.prepare('SELECT count(*) AS n FROM batches').get() as { n: number }).n;
  const store = TraceStore.open(db, { readonly: true });
  for (const id of ids) {
    const holding = batchesHolding(db, id);
    const before = store.reads.batches;
    const events = store.events(id);
    t.equal(store.reads.batches - before, holding.length, `trace ${id.slice(0, 8)}: ${holding.length} of ${total} batches read, the ones that hold it`);
    t.ok(events.length > 0 && events.every((e) => e.trace === id), 'and only its events come back');
  }
  t.ok(batchesHolding(db, ids[0]).length > 1, 'the long run spans several batches');
  store.close();
  // Damage every batch that does not hold the first trace: it still shows, the others cannot.
  const shown = (await causeway(['show', ids[0], '--db', db, '--json'])).stdout;
  const keep = batchesHolding(db, ids[0]);
  sql.prepare(`UPDATE batches SET data = randomblob(length(data)) WHERE id NOT IN (${keep.join(',')})`).run();
  sql.close();
  const again = await causeway(['show', ids[0], '--db', db, '--json']);
  t.equal(again.status, 0, again.stderr);
  t.equal(again.stdout, shown, 'the trace reads the same with every other batch destroyed');
  const other = await causeway(['show', ids[1], '--db', db]);
  t.equal(other.status, 1, 'a trace in a destroyed batch cannot be read');
  t.match(other.stderr, /^causeway: batch \d+ of .* cannot be read: corrupt event blob/m, 'which is said plainly');
});

/** Real raw events (a pipeline's), repeated to make at least n. */
async function someEvents(n: number): Promise<Buffer> {
  const once = Buffer.concat(await capture('sh', ['-c', 'seq 1 100000 | gzip -1 | gunzip | wc -l >/dev/null']));
  return Buffer.concat(Array.from({ length: Math.ceil((n * EVENT_BYTES) / once.length) }, () => once));
}

/** Rewrites every event's trace id. */
function retrace(raw: Buffer, trace: Buffer): Buffer {
  const b = Buffer.from(raw);
  for (let o = 0; o < b.length; o += EVENT_BYTES) trace.copy(b, o + 88);
  return b;
}

t.test('a long trace: its list of batches moves out of its row, and reads back whole', { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'long.db');
  const raw = await someEvents(10);
  const trace = crypto.randomBytes(16);
  const one = retrace(raw.subarray(0, 10 * EVENT_BYTES), trace);
  const other = retrace(raw.subarray(0, 5 * EVENT_BYTES), crypto.randomBytes(16));
  const store = TraceStore.open(db);
  const runId = store.beginRun('long', 'h');
  for (let i = 0; i < 1500; i++) store.appendRaw(i % 7 ? [one] : [one, other], OFFSET, runId, 'h');
  const id = trace.toString('hex');
  const sql = new Database(db, { readonly: true });
  const spilled = sql.prepare('SELECT count(*) AS n FROM trace_batches WHERE trace = ?').get(id) as { n: number };
  const row = sql.prepare('SELECT events, length(batches) AS len FROM traces WHERE id = ?').get(id) as { events: number; len: number };
  sql.close();
  t.ok(spilled.n >= 2, `its batch list moved to trace_batches in ${spilled.n} rows`);
  t.ok(row.len <= 2000, `the trace's own row stays short (${row.len} characters)`);
  t.equal(row.events, 15000, 'its count is exact');
  const events = store.events(id);
  t.equal(events.length, 15000, 'every event reads back');
  t.equal(store.reads.batches, 1500, 'from its 1500 batches');
  const want = expected([one], OFFSET).map(line);
  t.same(events.map(line).sort(), Array.from({ length: 1500 }, () => want).flat().sort(), 'as stored');
  const [summary] = store.list(10).filter((s) => s.id === id);
  t.same(summary && { events: summary.events, processes: summary.processes, hosts: summary.hosts }, { events: 15000, processes: new Set(decodeEvents(one, 0n).map((e) => e.pid)).size, hosts: ['h'] }, 'ls: events, processes, hosts');
  t.same(store.tracesOfRun(runId).sort(), [id, other.toString('hex', 88, 104)].sort(), "the run's traces");
  store.close();
});

t.test("the writer's queue is bounded: while the database is busy, what does not fit is dropped and counted, the rest stored", { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'queue.db');
  const batch = (await someEvents(1000)).subarray(0, 1000 * EVENT_BYTES);
  const store = TraceStore.open(db);
  const runId = store.beginRun('queue', 'h');
  const errors: Error[] = [];
  // Room for three batches and a half, packed.
  const packed = packRaw([batch], OFFSET);
  const size = packed.blob.length + packed.traces.length + packed.pids.length;
  const writer = new TraceWriter({ db, run: runId, host: 'h', queueBytes: Math.floor(3.5 * size), onError: (e) => errors.push(e) });
  await writer.ready;
  // Another connection holds the database (as another causeway may): the worker can store nothing meanwhile.
  const other = new Database(db);
  other.prepare('BEGIN IMMEDIATE').run();
  for (let i = 0; i < 10; i++) writer.push(batch, OFFSET);
  t.equal(writer.stats.dropped, 7000, 'past the bound, batches are dropped whole and counted at once');
  t.same(writer.queued(), { events: 3000, bytes: 3 * size }, 'three wait');
  other.prepare('COMMIT').run();
  other.close();
  const stats = await writer.close();
  t.same({ stored: stats.stored, failed: stats.failed, dropped: stats.dropped }, { stored: 3000, failed: 0, dropped: 7000 }, 'once the database is free, they are stored');
  t.equal(store.count().events, 3000, 'and is in the database');
  t.same(errors, [], 'no error');
  store.close();
});

t.test("the writer gathers what arrives into one transaction: over commitMs, at once past txEvents, and at close", { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'group.db');
  const batch = (await someEvents(1000)).subarray(0, 1000 * EVENT_BYTES);
  const store = TraceStore.open(db);
  const runId = store.beginRun('group', 'h');
  const writer = new TraceWriter({ db, run: runId, host: 'h', commitMs: 600_000, txEvents: 3000 });
  await writer.ready;
  writer.push(batch, OFFSET);
  writer.push(batch, OFFSET);
  await new Promise((r) => setTimeout(r, 500));
  t.same({ stored: writer.stats.stored, queued: writer.queued().events, inDb: store.count().events }, { stored: 0, queued: 2000, inDb: 0 }, 'two batches wait for the window (10 minutes here)');
  writer.push(batch, OFFSET);
  const t0 = Date.now();
  while (writer.stats.stored < 3000 && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 20));
  t.equal(writer.stats.stored, 3000, 'the third makes txEvents: the three are stored at once');
  t.equal(store.count().events, 3000, 'and are in the database');
  writer.push(batch, OFFSET);
  const stats = await writer.close();
  t.same({ stored: stats.stored, dropped: stats.dropped, failed: stats.failed }, { stored: 4000, dropped: 0, failed: 0 }, 'close stores what waits without waiting for the window');
  t.equal(store.count().events, 4000);
  store.close();
});

t.test("a trace whose store falls behind names its drops and still stores what it took", { skip: skip ?? false }, async (t) => {
  const { trace } = await import('../src/tracer/trace');
  const db = path.join(tmpdir(t), 'behind.db');
  // A queue of one byte: every batch is dropped.
  const res = await trace({ command: 'sh', args: ['-c', 'seq 1 20000 | gzip -1 | gunzip | wc -l >/dev/null'], db, storeQueueBytes: 1, summary: false, status: false });
  t.equal(res.status, 0);
  t.ok(res.storeDropped > 0 && res.storeDropped === res.events, `every event dropped (${res.storeDropped})`);
  t.equal(res.stored + res.storeDropped + res.storeFailed, res.events, 'stored + dropped + failed = every event of the run');
});
