/**
 * causeway attach and trace --attach: processes started before causeway are
 * followed from the moment it attaches (threads that run already, pipes and
 * connections opened before, children forked after), and detaching leaves
 * them running and unchanged.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import { BIN, bpfUnavailable, causeway, cgroupPids, EventJson, inCgroup, pidAlive, readEvents, ROOT, runCommand, testCgroup, tmpdir, waitFor } from './helpers';

const skip = bpfUnavailable() ?? undefined;
const PY = '/usr/bin/python3';
const SVC = path.join(ROOT, 'test', 'fixtures', 'attach-svc.py');

/** A process whose output lines are collected as they come. */
function start(argv: string[], opts: { stdin?: boolean } = {}): { child: ChildProcess; out: string[]; err: string[] } {
  const child = spawn(argv[0], argv.slice(1), { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  const err: string[] = [];
  const lines = (into: string[]) => {
    let rest = '';
    return (d: Buffer) => {
      const parts = (rest + d.toString()).split('\n');
      rest = parts.pop()!;
      into.push(...parts);
    };
  };
  child.stdout!.on('data', lines(out));
  child.stderr!.on('data', lines(err));
  return { child, out, err };
}

/** Its exit status, once its output has been read to the end ('close', not 'exit': the last lines may still be in the pipe). */
function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null && child.stdout?.readableEnded !== false && child.stderr?.readableEnded !== false) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('close', (code) => resolve(code)));
}

/** One request to the service, from a process of its own (under causeway run when events is given). */
async function request(port: number, body: string, events?: string): Promise<string> {
  const client = `import socket; c = socket.create_connection(('127.0.0.1', ${port})); c.sendall(b'${body}\\n'); print(c.recv(4096).decode().strip())`;
  const argv = events ? [BIN, 'run', '-q', '-e', events, '--', PY, '-c', client] : null;
  const r = argv ? await runCommand(process.execPath, argv) : await runCommand(PY, ['-c', client]);
  if (r.status !== 0) throw new Error(`client failed: ${r.stderr}`);
  return r.stdout.trim();
}

const ofTrace = (evs: EventJson[], trace: string) => evs.filter((e) => e.trace === trace);

