/**
 * What the shim adds to each tracked syscall, against the floor (issue 9),
 * measured where it can be told from noise: request/response in one thread
 * (bench/rtloop.c: write on one end, read on the other, and back), so that no
 * context switch and no wake-up sits between the syscalls. The ping-pong
 * table (two processes on one CPU) measures the same paths with the
 * scheduler's noise on top, which here is larger than the floor itself.
 *
 * Configurations, alternated over the rounds, the order turning each round:
 *   baseline  no BPF program loaded
 *   floor     the shim's hooks with programs that return at once
 *   outside   the shim loaded for another run's cgroup; this loop outside it
 *   shim      `causeway run --no-sample`: propagation only
 * A configuration's added time in a round is its ns per round trip minus the
 * same round's baseline; the shim's ratio to the floor is taken per round.
 *
 * Then one more run of the floor and of the shim per workload with
 * kernel.bpf_stats_enabled, for each program's calls and ns per round trip.
 * The floor's empty programs give what that accounting costs by itself per
 * call (two clock reads), which is taken off the shim's figures.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { run } from '../src/runtime/runtime';
import { newRecord } from '../src/kernel/record';
import { median, progDelta, progSnapshot, type ProgSnapshot, spawnWait, withFloor, withOutsideRun } from './common';

const ROOT = path.join(__dirname, '..', '..');
const CONFIGS = ['baseline', 'floor', 'outside', 'shim'] as const;
type Config = (typeof CONFIGS)[number];
const WORKLOADS = [
  { name: 'pipe, 64 B', mode: 'pipe' },
  { name: 'UNIX stream socketpair, 64 B', mode: 'unix' },
  { name: 'TCP loopback, 64 B', mode: 'tcp' },
] as const;
/** The loop runs on CPU 1: CPU 0 takes the runtime's reader and most of the machine's other work. */
const CPU = '1';
const SHIM_PROGRAMS = ['handle_enter', 'handle_exit', 'handle_tcp_send', 'handle_sock_recv', 'handle_sockops'] as const;
const FLOOR_PROGRAMS = ['floor_enter', 'floor_exit', 'floor_tcp_send', 'floor_sock_recv'] as const;

export interface HotPathBench {
  rounds: number;
  seconds: number;
  /** ns per round trip, one per round, by workload and configuration. */
  samples: Record<string, Record<Config, number[]>>;
  /** The bpf_stats run of each workload: ns per call and calls per round trip of each program. */
  programs: Record<string, { floor: ProgFigures; shim: ProgFigures }>;
}
type ProgFigures = Record<string, { nsPerCall: number; callsPerRt: number }>;

/** ns per round trip of one rtloop run in one configuration. */
async function measure(bin: string, mode: string, config: Config, secs: number, out: string): Promise<number> {
  const args = [mode, '64', String(secs), out, CPU];
  fs.rmSync(out, { force: true });
  if (config === 'baseline') await spawnWait(bin, args);
  else if (config === 'floor') await withFloor(() => spawnWait(bin, args));
  else if (config === 'outside') await withOutsideRun(() => spawnWait(bin, args));
  else {
    const res = await run({ command: bin, args, record: newRecord({ sampled: false }), summary: false });
    if (res.status !== 0) throw new Error(`rtloop under the shim exited with ${res.status}`);
    if (!res.counters || res.counters.sends === 0) throw new Error('rtloop under the shim: the shim counted no send');
  }
  const ns = Number(fs.readFileSync(out, 'utf8').split(' ')[0]);
  if (!(ns > 0)) throw new Error(`rtloop ${mode} (${config}) wrote no figure`);
  return ns;
}

