/**
 * The tracer: `causeway trace` stores X-Trace-style graphs of real runs;
 * `causeway ls` and `causeway show` read them back. A pipeline, a fork-join,
 * a three-host chain, and 10,000 requests.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { bpfUnavailable, causeway, tmpdir } from './helpers';
import { makeHosts, subnet } from './netns';
import { newTraceId } from '../src/kernel/record';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
const NODE = path.join(FIXTURES, 'tcp_node.py');

interface ShownEvent {
  id: string;
  type: string;
  ts: string;
  host: string;
  pid: number;
  comm: string;
  parents: string[];
  path?: string;
  channel: { kind: string; local?: string } | null;
}
interface Shown {
  trace: string;
  hosts: string[];
  events: ShownEvent[];
  spans: { id: string; parent: string | null; links: string[] }[];
  hops: { send: string; recv: string; latencyNs: string }[];
}

async function show(db: string, id: string): Promise<Shown> {
  const r = await causeway(['show', id, '--db', db, '--json']);
  if (r.status !== 0) throw new Error(`causeway show failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Shown;
}

async function ls(db: string): Promise<{ id: string; events: number; processes: number; hosts: string[]; command: string }[]> {
  const r = await causeway(['ls', '--db', db, '--json']);
  if (r.status !== 0) throw new Error(`causeway ls failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Checks that a stored trace is a DAG whose every event leads back to one root. */
function checkGraph(t: Tap.Test, g: Shown) {
  const byId = new Map(g.events.map((e) => [e.id, e]));
  const roots = g.events.filter((e) => !e.parents.some((p) => byId.has(p)));
  t.equal(roots.length, 1, `one root (${roots.map((r) => `${r.type} ${r.comm}`).join(', ')})`);
  let backwards = 0;
  for (const e of g.events) for (const p of e.parents) if (byId.has(p) && BigInt(byId.get(p)!.ts) > BigInt(e.ts)) backwards++;
  t.equal(backwards, 0, 'every edge goes forward in time (the causal direction)');
  // No orphans: walking first parents from any event reaches the root.
  let orphans = 0;
  for (const e of g.events) {
    let cur: ShownEvent | undefined = e;
    for (let i = 0; cur && i < 100000; i++) {
      const next: ShownEvent | undefined = cur.parents.map((p) => byId.get(p)).find((x) => x !== undefined);
      if (!next) break;
      cur = next;
    }
    if (cur !== roots[0]) orphans++;
  }
  t.equal(orphans, 0, 'no orphan events');
  return { byId, root: roots[0] };
}

t.test('a pipeline: one trace, one root, the expected processes, edges forward', { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'traces.db');
  const trace = newTraceId();
  const r = await causeway(['trace', '--db', db, '--trace', trace, '--', 'sh', '-c', 'seq 1 50000 | gzip -1 | gunzip | wc -l']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '50000');
  t.match(r.stderr, /tracer stored \d+ events of 1 trace\(s\)/);
  const list = await ls(db);
  t.equal(list.length, 1, 'ls lists one trace');
  t.equal(list[0].id, trace);
  t.match(list[0].command, /^sh -c seq/);
  const g = await show(db, trace.slice(0, 14));
  t.equal(g.trace, trace, 'show takes a prefix');
  t.equal((await show(db, trace.slice(-8))).trace, trace, 'and a suffix (the random end of the id)');
  t.match(r.stderr, new RegExp(`causeway show ${trace.slice(-12)}`), 'the tracer names the trace by the end of its id');
  t.equal(g.events.length, list[0].events, 'ls and show agree on the events');
  const { root } = checkGraph(t, g);
  t.equal(root.type, 'exec', 'the root is the command starting');
  const execs = new Set(g.events.filter((e) => e.type === 'exec').map((e) => path.basename(e.path ?? '')));
  for (const p of ['sh', 'seq', 'gzip', 'gunzip', 'wc']) t.ok(execs.has(p), `${p} is in the trace`);
  t.ok(g.hops.length >= 3, 'hops between the processes');
  t.ok(g.hops.every((h) => BigInt(h.latencyNs) >= 0n), 'hop latencies are not negative');
  const tree = await causeway(['show', trace, '--db', db]);
  t.match(tree.stdout, new RegExp(`^trace ${trace}: \\d+ events, \\d+ processes`), 'the tree starts with the trace');
  t.match(tree.stdout, /recv +gzip\[\d+\] pipe:\[\d+\] \d+ B <- seq\[\d+\] \+\d+\.\d{3} ms/, 'recv lines show the hop and its latency');
});

