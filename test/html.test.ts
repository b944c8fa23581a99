import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { buildGraph, TraceEvent, TraceGraph } from '../src/tracer/graph';
import { renderHtml, scriptJson, HTML_LIMITS } from '../src/tracer/html';
import type { Channel } from '../src/kernel/events';

const CHROMIUM = '/usr/bin/chromium';
const T0 = 1_790_000_000_000_000_000n;
const EVIL = '</script><b>x';

/** Synthetic events of one trace, with ids 1, 2, ... as 16 hex digits. */
function tracer(trace: string) {
  const events: TraceEvent[] = [];
  let n = 0;
  const ev = (type: TraceEvent['type'], msAt: number, who: { host?: string; pid: number; tid?: number; comm: string }, parents: TraceEvent[], more: Partial<TraceEvent> = {}) => {
    const e: TraceEvent = {
      id: (++n + trace.length * 0x1000).toString(16).padStart(16, '0'),
      trace,
      type,
      ts: T0 + BigInt(Math.round(msAt * 1e6)),
      host: who.host ?? 'h1',
      pid: who.pid,
      tid: who.tid ?? who.pid,
      comm: who.comm,
      parents: parents.map((p) => p.id),
      channel: null,
      bytes: 0,
      priority: 0,
      ...more,
    };
    events.push(e);
    return e;
  };
  const pipe = (ino: number): Channel => ({ kind: 'pipe', ino, dev: '0:15' });
  return { events, ev, pipe, graph: () => buildGraph(trace, events) };
}

/** sh forks a, b and c; a | b | c over two pipes. */
function pipeline(): TraceGraph {
  const { ev, pipe, graph } = tracer('a'.repeat(32));
  const sh = { pid: 100, comm: 'sh' };
  const [a, b, c] = [{ pid: 101, comm: 'a' }, { pid: 102, comm: 'b' }, { pid: 103, comm: 'c' }];
  const root = ev('exec', 0, sh, [], { path: '/bin/sh' });
  const fa = ev('fork', 10, sh, [root], { child: { pid: 101, tid: 101 } });
  const fb = ev('fork', 20, sh, [fa], { child: { pid: 102, tid: 102 } });
  const fc = ev('fork', 30, sh, [fb], { child: { pid: 103, tid: 103 } });
  const s1 = ev('send', 100, a, [fa], { channel: pipe(11), bytes: 4096 });
  ev('exit', 400, a, [s1], { exitCode: 0 });
  const r1 = ev('recv', 150.5, b, [s1], { channel: pipe(11), bytes: 4096 });
  const s2 = ev('send', 300, b, [r1], { channel: pipe(12), bytes: 100 });
  ev('exit', 500, b, [s2], { exitCode: 0 });
  const r2 = ev('recv', 312.25, c, [s2], { channel: pipe(12), bytes: 100 });
  ev('exit', 600, c, [r2], { exitCode: 0 });
  ev('exit', 700, sh, [fc], { exitCode: 0 });
  void fb;
  return graph();
}

