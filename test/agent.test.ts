/**
 * causeway agent: follows cgroups that match a pattern, new ones too; keeps
 * its database within a size; exports to an OTLP collector that is down at
 * first; reports its health with `causeway status`; leaves its targets running.
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import { BIN, bpfUnavailable, causeway, cgroup2Mount, cgroupPids, inCgroup, pidAlive, runCommand, testCgroup, tmpdir, waitFor, freePort } from './helpers';

const skip = bpfUnavailable() ?? undefined;
const PY = '/usr/bin/python3';
const ECHO = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b'echo:' + c.recv(100))
    c.close()
`;

interface Status {
  state: string;
  targets: { target: string; events: number }[];
  stored: number;
  dbBytes: number;
  lost: Record<string, number>;
  pruned: { batches: number; events: number; traces: number };
  export: { traces: number; spans: number; failedAttempts: number; lastError: string | null };
}

function startAgent(t: { teardown(fn: () => void): void }, args: string[]): { child: ChildProcess; err: () => string } {
  const child = spawn(process.execPath, [BIN, 'agent', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  t.teardown(() => void child.kill('SIGKILL'));
  return { child, err: () => err };
}

const readStatus = (file: string): Status | null => {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Status;
  } catch {
    return null;
  }
};


/** Starts a service (python3 echo server) in a new cgroup below parent; its port. */
async function service(t: { teardown(fn: () => void): void }, dir: string): Promise<{ port: number; pid: number }> {
  fs.mkdirSync(dir);
  const p = spawn(inCgroup(dir, [PY, '-c', ECHO])[0], inCgroup(dir, [PY, '-c', ECHO]).slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => void p.kill('SIGKILL'));
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  await waitFor(() => out.includes('\n'), 10000, 'the service to start');
  return { port: Number(out.trim()), pid: p.pid! };
}

