/**
 * What each event type costs (issue 11): the kernel's share, measured by the
 * kernel itself (kernel.bpf_stats_enabled: ns spent in each of the shim's
 * programs), and the runtime's, measured as this process's CPU time (it is
 * the runtime: run() and trace() hold the shim, the reader thread and the
 * tracer's workers).
 *
 * Each workload (bench/pingpong.c over a pipe, a UNIX socketpair and TCP on
 * loopback, and bench/forkexec.c) runs for the same time in four
 * configurations, alternated over the rounds:
 *   propagation  an unsampled record: the same programs, the ring buffer
 *                open and read, but nothing to emit
 *   events       a sampled record; the batches are only counted by type
 *   file         a sampled record, events written to a file (`-e FILE`)
 *   trace        `causeway trace`: events stored in the trace database
 * What the programs spend beyond propagation, divided by the events they
 * emitted, is the kernel's cost of an event; this process's CPU time beyond
 * propagation, divided by the events, is the runtime's.
 *
 * Then what one event costs inside the kernel, piece by piece
 * (bench/ev_parts.bpf.c, run by BPF_PROG_TEST_RUN in a bpf_loop): reserving
 * and submitting a ring-buffer record the size of struct cw_event, zeroing
 * it, the command name, the clock, two random words for an event id.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { run } from '../src/runtime/runtime';
import { trace } from '../src/tracer/trace';
import { newRecord } from '../src/kernel/record';
import { EVENT_BYTES, EVENT_OFF } from '../src/kernel/events';
import { median, progDelta, progSnapshot, type ProgSnapshot } from './common';

const ROOT = path.join(__dirname, '..', '..');
const CONFIGS = ['propagation', 'events', 'file', 'trace'] as const;
type Config = (typeof CONFIGS)[number];
/** Event types as struct cw_event's type byte numbers them (bpf/causeway.h). */
const TYPES = ['?', 'fork', 'exec', 'exit', 'send', 'recv', 'join', 'ingress'] as const;
const PROGRAMS = ['handle_enter', 'handle_exit', 'handle_tcp_send', 'handle_sock_recv', 'handle_sockops', 'handle_fork', 'handle_exec', 'handle_exit_task'] as const;

interface Workload {
  name: string;
  bin: 'pingpong' | 'forkexec';
  mode?: string;
  unit: string;
}
const WORKLOADS: Workload[] = [
  { name: 'pipe ping-pong, 64 B', bin: 'pingpong', mode: 'pipe', unit: 'round trip' },
  { name: 'UNIX socket request/response, 64 B', bin: 'pingpong', mode: 'unix', unit: 'round trip' },
  { name: 'TCP loopback request/response, 64 B', bin: 'pingpong', mode: 'tcp', unit: 'round trip' },
  { name: 'fork + exec + exit', bin: 'forkexec', unit: 'process' },
];

/** Where each event type is emitted: the programs that spend its cost (mode: the workload's). */
const PER_TYPE: { label: string; mode?: string; types: string[]; programs: string[] }[] = [
  { label: 'send', mode: 'tcp', types: ['send'], programs: ['handle_tcp_send', 'handle_exit'] },
  { label: "the send's record in the TCP option", mode: 'tcp', types: ['send'], programs: ['handle_sockops'] },
  { label: 'recv', mode: 'tcp', types: ['recv', 'join'], programs: ['handle_sock_recv'] },
  { label: 'send or recv', mode: 'pipe', types: ['send', 'recv', 'join'], programs: ['handle_enter', 'handle_exit'] },
  { label: 'send or recv', mode: 'unix', types: ['send', 'recv', 'join'], programs: ['handle_enter', 'handle_exit'] },
  { label: 'fork', types: ['fork'], programs: ['handle_fork'] },
  { label: 'exec', types: ['exec'], programs: ['handle_exec'] },
  { label: 'exit', types: ['exit'], programs: ['handle_exit_task'] },
];

/** One measurement: a workload in one configuration. */
interface Sample {
  workload: string;
  config: Config;
  /** Round trips (or processes) done. */
  ops: number;
  /** Events the shim submitted (its counter), and by type where the batches were seen. */
  events: number;
  types: Record<string, number>;
  /** ns spent in each program over the measurement, and its calls. */
  progNs: Record<string, number>;
  progCalls: Record<string, number>;
  /** This process's CPU time over the measurement (user + system, every thread), ns. */
  cpuNs: number;
  drops: number;
}

