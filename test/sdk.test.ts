/**
 * The in-process SDK with the real kernel shim: an event-driven Node server
 * whose requests interleave on one thread keeps each request's trace with
 * run(); a program that is not root attaches and sets its own records; a
 * process outside the run, or one asking for another process's thread, is
 * refused; and tenants set through the SDK are charged by the accountant.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { bpfUnavailable, causeway, EventJson, readEvents, ROOT, tmpdir, waitFor } from './helpers';
import { newTraceId } from '../src/kernel/record';
import { run } from '../src/runtime/runtime';
import type { CausalEvent } from '../src/kernel/events';
import { FieldRegistry } from '../src/actor/fields';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

type Ingress = EventJson & { minted?: boolean };

/** A TCP port that was free a moment ago on 127.0.0.1 (ingress-mint needs it before the run starts). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client from outside the run: one connection, counting the answers it got. */
async function client(port: number, name: string) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  const c = { name, sock, localPort: sock.localPort!, answers: 0 };
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      if (buf.slice(0, nl) === 'ok') c.answers++;
      buf = buf.slice(nl + 1);
    }
  });
  return c;
}

/** The backend's log: one { port, client, seq } per request, port being the front's end of that backend connection. */
function backendLog(file: string) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [port, name, seq] = l.split(' ');
      return { port: Number(port), name, seq: Number(seq) };
    });
}

const PER_CLIENT = 25;

/**
 * The front (sdk_front.js, mode sdk or plain) and the Python backend in one
 * run, ingress-mint on the front's port; the test is two clients from outside
 * whose requests interleave. Returns, per request the backend logged, whether
 * the backend's recv carried the trace minted for that client's connection.
 */
async function frontRun(t: Tap.Test, mode: 'sdk' | 'plain') {
  const dir = tmpdir(t);
  const port = await freePort();
  const [ev, ready, bport, log] = ['ev.jsonl', 'ready', 'bport', 'log'].map((n) => path.join(dir, n));
  // timeout: a front that never hears "quit" must not hold the run forever.
  const script =
    `timeout 40 python3 ${FIXTURES}/sdk_backend.py ${bport} ${log} & B=$!; ` +
    `while [ ! -s ${bport} ]; do sleep 0.02; done; ` +
    `timeout 40 node ${FIXTURES}/sdk_front.js ${port} $(cat ${bport}) ${mode} ${ready}; s=$?; kill $B; wait $B; exit $s`;
  let ended = false;
  const done = causeway(['run', '--actor', `ingress-mint:ports=${port}`, '--events', ev, '--', 'sh', '-c', script]);
  void done.then(() => (ended = true));
  const quit = () => net.connect(port, '127.0.0.1', function (this: net.Socket) { this.end('quit\n'); }).on('error', () => {});

  const clients: Awaited<ReturnType<typeof client>>[] = [];
  try {
    await waitFor(() => ended || fs.existsSync(ready), 20000, 'the front to listen');
    if (!ended) {
      clients.push(await client(port, 'A'), await client(port, 'B'));
      // Each sends without waiting for its answers: the front works on both at once.
      for (let seq = 0; seq < PER_CLIENT; seq++)
        for (const c of clients) {
          c.sock.write(`${c.name} ${seq}\n`);
          await sleep(Math.random() * 4);
        }
      await waitFor(() => ended || clients.every((c) => c.answers === PER_CLIENT), 20000, 'every answer');
    }
  } finally {
    for (const c of clients) c.sock.end();
    if (!ended) quit();
  }
  const r = await done;
  t.equal(r.status, 0, `the run succeeded:\n${r.stderr}`);
  t.same(clients.map((c) => c.answers), [PER_CLIENT, PER_CLIENT], 'every request was answered');
  if (r.status !== 0) return null;

  const events = readEvents(ev);
  // The trace the kernel minted for each client's connection, at its first read.
  const minted = new Map<string, string>();
  for (const c of clients) {
    const ing = events.filter((e: Ingress) => e.type === 'ingress' && e.minted && e.channel?.remotePort === c.localPort);
    t.equal(ing.length, 1, `one trace minted for client ${c.name}'s connection`);
    if (ing[0]) minted.set(c.name, ing[0].trace);
  }
  t.not(minted.get('A'), minted.get('B'), 'the two clients have different traces');

  const lines = backendLog(log);
  const expected = clients.flatMap((c) => Array.from({ length: PER_CLIENT }, (_, seq) => `${c.name} ${seq}`)).sort();
  t.same(lines.map((l) => `${l.name} ${l.seq}`).sort(), expected, 'the backend got every request once');
  // The backend's receives by the front's port, in time order: a port reused later pairs with its later log line.
  const recvs = new Map<number, EventJson[]>();
  const inOrder = [...events].sort((a, b) => (BigInt(a.ts) < BigInt(b.ts) ? -1 : 1));
  for (const e of inOrder)
    if (e.type === 'recv' && e.comm === 'python3' && e.channel?.kind === 'tcp') recvs.set(e.channel.remotePort!, [...(recvs.get(e.channel.remotePort!) ?? []), e]);
  return lines.map((l) => {
    const got = recvs.get(l.port)?.shift();
    return { ...l, want: minted.get(l.name), got: got?.trace, right: got !== undefined && got.trace === minted.get(l.name) };
  });
}

