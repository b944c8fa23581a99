/**
 * causeway trace --layers: a request from one container to another across a
 * Flannel-style VXLAN overlay (test/overlay.ts: two hosts joined by an
 * underlay veth; on each a bridge, a container on a veth, a VXLAN device),
 * the server and the client each in its own `causeway trace` (the record
 * crosses in the TCP option), the client's with the layer programs on every
 * interface of the path. The hop's layers come in path order, include both
 * tunnel devices, add up to the hop's latency, agree with tcpdump on each
 * interface, and a delay made on one layer (a slow tbf qdisc) shows on that
 * layer only.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { bpfUnavailable, causeway, tmpdir, waitFor } from './helpers';
import { makeOverlay, Overlay } from './overlay';
import { newTraceId } from '../src/kernel/record';

const skip = bpfUnavailable();
const NODE = path.join(__dirname, 'fixtures', 'layers_node.py');
/** How far a layer's stamp may be from tcpdump's time for the same segment on that interface (see docs/layers.md). */
const TOLERANCE_NS = 200_000n;

interface LayerJson {
  ifname: string;
  netns: string;
  kind: string;
  dir: string;
  encap: boolean;
  start: string;
  latencyNs: string;
}
interface HopJson {
  send: string;
  recv: string;
  latencyNs: string;
  layers?: LayerJson[];
}

/** A segment with causeway's option in a capture: when tcpdump saw it (epoch ns), and the send event it names. */
interface Seen {
  ts: bigint;
  event: string;
  encap: boolean;
}

/** Reads a nanosecond pcap: every TCP segment with option kind 253 / ExID 0xc5a7, also inside VXLAN (UDP 4789). */
function readOptionSegments(file: string): Seen[] {
  const b = fs.readFileSync(file);
  if (b.length < 24 || b.readUInt32LE(0) !== 0xa1b23c4d) throw new Error(`${file}: not a nanosecond pcap file`);
  const out: Seen[] = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const ts = BigInt(b.readUInt32LE(off)) * 1_000_000_000n + BigInt(b.readUInt32LE(off + 4));
    const caplen = b.readUInt32LE(off + 8);
    let f = b.subarray(off + 16, off + 16 + caplen);
    off += 16 + caplen;
    let encap = false;
    for (let level = 0; level < 2; level++) {
      if (f.length < 34 || f.readUInt16BE(12) !== 0x0800) break;
      const ip = f.subarray(14);
      const ihl = (ip[0] & 0xf) * 4;
      const l4 = ip.subarray(ihl);
      if (ip[9] === 17 && level === 0 && l4.readUInt16BE(2) === 4789) {
        f = l4.subarray(16);
        encap = true;
        continue;
      }
      if (ip[9] !== 6) break;
      const doff = (l4[12] >> 4) * 4;
      for (let i = 20; i < doff; ) {
        const kind = l4[i];
        if (kind === 0) break;
        if (kind === 1) {
          i++;
          continue;
        }
        const len = l4[i + 1];
        if (len < 2) break;
        if (kind === 253 && len === 28 && l4.readUInt16BE(i + 2) === 0xc5a7) out.push({ ts, event: '0000' + l4.toString('hex', i + 22, i + 28), encap });
        i += len;
      }
      break;
    }
  }
  return out;
}

/** tcpdump on each NETNS:IFNAME:DIR of the list, in its namespace; resolves to a function that stops them and returns each capture's file. */
async function capture(t: Test, dir: string, list: string[]): Promise<() => Promise<string[]>> {
  const dumps = list.map((item, i) => {
    const [ns, ifname, d] = item.split(':');
    const file = path.join(dir, `cap${i}.pcap`);
    const p = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-Z', 'root', '-i', ifname, '-Q', d, '--immediate-mode', '-U', '--time-stamp-precision=nano', '-w', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    p.stderr!.on('data', (x) => (log += x));
    t.teardown(() => p.kill());
    return { p, file, log: () => log };
  });
  await waitFor(() => dumps.every((d) => /listening on/.test(d.log())), 10000, 'tcpdump to start');
  return async () => {
    await Promise.all(
      dumps.map((d) => {
        d.p.kill('SIGINT');
        return new Promise((r) => d.p.on('close', r));
      }),
    );
    return dumps.map((d) => d.file);
  };
}

