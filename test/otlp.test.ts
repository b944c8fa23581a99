/**
 * OTLP export without the kernel: graphs built from synthetic events, sent to
 * a local HTTP server that keeps what the OpenTelemetry exporter POSTs.
 *
 * The Node OTLP/HTTP trace exporter (@opentelemetry/exporter-trace-otlp-http
 * 0.2xx) sends OTLP/JSON (Content-Type application/json, its
 * JsonTraceSerializer); protobuf is the separate -proto exporter. The test
 * checks the content type and parses the JSON: ids are hex strings, times are
 * decimal strings of nanoseconds. (@opentelemetry/otlp-transformer only
 * serializes requests and parses responses; it has no request decoder.)
 */
import t, { Test } from 'tap';
import http from 'node:http';
import net, { AddressInfo } from 'node:net';
import { buildGraph, Span, TraceEvent, TraceGraph } from '../src/tracer/graph';
import { exportOtlp, OTLP_BATCH_SPANS, tracesUrl } from '../src/tracer/otlp';
import type { Channel, EventType } from '../src/kernel/events';

// --- synthetic traces -------------------------------------------------------

const T0 = 1795692140661123001n; // beyond 2^53: exactness matters
let nextId = 1;
const newId = () => (nextId++).toString(16).padStart(12, '0').padStart(16, '0');
const traceId = (n: number) => n.toString(16).padStart(32, 'a');

interface Ev extends Partial<TraceEvent> {
  type: EventType;
  pid: number;
  comm: string;
  at: number;
}

/** Events of one trace; `at` is ns after T0 plus an odd offset, parents by index or literal id. */
function events(trace: string, list: (Ev & { after?: (number | string)[] })[]): TraceEvent[] {
  const out: TraceEvent[] = [];
  for (const { at, after = [], ...e } of list) {
    out.push({
      id: newId(),
      trace,
      ts: T0 + BigInt(at) * 1_000_003n + 7n,
      host: 'alpha',
      tid: e.pid,
      parents: after.map((p) => (typeof p === 'number' ? out[p].id : p)),
      channel: null,
      bytes: 0,
      priority: 3,
      ...e,
    });
  }
  return out;
}

const pipe = (ino: number): Channel => ({ kind: 'pipe', ino, dev: '0:15' });

/** sh forks seq | gzip | wc, joined by two pipes. */
function pipeline(): TraceGraph {
  const tr = traceId(1);
  return buildGraph(tr, events(tr, [
    /* 0 */ { type: 'fork', pid: 100, comm: 'sh', at: 0, after: ['0000f00df00df00d'], child: { pid: 101, tid: 101 } },
    /* 1 */ { type: 'fork', pid: 100, comm: 'sh', at: 1, after: [0], child: { pid: 102, tid: 102 } },
    /* 2 */ { type: 'fork', pid: 100, comm: 'sh', at: 2, after: [1], child: { pid: 103, tid: 103 } },
    /* 3 */ { type: 'exec', pid: 101, comm: 'seq', at: 3, after: [0], path: '/usr/bin/seq' },
    /* 4 */ { type: 'exec', pid: 102, comm: 'gzip', at: 4, after: [1], path: '/usr/bin/gzip' },
    /* 5 */ { type: 'exec', pid: 103, comm: 'wc', at: 5, after: [2], path: '/usr/bin/wc' },
    /* 6 */ { type: 'send', pid: 101, comm: 'seq', at: 6, after: [3], channel: pipe(31815), bytes: 4096 },
    /* 7 */ { type: 'recv', pid: 102, comm: 'gzip', at: 7, after: [6], channel: pipe(31815), bytes: 4096 },
    /* 8 */ { type: 'send', pid: 102, comm: 'gzip', at: 8, after: [7], channel: pipe(31816), bytes: 512 },
    /* 9 */ { type: 'recv', pid: 103, comm: 'wc', at: 9, after: [8], channel: pipe(31816), bytes: 512 },
    /* 10 */ { type: 'exit', pid: 101, comm: 'seq', at: 10, after: [6], exitCode: 0 },
    /* 11 */ { type: 'exit', pid: 102, comm: 'gzip', at: 11, after: [8], exitCode: 0 },
    /* 12 */ { type: 'exit', pid: 103, comm: 'wc', at: 12, after: [9], exitCode: 1 },
    /* 13 */ { type: 'exit', pid: 100, comm: 'sh', at: 13, after: [2], exitCode: 1 },
  ]));
}