t.test('an event-driven Node server, two interleaving clients', { skip: skip ?? false }, async (t) => {
  t.test('with the SDK: every backend call carries its client\'s trace', async (t) => {
    const results = await frontRun(t, 'sdk');
    if (!results) return;
    t.equal(results.length, 2 * PER_CLIENT, 'as many backend calls as requests sent');
    const wrong = results.filter((r) => !r.right);
    t.same(wrong, [], `all ${results.length} backend receives carry the trace minted for their client`);
  });

  t.test('without the SDK: what the kernel alone gets', async (t) => {
    const results = await frontRun(t, 'plain');
    if (!results) return;
    t.comment(`the kernel alone: ${results.filter((r) => r.right).length} of ${results.length} backend calls carried their client's trace`);
  });
});

/** Why the checkout cannot be run as nobody here, or false. */
function nobodySkip(): string | false {
  if (process.geteuid?.() !== 0) return skip ?? false; // under CAUSEWAY_REQUIRE_BPF=1: run, and fail
  const sdkJs = path.join(ROOT, 'dist', 'src', 'sdk', 'index.js');
  const r = spawnSync('setpriv', [...NOBODY, 'env', '-u', 'NODE_OPTIONS', 'node', '-e', `require(${JSON.stringify(sdkJs)})`], { encoding: 'utf8' });
  if (r.error) return `cannot run setpriv: ${r.error.message}`;
  return r.status === 0 ? false : `nobody cannot run node with this checkout (a private parent directory?): ${r.stderr.trim().split('\n')[0]}`;
}

t.test('the SDK from a program that is not root', { skip: skip ?? nobodySkip() }, async (t) => {
  const dir = tmpdir(t);
  const [ev, bport, log] = ['ev.jsonl', 'bport', 'log'].map((n) => path.join(dir, n));
  const root = newTraceId();
  const script =
    `timeout 30 python3 ${FIXTURES}/sdk_backend.py ${bport} ${log} & B=$!; ` +
    `while [ ! -s ${bport} ]; do sleep 0.02; done; ` +
    // env -u: tap's NODE_OPTIONS hooks would write into the checkout's .tap as nobody.
    `setpriv ${NOBODY.join(' ')} env -u NODE_OPTIONS timeout 30 node ${FIXTURES}/sdk_client.js $(cat ${bport}) 'nobody 1'; s=$?; kill $B; wait $B; exit $s`;
  const r = await causeway(['run', '--trace', root, '--events', ev, '--', 'sh', '-c', script]);
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stderr, /causeway\/sdk:/, 'no SDK warning');
  const out = JSON.parse(r.stdout) as { uid: number; attached: boolean; trace: string; localPort: number; answer: string };
  t.match(out, { uid: 65534, attached: true, answer: 'ok\n' }, 'nobody attached and was answered');
  t.not(out.trace, root, 'its record is a new trace');
  const recv = readEvents(ev).filter((e) => e.type === 'recv' && e.comm === 'python3' && e.channel?.remotePort === out.localPort);
  t.equal(recv.length, 1, "the server's receive from nobody's connection");
  t.equal(recv[0]?.trace, out.trace, "it carries the trace nobody's program set, not the root's");
});

/** Runs node with env; resolves with its pid, status and output. */
function node(args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ pid: number; status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn('node', args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ pid: child.pid!, status, stdout, stderr }));
  });
}

