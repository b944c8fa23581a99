/**
 * The scheduler (--actor scheduler): a thread's nice value follows the
 * priority of the record it holds, read from /proc by the thread itself while
 * it serves requests from clients in other runs (the record crosses in the
 * TCP option); a forked child and an exec keep it; threads go back to their
 * own nice; a process that escaped the run gets its own nice back at the end;
 * PostgreSQL backends follow their client; TCP packets of a high-priority
 * request leave with SO_PRIORITY 6 (counted by a prio qdisc); bad options fail.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { bpfUnavailable, BIN, causeway, cgroup2Mount, ROOT, runCommand, tmpdir, waitFor } from './helpers';
import { makeHosts, subnet } from './netns';
import { schedulerTables } from '../src/actors/scheduler';

const skip = bpfUnavailable();
const SERVER = path.join(__dirname, 'fixtures', 'sched-server.py');
const PY = '/usr/bin/python3';
const CLIENT = 'import socket,sys\nc=socket.create_connection((sys.argv[1],int(sys.argv[2])))\nc.sendall(" ".join(sys.argv[3:]).encode()+b"\\n")\nprint(c.makefile().readline().strip())';

/** The default mapping: priority 1-255 -> nice 19 to -20, linear; 0 -> own. */
const NICE = (p: number, own: number) => (p === 0 ? own : Math.round(19 - (39 * (p - 1)) / 254) || 0);

/** A causeway run in the background; its stdout's first line (the port) and its end. */
function background(args: string[]): { child: ChildProcess; port: Promise<number>; done: Promise<{ status: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const port = new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('close', () => reject(new Error(`the server ended before it listened: ${stderr}`)));
  });
  const done = new Promise<{ status: number | null; stderr: string }>((resolve) =>
    child.on('close', (status) => resolve({ status, stderr })),
  );
  return { child, port, done };
}