t.test('attach to a cgroup: a service that started first is traced, then left running', { skip }, async (t) => {
  const dir = tmpdir(t);
  const cg = testCgroup(t, 'attach');
  const svc = start(inCgroup(cg, [PY, SVC]));
  t.teardown(() => void svc.child.kill('SIGKILL'));
  await waitFor(() => svc.out.length > 0, 10000, 'the service to start');
  const ids = JSON.parse(svc.out[0]) as { port: number; worker: number; logger: number; backend: number; cache: number };
  const svcPid = svc.child.pid!;
  t.equal(await request(ids.port, 'before'), 'answer:BEFORE', 'the service answers before causeway is there');

  const db = path.join(dir, 'traces.db');
  const evFile = path.join(dir, 'attached.jsonl');
  const att = start([process.execPath, BIN, 'trace', '--attach', '--cgroup', cg, '--db', db, '-e', evFile]);
  t.teardown(() => void att.child.kill('SIGKILL'));
  await waitFor(() => att.err.some((l) => l.includes('following cgroup')), 20000, 'causeway to attach');
  const following = att.err.find((l) => l.includes('following cgroup'))!;
  const m = /adopted (\d+) running thread\(s\) of (\d+) process\(es\) and (\d+) open TCP connection\(s\)/.exec(following);
  t.ok(m && Number(m[1]) >= 5 && Number(m[2]) === 1, `the service's threads were adopted: ${following}`);
  t.equal(m && Number(m[3]), 2, 'and both ends of its open TCP connection to the cache switched on (the listener is not a connection)');

  const clientEv = path.join(dir, 'client.jsonl');
  t.equal(await request(ids.port, 'traced', clientEv), 'answer:TRACED', 'a request while attached is answered');
  const send = readEvents(clientEv).find((e) => e.type === 'send' && e.channel?.kind === 'tcp');
  t.ok(send, 'the client run sent over TCP');
  const trace = send!.trace;

  att.child.kill('SIGINT');
  t.equal(await exited(att.child), 0, 'causeway detaches on SIGINT with status 0');
  const summary = att.err.join('\n');
  t.match(summary, /detached from cgroup .* \(SIGINT\)/, 'it says why it detached');
  t.match(summary, /tracer stored \d+ events/, 'the tracer stored the events');

  const evs = ofTrace(readEvents(evFile), trace);
  const by = (type: string, tid: number, kind?: string) => evs.find((e) => e.type === type && e.tid === tid && (!kind || e.channel?.kind === kind));
  const recv = by('recv', ids.worker, 'tcp');
  t.ok(recv, 'the worker thread (running before the attach) received the request in the client\'s trace');
  t.equal(recv?.pid, svcPid);
  t.ok(by('recv', ids.logger, 'pipe'), 'the logger thread read it from a pipe opened before the attach, in the same trace');
  t.ok(by('recv', ids.backend, 'unix'), 'the backend thread read it from a socketpair opened before the attach, in the same trace');
  t.ok(by('recv', ids.cache, 'tcp'), 'the cache thread read it from a TCP connection opened before the attach, in the same trace');
  t.ok(evs.filter((e) => e.type === 'send' && e.tid === ids.worker).length >= 4, 'the worker\'s sends (pipe, cache, backend, answer) carry the trace');

  const shown = await causeway(['show', '--db', db, '--json', trace]);
  t.equal(shown.status, 0, shown.stderr);
  const g = JSON.parse(shown.stdout) as { processes: unknown[]; hops: { to: string }[] };
  t.ok(g.hops.some((h) => h.to === `python3[${svcPid}]`), 'causeway show has the hop into the attached service');

  // Detached: the same process, in the same cgroup, still serving.
  t.ok(pidAlive(svcPid), 'the service still runs');
  t.same(cgroupPids(cg), [svcPid], 'in its own cgroup, which causeway left as it was');
  t.equal(await request(ids.port, 'after'), 'answer:AFTER', 'and it still answers, byte for byte');
});

t.test('attach --pid: a process tree, its threads, and children forked after the attach', { skip }, async (t) => {
  const dir = tmpdir(t);
  // The parent forks a reader before the attach; after it, one child per stdin line writes the line to the reader's pipe.
  const tree = `
import json, os, sys
r, w = os.pipe()
kid = os.fork()
if kid == 0:
    os.close(w)
    while True:
        d = os.read(r, 100)
        if not d:
            os._exit(0)
        print('got', d.decode(), flush=True)
os.close(r)
print(json.dumps({'reader': kid}), flush=True)
for line in sys.stdin:
    if line.strip() == 'exit':
        break
    n = os.fork()
    if n == 0:
        os.write(w, line.strip().encode())
        os._exit(0)
    os.waitpid(n, 0)
os.close(w)
os.waitpid(kid, 0)
`;
  const p = start([PY, '-c', tree], { stdin: true });
  t.teardown(() => void p.child.kill('SIGKILL'));
  await waitFor(() => p.out.length > 0, 10000, 'the tree to start');
  const reader = (JSON.parse(p.out[0]) as { reader: number }).reader;
  const root = p.child.pid!;
  t.teardown(() => {
    try {
      process.kill(reader, 'SIGKILL');
    } catch {
      /* gone */
    }
  });

  const evFile = path.join(dir, 'ev.jsonl');
  const att = start([process.execPath, BIN, 'attach', '--pid', String(root), '-e', evFile]);
  t.teardown(() => void att.child.kill('SIGKILL'));
  await waitFor(() => att.err.some((l) => l.includes('following process')), 20000, 'causeway to attach');
  t.match(att.err.join('\n'), /adopted 2 running thread\(s\) of 2 process\(es\)/, 'the root and its reader were adopted');

  p.child.stdin!.write('m1\n');
  await waitFor(() => p.out.includes('got m1'), 10000, 'the message to cross');
  p.child.stdin!.end('exit\n');
  t.equal(await exited(att.child), 0, 'causeway ends by itself once the root process exits');
  t.match(att.err.join('\n'), new RegExp(`detached from process ${root} \\(python3\\) \\(process ${root} exited\\)`), 'and says so');

  const evs = readEvents(evFile);
  const fork = evs.find((e) => e.type === 'fork' && e.pid === root);
  t.ok(fork, 'the fork after the attach was followed');
  const writer = fork?.child?.pid;
  const send = evs.find((e) => e.type === 'send' && e.pid === writer && e.channel?.kind === 'pipe');
  t.ok(send, 'the child forked after the attach sent on the pipe made before it');
  const recv = evs.find((e) => e.type === 'recv' && e.pid === reader && e.parents.includes(send?.event ?? '-'));
  t.ok(recv, 'the reader forked before the attach received it, its parent the child\'s send');
  t.equal(recv?.trace, send?.trace, 'in one trace');
  const pids = new Set(evs.map((e) => e.pid));
  t.notOk(pids.has(process.pid), 'nothing outside the tree is followed');
  t.ok([...pids].every((q) => q === root || q === reader || q === writer), `only the tree's processes have events: ${[...pids].join(',')}`);
});