t.test('a fork-join: the join has two parents', { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'traces.db');
  const r = await causeway(['trace', '--db', db, '--', path.join(FIXTURES, 'forkjoin.py')]);
  t.equal(r.status, 0, r.stderr);
  t.same(r.stdout.split('\n').filter(Boolean).sort(), ['left done', 'right done'], 'both results arrived (in either order)');
  const [{ id }] = await ls(db);
  const g = await show(db, id);
  const { byId } = checkGraph(t, g);
  const join = g.events.find((e) => e.type === 'join');
  t.ok(join, 'the parent read both results in one join');
  t.equal(join?.parents.length, 2, 'with two parents');
  const senders = join!.parents.map((p) => byId.get(p));
  t.ok(senders.every((s) => s?.type === 'send'), "both are the workers' sends");
  t.equal(new Set(senders.map((s) => s?.pid)).size, 2, 'from two different workers');
  const span = g.spans.find((s) => s.id === join!.id);
  t.ok(span, 'the join starts a span');
  t.equal(span!.links.length, 1, 'whose other parent is a link');
});

t.test('client -> middle -> backend across three namespaces: one connected graph', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'traces.db');
  const [a, b, c] = makeHosts(t, 3);
  const trust = subnet(a);
  const trace = newTraceId();
  // One causeway per "host", all storing into one database (as one per machine would export to one backend).
  const traced = (h: { ns: string }, host: string, role: string[], extra: string[] = []) =>
    causeway(['trace', '--db', db, '--host', host, '--trust', trust, ...extra, '--', 'ip', 'netns', 'exec', h.ns, '/usr/bin/python3', NODE, ...role]);
  const backend = traced(c, 'backend', ['server', c.addr, '7001', path.join(dir, 'r1')]);
  const middle = traced(b, 'middle', ['middle', b.addr, '7000', path.join(dir, 'r2'), c.addr, '7001']);
  const client = await traced(a, 'client', ['client', b.addr, '7000'], ['--trace', trace]);
  const [m, be] = [await middle, await backend];
  t.equal(client.stdout, 'ok:hello\n', client.stderr);
  t.equal(m.status, 0, m.stderr);
  t.equal(be.status, 0, be.stderr);

  const g = await show(db, trace);
  t.same([...g.hosts].sort(), ['backend', 'client', 'middle'], 'the trace spans the three hosts');
  const { byId } = checkGraph(t, g);
  const tcp = (host: string, type: string) => g.events.find((e) => e.host === host && e.type === type && e.channel?.kind === 'tcp');
  const cSend = tcp('client', 'send')!;
  const mRecv = tcp('middle', 'recv')!;
  const mSend = tcp('middle', 'send')!;
  const bRecv = tcp('backend', 'recv')!;
  t.ok(cSend && mRecv && mSend && bRecv, 'each hop is in the graph');
  t.same(mRecv.parents, [cSend.id], "the middle's recv follows the client's send");
  t.same(bRecv.parents, [mSend.id], "the backend's recv follows the middle's send");
  // The middle's send descends from its recv on its own thread.
  let cur: ShownEvent | undefined = mSend;
  while (cur && cur !== mRecv) cur = byId.get(cur.parents[0]);
  t.equal(cur, mRecv, "the middle's send follows from its recv");
  const hop1 = BigInt(mRecv.ts) - BigInt(cSend.ts);
  const inMiddle = BigInt(mSend.ts) - BigInt(mRecv.ts);
  const hop2 = BigInt(bRecv.ts) - BigInt(mSend.ts);
  t.ok(hop1 > 0n && inMiddle > 0n && hop2 > 0n, `per-hop latencies are positive (${hop1}, ${inMiddle}, ${hop2} ns)`);
  t.equal(hop1 + inMiddle + hop2, BigInt(bRecv.ts) - BigInt(cSend.ts), 'and add up to the end-to-end time');
  const hops = new Map(g.hops.map((h) => [h.recv, BigInt(h.latencyNs)]));
  t.equal(hops.get(mRecv.id), hop1, 'show reports the first hop');
  t.equal(hops.get(bRecv.id), hop2, 'and the second');
});

