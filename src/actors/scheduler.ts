/**
 * scheduler: a request's priority follows it through every tier (Causeway's
 * global priority scheduling). A thread of the run runs at the CPU priority
 * that its record's priority maps to, from the moment it holds that record
 * (the kernel reports the change at once; a native reactor renices within
 * microseconds), and its TCP packets leave with a matching SO_PRIORITY.
 *
 *   causeway run --actor scheduler -- postgres -D data          # a tier
 *   causeway run --priority 200 -- psql -c 'select ...'          # a client
 *
 * Mapping (docs/scheduler.md), per record priority p (0-255, higher = more CPU):
 *   nice    p = 0 (unmarked): the thread's own nice; 1-255: linear from nice
 *           19 (background) to -20, 128 -> 0: round(low + (high - low) *
 *           (p - 1) / 254), options low=19 and high=-20; or a step table
 *           nice=P/N+P/N... (from priority P up: nice N, or "own"; below the
 *           first step: own).
 *   socket  p > 128: SO_PRIORITY 6 (TC_PRIO_INTERACTIVE: pfifo_fast's first
 *           band), else unchanged; or socket=P/S+... (S a number or "keep"),
 *           or socket=off.
 *   join    the kernel join rule, "priority" by default (a read that spans
 *           several records adopts the highest), or last, first, or keep.
 *   report  a JSON file of the figures at the end.
 * Threads return to their own nice when they hold a record that maps to it,
 * and at the end of the run. At the end it prints what it did, measured.
 */
import fs from 'node:fs';
import type { Actor, JoinRule, Scheduling } from '../actor/types';
import { CausewayError } from '../errors';

type Step = [number, number | 'own' | null];

/** "P/V+P/V": steps sorted by P; values through parse. */
function steps(name: string, raw: unknown, parse: (v: string) => number | 'own' | null): Step[] {
  const items = ([] as unknown[]).concat(raw).map(String);
  const out: Step[] = items.map((item) => {
    const m = /^(\d+)\/(.+)$/.exec(item);
    const p = m ? Number(m[1]) : NaN;
    if (!m || p > 255) throw new CausewayError(`scheduler: ${name} takes PRIORITY/VALUE steps joined by "+" (e.g. ${name}=1/0+200/-15), priority 0-255, not "${item}"`);
    return [p, parse(m[2])];
  });
  return out.sort((a, b) => a[0] - b[0]);
}

/** The table of 256 values that the steps give (below the first step: dflt). */
function table<T>(st: Step[], dflt: T): (T | number | 'own' | null)[] {
  return Array.from({ length: 256 }, (_, p) => {
    let v: T | number | 'own' | null = dflt;
    for (const [from, value] of st) if (p >= from) v = value;
    return v;
  });
}

function niceValue(v: string): number | 'own' {
  if (v === 'own') return 'own';
  const n = Number(v);
  if (!Number.isInteger(n) || n < -20 || n > 19) throw new CausewayError(`scheduler: a nice value is -20 to 19 or "own", not "${v}"`);
  return n;
}

function socketValue(v: string): number | null {
  if (v === 'keep') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new CausewayError(`scheduler: a socket priority is 0-4294967295 or "keep", not "${v}"`);
  return n;
}

/** The mapping the options give (exported for docs and tests). */
export function schedulerTables(options: Record<string, unknown>): { nice: (number | 'own')[]; socketPriority: (number | null)[]; join: JoinRule | 'keep' } {
  const known = new Set(['nice', 'low', 'high', 'socket', 'join', 'report']);
  for (const k of Object.keys(options))
    if (!known.has(k)) throw new CausewayError(`scheduler: no option "${k}" (options: ${[...known].join(', ')})`);
  if (options.nice !== undefined && (options.low !== undefined || options.high !== undefined))
    throw new CausewayError('scheduler: give nice=STEPS or low=N,high=N, not both');
  let nice: (number | 'own')[];
  if (options.nice !== undefined) {
    nice = table(steps('nice', options.nice, niceValue), 'own' as const) as (number | 'own')[];
  } else {
    const [low, high] = [options.low ?? 19, options.high ?? -20].map((v) => niceValue(String(v)));
    if (low === 'own' || high === 'own') throw new CausewayError('scheduler: low and high are nice values, -20 to 19');
    nice = Array.from({ length: 256 }, (_, p) => (p === 0 ? 'own' : Math.round(low + ((high - low) * (p - 1)) / 254) || 0));
  }
  let socketPriority: (number | null)[];
  if (options.socket === 'off') socketPriority = new Array<null>(256).fill(null);
  else if (options.socket !== undefined) socketPriority = table(steps('socket', options.socket, socketValue), null) as (number | null)[];
  else socketPriority = Array.from({ length: 256 }, (_, p) => (p > 128 ? 6 : null));
  const join = String(options.join ?? 'priority');
  if (!['priority', 'last', 'first', 'keep'].includes(join)) throw new CausewayError(`scheduler: join is priority, last, first or keep, not "${join}"`);
  return { nice, socketPriority, join: join as JoinRule | 'keep' };
}

function percentile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function scheduler(options: Record<string, unknown>): Actor {
  const { nice, socketPriority, join } = schedulerTables(options);
  const report = options.report === undefined ? undefined : String(options.report);
  let running: Scheduling | undefined;
  return {
    name: 'scheduler',
    start(ctx) {
      if (join !== 'keep') ctx.policy.joinRule(join);
      running = ctx.policy.schedule({ nice, socketPriority });
    },
    stop(ctx) {
      if (!running) return;
      const s = running.stop();
      const lat = [...s.latencyNs].sort((a, b) => a - b);
      const us = (ns: number) => (ns / 1000).toFixed(ns < 10000 ? 1 : 0);
      const latency = lat.length
        ? `, in effect ${us(percentile(lat, 0.5))} µs after the change (p50; p99 ${us(percentile(lat, 0.99))} µs, max ${us(lat[lat.length - 1])} µs, ${lat.length} measured)`
        : '';
      const problems = [s.lost && `${s.lost} change(s) LOST (ring buffer full)`, s.failed && `${s.failed} renice(s) failed`]
        .filter(Boolean).join(', ');
      ctx.log(
        `${s.changes} priority change(s), ${s.reniced} renice(s) of ${s.threads} thread(s)${latency}; ` +
          `${s.arrivals} reniced ahead of their read, ${s.idled} back to their own nice waiting in accept(), ` +
          `${s.restored} given their own nice back at the end${problems ? `; ${problems}` : ''}` +
          (s.realtime ? '' : '; the reactor could not run SCHED_FIFO'),
      );
      if (report) fs.writeFileSync(report, JSON.stringify({ ...s, latencyNs: undefined, latencyP50Ns: percentile(lat, 0.5), latencyP99Ns: percentile(lat, 0.99), latencyMaxNs: lat[lat.length - 1] ?? null, latencySamples: lat.length }, null, 2) + '\n');
    },
  };
}
