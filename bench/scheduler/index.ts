/**
 * The scheduler experiment: a multi-tier web application in overload, with
 * and without `--actor scheduler` (a thread's nice value follows the priority
 * of the record it holds).
 *
 *   loadgen (high, --priority 200)  \
 *                                    > front.py (pre-forked HTTP, 20 workers) -> PostgreSQL (one backend per worker)
 *   loadgen (low,  --priority 10)   /
 *
 * Four causeway runs, each its own CLI in a child process, so that records
 * cross between them only in the TCP header option over 127.0.0.1:
 *   PostgreSQL  `causeway run [--actor scheduler] -- runuser -u postgres -- postgres ...`
 *               (a cluster made once by initdb in a temporary directory)
 *   front       `causeway run [--actor scheduler] -- /usr/bin/python3 front.py ...`:
 *               a pre-forked HTTP server, each worker serving one connection at
 *               a time: PBKDF2 in the worker, then a generate_series aggregate
 *               through psycopg2 on the worker's own connection (TCP)
 *   low class   `causeway run --priority 10 -- loadgen ...`: a closed loop
 *   high class  `causeway run --priority 200 -- loadgen ...`: paced threads
 *               sending about a tenth of the requests
 * Clients open a new connection per request (Connection: close), so any
 * worker serves either class, and its backend follows it.
 *
 * Configurations, alternated in every round (the order rotates): without (the
 * server runs with no actor), with (`--actor scheduler` on the front's and
 * PostgreSQL's runs; CAUSEWAY_SCHED_ACTOR=SPEC substitutes another actor spec,
 * e.g. accountant, to try the harness), and in-app, a reference that is not
 * causeway: no actor, but front.py --renice sets the nice value of the worker
 * and its backend itself right after reading each request, from a header the
 * clients send, with the actor's default mapping. Loads, on the same servers of one
 * configuration: overload (both classes) and quiet (one high-priority client,
 * one request at a time: the scheduler's cost without contention). The high
 * class's rate is set once, from the capacity a calibration run measures.
 *
 * If `causeway run --actor SPEC` does not run at all (no such actor yet), the
 * with configuration is left out and the section says so.
 *
 * benchScheduler() returns the figures as JSON and a markdown section
 * (schedulerMarkdown() renders it again from the JSON);
 * `node dist/bench/scheduler/index.js [--quick] [--rounds N] [--json FILE]
 * [--configs without,with,in-app] [--workers N] [--lowThreads N] [--highThreads N] ...`
 * (any key of the shape) prints the markdown. Needs root. Everything it starts (runs, servers,
 * temporary directories) is gone when it returns or throws, also after
 * SIGINT, SIGTERM or SIGHUP.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { median, machine } from '../common';
import {
  freePort,
  guardSignals,
  interruptedBy,
  parseSummary,
  PgCluster,
  pollUntil,
  Proc,
  reap,
  RunSummary,
  signal,
  sleep,
  start,
  stopAll,
  tail,
} from '../servers';

const ROOT = path.join(__dirname, '..', '..', '..');
const SRC = path.join(ROOT, 'bench', 'scheduler');
const CLI = path.join(ROOT, 'bin', 'causeway.js');
const PYTHON = '/usr/bin/python3';

export const CONFIGS = ['without', 'with', 'in-app'] as const;
export type SchedConfig = (typeof CONFIGS)[number];
export const CLASSES = ['high', 'low'] as const;
export type ClassName = (typeof CLASSES)[number];
export const LOADS = ['overload', 'quiet'] as const;
export type Load = (typeof LOADS)[number];

/** The actor of the with configuration (CAUSEWAY_SCHED_ACTOR substitutes another spec). */
const SCHED_ACTOR = 'scheduler';

/** What benchScheduler() measures, and how long. */
export interface SchedulerOptions {
  /** 3 rounds of 10 s overload and 5 s quiet (otherwise 5 rounds of 15 s and 8 s). */
  quick: boolean;
  rounds?: number;
  /** Progress lines on stderr (default true). */
  progress?: boolean;
  /** Changes to the experiment's shape (front workers, client threads, priorities, per-request work). */
  shape?: Partial<Shape>;
  /** The configurations to measure (default all). */
  configs?: SchedConfig[];
}

/** The fixed shape of the experiment, and what calibration chose. */
export interface Setup {
  workers: number;
  /** PBKDF2-HMAC-SHA256 iterations per request, in the front worker. */
  iterations: number;
  /** The query's generate_series length. */
  series: number;
  query: string;
  lowThreads: number;
  highThreads: number;
  lowPriority: number;
  highPriority: number;
  /** The low class alone, closed loop, without the actor: requests/s (calibration). */
  capacity: number;
  /** The high class's share of the capacity it is paced to. */
  highShare: number;
  /** Each high thread sends one request per interval. */
  highIntervalMs: number;
  warmS: number;
  overloadS: number;
  quietS: number;
  pgVersion: string;
  pgSettings: string;
  python: string;
}

