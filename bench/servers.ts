/**
 * Real, unmodified servers driven by their own load generators (issue 9):
 *   redis       redis-benchmark -t get,set -c 8 against redis-server on
 *               loopback TCP (a free port, no persistence, its own
 *               temporary directory)
 *   pgbench     pgbench -S -c 4 (select-only) against PostgreSQL, initialised
 *               once by initdb in a temporary directory and run as the
 *               postgres user (runuser), on 127.0.0.1 at a free port with its
 *               UNIX socket in that directory; the client uses TCP
 * Configurations, alternated over rounds (the order rotates each round):
 *   baseline     no BPF program loaded
 *   floor        the shim's hooks with programs that return at once
 *   outside      the shim loaded for another run's cgroup; server and client outside it
 *   propagation  `causeway run --no-sample`
 *   events       `causeway run -e FILE`
 *   trace        `causeway trace --db FILE`
 * Topologies:
 *   separate     the server in one causeway run, the client in another: each
 *                run has its own shim and maps, so a record crosses from one
 *                to the other only in the TCP header option
 *   one          one causeway run starts both (a shell script: the server in
 *                the background, the client once the server is ready, then
 *                the server stopped)
 * In baseline, floor and outside the same processes run with no causeway run.
 * Every causeway run is the CLI (bin/causeway.js) in a child process; the
 * summary line it prints on stderr at the end is parsed and kept (TCP option
 * counters, drops, events, events stored).
 *
 * benchServers() returns the figures as JSON and a markdown section;
 * `node dist/bench/servers.js [--quick] [--rounds N] [--only redis|pgbench] [--json FILE]`
 * prints the markdown. Needs root. Everything it starts (servers, runs,
 * temporary directories) is gone when it returns or throws, also after
 * SIGINT, SIGTERM or SIGHUP.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { median, machine, verdict, withFloor, withOutsideRun } from './common';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'causeway.js');

export const CONFIGS = ['baseline', 'floor', 'outside', 'propagation', 'events', 'trace', 'trace-sampled'] as const;
export type ServerConfig = (typeof CONFIGS)[number];
/** The configurations that run the causeway CLI. */
const CLI_CONFIGS: ReadonlySet<ServerConfig> = new Set(['propagation', 'events', 'trace', 'trace-sampled']);
/** The rate of `trace --sample` in the trace-sampled configuration. */
const SAMPLE_RATE = 0.1;
export const TOPOLOGIES = ['separate', 'one'] as const;
export type Topology = (typeof TOPOLOGIES)[number];
export const WORKLOADS = ['redis', 'pgbench'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export interface ServersOptions {
  /** 3 rounds (5 otherwise); ~2.5 s per measurement at the baseline's rate (~3 s otherwise). */
  quick: boolean;
  rounds?: number;
  /** Which workloads (default both). */
  only?: WorkloadName[];
  /** Progress lines on stderr (default true). */
  progress?: boolean;
}

/** What one causeway run printed at its end (stderr), parsed. */
export interface RunSummary {
  events: number;
  sends: number;
  recvs: number;
  /** Drop counters that were not zero, by name. */
  drops: Record<string, number>;
  /** The other counters the line shows (tcpOptionsWritten, tcpOptionsReceived, ...); absent ones are 0. */
  counters: Record<string, number>;
  /** Actor deliveries and losses (the tracer, under causeway trace). */
  actors: Record<string, { delivered: number; dropped: number; errors: number }>;
  killedLeftovers: number;
  /** causeway trace: events stored, and events it failed to store. */
  stored?: number;
  storeFailed?: number;
}

/** Parses the last causeway summary line (and the tracer's line) in a run's stderr; null if there is none. */
export function parseSummary(text: string): RunSummary | null {
  const lines = text.split('\n');
  const re = /^causeway: (\d+) events, (\d+) sends and (\d+) receives carried records, (.*)$/;
  let m: RegExpExecArray | null = null;
  for (const l of lines) m = re.exec(l) ?? m;
  if (!m) return null;
  const s: RunSummary = { events: +m[1], sends: +m[2], recvs: +m[3], drops: {}, counters: {}, actors: {}, killedLeftovers: 0 };
  const [head, ...rest] = m[4].split('; ');
  if (head.startsWith('DROPS:')) for (const [, k, v] of head.matchAll(/(\w+)=(\d+)/g)) s.drops[k] = +v;
  for (const part of rest) {
    const actor = /^actor (\S+): (\d+) delivered(?:, DROPPED (\d+))?(?:, (\d+) hook failure)?/.exec(part);
    const killed = /^killed (\d+) leftover/.exec(part);
    if (actor) s.actors[actor[1]] = { delivered: +actor[2], dropped: +(actor[3] ?? 0), errors: +(actor[4] ?? 0) };
    else if (killed) s.killedLeftovers = +killed[1];
    else for (const [, k, v] of part.matchAll(/(\w+)=(\d+)/g)) s.counters[k] = +v;
  }
  for (const l of lines) {
    const t = /^causeway: tracer stored (\d+) events(?:.*?; FAILED to store (\d+))?/.exec(l);
    if (t) {
      s.stored = +t[1];
      s.storeFailed = +(t[2] ?? 0);
    }
  }
  return s;
}

/** One measurement: the client's figures and the runs' summaries. */
interface Measurement {
  workload: WorkloadName;
  topology: Topology;
  config: ServerConfig;
  round: number;
  /** Per metric (SET and GET, or tps). */
  values: Record<string, number>;
  /** separate: the server's and the client's run; one: the one run. Absent without causeway. */
  runs: { server?: RunSummary; client?: RunSummary; one?: RunSummary };
  /** The whole machine's CPU over the client's run (every process, causeway's too, and the kernel), and the requests it served. */
  cpu: { busyMs: number; kernelMs: number; requests: number };
}

/** Busy and kernel (system, irq, softirq) CPU time of the whole machine so far, in ms, from /proc/stat. */
export function machineCpu(): { busyMs: number; kernelMs: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is inside user)
  const [user, nice, system, , , irq, softirq, steal] = f;
  const tick = 1000 / 100; // USER_HZ
  return { busyMs: (user + nice + system + irq + softirq + (steal ?? 0)) * tick, kernelMs: (system + irq + softirq) * tick };
}