/** main forks two workers, hands each work over a pipe, and joins their answers from one pipe in a second thread. */
function forkJoin(): TraceGraph {
  const { ev, pipe, graph } = tracer('b'.repeat(32));
  const main = { pid: 200, comm: 'main' };
  const reaper = { pid: 200, tid: 203, comm: 'reaper' };
  const [w1, w2] = [{ pid: 201, comm: 'worker' }, { pid: 202, comm: 'worker' }];
  const root = ev('exec', 0, main, [], { path: '/usr/bin/main' });
  const f1 = ev('fork', 5, main, [root], { child: { pid: 201, tid: 201 } });
  const f2 = ev('fork', 6, main, [f1], { child: { pid: 202, tid: 202 } });
  const ft = ev('fork', 7, main, [f2], { child: { pid: 200, tid: 203 } });
  const g1 = ev('send', 10, main, [ft], { channel: pipe(21), bytes: 64 });
  const g2 = ev('send', 11, main, [g1], { channel: pipe(22), bytes: 64 });
  ev('exit', 900, main, [g2], { exitCode: 0 });
  const r1 = ev('recv', 12, w1, [g1], { channel: pipe(21), bytes: 64 });
  const r2 = ev('recv', 13.5, w2, [g2], { channel: pipe(22), bytes: 64 });
  const a1 = ev('send', 200, w1, [r1], { channel: pipe(23), bytes: 8 });
  const a2 = ev('send', 250, w2, [r2], { channel: pipe(23), bytes: 8 });
  ev('exit', 260, w1, [a1], { exitCode: 0 });
  ev('exit', 270, w2, [a2], { exitCode: 0 });
  const first = ev('exec', 8, reaper, [ft]);
  void first;
  const j = ev('join', 251.125, reaper, [a1, a2], { channel: pipe(23), bytes: 16 });
  ev('exit', 800, reaper, [j], { exitCode: 0 });
  return graph();
}

/** A client on host alpha asks a server on host beta over TCP, and reads the reply. */
function tcp(): TraceGraph {
  const { ev, graph } = tracer('c'.repeat(32));
  const cli = { host: 'alpha', pid: 300, comm: 'curl' };
  const srv = { host: 'beta', pid: 400, comm: 'nginx' };
  const out: Channel = { kind: 'tcp', local: '10.0.0.1', localPort: 40000, remote: '10.0.0.2', remotePort: 80 };
  const back: Channel = { kind: 'tcp', local: '10.0.0.2', localPort: 80, remote: '10.0.0.1', remotePort: 40000 };
  const root = ev('exec', 0, cli, [], { path: '/usr/bin/curl' });
  const q = ev('send', 50, cli, [root], { channel: out, bytes: 120 });
  const rq = ev('recv', 1050, srv, [q], { channel: back, bytes: 120 });
  const a = ev('send', 1500, srv, [rq], { channel: back, bytes: 5000 });
  const ra = ev('recv', 2700.001, cli, [a], { channel: out, bytes: 5000 });
  ev('exit', 2800, cli, [ra], { exitCode: 0 });
  return graph();
}

/** A writer whose comm would end a script element, piping into cat. */
function evil(): TraceGraph {
  const { ev, pipe, graph } = tracer('d'.repeat(32));
  const w = { pid: 500, comm: EVIL };
  const cat = { pid: 501, comm: 'cat' };
  const root = ev('exec', 0, w, [], { path: '/tmp/<!--x' });
  const s = ev('send', 10, w, [root], { channel: pipe(31), bytes: 3 });
  ev('exit', 20, w, [s]);
  const r = ev('recv', 11, cat, [s], { channel: pipe(31), bytes: 3 });
  ev('exit', 30, cat, [r]);
  return graph();
}

/** Thousands of events: 400 threads of one process, each sending to the next. */
function big(): TraceGraph {
  const { ev, pipe, graph } = tracer('e'.repeat(32));
  let prev = ev('exec', 0, { pid: 600, comm: 'big' }, []);
  for (let i = 0; i < 400; i++) {
    const who = { pid: 600 + (i % 40), tid: 1000 + i, comm: `t${i}` };
    let e = ev('recv', 1 + i * 10, who, [prev], { channel: pipe(40 + i), bytes: 10 });
    for (let k = 0; k < 8; k++) e = ev('exec', 2 + i * 10 + k, who, [e]);
    prev = ev('send', 9 + i * 10, who, [e], { channel: pipe(41 + i), bytes: 10 });
  }
  return graph();
}

const latencyText = (g: TraceGraph) => g.hops.map((h) => (Number(h.latencyNs) / 1e6).toFixed(3));
const key = (e: { host: string; pid: number }) => `${e.host}/${e.pid}`;

