/**
 * `npm run bench`: request/response and throughput over pipes, UNIX sockets
 * and TCP (loopback, and between two network namespaces the benchmark makes),
 * each in five configurations, alternated over several rounds in one
 * invocation:
 *   baseline  no BPF program loaded
 *   floor     the shim's hooks with programs that return at once
 *   outside   the shim loaded for another run's cgroup; this process outside it
 *   shim      propagation only (an unsampled record, no events)
 *   events    the shim with a sampled record: every causal change is an event
 *   trace     `causeway trace`: those events stored by the tracer in SQLite
 * Then the actor runtime and the SDK: events per second delivered to an actor
 * (batch hook, and per-event hooks) while pipe ping-pong produces them as fast
 * as it can, and the SDK's cost per async context switch beside a bare
 * AsyncLocalStorage (bench/sdk.ts); memory (bench/memory.ts); the three-tier
 * application (bench/app); real servers, redis-benchmark and pgbench
 * (bench/servers.ts); the cost of formatting `-e FILE`'s lines, native
 * against TypeScript (bench/jsonl.ts); the trace store on one core
 * (bench/store.ts); the scheduler experiment, a multi-tier application in
 * overload with and without `--actor scheduler` (bench/scheduler); the layer
 * programs of `causeway trace --layers` across a VXLAN overlay (bench/layers.ts);
 * what each event type costs, in the kernel and in the runtime (bench/event-cost.ts);
 * what the shim adds per syscall against the floor, request/response in one
 * thread with no scheduler noise (bench/hot-path.ts).
 * TCP across two namespaces runs its server and its client as two processes,
 * one in each namespace, and in two runs where there are runs: the record
 * crosses between them in the TCP header option.
 * Writes BENCHMARKS.md and BENCHMARKS.json at the repository root.
 *
 *   node dist/bench/index.js [--quick] [--only SECTION[,SECTION...]] [--from-json]
 * --only measures only the sections named (micro: the request/response table,
 * or one of its rows by mode: pipe, unix, tcp, tcpns, bulk, forkexec; actors;
 * sdk; memory; app; servers, or redis or pgbench alone; jsonl; store; scheduler; layers; event-cost; hot-path) and keeps every other
 * section from the BENCHMARKS.json already there.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { run } from '../src/runtime/runtime';
import { newRecord } from '../src/kernel/record';
import { DROP_COUNTERS, type Counters } from '../src/kernel/shim';
import type { Actor } from '../src/actor/types';
import { benchSdk } from './sdk';
import { trace } from '../src/tracer/trace';
import { benchMemory } from './memory';
import { benchStore, storeMarkdown, StoreBench } from './store';
import { benchApp } from './app';
import { benchServers, mergeServers, WORKLOADS, WorkloadName } from './servers';
import { benchJsonl } from './jsonl';
import { benchScheduler, schedulerMarkdown, SchedulerBench } from './scheduler';
import { benchLayers, layersMarkdown, LayersBench } from './layers';
import { benchEventCost, eventCostMarkdown, EventCostBench } from './event-cost';
import { benchHotPath, hotPathMarkdown, HotPathBench } from './hot-path';
import { median, machine, spawnWait, withFloor, withOutsideRun } from './common';

const ROOT = path.join(__dirname, '..', '..');
const CONFIGS = ['baseline', 'floor', 'outside', 'shim', 'events', 'trace'] as const;
type ConfigName = (typeof CONFIGS)[number];
/** One benchmark: a pingpong.c mode; request/response ends share CPU 0, as DESIGN.md's floors were measured. */
interface Bench {
  name: string;
  /** A pingpong.c mode, or forkexec (bench/forkexec.c). */
  mode: 'pipe' | 'unix' | 'tcp' | 'tcpns' | 'bulk' | 'forkexec';
  size: number;
  unit: string;
  pinned: boolean;
}
const BENCHES: Bench[] = [
  { name: 'pipe ping-pong, 1 byte', mode: 'pipe', size: 1, unit: 'round trips/s', pinned: true },
  { name: 'pipe ping-pong, 4 KiB', mode: 'pipe', size: 4096, unit: 'round trips/s', pinned: true },
  { name: 'UNIX socket request/response, 64 B', mode: 'unix', size: 64, unit: 'round trips/s', pinned: true },
  { name: 'TCP loopback request/response, 64 B', mode: 'tcp', size: 64, unit: 'round trips/s', pinned: true },
  { name: 'TCP across two namespaces, 64 B', mode: 'tcpns', size: 64, unit: 'round trips/s', pinned: true },
  { name: 'TCP loopback bulk, 64 KiB writes', mode: 'bulk', size: 65536, unit: 'MB/s', pinned: false },
  { name: 'fork + exec + exit', mode: 'forkexec', size: 0, unit: 'processes/s', pinned: true },
];
const CPU = '0';
const NS = { server: `cwbench${process.pid}s`, client: `cwbench${process.pid}c`, addr: '10.214.0.2' };