/** A process this module started, and how to stop it. */
export interface Proc {
  child: ChildProcess;
  pid: number;
  /** A causeway CLI (stop it with SIGTERM: it forwards the signal and removes its cgroup). */
  cli: boolean;
  /** Resolves with the shell-style status once it has exited. */
  exited: Promise<number>;
  done: boolean;
  status: number | null;
}

const live = new Set<Proc>();
/** Set by a signal: every measurement fails from then on. */
let interrupted: NodeJS.Signals | null = null;
/** The data directory of the PostgreSQL server, while one may be running (for a signal). */
let pgData: string | null = null;

/** Starts argv in its own process group, kept in the set stopAll() and the signal guard stop; cli: a causeway CLI. */
export function start(argv: string[], stdout: number | 'ignore', stderr: number | 'ignore', cli: boolean): Proc {
  if (interrupted) throw new Error(`interrupted by ${interrupted}`);
  // Own process group: a terminal's Ctrl-C reaches this process only, which stops the rest in order.
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', stdout, stderr], detached: true });
  if (child.pid === undefined) throw new Error(`could not start ${argv[0]}`);
  const p: Proc = { child, pid: child.pid, cli, done: false, status: null, exited: Promise.resolve(0) };
  p.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      p.done = true;
      p.status = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
      live.delete(p);
      resolve(p.status);
    });
    child.on('error', () => {
      p.done = true;
      p.status = 127;
      live.delete(p);
      resolve(127);
    });
  });
  live.add(p);
  return p;
}

/** process.kill that ignores a process already gone. */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/**
 * While a benchmark runs: SIGINT, SIGTERM or SIGHUP stops every process start()
 * started (and the postmaster of a PgCluster) and makes every later start() and
 * pollUntil() throw; an exit kills what is left. Returns the function that
 * removes these handlers (call it after cleaning up).
 */
export function guardSignals(who: string): () => void {
  interrupted = null;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    process.stderr.write(`${who}: ${sig}: stopping\n`);
    for (const p of live) signal(p.cli ? p.pid : -p.pid, 'SIGTERM');
    if (pgData) signal(postmasterPid(pgData), 'SIGINT');
  };
  const onExit = () => {
    for (const p of live) signal(-p.pid, 'SIGKILL');
    if (pgData) signal(postmasterPid(pgData), 'SIGKILL');
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
  process.on('exit', onExit);
  return () => {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(sig, onSignal);
    process.off('exit', onExit);
  };
}

/** The signal guardSignals() caught, if one came. */
export function interruptedBy(): NodeJS.Signals | null {
  return interrupted;
}

/** Stops every process start() started that is still running: SIGTERM (a causeway CLI forwards it), then SIGKILL to its group after timeoutMs. */
export async function stopAll(timeoutMs = 15000): Promise<void> {
  for (const p of [...live]) {
    signal(p.cli ? p.pid : -p.pid, 'SIGTERM');
    await reap(p, timeoutMs);
  }
}

/** The postmaster's pid, from its pid file; 0 if there is none. */
function postmasterPid(data: string): number {
  try {
    return Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]) || 0;
  } catch {
    return 0;
  }
}

/** Waits until p has exited; SIGKILLs its process group (and a postmaster left behind) after timeoutMs. */
export async function reap(p: Proc, timeoutMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), timeoutMs)));
  const st = await Promise.race([p.exited, late]);
  clearTimeout(timer);
  if (st !== null) return st;
  signal(-p.pid, 'SIGKILL');
  if (pgData) signal(postmasterPid(pgData), 'SIGKILL');
  return p.exited;
}