t.test('the page source: escaped data, nothing to fetch', async (t) => {
  const graphs = [pipeline(), forkJoin(), tcp(), evil()];
  const html = renderHtml(graphs, { title: `report ${EVIL}` });
  const json = html.match(/<script type="application\/json" id="causeway-data">([^]*?)<\/script>/);
  t.ok(json, 'the data is in a JSON script element');
  t.notMatch(json![1], /[<>]/, 'no < or > inside the JSON');
  t.equal(JSON.parse(json![1]).traces[3].graph.nodes[0].comms[0], EVIL, 'the comm survives intact');
  t.equal(html.split('</script>').length - 1, 2, 'exactly two script elements end');
  t.notOk(html.includes('<b>'), 'no markup from the data');
  t.match(html, '<title>report &#60;/script&#62;&#60;b&#62;x</title>');
  t.notMatch(html, /(src|href)=["']?(https?:)?\/\//i, 'no external references');
  t.notMatch(html, /@import|url\((?!#)/i, 'no CSS imports or urls');
  t.equal(scriptJson('\u2028</script>&'), '"\\u2028\\u003c/script\\u003e\\u0026"');
  t.equal(renderHtml(graphs), renderHtml(graphs), 'deterministic');
});

const skip = !fs.existsSync(CHROMIUM) && process.env.CAUSEWAY_REQUIRE_BPF !== '1' ? `${CHROMIUM} is missing (apt-get install chromium; set CAUSEWAY_REQUIRE_BPF=1 to fail instead)` : false;

t.test('in headless Chromium, offline', { skip }, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-html-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Opens a page with every non-file request refused, recording requests and errors. */
  async function open(html: string, name: string): Promise<{ page: Page; requests: string[]; errors: string[] }> {
    const file = path.join(dir, name);
    fs.writeFileSync(file, html);
    const page = await browser.newPage();
    const requests: string[] = [];
    const errors: string[] = [];
    page.on('request', (r) => void (r.url().startsWith('file:') || requests.push(r.url())));
    page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
    await page.goto(`file://${file}`, { waitUntil: 'load' });
    return { page, requests, errors };
  }

  const graphs = [pipeline(), forkJoin(), tcp(), evil()];
  const { page, requests, errors } = await open(renderHtml(graphs), 'html_traces.html');
  t.same(requests, [], 'no network request was attempted');
  t.same(errors, [], 'no console or page errors');
  t.equal(await page.locator('section[data-trace]').count(), 4, 'one section per trace');
  t.equal(await page.locator('b').count(), 0, 'the evil comm made no element');
  t.equal(await page.locator('script').count(), 2, 'the evil comm ended no script');

  const expected: Record<string, { nodes: number; edges: number; spans: number; hops: number }> = {};
  expected[graphs[0].trace] = { nodes: 4, edges: 2, spans: 8, hops: 2 };
  expected[graphs[1].trace] = { nodes: 3, edges: 4, spans: 12, hops: 4 };
  expected[graphs[2].trace] = { nodes: 2, edges: 2, spans: 4, hops: 2 };
  expected[graphs[3].trace] = { nodes: 2, edges: 1, spans: 3, hops: 1 };
  for (const g of graphs) {
    await t.test(`trace ${g.trace.slice(0, 4)}...`, async (t) => {
      const want = expected[g.trace];
      t.equal(g.processes.length, want.nodes, 'the fixture builds the processes meant');
      t.equal(g.channels.length, want.edges, 'and the channels');
      t.equal(g.spans.length, want.spans, 'and the spans');
      t.equal(g.hops.length, want.hops, 'and the hops');
      const sec = page.locator(`section[data-trace="${g.trace}"]`);
      t.equal(await sec.locator('svg [data-node]').count(), want.nodes, 'one node per process');
      for (const p of g.processes) t.equal(await sec.locator(`[data-node="${key(p)}"]`).count(), 1, `node ${key(p)}`);
      t.equal(await sec.locator('svg [data-edge]').count(), want.edges, 'one edge per channel');
      for (const c of g.channels) t.ok((await sec.locator(`[data-edge="${key(c.from)}->${key(c.to)}"]`).count()) >= 1, `edge ${key(c.from)}->${key(c.to)}`);
      t.equal(await sec.locator('svg [data-span]').count(), want.spans, 'one bar per span');
      for (const s of g.spans) t.equal(await sec.locator(`[data-span="${s.id}"]`).count(), 1, `span ${s.id}`);
      t.equal(await sec.locator('svg [data-hop]').count(), want.hops, 'one arrow per hop');
      for (const h of g.hops) {
        const tip = await sec.locator(`svg [data-hop="${h.send.id}->${h.recv.id}"] > title`).textContent();
        t.match(tip, `latency ${(Number(h.latencyNs) / 1e6).toFixed(3)} ms`, 'the arrow tells its latency');
      }
      const s0 = g.spans[0];
      await sec.locator(`[data-span="${s0.id}"]`).dispatchEvent('mouseover');
      t.match(await sec.locator('.detail').nth(1).textContent(), `span ${s0.id}`, 'hovering a bar shows its details');
      const table = (await sec.locator('table.hops').innerText()).replace(/\s+/g, ' ');
      for (const l of latencyText(g)) t.match(table, ` ${l}`, `latency ${l} ms in the hop table`);
      const head = await sec.locator('dl.summary').innerText();
      t.match(head, g.trace);
      t.match(head, `${g.events.length}`);
      t.match(head, ((Number(g.end - g.start) / 1e6).toFixed(3)));
    });
  }
  t.match(await page.locator(`[data-trace="${graphs[3].trace}"] [data-node="h1/500"]`).textContent(), EVIL, 'the evil comm is shown as text');
  t.match(await page.locator('[data-trace="' + graphs[0].trace + '"] table.hops').innerText(), '50.500', 'a->b: 50.500 ms');
  t.match(await page.locator('[data-trace="' + graphs[2].trace + '"] table.hops').innerText(), '1200.001', 'beta->alpha: 1200.001 ms');
  t.ok(await page.locator('[data-trace="' + graphs[2].trace + '"] svg [data-node="alpha/300"]').isVisible(), 'the nodes are visible');
  // Nodes do not overlap.
  for (const g of graphs) {
    const boxes = await page.locator(`section[data-trace="${g.trace}"] svg [data-node] rect`).evaluateAll((rs) => rs.map((r) => r.getBoundingClientRect().toJSON()));
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const [a, b] = [boxes[i], boxes[j]];
        t.ok(a.right <= b.left || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top, `nodes ${i} and ${j} of ${g.trace.slice(0, 4)} do not overlap`);
      }
  }

  await t.test('a big trace is capped, with a note', async (t) => {
    const g = big();
    t.ok(g.events.length > 3000, `${g.events.length} events`);
    const html = renderHtml([g]);
    t.ok(html.length < 3_000_000, `page is ${html.length} bytes`);
    const { page, requests, errors } = await open(html, 'html_big.html');
    t.same(requests, []);
    t.same(errors, []);
    t.equal(await page.locator('svg [data-node]').count(), g.processes.length);
    t.equal(await page.locator('svg [data-edge]').count(), g.channels.length);
    t.equal(await page.locator('svg [data-row]').count(), HTML_LIMITS.rows, 'rows capped');
    const drawn = g.spans.filter((s) => s.tid < 1000 + HTML_LIMITS.rows - 1 || s.tid === 600).length;
    t.equal(await page.locator('svg [data-span]').count(), Math.min(drawn, HTML_LIMITS.spans), 'bars of the rows drawn');
    t.match(await page.locator('[data-trace] p.note').allInnerTexts(), [/251 threads left out/]);
    t.equal(await page.locator('table.hops tbody tr').count(), g.hops.length);
  });
});