async function request(port: number, body: string): Promise<string> {
  const r = await runCommand(process.execPath, [BIN, 'run', '-q', '--', PY, '-c', `import socket; c = socket.create_connection(('127.0.0.1', ${port})); c.sendall(b'${body}'); print(c.recv(100).decode())`]);
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

t.test('the agent follows a cgroup created after it started, exports once its collector is up, and leaves its targets running', { skip }, async (t) => {
  const dir = tmpdir(t);
  const parent = testCgroup(t, 'agent');
  const rel = '/' + path.relative(cgroup2Mount(), parent);
  const statusFile = path.join(dir, 'status.json');
  const db = path.join(dir, 'agent.db');
  const port = await freePort(); // the collector: down at first
  const agent = startAgent(t, ['--cgroup', `${rel}/*`, '--db', db, '--status', statusFile, '--interval', '300ms', '--export-quiet', '500ms', '--otlp', `http://127.0.0.1:${port}/v1/traces`, '--otlp-encoding', 'json']);
  await waitFor(() => readStatus(statusFile)?.state === 'running', 20000, 'the agent to start');
  t.same(readStatus(statusFile)!.targets, [], 'no target yet');

  const svc = await service(t, path.join(parent, 'web'));
  await waitFor(() => (readStatus(statusFile)?.targets.length ?? 0) === 1, 20000, 'the agent to follow the new cgroup');
  t.equal(readStatus(statusFile)!.targets[0].target, `cgroup ${rel}/web`, 'it follows the cgroup made after it started');
  await waitFor(() => agent.err().includes(`following cgroup ${rel}/web`), 10000, 'the attachment');
  t.equal(await request(svc.port, 'one'), 'echo:one', 'the service answers');

  await waitFor(() => (readStatus(statusFile)?.export.failedAttempts ?? 0) >= 1, 30000, 'an export attempt to fail');
  const st = await causeway(['status', '--status', statusFile]);
  t.equal(st.status, 0, 'causeway status: running');
  t.match(st.stdout, /targets followed: 1/, st.stdout);
  t.match(st.stdout, /failed attempts \(last: .*ECONNREFUSED/, 'it says the collector is unreachable');

  // The collector comes up: what was waiting is exported.
  const posts: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      posts.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  await waitFor(() => (readStatus(statusFile)?.export.traces ?? 0) >= 1, 90000, 'the export to go through');
  const ls = await causeway(['ls', '--db', db, '--json']);
  const traces = (JSON.parse(ls.stdout) as { id: string }[]).map((r) => r.id);
  t.ok(traces.length >= 1, 'the trace is stored');
  const got = posts.join('');
  t.ok(traces.every((id) => got.includes(id)), 'and every stored trace reached the collector once it was up');

  agent.child.kill('SIGTERM');
  const code = await new Promise((resolve) => agent.child.once('exit', resolve));
  t.equal(code, 0, 'the agent stops cleanly on SIGTERM');
  t.equal(readStatus(statusFile)!.state, 'stopped', 'its status says so');
  t.ok(pidAlive(svc.pid) && cgroupPids(path.join(parent, 'web')).includes(svc.pid), 'the service still runs in its cgroup');
  t.equal(await request(svc.port, 'two'), 'echo:two', 'and answers');

  // A new agent takes over: what was exported is not exported again.
  const before = posts.length;
  const again = startAgent(t, ['--cgroup', `${rel}/*`, '--db', db, '--status', statusFile, '--interval', '300ms', '--export-quiet', '500ms', '--otlp', `http://127.0.0.1:${port}/v1/traces`, '--otlp-encoding', 'json']);
  await waitFor(() => again.err().includes(`following cgroup ${rel}/web`), 20000, 'the second agent to follow the service');
  await new Promise((r) => setTimeout(r, 1500)); // a few export rounds
  again.child.kill('SIGTERM');
  await new Promise((resolve) => again.child.once('exit', resolve));
  const resent = posts.slice(before).join('');
  t.ok(traces.every((id) => !resent.includes(id)), 'a restarted agent does not export the same traces again');
});

t.test('the agent keeps its database within --max-size', { skip }, async (t) => {
  const dir = tmpdir(t);
  const parent = testCgroup(t, 'agentsz');
  const rel = '/' + path.relative(cgroup2Mount(), parent);
  const statusFile = path.join(dir, 'status.json');
  const db = path.join(dir, 'agent.db');
  const max = 512 * 1024;
  const agent = startAgent(t, ['--cgroup', rel + '/*', '--db', db, '--status', statusFile, '--interval', '200ms', '--max-size', String(max)]);
  await waitFor(() => readStatus(statusFile)?.state === 'running', 20000, 'the agent to start');
  // A busy process: 40,000 round trips on two pipes between two processes, 4 events each.
  const busy = path.join(parent, 'busy');
  fs.mkdirSync(busy);
  const hold = spawn(inCgroup(busy, ['/bin/sleep', '60'])[0], inCgroup(busy, ['/bin/sleep', '60']).slice(1), { stdio: 'ignore' });
  t.teardown(() => void hold.kill('SIGKILL'));
  await waitFor(() => (readStatus(statusFile)?.targets.length ?? 0) === 1, 20000, 'the agent to follow it');
  await waitFor(() => agent.err().includes('following cgroup'), 10000, 'the attachment');
  const work = `
import os
a_r, a_w = os.pipe()
b_r, b_w = os.pipe()
if os.fork() == 0:
    os.close(a_w)
    while True:
        m = os.read(a_r, 8)
        if not m:
            os._exit(0)
        os.write(b_w, m)
os.close(b_w)
os.close(a_r)
for i in range(40000):
    os.write(a_w, b'12345678')
    os.read(b_r, 8)
os.close(a_w)
os.wait()
`;
  // Moved into the cgroup, then a second for the agent's attachment to adopt it (it looks every 500 ms).
  const argv = inCgroup(busy, ['/bin/sh', '-c', 'sleep 1.5; exec "$0" -c "$1"', PY, work]);
  const r = await runCommand(argv[0], argv.slice(1));
  t.equal(r.status, 0, r.stderr);
  await waitFor(() => (readStatus(statusFile)?.pruned.events ?? 0) > 0, 30000, 'the agent to prune');
  agent.child.kill('SIGTERM');
  await new Promise((resolve) => agent.child.once('exit', resolve));
  const s = readStatus(statusFile)!;
  t.ok(s.stored > 20000, `it stored ${s.stored} events`);
  t.ok(s.pruned.events > 0, `and dropped the oldest: ${JSON.stringify(s.pruned)}`);
  t.ok(s.dbBytes <= max, `the database's pages in use are within the limit at the end: ${s.dbBytes} bytes for --max-size ${max}`);
  // Between two prunes (every interval) the file takes what arrives meanwhile; freed pages are reused after.
  const size = fs.statSync(db).size;
  t.ok(size < 8 * max, `the file stays bounded: ${size} bytes (160,000 events are about 2.4 MB packed)`);
  const ls = await causeway(['ls', '--db', db, '--json', '-n', '100']);
  t.equal(ls.status, 0, 'the pruned database still lists');
  const rows = JSON.parse(ls.stdout) as { id: string }[];
  t.ok(rows.length > 0, 'the newest traces are kept');
  const show = await causeway(['show', '--db', db, rows[0].id]);
  t.equal(show.status, 0, `and shows them: ${show.stderr}`);
});
