/**
 * A trace as X-Trace rebuilds it: events with ids and edges to their parents,
 * and what a reader wants from them. Built from stored events (src/tracer/store.ts),
 * the same for the terminal tree, the HTML report and the OTLP export.
 *
 * Spans: a thread's activity between two consecutive events of one trace is
 * a span of work, named by the event that starts it. A span's parent is the
 * span that ends at (or, failing that, starts at) the event's first parent;
 * its other parents (a join's) are links. Hops: every recv or join names the
 * send events whose bytes it read; the hop's latency is the time between the
 * send's publication and the read.
 */
import type { CausalEvent, Channel, EventType } from '../kernel/events';
import type { LayerStamp } from './layers';

/** One stored event (the JSON form of docs/events.md, with ts as bigint and the host that saw it). */
export interface TraceEvent {
  id: string;
  trace: string;
  type: EventType;
  /** Nanoseconds since the Unix epoch. */
  ts: bigint;
  host: string;
  pid: number;
  tid: number;
  comm: string;
  parents: string[];
  channel: Channel | null;
  bytes: number;
  priority: number;
  path?: string;
  exitCode?: number;
  signal?: number;
  child?: { pid: number; tid: number };
  minted?: boolean;
}

export interface Span {
  /** The id of the event that starts it. */
  id: string;
  trace: string;
  host: string;
  pid: number;
  tid: number;
  comm: string;
  start: bigint;
  end: bigint;
  startEvent: TraceEvent;
  endEvent: TraceEvent;
  /** The span this one follows from, if it is in the trace. */
  parent?: string;
  /** Other spans it follows from (the other parents of a join). */
  links: string[];
}

export interface Hop {
  send: TraceEvent;
  recv: TraceEvent;
  latencyNs: bigint;
  /** With causeway trace --layers: the layers the hop's bytes crossed, in path order; their latencies add up to latencyNs. */
  layers?: Layer[];
}

/**
 * One layer of a hop's path (docs/layers.md): the sending socket (from the
 * send to the first interface), then each watched interface the record's
 * first segment entered, from entering it to entering the next; the last one
 * runs to the read (the receiving stack and the socket's queue are in it).
 */
export interface Layer {
  /** `socket` for the sending socket. */
  ifname: string;
  /** The network namespace as --layers named it (the sending host's name for the socket). */
  netns: string;
  /** socket, veth, bridge, vxlan, device... */
  kind: string;
  dir: 'in' | 'out';
  /** The segment was inside a VXLAN packet here (the underlay). */
  encap: boolean;
  /** Epoch ns when the bytes entered this layer. */
  start: bigint;
  latencyNs: bigint;
}

/** The 48 bits of an event id that the TCP option carries, as the layer stamps name it. */
const id48 = (id: string) => id.padStart(16, '0').slice(-12).padStart(16, '0');

/** A hop's layers from the stamps of its send's record (undefined without any). */
export function hopLayers(send: TraceEvent, recv: TraceEvent, stamps: LayerStamp[]): Layer[] | undefined {
  const seen = new Set<string>();
  const mine = stamps
    .filter((x) => x.event === id48(send.id) && x.ts >= send.ts && x.ts <= recv.ts)
    .sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0))
    .filter((x) => {
      const k = `${x.netns}/${x.ifname}/${x.dir}`;
      return !seen.has(k) && seen.add(k) !== undefined;
    });
  if (mine.length === 0) return undefined;
  const layers: Layer[] = [{ ifname: 'socket', netns: send.host, kind: 'socket', dir: 'out', encap: false, start: send.ts, latencyNs: 0n }];
  for (const x of mine) layers.push({ ifname: x.ifname, netns: x.netns, kind: x.kind, dir: x.dir, encap: x.encap, start: x.ts, latencyNs: 0n });
  for (let i = 0; i < layers.length; i++) layers[i].latencyNs = (i + 1 < layers.length ? layers[i + 1].start : recv.ts) - layers[i].start;
  return layers;
}

/** A process of the trace, as a node of the process graph. */
export interface ProcessNode {
  host: string;
  pid: number;
  /** Its command names and files run, in order. */
  comms: string[];
  paths: string[];
}

/** A channel between two processes, as an edge of the process graph. */
export interface ChannelEdge {
  from: { host: string; pid: number };
  to: { host: string; pid: number };
  channel: Channel | null;
  hops: number;
  bytes: number;
}

export interface TraceGraph {
  trace: string;
  /** Sorted by time. */
  events: TraceEvent[];
  byId: Map<string, TraceEvent>;
  /** Events whose parents are not in the trace (one, for a trace that started in one root). */
  roots: TraceEvent[];
  spans: Span[];
  hops: Hop[];
  processes: ProcessNode[];
  channels: ChannelEdge[];
  hosts: string[];
  start: bigint;
  end: bigint;
}

const threadKey = (e: { host: string; tid: number }) => `${e.host}/${e.tid}`;
const procKey = (e: { host: string; pid: number }) => `${e.host}/${e.pid}`;

