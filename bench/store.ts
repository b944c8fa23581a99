/**
 * `npm run bench -- --only store`: the trace store on one core. Raw batches
 * captured from real runs (pipe, UNIX and TCP ping-pong, fork + exec, a
 * pipeline), exactly as the shim delivered them, are replayed with new trace
 * ids on every pass into TraceStore.appendRaw on this thread: one blob of up
 * to 16384 events per transaction, as the tracer's worker stores them when it
 * is behind. Measured: events per second of time spent storing, sustained
 * over several seconds; CPU per event, split into native packing and SQLite
 * (with the bindings); bytes per event on disk. Three densities of traces:
 * as captured (a few long traces), one trace per 64 events, one per 16.
 * Then the tracer's own path (TraceWriter: main thread -> worker) fed at
 * 1,000,000 events/s: events stored and dropped.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { run } from '../src/runtime/runtime';
import { newRecord } from '../src/kernel/record';
import { EVENT_BYTES } from '../src/kernel/events';
import { TraceStore } from '../src/tracer/store';
import { STORE_QUEUE_BYTES, TraceWriter } from '../src/tracer/writer';
import { median } from './common';

/** Offset of the trace id in struct cw_event (rec at 80, trace_id at 8 in it). */
const TRACE_OFF = 88;
const BLOB_EVENTS = 16384;
/** Events in a full batch from the addon's reader (kBatchEvents in native/event_reader.cc). */
const READER_BATCH = 2048;
const TARGET = 1_000_000;

interface Case {
  name: string;
  /** Events per trace; 0: the traces as captured. */
  perTrace: number;
  /** New ids begin with a counter, as causeway's begin with the time (record.ts); or random, as other tracers' may be. */
  randomIds?: boolean;
}
const CASES: Case[] = [
  { name: 'as captured', perTrace: 0 },
  { name: 'one trace per 64 events', perTrace: 64 },
  { name: 'one trace per 16 events', perTrace: 16 },
  { name: 'one trace per 16 events, random ids', perTrace: 16, randomIds: true },
];

/** What the tracer's own path is fed with at the target rate. */
const WRITER_CASES = CASES.slice(0, 2);

export interface StoreCaseResult {
  name: string;
  perTrace: number;
  events: number;
  traces: number;
  /** Seconds spent in appendRaw. */
  seconds: number;
  eventsPerSec: number;
  cpuNsPerEvent: number;
  packNsPerEvent: number;
  sqlNsPerEvent: number;
  diskBytesPerEvent: number;
  blobBytesPerEvent: number;
}

export interface StoreBench {
  capture: { events: number; batches: number; traces: number; workloads: string[] };
  cases: StoreCaseResult[][];
  /** queuePeak: the most events waiting for the worker at once; queuePeakBytes: their packed bytes (the bound is STORE_QUEUE_BYTES). */
  writer: { name: string; rate: number; seconds: number; pushed: number; stored: number; dropped: number; failed: number; queuePeak: number; queuePeakBytes: number }[];
}