export interface EventCostBench {
  rounds: number;
  seconds: number;
  samples: Sample[];
  /** ns per event of each piece of ev_start, one per run of bench/ev_parts (null if it could not be built). */
  parts: { piece: string; ns: number[] }[] | null;
}

function countTypes(batch: Buffer, into: Record<string, number>): void {
  for (let off = 0; off + EVENT_BYTES <= batch.length; off += EVENT_BYTES) {
    const t = TYPES[batch.readUInt8(off + EVENT_OFF.type)] ?? '?';
    into[t] = (into[t] ?? 0) + 1;
  }
}

async function measure(w: Workload, config: Config, dir: string, secs: number): Promise<Sample> {
  const out = path.join(dir, 'ops');
  const bin = path.join(dir, w.bin);
  const args = w.bin === 'forkexec' ? [String(secs), out, '0'] : [w.mode!, '64', String(secs), out, '0'];
  const types: Record<string, number> = {};
  const progs: { before?: ProgSnapshot; after?: ProgSnapshot } = {};
  let cpu0 = process.cpuUsage();
  // Counted from the moment the command runs: the shim's loading is not an event's cost.
  const onStart = () => {
    progs.before = progSnapshot(PROGRAMS);
    cpu0 = process.cpuUsage();
  };
  // Before the run takes its shim down (its programs go with it).
  const onExit = () => (progs.after = progSnapshot(PROGRAMS));
  let status: number;
  let events: number;
  let drops = 0;
  if (config === 'trace') {
    const db = path.join(dir, 'cost.db');
    const res = await trace({ command: bin, args, db, summary: false, status: false, onStart, onExit });
    for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
    status = res.status;
    events = res.counters?.events ?? 0;
    drops = (res.counters?.ringbufDrops ?? 0) + res.storeDropped + res.storeFailed;
  } else {
    const file = path.join(dir, 'cost.jsonl');
    const res = await run({
      command: bin,
      args,
      record: newRecord({ sampled: config !== 'propagation' }),
      eventsFile: config === 'file' ? file : undefined,
      onRawEvents: config === 'file' ? undefined : (b) => countTypes(b, types),
      onStart,
      onExit,
      summary: false,
    });
    fs.rmSync(file, { force: true });
    status = res.status;
    events = res.counters?.events ?? 0;
    drops = (res.counters?.ringbufDrops ?? 0) + res.eventsFileLost;
  }
  // After the run: the last batches were handled and stored.
  const cpu = process.cpuUsage(cpu0);
  const after = progs.after;
  if (status !== 0 || !after) throw new Error(`${w.bin} under ${config} exited with ${status}`);
  const progNs: Record<string, number> = {};
  const progCalls: Record<string, number> = {};
  for (const [name, d] of progDelta(progs.before ?? new Map(), after)) {
    progNs[name] = d.ns;
    progCalls[name] = d.calls;
  }
  return { workload: w.name, config, ops: Number(fs.readFileSync(out, 'utf8')) * secs, events, types, progNs, progCalls, cpuNs: (cpu.user + cpu.system) * 1000, drops };
}

/** bench/ev_parts: builds it (clang, the shim's vmlinux.h, libbpf) and runs it; null if it cannot be built here. */
function evParts(dir: string, runs: number): EventCostBench['parts'] {
  const vmlinux = path.join(ROOT, 'bpf', '.output', 'vmlinux.h');
  try {
    execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-D__TARGET_ARCH_x86', `-I${path.dirname(vmlinux)}`, `-DCW_EVENT_BYTES=${EVENT_BYTES}`, '-c', path.join(ROOT, 'bench', 'ev_parts.bpf.c'), '-o', path.join(dir, 'ev_parts.bpf.o')]);
    execFileSync('cc', ['-O2', '-o', path.join(dir, 'ev_parts'), path.join(ROOT, 'bench', 'ev_parts.c'), '-lbpf']);
  } catch (err) {
    process.stderr.write(`event-cost: bench/ev_parts could not be built (${(err as Error).message.split('\n')[0]}); its table is left out\n`);
    return null;
  }
  const parts = new Map<string, number[]>();
  for (let r = 0; r < runs; r++) {
    const outText = execFileSync(path.join(dir, 'ev_parts'), [path.join(dir, 'ev_parts.bpf.o')], { encoding: 'utf8' });
    for (const line of outText.trim().split('\n')) {
      const [piece, ns] = line.split('\t');
      parts.set(piece, [...(parts.get(piece) ?? []), Number(ns)]);
    }
  }
  return [...parts].map(([piece, ns]) => ({ piece, ns }));
}