/** One client class in one measurement. */
export interface ClassFigures {
  requests: number;
  errors: number;
  /** How late its loadgen started against the common start time (ms). */
  lateMs: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

/** One measurement: one configuration, one load, one round. */
export interface Measurement {
  config: SchedConfig;
  load: Load;
  round: number;
  classes: Partial<Record<ClassName, ClassFigures>>;
  totalRps: number;
  /** Over the measured window, the share of all the machine's CPU time that was busy, and stolen by the hypervisor (/proc/stat). */
  busy: number;
  steal: number;
  /** Samples (every 50 ms) of front workers and PostgreSQL backends found running, by nice value. */
  nice: { front: Record<string, number>; backend: Record<string, number> };
  /** The causeway runs' summary lines, parsed. */
  runs: { front: RunSummary | null; pg: RunSummary | null; high: RunSummary | null; low: RunSummary | null };
  /** The scheduler's own line in the front's and PostgreSQL's runs (with only; per server lifetime). */
  sched?: { front: SchedLine | null; pg: SchedLine | null };
}

/** What `--actor scheduler` printed at the end of a run. */
export interface SchedLine {
  changes: number;
  renices: number;
  threads: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  measured: number;
}

function parseSchedLine(text: string): SchedLine | null {
  const m = /scheduler: (\d+) priority change\(s\), (\d+) renice\(s\) of (\d+) thread\(s\)(?:, in effect ([\d.]+) µs after the change \(p50; p99 ([\d.]+) µs, max ([\d.]+) µs, (\d+) measured\))?/.exec(text);
  if (!m) return null;
  return { changes: +m[1], renices: +m[2], threads: +m[3], p50Us: +(m[4] ?? NaN), p99Us: +(m[5] ?? NaN), maxUs: +(m[6] ?? NaN), measured: +(m[7] ?? 0) };
}

/** What BENCHMARKS.json keeps of the experiment. */
export interface SchedulerBench {
  machine: string;
  date: string;
  rounds: number;
  /** The actor spec of the with configuration, and whether it stood in for the scheduler. */
  actor: string;
  standIn: boolean;
  /** Why the with configuration was not measured: what `causeway run --actor SPEC -- true` said when it failed. */
  actorError?: string;
  setup: Setup;
  measurements: Measurement[];
}

/** The experiment's shape: the front's workers and work per request, the client classes. */
export type Shape = typeof SHAPE;
const SHAPE = { workers: 20, iterations: 2500, series: 16000, lowThreads: 16, highThreads: 3, lowPriority: 10, highPriority: 200, highShare: 0.1 };

/** The files and servers of one benchmark invocation. */
interface Env {
  dir: string;
  loadgen: string;
  pg: PgCluster;
  actor: string;
}

/** The servers of one configuration: PostgreSQL and the front, each in its causeway run. */
interface Servers {
  pg: Proc;
  front: Proc;
  pgLog: string;
  frontLog: string;
  frontPort: number;
  /** Front worker pids, and PostgreSQL backend pids. */
  workers: number[];
  backends: number[];
}

function cliRun(flags: string[], argv: string[]): string[] {
  return [process.execPath, CLI, 'run', ...flags, '--', ...argv];
}

/** The machine's CPU time so far (ms, all CPUs): busy (steal excluded), stolen by the hypervisor, and in all. */
function cpuTimes(): { busyMs: number; stealMs: number; totalMs: number } {
  // user nice system idle iowait irq softirq steal (guest time is inside user)
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const tick = 1000 / 100; // USER_HZ
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return { busyMs: (user + nice + system + irq + softirq) * tick, stealMs: (steal ?? 0) * tick, totalMs: (user + nice + system + idle + iowait + irq + softirq + (steal ?? 0)) * tick };
}

/** Pids whose parent is ppid (from /proc). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** State and nice value of a process's main thread; null once it is gone. */
function stateNice(pid: number): { state: string; nice: number } | null {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], nice: Number(f[16]) };
  } catch {
    return null;
  }
}