/** One request from container a to container b: the server and the client each in its own `causeway trace`, the client's timing the layers. Returns the hop of the request. */
async function request(t: Test, o: Overlay, dir: string, opts: { size: number; filler?: number }): Promise<{ hop: HopJson; show: string; trace: string; db: string }> {
  const db = path.join(dir, 'traces.db');
  const trace = newTraceId();
  const ready = path.join(dir, `ready-${trace}`);
  const server = causeway(['trace', '--db', db, '--host', 'host-b', '--trust', o.trust, '--', 'ip', 'netns', 'exec', o.ctrB, 'python3', NODE, 'server', o.addrB, '7000', ready]);
  await waitFor(() => fs.existsSync(ready), 20000, 'the server to listen');
  const client = await causeway(['trace', '--db', db, '--host', 'host-a', '--trust', o.trust, '--trace', trace, '--layers', o.pathAB.join(','), '--',
    'ip', 'netns', 'exec', o.ctrA, 'python3', NODE, 'client', o.addrB, '7000', String(opts.size), String(opts.filler ?? 0)]);
  const srv = await server;
  t.equal(client.status, 0, client.stderr);
  t.equal(srv.status, 0, srv.stderr);
  t.equal(client.stdout, `ok:${opts.size}\n`, 'the conversation is unchanged');
  t.match(client.stderr, new RegExp(`causeway: layers: [1-9]\\d* stamp\\(s\\) on ${o.pathAB.length} interface\\(s\\)`), 'the client run stored layer stamps');
  t.notMatch(client.stderr, /LOST/, 'no stamp lost');
  const json = await causeway(['show', trace, '--db', db, '--json']);
  t.equal(json.status, 0, json.stderr);
  const g = JSON.parse(json.stdout) as { events: { id: string; host: string; type: string; channel?: { kind: string } }[]; hops: HopJson[] };
  const byId = new Map(g.events.map((e) => [e.id, e]));
  const hop = g.hops.find((h) => byId.get(h.send)?.host === 'host-a' && byId.get(h.recv)?.host === 'host-b' && byId.get(h.recv)?.channel?.kind === 'tcp');
  if (!hop) throw new Error(`no hop from host-a to host-b in ${json.stdout.slice(0, 2000)}`);
  const show = await causeway(['show', trace, '--db', db]);
  return { hop, show: show.stdout, trace, db };
}

const ms = (ns: string | bigint) => Number(ns) / 1e6;

/** A request across overlay o: its layers in path order, of these kinds, encapsulated where said, adding up to the hop, as tcpdump saw them. */
async function acrossOverlay(t: Test, o: Overlay, kinds: string[], encap: boolean[]) {
  const dir = tmpdir(t);
  execFileSync('ip', ['netns', 'exec', o.ctrA, 'python3', NODE, 'warm', o.addrB]); // neighbours resolved before the request
  const stop = await capture(t, dir, o.pathAB);
  const { hop, show } = await request(t, o, dir, { size: 1200 });
  const files = await stop();
  const layers = hop.layers ?? [];
  t.equal(layers.length, 1 + o.pathAB.length, 'the sending socket and every interface of the path');
  t.same(layers.map((l) => (l.kind === 'socket' ? 'socket' : `${l.netns}:${l.ifname}:${l.dir}`)), ['socket', ...o.pathAB], 'in path order');
  t.same(layers.map((l) => l.kind), kinds, 'kinds');
  t.same(layers.map((l) => l.encap), encap, encap.some(Boolean) ? 'encapsulated on the underlay only' : 'nothing encapsulated');
  const sum = layers.reduce((s, l) => s + BigInt(l.latencyNs), 0n);
  t.equal(sum.toString(), hop.latencyNs, `the layers add up to the hop's latency (${ms(hop.latencyNs).toFixed(3)} ms)`);
  t.ok(layers.every((l) => BigInt(l.latencyNs) >= 0n), 'no layer takes negative time');
  for (const l of layers) t.comment(`${l.kind === 'socket' ? 'socket' : `${l.ifname}@${l.netns}`} ${l.kind} ${l.dir} ${ms(l.latencyNs).toFixed(3)} ms`);

  // Each interface's stamp against tcpdump's time for the first segment of the record there.
  const diffs: number[] = [];
  for (let i = 0; i < o.pathAB.length; i++) {
    const l = layers[i + 1];
    const seen = readOptionSegments(files[i]).find((s) => s.event === hop.send);
    t.ok(seen, `tcpdump saw the record's segment on ${o.pathAB[i]}`);
    if (!seen || !l) continue;
    t.equal(seen.encap, l.encap, `${o.pathAB[i]}: encapsulated alike`);
    const d = BigInt(l.start) - seen.ts;
    diffs.push(Number(d));
    t.ok(d <= TOLERANCE_NS && d >= -TOLERANCE_NS, `${o.pathAB[i]}: the stamp is within ${Number(TOLERANCE_NS) / 1000} µs of tcpdump's (${(Number(d) / 1000).toFixed(1)} µs)`);
  }
  t.comment(`stamp - tcpdump, µs: ${diffs.map((d) => (d / 1000).toFixed(1)).join(' ')}`);

  t.match(show, /\| socket@host-a +socket +out/, 'causeway show lists the layers under the hop');
  return show;
}

