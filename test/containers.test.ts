/**
 * Containers: two podman containers on one bridge, a TCP server and a client
 * container, followed by `causeway attach --container` (one attachment each)
 * and by one `causeway agent --container PATTERN`. A request the client
 * container makes (a process started in it by `podman exec`, after the
 * attach) is traced across the two: the record crosses the bridge in the TCP
 * option, from one attachment's shim to the other's; so does the connection
 * the client container's process opened before the attach. Detaching leaves
 * both containers running and that connection working. The lab
 * (test/containers.ts) leaves nothing behind.
 */
import t from 'tap';
import path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import { BIN, bpfUnavailable, causeway, EventJson, readEvents, tmpdir, waitFor } from './helpers';
import { Container, PodmanLab, podmanMissing } from './containers';
import { TraceStore } from '../src/tracer/store';
import type { TraceEvent } from '../src/tracer/graph';

// Under CAUSEWAY_REQUIRE_BPF=1 a missing podman fails the test (scripts/setup.sh installs it); otherwise it skips.
const skip = bpfUnavailable() ?? (process.env.CAUSEWAY_REQUIRE_BPF === '1' ? null : podmanMissing()) ?? undefined;
const PORT = 7216;

/** The server: one thread per connection, answering each line with "answer:" and the line in capitals. */
const SERVER = `
import socket, threading
def serve(c):
    with c, c.makefile('rb') as lines:
        for line in lines:
            c.sendall(b'answer:' + line.upper())
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', ${PORT}))
s.listen(16)
print('listening', flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/** The client container's own process: one connection to the server, kept open, a line every 200 ms. */
const KEEPER = `
import socket, sys, time
c = socket.create_connection((sys.argv[1], ${PORT}))
n = 0
while True:
    n += 1
    c.sendall(b'tick %d\\n' % n)
    print(c.recv(100).decode().strip(), flush=True)
    time.sleep(0.2)
