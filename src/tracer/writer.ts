/**
 * The tracer's writer: raw batches from the shim (RunOptions.onRawEvents, no
 * JavaScript object per event) are packed where they arrive (native code,
 * ~150 ns per event: a 288-byte struct becomes ~15-25 bytes) and handed to a
 * worker thread that stores them (TraceStore.appendPacked), so that SQLite,
 * and waiting for a database another causeway holds, never run on the main
 * thread, which serves the SDK and the actors.
 *
 * What waits for the worker is bounded (queueBytes of packed blobs: 64 MiB,
 * some 3 to 4 million events, several seconds at 1M events/s): past the
 * bound, a batch is dropped whole and counted (TracerStats.dropped), never
 * queued without limit; the traced programs are never slowed (the kernel's
 * ring buffer never waits for user space: it drops and counts). The worker
 * counts what it has taken in shared memory, so the queue's length is exact
 * at once, not only when its messages have been read.
 *
 * Group commit: the worker stores what arrived over commitMs (100 ms) in one
 * transaction, at once if txEvents events are waiting. A commit writes every
 * page it touched to the WAL, and each new trace was then an insert at a
 * random place of the traces B-tree (ids have begun with their time since):
 * a commit per arriving batch (one every millisecond or so at a few thousand
 * requests per second) wrote the same pages over and over. Measured on the three-tier application: the tracer's
 * process went from 87-99 to 47-48 µs of CPU per request (docs/tracer.md).
 *
 * A second worker copies the WAL into the database file (checkpoints, every
 * second once the WAL has reached 4 MB), so that the one that stores never
 * stops for that copy and its fsync (20-80 ms each here). Each checkpoint
 * costs two fsyncs and copies each page once however often it changed, so
 * the interval is what bounds its cost: over a 60-s three-tier trace the
 * checkpointer took 5.6 µs per request every second, 9.9 every 250 ms, and
 * the process 35-37 against 39 in all. The WAL grows by a second of storing
 * between two (tens of MB at 1M events/s, where the store bench drops
 * nothing either way).
 *
 * A transaction the database refuses (a full disk, say) is counted in
 * TracerStats.failed and the worker goes on with the next; onError hears of
 * the first error once. push() runs on the main thread and never blocks.
 */
import fs from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { EVENT_BYTES } from '../kernel/events';
import { Packed, packRaw, TraceStore } from './store';

export interface TracerStats {
  /** Events stored. */
  stored: number;
  /** Events a failed transaction did not store (each is stored whole or not at all). */
  failed: number;
  /** Events dropped unstored: the queue to the worker was full (storage fell behind), or the drain deadline passed. */
  dropped: number;
  /** The first store error, if any. */
  error?: Error;
}

/** The queue's bound by default: bytes of packed blobs. */
export const STORE_QUEUE_BYTES = 64 * 1024 * 1024;

export interface WriterOptions {
  db: string;
  /** The run the batches belong to (TraceStore.beginRun) and the host they were seen on. */
  run: number;
  host: string;
  /** Bytes of packed blobs queued for the worker at most; past it batches are dropped (default STORE_QUEUE_BYTES). */
  queueBytes?: number;
  /** Events in one transaction at most (default 16384): a transaction is committed at once when so many wait. */
  txEvents?: number;
  /** How long the worker gathers what arrives into one transaction (ms, default COMMIT_MS; 0: a transaction per batch). */
  commitMs?: number;
  /** zlib level of the blobs' bodies, 0 (default: none) to 9. */
  deflate?: number;
  /** Called once, with the first error of the store. */
  onError?: (err: Error) => void;
}

interface Settings {
  role: 'append' | 'checkpoint';
  db: string;
  run: number;
  host: string;
  txEvents: number;
  commitMs: number;
}

/** Main thread to worker: a packed batch (its buffers transferred), the end, or (to the appender) "checkpoint yourself". */
type ToWorker = { blob: Uint8Array<ArrayBuffer>; traces: Uint8Array<ArrayBuffer>; pids: Uint8Array<ArrayBuffer>; events: number; bytes: number } | { end: true } | { checkpoints: true };
/** Worker to main thread: the store is open; events stored, or failed (with the error, once). */
type FromWorker = { ready: true } | { stored: number } | { failed: number; error?: string };

const WORKER_KEY = 'causewayTraceWriter';
/**
 * How often the checkpointer copies the WAL (ms); the WAL's size from which it
 * does (bytes: SQLite's own default, 1000 pages; below it the WAL just grows,
 * as with SQLite's defaults); and the WAL's size (pages) past which it waits
 * for the writer once.
 */