/** make forks two workers that write into one pipe; make's one read joins both. */
function forkJoin(): TraceGraph {
  const tr = traceId(2);
  return buildGraph(tr, events(tr, [
    /* 0 */ { type: 'fork', pid: 200, comm: 'make', at: 0, child: { pid: 201, tid: 201 } },
    /* 1 */ { type: 'fork', pid: 200, comm: 'make', at: 1, after: [0], child: { pid: 202, tid: 202 } },
    /* 2 */ { type: 'exec', pid: 201, comm: 'cc', at: 2, after: [0], path: '/usr/bin/cc' },
    /* 3 */ { type: 'exec', pid: 202, comm: 'ld', at: 3, after: [1], path: '/usr/bin/ld' },
    /* 4 */ { type: 'send', pid: 201, comm: 'cc', at: 4, after: [2], channel: pipe(900), bytes: 10 },
    /* 5 */ { type: 'send', pid: 202, comm: 'ld', at: 5, after: [3], channel: pipe(900), bytes: 20 },
    /* 6 */ { type: 'join', pid: 200, comm: 'make', at: 6, after: [4, 5], channel: pipe(900), bytes: 30 },
    /* 7 */ { type: 'exit', pid: 201, comm: 'cc', at: 7, after: [4], exitCode: 0 },
    /* 8 */ { type: 'exit', pid: 202, comm: 'ld', at: 8, after: [5], exitCode: 0 },
    /* 9 */ { type: 'exit', pid: 200, comm: 'make', at: 9, after: [6], signal: 9 },
  ]));
}

const tcp = (local: string, localPort: number, remote: string, remotePort: number): Channel => ({ kind: 'tcp', local, localPort, remote, remotePort });

/** curl on alpha asks nginx on beta; both have pid 300, so only host.name tells their resources apart. */
function tcpHop(): TraceGraph {
  const tr = traceId(3);
  const evs = events(tr, [
    /* 0 */ { type: 'exec', pid: 300, comm: 'curl', at: 0, path: '/usr/bin/curl' },
    /* 1 */ { type: 'send', pid: 300, comm: 'curl', at: 1, after: [0], channel: tcp('10.0.0.1', 40000, '10.0.0.2', 80), bytes: 77 },
    /* 2 */ { type: 'recv', pid: 300, comm: 'nginx', host: 'beta', at: 2, after: [1], channel: tcp('10.0.0.2', 80, '10.0.0.1', 40000), bytes: 77 },
    /* 3 */ { type: 'send', pid: 300, comm: 'nginx', host: 'beta', at: 3, after: [2], channel: tcp('10.0.0.2', 80, '10.0.0.1', 40000), bytes: 1500 },
    /* 4 */ { type: 'recv', pid: 300, comm: 'curl', at: 4, after: [3], channel: tcp('10.0.0.1', 40000, '10.0.0.2', 80), bytes: 1500 },
    /* 5 */ { type: 'exit', pid: 300, comm: 'curl', at: 5, after: [4], exitCode: 0 },
  ]);
  return buildGraph(tr, evs);
}

/** One thread that sends n times: n spans, enough to need several batches. */
function chatty(n: number): TraceGraph {
  const tr = traceId(4);
  const list: (Ev & { after?: number[] })[] = [];
  for (let i = 0; i <= n; i++) list.push({ type: 'send', pid: 400, comm: 'yes', at: i, after: i ? [i - 1] : [], channel: pipe(1000 + i), bytes: 1 });
  return buildGraph(tr, events(tr, list));
}