async function startServers(env: Env, config: SchedConfig, work: string, setup: Pick<Setup, 'workers' | 'iterations' | 'series'>): Promise<Servers> {
  const flags = config === 'with' ? ['--actor', env.actor] : [];
  const pgPort = await freePort();
  const pgLog = path.join(work, 'pg.log');
  const frontLog = path.join(work, 'front.log');
  let fd = fs.openSync(pgLog, 'w');
  const pg = start(cliRun(flags, env.pg.server(pgPort)), fd, fd, true);
  fs.closeSync(fd);
  await env.pg.ready(pg).catch((err) => {
    throw new Error(`${(err as Error).message}:\n${tail(pgLog)}`);
  });
  const frontPort = await freePort();
  const ready = path.join(work, 'front.ready');
  fd = fs.openSync(frontLog, 'w');
  const front = start(
    cliRun(flags, [PYTHON, path.join(SRC, 'front.py'), '--port', String(frontPort), '--pg-port', String(pgPort), '--workers', String(setup.workers),
      '--iterations', String(setup.iterations), '--series', String(setup.series), '--ready', ready, ...(config === 'in-app' ? ['--renice'] : [])]),
    fd, fd, true,
  );
  fs.closeSync(fd);
  await pollUntil('the front', front, () => fs.existsSync(ready)).catch((err) => {
    throw new Error(`${(err as Error).message}:\n${tail(frontLog)}`);
  });
  const workers = fs.readFileSync(ready, 'utf8').trim().split('\n').map(Number);
  const backends = childrenOf(env.pg.postmaster()).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('127.0.0.1');
    } catch {
      return false;
    }
  });
  return { pg, front, pgLog, frontLog, frontPort, workers, backends };
}

/** Stops the front, then PostgreSQL; returns their runs' summaries. */
async function stopServers(env: Env, s: Servers): Promise<{ front: RunSummary | null; pg: RunSummary | null; sched: { front: SchedLine | null; pg: SchedLine | null } }> {
  signal(s.front.pid, 'SIGTERM'); // the CLI forwards it to front.py, which stops its workers
  const fst = await reap(s.front, 15000);
  env.pg.stop(s.pg);
  const pst = await reap(s.pg, 30000);
  if (fst !== 0) throw new Error(`the front's run exited with ${fst}:\n${tail(s.frontLog)}`);
  if (pst !== 0) throw new Error(`PostgreSQL's run exited with ${pst}:\n${tail(s.pgLog)}`);
  const [front, pg] = [fs.readFileSync(s.frontLog, 'utf8'), fs.readFileSync(s.pgLog, 'utf8')];
  return { front: parseSummary(front), pg: parseSummary(pg), sched: { front: parseSchedLine(front), pg: parseSchedLine(pg) } };
}

/** One class's loadgen, as it is to be run. */
interface ClassLoad {
  name: ClassName;
  priority: number;
  threads: number;
  intervalMs: number;
}

/** Nearest-rank percentile of sorted xs. */
function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function readLoad(file: string, seconds: number): ClassFigures {
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  const m = /^requests (\d+) errors (\d+) late_ms (-?\d+)$/.exec(lines[0] ?? '');
  if (!m) throw new Error(`loadgen wrote no totals in ${file}`);
  const lat = lines.slice(1).map(Number).sort((a, b) => a - b);
  return { requests: +m[1], errors: +m[2], lateMs: +m[3], rps: +m[1] / seconds, p50Ms: percentile(lat, 50) / 1000, p99Ms: percentile(lat, 99) / 1000 };
}

/**
 * Runs the given classes against the front, each loadgen in its own causeway
 * run with its --priority, all starting together; samples the machine's CPU
 * and the nice values of running workers and backends over the measured window.
 */
async function drive(env: Env, s: Servers, work: string, classes: ClassLoad[], warmS: number, seconds: number, tag: string) {
  // The loadgens wait for this moment, so that two runs started one after the other begin together.
  const t0 = Date.now() + 2000;
  const procs = classes.map((c) => {
    const out = path.join(work, `${tag}-${c.name}.lat`);
    const err = path.join(work, `${tag}-${c.name}.err`);
    const fd = fs.openSync(err, 'w');
    const p = start(
      cliRun(['--priority', String(c.priority)], [env.loadgen, String(s.frontPort), String(c.threads), String(c.intervalMs), String(t0), String(warmS * 1000), String(seconds * 1000), out, String(c.priority)]),
      'ignore', fd, true,
    );
    fs.closeSync(fd);
    return { c, p, out, err };
  });
  const nice = { front: {} as Record<string, number>, backend: {} as Record<string, number> };
  let cpu0 = cpuTimes();
  let cpu1 = cpu0;
  let sampling = true;
  const sampler = (async () => {
    await sleep(Math.max(0, t0 + warmS * 1000 - Date.now()));
    cpu0 = cpuTimes();
    const end = Date.now() + seconds * 1000;
    while (sampling && Date.now() < end) {
      for (const [tier, pids] of [['front', s.workers], ['backend', s.backends]] as const)
        for (const pid of pids) {
          const sn = stateNice(pid);
          if (sn?.state === 'R') nice[tier][sn.nice] = (nice[tier][sn.nice] ?? 0) + 1;
        }
      await sleep(50);
    }
    cpu1 = cpuTimes();
  })();
  const budget = (t0 - Date.now()) + (warmS + seconds) * 1000 + 60000;
  const statuses = await Promise.all(procs.map((x) => reap(x.p, budget)));
  sampling = false;
  await sampler;
  const sig = interruptedBy();
  if (sig) throw new Error(`interrupted by ${sig}`);
  const all = cpu1.totalMs - cpu0.totalMs;
  const [busy, steal] = [(cpu1.busyMs - cpu0.busyMs) / all, (cpu1.stealMs - cpu0.stealMs) / all];
  const figures: Partial<Record<ClassName, ClassFigures>> = {};
  const runs: Partial<Record<ClassName, RunSummary | null>> = {};
  procs.forEach(({ c, out, err }, i) => {
    if (statuses[i] !== 0) throw new Error(`the ${c.name} class's loadgen run exited with ${statuses[i]}:\n${tail(err)}`);
    figures[c.name] = readLoad(out, seconds);
    runs[c.name] = parseSummary(fs.readFileSync(err, 'utf8'));
    if (figures[c.name]!.lateMs > 1000) throw new Error(`the ${c.name} class's loadgen started ${figures[c.name]!.lateMs} ms late`);
  });
  return { figures, runs, busy, steal, nice };
}

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');