async function ask(prefix: string[], priority: number, host: string, port: number, request: string, extra: string[] = []): Promise<string> {
  const r = await causeway(['run', '-q', '--no-sample', '--priority', String(priority), ...extra, '--', ...prefix, PY, '-c', CLIENT, host, String(port), ...request.split(' ')]);
  if (r.status !== 0) throw new Error(`client failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

t.test('the mapping and bad options', async (t) => {
  const d = schedulerTables({});
  t.equal(d.nice[0], 'own');
  t.same([1, 10, 64, 128, 200, 255].map((p) => d.nice[p]), [19, 18, 9, 0, -12, -20]);
  t.equal(d.socketPriority[128], null);
  t.equal(d.socketPriority[129], 6);
  t.equal(d.join, 'priority');
  const s = schedulerTables({ nice: ['100/5', '1/own', '200/-10'], socket: 'off', join: 'keep' });
  t.same([s.nice[0], s.nice[1], s.nice[99], s.nice[100], s.nice[199], s.nice[200], s.nice[255]], ['own', 'own', 'own', 5, 5, -10, -10]);
  t.equal(s.socketPriority[255], null);
  const r = schedulerTables({ low: 5, high: -10 }).nice;
  t.same([r[0], r[1], r[255]], ['own', 5, -10]);
  for (const [spec, msg] of [
    ['scheduler:nice=200/-25', /nice value is -20 to 19/],
    ['scheduler:nice=300/1', /priority 0-255/],
    ['scheduler:nice=fast', /PRIORITY\/VALUE steps/],
    ['scheduler:low=5,nice=1/1', /not both/],
    ['scheduler:high=-30', /nice value is -20 to 19/],
    ['scheduler:join=random', /join is priority, last, first or keep/],
    ['scheduler:speed=1', /no option "speed"/],
  ] as const) {
    const r = await causeway(['run', '--actor', spec, '--', 'true']);
    t.not(r.status, 0, `${spec} fails`);
    t.match(r.stderr, msg, `${spec}: ${r.stderr.trim()}`);
  }
});

t.test('a server thread follows the priority of the request it serves', { skip: skip ?? false, timeout: 120000 }, async (t) => {
  const dir = tmpdir(t);
  const report = path.join(dir, 'report.json');
  const OWN = 2;
  const srv = background(['run', '--no-sample', '--actor', `scheduler:report=${report}`, '--', 'nice', '-n', String(OWN), PY, SERVER]);
  t.teardown(() => srv.child.kill('SIGKILL'));
  const port = await srv.port;
  const seen: Record<number, string> = {};
  // One worker thread serves them all, in this order: up, down, back to its own, up again.
  for (const p of [200, 10, 0, 255, 0]) {
    const [thread, forked, execed, main] = (await ask([], p, '127.0.0.1', port, 'nice')).split(' ').map(Number);
    seen[p] = `${thread}`;
    t.equal(thread, NICE(p, OWN), `priority ${p}: the serving thread runs at nice ${NICE(p, OWN)}`);
    t.equal(forked, NICE(p, OWN), `priority ${p}: a child it forks too`);
    t.equal(execed, NICE(p, OWN), `priority ${p}: and a program it execs`);
    t.equal(main, OWN, `priority ${p}: the thread that accepted the connection keeps its own nice`);
  }
  // A child forked at priority 200 that leaves the run's cgroup outlives the run.
  const [escaped, escapedNice] = (await ask([], 200, '127.0.0.1', port, `escape ${cgroup2Mount()}`)).split(' ').map(Number);
  t.teardown(() => {
    try {
      process.kill(escaped, 'SIGKILL');
    } catch {
      /* gone */
    }
  });
  t.equal(escapedNice, NICE(200, OWN), 'the escaping child runs at the priority it was forked with');
  t.equal(await ask([], 0, '127.0.0.1', port, 'quit'), 'bye');
  const end = await srv.done;
  t.equal(end.status, 0, end.stderr);
  const stat = fs.readFileSync(`/proc/${escaped}/stat`, 'utf8');
  t.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]), OWN, 'after the run, the process that outlived it has its own nice back');
  const rep = JSON.parse(fs.readFileSync(report, 'utf8'));
  t.ok(rep.restored >= 1, `restored at the end: ${rep.restored}`);
  t.equal(rep.lost, 0);
  t.equal(rep.failed, 0);
  t.ok(rep.reniced >= 5, `reniced ${rep.reniced} times`);
  t.ok(rep.latencySamples > 0 && rep.latencyP50Ns > 0, 'latency measured');
  t.match(end.stderr, /scheduler: \d+ priority change\(s\), \d+ renice\(s\) of \d+ thread\(s\), in effect [\d.]+ µs after the change/);
});

/** A Node client (the SDK changes its record per request) on one connection: NICE_AFTER_FIRST NICE_WHILE_WAITING NICE_SERVING_SECOND. */
const SDK_CLIENT = `
const sdk = require('causeway/sdk');
const net = require('node:net');
const fs = require('node:fs');
const [host, port] = process.argv.slice(1);
const s = net.connect(Number(port), host);
let buf = '';
let waiter;
s.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) waiter(buf.slice(0, i));
});
const next = () => new Promise((r) => (waiter = r));
const send = (priority, text) => sdk.run(sdk.newTrace({ priority }), () => s.write(text + '\\n'));
s.on('connect', async () => {
  send(10, 'persist');
  const [tid, first] = (await next()).split(' ');
  send(200, 'again');
  await new Promise((r) => setTimeout(r, 250)); // the server reads it only 0.5 s after its reply
  const st = fs.readFileSync('/proc/' + tid + '/stat', 'utf8');
  const waiting = st.slice(st.lastIndexOf(')') + 2).split(' ')[16];
  const [, second] = (await next()).split(' ');
  console.log(first, waiting, second);
  s.end();
});
`;

t.test('a record arriving on a connection renices its reader before it reads', { skip: skip ?? false, timeout: 120000 }, async (t) => {
  const srv = background(['run', '--no-sample', '--actor', 'scheduler', '--', PY, SERVER]);
  t.teardown(() => srv.child.kill('SIGKILL'));
  const port = await srv.port;
  const r = await causeway(['run', '-q', '--', process.execPath, '-e', SDK_CLIENT, '127.0.0.1', String(port)], { cwd: ROOT });
  t.equal(r.status, 0, r.stderr);
  const [first, waiting, second] = r.stdout.trim().split(' ').map(Number);
  t.equal(first, NICE(10, 0), 'the first request (priority 10) is served at its nice');
  t.equal(waiting, NICE(200, 0), 'the second (priority 200) arrived while the thread was not reading: it runs at its nice already');
  t.equal(second, NICE(200, 0), 'and serves it so');
  await ask([], 0, '127.0.0.1', port, 'quit');
  const end = await srv.done;
  t.equal(end.status, 0, end.stderr);
});

/** One thread that accepts and serves each connection itself (prefork style): "PID NICE" per request. */
const ACCEPTOR = `
import os, socket, time
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    line = c.makefile('rb').readline().split()
    time.sleep(0.05)
    with open('/proc/thread-self/stat') as f:
        nice = f.read().rsplit(')', 1)[1].split()[16]
    c.sendall(('bye' if line[0] == b'quit' else f'{os.getpid()} {nice}').encode() + b'\\n')
    c.close()
    if line[0] == b'quit':
        break
