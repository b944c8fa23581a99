/**
 * A self-contained HTML report of traces: one file that opens offline (no
 * script, style, font or image from anywhere else; a Content-Security-Policy
 * forbids them) and draws, for each trace, its processes and channels, a
 * timeline of its spans with the hops between them, and a table of hops.
 *
 * The page renders from the trace data embedded in it as JSON: this module
 * lays out the process graph and caps what is drawn (HTML_LIMITS), and the
 * inline script builds the DOM and SVG from that JSON, setting every string
 * through textContent or setAttribute, never as markup.
 */
import { channelName } from '../kernel/events';
import type { ChannelEdge, ProcessNode, TraceEvent, TraceGraph } from './graph';

/** Options of renderHtml. */
export interface HtmlOptions {
  /** The page's title and heading (default: the trace id, or the number of traces). */
  title?: string;
}

/** How much of each trace the page draws; what is left out is counted in a note next to it. */
export const HTML_LIMITS = Object.freeze({
  /** Processes drawn in the graph (the first to appear). */
  nodes: 300,
  /** Channels drawn between the processes drawn. */
  edges: 600,
  /** Threads in the timeline (the first to appear). */
  rows: 150,
  /** Span bars in the timeline. */
  spans: 3000,
  /** Event ticks in the timeline. */
  events: 3000,
  /** Hop arrows in the timeline. */
  arrows: 400,
  /** Rows of the hop table. */
  hopRows: 1000,
});

// Process graph geometry, in SVG pixels.
const NODE_W = 168;
const NODE_H = 44;
const COL = 400;
const ROW = 76;
const BAND_TOP = 26;
const BAND_GAP = 10;
const MARGIN = 16;
const SPREAD = 30;
const MAX_SPREAD = 90;
// Channel labels: two lines of 10px monospace.
const LABEL_CHARS = 34;
const CHAR_W = 6.1;
const LABEL_H = 24;

interface NodeView {
  key: string;
  host: string;
  pid: number;
  comms: string[];
  paths: string[];
  /** Milliseconds from the trace's start to the process's first event. */
  first: number;
  layer: number;
  x: number;
  y: number;
}

interface EdgeView {
  from: string;
  to: string;
  channel: string;
  hops: number;
  bytes: number;
  /** "N hops · SIZE", the label's second line. */
  detail: string;
  /** SVG path, and where its label (top middle) goes. */
  d: string;
  lx: number;
  ly: number;
}

interface ForkView {
  from: string;
  to: string;
  d: string;
}

interface BandView {
  host: string;
  y: number;
  h: number;
}

interface RowView {
  key: string;
  host: string;
  pid: number;
  tid: number;
  comm: string;
}

interface SpanView {
  id: string;
  row: number;
  start: number;
  end: number;
  comm: string;
  from: string;
  to: string;
  parent: string | null;
  links: string[];
}

interface EventView {
  id: string;
  row: number;
  t: number;
  type: string;
  detail: string;
}

interface HopView {
  send: string;
  recv: string;
  from: string;
  to: string;
  channel: string;
  bytes: number;
  /** Milliseconds from the trace's start. */
  sent: number;
  read: number;
  /** Latency in milliseconds, 3 decimals. */
  latency: string;
  /** Timeline rows of the sender and the reader, -1 if not drawn. */
  fromRow: number;
  toRow: number;
  arrow: boolean;
  /** With --layers: the layers of its path, in order (name, kind, direction, ms, in VXLAN). */
  layers?: { name: string; kind: string; dir: string; ms: string; encap: boolean }[];
}

interface TraceView {
  trace: string;
  start: string;
  startNs: string;
  duration: number;
  events: number;
  processes: number;
  threads: number;
  hosts: string[];
  spans: number;
  hops: number;
  latency: { median: string; max: string } | null;
  graph: { box: Box; bandWidth: number; bands: BandView[]; nodes: NodeView[]; edges: EdgeView[]; forks: ForkView[]; note: string };
  timeline: { duration: number; rows: RowView[]; spans: SpanView[]; events: EventView[]; note: string };
  hopTable: HopView[];
  hopNote: string;
}

const procKey = (e: { host: string; pid: number }) => `${e.host}/${e.pid}`;
const threadKey = (e: { host: string; tid: number }) => `${e.host}/${e.tid}`;
const ms = (ns: bigint) => Number(ns) / 1e6;
const ms3 = (ns: bigint) => ms(ns).toFixed(3);
const r1 = (n: number) => Math.round(n * 10) / 10;
const fmtBytes = (b: number) => (b < 1024 ? `${b} B` : b < 1048576 ? `${(b / 1024).toFixed(1)} KiB` : `${(b / 1048576).toFixed(1)} MiB`);
const plural = (n: number, what: string) => `${n.toLocaleString('en-US')} ${what}${n === 1 ? '' : 's'}`;

