/**
 * The README's first command: `causeway demo` traces the system in demo/
 * (sh, Python, Node, C) across a pipe, a UNIX socket and TCP between two
 * network namespaces it makes, and leaves none of them behind.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, causeway, tmpdir } from './helpers';
import { TraceStore } from '../src/tracer/store';
import { buildGraph } from '../src/tracer/graph';

const skip = bpfUnavailable();

t.test('causeway demo: one trace across a pipe, a UNIX socket and TCP between namespaces', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const html = path.join(dir, 'demo.html');
  const db = path.join(dir, 'demo.db');
  const r = await causeway(['demo', '--html', html, '--db', db], { cwd: dir });
  t.equal(r.status, 0, r.stdout + r.stderr);

  t.match(r.stdout, /^\s+\+[\d.]+ ms\s+recv\s+\S+ pipe:\[\d+\] \d+ B <- /m, 'the tree shows a recv over a pipe');
  t.match(r.stdout, /^\s+\+[\d.]+ ms\s+recv\s+\S+ unix:\S+ \d+ B <- /m, 'over a UNIX socket');
  t.match(r.stdout, /^\s+\+[\d.]+ ms\s+recv\s+\S+ tcp:10\.215\.0\.2:\d+->10\.215\.0\.1:\d+ \d+ B <- /m, 'and over TCP into the other namespace');
  t.match(r.stdout, /collector: 4 line\(s\)/, 'the system did its work');
  t.match(r.stdout, new RegExp(`the trace database: ${db.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'the demo names its database');

  const store = TraceStore.open(db, { readonly: true });
  t.teardown(() => store.close());
  const traces = store.list();
  t.equal(traces.length, 1, 'one trace stored');
  const g = buildGraph(traces[0].id, store.events(traces[0].id));
  t.equal(g.roots.length, 1, 'with one root');
  const kinds = new Set(g.hops.map((h) => h.recv.channel?.kind));
  t.same([...kinds].sort(), ['pipe', 'tcp', 'unix'], 'hops over all three kinds of channel');
  const tcp = g.hops.find((h) => h.recv.channel?.kind === 'tcp' && h.recv.comm === 'collector');
  t.match(tcp?.recv.channel, { local: '10.215.0.2', remote: '10.215.0.1' }, 'the TCP hop crosses from namespace A to B');
  const programs = new Set(g.events.filter((e) => e.type === 'exec').map((e) => path.basename(e.path ?? '')));
  for (const p of ['sh', 'python3', 'node']) t.ok(programs.has(p), `a process runs ${p}`);
  t.ok(programs.has('tally') || programs.has('sort'), 'and the filter (the C tally, or sort where there is no cc)');
  const roles = new Set(g.events.map((e) => e.comm));
  for (const c of ['api', 'store', 'collector']) t.ok(roles.has(c), `the ${c} service is in the trace`);

  t.ok(fs.existsSync(html), 'the HTML report exists');
  const page = fs.readFileSync(html, 'utf8');
  t.match(page, /'data-node'/, 'with the process graph markers');
  const data = JSON.parse(/<script type="application\/json" id="causeway-data">(.*?)<\/script>/s.exec(page)![1]) as {
    traces: { trace: string; graph: { nodes: { key: string }[] } }[];
  };
  t.same(
    data.traces[0].graph.nodes.map((n) => n.key).sort(),
    g.processes.map((p) => `${p.host}/${p.pid}`).sort(),
    'and one data-node per process of the trace',
  );

  const made = [...r.stdout.matchAll(/\b(cwdemo\d+[ab])\b/g)].map((m) => m[1]);
  t.ok(made.length >= 2, 'the demo names the namespaces it made');
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const ns of new Set(made)) t.notOk(left.includes(ns), `${ns} is removed`);
});
