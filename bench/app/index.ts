/**
 * The application benchmark: a three-tier Node system under load, four ways.
 *
 *   load generator -> front (HTTP) -> back (HTTP) -> redis-server (UNIX socket)
 *
 * bench/app/system.js starts the three tiers and runs the load (a closed loop
 * of keep-alive connections on GET /item/:id; every request under a new
 * trace made with causeway/sdk, since the client defines the requests);
 * front.js and back.js are plain Node services. The configurations, alternated
 * over rounds (the order rotates each round):
 *   baseline  no tracing
 *   otel      OpenTelemetry JS preloaded into front and back (otel.js): HTTP
 *             and ioredis auto-instrumentation, W3C trace context, spans
 *             batched to an OTLP/HTTP sink in this process that counts them
 *   run       `causeway run` around the whole system: propagation only
 *             (unsampled records, no events)
 *   trace     `causeway trace`: every event stored in a temporary SQLite file
 * Per configuration: throughput, p50 and p99 latency, CPU time of front, back
 * and redis-server per request, and whether each request's trace connects
 * all tiers including the data store (causeway: events of the three processes
 * in the request's stored trace; OTel: spans in the sink).
 *
 * benchApp() returns the figures as JSON and a markdown section;
 * `node dist/bench/app/index.js [--quick] [--rounds N] [--json FILE]` prints
 * the markdown. Needs root (causeway does). Everything it starts (processes,
 * the sink, temporary files) is gone when it returns or throws.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { run } from '../../src/runtime/runtime';
import { trace } from '../../src/tracer/trace';
import { newRecord } from '../../src/kernel/record';
import { DROP_COUNTERS, Counters } from '../../src/kernel/shim';
import { TraceStore } from '../../src/tracer/store';
import { buildGraph } from '../../src/tracer/graph';
import Database from 'better-sqlite3';
import { median, machine } from '../common';

/** Where the JS programs are: bench/app in the source tree (this file runs from dist/bench/app). */
const APP = path.join(__dirname, '..', '..', '..', 'bench', 'app');
const SYSTEM = path.join(APP, 'system.js');

/** The four configurations, in the order of the first round. */
export const CONFIGS = ['baseline', 'otel', 'run', 'events', 'trace', 'trace-sampled'] as const;
/** The rate of the trace-sampled configuration (as `causeway trace --sample`). */
const SAMPLE_RATE = 0.1;
/** One configuration's name. */
export type AppConfig = (typeof CONFIGS)[number];

/** What benchApp() measures, and how long. */
export interface AppOptions {
  /** ~3 s of load per run and 3 rounds; otherwise ~8 s and 5 rounds. */
  quick: boolean;
  rounds?: number;
  /** Seconds of measured load per run (default 3 quick, 8 full), after a warm-up. */
  seconds?: number;
  /** Concurrent connections of the load generator (default 16). */
  connections?: number;
  /** Requests per causeway trace run whose stored trace is checked (default 500; 0: all). */
  checkSample?: number;
  /** Progress lines on stderr (default true). */
  progress?: boolean;
}

/** The figures (JSON-able: summary, verdicts, every sample) and the markdown section. */
export interface AppResult {
  json: unknown;
  md: string;
}

/** What system.js measured in one run. */
interface SystemResult {
  requests: number;
  errors: number;
  firstError: string;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  cpuMs: { front: number; back: number; redis: number; observer: number; load: number };
  pids: { front: number; back: number; redis: number; load: number };
  total: number;
  traces: string[];
  attached: boolean;
}

/** How many requests' traces connect the tiers, in one run. */
interface Connectivity {
  /** Traces checked (causeway: a sample of the measured requests; OTel: every trace the sink got). */
  checked: number;
  /** Traces with front, back and the data store (causeway: redis-server's own events; OTel: a span of the Redis server process). */
  allTiers: number;
  front: number;
  back: number;
  /** causeway: events of redis-server; OTel: a Redis client span (made in the back, not by the server). */
  store: number;
  /** causeway: one root (every event follows the client's first send) and the answer back at the client in the same trace. */
  roundTrip: number;
  /** causeway: of those without redis-server events, how many have a send that a redis-server join filed under another trace names as a parent. */
  storeLinked?: number;
}