/** Epoch nanoseconds as ISO 8601 with nanoseconds. */
function isoNs(ns: bigint): string {
  const d = new Date(Number(ns / 1_000_000n)).toISOString();
  return `${d.slice(0, -1)}${(((ns % 1_000_000n) + 1_000_000n) % 1_000_000n).toString().padStart(6, '0')}Z`;
}

/** Lays out the processes drawn: columns by causal depth, one band per host. */
function layoutGraph(g: TraceGraph, procs: ProcessNode[], chans: ChannelEdge[], first: Map<string, bigint>) {
  const rank = new Map(procs.map((p, i) => [procKey(p), i]));
  const forks: { from: string; to: string }[] = [];
  const seen = new Set<string>();
  for (const e of g.events) {
    if (e.type !== 'fork' || !e.child || e.child.pid === e.pid) continue;
    const [from, to] = [procKey(e), `${e.host}/${e.child.pid}`];
    if (rank.has(from) && rank.has(to) && !seen.has(`${from}>${to}`)) {
      seen.add(`${from}>${to}`);
      forks.push({ from, to });
    }
  }
  // A process's column is one past the deepest process that forked it or sent it
  // bytes and appeared before it (appearance order breaks cycles: replies, loops).
  const preds = new Map<string, string[]>();
  for (const { from, to } of [...forks, ...chans.map((c) => ({ from: procKey(c.from), to: procKey(c.to) }))])
    if (rank.get(from)! < rank.get(to)!) preds.set(to, [...(preds.get(to) ?? []), from]);
  const layer = new Map<string, number>();
  for (const p of procs) {
    const k = procKey(p);
    layer.set(k, Math.max(0, ...(preds.get(k) ?? []).map((q) => layer.get(q)! + 1)));
  }
  const layers = Math.max(0, ...layer.values()) + 1;
  const hosts = [...new Set(procs.map((p) => p.host))];

  // Each host's band is as tall as its most crowded column.
  const bands: BandView[] = [];
  const bandOf = new Map<string, BandView>();
  let y = MARGIN;
  for (const host of hosts) {
    const counts = new Array<number>(layers).fill(0);
    for (const p of procs) if (p.host === host) counts[layer.get(procKey(p))!]++;
    const band = { host, y, h: BAND_TOP + Math.max(...counts) * ROW + 12 };
    bands.push(band);
    bandOf.set(host, band);
    y += band.h + BAND_GAP;
  }

  // Within a column and band, order by the mean height of the predecessors (fewer crossings).
  const nodes = new Map<string, NodeView>();
  for (let l = 0; l < layers; l++)
    for (const host of hosts) {
      const here = procs.filter((p) => p.host === host && layer.get(procKey(p)) === l);
      const bary = (p: ProcessNode) => {
        const ys = (preds.get(procKey(p)) ?? []).map((q) => nodes.get(q)!.y);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Infinity;
      };
      const keyed = here.map((p) => ({ p, b: bary(p), r: rank.get(procKey(p))! }));
      keyed.sort((a, b) => (a.b === b.b ? a.r - b.r : a.b === Infinity ? 1 : b.b === Infinity ? -1 : a.b - b.b));
      keyed.forEach(({ p }, slot) => {
        const k = procKey(p);
        const f = first.get(k) ?? g.start;
        nodes.set(k, { key: k, host, pid: p.pid, comms: p.comms, paths: p.paths, first: ms(f - g.start), layer: l, x: MARGIN + l * COL, y: bandOf.get(host)!.y + BAND_TOP + slot * ROW + (ROW - NODE_H) / 2 });
      });
    }

  // Curves between the same two processes (channels and forks) are spread apart.
  const pairOf = (a: string, b: string) => (a < b ? `${a}|${b}` : `${b}|${a}`);
  const all = [...chans.map((c) => ({ from: procKey(c.from), to: procKey(c.to), c })), ...forks.map((f) => ({ ...f, c: null }))];
  const sizes = new Map<string, number>();
  for (const e of all) sizes.set(pairOf(e.from, e.to), (sizes.get(pairOf(e.from, e.to)) ?? 0) + 1);
  const seenInPair = new Map<string, number>();
  const curves = all.map((e) => {
    const k = pairOf(e.from, e.to);
    const i = seenInPair.get(k) ?? 0;
    seenInPair.set(k, i + 1);
    // Many curves between two processes share at most 2 * MAX_SPREAD pixels.
    const n = sizes.get(k)!;
    const off = (i - (n - 1) / 2) * Math.min(SPREAD, n > 1 ? (2 * MAX_SPREAD) / (n - 1) : SPREAD);
    return { ...e, off, p: curve(nodes.get(e.from)!, nodes.get(e.to)!, off) };
  });

  // Channel labels go where they hit no node and no other label.
  const taken: Box[] = [...nodes.values()].map((n) => ({ x: n.x - 2, y: n.y - 2, w: NODE_W + 4, h: NODE_H + 4 }));
  const edges: EdgeView[] = [];
  for (const { from, to, c, off, p } of curves) {
    if (!c) continue;
    const channel = channelName(c.channel);
    const detail = `${c.hops} hop${c.hops === 1 ? '' : 's'} · ${fmtBytes(c.bytes)}`;
    const w = Math.max(Math.min(channel.length, LABEL_CHARS), detail.length) * CHAR_W + 6;
    const best = placeLabel(p, w, off, taken);
    taken.push(best);
    edges.push({ from, to, channel, hops: c.hops, bytes: c.bytes, detail, d: pathOf(p), lx: r1(best.x + w / 2), ly: r1(best.y) });
  }
  const forkViews = curves.filter((e) => !e.c).map(({ from, to, p }) => ({ from, to, d: pathOf(p) }));
  // The drawing's extent: nodes, curves (within their control points) and labels.
  const pts: Pt[] = [[0, 0], [MARGIN * 2 + (layers - 1) * COL + NODE_W, y]];
  for (const c of curves) pts.push(...c.p);
  for (const b of taken) pts.push([b.x, b.y], [b.x + b.w, b.y + b.h]);
  const [minX, minY] = [Math.min(...pts.map((q) => q[0])) - MARGIN, Math.min(...pts.map((q) => q[1])) - MARGIN];
  const [maxX, maxY] = [Math.max(...pts.map((q) => q[0])) + MARGIN, Math.max(...pts.map((q) => q[1])) + MARGIN];
  const box = { x: Math.floor(minX), y: Math.floor(minY), w: Math.ceil(maxX - minX), h: Math.ceil(maxY - minY) };
  return { box, bandWidth: MARGIN + (layers - 1) * COL + NODE_W, bands, nodes: [...nodes.values()], edges, forks: forkViews };
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}
type Pt = [number, number];