t.test('detaching mid-stream changes no byte: TCP opened while attached, a pipe opened before', { skip }, async (t) => {
  const cg = testCgroup(t, 'attbytes');
  // A TCP server, and a pipe from a producer to a consumer; both ends hash what they see. The client connects on "go".
  const prog = `
import hashlib, os, socket, sys, threading, time
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
r, w = os.pipe()
def say(*words):  # one write: threads' lines never interleave
    os.write(1, (' '.join(map(str, words)) + '\\n').encode())
def consume(fd, name):
    h = hashlib.sha256(); n = 0
    while True:
        d = os.read(fd, 65536) if isinstance(fd, int) else fd.recv(65536)
        if not d: break
        h.update(d); n += len(d)
    say(name, 'got', n, h.hexdigest())
def produce(send, name, close):
    h = hashlib.sha256(); n = 0
    for i in range(400):
        chunk = bytes((i * 7 + k) % 251 for k in range(20000))
        send(chunk); h.update(chunk); n += len(chunk)
        if i == 40: say(name, 'streaming')
        time.sleep(0.005)
    close()
    say(name, 'sent', n, h.hexdigest())
threading.Thread(target=consume, args=(r, 'pipe')).start()
say('ready')
sys.stdin.readline()
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
threading.Thread(target=consume, args=(a, 'tcp')).start()
threading.Thread(target=produce, args=(lambda b: os.write(w, b) and None, 'pipe', lambda: os.close(w))).start()
produce(c.sendall, 'tcp', c.close)
`;
  const argv = inCgroup(cg, [PY, '-c', prog]);
  const p = start(argv, { stdin: true });
  t.teardown(() => void p.child.kill('SIGKILL'));
  await waitFor(() => p.out.includes('ready'), 10000, 'the program to start');
  const att = start([process.execPath, BIN, 'attach', '--cgroup', cg]);
  t.teardown(() => void att.child.kill('SIGKILL'));
  await waitFor(() => att.err.some((l) => l.includes('following cgroup')), 20000, 'causeway to attach');
  p.child.stdin!.write('go\n');
  // Detach while both streams run (a tenth of each is out): however slow the machine, the option was on the wire by then.
  await waitFor(() => p.out.includes('tcp streaming') && p.out.includes('pipe streaming'), 20000, 'both streams to run');
  att.child.kill('SIGTERM');
  t.equal(await exited(att.child), 0, 'causeway detached mid-stream');
  t.match(att.err.join('\n'), /tcpOptionsWritten=[1-9]/, 'the TCP option was on the wire while attached');
  t.equal(await exited(p.child), 0, 'the program ran to its end');
  for (const kind of ['pipe', 'tcp']) {
    const sent = p.out.find((l) => l.startsWith(`${kind} sent`))?.split(' ');
    const got = p.out.find((l) => l.startsWith(`${kind} got`))?.split(' ');
    t.ok(sent && got, `${kind}: both ends reported`, { output: p.out, errors: p.err });
    t.same(got?.slice(2), sent?.slice(2), `${kind}: 8,000,000 bytes, the same hash on both ends`);
  }
});