export interface Sample {
  config: AppConfig;
  round: number;
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  /** CPU µs per request of the system's processes, and of this process (the tracer, or the OTLP sink). */
  cpuUs: { front: number; back: number; redis: number; system: number; observer: number; load: number };
  connectivity?: Connectivity;
  /** causeway: the shim's drop counters that were not zero, and events stored (trace). */
  drops?: Record<string, number>;
  stored?: number;
  /** otel: spans the sink received, and the spans 5 per request would make. */
  spans?: { received: number; expected: number; requests: number };
}

const FRONT = 1;
const BACK = 2;
const REDIS_CLIENT = 4;
const REDIS_SERVER = 8;

/** The OTLP/HTTP sink: accepts JSON exports on /v1/traces and keeps, per trace id, which tiers its spans came from. */
class OtlpSink {
  readonly traces = new Map<string, number>();
  spans = 0;
  requests = 0;
  failed = 0;
  private constructor(private readonly server: http.Server, readonly url: string) {}

  static async listen(): Promise<OtlpSink> {
    const server = http.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const sink = new OtlpSink(server, `http://127.0.0.1:${port}/v1/traces`);
    server.on('request', (req, res) => sink.handle(req, res));
    return sink;
  }

  reset(): void {
    this.traces.clear();
    this.spans = this.requests = this.failed = 0;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      this.requests++;
      try {
        this.record(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } catch (err) {
        this.failed++;
        res.writeHead(400).end((err as Error).message);
      }
    });
  }

  private record(body: OtlpExport): void {
    for (const rs of body.resourceSpans ?? []) {
      const service = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value?.stringValue ?? '';
      for (const ss of rs.scopeSpans ?? [])
        for (const span of ss.spans ?? []) {
          this.spans++;
          const id = hexId(span.traceId);
          let bits = service === 'front' ? FRONT : service === 'back' ? BACK : 0;
          if (ss.scope?.name?.includes('ioredis') || span.attributes?.some((a) => a.key.startsWith('db.system') && a.value?.stringValue === 'redis'))
            bits |= REDIS_CLIENT;
          if (service.includes('redis')) bits |= REDIS_SERVER;
          this.traces.set(id, (this.traces.get(id) ?? 0) | bits);
        }
    }
  }

  connectivity(): Connectivity {
    const c: Connectivity = { checked: 0, allTiers: 0, front: 0, back: 0, store: 0, roundTrip: 0 };
    for (const bits of this.traces.values()) {
      c.checked++;
      if (bits & FRONT) c.front++;
      if (bits & BACK) c.back++;
      if (bits & REDIS_CLIENT) c.store++;
      if (bits & FRONT && bits & BACK && bits & REDIS_SERVER) c.allTiers++;
      if (bits & FRONT && bits & BACK) c.roundTrip++;
    }
    return c;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

interface OtlpExport {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttr[] };
    scopeSpans?: { scope?: { name?: string }; spans?: { traceId: string; attributes?: OtlpAttr[] }[] }[];
  }[];
}
interface OtlpAttr {
  key: string;
  value?: { stringValue?: string };
}

/** A trace id as 32 hex digits (OTLP/JSON gives hex; base64 is accepted too). */
function hexId(id: string): string {
  return /^[0-9a-f]{32}$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex');
}

/**
 * Checks, in the tracer's database, that each sampled request's trace holds
 * events of front, back and redis-server. A read of redis-server that takes in
 * the commands of several requests at once is one join event, filed under the
 * trace it adopts (the last writer's, by default) and naming the others' sends
 * as parents: those requests reach the data store only through that link.
 */
