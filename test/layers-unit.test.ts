/**
 * --layers without the kernel: the option's parsing, a hop split into layers
 * from stamps, the stamps' table in the store, and the layers in `show`'s
 * tree, the HTML report and the OTLP export.
 */
import t from 'tap';
import http from 'node:http';
import path from 'node:path';
import { AddressInfo } from 'node:net';
import { buildGraph, hopLayers, TraceEvent } from '../src/tracer/graph';
import { LayerStamp, parseLayerSpecs } from '../src/tracer/layers';
import { TraceStore } from '../src/tracer/store';
import { renderTree } from '../src/tracer/tree';
import { renderHtml } from '../src/tracer/html';
import { exportOtlp } from '../src/tracer/otlp';
import { tmpdir } from './helpers';

const TRACE = 'ab'.repeat(16);
const T0 = 1795692140661123001n;
const tcp = (local: string, remote: string) => ({ kind: 'tcp' as const, local, localPort: 40000, remote, remotePort: 7000 });
const ev = (id: number, type: TraceEvent['type'], host: string, at: bigint, parents: number[] = [], extra: Partial<TraceEvent> = {}): TraceEvent => ({
  id: id.toString(16).padStart(16, '0'),
  trace: TRACE,
  type,
  ts: T0 + at,
  host,
  pid: host === 'a' ? 10 : 20,
  tid: host === 'a' ? 10 : 20,
  comm: host === 'a' ? 'client' : 'server',
  parents: parents.map((p) => p.toString(16).padStart(16, '0')),
  channel: null,
  bytes: 0,
  priority: 0,
  ...extra,
});
const events = [
  ev(1, 'exec', 'a', 0n, [], { path: '/usr/bin/client' }),
  ev(2, 'send', 'a', 1000n, [1], { channel: tcp('10.0.0.1', '10.0.0.2'), bytes: 100 }),
  ev(3, 'exec', 'b', 500n, [], { path: '/usr/bin/server' }),
  ev(4, 'recv', 'b', 9000n, [3, 2], { channel: tcp('10.0.0.2', '10.0.0.1'), bytes: 100 }),
  ev(5, 'exit', 'a', 10000n, [2]),
];
const stamp = (at: bigint, ifname: string, netns: string, kind: string, dir: 'in' | 'out', encap = false, event = 2): LayerStamp => ({
  trace: TRACE,
  event: event.toString(16).padStart(16, '0'),
  ts: T0 + at,
  ifname,
  netns,
  kind,
  dir,
  encap,
  len: 1500,
  seq: 1,
});
const stamps = [
  stamp(1500n, 'eth0', 'ca', 'veth', 'out'),
  stamp(2000n, 'br0', 'ha', 'bridge', 'in'),
  stamp(2600n, 'ul0', 'ha', 'veth', 'out', true),
  stamp(8000n, 'ul0', 'hb', 'veth', 'in', true),
  stamp(8500n, 'eth0', 'cb', 'veth', 'in'),
  stamp(8600n, 'eth0', 'cb', 'veth', 'in'), // a second stamp on one interface: the first counts
  stamp(20000n, 'eth0', 'cb', 'veth', 'in', false, 9), // another record's
  stamp(9500n, 'lo', 'cb', 'device', 'in'), // after the read: not this hop's bytes
];

t.test('--layers items: namespaces, interfaces, directions, and what is refused', async (t) => {
  t.same(parseLayerSpecs(['ns1:eth0:in,pid:42:veth0', 'host:ul0:out']), [
    { netns: 'ns1', nsPath: '/run/netns/ns1', ifname: 'eth0', dir: 'in' },
    { netns: 'pid:42', nsPath: '/proc/42/ns/net', ifname: 'veth0', dir: 'in' },
    { netns: 'pid:42', nsPath: '/proc/42/ns/net', ifname: 'veth0', dir: 'out' },
    { netns: 'host', nsPath: '/proc/self/ns/net', ifname: 'ul0', dir: 'out' },
  ]);
  t.same(parseLayerSpecs(['/proc/1/ns/net:eth0:out'])[0].nsPath, '/proc/1/ns/net');
  for (const bad of ['eth0', 'ns:eth0:sideways', 'ns:eth0:in:x', 'pid:x:eth0', '../etc:eth0', 'ns:a/b', 'ns:waytoolonginterfacename'])
    t.throws(() => parseLayerSpecs([bad]), /--layers/, `refuses ${bad}`);
});

