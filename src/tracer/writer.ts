/**
 * The tracer's writer: raw batches from the shim (RunOptions.onRawEvents, no
 * JavaScript object per event) go to a worker thread that packs and stores
 * them (TraceStore.appendRaw), so that neither packing nor SQLite, nor
 * waiting for a database another causeway holds, ever runs on the main
 * thread, which serves the SDK and the actors.
 *
 * What waits for the worker is bounded (queueEvents): past the bound, a
 * batch is dropped whole and counted (TracerStats.dropped), never queued
 * without limit; the traced programs are never slowed (the kernel's ring
 * buffer never waits for user space: it drops and counts). The worker stores
 * what it has as one blob per transaction (up to blobEvents events), so it
 * writes bigger blobs, at less cost per event, when it is behind.
 *
 * A second worker copies the WAL into the database file (checkpoints, every
 * 10 ms once the WAL has reached 4 MB), so that the one that stores never
 * stops for that copy and its fsync (20-80 ms each here): fed alone at 1M
 * events/s, the queue peaked at ~30k events with it and ~120k without.
 * The queue's length is counted by the worker in shared memory, so that it is
 * exact at once, not only when the worker's messages have been read.
 *
 * A blob the database refuses (a full disk, say) is counted in
 * TracerStats.failed and the worker goes on with the next; onError hears of
 * the first error once. push() runs on the main thread and never blocks.
 */
import fs from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { EVENT_BYTES } from '../kernel/events';
import { TraceStore } from './store';

export interface TracerStats {
  /** Events stored. */
  stored: number;
  /** Events a failed transaction did not store (each blob is stored whole or not at all). */
  failed: number;
  /** Events dropped unstored: the queue to the worker was full (storage fell behind), or the drain deadline passed. */
  dropped: number;
  /** The first store error, if any. */
  error?: Error;
}

export interface WriterOptions {
  db: string;
  /** The run the batches belong to (TraceStore.beginRun) and the host they were seen on. */
  run: number;
  host: string;
  /** Events queued for the worker at most; past it batches are dropped (default STORE_QUEUE_EVENTS). */
  queueEvents?: number;
  /** Events in one blob at most (default 16384). */
  blobEvents?: number;
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
  blobEvents: number;
  deflate: number;
}

/** Main thread to worker: a batch (its own copy, transferred), the end, or (to the appender) "checkpoint yourself". */
type ToWorker = { buf: ArrayBuffer; n: number; offset: bigint } | { end: true } | { checkpoints: true };
/** Worker to main thread: the store is open; events stored, or failed (with the error, once). */
type FromWorker = { ready: true } | { stored: number } | { failed: number; error?: string };

const WORKER_KEY = 'causewayTraceWriter';
/**
 * The queue's bound by default: 262144 events, 72 MiB of raw events, a quarter
 * of a second at 1M events/s. Half of it was not enough here: fed at 1M
 * events/s on two CPUs shared with other work, the queue peaked at ~120k
 * events when the worker was not scheduled for ~0.1 s, and batches dropped.
 */
export const STORE_QUEUE_EVENTS = 262144;
/**
 * How often the checkpointer copies the WAL (ms); the WAL's size from which it
 * does (bytes: SQLite's own default, 1000 pages; below it the WAL just grows,
 * as with SQLite's defaults); and the WAL's size (pages) past which it waits
 * for the writer once.
 */
const CHECKPOINT_MS = 10;
const CHECKPOINT_FROM_BYTES = 1000 * 4096;
const CHECKPOINT_WAIT_PAGES = 32768;

export class TraceWriter {
  readonly stats: TracerStats = { stored: 0, failed: 0, dropped: 0 };
  /** Settles once the worker has opened the store (or failed to): batches pushed before wait in its queue. */
  readonly ready: Promise<void>;
  private readonly worker: Worker;
  private readonly checkpointer: Worker;
  private readonly limit: number;
  private readonly exited: Promise<void>;
  private readonly checkpointerExited: Promise<void>;
  /** Events posted to the worker and not yet acknowledged. */
  private posted = 0;
  /** Events the worker is done with (stored or failed), counted by it: the queue's length is exact at once, not when its messages arrive. */
  private readonly done = new BigInt64Array(new SharedArrayBuffer(8));
  private closing = false;
  private dead = false;

  constructor(private readonly opts: WriterOptions) {
    this.limit = opts.queueEvents ?? STORE_QUEUE_EVENTS;
    const settings: Settings = { role: 'append', db: opts.db, run: opts.run, host: opts.host, blobEvents: opts.blobEvents ?? 16384, deflate: opts.deflate ?? 0 };
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
      this.stats.failed += this.queued();
      this.posted = Number(Atomics.load(this.done, 0));
      this.fail(new Error(`the trace store's worker failed: ${err.message}`));
    });
  }

  /** A raw batch from the shim (whole struct cw_event); main thread, never blocks. */
  push(batch: Buffer, clockOffset: bigint): void {
    const n = batch.length / EVENT_BYTES;
    if (n === 0) return;
    if (this.dead) {
      this.stats.failed += n;
      return;
    }
    if (this.closing || this.queued() + n > this.limit) {
      this.stats.dropped += n;
      return;
    }
    // A copy of its own: the shim's buffer is read again after us (SDK releases, decoded events).
    const buf = new Uint8Array(batch).buffer;
    this.worker.postMessage({ buf, n, offset: clockOffset } satisfies ToWorker, [buf]);
    this.posted += n;
  }

  /** Events handed to the worker that it has not stored (or failed to) yet. */
  queued(): number {
    return this.posted - Number(Atomics.load(this.done, 0));
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
    this.stats.dropped += this.queued();
    this.posted = Number(Atomics.load(this.done, 0));
    return this.stats;
  }

  private fail(err: Error): void {
    if (this.stats.error) return;
    this.stats.error = err;
    this.opts.onError?.(err);
  }
}

/** The appender: its own connection to the database; stores what arrived, one blob per transaction. */
function runAppender(s: Settings, done: BigInt64Array): void {
  const port = parentPort!;
  const store = TraceStore.open(s.db, { appender: true, checkpoints: false });
  port.postMessage({ ready: true } satisfies FromWorker);
  const pending: { buf: Buffer; n: number; offset: bigint }[] = [];
  let scheduled = false;
  let ending = false;
  let reported = false;
  const flush = () => {
    scheduled = false;
    while (pending.length) {
      const offset = pending[0].offset;
      const group: Buffer[] = [];
      let n = 0;
      while (pending.length && pending[0].offset === offset && (n === 0 || n + pending[0].n <= s.blobEvents)) {
        const p = pending.shift()!;
        group.push(p.buf);
        n += p.n;
      }
      try {
        store.appendRaw(group, offset, s.run, s.host, s.deflate);
        port.postMessage({ stored: n } satisfies FromWorker);
      } catch (err) {
        port.postMessage({ failed: n, ...(reported ? {} : { error: (err as Error).message }) } satisfies FromWorker);
        reported = true;
      }
      Atomics.add(done, 0, BigInt(n));
    }
    if (ending) {
      store.close();
      port.close();
    }
  };
  port.on('message', (m: ToWorker) => {
    if ('checkpoints' in m) return store.autoCheckpoints();
    if ('end' in m) ending = true;
    else pending.push({ buf: Buffer.from(m.buf), n: m.n, offset: m.offset });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
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