t.test('10,000 requests through a traced client and server: all stored, memory bounded', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'traces.db');
  const events = path.join(dir, 'events.jsonl');
  const r = await causeway(['trace', '--db', db, '--events', events, '--', path.join(FIXTURES, 'reqresp.py'), '10000']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '10000', 'every request was answered');
  t.match(r.stderr, /0 dropped/, 'nothing was dropped');
  const emitted = fs.readFileSync(events, 'utf8').split('\n').filter(Boolean).length;
  t.ok(emitted >= 40000, `four events per request at least (${emitted})`);
  const [row] = await ls(db);
  t.equal(row.events, emitted, 'every event the kernel reported is stored');
  const m = /peak RSS (\d+) MiB/.exec(r.stderr);
  t.ok(m, 'the run reports its peak memory');
  // The tracer keeps no per-event state; actors' queues are bounded (65536 events).
  t.ok(Number(m?.[1]) < 256, `causeway stayed under 256 MiB (${m?.[1]} MiB)`);
});

t.test('sampling decides at the root; unsampled records still propagate', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const db = path.join(dir, 'traces.db');
  const r = await causeway(['trace', '--db', db, '--sample', '0', '--', 'sh', '-c', 'seq 1 1000 | wc -l']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /tracer stored 0 events of 0 trace\(s\)/, 'nothing is stored for an unsampled root');
  const m = /(\d+) sends and (\d+) receives carried records/.exec(r.stderr);
  t.ok(m && Number(m[2]) > 0, `but the record still rode the pipe (${m?.[2]} receives)`);
  const bad = await causeway(['trace', '--db', db, '--sample', '2', '--', 'true']);
  t.equal(bad.status, 1);
  t.match(bad.stderr, /expected a rate from 0 to 1/);

  // Traces minted for inbound connections are sampled at the same rate, each at its root.
  const ready = path.join(dir, 'ready');
  const port = 21000 + (process.pid % 20000);
  const root = newTraceId();
  const done = causeway(['trace', '--db', db, '--sample', '0.5', '--trace', root, '--actor', `ingress-mint:ports=${port}`, '--', path.join(FIXTURES, 'tcp_once.py'), 'serve', String(port), ready]);
  const net = await import('node:net');
  for (let i = 0; i < 100 && !fs.existsSync(ready); i++) await new Promise((res) => setTimeout(res, 50));
  const n = 40;
  for (let i = 0; i <= n; i++)
    await new Promise<void>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1', () => c.end(i === n ? 'quit\n' : `req ${i}\n`));
      c.on('data', () => {});
      c.on('close', () => resolve());
      c.on('error', reject);
    });
  const s = await done;
  t.equal(s.status, 0, s.stderr);
  t.match(s.stderr, new RegExp(`minted=${n + 1}`), 'a record was minted for every connection');
  const minted = (await ls(db)).filter((x) => x.id !== root).length;
  // Binomial(41, 0.5): outside 5..36 with probability below 1e-6.
  t.ok(minted >= 5 && minted <= 36, `about half of the minted traces were sampled and stored (${minted} of ${n + 1})`);
});

t.test('a status line on a terminal, none otherwise', { skip: skip ?? false }, async (t) => {
  const db = path.join(tmpdir(t), 'traces.db');
  const piped = await causeway(['trace', '--db', db, '--', 'sh', '-c', 'sleep 1.5; echo done']);
  t.equal(piped.status, 0, piped.stderr);
  t.notMatch(piped.stderr, /events\/s/, 'no status line when stderr is not a terminal');
  // script(1) gives the command a pseudo-terminal.
  const cmd = `${process.execPath} ${path.join(__dirname, '..', 'bin', 'causeway.js')} trace --db ${db} -- sh -c 'seq 1 3 | wc -l; sleep 2.5'`;
  const { spawnSync } = await import('node:child_process');
  const tty = spawnSync('script', ['-qefc', cmd, '/dev/null'], { encoding: 'utf8' });
  t.equal(tty.status, 0, tty.stderr);
  t.match(tty.stdout, /causeway trace: \d+ events\/s, \d+ stored, \d+ trace\(s\) in the database, 0 dropped/, 'on a terminal, the status line shows rate, traces and drops');
});