`;

t.test('a thread waiting in accept() serves no one: its own nice', { skip: skip ?? false, timeout: 120000 }, async (t) => {
  const OWN = 3;
  const dir = tmpdir(t);
  const report = path.join(dir, 'report.json');
  const srv = background(['run', '--no-sample', '--actor', `scheduler:report=${report}`, '--', 'nice', '-n', String(OWN), PY, '-c', ACCEPTOR]);
  t.teardown(() => srv.child.kill('SIGKILL'));
  const port = await srv.port;
  const niceOf = (pid: number) => {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16]);
  };
  for (const p of [200, 10]) {
    const [pid, serving] = (await ask([], p, '127.0.0.1', port, 'nice')).split(' ').map(Number);
    t.equal(serving, NICE(p, OWN), `priority ${p}: served at nice ${NICE(p, OWN)}`);
    await waitFor(() => niceOf(pid) === OWN, 5000, `the server back at its own nice in accept() after priority ${p}`).catch(() => undefined);
    t.equal(niceOf(pid), OWN, `priority ${p}: back in accept(), it waits at its own nice`);
  }
  await ask([], 0, '127.0.0.1', port, 'quit');
  const end = await srv.done;
  t.equal(end.status, 0, end.stderr);
  t.ok(JSON.parse(fs.readFileSync(report, 'utf8')).idled >= 2, 'counted as idle twice');
});

t.test('TCP packets of a high-priority request leave with its socket priority', { skip: skip ?? false, timeout: 120000 }, async (t) => {
  const [server, client] = makeHosts(t, 2);
  // HTB puts a packet whose priority names one of its classes (major 1:) in that class:
  // SO_PRIORITY 0x10010 -> class 1:10 (tc writes class ids in hex); everything else -> the default class 1:20.
  const tc = (...a: string[]) => runCommand('ip', ['netns', 'exec', server.ns, 'tc', ...a]);
  await tc('qdisc', 'add', 'dev', 'eth0', 'root', 'handle', '1:', 'htb', 'default', '20');
  for (const id of ['1:10', '1:20']) await tc('class', 'add', 'dev', 'eth0', 'parent', '1:', 'classid', id, 'htb', 'rate', '1gbit');
  const classes = async () => {
    const out = (await tc('-s', 'class', 'show', 'dev', 'eth0')).stdout;
    const sent = (id: string) => Number(new RegExp(`class htb ${id} [^\\n]*\\n\\s*Sent \\d+ bytes (\\d+) pkt`).exec(out)?.[1] ?? NaN);
    return { high: sent('1:10'), normal: sent('1:20') };
  };
  const trust = ['--trust', subnet(server)];
  const srv = background(['run', '--no-sample', ...trust, '--actor', `scheduler:socket=128/${0x10010}`, '--', 'ip', 'netns', 'exec', server.ns, PY, SERVER, server.addr]);
  t.teardown(() => srv.child.kill('SIGKILL'));
  const port = await srv.port;
  const inNs = ['ip', 'netns', 'exec', client.ns];
  const c0 = await classes();
  t.equal(await ask(inNs, 10, server.addr, port, 'nice', trust).then((s) => s.split(' ')[0]), String(NICE(10, 0)));
  const c1 = await classes();
  t.equal(c1.high - c0.high, 0, 'a priority-10 request: no packet in the high class');
  t.ok(c1.normal > c0.normal, `a priority-10 request: its packets in the default class (${c1.normal - c0.normal})`);
  t.equal(await ask(inNs, 200, server.addr, port, 'nice', trust).then((s) => s.split(' ')[0]), String(NICE(200, 0)));
  const c2 = await classes();
  t.ok(c2.high - c1.high >= 1, `a priority-200 request: the reply left in the high class (${c2.high - c1.high} packets)`);
  await ask(inNs, 0, server.addr, port, 'quit', trust);
  const end = await srv.done;
  t.equal(end.status, 0, end.stderr);
});

/** The newest Debian PostgreSQL (bench/servers.ts installs it through scripts/setup.sh). */
function pgBin(): string | null {
  const base = '/usr/lib/postgresql';
  const v = fs.existsSync(base) ? fs.readdirSync(base).filter((d) => fs.existsSync(path.join(base, d, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a))[0] : undefined;
  return v ? path.join(base, v, 'bin') : null;
}

t.test('PostgreSQL backends follow their client priority', { skip: skip ?? (pgBin() || process.env.CAUSEWAY_REQUIRE_BPF === '1' ? false : 'PostgreSQL is not installed: run scripts/setup.sh'), timeout: 180000 }, async (t) => {
  const bin = pgBin()!;
  const dir = tmpdir(t);
  fs.chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const [uid, gid] = ['-u', '-g'].map((f) => Number(execFileSync('id', [f, 'postgres'], { encoding: 'utf8' })));
  fs.chownSync(data, uid, gid);
  execFileSync('runuser', ['-u', 'postgres', '--', path.join(bin, 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust'], { stdio: 'ignore' });
  const port = 20000 + (process.pid % 20000);
  const pg = spawn(process.execPath, [BIN, 'run', '--no-sample', '--actor', 'scheduler', '--', 'runuser', '-u', 'postgres', '--',
    path.join(bin, 'postgres'), '-D', data, '-p', String(port), '-k', data, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  pg.stderr!.on('data', (d) => (stderr += d));
  const ended = new Promise<number | null>((resolve) => pg.on('close', resolve));
  t.teardown(() => pg.kill('SIGKILL'));
  await waitFor(() => {
    try {
      execFileSync(path.join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port)]);
      return true;
    } catch {
      return false;
    }
  }, 30000, 'PostgreSQL to accept connections');
  // The backend reads its own nice while it runs the query (after the reactor had ample time).
  const sql = "select split_part(pg_read_file('/proc/self/stat'), ' ', 19) from (select pg_sleep(0.05)) s";
  for (const p of [200, 10, 0, 255]) {
    const r = await causeway(['run', '-q', '--no-sample', '--priority', String(p), '--', path.join(bin, 'psql'), '-X', '-Atc', sql, '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'postgres']);
    t.equal(r.status, 0, r.stderr);
    t.equal(Number(r.stdout.trim()), NICE(p, 0), `a priority-${p} client: its backend runs at nice ${NICE(p, 0)}`);
  }
  execFileSync('runuser', ['-u', 'postgres', '--', path.join(bin, 'pg_ctl'), '-D', data, 'stop', '-m', 'fast'], { stdio: 'ignore' });
  t.equal(await ended, 0, stderr);
  t.match(stderr, /scheduler: \d+ priority change\(s\), \d+ renice\(s\)/);
});
