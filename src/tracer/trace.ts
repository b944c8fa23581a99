/**
 * `causeway trace`: `causeway run` with the tracer. Every raw batch of events
 * goes to the trace database through a TraceWriter (a worker thread: no
 * JavaScript object per event, nothing stored on the main thread); a status
 * line shows while it runs on a terminal; afterwards it writes the HTML
 * report and exports to OTLP if asked. Actors given with the run options
 * still get decoded events, as in `causeway run`.
 *
 * Once the command has run, nothing that fails afterwards (a full database,
 * an unwritable report) takes its status away: each failure is reported,
 * what it lost is counted, and the rest goes on.
 */
import fs from 'node:fs';
import os from 'node:os';
import { run, RunOptions, RunResult } from '../runtime/runtime';
import { DROP_COUNTERS, Shim } from '../kernel/shim';
import { newRecord } from '../kernel/record';
import { CausewayError } from '../errors';
import { buildGraph, TraceGraph } from './graph';
import { defaultDbPath, TraceStore } from './store';
import { renderHtml } from './html';
import { exportOtlp } from './otlp';
import { STORE_QUEUE_BYTES, TraceWriter } from './writer';
import { LayerSpec, LayerStamp, LayerWatch } from './layers';

export interface TraceOptions extends RunOptions {
  /** The trace database (default: defaultDbPath()). */
  db?: string;
  /** Write an HTML report of this run's traces. */
  html?: string;
  /** Export this run's spans over OTLP/HTTP to this URL. */
  otlp?: string;
  otlpEncoding?: import('./otlp').OtlpEncoding;
  /** The fraction of root records that are sampled (default 1). */
  sample?: number;
  /** The host name stored with the events (default: os.hostname()). */
  host?: string;
  /** A status line on stderr while running (default: when stderr is a terminal). */
  status?: boolean;
  /** Bytes of packed events waiting to be stored at most; past it batches are dropped and counted (default STORE_QUEUE_BYTES, 64 MiB). */
  storeQueueBytes?: number;
  /** Interfaces whose layers each hop's bytes cross are timed (--layers; docs/layers.md). */
  layers?: LayerSpec[];
}

export interface TraceResult extends RunResult {
  traces: string[];
  stored: number;
  /** Events the store refused (a failed transaction, e.g. a full disk): lost. */
  storeFailed: number;
  /** Events dropped before the store took them (it fell behind and its queue was full): lost. */
  storeDropped: number;
  db: string;
  /** With --layers: the stamps stored and the layer programs' counters. */
  layers?: { stamps: number; packets: number; options: number; full: number };
}

const sizeOf = (bytes: number) => (bytes >= 1048576 ? `${(bytes / 1048576).toFixed(0)} MiB` : `${bytes} bytes`);