/** Each program's ns per call and calls per round trip over one run of config (bpf_stats must be on). */
async function programFigures(bin: string, mode: string, config: 'floor' | 'shim', secs: number, out: string): Promise<ProgFigures> {
  const names = config === 'floor' ? FLOOR_PROGRAMS : SHIM_PROGRAMS;
  let before: ProgSnapshot = new Map();
  let after: ProgSnapshot = new Map();
  const args = [mode, '64', String(secs), out, CPU];
  if (config === 'floor')
    await withFloor(async () => {
      before = progSnapshot(names);
      await spawnWait(bin, args);
      after = progSnapshot(names);
    });
  else {
    // The programs are loaded when the command starts, and still loaded when it has exited.
    const res = await run({
      command: bin,
      args,
      record: newRecord({ sampled: false }),
      summary: false,
      onStart: () => void (before = progSnapshot(names)),
      onExit: () => void (after = progSnapshot(names)),
    });
    if (res.status !== 0) throw new Error(`rtloop under the shim exited with ${res.status}`);
  }
  // Round trips over the whole run, warm-up included: the counts cover it too.
  const rts = Number(fs.readFileSync(out, 'utf8').split(' ')[1]);
  if (!(rts > 0)) throw new Error(`rtloop ${mode} (${config}) wrote no count`);
  const figures: ProgFigures = {};
  for (const [name, d] of progDelta(before, after)) if (d.calls) figures[name] = { nsPerCall: d.ns / d.calls, callsPerRt: d.calls / rts };
  return figures;
}

