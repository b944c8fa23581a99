/**
 * `causeway agent`: a daemon that follows a set of targets (cgroups, units,
 * containers, given by name or by pattern, and new ones as they appear), one
 * attachment per target (src/runtime/attach.ts), all storing into one trace
 * database kept within a size and an age, exporting finished traces over OTLP
 * as it goes (retried while the collector is down), and writing its health
 * and counters to a status file (`causeway status` reads it).
 *
 * Stopping it (SIGINT, SIGTERM) detaches every target, leaving them running
 * and unchanged, and stores what it holds; a new agent takes over where the
 * old one left (the export mark is in the database).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import createDebug from 'debug';
import { minimatch } from 'minimatch';
import { requireMount, subtree } from '../kernel/cgroup';
import { DROP_COUNTERS } from '../kernel/shim';
import { EVENT_BYTES } from '../kernel/events';
import { run, RunOptions, RunResult } from '../runtime/runtime';
import type { AttachTarget } from '../runtime/attach';
import { CausewayError } from '../errors';
import { TraceWriter } from '../tracer/writer';
import { TraceStore } from '../tracer/store';
import { buildGraph } from '../tracer/graph';
import { exportOtlp, OtlpEncoding } from '../tracer/otlp';

const debug = createDebug('causeway:agent');

/** How long a target that could not be attached waits before the next try (ms). */
const RETRY_MS = 30_000;

/** What to follow: a kind and a name or a glob pattern (cgroup paths as /proc/PID/cgroup shows them). */
export interface Watch {
  kind: 'cgroup' | 'unit' | 'container';
  pattern: string;
}

export interface AgentOptions {
  watch: Watch[];
  db: string;
  /** Keep the database's pages within this many bytes, and events no older than maxAgeMs. */
  maxBytes: number;
  maxAgeMs: number;
  otlp?: string;
  otlpEncoding?: OtlpEncoding;
  /** A trace is exported once it had no new event for this long (ms). */
  exportQuietMs: number;
  statusFile: string;
  /** How often targets are looked for, limits applied, traces exported (ms). */
  intervalMs: number;
  host?: string;
  /** The options of each attachment (actors, trust, sampling, TCP option). */
  run: Omit<RunOptions, 'command' | 'args' | 'attach'>;
}

/** The status file's contents. */
export interface AgentStatus {
  pid: number;
  started: string;
  updated: string;
  state: 'running' | 'stopping' | 'stopped';
  db: string;
  dbBytes: number;
  targets: { target: string; since: string; events: number }[];
  ended: { target: string; why: string; status: number }[];
  events: number;
  stored: number;
  /** Lost, by name: the shims' drop counters summed over the attachments that ended, the store's failures and drops. */
  lost: Record<string, number>;
  pruned: { batches: number; events: number; traces: number };
  export: { url: string | null; traces: number; spans: number; failedAttempts: number; lastError: string | null; pending: number };
}

/** Targets matching the watches now, as attach targets keyed by how they print. */
function discover(watch: Watch[]): Map<string, AttachTarget> {
  const out = new Map<string, AttachTarget>();
  for (const w of watch) {
    if (w.kind === 'cgroup') {
      const mount = requireMount();
      const glob = path.posix.join('/', w.pattern);
      for (const dir of subtree(mount).slice(1)) {
        const rel = '/' + path.relative(mount, dir);
        if (/\/causeway-[0-9a-f]{12}(\/|$)/.test(rel)) continue; // causeway's own runs
        if (minimatch(rel, glob)) out.set(`cgroup ${rel}`, { cgroup: rel });
      }
    } else if (w.kind === 'container') {
      for (const name of list('podman', ['ps', '--format', '{{.Names}}']).concat(list('docker', ['ps', '--format', '{{.Names}}'])))
        if (minimatch(name, w.pattern)) out.set(`container ${name}`, { container: name });
    } else {
      for (const line of list('systemctl', ['list-units', '--plain', '--no-legend', '--state=running', '--type=service,scope']))
        if (minimatch(line.split(/\s+/)[0], w.pattern)) out.set(`unit ${line.split(/\s+/)[0]}`, { unit: line.split(/\s+/)[0] });
    }
  }
  return out;
}