t.test('a process outside the run is refused', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [sock, answers, done] = ['sock', 'answers', 'done'].map((n) => path.join(dir, n));
  // The root (sh) names the socket and waits; inside, Python asks for the root's thread, pid 1's, and its own.
  const script =
    `echo "$CAUSEWAY_SDK_SOCKET" > ${sock}.tmp; mv ${sock}.tmp ${sock}; ` +
    `timeout 30 python3 ${FIXTURES}/sdk_attach.py "$CAUSEWAY_SDK_SOCKET" $$ 1 self > ${answers}.tmp; mv ${answers}.tmp ${answers}; ` +
    `n=0; while [ ! -e ${done} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; echo $$ > ${dir}/rootpid`;
  let ended = false;
  // --events: without events no exit releases the slots, and the runtime throws at the end (src/runtime/runtime.ts closes the SDK server after the shim).
  const running = causeway(['run', '--events', path.join(dir, 'ev.jsonl'), '--', 'sh', '-c', script]);
  void running.then(() => (ended = true));
  try {
    await waitFor(() => ended || fs.existsSync(sock), 20000, 'the run to start');
    const socketPath = fs.readFileSync(sock, 'utf8').trim();
    t.ok(socketPath, 'the command got CAUSEWAY_SDK_SOCKET');
    const outside = await node(['-e', "process.stdout.write(String(require('causeway/sdk').attached()))"], {
      ...process.env,
      CAUSEWAY_SDK_SOCKET: socketPath,
    });
    t.equal(outside.status, 0, outside.stderr);
    t.equal(outside.stdout, 'false', 'a root process outside the run is not attached');
    t.match(outside.stderr, new RegExp(`^causeway/sdk: .*process ${outside.pid} is not part of this causeway run$`, 'm'), 'and is told why');
    await waitFor(() => ended || fs.existsSync(answers), 20000, 'the answers from inside');
  } finally {
    fs.writeFileSync(done, '');
  }
  const r = await running;
  t.equal(r.status, 0, r.stderr);
  const rootPid = Number(fs.readFileSync(path.join(dir, 'rootpid'), 'utf8'));
  const [other, init, self] = fs.readFileSync(answers, 'utf8').trim().split('\n');
  t.match(other, new RegExp(`^${rootPid} error thread ${rootPid} is not a thread of process \\d+ nofd$`), "another process's thread of the run: refused, no slot map");
  t.match(init, /^1 error thread 1 is not a thread of process \d+ nofd$/, "pid 1's thread: refused");
  t.match(self, /^\d+ ok \d+ fd$/, 'its own thread: a slot and the map');
});

t.test('tenants through the SDK and the accountant', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [report, out] = ['report.json', 'out'].map((n) => path.join(dir, n));
  const events: CausalEvent[] = [];
  const res = await run({
    command: 'sh',
    args: ['-c', `timeout 30 node ${FIXTURES}/sdk_tenants.js > ${out}`],
    actors: [`accountant:report=${report}`],
    onEvents: (b) => events.push(...b),
    summary: false,
  });
  t.equal(res.status, 0, 'the jobs ran');
  const o = JSON.parse(fs.readFileSync(out, 'utf8')) as { attached: boolean; layout: string; jobs: { tenant: number; pid: number; status: number; out: string }[] };
  t.equal(o.attached, true, 'the SDK attached');
  t.match(o.jobs, [{ tenant: 1, status: 0 }, { tenant: 2, status: 0 }]);

  const tenants = (JSON.parse(fs.readFileSync(report, 'utf8')) as { tenants: Record<string, { cpuNs: number; bytesRead: number; bytesWritten: number }> }).tenants;
  t.ok(tenants['1'] && tenants['2'], `tenants 1 and 2 are in the report: ${JSON.stringify(tenants)}`);
  t.ok(tenants['1']?.cpuNs > 0 && tenants['2']?.cpuNs > 0, 'each was charged CPU');
  t.ok(tenants['1']?.bytesWritten >= 1e6, "tenant 1 was charged head's 1 MB");
  t.ok(tenants['2']?.bytesWritten >= 2e6, "tenant 2 was charged head's 2 MB");
  t.ok(tenants['2']?.bytesWritten > tenants['1']?.bytesWritten, 'tenant 2 wrote more than tenant 1');

  // Each job's sh forked head, gzip and wc: their events carry the job's tenant.
  const registry = FieldRegistry.parse(o.layout);
  const tenantOf = (e: CausalEvent) => registry.read(e.record.actor, 'accountant').tenant;
  for (const job of o.jobs) {
    const children = new Set(events.filter((e) => e.type === 'fork' && e.pid === job.pid && e.child).map((e) => e.child!.pid));
    const execs = events.filter((e) => e.type === 'exec' && children.has(e.pid)).map((e) => path.basename(e.path ?? ''));
    t.same(execs.filter((p) => p === 'head' || p === 'gzip').sort(), ['gzip', 'head'], `job ${job.tenant}: head and gzip ran`);
    const theirs = events.filter((e) => children.has(e.pid));
    t.ok(theirs.length > 0 && theirs.every((e) => tenantOf(e) === job.tenant), `job ${job.tenant}: every event of its processes carries tenant ${job.tenant}`);
  }
});