/** Two namespaces joined by a veth pair, for the tcpns benchmark; removed by the returned function. */
function makeNamespaces(): () => void {
  const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'ignore' });
  ip('netns', 'add', NS.server);
  ip('netns', 'add', NS.client);
  const cleanup = () => {
    for (const ns of [NS.server, NS.client])
      try {
        ip('netns', 'del', ns);
      } catch {
        /* gone */
      }
  };
  try {
    ip('link', 'add', `cwb${process.pid}`, 'type', 'veth', 'peer', 'name', `cwc${process.pid}`);
    ip('link', 'set', `cwb${process.pid}`, 'netns', NS.server);
    ip('link', 'set', `cwc${process.pid}`, 'netns', NS.client);
    ip('-n', NS.server, 'addr', 'add', `${NS.addr}/24`, 'dev', `cwb${process.pid}`);
    ip('-n', NS.client, 'addr', 'add', '10.214.0.1/24', 'dev', `cwc${process.pid}`);
    for (const [ns, dev] of [[NS.server, `cwb${process.pid}`], [NS.client, `cwc${process.pid}`]]) {
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
  } catch (err) {
    cleanup();
    throw err;
  }
  return cleanup;
}

interface Sample {
  bench: string;
  config: ConfigName;
  value: number;
}

function compile(dir: string): string {
  for (const prog of ['pingpong', 'forkexec']) execFileSync('cc', ['-O2', '-o', path.join(dir, prog), path.join(ROOT, 'bench', `${prog}.c`)]);
  return path.join(dir, 'pingpong');
}

async function measure(config: ConfigName, pingpong: string, b: Bench, secs: number, out: string, tcpns: TcpnsRun[]): Promise<number> {
  const cpu = b.pinned ? CPU : '-1';
  const bin = b.mode === 'forkexec' ? path.join(path.dirname(pingpong), 'forkexec') : pingpong;
  const args = b.mode === 'forkexec' ? [String(secs), out, cpu] : [b.mode, String(b.size), String(secs), out, cpu];
  if (b.mode === 'tcpns') {
    const counts = await tcpnsPair(config, bin, args, path.dirname(out));
    tcpns.push({ config, ...counts });
    return Number(fs.readFileSync(out, 'utf8'));
  }
  switch (config) {
    case 'baseline':
      await spawnWait(bin, args);
      break;
    case 'floor':
      await withFloor(() => spawnWait(bin, args));
      break;
    case 'outside':
      await withOutsideRun(() => spawnWait(bin, args));
      break;
    case 'trace': {
      const db = path.join(path.dirname(out), 'bench-traces.db');
      const res = await trace({ command: bin, args, db, trust: ['10.214.0.0/24'], summary: false, status: false });
      removeDb(db);
      if (res.status !== 0) throw new Error(`pingpong under the tracer exited with ${res.status}`);
      if (res.stored === 0) throw new Error('the trace configuration stored no events');
      break;
    }
    case 'shim':
    case 'events': {
      let events = 0;
      const res = await run({
        command: bin,
        args,
        record: newRecord({ sampled: config === 'events' }),
        trust: ['10.214.0.0/24'],
        onEvents: config === 'events' ? (b) => (events += b.length) : undefined,
        summary: false,
      });
      if (res.status !== 0) throw new Error(`pingpong under the shim exited with ${res.status}`);
      if (config === 'events' && events === 0) throw new Error('the events configuration produced no events');
      break;
    }
  }
  return Number(fs.readFileSync(out, 'utf8'));
}

function removeDb(db: string): void {
  for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
}

/** The TCP option counters of the two runs of one tcpns measurement (null without runs). */
interface TcpnsRun {
  config: ConfigName;
  server: RunCounts | null;
  client: RunCounts | null;
}
type RunCounts = Pick<Counters, 'tcpOptionsWritten' | 'tcpOptionsReceived' | 'sends' | 'recvs'> & { drops: Record<string, number> };

/**
 * tcpns: the server (pingpong with PP_ROLE=server, in NS.server) and the
 * client (PP_ROLE=client, in NS.client) as two processes, in two runs for
 * shim, events and trace (each trace run with its own database). The client
 * retries its connect until the server listens; the server exits at the
 * client's end, or is killed if the client fails.
 */