/** Runs the experiment; see the file's comment. */
export async function benchScheduler(opts: SchedulerOptions): Promise<{ json: SchedulerBench; md: string }> {
  if (process.geteuid?.() !== 0) throw new Error('the scheduler experiment runs causeway and PostgreSQL as another user: it needs root');
  if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/setup.sh (Debian package python3)`);
  try {
    execFileSync(PYTHON, ['-c', 'import psycopg2'], { stdio: 'ignore' });
  } catch {
    throw new Error('psycopg2 is missing for /usr/bin/python3: run scripts/setup.sh (Debian package python3-psycopg2)');
  }
  const rounds = opts.rounds ?? (opts.quick ? 3 : 5);
  const [warmS, overloadS, quietS] = opts.quick ? [2, 10, 5] : [3, 15, 8];
  const progress = opts.progress ?? true;
  const say = (s: string) => progress && process.stderr.write(`scheduler: ${s}\n`);
  const actor = process.env.CAUSEWAY_SCHED_ACTOR || SCHED_ACTOR;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-sched-'));
  const shape: Shape = { ...SHAPE, ...opts.shape };
  const pg = new PgCluster({ max_connections: String(shape.workers + 10), jit: 'off', max_parallel_workers_per_gather: '0' });
  const env: Env = { dir, loadgen: path.join(dir, 'loadgen'), pg, actor };
  const unguard = guardSignals('scheduler');
  const measurements: Measurement[] = [];
  let setup: Setup;
  let configs = CONFIGS.filter((c) => !opts.configs || opts.configs.includes(c));
  let actorError: string | undefined;
  try {
    // Whether the actor loads at all: if not, the with configuration is left out and the section says why.
    if (configs.includes('with')) {
      try {
        execFileSync(process.execPath, [CLI, 'run', '-q', '--actor', actor, '--', 'true'], { stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (err) {
        actorError = ((err as { stderr?: Buffer }).stderr?.toString() || (err as Error).message).trim().split('\n').slice(0, 3).join(' ');
        configs = configs.filter((c) => c !== 'with');
        say(`--actor ${actor} does not run (${actorError}): the with configuration is left out`);
      }
    }
    execFileSync('cc', ['-O2', '-pthread', '-o', env.loadgen, path.join(SRC, 'loadgen.c')]);
    pg.init();
    const python = execFileSync(PYTHON, ['--version'], { encoding: 'utf8' }).trim();
    // Calibration: the low class alone, without the actor; the high class is then paced at a share of that capacity.
    say('calibrating: the low class alone, without the actor');
    const cal = await withServers(env, 'without', 'calibration', shape, async (s, work) =>
      drive(env, s, work, [{ name: 'low', priority: shape.lowPriority, threads: shape.lowThreads, intervalMs: 0 }], 2, 4, 'cal'),
    );
    const capacity = cal.result.figures.low!.rps;
    const highIntervalMs = Math.max(1, Math.round((shape.highThreads * 1000) / (shape.highShare * capacity)));
    setup = {
      ...shape,
      query: `SELECT sum(i % 7) FROM generate_series(1, ${shape.series}) i`,
      capacity,
      highIntervalMs,
      warmS,
      overloadS,
      quietS,
      pgVersion: pg.version.replace(/^postgres \(PostgreSQL\) /, ''),
      pgSettings: pg.describeSettings(),
      python,
    };
    say(`capacity ${capacity.toFixed(0)} requests/s: ${shape.highThreads} high-priority threads, one request every ${highIntervalMs} ms each; actor for "with": ${actor}`);
    const low: ClassLoad = { name: 'low', priority: shape.lowPriority, threads: shape.lowThreads, intervalMs: 0 };
    const high: ClassLoad = { name: 'high', priority: shape.highPriority, threads: shape.highThreads, intervalMs: highIntervalMs };
    const quiet: ClassLoad = { name: 'high', priority: shape.highPriority, threads: 1, intervalMs: 0 };
    for (let r = 0; r < rounds; r++) {
      const order = configs.map((_, i) => configs[(i + r) % configs.length]);
      for (const config of order) {
        const res = await withServers(env, config, `r${r}`, setup, async (s, work) => ({
          overload: await drive(env, s, work, [high, low], warmS, overloadS, 'overload'),
          quiet: await drive(env, s, work, [quiet], 1, quietS, 'quiet'),
        }));
        for (const load of LOADS) {
          const d = res.result[load];
          const m: Measurement = {
            config,
            load,
            round: r,
            classes: d.figures,
            totalRps: Object.values(d.figures).reduce((n, f) => n + f.rps, 0),
            busy: d.busy,
            steal: d.steal,
            nice: d.nice,
            runs: { front: res.runs.front, pg: res.runs.pg, high: d.runs.high ?? null, low: d.runs.low ?? null },
            ...(config === 'with' ? { sched: res.runs.sched } : {}),
          };
          measurements.push(m);
          say(`round ${r + 1}/${rounds}, ${config}, ${load}: ${progressLine(m)}`);
        }
      }
    }
  } finally {
    await stopAll();
    await pg.cleanup().catch((err) => process.stderr.write(`scheduler: cleanup of PostgreSQL: ${(err as Error).message}\n`));
    unguard();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const sig = interruptedBy();
  if (sig) throw new Error(`interrupted by ${sig}`);
  const json: SchedulerBench = { machine: machine(), date: new Date().toISOString().slice(0, 10), rounds, actor, standIn: actor !== SCHED_ACTOR, actorError, setup, measurements };
  return { json, md: schedulerMarkdown(json) };
}

/** Starts the servers of one configuration, runs f, stops them (also when f throws); f's result and the servers' run summaries. */
async function withServers<T>(env: Env, config: SchedConfig, tag: string, setup: Pick<Setup, 'workers' | 'iterations' | 'series'>, f: (s: Servers, work: string) => Promise<T>) {
  const work = fs.mkdtempSync(path.join(env.dir, `${tag}-${config}-`));
  try {
    const s = await startServers(env, config, work, setup);
    let result: T;
    try {
      result = await f(s, work);
    } catch (err) {
      await stopServers(env, s).catch(() => undefined);
      throw err;
    }
    const runs = await stopServers(env, s);
    return { result, runs };
  } finally {
    await stopAll(); // whatever a failed start left
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function progressLine(m: Measurement): string {
  const cls = CLASSES.filter((c) => m.classes[c]).map((c) => {
    const f = m.classes[c]!;
    return `${c} ${fmt(f.rps)} req/s p50 ${fmt(f.p50Ms)} ms p99 ${fmt(f.p99Ms)} ms${f.errors ? ` (${f.errors} errors)` : ''}`;
  });
  const nice = (h: Record<string, number>) => Object.entries(h).sort((a, b) => +a[0] - +b[0]).map(([n, k]) => `${n}:${k}`).join(' ') || '-';
  return `${cls.join('; ')}; busy ${fmt(m.busy * 100, 0)}%, steal ${fmt(m.steal * 100, 0)}%; running at nice front ${nice(m.nice.front)}, backends ${nice(m.nice.backend)}`;
}

/** min, median, max. */
function stats(xs: number[]) {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/**
 * Whether xs (with) differs from base (without) beyond the spread: only when
 * the two min-max ranges do not overlap; lower is better for latencies.
 */
function change(base: number[], xs: number[], what: 'latency' | 'rate'): string {
  if (base.length < 2 || xs.length < 2) return 'not resolvable here';
  const r = median(xs) / median(base);
  if (Math.max(...xs) < Math.min(...base)) return what === 'latency' ? `lower (${fmt(1 / r, 2)}x)` : `lower (${fmt((1 - r) * 100)}% lost)`;
  if (Math.min(...xs) > Math.max(...base)) return what === 'latency' ? `higher (${fmt(r, 2)}x)` : `higher (+${fmt((r - 1) * 100)}%)`;
  return 'not resolvable here';
}

/** The markdown section, from the JSON alone (so that --from-json follows changes to the text). */
export function schedulerMarkdown(j: SchedulerBench): string {
  const st = j.setup;
  const of = (config: SchedConfig, load: Load) => j.measurements.filter((m) => m.config === config && m.load === load);
  const cls = (config: SchedConfig, load: Load, c: ClassName, k: keyof ClassFigures) => of(config, load).map((m) => m.classes[c]?.[k] ?? NaN);
  const total = (config: SchedConfig) => of(config, 'overload').map((m) => m.totalRps);
  const cell = (xs: number[], d = 1) => {
    const s = stats(xs);
    return `${fmt(s.median, d)} (${fmt(s.min, d)}-${fmt(s.max, d)})`;
  };
  const actorText = j.actorError
    ? ' (NOT measured: the actor did not run, see below)'
    : j.standIn
      ? ` (\`${j.actor}\` stood in for the scheduler through CAUSEWAY_SCHED_ACTOR: these figures do NOT measure the scheduler)`
      : '';
  const lines: string[] = [
    '## Scheduler: a multi-tier application in overload',
    '',
    `Written on ${j.date}: ${j.machine}.`,
    '',
    `- PostgreSQL ${st.pgVersion}, initdb once in a temporary directory, run as postgres (\`runuser -u postgres\`) on 127.0.0.1 at a free port`,
    `  (${st.pgSettings}), in its own causeway run.`,
    `- The front: ${st.python} (\`/usr/bin/python3 bench/scheduler/front.py\`), a pre-forked HTTP server in its own causeway run:`,
    `  ${st.workers} worker processes accept() on one listening socket on 127.0.0.1, each serving one connection at a time (as many`,
    `  workers as the clients have connections and more, so that no request waits in the accept queue, which is FIFO whatever its priority):`,
    `  ${st.iterations} iterations of PBKDF2-HMAC-SHA256 in the worker, then \`${st.query}\` through psycopg2 on the worker's`,
    '  own persistent connection (TCP, 127.0.0.1), then the reply; the connection is closed.',
    `- The clients (bench/scheduler/loadgen.c, C threads): a new connection per request (Connection: close), so any worker serves`,
    '  either class and its backend follows it. Each class is its own causeway run, so its record crosses to the front, and from',
    '  there to PostgreSQL, only in the TCP header option:',
    `  low class \`causeway run --priority ${st.lowPriority}\`, ${st.lowThreads} threads in a closed loop; high class \`causeway run --priority ${st.highPriority}\`,`,
    `  ${st.highThreads} threads each sending one request every ${st.highIntervalMs} ms (a thread that is behind sends at once), paced at`,
    `  ${fmt(st.highShare * 100, 0)}% of the ${fmt(st.capacity, 0)} requests/s the low class alone reached in a calibration run without the actor.`,
    `  Both start at one agreed moment; after ${st.warmS} s of warm-up, requests that complete in the next ${st.overloadS} s are measured`,
    '  (latency: from the request\'s connect to the end of its reply).',
    `- Configurations: without (the front's and PostgreSQL's runs with no actor) and with (\`--actor ${j.actor}\` on both of`,
    `  those runs)${actorText}; the clients' runs are the same in all. For reference, in-app, which is not causeway: no actor, but`,
    '  `front.py --renice`: each worker sets its own nice value and its backend\'s right after reading a request, from an',
    '  X-Priority header the clients send (the same priorities, the actor\'s default mapping: p > 0 -> round(19 - 39 * (p - 1) / 254),',
    '  so 200 -> -12 and 10 -> 18): what an immediate renice, knowing the class at the read, achieves here.',
    `  The servers are started anew for each configuration; ${j.rounds} rounds, the configurations alternated, the order rotating each round.`,
    `- No contention: on the same servers right after the overload, one high-priority client (\`--priority ${st.highPriority}\`, one thread,`,
    `  one request at a time) for ${st.quietS} s after 1 s of warm-up.`,
    '',
    'Each figure is the median of the rounds, with the min-max range in parentheses. A change is named only where the ranges',
    'without and the other configuration do not overlap; otherwise it is not resolvable here. "busy" and "steal" are the shares',
    'of all the machine\'s CPU time, over the measured window, that were busy and that the hypervisor took (/proc/stat).',
    '"running at nice" counts 50 ms samples of front workers and PostgreSQL backends found running or runnable (state R), by',
    'their nice value, over all rounds.',
    '',
    '| load | class | configuration | requests/s | p50 (ms) | p99 (ms) | errors |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const load of LOADS)
    for (const c of CLASSES)
      for (const config of CONFIGS) {
        if (!of(config, load).some((m) => m.classes[c])) continue;
        const errs = cls(config, load, c, 'errors').reduce((a, b) => a + b, 0);
        lines.push(
          `| ${load === 'overload' ? 'overload' : 'no contention'} | ${c} (priority ${c === 'high' ? st.highPriority : st.lowPriority}) | ${config} | ` +
            `${cell(cls(config, load, c, 'rps'))} | ${cell(cls(config, load, c, 'p50Ms'), 2)} | ${cell(cls(config, load, c, 'p99Ms'), 2)} | ${errs} |`,
        );
      }
  lines.push('', '| configuration | total requests/s (overload) | high class share | busy (overload) | steal (overload) | running at nice: front workers | running at nice: backends |', '|---|---|---|---|---|---|---|');
  const niceCell = (ms: Measurement[], tier: 'front' | 'backend') => {
    const h: Record<string, number> = {};
    for (const m of ms) for (const [n, k] of Object.entries(m.nice[tier])) h[n] = (h[n] ?? 0) + k;
    const sum = Object.values(h).reduce((a, b) => a + b, 0);
    return sum ? Object.entries(h).sort((a, b) => +a[0] - +b[0]).map(([n, k]) => `${n}: ${fmt((k / sum) * 100, 0)}%`).join(', ') : '-';
  };
  for (const config of CONFIGS) {
    const ms = of(config, 'overload');
    if (!ms.length) continue;
    lines.push(
      `| ${config} | ${cell(total(config), 0)} | ${cell(ms.map((m) => ((m.classes.high?.rps ?? 0) / m.totalRps) * 100), 1)}% | ${cell(ms.map((m) => m.busy * 100), 0)}% | ${cell(ms.map((m) => (m.steal ?? 0) * 100), 0)}% | ` +
        `${niceCell(ms, 'front')} | ${niceCell(ms, 'backend')} |`,
    );
  }
  // The runs: the record crossing in the TCP option, drops, and what the actor was given.
  const runLine = (config: SchedConfig) => {
    const ms = of(config, 'overload');
    const med = (f: (m: Measurement) => number) => fmt(median(ms.map(f)), 0);
    const cnt = (s: RunSummary | null, k: string) => s?.counters[k] ?? 0;
    const drops: Record<string, number> = {};
    for (const m of ms)
      for (const s of [m.runs.front, m.runs.pg, m.runs.high, m.runs.low]) {
        if (!s) continue;
        for (const [k, v] of Object.entries(s.drops)) drops[k] = (drops[k] ?? 0) + v;
        for (const [a, x] of Object.entries(s.actors)) {
          if (x.dropped) drops[`actor ${a} dropped`] = (drops[`actor ${a} dropped`] ?? 0) + x.dropped;
          if (x.errors) drops[`actor ${a} hook failures`] = (drops[`actor ${a} hook failures`] ?? 0) + x.errors;
        }
      }
    const delivered = (s: RunSummary | null) => Object.values(s?.actors ?? {}).reduce((n, x) => n + x.delivered, 0);
    const crossed = ms.every((m) => cnt(m.runs.high, 'tcpOptionsWritten') > 0 && cnt(m.runs.low, 'tcpOptionsWritten') > 0 && cnt(m.runs.front, 'tcpOptionsReceived') > 0 && cnt(m.runs.pg, 'tcpOptionsReceived') > 0);
    return (
      `- ${config}: TCP options written by the clients' runs ${med((m) => cnt(m.runs.high, 'tcpOptionsWritten'))} (high) and ${med((m) => cnt(m.runs.low, 'tcpOptionsWritten'))} (low), ` +
      `received by the front's run ${med((m) => cnt(m.runs.front, 'tcpOptionsReceived'))} and PostgreSQL's ${med((m) => cnt(m.runs.pg, 'tcpOptionsReceived'))} (medians per server lifetime, ` +
      `which includes the no-contention load); ${crossed ? 'the record crossed in the option into both server runs in every round' : 'NOT seen crossing into both server runs in every round'}` +
      (config === 'with' ? `; events delivered to the actor per server lifetime: front ${med((m) => delivered(m.runs.front))}, PostgreSQL ${med((m) => delivered(m.runs.pg))}` : '') +
      `; ${Object.keys(drops).length ? `drops over all rounds: ${Object.entries(drops).map(([k, n]) => `${k}=${n}`).join(' ')}` : 'nothing dropped'}.`
    );
  };
  const present = CONFIGS.filter((c) => of(c, 'overload').length);
  lines.push('', ...present.map(runLine));
  // The reactor's latency, as the actor measured it in the servers' runs (overload and quiet, per server lifetime).
  const withMs = of('with', 'overload').filter((m) => m.sched);
  if (withMs.length) {
    const tier = (k: 'front' | 'pg', name: string) => {
      const xs = withMs.map((m) => m.sched![k]).filter((x): x is SchedLine => x !== null);
      if (!xs.length) return `${name}: no scheduler line`;
      const c = (f: (x: SchedLine) => number, d = 0) => `${fmt(median(xs.map(f)), d)} (${fmt(Math.min(...xs.map(f)), d)}-${fmt(Math.max(...xs.map(f)), d)})`;
      return `${name} ${c((x) => x.renices)} renices, in effect ${c((x) => x.p50Us)} µs after the kernel's report at the median, ${c((x) => x.p99Us)} µs at p99, at most ${c((x) => x.maxUs)} µs`;
    };
    lines.push(`- The scheduler's reactor, as the actor measured it in each server run (its lifetime: overload and no contention; medians of the rounds, ranges): ${tier('front', 'front')}; ${tier('pg', 'PostgreSQL')}.`);
  }
  lines.push('', '### Against the targets', '');
  // High-priority p99 at least 3 times lower: met only if the worst round of the configuration meets it against the best round without.
  const p99Line = (config: SchedConfig, judge: boolean) => {
    const pw = cls('without', 'overload', 'high', 'p99Ms');
    const pm = cls(config, 'overload', 'high', 'p99Ms');
    const v = Math.max(...pm) * 3 <= Math.min(...pw) ? 'met' : Math.min(...pm) * 3 > Math.max(...pw) ? 'NOT met' : 'not resolvable here';
    return (
      `${cell(pw, 2)} ms without, ${cell(pm, 2)} ms ${config}: ${fmt(median(pw) / median(pm), 2)}x lower ` +
      `(rounds: ${fmt(Math.min(...pw) / Math.max(...pm), 2)}x to ${fmt(Math.max(...pw) / Math.min(...pm), 2)}x)${judge ? `; target at least 3x: ${v}` : ''}`
    );
  };
  // Total throughput within 10%: met only if the worst round with loses at most 10% against the best without.
  const totalLine = (config: SchedConfig, judge: boolean) => {
    const tw = total('without');
    const tm = total(config);
    const lossLo = 1 - Math.max(...tm) / Math.min(...tw);
    const lossHi = 1 - Math.min(...tm) / Math.max(...tw);
    const v = lossHi <= 0.1 ? 'met' : lossLo > 0.1 ? 'NOT met' : 'not resolvable here';
    return (
      `${cell(tw, 0)} requests/s without, ${cell(tm, 0)} ${config}, ${fmt((1 - median(tm) / median(tw)) * 100)}% lost ` +
      `(rounds: ${fmt(lossLo * 100)}% to ${fmt(lossHi * 100)}%)${judge ? `; target within 10%: ${v}` : ''}`
    );
  };
  const changes = (config: SchedConfig) => {
    const out: string[] = [];
    for (const c of CLASSES)
      for (const [k, label, what] of [['rps', 'requests/s', 'rate'], ['p50Ms', 'p50', 'latency'], ['p99Ms', 'p99', 'latency']] as const)
        out.push(`${c} ${label} ${change(cls('without', 'overload', c, k), cls(config, 'overload', c, k), what)}`);
    return out.join('; ');
  };
  if (present.includes('without') && present.includes('with')) {
    lines.push(
      `- High-priority p99 under overload: ${p99Line('with', true)}.`,
      `- Total throughput under overload: ${totalLine('with', true)}.`,
      `- With against without, under overload, named only outside the spread: ${changes('with')}.`,
    );
    const qw = (k: keyof ClassFigures) => cls('without', 'quiet', 'high', k);
    const qm = (k: keyof ClassFigures) => cls('with', 'quiet', 'high', k);
    lines.push(
      `- The scheduler's cost with no contention (one client, one request at a time): p50 ${cell(qw('p50Ms'), 2)} ms without, ${cell(qm('p50Ms'), 2)} with ` +
        `(${change(qw('p50Ms'), qm('p50Ms'), 'latency')}); p99 ${cell(qw('p99Ms'), 2)} ms without, ${cell(qm('p99Ms'), 2)} with (${change(qw('p99Ms'), qm('p99Ms'), 'latency')}); ` +
        `requests/s ${cell(qw('rps'))} without, ${cell(qm('rps'))} with (${change(qw('rps'), qm('rps'), 'rate')}).`,
    );
  }
  if (present.includes('without') && present.includes('in-app'))
    lines.push(
      `- For reference, the in-app renice (not causeway): high-priority p99 ${p99Line('in-app', false)}; total throughput ${totalLine('in-app', false)}; ` +
        `named only outside the spread: ${changes('in-app')}.`,
    );
  if (j.actorError)
    lines.push(`- NOT measured with the actor: \`causeway run --actor ${j.actor}\` did not run here (${j.actorError}), so the with configuration was left out and no target is judged.`);
  if (j.standIn) lines.push(`- The "with" configuration ran \`--actor ${j.actor}\` in place of the scheduler: no figure here is the scheduler's.`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const val = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const shape: Partial<Shape> = {};
  for (const k of Object.keys(SHAPE) as (keyof Shape)[]) {
    const v = val(`--${k}`);
    if (v !== undefined) shape[k] = Number(v);
  }
  const configs = val('--configs')?.split(',') as SchedConfig[] | undefined;
  for (const c of configs ?? []) if (!CONFIGS.includes(c)) throw new Error(`--configs takes ${CONFIGS.join(', ')}, not ${c}`);
  const res = await benchScheduler({ quick: argv.includes('--quick'), rounds: val('--rounds') ? Number(val('--rounds')) : undefined, shape, configs });
  const jsonFile = val('--json');
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(res.json, null, 2) + '\n');
  process.stdout.write(res.md + '\n');
}

if (require.main === module)
  main().catch((err) => {
    process.stderr.write(`bench scheduler: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