// --- a collector ------------------------------------------------------------

interface KV { key: string; value: { stringValue?: string; intValue?: number | string; arrayValue?: { values: { stringValue?: string }[] } } }
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: KV[];
  links: { traceId: string; spanId: string; flags?: number }[];
  status: { code: number; message?: string };
  /** Bit 0x100: isRemote is known; 0x200: the parent is remote. */
  flags?: number;
}
interface Request { resourceSpans: { resource: { attributes: KV[] }; scopeSpans: { scope: { name: string }; spans: OtlpSpan[] }[] }[] }
interface Post { path: string; contentType: string; body: Request }

/** An HTTP server on 127.0.0.1 that keeps every POST and answers status. */
async function collector(t: Test, status = 200): Promise<{ url: string; posts: Post[] }> {
  const posts: Post[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push({ path: req.url ?? '', contentType: String(req.headers['content-type']), body: JSON.parse(Buffer.concat(chunks).toString()) as Request });
      res.writeHead(req.url === '/v1/traces' ? status : 404, { 'content-type': 'application/json' }).end(status === 200 ? '{}' : '{"message":"no"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, posts };
}

const attr = (kvs: KV[], key: string) => {
  const v = kvs.find((kv) => kv.key === key)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : v?.arrayValue?.values.map((x) => x.stringValue));
};

/** Every span received, with the resource it came under. */
function received(posts: Post[]) {
  return posts.flatMap((p) => p.body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((span) => ({ span, resource: rs.resource.attributes })))));
}

// --- tests -------------------------------------------------------------------