async function tcpnsPair(config: ConfigName, bin: string, args: string[], dir: string): Promise<Omit<TcpnsRun, 'config'>> {
  const pids: Partial<Record<'server' | 'client', number>> = {};
  const pick = (c: Counters | null): RunCounts | null =>
    c && {
      tcpOptionsWritten: c.tcpOptionsWritten,
      tcpOptionsReceived: c.tcpOptionsReceived,
      sends: c.sends,
      recvs: c.recvs,
      drops: Object.fromEntries(DROP_COUNTERS.filter((k) => c[k] > 0).map((k) => [k, c[k]])),
    };
  const side = async (role: 'server' | 'client'): Promise<{ status: number; counters: Counters | null; events: number }> => {
    const argv = [`PP_ROLE=${role}`, bin, ...args];
    const onStart = ({ pid }: { pid: number }) => (pids[role] = pid);
    if (config === 'baseline' || config === 'floor' || config === 'outside') {
      const child = spawn('env', argv, { stdio: 'inherit' });
      pids[role] = child.pid;
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      return { status: code ?? (signal ? 128 + os.constants.signals[signal] : 1), counters: null, events: 0 };
    }
    if (config === 'trace') {
      const db = path.join(dir, `bench-traces-${role}.db`);
      try {
        const res = await trace({ command: 'env', args: argv, db, trust: ['10.214.0.0/24'], summary: false, status: false, onStart });
        return { status: res.status, counters: res.counters, events: res.stored };
      } finally {
        removeDb(db);
      }
    }
    let events = 0;
    const res = await run({
      command: 'env',
      args: argv,
      record: newRecord({ sampled: config === 'events' }),
      trust: ['10.214.0.0/24'],
      onEvents: config === 'events' ? (b) => (events += b.length) : undefined,
      onStart,
      summary: false,
    });
    return { status: res.status, counters: res.counters, events };
  };
  const pair = async () => {
    const server = side('server');
    const kill = () => {
      if (pids.server)
        try {
          process.kill(pids.server, 'SIGKILL');
        } catch {
          /* gone */
        }
    };
    let client;
    try {
      client = await side('client');
    } catch (err) {
      kill();
      await server.catch(() => undefined);
      throw err;
    }
    if (client.status !== 0) {
      kill();
      await server.catch(() => undefined);
      throw new Error(`the tcpns client (${config}) exited with ${client.status}`);
    }
    const srv = await server;
    if (srv.status !== 0) throw new Error(`the tcpns server (${config}) exited with ${srv.status}`);
    if ((config === 'events' || config === 'trace') && (client.events === 0 || srv.events === 0))
      throw new Error(`the ${config} configuration of tcpns produced no events on one side`);
    return { server: pick(srv.counters), client: pick(client.counters) };
  };
  return config === 'floor' ? withFloor(pair) : config === 'outside' ? withOutsideRun(pair) : pair();
}

/** Everything beside the request/response table; a section is absent when it was not measured. */
interface Extras {
  /** Delivery to actors (batch hook, and per-event hooks). */
  actors?: { hook: string; eventsPerSec: number[]; delivered: number[]; ringbufDrops: number[]; actorDrops: number[] }[];
  sdk?: { alsSwitchNs: number; sdkSwitchNs: number; syncNs: number; syncSameNs: number };
  /** Events per second of wall time that `causeway trace` stored end to end, and ring buffer drops, per run. */
  tracerStored?: number[];
  tracerDrops?: number[];
  /** TCP across two namespaces: the TCP option counters of the server's and the client's run, per measurement. */
  tcpns?: TcpnsRun[];
  /** bench/memory.ts: its JSON and its markdown section. */
  memory?: { json: unknown; md: string };
  /** bench/app: the three-tier application benchmark. */
  app?: { json: unknown; md: string };
  /** bench/servers.ts: redis-benchmark and pgbench against real servers. */
  servers?: { json: unknown; md: string };
  /** bench/jsonl.ts: formatting `-e FILE`'s lines, native against TypeScript. */
  jsonl?: { json: unknown; md: string };
  /** bench/store.ts: the trace store on one core. */
  store?: { json: unknown; md: string };
  /** bench/scheduler: the multi-tier application in overload, with and without the scheduler actor. */
  scheduler?: { json: unknown; md: string };
  /** bench/layers.ts: the tc programs of causeway trace --layers, across a VXLAN overlay. */
  layers?: { json: unknown; md: string };
  /** bench/event-cost.ts: what each event type costs, in the kernel and in the runtime. */
  eventCost?: { json: unknown; md: string };
  /** bench/hot-path.ts: what the shim adds per syscall against the floor, request/response in one thread. */
  hotPath?: { json: unknown; md: string };
}