/** Raw batches of real runs, as the shim delivered them. */
async function capture(bin: string, dir: string, secs: number): Promise<{ batches: Buffer[]; workloads: string[] }> {
  const forkexec = path.join(path.dirname(bin), 'forkexec');
  const out = path.join(dir, 'store-capture');
  const runs: [string, string, string[]][] = [
    ['pipe ping-pong', bin, ['pipe', '1', String(secs), out, '-1']],
    ['UNIX ping-pong', bin, ['unix', '64', String(secs), out, '-1']],
    ['TCP ping-pong', bin, ['tcp', '64', String(secs), out, '-1']],
    ['fork + exec', forkexec, [String(secs), out, '-1']],
    ['a pipeline', 'sh', ['-c', 'seq 1 200000 | gzip -1 | gunzip | wc -l >/dev/null']],
  ];
  const batches: Buffer[] = [];
  process.env.PP_ADDR = '127.0.0.1';
  for (const [, command, args] of runs) {
    const res = await run({ command, args, record: newRecord(), summary: false, onRawEvents: (b) => batches.push(Buffer.from(b)) });
    if (res.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${res.status}`);
  }
  return { batches, workloads: runs.map(([name]) => name) };
}

/** The trace ids of the captured events, 16 bytes each, in order: what every pass starts from. */
function traceIds(batches: Buffer[]): Buffer {
  const ids: Buffer[] = [];
  for (const b of batches) for (let o = 0; o < b.length; o += EVENT_BYTES) ids.push(b.subarray(o + TRACE_OFF, o + TRACE_OFF + 16));
  return Buffer.concat(ids);
}

/** The per-pass tag xored into the first 4 bytes of a captured trace id, by batch: what it holds now. */
const applied = new WeakMap<Buffer, number>();

/**
 * Gives every event of batch b (whose first event is event number first of
 * the capture) its trace for a pass: the captured one made new for the pass
 * (perTrace 0: as many traces as captured; its first 4 bytes xor a per-pass
 * tag, the next 4 the pass), or one per perTrace events, whose id begins
 * with a count of the traces so far (big-endian, as a causeway id begins
 * with its time) or, randomIds, is scattered over the whole id space. Cheap
 * enough to run a batch at a time between pushes.
 */
function retrace(b: Buffer, first: number, pass: number, c: Case, salt: number): void {
  const { perTrace } = c;
  const tag = (salt ^ Math.imul(pass + 1, 0x9e3779b1)) >>> 0;
  if (perTrace === 0) {
    const flip = ((applied.get(b) ?? 0) ^ tag) >>> 0;
    applied.set(b, tag);
    for (let at = TRACE_OFF; at < b.length; at += EVENT_BYTES) {
      b.writeUInt32LE((b.readUInt32LE(at) ^ flip) >>> 0, at);
      b.writeUInt32LE(pass, at + 4);
    }
    return;
  }
  for (let at = TRACE_OFF, i = first; at < b.length; at += EVENT_BYTES, i++) {
    const n = Math.floor(i / perTrace) + 1;
    if (c.randomIds) b.writeUInt32LE((Math.imul(n, 0x9e3779b1) ^ tag) >>> 0, at);
    else b.writeUIntBE(pass * 2 ** 24 + n, at, 6); // fewer than 2^24 traces per pass
    b.writeUInt16LE(pass & 0xffff, at + 6);
    b.writeUInt32LE(salt, at + 8);
    b.writeUInt32LE(n, at + 12);
  }
}

/** Puts the captured trace ids back (before a measurement, not timed). */
function restore(batches: Buffer[], orig: Buffer): void {
  let i = 0;
  for (const b of batches) {
    applied.delete(b);
    for (let o = 0; o < b.length; o += EVENT_BYTES, i++) orig.copy(b, o + TRACE_OFF, 16 * i, 16 * i + 16);
  }
}

/** The number of the first event of each batch. */
function firsts(batches: Buffer[]): number[] {
  let n = 0;
  return batches.map((b) => ((n += b.length / EVENT_BYTES), n - b.length / EVENT_BYTES));
}

/** Groups batches into runs of up to max events, whole batches each. */
function groups(batches: Buffer[], max = BLOB_EVENTS): Buffer[][] {
  const out: Buffer[][] = [];
  let cur: Buffer[] = [];
  let n = 0;
  for (const b of batches) {
    const k = b.length / EVENT_BYTES;
    if (n && n + k > max) {
      out.push(cur);
      cur = [];
      n = 0;
    }
    cur.push(b);
    n += k;
  }
  if (cur.length) out.push(cur);
  return out;
}

function removeDb(db: string): void {
  for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
}

/** Lets the disk finish writing what the previous measurement left, so that one's writeback does not slow the next. */
function settle(): void {
  execFileSync('sync');
}

/** Stores passes of the captured batches for at least secs of store time. */
function storeCase(c: Case, batches: Buffer[], orig: Buffer, dir: string, secs: number): StoreCaseResult {
  const db = path.join(dir, 'store-bench.db');
  removeDb(db);
  settle();
  const store = TraceStore.open(db, { appender: true });
  const runId = store.beginRun('bench', 'bench');
  const gs = groups(batches);
  const salt = crypto.randomBytes(4).readUInt32LE(0);
  let [events, blobBytes, wall, cpu] = [0, 0, 0n, 0];
  restore(batches, orig);
  const starts = firsts(batches);
  const first = new Map(batches.map((b, k) => [b, starts[k]]));
  for (let pass = 0; Number(wall) < secs * 1e9; pass++) {
    for (const g of gs) {
      for (const b of g) retrace(b, first.get(b)!, pass, c, salt); // not timed
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const r = store.appendRaw(g, 0n, runId, 'bench');
      wall += process.hrtime.bigint() - t0;
      const c1 = process.cpuUsage(c0);
      cpu += c1.user + c1.system;
      events += r.events;
      blobBytes += r.bytes;
    }
  }
  const { packNs, sqlNs } = store.times;
  const traces = store.count().traces;
  store.close();
  // Everything in the main file, WAL checkpointed away: what the events take on disk.
  const check = TraceStore.open(db, { appender: true });
  check.close();
  const size = [db, `${db}-wal`].reduce((n, f) => n + (fs.existsSync(f) ? fs.statSync(f).size : 0), 0);
  removeDb(db);
  const seconds = Number(wall) / 1e9;
  return {
    name: c.name,
    perTrace: c.perTrace,
    events,
    traces,
    seconds,
    eventsPerSec: events / seconds,
    cpuNsPerEvent: (cpu * 1000) / events,
    packNsPerEvent: Number(packNs) / events,
    sqlNsPerEvent: Number(sqlNs) / events,
    diskBytesPerEvent: size / events,
    blobBytesPerEvent: blobBytes / events,
  };
}

/**
 * The tracer's path: TraceWriter fed from this thread at `rate` events/s for
 * secs. At that rate the addon's reader delivers full batches (2048 events,
 * native/event_reader.cc), so the captured ones are joined into batches of
 * 2048 events.
 */
async function writerAtRate(c: Case, captured: Buffer[], orig: Buffer, dir: string, rate: number, secs: number) {
  restore(captured, orig);
  const batches = groups(captured, READER_BATCH).map((g) => Buffer.concat(g));
  const db = path.join(dir, 'store-writer.db');
  removeDb(db);
  settle();
  const store = TraceStore.open(db);
  const runId = store.beginRun('bench', 'bench');
  store.close();
  let error: Error | undefined;
  const writer = new TraceWriter({ db, run: runId, host: 'bench', onError: (e) => (error = e) });
  await writer.ready; // as causeway trace does before the command starts
  const salt = crypto.randomBytes(4).readUInt32LE(0);
  const first = firsts(batches);
  const start = process.hrtime.bigint();
  let [pushed, i, pass, peak, peakBytes] = [0, 0, 0, 0, 0];
  for (;;) {
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (elapsed >= secs) break;
    // Catch up to the rate, a batch at a time, then let the event loop (the worker's acknowledgements) run.
    while (pushed < elapsed * rate) {
      if (i === batches.length) [i, pass] = [0, pass + 1];
      const b = batches[i];
      retrace(b, first[i++], pass, c, salt); // a batch at a time: no long pause of this thread
      writer.push(b, 0n);
      pushed += b.length / EVENT_BYTES;
      const q = writer.queued();
      peak = Math.max(peak, q.events);
      peakBytes = Math.max(peakBytes, q.bytes);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  const stats = await writer.close();
  removeDb(db);
  if (error) throw error;
  return { name: c.name, rate, seconds: secs, pushed, stored: stats.stored, dropped: stats.dropped, failed: stats.failed, queuePeak: peak, queuePeakBytes: peakBytes };
}

export async function benchStore(opts: { bin: string; dir: string; quick?: boolean }): Promise<{ json: StoreBench; md: string }> {
  const rounds = opts.quick ? 1 : 3;
  const secs = opts.quick ? 2 : 5;
  const { batches, workloads } = await capture(opts.bin, opts.dir, opts.quick ? 0.3 : 0.5);
  const events = batches.reduce((n, b) => n + b.length / EVENT_BYTES, 0);
  const orig = traceIds(batches);
  const traces = new Set<string>();
  for (const b of batches) for (let o = 0; o < b.length; o += EVENT_BYTES) traces.add(b.toString('hex', o + TRACE_OFF, o + TRACE_OFF + 16));
  process.stderr.write(`store: ${events} events in ${batches.length} raw batches captured (${traces.size} traces)\n`);
  const cases: StoreCaseResult[][] = CASES.map(() => []);
  for (let r = 0; r < rounds; r++)
    CASES.forEach((c, k) => {
      const res = storeCase(c, batches, orig, opts.dir, secs);
      cases[k].push(res);
      process.stderr.write(
        `store (${c.name}), round ${r + 1}/${rounds}: ${res.eventsPerSec.toFixed(0)} events/s over ${res.seconds.toFixed(1)} s, ` +
          `${res.cpuNsPerEvent.toFixed(0)} ns CPU/event (pack ${res.packNsPerEvent.toFixed(0)}, SQLite ${res.sqlNsPerEvent.toFixed(0)}), ${res.diskBytesPerEvent.toFixed(1)} B/event on disk\n`,
      );
    });
  const writer: StoreBench['writer'] = [];
  for (let r = 0; r < rounds; r++)
    for (const c of WRITER_CASES) {
      const w = await writerAtRate(c, batches, orig, opts.dir, TARGET, secs);
      writer.push(w);
      process.stderr.write(`store: the tracer's writer fed ${w.pushed} events (${c.name}) at ${TARGET} events/s: ${w.stored} stored, ${w.dropped} dropped, ${w.failed} failed, queue peak ${w.queuePeak} events (${(w.queuePeakBytes / 1048576).toFixed(1)} MiB)\n`);
    }
  const json: StoreBench = { capture: { events, batches: batches.length, traces: traces.size, workloads }, cases, writer };
  return { json, md: storeMarkdown(json) };
}

/** The markdown section of BENCHMARKS.md. */
export function storeMarkdown(j: StoreBench): string {
  const f0 = (x: number) => x.toLocaleString('en-US', { maximumFractionDigits: 0 });
  const spread = (xs: number[], f = f0) => (xs.length > 1 ? ` (${f(Math.min(...xs))}-${f(Math.max(...xs))})` : '');
  const rows = j.cases.map((rs) => {
    const m = (k: keyof StoreCaseResult) => median(rs.map((r) => r[k] as number));
    return `| ${rs[0].name} | ${f0(m('eventsPerSec'))}${spread(rs.map((r) => r.eventsPerSec))} | ${f0(m('cpuNsPerEvent'))} | ${f0(m('packNsPerEvent'))} | ${f0(m('sqlNsPerEvent'))} | ${m('diskBytesPerEvent').toFixed(1)} | ${m('blobBytesPerEvent').toFixed(1)} | ${f0(m('traces'))} |`;
  });
  const drops = j.writer.reduce((n, w) => n + w.dropped + w.failed, 0);
  const secs = j.cases[0]?.[0] ? median(j.cases[0].map((r) => r.seconds)) : 0;
  return [
    '## The trace store (bench/store.ts)',
    '',
    `Raw batches captured from real runs (${j.capture.workloads.join(', ')}: ${f0(j.capture.events)} events in ${f0(j.capture.batches)} batches, ` +
      `as the shim delivered them) replayed with new trace ids on every pass into \`TraceStore.appendRaw\` on one thread, one blob of up to ${BLOB_EVENTS} events per transaction ` +
      `(how the tracer's worker stores when it is behind), about ${secs.toFixed(0)} s of storing per run, ${j.cases[0]?.length ?? 0} run(s), medians (range). ` +
      'Events/s counts the time spent storing (the replay\'s rewriting of trace ids between blobs is not counted); ns per event: CPU time of the process, ' +
      'and wall time in native packing and in SQLite (statements, bindings, commit, checkpoints); on disk: the database file after a checkpoint, per event.',
    '',
    '| traces | events/s | ns CPU/event | pack (native) ns/event | SQLite ns/event | bytes/event on disk | blob bytes/event | traces stored |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `The tracer's path (\`TraceWriter\`: raw batches packed on the main thread, stored by its worker, WAL checkpoints by a second worker) ` +
      `fed at ${f0(TARGET)} events/s for ${j.writer[0]?.seconds ?? 0} s with the same events, in batches of ${READER_BATCH} (what the addon's reader delivers at that rate), ` +
      `queue bound ${f0(STORE_QUEUE_BYTES / 1048576)} MiB of packed events, one line per run:`,
    '',
    '| fed with | events | stored | dropped | failed | most waiting at once |',
    '|---|---|---|---|---|---|',
    ...j.writer.map((w) => `| ${w.name} | ${f0(w.pushed)} | ${f0(w.stored)} | ${f0(w.dropped)} | ${f0(w.failed)} | ${f0(w.queuePeak)} events, ${(w.queuePeakBytes / 1048576).toFixed(1)} MiB |`),
    '',
    `Target (issue 11): at least 1,000,000 events/s on one core, with 0 drops. ` +
      j.cases.map((rs) => {
        const m = median(rs.map((r) => r.eventsPerSec));
        const randomIds = CASES.find((c) => c.name === rs[0].name)?.randomIds;
        return `${rs[0].name}: ${randomIds ? 'for comparison, not a target' : m >= TARGET ? 'met' : 'NOT met'} (${f0(m)} events/s)`;
      }).join('; ') +
      `; drops on the tracer's path at ${f0(TARGET)} events/s: ${drops === 0 ? 'none' : f0(drops)}. ` +
      'A new trace is one insert in the B-tree of traces, keyed by the id. The ids causeway mints begin with their time, so new traces go to its end, ' +
      'a few pages per transaction; random ids (the last row: ids minted by another tracer and carried in) go each to a random page of a tree that grows with the file, ' +
      'which SQLite writes whole (4 KiB) at the commit and again at the checkpoint. ' +
      'The version 1 store (a row per event) took about 73,000 events/s, 11 µs of CPU per event.',
    '',
  ].join('\n');
}