t.test('every span of the graphs arrives once, as the graph has it', async (t) => {
  const { url, posts } = await collector(t);
  const graphs = [pipeline(), forkJoin(), tcpHop(), chatty(1100)];
  const all = graphs.flatMap((g) => g.spans);
  t.ok(all.length > 2 * OTLP_BATCH_SPANS, 'enough spans for three batches');

  const result = await exportOtlp(graphs, `${url}/v1/traces`, { encoding: 'json' });
  t.same(result, { spans: all.length, failed: 0 });
  t.equal(posts.length, Math.ceil(all.length / OTLP_BATCH_SPANS), 'one request per batch');
  for (const p of posts) {
    t.equal(p.path, '/v1/traces');
    t.match(p.contentType, /^application\/json/);
  }
  const got = received(posts);
  t.ok(posts.every((p) => received([p]).length <= OTLP_BATCH_SPANS), `at most ${OTLP_BATCH_SPANS} spans a request`);
  t.equal(got.length, all.length, 'as many spans as the graphs have');

  const byKey = new Map<string, (typeof got)[number][]>();
  for (const g of got) {
    const k = `${g.span.traceId}/${g.span.spanId}`;
    byKey.set(k, [...(byKey.get(k) ?? []), g]);
  }
  const execPath: Record<string, string> = { seq: '/usr/bin/seq', gzip: '/usr/bin/gzip', wc: '/usr/bin/wc', curl: '/usr/bin/curl', cc: '/usr/bin/cc', ld: '/usr/bin/ld' };
  let mismatches = 0;
  const check = (ok: boolean, what: string, s: Span) => {
    if (!ok && mismatches++ < 10) t.fail(`${what}: span ${s.id} (${s.comm})`);
  };
  for (const s of all) {
    const list = byKey.get(`${s.trace}/${s.id}`) ?? [];
    check(list.length === 1, `arrived ${list.length} times`, s);
    if (list.length !== 1) continue;
    const { span, resource } = list[0];
    check(span.spanId.length === 16 && span.traceId.length === 32, 'id lengths', s);
    check(span.parentSpanId === s.parent, `parent ${span.parentSpanId} != ${s.parent}`, s);
    check(JSON.stringify(span.links.map((l) => l.spanId)) === JSON.stringify(s.links), 'links', s);
    check(span.links.every((l) => l.traceId === s.trace), 'links in the same trace', s);
    check(span.startTimeUnixNano === s.start.toString() && span.endTimeUnixNano === s.end.toString(), 'timestamps to the ns', s);
    check(span.name === `${s.comm} ${s.startEvent.type}->${s.endEvent.type}`, `name ${span.name}`, s);
    check(span.kind === 1, 'kind INTERNAL', s);
    check(attr(resource, 'host.name') === s.host, 'host.name', s);
    check(attr(resource, 'process.pid') === s.pid, 'process.pid', s);
    check(attr(resource, 'process.command') === s.comm, 'process.command', s);
    check(attr(resource, 'process.executable.path') === execPath[s.comm], 'process.executable.path', s);
    check(attr(resource, 'service.name') === 'causeway', 'service.name', s);
    check(attr(span.attributes, 'causeway.event.start') === s.startEvent.id && attr(span.attributes, 'causeway.event.end') === s.endEvent.id, 'event ids', s);
    check(attr(span.attributes, 'thread.id') === s.tid, 'thread.id', s);
  }
  t.equal(mismatches, 0, 'every span as the graph has it');

  t.test('parents follow the bytes across processes', async (t) => {
    const [g] = graphs;
    const find = (comm: string, type: string) => g.spans.find((s) => s.comm === comm && s.startEvent.type === type)!;
    const gzipRecv = byKey.get(`${g.trace}/${find('gzip', 'recv').id}`)![0].span;
    const seqSend = g.spans.find((s) => s.comm === 'seq' && s.endEvent.type === 'send')!;
    t.equal(gzipRecv.parentSpanId, seqSend.id, "gzip's recv span follows the seq span that ended at the send");
    t.equal(attr(gzipRecv.attributes, 'causeway.start.channel.id'), 'pipe:[31815]');
    t.equal(attr(gzipRecv.attributes, 'causeway.start.channel.ino'), 31815);
    t.equal(attr(gzipRecv.attributes, 'causeway.start.bytes'), 4096);
    t.equal(attr(gzipRecv.attributes, 'causeway.end.channel.id'), 'pipe:[31816]', 'the end is the send into the next pipe');
    const root = g.spans.find((s) => s.startEvent === g.roots[0])!;
    const rootSpan = byKey.get(`${g.trace}/${root.id}`)![0].span;
    t.equal(rootSpan.parentSpanId, undefined, 'the root span has no parent');
    t.same(attr(rootSpan.attributes, 'causeway.event.parents'), ['0000f00df00df00d'], 'but keeps the record it came from');
    const wc = byKey.get(`${g.trace}/${find('wc', 'recv').id}`)![0].span;
    t.match(wc.status, { code: 2, message: 'exit status 1' }, 'a failed exit is an error');
  });

  t.test('a join has one parent and links to the others', async (t) => {
    const g = graphs[1];
    const join = g.spans.find((s) => s.startEvent.type === 'join')!;
    const [sendA, sendB] = join.startEvent.parents.map((p) => g.spans.find((s) => s.endEvent.id === p)!);
    const span = byKey.get(`${g.trace}/${join.id}`)![0].span;
    t.equal(span.parentSpanId, sendB.id, 'the adopted (last) send is the parent');
    t.same(span.links.map((l) => l.spanId), [sendA.id], 'the other send is a link');
    t.equal(attr(span.attributes, 'causeway.start.bytes'), 30);
    t.match(span.status, { code: 2, message: 'killed by signal 9' });
  });

  t.test('a TCP hop between hosts: one resource per host and pid', async (t) => {
    const g = graphs[2];
    const spans = g.spans.map((s) => byKey.get(`${g.trace}/${s.id}`)![0]);
    t.same([...new Set(spans.map((x) => attr(x.resource, 'host.name')))].sort(), ['alpha', 'beta']);
    const nginx = spans.find((x) => attr(x.resource, 'host.name') === 'beta')!;
    t.equal(attr(nginx.resource, 'process.pid'), 300);
    t.equal(attr(nginx.resource, 'process.command'), 'nginx');
    t.equal(attr(nginx.resource, 'process.executable.path'), undefined, 'no exec seen on beta');
    t.equal(attr(nginx.span.attributes, 'causeway.start.channel.kind'), 'tcp');
    t.equal(attr(nginx.span.attributes, 'causeway.start.channel.remote_address'), '10.0.0.1');
    t.equal(attr(nginx.span.attributes, 'causeway.start.channel.local_port'), 80);
    const curlSend = g.spans.find((s) => s.host === 'alpha' && s.endEvent.type === 'send')!;
    t.equal(nginx.span.parentSpanId, curlSend.id, "nginx's span follows curl's across hosts");
    const resources = posts.flatMap((p) => p.body.resourceSpans).filter((rs) => attr(rs.resource.attributes, 'process.pid') === 300);
    t.equal(resources.length, 2, 'curl and nginx (both pid 300) under separate resources');
  });
});