/** One row of the request/response table in BENCHMARKS.json; rounds, seconds and date say which invocation measured it. */
interface ResultRow {
  bench: string;
  config: ConfigName;
  samples: number[];
  rounds?: number;
  seconds?: number;
  date?: string;
}

/** What BENCHMARKS.json holds. */
interface Report {
  machine: string;
  rounds: number;
  seconds: number;
  results: (ResultRow & Record<string, unknown>)[];
  extras?: Extras;
}

/**
 * Events per second that reach one actor while pipe ping-pong (with a sampled
 * record: four events per round trip) runs for secs, and what was dropped on
 * the way (ring buffer, actor queue).
 */
async function actorDelivery(bin: string, out: string, secs: number, hook: 'events' | 'per-event'): Promise<{ rate: number; delivered: number; rb: number; dropped: number }> {
  let n = 0;
  const actor: Actor =
    hook === 'events'
      ? { name: 'count', events: (b) => void (n += b.length) }
      : { name: 'count', send: () => void n++, recv: () => void n++, fork: () => void n++, exec: () => void n++, exit: () => void n++ };
  const start = process.hrtime.bigint();
  const res = await run({ command: bin, args: ['pipe', '1', String(secs), out, '-1'], actors: [actor], summary: false });
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  if (res.status !== 0) throw new Error(`pingpong under the actor exited with ${res.status}`);
  const stats = res.actors.count;
  return { rate: stats.delivered / wall, delivered: stats.delivered, rb: res.counters?.ringbufDrops ?? 0, dropped: stats.dropped };
}


/** --from-json: rewrite BENCHMARKS.md from the samples in BENCHMARKS.json, measuring nothing. */
function fromJson(): void {
  const j = JSON.parse(fs.readFileSync(path.join(ROOT, 'BENCHMARKS.json'), 'utf8')) as Report;
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), summarize(rowsOf(j), j.rounds, j.seconds, j.extras).md);
}

/** The rows of a report, each with the rounds, seconds and date it was measured with. */
function rowsOf(j: Report): ResultRow[] {
  return j.results.map((r) => ({
    bench: r.bench,
    config: r.config,
    samples: r.samples,
    rounds: r.rounds ?? j.rounds,
    seconds: r.seconds ?? j.seconds,
    date: r.date,
  }));
}

const MICRO_MODES = [...new Set(BENCHES.map((b) => b.mode))];
const SECTIONS = ['micro', ...MICRO_MODES, 'actors', 'sdk', 'memory', 'app', 'servers', ...WORKLOADS, 'jsonl', 'store', 'scheduler', 'layers', 'event-cost', 'hot-path'] as const;

/** --only A,B (or --only A --only B): the sections to measure; null: all of them. */
function parseOnly(argv: string[]): Set<string> | null {
  const names: string[] = [];
  argv.forEach((a, i) => {
    if (a === '--only') names.push(...(argv[i + 1] ?? '').split(','));
    else if (a.startsWith('--only=')) names.push(...a.slice(7).split(','));
  });
  if (!argv.some((a) => a === '--only' || a.startsWith('--only='))) return null;
  const bad = names.filter((n) => !(SECTIONS as readonly string[]).includes(n));
  if (bad.length || names.length === 0) throw new Error(`--only takes ${SECTIONS.join(', ')} (comma-separated), not ${bad.join(', ') || 'nothing'}`);
  return new Set(names);
}