const overlaps = (a: Box, b: Box) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
const pathOf = (p: Pt[]) => `M${r1(p[0][0])},${r1(p[0][1])} C${p.slice(1).map(([x, y]) => `${r1(x)},${r1(y)}`).join(' ')}`;

/** Where a label of width w goes along a curve: the first spot near its middle that is free, or the middle. */
function placeLabel(p: Pt[], w: number, off: number, taken: Box[]): Box {
  const near = off > 0 ? [4, -LABEL_H - 4] : [-LABEL_H - 4, 4];
  const sides = [...near, ...near.map((d) => d + Math.sign(d) * (LABEL_H + 4))];
  for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.1, 0.9])
    for (const dy of sides) {
      const [px, py] = bezier(p, t);
      const b = { x: px - w / 2, y: py + dy, w, h: LABEL_H };
      if (!taken.some((o) => overlaps(o, b))) return b;
    }
  const [px, py] = bezier(p, 0.5);
  return { x: px - w / 2, y: py + sides[0], w, h: LABEL_H };
}

/** The point at t of a cubic Bezier curve. */
function bezier(p: Pt[], t: number): Pt {
  const u = 1 - t;
  const [a, b, c, d] = [u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t];
  return [a * p[0][0] + b * p[1][0] + c * p[2][0] + d * p[3][0], a * p[0][1] + b * p[1][1] + c * p[2][1] + d * p[3][1]];
}

/**
 * The control points of a curve from one node to another: between facing sides
 * for neighbouring columns (either way), over the top for a jump forward of
 * several columns, under the bottom for one backward, around the right side
 * within a column; off spreads curves between the same two nodes.
 */
function curve(a: NodeView, b: NodeView, off: number): Pt[] {
  const ay = a.y + NODE_H / 2;
  const by = b.y + NODE_H / 2;
  const span = b.layer - a.layer;
  if (a === b) {
    const x = a.x + NODE_W * 0.7;
    return [[x, a.y], [x, a.y - 40 - Math.abs(off)], [a.x + NODE_W + 40 + Math.abs(off), ay], [a.x + NODE_W, ay]];
  }
  if (Math.abs(span) === 1) {
    // A reply runs alongside its request.
    const [l, r, ly, ry] = span > 0 ? [a, b, ay, by] : [b, a, by, ay];
    const [x1, x2] = [l.x + NODE_W, r.x];
    const dx = Math.max(40, (x2 - x1) / 2);
    const end = Math.max(-NODE_H / 2 + 4, Math.min(NODE_H / 2 - 4, off * 0.6));
    const q: Pt[] = [[x1, ly + end], [x1 + dx, ly + off], [x2 - dx, ry + off], [x2, ry + end]];
    return span > 0 ? q : q.reverse();
  }
  if (span !== 0) {
    const lift = 28 + 6 * Math.min(Math.abs(span), 4) + Math.abs(off);
    const [x1, x2] = [a.x + NODE_W * (span > 0 ? 0.75 : 0.25), b.x + NODE_W * (span > 0 ? 0.25 : 0.75)];
    const [y1, y2] = span > 0 ? [a.y, b.y] : [a.y + NODE_H, b.y + NODE_H];
    const edge = span > 0 ? Math.min(y1, y2) - lift : Math.max(y1, y2) + lift;
    return [[x1, y1], [x1 + Math.sign(span) * 40, edge], [x2 - Math.sign(span) * 40, edge], [x2, y2]];
  }
  const x = a.x + NODE_W;
  const bulge = 60 + Math.abs(off) * 2;
  return [[x, ay + off / 3], [x + bulge, ay + off], [x + bulge, by + off], [x, by + off / 3]];
}