t.test('a TCP hop whose ends are exported by two agents, one per host: joined by the send event id', async (t) => {
  const { url, posts } = await collector(t);
  const g = tcpHop();
  // Each host's store has only its own events.
  const [alpha, beta] = ['alpha', 'beta'].map((h) => buildGraph(g.trace, g.events.filter((e) => e.host === h)));
  const [curlExec, curlSend, nginxRecv, nginxSend, curlRecv] = g.events;
  t.same(await exportOtlp([beta], `${url}/v1/traces`, { encoding: 'json' }), { spans: 1, failed: 0 });
  t.same(await exportOtlp([alpha], `${url}/v1/traces`, { encoding: 'json' }), { spans: 3, failed: 0 });
  const got = received(posts).map((x) => x.span);
  const byId = new Map(got.map((s) => [s.spanId, s]));
  const nginx = byId.get(nginxRecv.id)!;
  t.equal(nginx.parentSpanId, curlSend.id, "beta's recv names the send its record named: the span alpha exports from curl's send to its recv");
  t.ok(byId.has(curlSend.id), 'which alpha exported');
  t.same(nginx.links, [], 'no link');
  t.equal((nginx.flags ?? 0) & 0x300, 0x300, 'its parent is remote');
  const back = byId.get(curlRecv.id)!;
  t.equal(back.parentSpanId, curlSend.id, "alpha's recv of the answer follows its own wait (the span that ends at it)");
  t.same(back.links.map((l) => l.spanId), [nginxSend.id], "and links beta's send");
  t.equal((back.flags ?? 0) & 0x300, 0x100, 'a local parent');
  t.equal((back.links[0].flags ?? 0) & 0x300, 0x300, 'a remote link');
  t.equal(byId.get(curlExec.id)!.parentSpanId, undefined, 'the root keeps no parent');
  t.equal(byId.get(curlSend.id)!.parentSpanId, curlExec.id);

  // nginx holds the trace on: a second request on another connection, in the same trace, is still the hop.
  const tr = traceId(5);
  const nginx2 = events(tr, [
    { type: 'recv', pid: 300, comm: 'nginx', host: 'beta', at: 0, after: ['00000000000000a1'], channel: tcp('10.0.0.2', 80, '10.0.0.1', 40000), bytes: 77 },
    { type: 'send', pid: 300, comm: 'nginx', host: 'beta', at: 1, after: [0], channel: tcp('10.0.0.2', 80, '10.0.0.1', 40000), bytes: 1500 },
    { type: 'recv', pid: 300, comm: 'nginx', host: 'beta', at: 2, after: ['00000000000000a2'], channel: tcp('10.0.0.2', 80, '10.0.0.1', 40001), bytes: 77 },
    { type: 'exit', pid: 300, comm: 'nginx', host: 'beta', at: 3, after: [2], exitCode: 0 },
  ]);
  const before = posts.length;
  const [r1, , r2] = nginx2;
  await exportOtlp([buildGraph(tr, nginx2)], `${url}/v1/traces`, { encoding: 'json' });
  const again = new Map(received(posts.slice(before)).map((x) => [x.span.spanId, x.span]));
  t.equal(again.get(r1.id)?.parentSpanId, '00000000000000a1');
  t.equal(again.get(r2.id)?.parentSpanId, '00000000000000a2', "a recv that does not answer the thread's own send on that connection follows the other host's send");
  t.same(again.get(r2.id)?.links, []);
});