async function main() {
  if (process.argv.includes('--from-json')) return fromJson();
  const quick = process.argv.includes('--quick');
  const only = parseOnly(process.argv.slice(2));
  const want = (section: string) => !only || only.has(section) || (MICRO_MODES.includes(section as Bench['mode']) && only.has('micro'));
  const benches = BENCHES.filter((b) => want(b.mode));
  const workloads = WORKLOADS.filter((w) => !only || only.has('servers') || only.has(w));
  const rounds = quick ? 3 : 7;
  const secs = quick ? 1 : 1.5;
  const date = new Date().toISOString().slice(0, 10);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-'));
  const samples: Sample[] = [];
  const extras: Extras = {};
  const removeNamespaces = benches.some((b) => b.mode === 'tcpns') ? makeNamespaces() : () => {};
  Object.assign(process.env, { PP_SERVER_NS: NS.server, PP_CLIENT_NS: NS.client, PP_ADDR: '' });
  try {
    const bin = compile(dir);
    const out = path.join(dir, 'result');
    const tcpns: TcpnsRun[] = [];
    for (let r = 0; r < rounds && benches.length; r++) {
      for (const b of benches) {
        process.env.PP_ADDR = b.mode === 'tcpns' ? NS.addr : '127.0.0.1';
        // Alternate, and rotate the order each round, so drift hits every configuration alike.
        const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
        for (const config of order) {
          const raw = await measure(config, bin, b, secs, out, tcpns);
          const value = b.mode === 'bulk' ? raw / 1e6 : raw;
          samples.push({ bench: b.name, config, value });
          const t = b.mode === 'tcpns' ? tcpns[tcpns.length - 1] : null;
          const opt = t?.client && t.server ? `; TCP options client ${t.client.tcpOptionsWritten}/${t.client.tcpOptionsReceived}, server ${t.server.tcpOptionsWritten}/${t.server.tcpOptionsReceived}` : '';
          process.stderr.write(`round ${r + 1}/${rounds} ${b.name}, ${config}: ${value.toFixed(0)} ${b.unit}${opt}\n`);
        }
      }
    }
    if (tcpns.length) extras.tcpns = tcpns;
    if (want('actors')) {
      extras.actors = [];
      for (const hook of ['events', 'per-event'] as const) {
        const row = { hook, eventsPerSec: [] as number[], delivered: [] as number[], ringbufDrops: [] as number[], actorDrops: [] as number[] };
        for (let r = 0; r < (quick ? 2 : 3); r++) {
          const d = await actorDelivery(bin, out, quick ? 1 : 2, hook);
          row.eventsPerSec.push(d.rate);
          row.delivered.push(d.delivered);
          row.ringbufDrops.push(d.rb);
          row.actorDrops.push(d.dropped);
          process.stderr.write(`actor delivery (${hook}): ${d.rate.toFixed(0)} events/s, ${d.rb} ring buffer drops, ${d.dropped} actor drops\n`);
        }
        extras.actors.push(row);
      }
      extras.tracerStored = [];
      extras.tracerDrops = [];
      for (let r = 0; r < (quick ? 2 : 3); r++) {
        const db = path.join(dir, 'store-rate.db');
        const start = process.hrtime.bigint();
        const res = await trace({ command: bin, args: ['pipe', '1', quick ? '1' : '2', out, '-1'], db, summary: false, status: false });
        const wall = Number(process.hrtime.bigint() - start) / 1e9;
        removeDb(db);
        extras.tracerStored.push(res.stored / wall);
        extras.tracerDrops.push(res.counters?.ringbufDrops ?? 0);
        process.stderr.write(`tracer: ${(res.stored / wall).toFixed(0)} events/s stored, ${res.counters?.ringbufDrops ?? 0} ring buffer drops\n`);
      }
    }
    if (want('sdk')) {
      extras.sdk = await benchSdk();
      process.stderr.write(`sdk: ${JSON.stringify(extras.sdk)}\n`);
    }
    if (want('jsonl')) {
      process.stderr.write('jsonl: formatting the events of a real run as JSON Lines, native and TypeScript\n');
      extras.jsonl = await benchJsonl({ pingpong: bin, out, quick });
    }
    if (want('memory')) {
      process.stderr.write('memory: kernel maps per thread/pipe/connection, and the runtime with 10,000 connections\n');
      const mem = await benchMemory();
      extras.memory = { json: mem.json, md: mem.md };
    }
    if (want('app')) {
      process.stderr.write('application: load generator -> front -> back -> Redis, four ways\n');
      const app = await benchApp({ quick });
      extras.app = { json: app.json, md: app.md };
    }
    if (want('store')) {
      process.stderr.write('store: the trace store on one core, fed with raw batches of real runs\n');
      const st = await benchStore({ bin, dir, quick });
      extras.store = { json: st.json, md: st.md };
    }
    if (workloads.length) {
      process.stderr.write(`servers: ${workloads.join(' and ')} against real servers, separate runs and one run\n`);
      const srv = await benchServers({ quick, only: workloads as WorkloadName[] });
      // A workload not measured now keeps what the last run of it measured.
      const prev = fs.existsSync(path.join(ROOT, 'BENCHMARKS.json'))
        ? (JSON.parse(fs.readFileSync(path.join(ROOT, 'BENCHMARKS.json'), 'utf8')) as Report).extras?.servers?.json
        : undefined;
      extras.servers = prev && workloads.length < WORKLOADS.length ? mergeServers(srv.json, prev) : { json: srv.json, md: srv.md };
    }
    if (want('scheduler')) {
      process.stderr.write('scheduler: a multi-tier application in overload, two priority classes, with and without the scheduler actor\n');
      const sch = await benchScheduler({ quick });
      extras.scheduler = { json: sch.json, md: sch.md };
    }
    if (want('layers')) {
      process.stderr.write('layers: request/response across a VXLAN overlay, with and without the layer programs\n');
      const lay = await benchLayers({ quick });
      extras.layers = { json: lay.json, md: lay.md };
    }
    if (want('event-cost')) {
      process.stderr.write('event-cost: what each event type costs, in the kernel (bpf_stats) and in the runtime (its CPU time)\n');
      const ec = await benchEventCost({ quick });
      extras.eventCost = { json: ec.json, md: ec.md };
    }
    if (want('hot-path')) {
      process.stderr.write('hot-path: what the shim adds per syscall against the floor, request/response in one thread\n');
      const hp = await benchHotPath({ quick });
      extras.hotPath = { json: hp.json, md: hp.md };
    }
  } finally {
    removeNamespaces();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const measured = [...new Set(samples.map((s) => s.bench))];
  let rows: ResultRow[] = measured.flatMap((bench) =>
    CONFIGS.map((config) => ({ bench, config, samples: samples.filter((s) => s.bench === bench && s.config === config).map((s) => s.value), rounds, seconds: secs, date })),
  );
  let [hRounds, hSecs] = [rounds, secs];
  // --only: every section not measured now stays as the last full or partial run left it.
  const jsonPath = path.join(ROOT, 'BENCHMARKS.json');
  if (only && fs.existsSync(jsonPath)) {
    const prev = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as Report;
    const kept = rowsOf(prev).filter((r) => !measured.includes(r.bench));
    const order = (b: string) => BENCHES.findIndex((x) => x.name === b);
    rows = [...kept, ...rows].sort((a, b) => order(a.bench) - order(b.bench) || CONFIGS.indexOf(a.config) - CONFIGS.indexOf(b.config));
    const prevExtras = prev.extras ?? {};
    for (const k of Object.keys(prevExtras) as (keyof Extras)[])
      if (extras[k] === undefined && !(k === 'tcpns' && measured.includes(TCPNS))) (extras as Record<string, unknown>)[k] = prevExtras[k];
    if (!measured.length) [hRounds, hSecs] = [prev.rounds, prev.seconds];
  }
  const report = summarize(rows, hRounds, hSecs, extras);
  fs.writeFileSync(jsonPath, JSON.stringify(report.json, null, 2) + '\n');
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), report.md);
  process.stdout.write(report.md);
}

