/** What every benchmark report needs: medians, the machine it ran on, the floor and outside configurations, the programs' own accounting. */
import os from 'node:os';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Floor } from '../src/kernel/shim';
import { run } from '../src/runtime/runtime';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}`;
}

/** Runs cmd with the benchmark's stdio; rejects unless it exits 0. */
export async function spawnWait(cmd: string, args: string[]): Promise<void> {
  const child = spawn(cmd, args, { stdio: 'inherit' });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${cmd} exited with ${code}`);
}

/** The floor configuration: f() runs while the shim's hooks are attached with programs that return at once. */
export async function withFloor<T>(f: () => Promise<T>): Promise<T> {
  const floor = new Floor();
  try {
    return await f();
  } finally {
    floor.close();
  }
}

/** The outside configuration: f() runs outside any run while the shim is loaded for another run's cgroup (a sleep). */
export async function withOutsideRun<T>(f: () => Promise<T>): Promise<T> {
  let pid = 0;
  const other = run({ command: 'sleep', args: ['3600'], summary: false, onStart: (ctx) => (pid = ctx.pid) });
  // Until the sleep runs in its cgroup with the shim attached (or the run failed).
  let done = false;
  other.then(
    () => (done = true),
    () => (done = true),
  );
  while (!pid && !done) await new Promise((r) => setTimeout(r, 10));
  if (!pid) {
    const res = await other; // throws what went wrong, if it threw
    throw new Error(`the outside configuration's run did not start (status ${res.status})`);
  }
  try {
    return await f();
  } finally {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await other;
  }
}

/**
 * Whether a configuration's samples differ from the baseline's by more than
 * the spread: only when the two min-max ranges do not overlap (and each has
 * at least two samples).
 */
export function verdict(base: number[], xs: number[]): string {
  if (base.length < 2 || xs.length < 2) return 'not resolvable here';
  const m = median(xs) / median(base);
  if (Math.max(...xs) < Math.min(...base)) return `slower (${((1 - m) * 100).toFixed(1)}% lost)`;
  if (Math.min(...xs) > Math.max(...base)) return `faster (+${((m - 1) * 100).toFixed(1)}%)`;
  return 'not resolvable here';
}

/** run_time_ns and run_cnt of each loaded BPF program named in names, by program id (bpftool; kernel.bpf_stats_enabled must be on). */
export type ProgSnapshot = Map<number, { name: string; ns: number; calls: number }>;

export function progSnapshot(names: readonly string[]): ProgSnapshot {
  const progs = JSON.parse(execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' })) as { id: number; name?: string; run_time_ns?: number; run_cnt?: number }[];
  const m: ProgSnapshot = new Map();
  for (const p of progs) if (p.name && names.includes(p.name)) m.set(p.id, { name: p.name, ns: p.run_time_ns ?? 0, calls: p.run_cnt ?? 0 });
  return m;
}

/**
 * What the programs spent between two snapshots, summed by name, over the
 * programs present in both: one loaded or unloaded in between (another run's,
 * going or coming) would add or take away its whole history.
 */
export function progDelta(before: ProgSnapshot, after: ProgSnapshot): Map<string, { ns: number; calls: number }> {
  const m = new Map<string, { ns: number; calls: number }>();
  for (const [id, a] of after) {
    const b = before.get(id);
    if (!b) continue;
    const s = m.get(a.name) ?? { ns: 0, calls: 0 };
    s.ns += a.ns - b.ns;
    s.calls += a.calls - b.calls;
    m.set(a.name, s);
  }
  return m;
}

/** run_time_ns and run_cnt of the loaded BPF programs so far, summed by name (for programs that stay loaded). */
export function progStats(names: readonly string[]): Map<string, { ns: number; calls: number }> {
  return progDelta(new Map([...progSnapshot(names)].map(([id, p]) => [id, { name: p.name, ns: 0, calls: 0 }])), progSnapshot(names));
}