export async function trace(opts: TraceOptions): Promise<TraceResult> {
  const rate = opts.sample ?? 1;
  if (!(rate >= 0 && rate <= 1)) throw new CausewayError(`--sample takes a rate from 0 to 1, not ${rate}`);
  const host = opts.host ?? os.hostname();
  const db = opts.db ?? defaultDbPath();
  // The layer programs first: a wrong interface is refused before anything runs or is stored.
  const layers = opts.layers?.length ? LayerWatch.open(opts.layers, { optKind: opts.optKind, optExid: opts.optExid }) : null;
  let store: TraceStore;
  try {
    store = TraceStore.open(db);
  } catch (err) {
    layers?.close();
    throw err;
  }
  let runId: number;
  try {
    runId = store.beginRun([opts.command, ...opts.args].join(' '), host);
  } catch (err) {
    store.close();
    layers?.close();
    throw new CausewayError(`cannot write to the trace database ${db}: ${(err as Error).message}`);
  }
  const writer = new TraceWriter({
    db,
    run: runId,
    host,
    queueBytes: opts.storeQueueBytes,
    onError: (err) =>
      process.stderr.write(`causeway: storing events in ${db} failed: ${err.message}; the run goes on, the events not stored are counted\n`),
  });
  const stats = writer.stats;
  // The store is open before the first event: nothing queues up while the worker starts (~80 ms).
  await writer.ready;
  const record = opts.record ?? newRecord();
  // Sampling decides at the root: an unsampled record still propagates, and emits nothing.
  // (Attached, each adopted process is a root: the runtime decides per process.)
  if (!opts.attach) record.sampled = record.sampled && Math.random() < rate;

  let shim: Shim | null = null;
  let timer: NodeJS.Timeout | undefined;
  const statusOn = opts.status ?? Boolean(process.stderr.isTTY);
  const started = Date.now();
  let lastStored = 0;
  const status = () => {
    const c = shim?.counters();
    const drops = c ? DROP_COUNTERS.reduce((n, k) => n + c[k], 0) : 0;
    const rateNow = stats.stored - lastStored;
    lastStored = stats.stored;
    let traces = '?';
    try {
      traces = String(store.count().traces);
    } catch {
      /* a database that fails is reported by the tracer */
    }
    const lost = (stats.failed ? `, ${stats.failed} NOT STORED` : '') + (stats.dropped ? `, ${stats.dropped} DROPPED (store behind)` : '');
    process.stderr.write(`\r\x1b[Kcauseway trace: ${rateNow} events/s, ${stats.stored} stored${lost}, ${traces} trace(s) in the database, ${drops} dropped, ${((Date.now() - started) / 1000).toFixed(0)} s`);
  };
  // The layer stamps leave the kernel's table every second (it holds 65,536), to the store at the end.
  const layerStamps: LayerStamp[] = [];
  const layerTimer = layers ? setInterval(() => layerStamps.push(...layers.read()), 1000) : undefined;
  let res: RunResult;
  let ran = false;
  try {
    res = await run({
      ...opts,
      record,
      sampleRate: rate,
      onRawEvents: (batch, clockOffset) => {
        writer.push(batch, clockOffset);
        opts.onRawEvents?.(batch, clockOffset);
      },
      onStart: (ctx) => {
        shim = ctx.shim;
        if (statusOn) timer = setInterval(status, 1000);
        opts.onStart?.(ctx);
      },
    });
    ran = true;
  } finally {
    clearInterval(layerTimer);
    if (!ran) layers?.close(); // the run failed: nothing to keep
    if (timer) {
      clearInterval(timer);
      process.stderr.write('\r\x1b[K');
    }
    // Every batch has been handed over (the shim is closed): the writer stores what it holds, then stops.
    await writer.close();
  }
  // The command has ended: the layer programs leave the interfaces; their stamps are kept.
  let layerCounts: { packets: number; options: number; stored: number; full: number } | undefined;
  if (layers) {
    try {
      layerStamps.push(...layers.read());
      layerCounts = layers.counters();
    } catch (err) {
      process.stderr.write(`causeway: reading the layer stamps failed: ${(err as Error).message}\n`);
    } finally {
      layers.close();
    }
  }
  // From here on the command's status is known: failures are reported, never thrown.
  const failed = (what: string, err: unknown) => process.stderr.write(`causeway: ${what} failed: ${(err as Error).message}\n`);
  try {
    store.endRun(runId, res.status, res.counters);
  } catch (err) {
    failed(`recording the run's end (status ${res.status}) in ${db}`, err);
  }
  try {
    store.addLayerStamps(runId, layerStamps);
  } catch (err) {
    failed(`storing ${layerStamps.length} layer stamps in ${db}`, err);
  }
  let traces: string[] = [];
  try {
    traces = store.tracesOfRun(runId);
  } catch (err) {
    failed(`reading this run's traces from ${db}`, err);
  }
  const graphs = (): TraceGraph[] => traces.map((t) => buildGraph(t, store.events(t), store.layerStamps(t)));
  if (layerCounts)
    process.stderr.write(
      `causeway: layers: ${layerStamps.length} stamp(s) on ${new Set(opts.layers!.map((l) => `${l.netns}:${l.ifname}`)).size} interface(s); ` +
        `${layerCounts.packets} packets seen, ${layerCounts.options} with a record` +
        (layerCounts.full ? `; LOST ${layerCounts.full} stamps (the stamp table was full)` : '') +
        '\n',
    );
  if (opts.summary !== false || stats.failed || stats.dropped) process.stderr.write(
    `causeway: tracer stored ${stats.stored} events of ${traces.length} trace(s) in ${db}` +
      (stats.failed ? `; FAILED to store ${stats.failed} events, LOST (${stats.error?.message})` : '') +
      (stats.dropped ? `; DROPPED ${stats.dropped} events, LOST (the store fell behind; its queue holds ${sizeOf(opts.storeQueueBytes ?? STORE_QUEUE_BYTES)} of packed events)` : '') +
      `; peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB` +
      (traces.length ? `; causeway show ${traces[0].slice(-12)}${traces.length > 1 ? ' (and causeway ls)' : ''}` : '') +
      '\n',
  );
  if (opts.html) {
    try {
      fs.writeFileSync(opts.html, renderHtml(graphs(), { title: `causeway trace: ${opts.command}` }));
      process.stderr.write(`causeway: wrote the HTML report to ${opts.html}\n`);
    } catch (err) {
      failed(`writing the HTML report to ${opts.html}`, err);
    }
  }
  if (opts.otlp) {
    try {
      const r = await exportOtlp(graphs(), opts.otlp, { encoding: opts.otlpEncoding });
      process.stderr.write(`causeway: exported ${r.spans} span(s) to ${opts.otlp}${r.failed ? `; FAILED: ${r.failed}${r.error ? ` (${r.error})` : ''}` : ''}\n`);
    } catch (err) {
      failed(`exporting to ${opts.otlp}`, err);
    }
  }
  try {
    store.close();
  } catch (err) {
    failed(`closing ${db}`, err);
  }
  const layerResult = layerCounts && { stamps: layerStamps.length, packets: layerCounts.packets, options: layerCounts.options, full: layerCounts.full };
  return { ...res, traces, stored: stats.stored, storeFailed: stats.failed, storeDropped: stats.dropped, db, ...(layerResult ? { layers: layerResult } : {}) };
}