t.test('a request across a VXLAN overlay (Flannel-style): its layers in path order, adding up to the hop, as tcpdump saw them', { skip: skip ?? false }, async (t) => {
  const show = await acrossOverlay(
    t,
    makeOverlay(t),
    ['socket', 'veth', 'veth', 'bridge', 'vxlan', 'veth', 'veth', 'vxlan', 'bridge', 'veth', 'veth'],
    [false, false, false, false, false, true, true, false, false, false, false],
  );
  t.match(show, /\| vxlan0@\S+hb +vxlan +in/, 'with the receiving tunnel device');
});

t.test('a request across a routed overlay (Calico-style, no encapsulation): the same', { skip: skip ?? false }, async (t) => {
  await acrossOverlay(t, makeOverlay(t, 'routed'), ['socket', 'veth', 'veth', 'veth', 'veth', 'veth', 'veth'], [false, false, false, false, false, false, false]);
});

t.test('a delay on one layer (a slow qdisc on the underlay) shows on that layer only', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const o = makeOverlay(t);
  execFileSync('ip', ['netns', 'exec', o.ctrA, 'python3', NODE, 'warm', o.addrB]);
  const base = (await request(t, o, dir, { size: 1000, filler: 36000 })).hop.layers ?? [];
  // 2 Mbit/s on host a's underlay: the filler's 36 KB (encapsulated) queue ahead of the request, ~150 ms.
  execFileSync('ip', ['netns', 'exec', o.hostA, 'tc', 'qdisc', 'add', 'dev', 'ul0', 'root', 'tbf', 'rate', '2mbit', 'burst', '1600', 'latency', '2s']);
  const slow = (await request(t, o, dir, { size: 1000, filler: 36000 })).hop.layers ?? [];
  t.equal(slow.length, base.length, 'the same layers');
  t.equal(slow.length, 1 + o.pathAB.length, 'all of them');
  const delayed = `${o.hostA}:ul0:out`;
  for (let i = 0; i < slow.length; i++) {
    const name = slow[i].kind === 'socket' ? 'socket' : `${slow[i].netns}:${slow[i].ifname}:${slow[i].dir}`;
    const [b, s] = [ms(base[i]?.latencyNs ?? '0'), ms(slow[i].latencyNs)];
    t.comment(`${name}: ${b.toFixed(3)} ms -> ${s.toFixed(3)} ms`);
    // The others within 30 ms: the last layer holds the reader's wake-up, which a loaded machine delays by some ms.
    if (name === delayed) t.ok(s - b > 100, `${name}: ${s.toFixed(1)} ms, the queue's delay (> 100 ms more than ${b.toFixed(1)} ms)`);
    else t.ok(Math.abs(s - b) < 30, `${name}: unchanged within 30 ms (${b.toFixed(3)} -> ${s.toFixed(3)} ms)`);
  }
});