/** The command line of one process in one configuration. */
function wrap(config: ServerConfig, argv: string[], files: { events: string; db: string }): { argv: string[]; cli: boolean } {
  switch (config) {
    case 'baseline':
    case 'floor':
    case 'outside':
      return { argv, cli: false };
    case 'propagation':
      return { argv: [process.execPath, CLI, 'run', '--no-sample', '--', ...argv], cli: true };
    case 'events':
      return { argv: [process.execPath, CLI, 'run', '-e', files.events, '--', ...argv], cli: true };
    case 'trace':
      return { argv: [process.execPath, CLI, 'trace', '--db', files.db, '--', ...argv], cli: true };
    case 'trace-sampled':
      return { argv: [process.execPath, CLI, 'trace', '--sample', String(SAMPLE_RATE), '--db', files.db, '--', ...argv], cli: true };
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The last n lines of a file ('' if it cannot be read). */
export function tail(file: string, n = 6): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** Quotes for sh. */
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** What differs between redis and PostgreSQL. */
interface Workload {
  name: WorkloadName;
  metrics: string[];
  unit: string;
  /** Made once before the rounds (and removed by cleanup). */
  prepare(): Promise<void>;
  cleanup(): Promise<void>;
  /** The server's command line (log: where it may write its log). */
  server(port: number, log: string): string[];
  client(port: number): string[];
  /** Resolves once the server (started as p) accepts clients; throws if it exits first. */
  ready(port: number, p: Proc): Promise<void>;
  /** Asks the server started as p to stop. */
  stop(p: Proc): void;
  /** The one-run script's lines that wait until the server is ready (exit 90 if it never is), and that stop it. */
  shReady(port: number): string;
  shStop: string;
  /** The client's output -> figures per metric. */
  parse(out: string): Record<string, number>;
  /** The client's output -> requests (or transactions) it completed. */
  served(out: string): number;
  describe(): string;
  json(): Record<string, unknown>;
}

/** Resolves once check() holds; throws if p exits first, after timeoutMs, or after a signal. */
export async function pollUntil(what: string, p: Proc, check: () => boolean | Promise<boolean>, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (interrupted) throw new Error(`interrupted by ${interrupted}`);
    if (p.done) throw new Error(`${what} exited (status ${p.status}) before it was ready`);
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} was not ready within ${timeoutMs} ms`);
    await sleep(10);
  }
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** What the report needs of a workload, from its json() (so that a section can be rendered again from BENCHMARKS.json). */
const WORKLOAD_INFO: Record<WorkloadName, { metrics: string[]; unit: string }> = {
  redis: { metrics: ['SET', 'GET'], unit: 'requests/s' },
  pgbench: { metrics: ['tps'], unit: 'transactions/s' },
};
const DESCRIBE: Record<WorkloadName, (j: Record<string, unknown>) => string> = {
  redis: (j) =>
    `\`redis-benchmark -t get,set -c 8 -n ${j.requests} --csv\` against \`redis-server\` (${j.version}) on 127.0.0.1 at a free port, no persistence (\`--save '' --appendonly no\`)` +
    (j.secondsPerTest ? `; the request count is calibrated for ~${j.secondsPerTest} s per test at the baseline's rate.` : '; the request count is calibrated on the baseline\'s rate.'),
  pgbench: (j) =>
    `\`pgbench -S -c 4 -n -T ${j.seconds}\` (select-only, one pgbench thread, scale factor ${j.scale} initialised once) against ${String(j.version).replace(/^postgres \(PostgreSQL\) /, 'PostgreSQL ')}, initdb in a temporary directory, run as postgres (\`runuser -u postgres\`) on 127.0.0.1 at a free port (fsync, autovacuum off), the client over TCP.`,
};

class Redis implements Workload {
  readonly name = 'redis' as const;
  readonly metrics = ['SET', 'GET'];
  readonly unit = 'requests/s';
  requests = 0;
  version = '';
  constructor(private readonly dir: string, private readonly secondsPerTest: number) {}

  async prepare(): Promise<void> {
    for (const bin of ['redis-server', 'redis-benchmark', 'redis-cli'])
      if (!which(bin)) throw new Error(`${bin} is not installed: run scripts/setup.sh (Debian packages redis-server, redis-tools)`);
    this.version = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim().split(' ').slice(0, 3).join(' ');
    // Calibrate the request count: ~secondsPerTest per test (SET, then GET) at the baseline's rate (the faster of two tries).
    this.requests = 20000;
    let rate = 0;
    for (let i = 0; i < 2; i++) {
      const m = await measure(this, 'separate', 'baseline', -1, this.dir);
      rate = Math.max(rate, Math.min(...Object.values(m.values)));
    }
    this.requests = Math.max(10000, Math.round((rate * this.secondsPerTest) / 1000) * 1000);
  }

  async cleanup(): Promise<void> {}

  server(port: number, log: string): string[] {
    return ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--logfile', log, '--protected-mode', 'no', '--daemonize', 'no'];
  }

  client(port: number): string[] {
    return ['redis-benchmark', '-h', '127.0.0.1', '-p', String(port), '-t', 'get,set', '-c', '8', '-n', String(this.requests), '--csv'];
  }

  async ready(port: number, p: Proc): Promise<void> {
    await pollUntil('redis-server', p, () => tcpAccepts(port));
  }

  stop(p: Proc): void {
    signal(p.pid, 'SIGTERM'); // redis-server, or the causeway run that forwards it
  }

  shReady(port: number): string {
    return `n=0; until redis-cli -h 127.0.0.1 -p ${port} ping >/dev/null 2>&1; do n=$((n+1)); [ $n -lt 3000 ] || { kill $srv; exit 90; }; sleep 0.01; done`;
  }

  readonly shStop = 'kill $srv';

  parse(out: string): Record<string, number> {
    const v: Record<string, number> = {};
    for (const line of out.split('\n')) {
      const m = /^"(SET|GET)","([\d.]+)"/.exec(line.trim());
      if (m) v[m[1]] = Number(m[2]);
    }
    if (v.SET === undefined || v.GET === undefined) throw new Error(`redis-benchmark printed no SET/GET figures: ${out.slice(0, 300)}`);
    return v;
  }

  served(): number {
    return 2 * this.requests; // -n requests of SET, then of GET
  }

  describe(): string {
    return DESCRIBE.redis(this.json());
  }

  json(): Record<string, unknown> {
    return { version: this.version, requests: this.requests, clients: 8, tests: ['set', 'get'], secondsPerTest: this.secondsPerTest };
  }
}

/** The settings every server of a PgCluster starts with (fsync and autovacuum off, logs on stderr). */
const PG_SETTINGS: Record<string, string> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  autovacuum: 'off',
  max_connections: '20',
  logging_collector: 'off',
  log_min_messages: 'warning',
  log_destination: 'stderr',
  shared_buffers: '128MB',
};

/**
 * A PostgreSQL cluster made once by initdb in a temporary directory (trust
 * authentication, user postgres), whose server runs as the postgres user
 * (runuser) on 127.0.0.1 at a given port, with its UNIX socket in that
 * directory. cleanup() stops a server left running and removes the directory.
 */
export class PgCluster {
  bin = '';
  version = '';
  private dir = '';
  /** settings: -c NAME=VALUE beside (or instead of) PG_SETTINGS. */
  constructor(private readonly settings: Record<string, string> = {}) {}

  get data(): string {
    return path.join(this.dir, 'data');
  }

  private get sock(): string {
    return path.join(this.dir, 'sock');
  }