function checkTraces(db: string, r: SystemResult, sample: number): Connectivity {
  const ids = sample > 0 && r.traces.length > sample ? pick(r.traces, sample) : r.traces;
  const store = TraceStore.open(db, { readonly: true });
  // Event ids that a redis-server event names as a parent, in any trace.
  const joined = new Set<string>();
  const raw = new Database(db, { readonly: true });
  let all: string[];
  try {
    all = raw.prepare('SELECT id FROM traces').pluck().all() as string[];
  } finally {
    raw.close();
  }
  for (const id of all) for (const e of store.events(id)) if (e.pid === r.pids.redis) for (const p of e.parents) joined.add(p);
  const c: Connectivity = { checked: 0, allTiers: 0, front: 0, back: 0, store: 0, roundTrip: 0, storeLinked: 0 };
  try {
    for (const id of ids) {
      const events = store.events(id);
      const pids = new Set(events.map((e) => e.pid));
      c.checked++;
      const [f, b, s] = [pids.has(r.pids.front), pids.has(r.pids.back), pids.has(r.pids.redis)];
      if (f) c.front++;
      if (b) c.back++;
      if (s) c.store++;
      if (f && b && s) c.allTiers++;
      else if (f && b && events.some((e) => e.pid === r.pids.back && joined.has(e.id))) c.storeLinked!++;
      // Back at the client, and one root: every event follows the client's first send.
      const answered = events.some((e) => e.pid === r.pids.load && (e.type === 'recv' || e.type === 'join'));
      if (f && b && s && answered && buildGraph(id, events).roots.length === 1) c.roundTrip++;
    }
  } finally {
    store.close();
  }
  return c;
}

/** n distinct elements of xs, at random. */
function pick<T>(xs: T[], n: number): T[] {
  const a = [...xs];
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n);
}

function drops(c: Counters | null): Record<string, number> {
  const out: Record<string, number> = {};
  if (c) for (const k of DROP_COUNTERS) if (c[k] > 0) out[k] = c[k];
  return out;
}