/** Lines a listing command prints; none if it is missing or fails (counted by the caller as no targets). */
function list(cmd: string, args: string[]): string[] {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

export async function agent(opts: AgentOptions): Promise<number> {
  if (process.geteuid?.() !== 0) throw new CausewayError('causeway agent needs root (it loads BPF programs)');
  if (opts.watch.length === 0) throw new CausewayError('nothing to watch: give --cgroup, --unit or --container (names or patterns, repeatable)');
  // Patterns that can match nothing here are said at once, not found out from an empty status.
  if (opts.watch.some((w) => w.kind === 'unit') && !fs.existsSync('/run/systemd/system'))
    process.stderr.write('causeway agent: systemd is not running here: --unit patterns match nothing (use --cgroup)\n');
  if (opts.watch.some((w) => w.kind === 'container') && list('podman', ['--version']).length + list('docker', ['--version']).length === 0)
    process.stderr.write('causeway agent: neither podman nor docker is installed: --container patterns match nothing\n');
  const host = opts.host ?? os.hostname();
  const store = TraceStore.open(opts.db);
  const runId = store.beginRun(`agent ${opts.watch.map((w) => `--${w.kind} ${w.pattern}`).join(' ')}`, host);
  store.ensureExportTable();
  const writer = new TraceWriter({ db: opts.db, run: runId, host, onError: (err) => process.stderr.write(`causeway agent: storing events failed: ${err.message}\n`) });
  await writer.ready;

  const status: AgentStatus = {
    pid: process.pid,
    started: new Date().toISOString(),
    updated: '',
    state: 'running',
    db: opts.db,
    dbBytes: 0,
    targets: [],
    ended: [],
    events: 0,
    stored: 0,
    lost: {},
    pruned: { batches: 0, events: 0, traces: 0 },
    export: { url: opts.otlp ?? null, traces: 0, spans: 0, failedAttempts: 0, lastError: null, pending: 0 },
  };
  const active = new Map<string, { since: Date; events: number; done: Promise<void> }>();
  /** Targets that could not be attached, and when to try again (a target that keeps failing is not retried every round). */
  const retryAt = new Map<string, number>();
  const ended = (e: AgentStatus['ended'][number]) => {
    status.ended.push(e);
    if (status.ended.length > 100) status.ended.shift(); // the latest 100
  };
  let stopping = false;
  const lose = (name: string, n: number) => {
    if (n > 0) status.lost[name] = (status.lost[name] ?? 0) + n;
  };

  // One abort for every attachment: they do not each listen for the process's signals.
  const detach = new AbortController();
  const follow = (key: string, target: AttachTarget) => {
    const entry = { since: new Date(), events: 0, done: Promise.resolve() };
    process.stderr.write(`causeway agent: attaching to ${key}\n`);
    entry.done = run({
      ...opts.run,
      command: `agent ${key}`,
      args: [],
      attach: target,
      stop: detach.signal,
      onRawEvents: (batch, clockOffset) => {
        entry.events += batch.length / EVENT_BYTES;
        status.events += batch.length / EVENT_BYTES;
        writer.push(batch, clockOffset);
      },
    })
      .then((r: RunResult) => {
        ended({ target: key, why: r.attached?.ended ?? 'ended', status: r.status });
        for (const k of DROP_COUNTERS) lose(k, r.counters?.[k] ?? 0);
        for (const [name, a] of Object.entries(r.actors)) lose(`actor ${name}`, a.dropped);
      })
      .catch((err: Error) => {
        // A target that went away while it was being attached is not an error of the agent's.
        ended({ target: key, why: `could not attach: ${err.message}`, status: 1 });
        retryAt.set(key, Date.now() + RETRY_MS);
        process.stderr.write(`causeway agent: ${key}: ${err.message} (next try in ${RETRY_MS / 1000} s)\n`);
      })
      .finally(() => active.delete(key));
    active.set(key, entry);
  };

  // Export: traces quiet for exportQuietMs, from where the last export of each left off.
  let backoff = 0;
  let exporting: Promise<void> | null = null;
  let nextExport = 0;
  const exportDue = async (final = false) => {
    if (!opts.otlp || Date.now() < nextExport) return;
    // At the end every trace is due: nothing more will come from this agent.
    const quietBefore = BigInt(Date.now() - (final ? 0 : opts.exportQuietMs)) * 1_000_000n;
    const due = store.exportDue(quietBefore, 200);
    status.export.pending = due.length;
    if (due.length === 0) return;
    const graphs = due.map(({ trace, since }) => {
      const g = buildGraph(trace, store.events(trace), store.layerStamps(trace));
      return { ...g, spans: g.spans.filter((s) => s.start > since) };
    });
    const r = await exportOtlp(graphs, opts.otlp, { encoding: opts.otlpEncoding });
    if (r.failed && r.failed === r.spans && r.spans > 0) {
      status.export.failedAttempts++;
      status.export.lastError = r.error ?? 'failed';
      backoff = Math.min(backoff ? backoff * 2 : opts.intervalMs, 60_000);
      nextExport = Date.now() + backoff;
      debug('export failed, next in %d ms: %s', backoff, r.error);
      return;
    }
    backoff = 0;
    status.export.traces += due.length;
    status.export.spans += r.spans - r.failed;
    if (r.failed) status.export.lastError = r.error ?? null;
    store.markExported(due.map(({ trace }, i) => ({ trace, end: graphs[i].end })));
    status.export.pending = 0;
  };

  const writeStatus = () => {
    status.updated = new Date().toISOString();
    status.targets = [...active].map(([target, e]) => ({ target, since: e.since.toISOString(), events: e.events }));
    status.stored = writer.stats.stored;
    status.lost.storeFailed = writer.stats.failed;
    status.lost.storeDropped = writer.stats.dropped;
    try {
      status.dbBytes = store.usedBytes();
    } catch {
      /* busy: the last figure stands */
    }
    const tmp = `${opts.statusFile}.tmp`;
    fs.mkdirSync(path.dirname(opts.statusFile), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(status, null, 2) + '\n');
    fs.renameSync(tmp, opts.statusFile);
  };

  /** The size and age limits, applied now. */
  const prune = () => {
    try {
      const p = store.prune({ olderThan: BigInt(Date.now() - opts.maxAgeMs) * 1_000_000n, maxBytes: opts.maxBytes });
      status.pruned.batches += p.batches;
      status.pruned.events += p.events;
      status.pruned.traces += p.traces;
    } catch (err) {
      debug('prune: %s', (err as Error).message); // busy: the next round
    }
  };

  let wake = () => {};
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    status.state = 'stopping';
    process.stderr.write(`causeway agent: ${sig}: detaching from ${active.size} target(s)\n`);
    detach.abort(sig);
    wake();
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
  const handlers = signals.map((s) => [s, () => stop(s)] as const);
  for (const [s, f] of handlers) process.on(s, f);
  try {
    while (!stopping) {
      for (const [key, target] of discover(opts.watch))
        if (!active.has(key) && !stopping && (retryAt.get(key) ?? 0) <= Date.now()) follow(key, target);
      prune();
      // In the background: a collector that is down makes the exporter wait and retry, and targets are still looked for meanwhile.
      if (!exporting)
        exporting = exportDue()
          .catch((err) => void (status.export.lastError = (err as Error).message))
          .finally(() => (exporting = null));
      writeStatus();
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, opts.intervalMs);
      });
    }
  } finally {
    for (const [s, f] of handlers) process.off(s, f);
    detach.abort('stopped'); // however the loop ended
    // Every attachment detaches on that abort; wait for them all.
    await Promise.all([...active.values()].map((e) => e.done));
    await writer.close();
    // What the writer stored last is within the limits too.
    prune();
    await exporting;
    nextExport = 0;
    await exportDue(true).catch(() => undefined);
    store.endRun(runId, 0, null);
    status.state = 'stopped';
    writeStatus();
    store.close();
  }
  return 0;
}
