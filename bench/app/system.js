// The application benchmark's system and its load generator, in one process
// (bench/app/index.ts runs it directly, or as the command of `causeway run` /
// `causeway trace`, so that everything here is inside the run): starts
// redis-server (a UNIX socket in the given directory, no TCP, no persistence),
// the back tier and the front tier; then a closed-loop load of `conc`
// keep-alive connections on GET /item/:id for warm-up + measured seconds;
// then stops the three and writes what it measured as JSON.
// Every request runs under a new trace of its own (causeway/sdk: run(newTrace(), ...));
// outside causeway the SDK is detached and that costs only AsyncLocalStorage.
// argv[2]: JSON { dir, secs, warmup, conc, items, out, otel (OTLP URL or null), sampled, sampleRate?, observerPid, nodeArgs? }
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const { spawn, execFileSync } = require('node:child_process');
const sdk = require('causeway/sdk');

process.title = 'app-load';
const cfg = JSON.parse(process.argv[2]);
const HERE = __dirname;
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const children = [];

/** CPU time (utime + stime) of a process, in ms; NaN if it is gone. */
function cpuMs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICK; // fields 14 and 15 of stat
  } catch {
    return NaN;
  }
}

function start(name, cmd, args, env) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  children.push({ name, child });
  child.on('error', (err) => process.stderr.write(`system: ${name}: ${err.message}\n`));
  return child;
}

/** Waits for the "port N" line a tier prints once it listens. */
function portOf(name, child, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not listen within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code, sig) => reject(new Error(`${name} exited (${code ?? sig}) before it listened`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^port (\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
}

async function waitForFile(file, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** SIGTERM to each child still running, SIGKILL after graceMs; resolves once all have exited. */
async function stopAll(graceMs = 10000) {
  await Promise.all(
    children.map(({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined;
      return new Promise((resolve) => {
        const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
        child.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        child.kill('SIGTERM');
      });
    }),
  );
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * One keep-alive HTTP/1.1 connection to the front, one request at a time: a
 * GET written in one write, the answer read to its Content-Length. Lighter
 * than http.request, so that the load generator leaves the CPUs to the system.
 */
class Conn {
  static open(port) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new Conn(sock));
      });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = null;
    this.pending = null;
    sock.setNoDelay(true);
    sock.on('data', (d) => this.onData(d));
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new Error('the front closed the connection')));
  }

  /** GET path; resolves when the whole answer is in (rejects unless it is a 200). */
  get(path) {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.buf = null;
      this.sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    });
  }

  onData(d) {
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.toString('latin1', 0, end);
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!m) return this.fail(new Error(`an answer without Content-Length: ${head.slice(0, 80)}`));
    if (this.buf.length < end + 4 + Number(m[1])) return;
    const status = Number(head.slice(9, 12));
    const p = this.pending;
    this.pending = null;
    this.buf = null;
    if (p) status === 200 ? p.resolve() : p.reject(new Error(`HTTP ${status}`));
  }

  fail(err) {
    const p = this.pending;
    this.pending = null;
    if (p) p.reject(err);
  }

  close() {
    this.sock.destroy();
  }
}

async function load(port) {
  const conns = await Promise.all(Array.from({ length: cfg.conc }, () => Conn.open(port)));
  const pids = { front: children[2].child.pid, back: children[1].child.pid, redis: children[0].child.pid, load: process.pid };
  const snapshot = () => ({
    t: performance.now(),
    front: cpuMs(pids.front),
    back: cpuMs(pids.back),
    redis: cpuMs(pids.redis),
    observer: cfg.observerPid ? cpuMs(cfg.observerPid) : NaN,
    load: cpuMs(process.pid),
  });
  let phase = 'warmup';
  let first, last;
  const latencies = [];
  const traces = [];
  let errors = 0;
  let total = 0;
  let firstError = '';
  const t0 = performance.now();
  const warmupTimer = setTimeout(() => {
    phase = 'measure';
    first = snapshot();
  }, cfg.warmup * 1000);
  const endTimer = setTimeout(() => {
    last = snapshot();
    phase = 'done';
  }, (cfg.warmup + cfg.secs) * 1000);
  async function worker(i) {
    while (phase !== 'done') {
      // --sample's decision at the root: a fraction sampleRate of the traces (all of them without one).
      const rec = sdk.newTrace({ sampled: cfg.sampled && (cfg.sampleRate == null || Math.random() < cfg.sampleRate) });
      const id = Math.floor(Math.random() * cfg.items);
      const began = performance.now();
      const inWindow = phase === 'measure';
      try {
        await sdk.run(rec, () => conns[i].get(`/item/${id}`));
      } catch (err) {
        errors++;
        firstError ||= err.message;
        if (errors > 100) throw new Error(`over 100 failed requests; the first: ${firstError}`);
        conns[i].close();
        conns[i] = await Conn.open(port);
        continue;
      }
      total++;
      if (inWindow && phase === 'measure') {
        latencies.push(performance.now() - began);
        if (rec.sampled) traces.push(rec.traceId);
      }
    }
  }
  try {
    await Promise.all(conns.map((_, i) => worker(i)));
  } finally {
    clearTimeout(warmupTimer);
    clearTimeout(endTimer);
    for (const c of conns) c.close();
  }
  const secs = (last.t - first.t) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  const cpu = {};
  for (const k of ['front', 'back', 'redis', 'observer', 'load']) cpu[k] = last[k] - first[k];
  return {
    requests: latencies.length,
    errors,
    firstError,
    seconds: secs,
    elapsed: (performance.now() - t0) / 1000,
    rps: latencies.length / secs,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    cpuMs: cpu,
    pids,
    total,
    traces: cfg.sampled === null ? [] : traces,
  };
}

async function main() {
  const sock = path.join(cfg.dir, 'redis.sock');
  // No TCP (port 0): the socket only; nothing saved.
  const redis = start('redis-server', 'redis-server', [
    '--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no',
    '--dir', cfg.dir, '--daemonize', 'no', '--loglevel', 'warning',
  ]);
  redis.once('exit', (code, sig) => {
    if (!stopping) process.stderr.write(`system: redis-server exited (${code ?? sig})\n`);
  });
  await waitForFile(sock);
  // nodeArgs: extra node options for front and back (--cpu-prof, say).
  const otel = () => [...(cfg.nodeArgs ?? []), ...(cfg.otel ? ['--require', path.join(HERE, 'otel.js')] : [])];
  const otelEnv = (name) => (cfg.otel ? { APP_OTEL: cfg.otel, OTEL_SERVICE_NAME: name } : {});
  const back = start('back', process.execPath, [...otel(), path.join(HERE, 'back.js')], { REDIS_SOCKET: sock, ITEMS: String(cfg.items), ...otelEnv('back') });
  const backPort = await portOf('back', back);
  const front = start('front', process.execPath, [...otel(), path.join(HERE, 'front.js')], { BACK_PORT: String(backPort), ...otelEnv('front') });
  const frontPort = await portOf('front', front);
  const result = await load(frontPort);
  result.attached = sdk.attached();
  stopping = true;
  await stopAll();
  fs.writeFileSync(cfg.out, JSON.stringify(result));
}

let stopping = false;
// Stopped from outside: the tiers go first (and are reaped), then this process.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.once(sig, () => {
    stopping = true;
    stopAll(2000).then(() => process.exit(128 + os.constants.signals[sig]));
  });
main().then(
  () => process.exit(0),
  async (err) => {
    if (!stopping) process.stderr.write(`system: ${err.stack ?? err}\n`); // else: stopped by a signal, the tiers are going
    stopping = true;
    await stopAll(2000);
    process.exit(1);
  },
);
