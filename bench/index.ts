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
 * AsyncLocalStorage (bench/sdk.ts).
 * Writes BENCHMARKS.md and BENCHMARKS.json at the repository root.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Floor } from '../src/kernel/shim';
import { run } from '../src/runtime/runtime';
import { newRecord } from '../src/kernel/record';
import type { Actor } from '../src/actor/types';
import { benchSdk } from './sdk';
import { trace } from '../src/tracer/trace';
import { benchMemory } from './memory';
import { benchApp } from './app';
import { median, machine } from './common';

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

async function spawnWait(cmd: string, args: string[]): Promise<void> {
  const child = spawn(cmd, args, { stdio: 'inherit' });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${cmd} exited with ${code}`);
}

async function measure(config: ConfigName, pingpong: string, b: Bench, secs: number, out: string): Promise<number> {
  const cpu = b.pinned ? CPU : '-1';
  const bin = b.mode === 'forkexec' ? path.join(path.dirname(pingpong), 'forkexec') : pingpong;
  const args = b.mode === 'forkexec' ? [String(secs), out, cpu] : [b.mode, String(b.size), String(secs), out, cpu];
  switch (config) {
    case 'baseline':
      await spawnWait(bin, args);
      break;
    case 'floor': {
      const floor = new Floor();
      try {
        await spawnWait(bin, args);
      } finally {
        floor.close();
      }
      break;
    }
    case 'outside': {
      let stop = () => {};
      const other = run({
        command: 'sleep',
        args: ['3600'],
        summary: false,
        onStart: ({ pid }) => (stop = () => process.kill(pid, 'SIGTERM')),
      });
      await new Promise((r) => setTimeout(r, 100));
      try {
        await spawnWait(bin, args);
      } finally {
        stop();
        await other;
      }
      break;
    }
    case 'trace': {
      const db = path.join(path.dirname(out), 'bench-traces.db');
      const res = await trace({ command: bin, args, db, trust: ['10.214.0.0/24'], summary: false, status: false });
      fs.rmSync(db, { force: true });
      fs.rmSync(db + '-wal', { force: true });
      fs.rmSync(db + '-shm', { force: true });
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

/** Delivery to actors and the SDK's costs (not per configuration). */
interface Extras {
  actors: { hook: string; eventsPerSec: number[]; delivered: number[]; ringbufDrops: number[]; actorDrops: number[] }[];
  sdk: { alsSwitchNs: number; sdkSwitchNs: number; syncNs: number; syncSameNs: number };
  /** Events per second of wall time that `causeway trace` stored end to end, and ring buffer drops, per run. */
  tracerStored: number[];
  tracerDrops: number[];
  /** bench/memory.ts: its JSON and its markdown section. */
  memory?: { json: unknown; md: string };
  /** bench/app: the three-tier application benchmark. */
  app?: { json: unknown; md: string };
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
  const j = JSON.parse(fs.readFileSync(path.join(ROOT, 'BENCHMARKS.json'), 'utf8')) as {
    rounds: number;
    seconds: number;
    results: { bench: string; config: ConfigName; samples: number[] }[];
    extras?: Extras;
  };
  const samples = j.results.flatMap((r) => r.samples.map((value) => ({ bench: r.bench, config: r.config, value })));
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), summarize(samples, j.rounds, j.seconds, j.extras).md);
}

async function main() {
  if (process.argv.includes('--from-json')) return fromJson();
  const quick = process.argv.includes('--quick');
  const rounds = quick ? 3 : 7;
  const secs = quick ? 1 : 1.5;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-'));
  const samples: Sample[] = [];
  const extras: Extras = { actors: [], sdk: { alsSwitchNs: 0, sdkSwitchNs: 0, syncNs: 0, syncSameNs: 0 }, tracerStored: [], tracerDrops: [] };
  const removeNamespaces = makeNamespaces();
  Object.assign(process.env, { PP_SERVER_NS: NS.server, PP_CLIENT_NS: NS.client, PP_ADDR: '' });
  try {
    const bin = compile(dir);
    const out = path.join(dir, 'result');
    for (let r = 0; r < rounds; r++) {
      for (const b of BENCHES) {
        process.env.PP_ADDR = b.mode === 'tcpns' ? NS.addr : '127.0.0.1';
        // Alternate, and rotate the order each round, so drift hits every configuration alike.
        const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
        for (const config of order) {
          const raw = await measure(config, bin, b, secs, out);
          const value = b.mode === 'bulk' ? raw / 1e6 : raw;
          samples.push({ bench: b.name, config, value });
          process.stderr.write(`round ${r + 1}/${rounds} ${b.name}, ${config}: ${value.toFixed(0)} ${b.unit}\n`);
        }
      }
    }
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
    for (let r = 0; r < (quick ? 2 : 3); r++) {
      const db = path.join(dir, 'store-rate.db');
      const start = process.hrtime.bigint();
      const res = await trace({ command: bin, args: ['pipe', '1', quick ? '1' : '2', out, '-1'], db, summary: false, status: false });
      const wall = Number(process.hrtime.bigint() - start) / 1e9;
      fs.rmSync(db, { force: true });
      extras.tracerStored.push(res.stored / wall);
      extras.tracerDrops.push(res.counters?.ringbufDrops ?? 0);
      process.stderr.write(`tracer: ${(res.stored / wall).toFixed(0)} events/s stored, ${res.counters?.ringbufDrops ?? 0} ring buffer drops\n`);
    }
    extras.sdk = await benchSdk();
    process.stderr.write('memory: kernel maps per thread/pipe/connection, and the runtime with 10,000 connections\n');
    const mem = await benchMemory();
    extras.memory = { json: mem.json, md: mem.md };
    process.stderr.write('application: load generator -> front -> back -> Redis, four ways\n');
    const app = await benchApp({ quick });
    extras.app = { json: app.json, md: app.md };
    process.stderr.write(`sdk: ${JSON.stringify(extras.sdk)}\n`);
  } finally {
    removeNamespaces();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const report = summarize(samples, rounds, secs, extras);
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.json'), JSON.stringify(report.json, null, 2) + '\n');
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), report.md);
  process.stdout.write(report.md);
}

function summarize(samples: Sample[], rounds: number, secs: number, extras?: Extras) {
  const benches = [...new Set(samples.map((s) => s.bench))];
  const lines: string[] = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
    `Each figure is the median of ${rounds} alternating runs of ${secs} s; spread is min-max.`,
    'Both ends of each request/response benchmark are pinned to CPU 0; bulk runs on both CPUs.',
    'Ratios are to the baseline of this same invocation. The floor is the tracepoint hooks with empty programs',
    '(it has no sockops program; the shim adds one on its own cgroup for TCP).',
    '',
    '| benchmark | configuration | median | spread | ratio to baseline | added ns per round trip (or process) |',
    '|---|---|---|---|---|---|',
  ];
  const json: Record<string, unknown>[] = [];
  const verdicts: string[] = [];
  for (const bench of benches) {
    const med: Partial<Record<ConfigName, number>> = {};
    for (const config of CONFIGS) {
      const xs = samples.filter((s) => s.bench === bench && s.config === config).map((s) => s.value);
      med[config] = median(xs);
    }
    const base = med.baseline!;
    const added = (c: ConfigName) => 1e9 / med[c]! - 1e9 / base;
    for (const config of CONFIGS) {
      const xs = samples.filter((s) => s.bench === bench && s.config === config).map((s) => s.value);
      const m = med[config]!;
      lines.push(
        `| ${bench} | ${config} | ${m.toFixed(0)} ${BENCHES.find((b) => b.name === bench)?.unit ?? ''} | ${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)} | ${(m / base).toFixed(3)} | ${config === 'baseline' || bench.includes('bulk') ? '-' : added(config).toFixed(0)} |`,
      );
      json.push({ bench, config, median: m, min: Math.min(...xs), max: Math.max(...xs), ratio: m / base, samples: xs });
    }
    const unit = BENCHES.find((b) => b.name === bench)?.unit ?? '';
    if (unit === 'MB/s') {
      const lost = (c: ConfigName) => (1 - med[c]! / base) * 100;
      verdicts.push(
        `- ${bench}: the shim loses ${lost('shim').toFixed(1)}% of throughput (target < 2%: ${lost('shim') < 2 ? 'met' : 'NOT met'}); ` +
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
      `- ${bench}: shim (propagation only) adds ${shimVsFloor.toFixed(2)}x the floor's time (target <= 1.5: ${shimVsFloor <= 1.5 ? 'met' : 'NOT met'}); ` +
        `with events ${eventsVsFloor.toFixed(2)}x; a process outside the run pays ${outsideVsFloor.toFixed(2)}x the floor (target <= 1: ${outsideVsFloor <= 1.05 ? 'met, within noise' : 'NOT met'}).`,
    );
  }
  lines.push('', '## Against the targets', '', ...verdicts, '');
  if (extras && extras.actors.length) {
    lines.push(
      '## Actors and the SDK',
      '',
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
        `The tracer end to end (\`causeway trace\`, pipe ping-pong as fast as it goes, events stored in SQLite): ${median(extras.tracerStored).toFixed(0)} events/s stored (runs: ${extras.tracerStored.map((x) => x.toFixed(0)).join(', ')}), ring buffer drops ${extras.tracerDrops.join(', ')}.`,
      );
    const s = extras.sdk;
    lines.push(
      '',
      'The in-process SDK (bench/sdk.ts, no kernel: the slot is an ArrayBuffer), ns:',
      '',
      '| async context switch, bare AsyncLocalStorage | the same under sdk.run() | ratio | sync() that changes the slot | sync() with nothing to change |',
      '|---|---|---|---|---|',
      `| ${s.alsSwitchNs.toFixed(0)} | ${s.sdkSwitchNs.toFixed(0)} | ${(s.sdkSwitchNs / s.alsSwitchNs).toFixed(2)} | ${s.syncNs.toFixed(0)} | ${s.syncSameNs.toFixed(0)} |`,
      '',
      'sync() runs only where Node hands bytes to the kernel (a socket write, a spawn), not per async switch.',
      '',
    );
    if (extras.memory) lines.push(extras.memory.md, '');
    if (extras.app) lines.push(extras.app.md, '');
  }
  return { md: lines.join('\n'), json: { machine: machine(), rounds, seconds: secs, results: json, extras } };
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