const TCPNS = BENCHES.find((b) => b.mode === 'tcpns')!.name;

/** What the tcpns runs' counters show, as one line for the report. */
function tcpnsLine(runs: TcpnsRun[]): string {
  const parts: string[] = [];
  for (const config of CONFIGS) {
    const rs = runs.filter((r) => r.config === config && r.client && r.server);
    if (!rs.length) continue;
    const med = (f: (r: TcpnsRun) => number) => median(rs.map(f)).toFixed(0);
    const up = rs.every((r) => r.client!.tcpOptionsWritten > 0 && r.server!.tcpOptionsReceived > 0);
    const down = rs.every((r) => r.server!.tcpOptionsWritten > 0 && r.client!.tcpOptionsReceived > 0);
    const drops: Record<string, number> = {};
    for (const r of rs) for (const d of [r.client!.drops, r.server!.drops]) for (const [k, n] of Object.entries(d ?? {})) drops[k] = (drops[k] ?? 0) + n;
    const dropText = Object.keys(drops).length ? `, drops over all runs ${Object.entries(drops).map(([k, n]) => `${k}=${n}`).join(' ')}` : '';
    parts.push(
      `${config}: client wrote ${med((r) => r.client!.tcpOptionsWritten)} and read ${med((r) => r.client!.tcpOptionsReceived)}, ` +
        `server wrote ${med((r) => r.server!.tcpOptionsWritten)} and read ${med((r) => r.server!.tcpOptionsReceived)} (sends that carried records: ` +
        `${med((r) => r.client!.sends)} and ${med((r) => r.server!.sends)}; ${up && down ? 'the record crossed in the option both ways in every run' : up ? 'client to server in every run' : 'NOT in the option in every run'}${dropText})`,
    );
  }
  return (
    `- ${TCPNS}: the server and the client are two processes, one in each namespace, and two causeway runs in shim, events and trace ` +
    `(each trace run with its own database), so the record crosses in the TCP header option; medians per run: ${parts.join('; ')}.`
  );
}