  /** initdb, as the postgres user; throws if PostgreSQL or the postgres user is missing. */
  init(): void {
    this.bin = pgBinDir();
    if (!which('runuser')) throw new Error('runuser (util-linux) is not installed');
    let uid: number, gid: number;
    try {
      uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
      gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    } catch {
      throw new Error('there is no postgres user: run scripts/setup.sh (Debian package postgresql)');
    }
    this.version = execFileSync(path.join(this.bin, 'postgres'), ['--version'], { encoding: 'utf8' }).trim();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-pg-'));
    fs.chownSync(this.dir, uid, gid);
    fs.mkdirSync(this.sock);
    fs.chownSync(this.sock, uid, gid);
    try {
      execFileSync('runuser', ['-u', 'postgres', '--', path.join(this.bin, 'initdb'), '-D', this.data, '-U', 'postgres', '-A', 'trust',
        '-E', 'UTF8', '--locale=C', '--no-sync'], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new Error(`initdb failed: ${(err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message}`);
    }
    pgData = this.data;
  }

  async cleanup(): Promise<void> {
    if (!this.dir) return;
    const pid = postmasterPid(this.data);
    if (pid) {
      signal(pid, 'SIGINT');
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline && fs.existsSync(`/proc/${pid}`)) await sleep(20);
      signal(pid, 'SIGKILL');
    }
    pgData = null;
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
  }