const CHECKPOINT_MS = 1000;
/** How long the appender gathers batches into one transaction by default (ms). */
export const COMMIT_MS = 100;
const CHECKPOINT_FROM_BYTES = 1000 * 4096;
const CHECKPOINT_WAIT_PAGES = 32768;
/** Shared counters the appender keeps: events and bytes it is done with. */
const DONE_EVENTS = 0;
const DONE_BYTES = 1;

export class TraceWriter {
  readonly stats: TracerStats = { stored: 0, failed: 0, dropped: 0 };
  /** Settles once the worker has opened the store (or failed to): batches pushed before wait in its queue. */
  readonly ready: Promise<void>;
  private readonly worker: Worker;
  private readonly checkpointer: Worker;
  private readonly limit: number;
  private readonly exited: Promise<void>;
  private readonly checkpointerExited: Promise<void>;
  /** Events and bytes posted to the worker. */
  private posted = { events: 0, bytes: 0 };
  /** What the worker is done with (stored or failed), counted by it. */
  private readonly done = new BigInt64Array(new SharedArrayBuffer(16));
  private closing = false;
  private dead = false;

  constructor(private readonly opts: WriterOptions) {
    this.limit = opts.queueBytes ?? STORE_QUEUE_BYTES;
    const settings: Settings = { role: 'append', db: opts.db, run: opts.run, host: opts.host, txEvents: opts.txEvents ?? 16384, commitMs: opts.commitMs ?? COMMIT_MS };
    this.worker = new Worker(__filename, { workerData: { [WORKER_KEY]: settings, done: this.done } });
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.ready = new Promise((resolve) => {
      this.worker.once('message', () => resolve());
      void this.exited.then(() => resolve());
    });
    this.checkpointer = new Worker(__filename, { workerData: { [WORKER_KEY]: { ...settings, role: 'checkpoint' } } });
    this.checkpointerExited = new Promise((resolve) => this.checkpointer.once('exit', () => resolve()));
    // Without it, the appender checkpoints as SQLite does by default: stalls, nothing lost.
    this.checkpointer.on('error', () => this.worker.postMessage({ checkpoints: true } satisfies ToWorker));
    this.worker.on('message', (m: FromWorker) => {
      if ('stored' in m) {
        this.stats.stored += m.stored;
      } else if ('failed' in m) {
        this.stats.failed += m.failed;
        if (m.error) this.fail(new Error(m.error));
      }
    });
    // The worker failed as a whole (it could not open the database, say): what it held is lost, and so is the rest.
    this.worker.on('error', (err) => {
      this.dead = true;
      this.stats.failed += this.queued().events;
      this.settle();
      this.fail(new Error(`the trace store's worker failed: ${err.message}`));
    });
  }

  /** A raw batch from the shim (whole struct cw_event): packed here, stored by the worker. Main thread, never blocks. */
  push(batch: Buffer, clockOffset: bigint): void {
    const n = batch.length / EVENT_BYTES;
    if (n === 0) return;
    if (this.dead) {
      this.stats.failed += n;
      return;
    }
    if (this.closing) {
      this.stats.dropped += n;
      return;
    }
    let p: Packed;
    try {
      p = packRaw([batch], clockOffset, this.opts.deflate ?? 0);
    } catch (err) {
      this.stats.failed += n;
      this.fail(err as Error);
      return;
    }
    const bytes = p.blob.length + p.traces.length + p.pids.length;
    if (this.queued().bytes + bytes > this.limit) {
      this.stats.dropped += n;
      return;
    }
    const [blob, traces, pids] = [own(p.blob), own(p.traces), own(p.pids)];
    this.worker.postMessage({ blob, traces, pids, events: p.events, bytes } satisfies ToWorker, [blob.buffer, traces.buffer, pids.buffer]);
    this.posted.events += n;
    this.posted.bytes += bytes;
  }

  /** Events and bytes handed to the worker that it has not stored (or failed to) yet. */
  queued(): { events: number; bytes: number } {
    return {
      events: this.posted.events - Number(Atomics.load(this.done, DONE_EVENTS)),
      bytes: this.posted.bytes - Number(Atomics.load(this.done, DONE_BYTES)),
    };
  }