t.test('a URL without a path gets /v1/traces; serviceName is used', async (t) => {
  const { url, posts } = await collector(t);
  t.equal(tracesUrl(url), `${url}/v1/traces`);
  t.equal(tracesUrl(`${url}/`), `${url}/v1/traces`);
  t.equal(tracesUrl(`${url}/otlp/v1/traces`), `${url}/otlp/v1/traces`, 'a given path is kept');
  const g = forkJoin();
  t.same(await exportOtlp([g], url, { serviceName: 'build', encoding: 'json' }), { spans: g.spans.length, failed: 0 });
  t.equal(posts.length, 1);
  t.equal(posts[0].path, '/v1/traces');
  t.ok(received(posts).every((x) => attr(x.resource, 'service.name') === 'build'));
});

t.test('an unreachable collector: failed counted, a clear error, no throw, no hang', async (t) => {
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));

  const graphs = [pipeline(), chatty(1100)];
  const n = graphs.reduce((a, g) => a + g.spans.length, 0);
  const timeoutMillis = 1500;
  const t0 = Date.now();
  const result = await exportOtlp(graphs, `http://127.0.0.1:${port}/v1/traces`, { timeoutMillis, encoding: 'json' });
  const took = Date.now() - t0;
  t.equal(result.spans, n);
  t.equal(result.failed, n, 'every span failed');
  t.match(result.error, new RegExp(`127\\.0\\.0\\.1:${port}/v1/traces failed: .*ECONNREFUSED.*unreachable.*more spans not sent`));
  t.ok(took < timeoutMillis + 2000, `gave up after ${took} ms, one timeout for all batches`);
});

t.test('a collector that never answers: failed within the timeout', async (t) => {
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((s) => {
    sockets.add(s);
    s.resume();
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const g = pipeline();
  const t0 = Date.now();
  const result = await exportOtlp([g], `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, { timeoutMillis: 1000 });
  const took = Date.now() - t0;
  t.match(result, { spans: g.spans.length, failed: g.spans.length, error: /timed out.*unreachable/ });
  t.ok(took < 1000 + 1500, `gave up after ${took} ms`);
});

t.test('a collector that refuses: failed counted with the HTTP status, every batch tried', async (t) => {
  const { url, posts } = await collector(t, 400);
  const g = chatty(600);
  const result = await exportOtlp([g], url, { encoding: 'json' });
  t.equal(result.failed, g.spans.length);
  t.match(result.error, /failed: HTTP 400/);
  t.equal(posts.length, 2, 'an answered failure does not stop the next batch');
});

t.test('a bad URL is reported, not thrown', async (t) => {
  const g = forkJoin();
  t.match(await exportOtlp([g], 'not a url'), { spans: g.spans.length, failed: g.spans.length, error: /not a URL/ });
  t.match(await exportOtlp([g], 'ftp://x/v1/traces'), { failed: g.spans.length, error: /http: or https:/ });
  t.same(await exportOtlp([], 'not a url'), { spans: 0, failed: 0 }, 'nothing to send, nothing to fail');
});
