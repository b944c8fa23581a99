/** What every benchmark report needs: medians, the machine it ran on, and the floor and outside configurations. */
import os from 'node:os';
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
