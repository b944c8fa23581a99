/**
 * `causeway trace`: `causeway run` with the tracer actor. Stores every event
 * in the trace database, shows a status line while it runs on a terminal,
 * and afterwards writes the HTML report and exports to OTLP if asked.
 */
import fs from 'node:fs';
import os from 'node:os';
import { run, RunOptions, RunResult } from '../runtime/runtime';
import { DROP_COUNTERS, Shim } from '../kernel/shim';
import { newRecord } from '../kernel/record';
import { CausewayError } from '../errors';
import { tracerActor, TracerStats } from './actor';
import { buildGraph, TraceGraph } from './graph';
import { defaultDbPath, TraceStore } from './store';
import { renderHtml } from './html';
import { exportOtlp } from './otlp';

export interface TraceOptions extends RunOptions {
  /** The trace database (default: defaultDbPath()). */
  db?: string;
  /** Write an HTML report of this run's traces. */
  html?: string;
  /** Export this run's spans over OTLP/HTTP to this URL. */
  otlp?: string;
  /** The fraction of root records that are sampled (default 1). */
  sample?: number;
  /** The host name stored with the events (default: os.hostname()). */
  host?: string;
  /** A status line on stderr while running (default: when stderr is a terminal). */
  status?: boolean;
}

export interface TraceResult extends RunResult {
  traces: string[];
  stored: number;
  db: string;
}

export async function trace(opts: TraceOptions): Promise<TraceResult> {
  const rate = opts.sample ?? 1;
  if (!(rate >= 0 && rate <= 1)) throw new CausewayError(`--sample takes a rate from 0 to 1, not ${rate}`);
  const host = opts.host ?? os.hostname();
  const db = opts.db ?? defaultDbPath();
  const store = TraceStore.open(db);
  const runId = store.beginRun([opts.command, ...opts.args].join(' '), host);
  const stats: TracerStats = { stored: 0, failed: 0 };
  const record = opts.record ?? newRecord();
  // Sampling decides at the root: an unsampled record still propagates, and emits nothing.
  record.sampled = record.sampled && Math.random() < rate;

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
    const { traces } = store.count();
    process.stderr.write(`\r\x1b[Kcauseway trace: ${rateNow} events/s, ${stats.stored} stored, ${traces} trace(s) in the database, ${drops} dropped, ${((Date.now() - started) / 1000).toFixed(0)} s`);
  };
  let res: RunResult;
  try {
    res = await run({
      ...opts,
      record,
      sampleRate: rate,
      actors: [tracerActor(store, runId, host, stats), ...(opts.actors ?? [])],
      onStart: (ctx) => {
        shim = ctx.shim;
        if (statusOn) timer = setInterval(status, 1000);
        opts.onStart?.(ctx);
      },
    });
  } finally {
    if (timer) {
      clearInterval(timer);
      process.stderr.write('\r\x1b[K');
    }
  }
  store.endRun(runId, res.status, res.counters);
  const traces = store.tracesOfRun(runId);
  const graphs = (): TraceGraph[] => traces.map((t) => buildGraph(t, store.events(t)));
  if (opts.summary !== false || stats.failed) process.stderr.write(
    `causeway: tracer stored ${stats.stored} events of ${traces.length} trace(s) in ${db}` +
      (stats.failed ? `; FAILED to store ${stats.failed}` : '') +
      `; peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB` +
      (traces.length ? `; causeway show ${traces[0].slice(0, 12)}${traces.length > 1 ? ' (and causeway ls)' : ''}` : '') +
      '\n',
  );
  if (opts.html) {
    fs.writeFileSync(opts.html, renderHtml(graphs(), { title: `causeway trace: ${opts.command}` }));
    process.stderr.write(`causeway: wrote the HTML report to ${opts.html}\n`);
  }
  if (opts.otlp) {
    const r = await exportOtlp(graphs(), opts.otlp);
    process.stderr.write(`causeway: exported ${r.spans} span(s) to ${opts.otlp}${r.failed ? `; FAILED: ${r.failed}${r.error ? ` (${r.error})` : ''}` : ''}\n`);
  }
  store.close();
  return { ...res, traces, stored: stats.stored, db };
}