export async function benchHotPath(opts: { quick?: boolean } = {}): Promise<{ json: HotPathBench; md: string }> {
  const rounds = opts.quick ? 5 : 9;
  const secs = opts.quick ? 0.5 : 0.7;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-hot-'));
  const statsBefore = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  try {
    const bin = path.join(dir, 'rtloop');
    execFileSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'rtloop.c')]);
    const out = path.join(dir, 'out');
    const samples: HotPathBench['samples'] = {};
    for (const w of WORKLOADS) samples[w.name] = { baseline: [], floor: [], outside: [], shim: [] };
    for (let r = 0; r < rounds; r++)
      for (const w of WORKLOADS) {
        const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
        for (const config of order) {
          const ns = await measure(bin, w.mode, config, secs, out);
          samples[w.name][config].push(ns);
          process.stderr.write(`hot-path round ${r + 1}/${rounds} ${w.name}, ${config}: ${ns.toFixed(0)} ns per round trip\n`);
        }
      }
    const programs: HotPathBench['programs'] = {};
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
    for (const w of WORKLOADS)
      programs[w.name] = {
        floor: await programFigures(bin, w.mode, 'floor', 1.5, out),
        shim: await programFigures(bin, w.mode, 'shim', 1.5, out),
      };
    const json: HotPathBench = { rounds, seconds: secs, samples, programs };
    return { json, md: hotPathMarkdown(json) };
  } finally {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const range = (xs: number[], d = 0) => (xs.length ? `${fmt(Math.min(...xs), d)} to ${fmt(Math.max(...xs), d)}` : '-');

/** Per round: config's ns per round trip beyond the same round's baseline. */
function added(b: HotPathBench, workload: string, config: Config): number[] {
  const s = b.samples[workload];
  return s[config].map((x, i) => x - s.baseline[i]);
}

/**
 * A verdict on "a <= limit" from per-round values: met when every round is
 * within it, NOT met when none is, otherwise not resolvable here.
 */
function judge(values: number[], limit: number): string {
  if (values.length < 2 || values.some((v) => !Number.isFinite(v))) return 'not resolvable here';
  if (values.every((v) => v <= limit)) return 'met';
  if (values.every((v) => v > limit)) return 'NOT met';
  return 'not resolvable here';
}

export function hotPathMarkdown(b: HotPathBench): string {
  const lines = [
    '## What the shim adds per syscall (bench/hot-path.ts)',
    '',
    `Request/response in one thread (bench/rtloop.c, on CPU ${CPU}): 64 B written on one end and read on the other, then back; ` +
      'one round trip is two writes and two reads, with no context switch between them. ' +
      `Baseline, floor (the shim's hooks with empty programs), outside (the shim loaded for another run) and shim (\`causeway run --no-sample\`), alternated over ${b.rounds} rounds of ${b.seconds} s. ` +
      'Added time is a round\'s ns per round trip minus the same round\'s baseline; the ratio to the floor is taken per round. Medians, and the rounds\' range.',
    '',
    '| workload | baseline ns per round trip | floor adds | outside adds | shim adds | shim / floor (target <= 1.5) | outside - floor (target <= 0) |',
    '|---|---|---|---|---|---|---|',
  ];
  const verdicts: string[] = [];
  for (const w of WORKLOADS) {
    const s = b.samples[w.name];
    if (!s) continue;
    const floor = added(b, w.name, 'floor');
    const outside = added(b, w.name, 'outside');
    const shim = added(b, w.name, 'shim');
    // A ratio means something only in rounds where the floor itself showed.
    const ratios = floor.every((f) => f > 0) ? shim.map((x, i) => x / floor[i]) : [];
    const outsideOver = outside.map((x, i) => x - floor[i]);
    lines.push(
      `| ${w.name} | ${fmt(median(s.baseline))} | ${fmt(median(floor))} (${range(floor)}) | ${fmt(median(outside))} (${range(outside)}) | ` +
        `${fmt(median(shim))} (${range(shim)}) | ${ratios.length ? `${fmt(median(ratios), 2)} (${range(ratios, 2)})` : 'floor lost in noise'}: ${judge(ratios, 1.5)} | ` +
        `${fmt(median(outsideOver))} (${range(outsideOver)}): ${judge(outsideOver, 0)} |`,
    );
    verdicts.push(
      `- ${w.name}: the shim adds ${fmt(median(shim))} ns per round trip where the floor adds ${fmt(median(floor))}, ` +
        (ratios.length ? `${fmt(median(ratios), 2)}x (target <= 1.5: ${judge(ratios, 1.5)})` : 'no ratio (the floor was lost in noise in some round)') +
        `; a loop outside the run pays ${fmt(median(outsideOver))} ns over the floor (target <= 0: ${judge(outsideOver, 0)}).`,
    );
  }
  lines.push('', ...verdicts, '');
  lines.push(
    'Each program in one more run of the floor and of the shim with kernel.bpf_stats_enabled (1.5 s, round trips over the whole run): calls per round trip, and ns per call as the kernel counts it. ' +
      'That accounting reads the clock twice per call, which the floor\'s empty programs show by themselves; "beyond empty" takes the floor\'s mean per call off each shim program\'s, and is what the shim\'s own work costs per round trip.',
    '',
    '| workload | program | calls per round trip | ns per call | beyond empty, ns per round trip |',
    '|---|---|---|---|---|',
  );
  for (const w of WORKLOADS) {
    const p = b.programs[w.name];
    if (!p) continue;
    const empty = Object.values(p.floor);
    const emptyNs = empty.length ? empty.reduce((a, f) => a + f.nsPerCall * f.callsPerRt, 0) / empty.reduce((a, f) => a + f.callsPerRt, 0) : NaN;
    lines.push(`| ${w.name} | the floor's programs (empty) | ${fmt(empty.reduce((a, f) => a + f.callsPerRt, 0), 2)} | ${fmt(emptyNs)} | - |`);
    let total = 0;
    for (const [name, f] of Object.entries(p.shim)) {
      if (f.callsPerRt < 0.01) continue; // not on this workload's path: other processes' calls
      const beyond = (f.nsPerCall - emptyNs) * f.callsPerRt;
      total += beyond;
      lines.push(`| ${w.name} | ${name} | ${fmt(f.callsPerRt, 2)} | ${fmt(f.nsPerCall)} | ${fmt(beyond)} |`);
    }
    lines.push(`| ${w.name} | the shim's programs, in all | | | ${fmt(total)} |`);
  }
  return lines.join('\n');
}