t.test('a hop split into layers: path order, first stamp per interface, adding up to the hop', async (t) => {
  const g = buildGraph(TRACE, events, stamps);
  t.equal(g.hops.length, 1);
  const h = g.hops[0];
  t.same(h.layers!.map((l) => `${l.ifname}@${l.netns}:${l.dir}:${l.latencyNs}`), ['socket@a:out:500', 'eth0@ca:out:500', 'br0@ha:in:600', 'ul0@ha:out:5400', 'ul0@hb:in:500', 'eth0@cb:in:500']);
  t.equal(h.layers!.reduce((s, l) => s + l.latencyNs, 0n), h.latencyNs, 'the sum is the hop latency');
  t.same(h.layers!.map((l) => l.encap), [false, false, false, true, true, false]);
  t.equal(hopLayers(events[1], events[3], []), undefined, 'no stamps, no layers');
  t.equal(buildGraph(TRACE, events).hops[0].layers, undefined);
});

t.test('the store keeps the stamps per trace; show, HTML and OTLP carry the layers', async (t) => {
  const dir = tmpdir(t);
  const store = TraceStore.open(path.join(dir, 'x.db'));
  t.same(store.layerStamps(TRACE), [], 'a file without the table has no stamps');
  const run = store.beginRun('x', 'a');
  store.addLayerStamps(run, stamps);
  t.same(store.layerStamps(TRACE), [...stamps].sort((a, b) => (a.ts < b.ts ? -1 : 1)), 'read back by time');
  t.same(store.layerStamps('cd'.repeat(16)), []);
  store.close();

  const g = buildGraph(TRACE, events, stamps);
  const tree = renderTree(g);
  t.match(tree, /\| socket@a +socket +out +\+0\.001 ms/);
  t.match(tree, /\| ul0@ha +veth +out +\+0\.005 ms \(in VXLAN\)/);
  const html = renderHtml([g]);
  t.match(html, /Layers of the hops/);
  t.match(html, /"layers":\[\{"name":"socket@a","kind":"socket","dir":"out","ms":"0.001","encap":false\}/);

  const posts: { resourceSpans: { scopeSpans: { spans: { spanId: string; parentSpanId?: string; name: string; startTimeUnixNano: string; endTimeUnixNano: string }[] }[] }[] }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const r = await exportOtlp([g], `http://127.0.0.1:${(server.address() as AddressInfo).port}`, { encoding: 'json' });
  t.equal(r.failed, 0, r.error);
  const spans = posts.flatMap((p) => p.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans)));
  const hop = spans.find((s) => s.name === 'hop client -> server');
  t.ok(hop, 'a span for the hop');
  t.equal(hop?.parentSpanId, '0000000000000001', "child of the sender's span that ends at the send");
  t.equal(hop?.spanId, 'b00000000000' + '0004', 'its id: 0xb000 over the read');
  const layers = spans.filter((s) => s.parentSpanId === hop?.spanId);
  t.same(layers.map((s) => s.name), ['socket@a socket out', 'eth0@ca veth out', 'br0@ha bridge in', 'ul0@ha veth out', 'ul0@hb veth in', 'eth0@cb veth in'], 'a child span per layer, in order');
  t.equal(layers[0].startTimeUnixNano, (T0 + 1000n).toString());
  t.equal(layers[5].endTimeUnixNano, (T0 + 9000n).toString(), 'the last ends at the read');
});