/** Builds the graph of one trace from its events (any order), and the layers of its hops from the layer stamps if any. */
export function buildGraph(trace: string, events: TraceEvent[], stamps: LayerStamp[] = []): TraceGraph {
  const sorted = events.filter((e) => e.trace === trace).sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
  const byId = new Map(sorted.map((e) => [e.id, e]));
  const roots = sorted.filter((e) => !e.parents.some((p) => byId.has(p)));

  // Spans: consecutive events of one thread.
  const perThread = new Map<string, TraceEvent[]>();
  for (const e of sorted) {
    const k = threadKey(e);
    let list = perThread.get(k);
    if (!list) perThread.set(k, (list = []));
    list.push(e);
  }
  const spans: Span[] = [];
  const spanByStart = new Map<string, Span>();
  const spanByEnd = new Map<string, Span>();
  for (const list of perThread.values())
    for (let i = 0; i + 1 < list.length; i++) {
      const [a, b] = [list[i], list[i + 1]];
      const s: Span = { id: a.id, trace, host: a.host, pid: a.pid, tid: a.tid, comm: b.comm || a.comm, start: a.ts, end: b.ts, startEvent: a, endEvent: b, links: [] };
      spans.push(s);
      spanByStart.set(a.id, s);
      spanByEnd.set(b.id, s);
    }
  for (const s of spans) {
    const causes = s.startEvent.parents
      .map((p) => spanByEnd.get(p) ?? spanByStart.get(p))
      .filter((x): x is Span => x !== undefined && x !== s)
      .map((x) => x.id);
    // For a join, the adopted parent is the last one named; the others are links.
    const ordered = s.startEvent.type === 'join' ? [...causes].reverse() : causes;
    s.parent = ordered[0];
    s.links = [...new Set(ordered.slice(1))];
  }

  const hops: Hop[] = [];
  for (const e of sorted) {
    if (e.type !== 'recv' && e.type !== 'join') continue;
    for (const p of e.parents) {
      const send = byId.get(p);
      if (send && send.type === 'send') {
        const hop: Hop = { send, recv: e, latencyNs: e.ts - send.ts };
        const layers = stamps.length ? hopLayers(send, e, stamps) : undefined;
        if (layers) hop.layers = layers;
        hops.push(hop);
      }
    }
  }

  const processes = new Map<string, ProcessNode>();
  for (const e of sorted) {
    const k = procKey(e);
    let p = processes.get(k);
    if (!p) processes.set(k, (p = { host: e.host, pid: e.pid, comms: [], paths: [] }));
    if (e.comm && !p.comms.includes(e.comm)) p.comms.push(e.comm);
    if (e.type === 'exec' && e.path) p.paths.push(e.path);
  }
  const channels = new Map<string, ChannelEdge>();
  for (const h of hops) {
    const k = `${procKey(h.send)}>${procKey(h.recv)}>${JSON.stringify(h.recv.channel)}`;
    let c = channels.get(k);
    if (!c) channels.set(k, (c = { from: { host: h.send.host, pid: h.send.pid }, to: { host: h.recv.host, pid: h.recv.pid }, channel: h.recv.channel, hops: 0, bytes: 0 }));
    c.hops++;
    c.bytes += h.recv.bytes;
  }
  return {
    trace,
    events: sorted,
    byId,
    roots,
    spans,
    hops,
    processes: [...processes.values()],
    channels: [...channels.values()],
    hosts: [...new Set(sorted.map((e) => e.host))],
    start: sorted[0]?.ts ?? 0n,
    end: sorted[sorted.length - 1]?.ts ?? 0n,
  };
}

/** A kernel event as the tracer stores it (and reads it back), seen on host. */
export function toTraceEvent(e: CausalEvent, host: string): TraceEvent {
  const t: TraceEvent = {
    id: e.record.eventId,
    trace: e.record.traceId,
    type: e.type,
    ts: e.ts,
    host,
    pid: e.pid,
    tid: e.tid,
    comm: e.comm,
    parents: e.parents,
    channel: e.channel,
    bytes: e.bytes,
    priority: e.record.priority,
  };
  if (e.path !== undefined) t.path = e.path;
  if (e.exitCode !== undefined) t.exitCode = e.exitCode;
  if (e.signal !== undefined) t.signal = e.signal;
  if (e.child) t.child = e.child;
  if (e.minted) t.minted = true;
  return t;
}

/** Turns a JSON event line (docs/events.md) into a TraceEvent. */
export function fromJson(o: Record<string, unknown>, host: string): TraceEvent {
  const e: TraceEvent = {
    id: String(o.event),
    trace: String(o.trace),
    type: o.type as EventType,
    ts: BigInt(String(o.ts)),
    host: typeof o.host === 'string' ? o.host : host,
    pid: Number(o.pid),
    tid: Number(o.tid),
    comm: String(o.comm ?? ''),
    parents: (o.parents as string[]) ?? [],
    channel: (o.channel as Channel | null) ?? null,
    bytes: Number(o.bytes ?? 0),
    priority: Number(o.priority ?? 0),
  };
  if (typeof o.path === 'string') e.path = o.path;
  if (typeof o.exit_code === 'number') e.exitCode = o.exit_code;
  if (typeof o.signal === 'number') e.signal = o.signal;
  if (o.child) e.child = o.child as { pid: number; tid: number };
  if (o.minted) e.minted = true;
  return e;
}