/** What an event tick says on hover. */
function eventDetail(e: TraceEvent, g: TraceGraph): string {
  const parts = [`${e.type} by ${e.comm}[${e.pid}${e.tid !== e.pid ? `/${e.tid}` : ''}]`, `+${ms3(e.ts - g.start)} ms`, `event ${e.id}`];
  if (e.channel) parts.push(`${channelName(e.channel)}, ${e.bytes} bytes`);
  if (e.child) parts.push(`child ${e.child.pid}${e.child.tid !== e.child.pid ? `/${e.child.tid}` : ''}`);
  if (e.path) parts.push(`runs ${e.path}`);
  if (e.exitCode !== undefined) parts.push(`exit code ${e.exitCode}`);
  if (e.signal !== undefined) parts.push(`signal ${e.signal}`);
  if (e.parents.length) parts.push(`parents ${e.parents.join(', ')}`);
  return parts.join('\n');
}

/** The data the page draws one trace from. */
function traceView(g: TraceGraph): TraceView {
  const multiHost = g.hosts.length > 1;
  const who = (e: TraceEvent) => `${e.comm}[${e.pid}]${multiHost ? `@${e.host}` : ''}`;
  const firstOf = new Map<string, bigint>();
  const threads = new Map<string, TraceEvent[]>();
  for (const e of g.events) {
    if (!firstOf.has(procKey(e))) firstOf.set(procKey(e), e.ts);
    const k = threadKey(e);
    const list = threads.get(k);
    if (list) list.push(e);
    else threads.set(k, [e]);
  }

  // Graph: the first processes to appear, and the channels between them.
  const procs = g.processes.slice(0, HTML_LIMITS.nodes);
  const kept = new Set(procs.map(procKey));
  const between = g.channels.filter((c) => kept.has(procKey(c.from)) && kept.has(procKey(c.to)));
  const chans = between.slice(0, HTML_LIMITS.edges);
  const graph = layoutGraph(g, procs, chans, firstOf);
  const left: string[] = [];
  if (procs.length < g.processes.length) left.push(`${plural(g.processes.length - procs.length, 'process')} left out (the first ${procs.length} to appear are drawn)`);
  if (chans.length < g.channels.length) left.push(`${plural(g.channels.length - chans.length, 'channel')} left out`);

  // Timeline: one row per thread, in order of appearance.
  const allRows = [...threads.entries()];
  const rows: RowView[] = allRows.slice(0, HTML_LIMITS.rows).map(([key, evs]) => ({ key, host: evs[0].host, pid: evs[0].pid, tid: evs[0].tid, comm: evs[evs.length - 1].comm }));
  const rowOf = new Map(rows.map((r, i) => [r.key, i]));
  const drawable = g.spans.filter((s) => rowOf.has(threadKey(s))).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const spans: SpanView[] = drawable.slice(0, HTML_LIMITS.spans).map((s) => ({
    id: s.id,
    row: rowOf.get(threadKey(s))!,
    start: ms(s.start - g.start),
    end: ms(s.end - g.start),
    comm: s.comm,
    from: s.startEvent.type,
    to: s.endEvent.type,
    parent: s.parent ?? null,
    links: s.links,
  }));
  const tickable = g.events.filter((e) => rowOf.has(threadKey(e)));
  const events: EventView[] = tickable.slice(0, HTML_LIMITS.events).map((e) => ({ id: e.id, row: rowOf.get(threadKey(e))!, t: ms(e.ts - g.start), type: e.type, detail: eventDetail(e, g) }));
  const tlLeft: string[] = [];
  if (rows.length < allRows.length) tlLeft.push(`${plural(allRows.length - rows.length, 'thread')} left out (the first ${rows.length} to appear are drawn)`);
  if (spans.length < g.spans.length) tlLeft.push(`${plural(g.spans.length - spans.length, 'span')} of ${g.spans.length.toLocaleString('en-US')} not drawn`);
  if (events.length < g.events.length) tlLeft.push(`${plural(g.events.length - events.length, 'event')} not marked`);

  // Hops, in time order; the first ones with both threads drawn get an arrow.
  let arrows = 0;
  const hopTable: HopView[] = g.hops.slice(0, HTML_LIMITS.hopRows).map((h) => {
    const fromRow = rowOf.get(threadKey(h.send)) ?? -1;
    const toRow = rowOf.get(threadKey(h.recv)) ?? -1;
    const arrow = fromRow >= 0 && toRow >= 0 && arrows < HTML_LIMITS.arrows;
    if (arrow) arrows++;
    return {
      send: h.send.id,
      recv: h.recv.id,
      from: who(h.send),
      to: who(h.recv),
      channel: channelName(h.recv.channel),
      bytes: h.recv.bytes,
      sent: ms(h.send.ts - g.start),
      read: ms(h.recv.ts - g.start),
      latency: ms3(h.latencyNs),
      fromRow,
      toRow,
      arrow,
      ...(h.layers && {
        layers: h.layers.map((l) => ({ name: l.kind === 'socket' ? `socket@${l.netns}` : `${l.ifname}@${l.netns}`, kind: l.kind, dir: l.dir, ms: ms3(l.latencyNs), encap: l.encap })),
      }),
    };
  });
  const unarrowed = g.hops.length - arrows;
  if (unarrowed > 0 && g.hops.length > 0) tlLeft.push(`${plural(unarrowed, 'hop')} without an arrow`);
  const hopNote = hopTable.length < g.hops.length ? `The first ${hopTable.length} of ${g.hops.length.toLocaleString('en-US')} hops are listed; ${plural(g.hops.length - hopTable.length, 'hop')} left out.` : '';

  const lat = g.hops.map((h) => h.latencyNs).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    trace: g.trace,
    start: isoNs(g.start),
    startNs: g.start.toString(),
    duration: ms(g.end - g.start),
    events: g.events.length,
    processes: g.processes.length,
    threads: threads.size,
    hosts: g.hosts,
    spans: g.spans.length,
    hops: g.hops.length,
    latency: lat.length ? { median: ms3(lat[Math.floor((lat.length - 1) / 2)]), max: ms3(lat[lat.length - 1]) } : null,
    graph: { ...graph, note: left.length ? `${left.join('; ')}.` : '' },
    timeline: { duration: ms(g.end - g.start), rows, spans, events, note: tlLeft.length ? `${tlLeft.join('; ')}.` : '' },
    hopTable,
    hopNote,
  };
}