t.test('attach ends when the cgroup it follows is removed', { skip }, async (t) => {
  const cg = testCgroup(t, 'attgone');
  const sleeper = spawn(inCgroup(cg, ['/bin/sleep', '60'])[0], inCgroup(cg, ['/bin/sleep', '60']).slice(1), { stdio: 'ignore' });
  t.teardown(() => void sleeper.kill('SIGKILL'));
  await waitFor(() => cgroupPids(cg).length === 1, 5000, 'sleep in its cgroup');
  const att = start([process.execPath, BIN, 'attach', '--cgroup', cg]);
  t.teardown(() => void att.child.kill('SIGKILL'));
  await waitFor(() => att.err.some((l) => l.includes('following cgroup')), 20000, 'causeway to attach');
  sleeper.kill('SIGKILL');
  await waitFor(() => cgroupPids(cg).length === 0, 5000, 'the cgroup to empty');
  fs.rmdirSync(cg);
  t.equal(await exited(att.child), 0, 'causeway ends by itself');
  t.match(att.err.join('\n'), /detached from cgroup .* \(its cgroup .* was removed\)/, 'and says why');
});

t.test('attach refuses what it cannot follow, with what to do', { skip }, async (t) => {
  const mount = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' - ')[1]?.startsWith('cgroup2'))!.split(' ')[4];
  const cases: [string[], RegExp][] = [
    [['attach'], /say what to attach to/],
    [['attach', '--pid', '1', '--cgroup', '/x'], /say what to attach to, once/],
    [['attach', '--cgroup', '/no-such-cgroup-here'], /no cgroup \/no-such-cgroup-here/],
    [['attach', '--cgroup', mount], /root cgroup/],
    [['attach', '--pid', String(process.pid)], /causeway itself or one of its ancestors/],
    [['attach', '--pid', '4194300'], /no process 4194300/],
    [['attach', '--pid', 'abc'], /expected an integer/],
    // No container tool on PATH (so that no container store is touched): the message names both.
    [['attach', '--container', 'no-such-container-x'], /no container no-such-container-x: podman: not installed; docker: not installed/],
    [['attach', '--container', '../etc'], /not a container name/],
    [['trace', '--pid', '1'], /add --attach/],
    [['trace', '--attach', '--pid', '1', '--', 'true'], /attach starts no command/],
    [['trace'], /no command to run/],
  ];
  if (!fs.existsSync('/run/systemd/system')) cases.push([['attach', '--unit', 'nginx'], /systemd is not running here/]);
  for (const [args, want] of cases) {
    const r = await causeway(args, args.includes('--container') ? { env: { ...process.env, PATH: '/nonexistent' } } : {});
    t.not(r.status, 0, `causeway ${args.join(' ')} fails`);
    t.match(r.stderr, want, `causeway ${args.join(' ')}: ${r.stderr.trim().split('\n')[0]}`);
  }
});

t.test('attach --unit follows a systemd unit', { skip: skip ?? (fs.existsSync('/run/systemd/system') ? undefined : 'systemd is not running on this machine (PID 1 is not systemd): --unit is checked above for its message only') }, async (t) => {
  const unit = `cwtest-${process.pid}`;
  const run = await runCommand('systemd-run', ['--unit', unit, '--collect', PY, '-c', 'import time; time.sleep(60)']);
  t.equal(run.status, 0, run.stderr);
  t.teardown(() => runCommand('systemctl', ['stop', unit]).then(() => undefined));
  const att = start([process.execPath, BIN, 'attach', '--unit', unit]);
  t.teardown(() => void att.child.kill('SIGKILL'));
  await waitFor(() => att.err.some((l) => l.includes(`following unit ${unit}.service`)), 20000, 'causeway to attach');
  await runCommand('systemctl', ['stop', unit]);
  t.equal(await exited(att.child), 0, 'causeway ends with the unit');
});