export async function benchEventCost(opts: { quick?: boolean } = {}): Promise<{ json: EventCostBench; md: string }> {
  const rounds = opts.quick ? 3 : 5;
  const secs = opts.quick ? 1 : 1.5;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-cost-'));
  const statsBefore = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  try {
    for (const prog of ['pingpong', 'forkexec']) execFileSync('cc', ['-O2', '-o', path.join(dir, prog), path.join(ROOT, 'bench', `${prog}.c`)]);
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
    const samples: Sample[] = [];
    for (let r = 0; r < rounds; r++)
      for (const w of WORKLOADS) {
        const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
        for (const config of order) {
          const s = await measure(w, config, dir, secs);
          samples.push(s);
          process.stderr.write(`event-cost round ${r + 1}/${rounds} ${w.name}, ${config}: ${(s.ops / secs).toFixed(0)} ${w.unit}s/s, ${s.events} events, ${(s.cpuNs / 1e6).toFixed(0)} ms runtime CPU\n`);
        }
      }
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    const json: EventCostBench = { rounds, seconds: secs, samples, parts: evParts(dir, rounds) };
    return { json, md: eventCostMarkdown(json) };
  } finally {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const range = (xs: number[]) => (xs.length ? `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}` : '-');

/** Per round: what config spent per event beyond propagation (the same round's), in the programs and in this process. */
function perEvent(b: EventCostBench, workload: string, config: Config): { kernel: number[]; runtime: number[]; opsRate: number[] } {
  const res = { kernel: [] as number[], runtime: [] as number[], opsRate: [] as number[] };
  const base = b.samples.filter((s) => s.workload === workload && s.config === 'propagation');
  const with_ = b.samples.filter((s) => s.workload === workload && s.config === config);
  with_.forEach((s, i) => {
    const p = base[i];
    res.opsRate.push(s.ops / b.seconds);
    if (!p || !s.events || !s.ops || !p.ops) return;
    // Per round trip (or process), so that a slower configuration's fewer ones compare like with like; then per event.
    const perEv = (x: number, xBase: number) => ((x / s.ops - xBase / p.ops) * s.ops) / s.events;
    res.kernel.push(PROGRAMS.reduce((k, name) => k + perEv(s.progNs[name] ?? 0, p.progNs[name] ?? 0), 0));
    res.runtime.push(perEv(s.cpuNs, p.cpuNs));
  });
  return res;
}

export function eventCostMarkdown(b: EventCostBench): string {
  const lines = [
    '## What each event costs (bench/event-cost.ts)',
    '',
    `Each workload runs ${b.seconds} s in four configurations, alternated over ${b.rounds} rounds, both of its ends on CPU 0: propagation (an unsampled record: the same programs and reader, nothing emitted), events (a sampled record, batches only counted by type), \`-e FILE\` and \`causeway trace\`. ` +
      'Kernel: ns spent in the shim\'s programs (kernel.bpf_stats_enabled) beyond propagation\'s for the same work (per round trip or process), per event emitted; it leaves out what the kernel does outside the programs (waking the reader, copying the batches). ' +
      'Runtime: this process\'s CPU time (it holds the shim, the reader thread, the file writer and the tracer\'s workers) beyond propagation\'s, per event. Medians of the rounds (min-max).',
    '',
    '| workload | events per round trip (process) | kernel ns per event | runtime ns per event: counted only | -e FILE | trace | rate: propagation | events | -e FILE | trace |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const w of WORKLOADS) {
    const ev = perEvent(b, w.name, 'events');
    const file = perEvent(b, w.name, 'file');
    const tr = perEvent(b, w.name, 'trace');
    const prop = b.samples.filter((s) => s.workload === w.name && s.config === 'propagation').map((s) => s.ops / b.seconds);
    if (!prop.length) continue;
    const types: Record<string, number> = {};
    let ops = 0;
    for (const s of b.samples.filter((x) => x.workload === w.name && x.config === 'events')) {
      ops += s.ops;
      for (const [t, n] of Object.entries(s.types)) types[t] = (types[t] ?? 0) + n;
    }
    const mix = Object.entries(types)
      .filter(([, n]) => n / ops >= 0.01)
      .map(([t, n]) => `${(n / ops).toFixed(2)} ${t}`)
      .join(', ');
    const kernel = [...ev.kernel, ...file.kernel, ...tr.kernel];
    lines.push(
      `| ${w.name} | ${mix || '-'} | ${fmt(median(kernel))} (${range(kernel)}) | ${fmt(median(ev.runtime))} (${range(ev.runtime)}) | ${fmt(median(file.runtime))} (${range(file.runtime)}) | ${fmt(median(tr.runtime))} (${range(tr.runtime)}) | ${fmt(median(prop))} | ${fmt(median(ev.opsRate))} | ${fmt(median(file.opsRate))} | ${fmt(median(tr.opsRate))} |`,
    );
  }
  lines.push(
    '',
    'Per event type: ns the programs that emit it spend beyond propagation, per event of that type (all configurations with events; median of the rounds, min-max). ' +
      'Pipes and UNIX sockets emit sends and receives in the same two programs (sys_enter, sys_exit), so their figure is per send or receive; ' +
      'a TCP send also costs the option that carries its new record (sockops: reserving, writing and, at the receiver, parsing it), shown on its own line.',
    '',
    '| event type | workload | programs | kernel ns per event |',
    '|---|---|---|---|',
  );
  for (const t of PER_TYPE) {
    const w = WORKLOADS.find((x) => x.mode === t.mode)!;
    const of = (config: Config) => b.samples.filter((x) => x.workload === w.name && x.config === config);
    // The file and trace configurations do not count by type: their share is the events configuration's.
    const counted = of('events');
    const total = counted.reduce((a, s) => a + s.events, 0);
    const share = total ? counted.reduce((a, s) => a + t.types.reduce((n, ty) => n + (s.types[ty] ?? 0), 0), 0) / total : 0;
    const base = of('propagation');
    const xs = CONFIGS.filter((c) => c !== 'propagation').flatMap((c) =>
      of(c).flatMap((s, i) => {
        const p = base[i];
        const n = Object.keys(s.types).length ? t.types.reduce((a, ty) => a + (s.types[ty] ?? 0), 0) : s.events * share;
        if (!p || !n || !s.ops || !p.ops) return [];
        const perOp = t.programs.reduce((a, name) => a + (s.progNs[name] ?? 0) / s.ops - (p.progNs[name] ?? 0) / p.ops, 0);
        return [(perOp * s.ops) / n];
      }),
    );
    if (xs.length) lines.push(`| ${t.label} | ${w.name} | ${t.programs.join(', ')} | ${fmt(median(xs))} (${range(xs)}) |`);
  }
  const drops = b.samples.reduce((n, s) => n + s.drops, 0);
  lines.push('', `Events lost over all measurements (ring buffer, file, store): ${drops}.`);
  if (b.parts) {
    lines.push(
      '',
      `Inside the kernel, one event piece by piece (bench/ev_parts.bpf.c: 100,000 events in a bpf_loop per BPF_PROG_TEST_RUN, each piece added to the previous ones; ${b.parts[0]?.ns.length ?? 0} runs, median and min-max, ns per event). The cache is warm and the ring buffer's lock uncontended here, so these are lower bounds:`,
      '',
      '| piece | ns per event, cumulative | this piece |',
      '|---|---|---|',
    );
    let prev = 0;
    for (const p of b.parts) {
      const m = median(p.ns);
      lines.push(`| ${p.piece} | ${fmt(m)} (${range(p.ns)}) | ${fmt(m - prev)} |`);
      prev = m;
    }
  }
  return lines.join('\n');
}