  /**
   * Stores what is queued, then stops the worker. Past deadlineMs the worker
   * is stopped anyway and what it had not stored is counted as dropped.
   */
  async close(deadlineMs = 30000): Promise<TracerStats> {
    if (!this.closing) {
      this.closing = true;
      this.worker.postMessage({ end: true } satisfies ToWorker);
    }
    const timer = setTimeout(() => void this.worker.terminate(), deadlineMs);
    await this.exited;
    clearTimeout(timer);
    this.checkpointer.postMessage({ end: true } satisfies ToWorker);
    const stop = setTimeout(() => void this.checkpointer.terminate(), deadlineMs);
    await this.checkpointerExited;
    clearTimeout(stop);
    this.stats.dropped += this.queued().events;
    this.settle();
    return this.stats;
  }

  /** Counts nothing as queued any more. */
  private settle(): void {
    this.posted = { events: Number(Atomics.load(this.done, DONE_EVENTS)), bytes: Number(Atomics.load(this.done, DONE_BYTES)) };
  }

  private fail(err: Error): void {
    if (this.stats.error) return;
    this.stats.error = err;
    this.opts.onError?.(err);
  }
}

/** A buffer that owns its whole ArrayBuffer, so that it can be transferred (a copy if it does not). */
function own(b: Buffer): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer && b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? new Uint8Array(b.buffer) : new Uint8Array(b);
}

/**
 * The appender: its own connection to the database; stores what arrived over
 * commitMs, up to txEvents events per transaction.
 */
function runAppender(s: Settings, done: BigInt64Array): void {
  const port = parentPort!;
  const store = TraceStore.open(s.db, { appender: true, checkpoints: false });
  port.postMessage({ ready: true } satisfies FromWorker);
  const pending: (Packed & { bytes: number })[] = [];
  let pendingEvents = 0;
  /** A flush is scheduled: at once (setImmediate) or at the end of the gathering window (timer). */
  let now = false;
  let timer: NodeJS.Timeout | null = null;
  let ending = false;
  let reported = false;
  const flush = () => {
    now = false;
    if (timer) clearTimeout(timer);
    timer = null;
    pendingEvents = 0;
    while (pending.length) {
      const group: Packed[] = [];
      let [events, bytes] = [0, 0];
      while (pending.length && (events === 0 || events + pending[0].events <= s.txEvents)) {
        const p = pending.shift()!;
        group.push(p);
        events += p.events;
        bytes += p.bytes;
      }
      try {
        store.appendPacked(group, s.run, s.host);
        port.postMessage({ stored: events } satisfies FromWorker);
      } catch (err) {
        port.postMessage({ failed: events, ...(reported ? {} : { error: (err as Error).message }) } satisfies FromWorker);
        reported = true;
      }
      Atomics.add(done, DONE_EVENTS, BigInt(events));
      Atomics.add(done, DONE_BYTES, BigInt(bytes));
    }
    if (ending) {
      store.close();
      port.close();
    }
  };
  port.on('message', (m: ToWorker) => {
    if ('checkpoints' in m) return store.autoCheckpoints();
    if ('end' in m) ending = true;
    else {
      pending.push({ blob: Buffer.from(m.blob.buffer), traces: Buffer.from(m.traces.buffer), pids: Buffer.from(m.pids.buffer), events: m.events, bytes: m.bytes });
      pendingEvents += m.events;
    }
    if (now) return;
    if (ending || pendingEvents >= s.txEvents || s.commitMs <= 0) {
      now = true;
      setImmediate(flush);
    } else if (!timer) {
      timer = setTimeout(flush, s.commitMs);
    }
  });
}

/** The checkpointer: copies the WAL into the database file, never waiting for the appender unless the WAL grows past a bound. */
function runCheckpointer(s: Settings): void {
  const port = parentPort!;
  const store = TraceStore.open(s.db);
  let active = false;
  const tick = () => {
    try {
      // The WAL file keeps its size once grown (it is reused from its start): active from then on.
      if (!active && !(active = fs.statSync(`${s.db}-wal`).size >= CHECKPOINT_FROM_BYTES)) return;
      // A writer that never pauses can keep a passive checkpoint from ever reaching the WAL's end, and
      // only then does the WAL start over: past the bound, wait for the writer once.
      if (store.checkpoint('PASSIVE').log > CHECKPOINT_WAIT_PAGES) store.checkpoint('RESTART');
    } catch {
      /* a database that fails is reported by the appender; the WAL keeps what it holds */
    }
  };
  const timer = setInterval(tick, CHECKPOINT_MS);
  port.on('message', (m: ToWorker) => {
    if (!('end' in m)) return;
    clearInterval(timer);
    tick();
    store.close();
    port.close();
  });
}

if (!isMainThread && workerData?.[WORKER_KEY]) {
  const s = workerData[WORKER_KEY] as Settings;
  if (s.role === 'checkpoint') runCheckpointer(s);
  else runAppender(s, workerData.done as BigInt64Array);
}