/** JSON that is safe inside a <script> element: no '<', '>' or '&' and no line separators, all as \u escapes. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A self-contained HTML page (no network needed) showing each trace's process graph, timeline and hops. */
export function renderHtml(graphs: TraceGraph[], opts: HtmlOptions = {}): string {
  const title = opts.title ?? (graphs.length === 1 ? `causeway trace ${graphs[0].trace}` : `causeway: ${plural(graphs.length, 'trace')}`);
  const data = { title, traces: graphs.map(traceView) };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<noscript><p class="note">This report draws its graphs with an inline script: allow JavaScript to see them.</p></noscript>
<main id="causeway"></main>
<script type="application/json" id="causeway-data">${scriptJson(data)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

const CSS = `
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg2: #f6f8fa; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 20px 28px; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 0 0 8px; font-family: ui-monospace, monospace; }
h3 { font-size: 14px; margin: 18px 0 6px; }
section.trace { border-top: 2px solid var(--line); padding-top: 14px; margin-top: 18px; }
nav ol { margin: 0; padding-left: 20px; font-family: ui-monospace, monospace; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.summary dt { color: var(--muted); }
dl.summary dd { margin: 0; font-family: ui-monospace, monospace; }
.scroll { overflow: auto; max-height: 80vh; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.note { color: #9a6700; margin: 4px 0; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
.detail { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; min-height: 3.2em; color: var(--muted); margin: 4px 0; }
svg text { font: 11px ui-monospace, monospace; fill: var(--fg); }
svg .edge-label { font-size: 10px; fill: #444c56; }
svg .band-label { fill: var(--muted); font-weight: 600; }
svg .edge-label, svg .lat { paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg [data-span]:hover, svg [data-node]:hover rect { stroke: #000; stroke-width: 1.5; }
svg [data-edge]:hover, svg [data-hop]:hover { stroke-width: 3; }
table.hops { border-collapse: collapse; font-size: 12px; }
table.hops th, table.hops td { border: 1px solid var(--line); padding: 2px 8px; text-align: left; }
table.hops th { background: var(--bg2); cursor: pointer; user-select: none; }
table.hops td.num { text-align: right; font-family: ui-monospace, monospace; }
`;

// The renderer: plain JavaScript that runs in the page. It reads the JSON above
// and builds the DOM and SVG; strings go through textContent and setAttribute only.
const SCRIPT = String.raw`
(() => {
  'use strict';
  const SVG = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2f6fdd', '#d9822b', '#1f9d6b', '#c2417f', '#7b52d6', '#12889e', '#6a8f1a', '#cf3c3c'];
  const NODE_W = ${NODE_W}, NODE_H = ${NODE_H};
  const LABEL_W = 250, PLOT_W = 940, ROW_H = 20, AXIS_H = 30;
  const data = JSON.parse(document.getElementById('causeway-data').textContent);
  const main = document.getElementById('causeway');

  const el = (tag, attrs, parent, text) => {
    const n = document.createElement(tag);
    for (const k in attrs || {}) n.setAttribute(k, String(attrs[k]));
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  };
  const sv = (tag, attrs, parent, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) n.setAttribute(k, String(attrs[k]));
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  };
  const tip = (n, text) => { sv('title', {}, n, text); return n; };
  const fmtMs = (v) => v.toFixed(3) + ' ms';
  const cut = (s, n) => s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
  const note = (parent, text) => { if (text) el('p', { class: 'note' }, parent, text); };
  const arrowDef = (svg, id, color) => {
    const defs = sv('defs', {}, svg);
    const m = sv('marker', { id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
    sv('path', { d: 'M0,0 L10,5 L0,10 z', fill: color }, m);
  };

  function summary(t, section) {
    const dl = el('dl', { class: 'summary' }, section);
    const row = (k, v) => { el('dt', {}, dl, k); el('dd', {}, dl, v); };
    row('trace', t.trace);
    row('start', t.start + ' (' + t.startNs + ' ns)');
    row('duration', fmtMs(t.duration));
    row('processes', String(t.processes) + ' (' + t.threads + ' thread' + (t.threads === 1 ? '' : 's') + ')');
    row('hosts', t.hosts.length + ': ' + t.hosts.join(', '));
    row('events', String(t.events));
    row('spans', String(t.spans));
    row('hops', String(t.hops) + (t.latency ? ' (latency median ' + t.latency.median + ' ms, max ' + t.latency.max + ' ms)' : ''));
  }

  // Hovering a drawn element shows its details (its <title>) in the panel under the drawing.
  const show = (detail) => (ev) => {
    const n = ev.target.closest('[data-span],[data-hop],[data-node],[data-edge],[data-event],[data-fork],[data-row]');
    const title = n && [...n.children].find((c) => c.tagName === 'title');
    if (title) detail.textContent = title.textContent;
  };

  function hostColor(hosts, host) { return COLORS[Math.max(0, hosts.indexOf(host)) % COLORS.length]; }

  function processGraph(t, i, section) {
    el('h3', {}, section, 'Processes and channels');
    const legend = el('div', { class: 'legend' }, section);
    for (const h of t.hosts) { const s = el('span', {}, legend); el('i', { style: 'background:' + hostColor(t.hosts, h) }, s); s.append(h); }
    const s2 = el('span', {}, legend, '\u2192 bytes over a channel; dashed: fork');
    s2.style.color = 'var(--muted)';
    note(section, t.graph.note);
    const box = el('div', { class: 'scroll' }, section);
    const g = t.graph;
    const svg = sv('svg', { width: g.box.w, height: g.box.h, viewBox: [g.box.x, g.box.y, g.box.w, g.box.h].join(' '), 'data-graph': t.trace }, box);
    arrowDef(svg, 'cw-arrow-' + i, '#57606a');
    for (const b of g.bands) {
      sv('rect', { x: 4, y: b.y, width: g.bandWidth, height: b.h, rx: 6, fill: hostColor(t.hosts, b.host), 'fill-opacity': 0.05, stroke: hostColor(t.hosts, b.host), 'stroke-opacity': 0.25 }, svg);
      sv('text', { x: 12, y: b.y + 16, class: 'band-label' }, svg, 'host ' + b.host);
    }
    const byKey = new Map(g.nodes.map((n) => [n.key, n]));
    const name = (k) => { const n = byKey.get(k); return n ? n.comms.join(' \u2192 ') + '[' + n.pid + ']' : k; };
    for (const f of g.forks)
      tip(sv('path', { d: f.d, fill: 'none', stroke: '#8c959f', 'stroke-dasharray': '4 3', 'marker-end': 'url(#cw-arrow-' + i + ')', 'data-fork': f.from + '->' + f.to }, svg), name(f.from) + ' forked ' + name(f.to));
    for (const e of g.edges) {
      const grp = sv('g', { 'data-edge': e.from + '->' + e.to }, svg);
      tip(grp, name(e.from) + ' \u2192 ' + name(e.to) + '\n' + e.channel + ': ' + e.detail + ' (' + e.bytes + ' bytes read)');
      sv('path', { d: e.d, fill: 'none', stroke: '#57606a', 'stroke-width': 1.6, 'marker-end': 'url(#cw-arrow-' + i + ')' }, grp);
      const label = sv('text', { x: e.lx, y: e.ly + 10, 'text-anchor': 'middle', class: 'edge-label' }, grp);
      sv('tspan', { x: e.lx, dy: 0 }, label, cut(e.channel, ${LABEL_CHARS}));
      sv('tspan', { x: e.lx, dy: 11 }, label, e.detail);
    }
    for (const n of g.nodes) {
      const c = hostColor(t.hosts, n.host);
      const grp = sv('g', { 'data-node': n.key, transform: 'translate(' + n.x + ',' + n.y + ')' }, svg);
      const detail = n.comms.join(' \u2192 ') + ' pid ' + n.pid + ' on ' + n.host + '\nfirst seen +' + fmtMs(n.first) + (n.paths.length ? '\nran ' + n.paths.join(', ') : '');
      tip(grp, detail);
      sv('rect', { width: NODE_W, height: NODE_H, rx: 6, fill: c, 'fill-opacity': 0.14, stroke: c, 'stroke-width': 1.2 }, grp);
      sv('text', { x: 8, y: 17 }, grp, cut(n.comms.join(' \u2192 ') || '?', 23));
      sv('text', { x: 8, y: 33, fill: '#656d76' }, grp, cut('pid ' + n.pid + ' @' + n.host, 23));
    }
    svg.addEventListener('mouseover', show(el('div', { class: 'detail' }, section)));
  }

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function timeline(t, i, section) {
    const tl = t.timeline;
    el('h3', {}, section, 'Timeline (one row per thread)');
    note(section, tl.note);
    const box = el('div', { class: 'scroll' }, section);
    const dur = Math.max(tl.duration, 1e-6);
    const x = (ms) => LABEL_W + (ms / dur) * PLOT_W;
    const rowY = (r) => AXIS_H + r * ROW_H;
    const height = AXIS_H + tl.rows.length * ROW_H + 10;
    const width = LABEL_W + PLOT_W + 30;
    const svg = sv('svg', { width, height, viewBox: '0 0 ' + width + ' ' + height, 'data-timeline': t.trace }, box);
    arrowDef(svg, 'cw-hop-' + i, '#24292f');
    const step = niceStep(dur / 8);
    const dec = Math.min(6, Math.max(0, -Math.floor(Math.log10(step))));
    for (let v = 0; v <= dur + step * 1e-9; v += step) {
      sv('line', { x1: x(v), x2: x(v), y1: AXIS_H - 6, y2: height - 10, stroke: '#eaeef2' }, svg);
      sv('text', { x: x(v), y: AXIS_H - 10, 'text-anchor': 'middle', fill: '#656d76' }, svg, v.toFixed(dec) + ' ms');
    }
    tl.rows.forEach((r, k) => {
      if (k % 2 === 0) sv('rect', { x: 0, y: rowY(k), width, height: ROW_H, fill: '#f6f8fa' }, svg);
      const label = r.comm + ' ' + r.pid + (r.tid !== r.pid ? '/' + r.tid : '') + (t.hosts.length > 1 ? ' @' + r.host : '');
      tip(sv('text', { x: 6, y: rowY(k) + 14, 'data-row': r.key }, svg, cut(label, 34)), label + ' (host/tid ' + r.key + ')');
    });
    for (const s of tl.spans) {
      const r = tl.rows[s.row];
      const bar = sv('rect', { x: x(s.start), y: rowY(s.row) + 4, width: Math.max(1, x(s.end) - x(s.start)), height: ROW_H - 8, rx: 2, fill: hostColor(t.hosts, r.host), 'fill-opacity': 0.7, 'data-span': s.id }, svg);
      tip(bar, s.comm + ' ' + r.pid + '/' + r.tid + ' @' + r.host + '\nspan ' + s.id + ': ' + s.from + ' \u2192 ' + s.to +
        '\n+' + fmtMs(s.start) + ' \u2192 +' + fmtMs(s.end) + ' (' + fmtMs(s.end - s.start) + ')' +
        (s.parent ? '\nfollows span ' + s.parent : '') + (s.links.length ? '\nlinks ' + s.links.join(', ') : ''));
    }
    for (const e of tl.events)
      tip(sv('line', { x1: x(e.t), x2: x(e.t), y1: rowY(e.row) + 2, y2: rowY(e.row) + ROW_H - 2, stroke: '#24292f', 'stroke-width': 1.5, 'data-event': e.id }, svg), e.detail);
    const arrows = t.hopTable.filter((h) => h.arrow);
    for (const h of arrows) {
      const [x1, y1, x2, y2] = [x(h.sent), rowY(h.fromRow) + ROW_H / 2, x(h.read), rowY(h.toRow) + ROW_H / 2];
      tip(sv('path', { d: 'M' + x1 + ',' + y1 + ' L' + x2 + ',' + y2, stroke: '#24292f', 'stroke-width': 1.2, fill: 'none', 'marker-end': 'url(#cw-hop-' + i + ')', 'data-hop': h.send + '->' + h.recv }, svg),
        h.from + ' \u2192 ' + h.to + ' over ' + h.channel + '\n' + h.bytes + ' bytes, latency ' + h.latency + ' ms');
      if (arrows.length <= 60) sv('text', { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: 'lat' }, svg, h.latency + ' ms');
    }
    svg.addEventListener('mouseover', show(el('div', { class: 'detail' }, section)));
  }

  function hopTable(t, section) {
    el('h3', {}, section, 'Hops (bytes from a send to the read that adopted them)');
    if (!t.hopTable.length) { el('p', {}, section, 'No hops.'); return; }
    note(section, t.hopNote);
    const cols = [['#', 'num'], ['sent by', ''], ['read by', ''], ['channel', ''], ['bytes', 'num'], ['sent at (ms)', 'num'], ['latency (ms)', 'num']];
    const table = el('table', { class: 'hops', 'data-hops': t.trace }, section);
    const head = el('tr', {}, el('thead', {}, table));
    const body = el('tbody', {}, table);
    t.hopTable.forEach((h, k) => {
      const tr = el('tr', { 'data-hop-row': h.send + '->' + h.recv }, body);
      const cells = [k + 1, h.from, h.to, h.channel, h.bytes, h.sent.toFixed(3), h.latency];
      cells.forEach((v, c) => el('td', cols[c][1] ? { class: 'num' } : {}, tr, String(v)));
    });
    cols.forEach(([name, kind], c) => {
      let desc = false;
      const th = el('th', { title: 'sort' }, head, name);
      th.addEventListener('click', () => {
        desc = !desc;
        const key = (tr) => tr.children[c].textContent;
        const rows = [...body.children].sort((a, b) => {
          const r = kind ? Number(key(a)) - Number(key(b)) : key(a).localeCompare(key(b));
          return desc ? -r : r;
        });
        body.append(...rows);
      });
    });
  }

  // causeway trace --layers: per hop, a bar of its layers (widths in proportion to their time), and their list.
  function hopLayers(t, section) {
    const hops = t.hopTable.filter((h) => h.layers);
    if (!hops.length) return;
    el('h3', {}, section, 'Layers of the hops (the network underneath: from entering a layer to entering the next)');
    const colors = { socket: '#8250df', veth: '#0969da', bridge: '#1a7f37', vxlan: '#bf3989', device: '#9a6700' };
    const width = 720;
    hops.forEach((h) => {
      const box = el('div', { class: 'layers', 'data-layers': h.send + '->' + h.recv }, section);
      el('p', {}, box, h.from + ' -> ' + h.to + ': ' + h.latency + ' ms');
      const total = h.layers.reduce((s, l) => s + Number(l.ms), 0) || 1;
      const svg = sv('svg', { width: width, height: 18, viewBox: '0 0 ' + width + ' 18' }, box);
      let x = 0;
      h.layers.forEach((l) => {
        const w = Math.max(1, (Number(l.ms) / total) * width);
        const rect = sv('rect', { x: x.toFixed(1), y: 0, width: w.toFixed(1), height: 18, fill: colors[l.kind] || '#57606a', stroke: '#fff', 'data-layer': l.name + ':' + l.dir }, svg);
        sv('title', {}, rect, l.name + ' ' + l.kind + ' ' + l.dir + (l.encap ? ' (in VXLAN)' : '') + ': ' + l.ms + ' ms');
        x += w;
      });
      const table = el('table', { class: 'hops' }, box);
      const head = el('tr', {}, el('thead', {}, table));
      ['layer', 'kind', 'dir', 'ms'].forEach((c) => el('th', {}, head, c));
      const body = el('tbody', {}, table);
      h.layers.forEach((l) => {
        const tr = el('tr', {}, body);
        [l.name, l.kind + (l.encap ? ' (in VXLAN)' : ''), l.dir].forEach((v) => el('td', {}, tr, v));
        el('td', { class: 'num' }, tr, l.ms);
      });
    });
  }

  if (data.traces.length > 1) {
    const nav = el('nav', {}, main);
    const ol = el('ol', {}, nav);
    data.traces.forEach((t, i) => el('a', { href: '#trace-' + i }, el('li', {}, ol), t.trace + ' (' + t.events + ' events)'));
  }
  if (!data.traces.length) el('p', {}, main, 'No traces.');
  data.traces.forEach((t, i) => {
    const section = el('section', { class: 'trace', id: 'trace-' + i, 'data-trace': t.trace }, main);
    el('h2', {}, section, 'trace ' + t.trace);
    summary(t, section);
    processGraph(t, i, section);
    timeline(t, i, section);
    hopTable(t, section);
    hopLayers(t, section);
  });
})();
`;