`;

/**
 * One request, run by podman exec: waits first (its process joins the
 * container's cgroup after it starts, and an attachment adopts it within a
 * rescan, 500 ms), prints its local port, then the answer.
 */
const REQUEST = `
import socket, sys, time
time.sleep(float(sys.argv[3]))
c = socket.create_connection((sys.argv[1], ${PORT}))
print(c.getsockname()[1], flush=True)
c.sendall(sys.argv[2].encode() + b'\\n')
print(c.recv(100).decode().strip(), flush=True)
`;

/** A process whose stderr is collected. */
function start(argv: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; err: () => string } {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return { child, err: () => err };
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

function tryEvents(file: string): EventJson[] {
  try {
    return readEvents(file);
  } catch {
    return []; // not there yet, or a line being written
  }
}

/**
 * Sends body from a process podman exec starts in the client container; the
 * answer and the process's local port. found(port) says whether the
 * attachment followed it (adopted in time); if not, it tries again, up to
 * three times.
 */
async function request(lab: PodmanLab, client: Container, server: Container, body: string, found: (port: number) => Promise<boolean>): Promise<{ answer: string; port: number; tries: number }> {
  for (let tries = 1; ; tries++) {
    const r = await lab.exec(client.name, ['python3', '/srv/request.py', server.ip, body, '1.2']);
    if (r.status !== 0) throw new Error(`the request failed: ${r.stderr}`);
    const [port, answer] = r.stdout.trim().split('\n');
    if ((await found(Number(port))) || tries === 3) return { answer, port: Number(port), tries };
  }
}

/** Polls until cond() holds or ms pass; whether it held. */
async function within(ms: number, cond: () => boolean | Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const isTcp = (e: { channel: { kind: string } | null }) => e.channel?.kind === 'tcp';

t.test('containers: causeway follows two podman containers and carries the record between them across the bridge', { skip }, async (t) => {
  const dir = tmpdir(t);
  const lab = await PodmanLab.create(t, { '/srv/server.py': SERVER, '/srv/keeper.py': KEEPER, '/srv/request.py': REQUEST });
  const server = await lab.run('server', 10, ['python3', '-u', '/srv/server.py'], /listening/);
  const client = await lab.run('client', 11, ['python3', '-u', '/srv/keeper.py', server.ip], /answer:TICK 1/);
  /** The keeper's answers so far: its connection, opened before causeway is there, works while it counts up. */
  const ticks = async () => (await lab.logs(client.name)).split('\n').filter((l) => l.startsWith('answer:TICK')).length;

  await t.test('causeway attach --container, one per container: the server receives the request in the client\'s trace', async (t) => {
    const ev = { server: path.join(dir, 'server.jsonl'), client: path.join(dir, 'client.jsonl') };
    const attach = (c: Container, file: string) => {
      const p = start([process.execPath, BIN, 'attach', '--container', c.name, '--trust', lab.subnet, '-e', file], lab.env);
      t.teardown(() => void p.child.kill('SIGKILL'));
      return p;
    };
    const atts = { server: attach(server, ev.server), client: attach(client, ev.client) };
    for (const [name, a] of Object.entries(atts)) await waitFor(() => a.err().includes(`following container ${lab.tag}-${name}`), 20000, `causeway to attach to the ${name} container`);
    t.match(atts.server.err(), /adopted [1-9]\d* running thread\(s\) of 1 process\(es\) and 1 open TCP connection/, 'the server\'s process, running before, was adopted, and its end of the keeper\'s connection');
    t.match(atts.client.err(), /adopted \d+ running thread\(s\) of 1 process\(es\) and 1 open TCP connection/, 'the keeper, and its end of the connection');

    const sendOf = (port: number) => tryEvents(ev.client).find((e) => e.type === 'send' && isTcp(e) && e.channel!.localPort === port);
    const req = await request(lab, client, server, 'across', (port) => within(3000, () => sendOf(port) !== undefined));
    t.equal(req.answer, 'answer:ACROSS', `the request from the client container is answered (${req.tries} tr${req.tries > 1 ? 'ies' : 'y'})`);
    const send = sendOf(req.port);
    t.ok(send, 'the process podman exec started in the client container was adopted and its send recorded');
    const recvOf = () => tryEvents(ev.server).find((e) => e.type === 'recv' && isTcp(e) && e.channel!.remotePort === req.port);
    await within(3000, () => recvOf() !== undefined);

    for (const a of Object.values(atts)) a.child.kill('SIGINT');
    for (const [name, a] of Object.entries(atts)) t.equal(await exited(a.child), 0, `the ${name}'s attachment detaches on SIGINT with status 0`);
    for (const [name, a] of Object.entries(atts)) {
      const m = /tcpOptionsWritten=(\d+) tcpOptionsReceived=(\d+)/.exec(a.err());
      t.ok(m && Number(m[1]) > 0 && Number(m[2]) > 0, `the ${name}'s shim wrote and received TCP options: ${a.err().trim().split('\n').pop()}`);
    }

    const recv = recvOf();
    t.ok(recv, 'the server received the request');
    t.equal(recv?.pid, server.pid, 'in the server container\'s process');
    t.match(recv?.channel, { local: server.ip, remote: client.ip, localPort: PORT }, 'from the client container, across the bridge');
    t.equal(recv?.trace, send?.trace, 'in the trace of the client\'s send');
    t.ok(send && recv?.parents.includes(send.event), 'its parent is the client\'s send event: the record crossed in the TCP option');
    const answer = tryEvents(ev.server).find((e) => e.type === 'send' && isTcp(e) && e.channel!.remotePort === req.port);
    const back = tryEvents(ev.client).find((e) => e.type === 'recv' && isTcp(e) && e.channel!.localPort === req.port);
    t.ok(answer && back?.parents.includes(answer.event) && back.trace === send?.trace, 'and the answer came back in the same trace, the client\'s receive a child of the server\'s send');

    // The keeper's connection, opened before the attach: switched on in each container's network namespace, its ticks carry the keeper's trace.
    const keeperSends = new Set(tryEvents(ev.client).filter((e) => e.type === 'send' && e.pid === client.pid && isTcp(e)).map((e) => e.event));
    const tick = tryEvents(ev.server).find((e) => e.type === 'recv' && isTcp(e) && e.channel!.remote === client.ip && e.channel!.remotePort !== req.port && e.parents.some((p) => keeperSends.has(p)));
    t.ok(tick, 'the keeper\'s connection, opened before the attach, carries records from then on: a tick\'s receive in the server is a child of the keeper\'s send');
  });

  await t.test('detached: both containers run, the connection made before still works, a new request is answered', async (t) => {
    t.ok((await lab.running(server.name)) && (await lab.running(client.name)), 'both containers still run');
    const n = await ticks();
    t.ok(await within(5000, async () => (await ticks()) >= n + 2), 'the keeper\'s connection, open since before the attach, is still answered');
    const r = await lab.exec(client.name, ['python3', '/srv/request.py', server.ip, 'after', '0']);
    t.equal(r.stdout.trim().split('\n')[1], 'answer:AFTER', 'a new request is answered');
  });

  await t.test('causeway agent --container PATTERN follows both; the request is one trace in its database', async (t) => {
    const db = path.join(dir, 'agent.db');
    const statusFile = path.join(dir, 'status.json');
    const agent = start([process.execPath, BIN, 'agent', '--container', `${lab.tag}-*`, '--trust', lab.subnet, '--db', db, '--status', statusFile, '--interval', '300ms'], lab.env);
    t.teardown(() => void agent.child.kill('SIGKILL'));
    for (const c of [server, client]) await waitFor(() => agent.err().includes(`following container ${c.name}`), 20000, `the agent to follow ${c.name}`);
    const st = await causeway(['status', '--status', statusFile]);
    t.equal(st.status, 0, 'causeway status: running');
    t.match(st.stdout, /targets followed: 2/, 'two targets');
    for (const c of [server, client]) t.match(st.stdout, `container ${c.name}`, `causeway status lists ${c.name}`);

    // The request's receive in the server, from the database the agent writes.
    const recvIn = (port: number): TraceEvent | undefined => {
      let store: TraceStore | null = null;
      try {
        store = TraceStore.open(db, { readonly: true });
        for (const tr of store.list(20)) {
          const e = store.events(tr.id).find((e) => e.type === 'recv' && e.channel?.kind === 'tcp' && e.channel.remotePort === port && e.pid === server.pid);
          if (e) return e;
        }
      } catch {
        /* not written yet */
      } finally {
        store?.close();
      }
      return undefined;
    };
    const req = await request(lab, client, server, 'agent', (port) => within(4000, () => recvIn(port) !== undefined));
    t.equal(req.answer, 'answer:AGENT', `the request is answered (${req.tries} tr${req.tries > 1 ? 'ies' : 'y'})`);

    agent.child.kill('SIGTERM');
    t.equal(await exited(agent.child), 0, 'the agent stops cleanly on SIGTERM');
    const recv = recvIn(req.port);
    t.ok(recv, 'the server\'s receive is stored');
    const shown = await causeway(['show', '--json', recv?.trace ?? '-', '--db', db]);
    t.equal(shown.status, 0, `causeway show --json ${recv?.trace} --db ... ${shown.stderr}`);
    const g = JSON.parse(shown.stdout || '{}') as { events: { id: string; type: string; pid: number; channel: { local?: string; localPort?: number } | null }[]; hops: { send: string; recv: string; from: string; to: string }[] };
    const send = g.events?.find((e) => e.type === 'send' && e.channel?.localPort === req.port);
    t.equal(send?.channel?.local, client.ip, 'the trace has the send of the process in the client container');
    const hop = g.hops?.find((h) => h.send === send?.id && h.recv === recv?.id);
    t.ok(hop, `causeway show has the hop from the client container's process to the server's: ${hop ? `${hop.from} -> ${hop.to}` : JSON.stringify(g.hops)}`);
    t.equal(hop?.to, `python3[${server.pid}]`, 'into the server container\'s process');
    t.ok((await lab.running(server.name)) && (await lab.running(client.name)), 'both containers still run after the agent stopped');
    const n = await ticks();
    t.ok(await within(5000, async () => (await ticks()) >= n + 2), 'and the keeper\'s connection still works');
  });

  await lab.close();
  t.same(lab.leftovers(), [], 'the lab leaves nothing: no cgroup, bridge, namespace, mount, process, firewall rule, route, state');
});