  /** The server's command line: runuser -u postgres -- postgres -D DATA -p PORT -c ... */
  server(port: number): string[] {
    const settings = { ...PG_SETTINGS, listen_addresses: '127.0.0.1', unix_socket_directories: this.sock, ...this.settings };
    return ['runuser', '-u', 'postgres', '--', path.join(this.bin, 'postgres'), '-D', this.data, '-p', String(port),
      ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  }

  /** The settings the server runs with, as given on its command line. */
  describeSettings(): string {
    return Object.entries({ ...PG_SETTINGS, ...this.settings }).map(([k, v]) => `${k}=${v}`).join(' ');
  }

  /** The postmaster's pid (0 while there is none). */
  postmaster(): number {
    return postmasterPid(this.data);
  }

  private isReady(): boolean {
    try {
      return fs.readFileSync(path.join(this.data, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim() === 'ready';
    } catch {
      return false;
    }
  }

  /** Resolves once the server started as p accepts connections. */
  async ready(p: Proc): Promise<void> {
    await pollUntil('postgres', p, () => this.isReady());
  }

  stop(p: Proc): void {
    // A fast shutdown, to the postmaster itself (runuser and causeway run sit between it and p).
    const pid = postmasterPid(this.data);
    signal(pid || p.pid, pid ? 'SIGINT' : 'SIGTERM');
  }

  shReady(): string {
    const pidfile = q(path.join(this.data, 'postmaster.pid'));
    return `n=0; until [ "$(sed -n 8p ${pidfile} 2>/dev/null | tr -d ' ')" = ready ]; do n=$((n+1)); [ $n -lt 1500 ] || { kill $srv; exit 90; }; sleep 0.02; done`;
  }

  get shStop(): string {
    return `kill -INT "$(head -1 ${q(path.join(this.data, 'postmaster.pid'))})"`;
  }
}

class Postgres implements Workload {
  readonly name = 'pgbench' as const;
  readonly metrics = ['tps'];
  readonly unit = 'transactions/s';
  readonly scale = 5;
  private readonly pg = new PgCluster();
  constructor(private readonly seconds: number) {}

  async prepare(): Promise<void> {
    this.pg.init();
    // The tables, once: pgbench -i against a server started for it.
    const port = await freePort();
    const srv = start(this.server(port), 'ignore', 'ignore', false);
    try {
      await this.ready(port, srv);
      execFileSync(path.join(this.pg.bin, 'pgbench'), ['-i', '-q', '-s', String(this.scale), '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'postgres'],
        { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new Error(`pgbench -i failed: ${(err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message}`);
    } finally {
      this.stop(srv);
      await reap(srv, 30000);
    }
  }

  cleanup(): Promise<void> {
    return this.pg.cleanup();
  }

  server(port: number): string[] {
    return this.pg.server(port);
  }

  client(port: number): string[] {
    return [path.join(this.pg.bin, 'pgbench'), '-S', '-c', '4', '-n', '-T', String(this.seconds), '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'postgres'];
  }

  async ready(_port: number, p: Proc): Promise<void> {
    await this.pg.ready(p);
  }

  stop(p: Proc): void {
    this.pg.stop(p);
  }

  shReady(): string {
    return this.pg.shReady();
  }

  get shStop(): string {
    return this.pg.shStop;
  }

  parse(out: string): Record<string, number> {
    const m = /^tps = ([\d.]+)/m.exec(out);
    if (!m) throw new Error(`pgbench printed no tps: ${out.slice(-300)}`);
    return { tps: Number(m[1]) };
  }

  served(out: string): number {
    const m = /^number of transactions actually processed: (\d+)/m.exec(out);
    if (!m) throw new Error(`pgbench printed no transaction count: ${out.slice(-300)}`);
    return Number(m[1]);
  }

  describe(): string {
    return DESCRIBE.pgbench(this.json());
  }

  json(): Record<string, unknown> {
    return { version: this.pg.version, scale: this.scale, clients: 4, seconds: this.seconds, mode: 'select-only' };
  }
}

/** Whether bin is an executable on PATH. */
export function which(bin: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d, bin), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The newest /usr/lib/postgresql/N/bin (Debian), else where pg_config says. */
export function pgBinDir(): string {
  const base = '/usr/lib/postgresql';
  const versions = (fs.existsSync(base) ? fs.readdirSync(base) : [])
    .filter((v) => fs.existsSync(path.join(base, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  if (versions.length) return path.join(base, versions[0], 'bin');
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
    if (fs.existsSync(path.join(dir, 'postgres'))) return dir;
  } catch {
    /* none */
  }
  throw new Error('the PostgreSQL server is not installed: run scripts/setup.sh (Debian packages postgresql, postgresql-contrib)');
}

/** One measurement of workload w in one topology and configuration; the files it makes go in a fresh directory under dir. */
async function measure(w: Workload, topology: Topology, config: ServerConfig, round: number, dir: string): Promise<Measurement> {
  const run = () => (topology === 'separate' ? separate(w, config, work) : oneRun(w, config, work));
  const work = fs.mkdtempSync(path.join(dir, `${w.name}-${topology}-${config}-`));
  try {
    const res = config === 'floor' ? await withFloor(run) : config === 'outside' ? await withOutsideRun(run) : await run();
    return { workload: w.name, topology, config, round, ...res };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

const files = (work: string, side: string) => ({ events: path.join(work, `${side}.jsonl`), db: path.join(work, `${side}.db`) });

async function separate(w: Workload, config: ServerConfig, work: string): Promise<Pick<Measurement, 'values' | 'runs' | 'cpu'>> {
  let cpu0 = { busyMs: 0, kernelMs: 0 };
  let cpu1 = cpu0;
  const port = await freePort();
  const [out, clientErr, serverLog, appLog] = ['client.out', 'client.err', 'server.log', 'app.log'].map((f) => path.join(work, f));
  const s = wrap(config, w.server(port, appLog), files(work, 'server'));
  const logFd = fs.openSync(serverLog, 'w');
  const server = start(s.argv, logFd, logFd, s.cli);
  fs.closeSync(logFd);
  let serverStatus: number;
  try {
    await w.ready(port, server);
    const c = wrap(config, w.client(port), files(work, 'client'));
    const [outFd, errFd] = [fs.openSync(out, 'w'), fs.openSync(clientErr, 'w')];
    cpu0 = machineCpu();
    const client = start(c.argv, outFd, errFd, c.cli);
    fs.closeSync(outFd);
    fs.closeSync(errFd);
    const st = await client.exited;
    cpu1 = machineCpu();
    if (interrupted) throw new Error(`interrupted by ${interrupted}`);
    if (st !== 0) throw new Error(`${w.name} client (${config}, separate runs) exited with ${st}:\n${tail(clientErr)}`);
  } finally {
    w.stop(server);
    serverStatus = await reap(server, 30000);
  }
  if (serverStatus !== 0) throw new Error(`${w.name} server (${config}, separate runs) exited with ${serverStatus}:\n${tail(serverLog)}`);
  const runs: Measurement['runs'] = {};
  if (s.cli) {
    runs.server = summaryOf(serverLog, 'server');
    runs.client = summaryOf(clientErr, 'client');
  }
  const text = fs.readFileSync(out, 'utf8');
  return { values: w.parse(text), runs, cpu: { busyMs: cpu1.busyMs - cpu0.busyMs, kernelMs: cpu1.kernelMs - cpu0.kernelMs, requests: w.served(text) } };
}

/** One run: the CPU window is the whole run (server start and stop, and the shim's load, included). */
async function oneRun(w: Workload, config: ServerConfig, work: string): Promise<Pick<Measurement, 'values' | 'runs' | 'cpu'>> {
  const port = await freePort();
  const [out, err, appLog] = ['client.out', 'run.err', 'app.log'].map((f) => path.join(work, f));
  const script = [
    `${w.server(port, appLog).map(q).join(' ')} >>${q(appLog)} 2>&1 &`,
    'srv=$!',
    w.shReady(port),
    `${w.client(port).map(q).join(' ')} >${q(out)}`,
    'st=$?',
    w.shStop,
    'wait $srv',
    'exit $st',
  ].join('\n');
  const r = wrap(config, ['sh', '-c', script], files(work, 'one'));
  const errFd = fs.openSync(err, 'w');
  const cpu0 = machineCpu();
  const p = start(r.argv, 'ignore', errFd, r.cli);
  fs.closeSync(errFd);
  let st: number;
  try {
    st = await p.exited;
  } finally {
    if (!p.done) {
      signal(p.cli ? p.pid : -p.pid, 'SIGTERM');
      await reap(p, 30000);
    }
  }
  if (interrupted) throw new Error(`interrupted by ${interrupted}`);
  if (st !== 0) throw new Error(`${w.name} (${config}, one run) exited with ${st}:\n${tail(err)}\n${tail(appLog)}`);
  const cpu1 = machineCpu();
  const text = fs.readFileSync(out, 'utf8');
  return {
    values: w.parse(text),
    runs: r.cli ? { one: summaryOf(err, 'the run') } : {},
    cpu: { busyMs: cpu1.busyMs - cpu0.busyMs, kernelMs: cpu1.kernelMs - cpu0.kernelMs, requests: w.served(text) },
  };
}

function summaryOf(file: string, who: string): RunSummary {
  const s = parseSummary(fs.readFileSync(file, 'utf8'));
  if (!s) throw new Error(`no causeway summary line from ${who}:\n${tail(file)}`);
  return s;
}

/** Runs the server benchmarks; see the file's comment. */
export async function benchServers(opts: ServersOptions): Promise<{ json: unknown; md: string }> {
  if (process.geteuid?.() !== 0) throw new Error('the server benchmarks run causeway and PostgreSQL as another user: they need root');
  const rounds = opts.rounds ?? (opts.quick ? 3 : 5);
  const progress = opts.progress ?? true;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-servers-'));
  const workloads: Workload[] = [];
  const want = opts.only ?? [...WORKLOADS];
  if (want.includes('redis')) workloads.push(new Redis(dir, opts.quick ? 1.25 : 1.5));
  if (want.includes('pgbench')) workloads.push(new Postgres(opts.quick ? 2 : 3));

  const unguard = guardSignals('servers');
  const samples: Measurement[] = [];
  try {
    for (const w of workloads) {
      if (progress) process.stderr.write(`servers: preparing ${w.name}\n`);
      await w.prepare();
    }
    for (let r = 0; r < rounds; r++)
      for (const w of workloads)
        for (const topology of TOPOLOGIES) {
          const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
          for (const config of order) {
            const m = await measure(w, topology, config, r, dir);
            samples.push(m);
            if (progress) process.stderr.write(`servers round ${r + 1}/${rounds} ${w.name}, ${topology}, ${config}: ${progressLine(m, w)}\n`);
          }
        }
  } finally {
    await stopAll();
    for (const w of workloads) await w.cleanup().catch((err) => process.stderr.write(`servers: cleanup of ${w.name}: ${(err as Error).message}\n`));
    unguard();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (interrupted) throw new Error(`interrupted by ${interrupted}`);
  const date = new Date().toISOString().slice(0, 10);
  return summarize(samples, workloads.map((w) => ({ name: w.name, json: w.json(), rounds, date })));
}

function progressLine(m: Measurement, w: Workload): string {
  const v = w.metrics.map((k) => `${k === 'tps' ? '' : k + ' '}${m.values[k].toFixed(0)}`).join(', ');
  const opt = (s?: RunSummary) => (s ? `${s.counters.tcpOptionsWritten ?? 0}/${s.counters.tcpOptionsReceived ?? 0}` : '');
  const runs = m.runs.one ? `; TCP options written/received ${opt(m.runs.one)}` : m.runs.client ? `; TCP options written/received: client ${opt(m.runs.client)}, server ${opt(m.runs.server)}` : '';
  const drops = Object.entries({ ...m.runs.one?.drops, ...m.runs.client?.drops, ...m.runs.server?.drops });
  return `${v} ${w.unit}${runs}${drops.length ? `; drops ${drops.map(([k, n]) => `${k}=${n}`).join(' ')}` : ''}`;
}

const TOPO_LABEL: Record<Topology, string> = { separate: 'separate runs', one: 'one run' };
const CONFIG_LABEL: Record<ServerConfig, string> = {
  baseline: 'baseline',
  floor: 'floor',
  outside: 'outside',
  propagation: 'propagation (`run --no-sample`)',
  events: 'events (`run -e`)',
  trace: 'trace (`trace --db`)',
  'trace-sampled': `trace at --sample ${SAMPLE_RATE}`,
};

/**
 * A configuration's loss against propagation's (both to the baseline's median), with the target "at most 2 times"
 * judged on the spreads: met only if its worst run loses at most twice what propagation's best run loses, NOT met
 * only if its best run loses more than twice propagation's worst; otherwise not resolvable here.
 */
export function lossVersus(base: number[], prop: number[], xs: number[], name: string, judge: boolean): string {
  const b = median(base);
  const loss = (v: number) => 1 - v / b;
  const [pMed, pLo, pHi] = [loss(median(prop)), loss(Math.max(...prop)), loss(Math.min(...prop))];
  const [cMed, cLo, cHi] = [loss(median(xs)), loss(Math.max(...xs)), loss(Math.min(...xs))];
  if (verdict(base, prop) === 'not resolvable here') return `${name} ${(cMed * 100).toFixed(1)}% (propagation's loss not resolvable here)`;
  let text = `${name} ${(cMed / pMed).toFixed(2)}x propagation's loss (runs: ${(cLo * 100).toFixed(1)}-${(cHi * 100).toFixed(1)}% against ${(pLo * 100).toFixed(1)}-${(pHi * 100).toFixed(1)}%)`;
  if (judge) text += cHi <= 2 * pLo ? ' (target <= 2x: met)' : cLo > 2 * pHi ? ' (target <= 2x: NOT met)' : ' (target <= 2x: not resolvable here)';
  return text;
}

/** Option counters of one measurement's runs. */
const opt = (s: RunSummary | undefined, k: 'tcpOptionsWritten' | 'tcpOptionsReceived') => s?.counters[k] ?? 0;

/** Whether the counters show the record crossing in the TCP option, for a group of measurements with causeway runs. */
function crossing(ms: Measurement[], topology: Topology): { cell: string; crossed: boolean; counts: Record<string, number> } {
  const med = (f: (m: Measurement) => number) => median(ms.map(f));
  const sends = (s?: RunSummary) => s?.sends ?? 0;
  if (topology === 'one') {
    const w = med((m) => opt(m.runs.one, 'tcpOptionsWritten'));
    const r = med((m) => opt(m.runs.one, 'tcpOptionsReceived'));
    const n = med((m) => sends(m.runs.one));
    const crossed = ms.every((m) => opt(m.runs.one, 'tcpOptionsWritten') > 0 && opt(m.runs.one, 'tcpOptionsReceived') > 0);
    const share = n ? w / n : 0;
    const word = !crossed
      ? w === 0 && r === 0
        ? 'no option (carried inside the run)'
        : 'not in every run'
      : share >= 0.9
        ? 'yes'
        : `on ${(share * 100).toFixed(share < 0.01 ? 2 : 1)}% of sends; the rest carried inside the run`;
    return { cell: `${fmtCount(w)}/${fmtCount(r)} (sends ${fmtCount(n)}): ${word}`, crossed, counts: { written: w, received: r, sends: n } };
  }
  const cw = med((m) => opt(m.runs.client, 'tcpOptionsWritten'));
  const sr = med((m) => opt(m.runs.server, 'tcpOptionsReceived'));
  const sw = med((m) => opt(m.runs.server, 'tcpOptionsWritten'));
  const cr = med((m) => opt(m.runs.client, 'tcpOptionsReceived'));
  const cs = med((m) => sends(m.runs.client));
  const ss = med((m) => sends(m.runs.server));
  const up = ms.every((m) => opt(m.runs.client, 'tcpOptionsWritten') > 0 && opt(m.runs.server, 'tcpOptionsReceived') > 0);
  const down = ms.every((m) => opt(m.runs.server, 'tcpOptionsWritten') > 0 && opt(m.runs.client, 'tcpOptionsReceived') > 0);
  const word = up && down ? 'yes, both ways' : up ? 'yes, client to server' : down ? 'server to client only' : 'no';
  return {
    cell: `client ${fmtCount(cw)}/${fmtCount(cr)}, server ${fmtCount(sw)}/${fmtCount(sr)} (sends ${fmtCount(cs)}, ${fmtCount(ss)}): ${word}`,
    crossed: up,
    counts: { clientWritten: cw, clientReceived: cr, serverWritten: sw, serverReceived: sr, clientSends: cs, serverSends: ss },
  };
}

function fmtCount(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(0)}k` : n.toFixed(0);
}

function dropsOf(ms: Measurement[]): Record<string, number> {
  const d: Record<string, number> = {};
  for (const m of ms)
    for (const s of [m.runs.one, m.runs.client, m.runs.server]) {
      if (!s) continue;
      for (const [k, v] of Object.entries(s.drops)) d[k] = (d[k] ?? 0) + v;
      for (const [a, st] of Object.entries(s.actors)) {
        if (st.dropped) d[`actor ${a} dropped`] = (d[`actor ${a} dropped`] ?? 0) + st.dropped;
        if (st.errors) d[`actor ${a} errors`] = (d[`actor ${a} errors`] ?? 0) + st.errors;
      }
      if (s.storeFailed) d.storeFailed = (d.storeFailed ?? 0) + s.storeFailed;
    }
  return d;
}

/** One workload's part of the report: what its json() said, how many rounds, and the day it was measured. */
interface Part {
  name: WorkloadName;
  json: Record<string, unknown>;
  rounds: number;
  date: string;
}

interface ServersJson {
  rounds: number;
  date: string;
  workloads: Record<string, Record<string, unknown> & { rounds?: number; date?: string }>;
  measurements: Measurement[];
}

/**
 * The section again, with what now measured and, for the workloads it did
 * not measure (`--only redis`, say), what before holds: each with its own
 * rounds and date.
 */
export function mergeServers(now: unknown, before: unknown): { json: unknown; md: string } {
  const parts = (j: ServersJson, names: string[]): Part[] =>
    names.map((name) => {
      const { rounds, date, ...json } = j.workloads[name];
      return { name: name as WorkloadName, json, rounds: rounds ?? j.rounds, date: date ?? j.date };
    });
  const n = now as ServersJson;
  const b = before as ServersJson;
  const kept = Object.keys(b.workloads ?? {}).filter((w) => !(w in n.workloads));
  return summarize(
    [...n.measurements, ...(b.measurements ?? []).filter((m) => kept.includes(m.workload))],
    [...parts(n, Object.keys(n.workloads)), ...parts(b, kept)].sort((x, y) => WORKLOADS.indexOf(x.name) - WORKLOADS.indexOf(y.name)),
  );
}

function summarize(samples: Measurement[], workloads: Part[]): { json: unknown; md: string } {
  const sameRounds = workloads.every((w) => w.rounds === workloads[0]?.rounds);
  const roundsText = sameRounds ? `${workloads[0]?.rounds ?? 0}` : `its workload's (${workloads.map((w) => `${w.name}: ${w.rounds}`).join(', ')})`;
  const lines: string[] = [
    '## Real servers: redis-benchmark and pgbench',
    '',
    `Written on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
    ...workloads.map((w) => `- ${DESCRIBE[w.name](w.json)} Measured on ${w.date}, ${w.rounds} rounds.`),
    '',
    'Configurations: baseline (no BPF program), floor (the shim\'s hooks with programs that return at once), outside (the shim',
    'loaded for another run\'s cgroup; server and client outside it), then the CLI: propagation (`causeway run --no-sample`),',
    'events (`causeway run -e FILE`), trace (`causeway trace --db FILE`). Topologies: separate runs (the server in one',
    'causeway run, the client in another, each with its own shim and maps, each trace run with its own database file:',
    'a record crosses from one to the other only in the TCP header option) and one run (one causeway run starts the server',
    'in the background, the client once the server is ready, then stops the server). Without causeway, the same processes',
    'run the same way.',
    `Each figure is the median of ${roundsText} alternating runs (the order rotates each round); spread is min-max. Ratios and`,
    'losses are to the baseline of the same topology in this same invocation. A verdict is given only where the',
    'configuration\'s spread and the baseline\'s do not overlap; otherwise the difference is not resolvable here.',
    'TCP options: median per run of tcpOptionsWritten/tcpOptionsReceived from each causeway run\'s summary line, beside the',
    'sends that carried records; "yes" only where every run\'s counters show options written on one side and received on',
    'the other.',
    '',
    'CPU per request: the whole machine\'s busy CPU time (/proc/stat: every process, causeway\'s runtime and tracer included,',
    'and the kernel) over the client\'s run (separate runs; the whole run for one run, server start and shim load included),',
    'divided by the requests the client completed; median of the rounds, with the kernel\'s (system, irq, softirq) share.',
    '',
    '| benchmark | topology | configuration | median | spread | ratio to baseline | loss | verdict | machine CPU per request (µs) | TCP options written / received | drops |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const results: Record<string, unknown>[] = [];
  const bullets: string[] = [];
  for (const w of workloads)
    for (const metric of WORKLOAD_INFO[w.name].metrics) {
      const label = w.name === 'redis' ? `redis-benchmark ${metric}` : 'pgbench -S';
      for (const topology of TOPOLOGIES) {
        const of = (c: ServerConfig) => samples.filter((s) => s.workload === w.name && s.topology === topology && s.config === c);
        const xs = (c: ServerConfig) => of(c).map((s) => s.values[metric]);
        if (!xs('baseline').length) continue;
        const base = median(xs('baseline'));
        const parts: string[] = [];
        for (const c of CONFIGS) {
          const v = xs(c);
          const m = median(v);
          const causeway = CLI_CONFIGS.has(c);
          const cpuUs = median(of(c).map((s) => (s.cpu.busyMs * 1000) / s.cpu.requests));
          const kernelShare = median(of(c).map((s) => s.cpu.kernelMs / s.cpu.busyMs));
          const cross = causeway ? crossing(of(c), topology) : null;
          const drops = dropsOf(of(c));
          const dropCell = !causeway ? '-' : Object.keys(drops).length ? Object.entries(drops).map(([k, n]) => `${k}=${n}`).join(' ') : '0';
          const verd = c === 'baseline' ? '-' : verdict(xs('baseline'), v);
          lines.push(
            `| ${label} | ${TOPO_LABEL[topology]} | ${CONFIG_LABEL[c]} | ${m.toFixed(0)} ${WORKLOAD_INFO[w.name].unit} | ${Math.min(...v).toFixed(0)}-${Math.max(...v).toFixed(0)} | ` +
              `${(m / base).toFixed(3)} | ${c === 'baseline' ? '-' : `${((1 - m / base) * 100).toFixed(1)}%`} | ${verd} | ${cpuUs.toFixed(1)} (${(kernelShare * 100).toFixed(0)}% kernel) | ${cross?.cell ?? '-'} | ${dropCell} |`,
          );
          results.push({
            bench: label,
            workload: w.name,
            metric,
            topology,
            config: c,
            median: m,
            min: Math.min(...v),
            max: Math.max(...v),
            ratio: m / base,
            loss: 1 - m / base,
            verdict: verd,
            samples: v,
            tcpOption: cross ? { crossed: cross.crossed, ...cross.counts } : null,
            drops: causeway ? drops : null,
            events: causeway ? of(c).map((s) => (s.runs.one?.events ?? 0) + (s.runs.client?.events ?? 0) + (s.runs.server?.events ?? 0)) : null,
            cpuUsPerRequest: cpuUs,
            kernelShare,
            stored: c === 'trace' || c === 'trace-sampled' ? of(c).map((s) => (s.runs.one?.stored ?? 0) + (s.runs.client?.stored ?? 0) + (s.runs.server?.stored ?? 0)) : null,
          });
          if (c !== 'baseline')
            parts.push(`${c} ${((1 - m / base) * 100).toFixed(1)}%${verd === 'not resolvable here' ? ' (not resolvable here)' : ''}`);
        }
        // Tracing's cost against propagation's (target: at most 2 times its loss), judged on the spreads.
        const vsProp = (['events', 'trace', 'trace-sampled'] as const).map((c) => lossVersus(xs('baseline'), xs('propagation'), xs(c), c, c !== 'trace-sampled'));
        bullets.push(`- ${label}, ${TOPO_LABEL[topology]}: ${vsProp.join('; ')}.`);
        const cross = crossing(of('propagation'), topology);
        bullets.push(
          `- ${label}, ${TOPO_LABEL[topology]}: loss to the baseline ${parts.join(', ')}.` +
            (topology === 'separate'
              ? cross.crossed
                ? ` The record crossed between the two runs in the TCP option (propagation: the client's run wrote ${fmtCount(cross.counts.clientWritten)} options per run, the server's run received ${fmtCount(cross.counts.serverReceived)}).`
                : ' The counters do not show the record crossing in the TCP option in every run.'
              : cross.crossed
                ? ` Inside the one run the option was written and read on ${fmtCount(cross.counts.written)} and ${fmtCount(cross.counts.received)} segments per run, against ${fmtCount(cross.counts.sends)} sends that carried records.`
                : ' Inside the one run no TCP option was written: the record was carried by the shim\'s own maps.'),
        );
      }
    }
  const evLine = workloads.map((w) => {
    const parts = TOPOLOGIES.map((t) => {
      const ev = samples.filter((s) => s.workload === w.name && s.topology === t && s.config === 'events');
      const tr = samples.filter((s) => s.workload === w.name && s.topology === t && s.config === 'trace');
      const sum = (s: Measurement, f: (r: RunSummary) => number) => [s.runs.one, s.runs.client, s.runs.server].reduce((n, r) => n + (r ? f(r) : 0), 0);
      return `${TOPO_LABEL[t]}: events ${ev.map((s) => sum(s, (r) => r.events)).join(', ')}; stored by trace ${tr.map((s) => sum(s, (r) => r.stored ?? 0)).join(', ')}`;
    });
    return `- ${w.name}, events per measurement (all runs of it): ${parts.join('; ')}.`;
  });
  lines.push('', ...evLine, '', '### What it shows', '', ...bullets, '');
  const json = {
    machine: machine(),
    date: new Date().toISOString().slice(0, 10),
    rounds: Math.max(0, ...workloads.map((w) => w.rounds)),
    workloads: Object.fromEntries(workloads.map((w) => [w.name, { ...w.json, rounds: w.rounds, date: w.date }])),
    results,
    measurements: samples,
  };
  return { json, md: lines.join('\n') };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const val = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const only = val('--only')?.split(',') as WorkloadName[] | undefined;
  for (const o of only ?? []) if (!WORKLOADS.includes(o)) throw new Error(`--only takes ${WORKLOADS.join(', ')}, not ${o}`);
  const res = await benchServers({ quick: argv.includes('--quick'), rounds: val('--rounds') ? Number(val('--rounds')) : undefined, only });
  const jsonFile = val('--json');
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(res.json, null, 2) + '\n');
  process.stdout.write(res.md + '\n');
}

if (require.main === module)
  main().catch((err) => {
    process.stderr.write(`bench servers: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