function summarize(rows: ResultRow[], rounds: number, secs: number, extras: Extras = {}) {
  const benches = [...new Set(rows.map((s) => s.bench))];
  const lines: string[] = ['# Benchmarks', ''];
  const json: Record<string, unknown>[] = [];
  const verdicts: string[] = [];
  if (benches.length) {
    // After --only, rows may come from several invocations: the header names the most common one, and the others say so.
    const key = (r: ResultRow) => `${r.rounds}|${r.seconds}|${r.date ?? ''}`;
    const count = new Map<string, number>();
    for (const r of rows) count.set(key(r), (count.get(key(r)) ?? 0) + 1);
    const common = [...count.entries()].sort((a, b) => b[1] - a[1])[0][0];
    const first = rows.find((r) => key(r) === common)!;
    [rounds, secs] = [first.rounds ?? rounds, first.seconds ?? secs];
    const other = benches.filter((b) => rows.some((r) => r.bench === b && key(r) !== common));
    lines.push(
      `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
      `Each figure is the median of ${rounds} alternating runs of ${secs} s; spread is min-max.`,
      ...other.map((b) => {
        const r = rows.find((x) => x.bench === b)!;
        return `(${b}: the median of ${r.rounds} runs of ${r.seconds} s${r.date ? `, measured on ${r.date}` : ''}.)`;
      }),
      'Both ends of each request/response benchmark are pinned to CPU 0; bulk runs on both CPUs.',
      'Ratios are to the baseline of this same invocation. The floor is the tracepoint hooks with empty programs',
      '(it has no sockops program; the shim adds one on its own cgroup for TCP).',
      '',
      '| benchmark | configuration | median | spread | ratio to baseline | added ns per round trip (or process) |',
      '|---|---|---|---|---|---|',
    );
  }
  for (const bench of benches) {
    const xsOf = (config: ConfigName) => rows.find((s) => s.bench === bench && s.config === config)?.samples ?? [];
    const med: Partial<Record<ConfigName, number>> = {};
    for (const config of CONFIGS) med[config] = median(xsOf(config));
    const base = med.baseline!;
    const added = (c: ConfigName) => 1e9 / med[c]! - 1e9 / base;
    // The added time of a configuration's fastest and slowest run: a target is judged only outside them.
    const addedRange = (c: ConfigName) => [1e9 / Math.max(...xsOf(c)) - 1e9 / base, 1e9 / Math.min(...xsOf(c)) - 1e9 / base];
    const judge = (c: ConfigName, ratio: number) => {
      const [lo, hi] = addedRange(c);
      const [flo, fhi] = addedRange('floor');
      return hi <= ratio * flo ? 'met' : lo > ratio * fhi ? 'NOT met' : 'not resolvable here';
    };
    for (const config of CONFIGS) {
      const row = rows.find((s) => s.bench === bench && s.config === config);
      const xs = xsOf(config);
      const m = med[config]!;
      lines.push(
        `| ${bench} | ${config} | ${m.toFixed(0)} ${BENCHES.find((b) => b.name === bench)?.unit ?? ''} | ${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)} | ${(m / base).toFixed(3)} | ${config === 'baseline' || bench.includes('bulk') ? '-' : added(config).toFixed(0)} |`,
      );
      json.push({ bench, config, median: m, min: Math.min(...xs), max: Math.max(...xs), ratio: m / base, samples: xs, rounds: row?.rounds, seconds: row?.seconds, date: row?.date });
    }
    const unit = BENCHES.find((b) => b.name === bench)?.unit ?? '';
    if (unit === 'MB/s') {
      const lost = (c: ConfigName) => (1 - med[c]! / base) * 100;
      const lostRange = [(1 - Math.max(...xsOf('shim')) / base) * 100, (1 - Math.min(...xsOf('shim')) / base) * 100];
      const bulk = lostRange[1] < 2 ? 'met' : lostRange[0] >= 2 ? 'NOT met' : 'not resolvable here';
      verdicts.push(
        `- ${bench}: the shim loses ${lost('shim').toFixed(1)}% of throughput (runs: ${lostRange[0].toFixed(1)} to ${lostRange[1].toFixed(1)}%; target < 2%: ${bulk}); ` +
          `the floor ${lost('floor').toFixed(1)}%, with events ${lost('events').toFixed(1)}%.`,
      );
      continue;
    }
    if (added('floor') <= 0) {
      verdicts.push(
        `- ${bench}: the floor is lost in this machine's noise here (${added('floor').toFixed(0)} ns), so no ratio to it; ` +
          `the shim adds ${added('shim').toFixed(0)} ns per round trip, with events ${added('events').toFixed(0)} ns, outside the run ${added('outside').toFixed(0)} ns.`,
      );
      continue;
    }
    const shimVsFloor = added('shim') / added('floor');
    const eventsVsFloor = added('events') / added('floor');
    const outsideVsFloor = added('outside') / added('floor');
    verdicts.push(
      `- ${bench}: tracing (events stored in SQLite) adds ${added('trace').toFixed(0)} ns per round trip, ${(added('trace') - added('shim')).toFixed(0)} ns over propagation alone (${(med.trace! / med.shim!).toFixed(3)} of the propagation-only rate).`,
    );
    verdicts.push(
      `- ${bench}: shim (propagation only) adds ${shimVsFloor.toFixed(2)}x the floor's time (target <= 1.5: ${judge('shim', 1.5)}); ` +
        `with events ${eventsVsFloor.toFixed(2)}x; a process outside the run pays ${outsideVsFloor.toFixed(2)}x the floor (target <= 1: ${judge('outside', 1)}).`,
    );
  }
  if (benches.length) lines.push('', '## Against the targets', '', ...verdicts, ...(extras.tcpns?.length && benches.includes(TCPNS) ? [tcpnsLine(extras.tcpns)] : []), '');
  if (extras.actors?.length || extras.sdk) lines.push('## Actors and the SDK', '');
  if (extras.actors?.length) {
    lines.push(
      'Events delivered to one actor per second of wall time (median of runs; `causeway run` with pipe ping-pong',
      'producing four events per round trip as fast as it can), and what was dropped on the way:',
      '',
      '| actor hooks | events/s delivered | spread | ring buffer drops | actor queue drops |',
      '|---|---|---|---|---|',
    );
    for (const a of extras.actors)
      lines.push(
        `| ${a.hook === 'events' ? 'events(batch)' : 'one hook per event'} | ${median(a.eventsPerSec).toFixed(0)} | ${Math.min(...a.eventsPerSec).toFixed(0)}-${Math.max(...a.eventsPerSec).toFixed(0)} | ${a.ringbufDrops.join(', ')} | ${a.actorDrops.join(', ')} |`,
      );
    if (extras.tracerStored?.length)
      lines.push(
        '',
        `The tracer end to end (\`causeway trace\`, pipe ping-pong as fast as it goes, events stored in SQLite): ${median(extras.tracerStored).toFixed(0)} events/s stored (runs: ${extras.tracerStored.map((x) => x.toFixed(0)).join(', ')}), ring buffer drops ${(extras.tracerDrops ?? []).join(', ')}.`,
      );
    if (extras.sdk) lines.push('');
  }
  if (extras.sdk) {
    const s = extras.sdk;
    lines.push(
      'The in-process SDK (bench/sdk.ts, no kernel: the slot is an ArrayBuffer), ns:',
      '',
      '| async context switch, bare AsyncLocalStorage | the same under sdk.run() | ratio | sync() that changes the slot | sync() with nothing to change |',
      '|---|---|---|---|---|',
      `| ${s.alsSwitchNs.toFixed(0)} | ${s.sdkSwitchNs.toFixed(0)} | ${(s.sdkSwitchNs / s.alsSwitchNs).toFixed(2)} | ${s.syncNs.toFixed(0)} | ${s.syncSameNs.toFixed(0)} |`,
      '',
      'sync() runs only where Node hands bytes to the kernel (a socket write, a spawn), not per async switch.',
      '',
    );
  }
  if (extras.memory) lines.push(extras.memory.md, '');
  if (extras.app) lines.push(extras.app.md, '');
  if (extras.servers) lines.push(extras.servers.md, '');
  if (extras.jsonl) lines.push(extras.jsonl.md, '');
  // Rendered again from its figures, so that --from-json follows changes to the text.
  if (extras.store) lines.push(storeMarkdown(extras.store.json as StoreBench), '');
  if (extras.scheduler) lines.push(schedulerMarkdown(extras.scheduler.json as SchedulerBench), '');
  if (extras.layers) lines.push(layersMarkdown(extras.layers.json as LayersBench), '');
  if (extras.eventCost) lines.push(eventCostMarkdown(extras.eventCost.json as EventCostBench), '');
  if (extras.hotPath) lines.push(hotPathMarkdown(extras.hotPath.json as HotPathBench), '');
  return { md: lines.join('\n'), json: { machine: machine(), rounds, seconds: secs, results: json, extras } };
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