/** The process groups of system.js runs started directly (baseline, otel): stopped on a signal, killed whole after an error. */
const groups = new Set<number>();
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** Runs system.js directly, in its own process group; resolves when it has exited, with nothing of it left. */
async function runDirect(args: string[]): Promise<void> {
  const child = spawn(process.execPath, [SYSTEM, ...args], { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start bench/app/system.js');
  groups.add(pid);
  try {
    const [code, signal] = await exited;
    if (code !== 0) throw new Error(`bench/app/system.js exited with ${code ?? signal}`);
  } finally {
    killGroup(pid); // whatever it left behind
    groups.delete(pid);
  }
}

interface RunCtx {
  dir: string;
  secs: number;
  warmup: number;
  conc: number;
  sink: OtlpSink;
  checkSample: number;
}

async function measure(config: AppConfig, round: number, ctx: RunCtx): Promise<Sample> {
  const out = path.join(ctx.dir, `result-${config}-${round}.json`);
  const causeway = config === 'run' || config === 'events' || config === 'trace' || config === 'trace-sampled';
  const cfg = {
    dir: fs.mkdtempSync(path.join(ctx.dir, `${config}-`)),
    secs: ctx.secs,
    warmup: ctx.warmup,
    conc: ctx.conc,
    items: 1000,
    out,
    otel: config === 'otel' ? ctx.sink.url : null,
    // run: propagation only; trace: every request's trace sampled.
    sampled: causeway ? config !== 'run' : null,
    sampleRate: config === 'trace-sampled' ? SAMPLE_RATE : null,
    observerPid: process.pid,
  };
  const args = [JSON.stringify(cfg)];
  const sample: Partial<Sample> = { config, round };
  let db = '';
  try {
    switch (config) {
      case 'baseline':
        await runDirect(args);
        break;
      case 'otel':
        ctx.sink.reset();
        await runDirect(args);
        break;
      case 'run': {
        const res = await run({ command: process.execPath, args: [SYSTEM, ...args], record: newRecord({ sampled: false }), summary: false });
        if (res.status !== 0) throw new Error(`system.js under causeway run exited with ${res.status}`);
        sample.drops = drops(res.counters);
        break;
      }
      case 'events': {
        const eventsFile = path.join(cfg.dir, 'events.jsonl');
        const res = await run({ command: process.execPath, args: [SYSTEM, ...args], eventsFile, summary: false });
        if (res.status !== 0) throw new Error(`system.js under causeway run -e exited with ${res.status}`);
        sample.drops = drops(res.counters);
        if (res.eventsFileLost) sample.drops.eventsFileLost = res.eventsFileLost;
        break;
      }
      case 'trace':
      case 'trace-sampled': {
        db = path.join(ctx.dir, `${config}-${round}.db`);
        const res = await trace({ command: process.execPath, args: [SYSTEM, ...args], db, summary: false, status: false });
        if (res.status !== 0) throw new Error(`system.js under causeway trace exited with ${res.status}`);
        sample.drops = drops(res.counters);
        const tracer = res.actors.tracer;
        if (tracer?.dropped) sample.drops.tracerQueue = tracer.dropped;
        if (tracer?.errors) sample.drops.tracerErrors = tracer.errors;
        sample.stored = res.stored;
        break;
      }
    }
    const r = JSON.parse(fs.readFileSync(out, 'utf8')) as SystemResult;
    if (r.requests === 0) throw new Error(`${config}: no request completed: ${r.firstError}`);
    if (causeway && !r.attached) throw new Error(`${config}: the load generator's SDK did not attach to causeway`);
    const per = (ms: number) => (ms * 1000) / r.requests;
    Object.assign(sample, {
      rps: r.rps,
      p50: r.p50,
      p99: r.p99,
      requests: r.requests,
      errors: r.errors,
      cpuUs: {
        front: per(r.cpuMs.front),
        back: per(r.cpuMs.back),
        redis: per(r.cpuMs.redis),
        system: per(r.cpuMs.front + r.cpuMs.back + r.cpuMs.redis),
        observer: per(r.cpuMs.observer),
        load: per(r.cpuMs.load),
      },
    });
    if (config === 'trace' || config === 'trace-sampled') sample.connectivity = checkTraces(db, r, ctx.checkSample);
    if (config === 'otel') {
      sample.connectivity = ctx.sink.connectivity();
      sample.spans = { received: ctx.sink.spans, expected: 5 * r.total, requests: r.total };
    }
    return sample as Sample;
  } finally {
    fs.rmSync(cfg.dir, { recursive: true, force: true });
    fs.rmSync(out, { force: true });
    if (db) for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
  }
}


/** Runs the application benchmark; see the file's comment. */
export async function benchApp(opts: AppOptions): Promise<AppResult> {
  if (process.geteuid?.() !== 0) throw new Error('the application benchmark runs causeway, which needs root');
  const rounds = opts.rounds ?? (opts.quick ? 3 : 5);
  const ctx: Omit<RunCtx, 'sink' | 'dir'> = {
    secs: opts.seconds ?? (opts.quick ? 3 : 8),
    warmup: opts.quick ? 1 : 2,
    conc: opts.connections ?? 16,
    checkSample: opts.checkSample ?? 500,
  };
  const progress = opts.progress ?? true;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-app-'));
  // A signal stops the running system (system.js stops its tiers, then the run fails); causeway's runs forward it themselves.
  const onSignal = () =>
    groups.forEach((pid) => {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    });
  const onExit = () => groups.forEach((pid) => killGroup(pid));
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
  process.on('exit', onExit);
  let sink: OtlpSink | undefined;
  const samples: Sample[] = [];
  try {
    sink = await OtlpSink.listen();
    for (let r = 0; r < rounds; r++) {
      const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
      for (const config of order) {
        const s = await measure(config, r, { ...ctx, dir, sink });
        samples.push(s);
        if (progress)
          process.stderr.write(
            `app round ${r + 1}/${rounds}, ${config}: ${s.rps.toFixed(0)} req/s, p50 ${s.p50.toFixed(2)} ms, p99 ${s.p99.toFixed(2)} ms, ` +
              `${s.cpuUs.system.toFixed(0)} µs CPU/request` +
              (s.connectivity ? `, ${s.connectivity.allTiers}/${s.connectivity.checked} traces reach all tiers` : '') +
              (s.drops && Object.keys(s.drops).length ? `, drops ${JSON.stringify(s.drops)}` : '') +
              '\n',
          );
      }
    }
  } finally {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(sig, onSignal);
    process.off('exit', onExit);
    groups.forEach((pid) => killGroup(pid));
    await sink?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return summarize(samples, rounds, ctx.secs, ctx.conc);
}

const LABEL: Record<AppConfig, string> = {
  baseline: 'baseline (no tracing)',
  otel: 'OpenTelemetry JS SDK (HTTP + ioredis, batched OTLP/HTTP)',
  run: '`causeway run` (propagation only)',
  events: '`causeway run -e FILE` (events to a file)',
  trace: '`causeway trace` (events stored)',
  'trace-sampled': `\`causeway trace\`, ${SAMPLE_RATE} of the traces sampled at the root`,
};

/** The figures and the markdown section from the samples (also to re-render stored samples). */
export function summarize(samples: Sample[], rounds: number, secs: number, conc: number): AppResult {
  const of = (c: AppConfig) => samples.filter((s) => s.config === c);
  const med = (c: AppConfig, f: (s: Sample) => number) => median(of(c).map(f));
  const base = med('baseline', (s) => s.rps);
  const loss = (c: AppConfig) => 1 - med(c, (s) => s.rps) / base;
  const sum = (c: AppConfig, f: (x: Connectivity) => number) => of(c).reduce((n, s) => n + (s.connectivity ? f(s.connectivity) : 0), 0);
  /** Each round's loss of c against that round's baseline (the machine's pace drifts between rounds). */
  const roundLoss = (c: AppConfig): Map<number, number> => {
    const b = new Map(of('baseline').map((s) => [s.round, s.rps]));
    return new Map(of(c).filter((s) => b.has(s.round)).map((s) => [s.round, 1 - s.rps / b.get(s.round)!]));
  };
  /** met / NOT met only when every round agrees; otherwise not resolvable here. */
  const verdict = (holds: boolean[]) => (holds.length && holds.every(Boolean) ? 'met' : holds.length && !holds.some(Boolean) ? 'NOT met' : 'not resolvable here');
  const lossRange = (c: AppConfig) => {
    const v = [...roundLoss(c).values()];
    return v.length ? `rounds ${(100 * Math.min(...v)).toFixed(1)} to ${(100 * Math.max(...v)).toFixed(1)}%` : 'no rounds';
  };
  const pct = (n: number, d: number) => (d ? `${((100 * n) / d).toFixed(1)}%` : '-');

  const connCell = (c: AppConfig): string => {
    if (c === 'baseline') return '- (no traces)';
    if (c === 'run') return '- (nothing stored; the same propagation as trace)';
    if (c === 'events') return '- (events written to a file, not checked)';
    const [n, d] = [sum(c, (x) => x.allTiers), sum(c, (x) => x.checked)];
    if (c === 'otel')
      return `${n} of ${d} (no span from redis-server; front and back: ${sum(c, (x) => x.roundTrip)}, and the back's Redis client span: ${sum(c, (x) => x.store)})`;
    return `${n} of ${d} (${pct(n, d)}; ${sum(c, (x) => x.storeLinked ?? 0)} more reach redis-server only through another request's trace)`;
  };
  const lines: string[] = [
    '## Application benchmark: three tiers',
    '',
    `Written on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
    `A Node load generator (${conc} keep-alive HTTP/1.1 connections, a closed loop of GET /item/:id, one request at a time each) -> a Node front (HTTP)`,
    '-> a Node back (HTTP, keep-alive) -> redis-server (INCR and GET over one ioredis connection on a UNIX socket).',
    `Each figure is the median of ${rounds} alternating runs of ${secs} s of load after a warm-up; spread is min-max.`,
    'CPU per request is utime+stime over the measured window, per request, of every process involved: front, back,',
    'redis-server and the observer (this benchmark process, which holds causeway and its tracer, or the OTLP sink that',
    'stands in for the OpenTelemetry collector); the load generator is left out in every configuration. The split follows the table.',
    'With causeway, the load generator and the three tiers all run inside the run, and the load generator makes',
    'a new trace per request with the SDK (`sdk.run(sdk.newTrace(), ...)`); front and back are plain Node with',
    'no SDK, redis-server is Debian\'s.',
    '',
    '| configuration | req/s | spread | ratio to baseline | p50 (ms) | p99 (ms) | CPU per request (µs) | traces connecting all tiers (incl. the data store) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const c of CONFIGS) {
    const xs = of(c).map((s) => s.rps);
    lines.push(
      `| ${LABEL[c]} | ${med(c, (s) => s.rps).toFixed(0)} | ${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)} | ` +
        `${(med(c, (s) => s.rps) / base).toFixed(3)} | ${med(c, (s) => s.p50).toFixed(2)} | ${med(c, (s) => s.p99).toFixed(2)} | ` +
        `${med(c, (s) => s.cpuUs.system + s.cpuUs.observer).toFixed(0)} | ${connCell(c)} |`,
    );
  }
  const cpuSplit = CONFIGS.map(
    (c) =>
      `${c}: front ${med(c, (s) => s.cpuUs.front).toFixed(0)}, back ${med(c, (s) => s.cpuUs.back).toFixed(0)}, ` +
      `redis ${med(c, (s) => s.cpuUs.redis).toFixed(0)}, load generator ${med(c, (s) => s.cpuUs.load).toFixed(0)}, benchmark process ${med(c, (s) => s.cpuUs.observer).toFixed(0)}`,
  );
  lines.push(
    '',
    `CPU µs per request by process (the benchmark process holds causeway and its tracer, or the OTLP sink): ${cpuSplit.join('; ')}.`,
  );

  // Connectivity in detail.
  const tChecked = sum('trace', (x) => x.checked);
  const oChecked = sum('otel', (x) => x.checked);
  const spans = of('otel').map((s) => s.spans!);
  const dropsOf = (c: AppConfig) => of(c).map((s) => (s.drops && Object.keys(s.drops).length ? JSON.stringify(s.drops) : 'none'));
  lines.push(
    '',
    `- causeway trace, ${tChecked} requests' stored traces checked (a random sample of each run's measured requests): ` +
      `front ${sum('trace', (x) => x.front)}, back ${sum('trace', (x) => x.back)}, redis-server ${sum('trace', (x) => x.store)}, ` +
      `all three ${sum('trace', (x) => x.allTiers)}; of those, also one root and the answer read by the client in the same trace: ${sum('trace', (x) => x.roundTrip)}. ` +
      `Of the ${tChecked - sum('trace', (x) => x.allTiers)} without redis-server events, ${sum('trace', (x) => x.storeLinked ?? 0)} reached it inside another request's trace: ` +
      'redis-server read their commands together with a later request\'s in one read, a join filed under that request\'s trace that names theirs as a parent. ' +
      `Events stored per run: ${of('trace').map((s) => s.stored).join(', ')}; drops: run ${dropsOf('run').join(', ')}; trace ${dropsOf('trace').join(', ')}.`,
    `- OpenTelemetry, ${oChecked} traces in the sink (one per request, warm-up included): with a front span ${sum('otel', (x) => x.front)}, ` +
      `a back span ${sum('otel', (x) => x.back)}, both ${sum('otel', (x) => x.roundTrip)}, a Redis client span (made in the back) ${sum('otel', (x) => x.store)}, ` +
      `a span from the Redis server itself ${sum('otel', (x) => x.allTiers)}: redis-server is not instrumented, so the data store appears only as the back's client span. ` +
      `Spans received: ${spans.map((s) => `${s.received} of ${s.expected} for ${s.requests} requests`).join('; ')}.`,
  );

  const lr = loss('run');
  const lt = loss('trace');
  const lo = loss('otel');
  const tAll = sum('trace', (x) => x.allTiers);
  const fmt = (x: number) => `${(100 * x).toFixed(1)}%`;
  lines.push(
    '',
    '### Against the targets',
    '',
    'A verdict is met or NOT met only where every round, each against its own baseline, says so; otherwise not resolvable here.',
    '',
    `- causeway run loses ${fmt(lr)} of throughput (${lossRange('run')}; target < 2%): ${verdict([...roundLoss('run').values()].map((l) => l < 0.02))}.`,
    `- causeway trace loses ${fmt(lt)} (${lossRange('trace')}; target < 5%): ${verdict([...roundLoss('trace').values()].map((l) => l < 0.05))}.`,
    `- causeway trace costs ${fmt(lt)} against the OpenTelemetry SDK's ${fmt(lo)} (${lossRange('otel')}); target under a quarter of it (< ${fmt(lo / 4)}): ` +
      `${verdict([...roundLoss('trace')].filter(([r]) => roundLoss('otel').has(r)).map(([r, l]) => l < roundLoss('otel').get(r)! / 4))}.`,
    `- Events to a file lose ${fmt(loss('events'))}; the trace at --sample ${SAMPLE_RATE} loses ${fmt(loss('trace-sampled'))}, against ` +
      `${fmt(lr + SAMPLE_RATE * (lt - lr))} if tracing's cost over propagation fell in proportion to the rate.`,
    `- The data-store tier: causeway trace has redis-server's own events in ${tAll} of ${tChecked} requests' traces (${pct(tAll, tChecked)}) ` +
      `${tAll === tChecked && tChecked > 0 ? '(met)' : '(NOT met for every request)'}; the OpenTelemetry SDK alone has no span from the Redis server in any trace ` +
      `(${sum('otel', (x) => x.allTiers)}), only the back's client spans.`,
    '',
  );
  const json = {
    machine: machine(),
    rounds,
    seconds: secs,
    connections: conc,
    summary: Object.fromEntries(
      CONFIGS.map((c) => [
        c,
        {
          rps: med(c, (s) => s.rps),
          rpsMin: Math.min(...of(c).map((s) => s.rps)),
          rpsMax: Math.max(...of(c).map((s) => s.rps)),
          ratio: med(c, (s) => s.rps) / base,
          p50Ms: med(c, (s) => s.p50),
          p99Ms: med(c, (s) => s.p99),
          cpuUsPerRequest: med(c, (s) => s.cpuUs.system + s.cpuUs.observer),
          connectivity: c === 'trace' || c === 'trace-sampled' || c === 'otel' ? { allTiers: sum(c, (x) => x.allTiers), checked: sum(c, (x) => x.checked) } : null,
        },
      ]),
    ),
    targets: {
      runLoss: lr,
      traceLoss: lt,
      otelLoss: lo,
      runUnder2: lr < 0.02,
      traceUnder5: lt < 0.05,
      traceUnderQuarterOfOtel: lt < lo / 4,
      traceConnectsStore: tChecked > 0 && tAll === tChecked,
    },
    samples,
  };
  return { json, md: lines.join('\n') };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const val = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const res = await benchApp({
    quick: argv.includes('--quick'),
    rounds: val('--rounds') ? Number(val('--rounds')) : undefined,
    seconds: val('--seconds') ? Number(val('--seconds')) : undefined,
  });
  const jsonFile = val('--json');
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(res.json, null, 2) + '\n');
  process.stdout.write(res.md + '\n');
}

if (require.main === module)
  main().catch((err) => {
    process.stderr.write(`bench app: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
