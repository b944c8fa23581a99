/**
 * Export of traces to OpenTelemetry over OTLP/HTTP, with the OpenTelemetry JS
 * exporter (@opentelemetry/exporter-trace-otlp-http: JSON over HTTP POST).
 *
 *   const { spans, failed, error } = await exportOtlp(graphs, 'http://127.0.0.1:4318/v1/traces');
 *
 * Each span of a TraceGraph (src/tracer/graph.ts) becomes one OTel span, built
 * as a ReadableSpan from the kernel's timestamps (no tracer span is started):
 *  - trace id = the trace id; span id = the id of the event that starts the
 *    span (48 bits, 16 hex digits zero-padded: unique per span, since a span
 *    is keyed by its start event); parent span id = span.parent; links =
 *    span.links (a join's other parents, same trace). Only the graph's spans
 *    are exported, and span.parent and span.links always name graph spans, so
 *    every parent and link refers to a span of the same export, none dangles
 *    (but for the hop from another host, below).
 *    No span is made up for an event that starts none (a task whose only
 *    event is its exit, or a root whose thread reported nothing else): the
 *    graph gives no span such an event as parent, and its id stays visible in
 *    the causeway.event.parents attribute of the spans that follow it, as do
 *    parents outside the graph (the record a run started from).
 *  - one exception, the hop from another host (or from another agent's or
 *    run's store): a TCP recv or join whose parents are all outside the graph
 *    adopted a record that crossed in the TCP option, naming the sender's send
 *    event. Its sender exports its own spans, where that event's id is the id
 *    of the span that starts at the send (for a request: the sender's wait for
 *    the answer); the span that ends at the send cannot be named from here.
 *    So the send's id is the parent, remote; but a thread that reads the
 *    answer to its own request (the span that ends at this recv starts at a
 *    send on the same connection: a front that receives its backend's answer)
 *    keeps that span, its wait, as parent, and the send is a link.
 *    Such a parent or link dangles at the collector when the sender's thread
 *    had no later event in the trace (a server's last answer).
 *  - name = `${comm} ${startEvent.type}->${endEvent.type}`, e.g. "gzip recv->send".
 *  - kind = INTERNAL for all. A span runs from one event of a thread to its
 *    next, not over a request: CLIENT/SERVER would claim a request/response
 *    pair the kernel does not see (nor which side connected), and
 *    PRODUCER/CONSUMER fits only one end of a relay's recv->send span. The hop
 *    itself is the parent edge (a recv's span has the span that ended at the
 *    send as parent, isRemote when that is another process), and the channel
 *    attributes below say what carried it.
 *  - start/end = the events' ns timestamps, exact (HrTime [s, ns]).
 *  - attributes: causeway.event.start, causeway.event.end (event ids),
 *    causeway.event.start_type, causeway.event.end_type, causeway.event.parents
 *    (the start event's parents), causeway.priority, thread.id; for an end that
 *    is a send, recv or join: causeway.{start,end}.bytes and
 *    causeway.{start,end}.channel.{kind,id} (id as channelName() shows it) plus
 *    ino/dev (pipe, fifo), socket_type/name (unix), or local_address/local_port/
 *    remote_address/remote_port (tcp); for a span ending at an exit:
 *    process.exit.code or causeway.exit.signal, and status ERROR if nonzero.
 *  - resource: one per program a process ran (host, pid, comm, file executed):
 *    host.name, process.pid, process.command (the span's comm),
 *    process.executable.path (the process's last exec at or before the span's
 *    end, when the trace has one), service.name (opts.serviceName ?? 'causeway').
 *    Spans of different processes carry different resources in one request.
 *
 * Delivery: batches of at most 512 spans, one request each, in order, each
 * awaited. A failed batch never throws: its spans are counted in `failed` and
 * the first error is returned as a message. After a failure that is not an
 * HTTP response (connection refused, timeout, DNS), the collector is taken to
 * be unreachable and the remaining batches are counted as failed without
 * trying them, so a dead URL costs one timeout, not one per batch. The
 * exporter's own retries (on 429/502/503/504 and network errors) stay within
 * timeoutMillis per batch. OTEL_EXPORTER_OTLP_HEADERS and friends apply as the
 * exporter reads them; the URL given here wins over the environment's.
 */
import type * as http from 'node:http';
import { Attributes, HrTime, Link, SpanContext, SpanKind, SpanStatus, SpanStatusCode, TraceFlags, isValidSpanId, isValidTraceId } from '@opentelemetry/api';
import { ExportResult, ExportResultCode } from '@opentelemetry/core';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { Resource, resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { Channel, channelName } from '../kernel/events';
import type { Span, TraceEvent, TraceGraph } from './graph';

// Incubating semantic conventions, copied as the semantic-conventions package advises.
const ATTR_HOST_NAME = 'host.name';
const ATTR_PROCESS_PID = 'process.pid';
const ATTR_PROCESS_COMMAND = 'process.command';
const ATTR_PROCESS_EXECUTABLE_PATH = 'process.executable.path';
const ATTR_PROCESS_EXIT_CODE = 'process.exit.code';
const ATTR_THREAD_ID = 'thread.id';

/** Spans per export request (the OTel SDK's default batch size). */
export const OTLP_BATCH_SPANS = 512;
/** The path appended to a URL given without one. */
export const OTLP_TRACES_PATH = '/v1/traces';
const DEFAULT_TIMEOUT_MS = 10_000;
const SCOPE = { name: 'causeway' };

export interface OtlpOptions {
  /** service.name of every resource; 'causeway' if unset. */
  serviceName?: string;
  /** How long one batch may take, retries included, in ms (10000 if unset). */
  timeoutMillis?: number;
  /** OTLP/HTTP's body: 'protobuf' (application/x-protobuf, the spec's default) or 'json'. */
  encoding?: OtlpEncoding;
}

export type OtlpEncoding = 'json' | 'protobuf';
export const OTLP_ENCODINGS: readonly OtlpEncoding[] = ['protobuf', 'json'];

type Config = ConstructorParameters<typeof JsonTraceExporter>[0] & object;

export interface OtlpResult {
  /** Spans of the graphs, all of which were tried. */
  spans: number;
  /** Of those, the spans that did not reach the collector. */
  failed: number;
  /** Why, when failed > 0: the first failure, with the URL. */
  error?: string;
}

/**
 * Sends the spans of graphs to an OTLP/HTTP collector. url is the traces
 * endpoint (http://host:4318/v1/traces); a URL with no path gets /v1/traces.
 * Never rejects: failures are counted in failed and described in error.
 */
export async function exportOtlp(graphs: TraceGraph[], url: string, opts: OtlpOptions = {}): Promise<OtlpResult> {
  const resources = new ResourceCache(opts.serviceName ?? 'causeway');
  const spans: ReadableSpan[] = [];
  let invalid = 0;
  for (const g of graphs) {
    if (!isValidTraceId(g.trace.toLowerCase())) {
      invalid += g.spans.length;
      continue;
    }
    const execs = execsByProcess(g);
    const previous = previousInThread(g);
    for (const s of g.spans) {
      if (isValidSpanId(s.id.toLowerCase())) spans.push(toReadableSpan(s, resources.get(s, lastExec(execs, s)), g.byId, fromOutside(s, g, previous)));
      else invalid++;
    }
    spans.push(...layerSpans(g, (s) => resources.get(s, lastExec(execs, s))));
  }
  const total = spans.length + invalid;
  let failed = invalid;
  const errors = new Set<string>();
  if (invalid) errors.add(`${invalid} spans skipped: trace or event ids that are not valid OTel ids`);
  const result = () => ({ spans: total, failed, ...(errors.size && { error: [...errors].join('; ') }) });
  if (spans.length === 0) return result();

  const endpoint = tracesUrl(url);
  if (typeof endpoint !== 'string') return { spans: total, failed: total, error: endpoint.error };
  const timeoutMillis = opts.timeoutMillis ?? DEFAULT_TIMEOUT_MS;
  // Our own agent, so that its keep-alive sockets are closed when we are done.
  let agent: http.Agent | undefined;
  const config: Config = {
    url: endpoint,
    timeoutMillis,
    httpAgentOptions: async (protocol: string) => {
      const mod = protocol === 'http:' ? await import('node:http') : await import('node:https');
      return (agent = new mod.Agent({ keepAlive: true }));
    },
  };
  const exporter = (opts.encoding ?? 'protobuf') === 'json' ? new JsonTraceExporter(config) : new ProtobufTraceExporter(config);
  try {
    for (let i = 0; i < spans.length; i += OTLP_BATCH_SPANS) {
      const batch = spans.slice(i, i + OTLP_BATCH_SPANS);
      const r = await exportBatch(exporter, batch, timeoutMillis);
      if (r.code === ExportResultCode.SUCCESS) continue;
      failed += batch.length;
      let msg = `OTLP export to ${endpoint} failed: ${describe(r.error)}`;
      if (!isNetworkError(r.error)) {
        errors.add(msg);
        continue;
      }
      // Unreachable: the next batches would wait as long for nothing.
      const rest = spans.length - (i + batch.length);
      failed += rest;
      msg += ` (collector unreachable; gave up within the ${timeoutMillis} ms timeout)`;
      errors.add(rest ? `${msg}; ${rest} more spans not sent` : msg);
      break;
    }
  } finally {
    await exporter.shutdown().catch(() => undefined);
    agent?.destroy();
  }
  return result();
}

/** The traces endpoint for url, or why url is not one. */
export function tracesUrl(url: string): string | { error: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { error: `not a URL: '${url}' (expected e.g. http://127.0.0.1:4318${OTLP_TRACES_PATH})` };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { error: `OTLP/HTTP needs an http: or https: URL, not '${url}'` };
  if (u.pathname === '/' || u.pathname === '') u.pathname = OTLP_TRACES_PATH;
  return u.href;
}

/** One export call as a promise, bounded by timeoutMillis (plus a grace for the exporter's own deadline). */
function exportBatch(exporter: JsonTraceExporter | ProtobufTraceExporter, batch: ReadableSpan[], timeoutMillis: number): Promise<ExportResult> {
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => resolve({ code: ExportResultCode.FAILED, error: new Error(`no answer within ${timeoutMillis} ms`) }),
      timeoutMillis + 1000,
    );
    exporter.export(batch, (r) => {
      clearTimeout(timer);
      resolve(r);
    });
  });
}

/** A failure to reach the collector (a system error such as ECONNREFUSED, or a timeout), not an answer from it. */
function isNetworkError(err: unknown): boolean {
  if (err instanceof AggregateError) return err.errors.some(isNetworkError);
  if (!(err instanceof Error)) return false;
  return typeof (err as { code?: unknown }).code === 'string' || /timed out|no answer within/.test(err.message);
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err ?? 'unknown error');
  const e = err as Error & { code?: unknown; data?: unknown; errors?: unknown[] };
  // Node reports a refused connection to a name with several addresses as an AggregateError with no message.
  if (!e.message && Array.isArray(e.errors) && e.errors.length) return e.errors.map(describe).join('; ');
  if (typeof e.code === 'number') return `HTTP ${e.code}${e.message ? ` ${e.message}` : ''}${e.data ? `: ${String(e.data).slice(0, 200)}` : ''}`;
  return e.message || (typeof e.code === 'string' ? e.code : e.name);
}

const procKey = (e: { host: string; pid: number }) => `${e.host}/${e.pid}`;

/** Each process's exec events, in time order. */
function execsByProcess(g: TraceGraph): Map<string, TraceEvent[]> {
  const m = new Map<string, TraceEvent[]>();
  for (const e of g.events) {
    if (e.type !== 'exec' || !e.path) continue;
    const k = procKey(e);
    let list = m.get(k);
    if (!list) m.set(k, (list = []));
    list.push(e);
  }
  return m;
}

/** The file the span's process executed last, at or before the span's end. */
function lastExec(execs: Map<string, TraceEvent[]>, s: Span): string | undefined {
  let path: string | undefined;
  for (const e of execs.get(procKey(s)) ?? []) if (e.ts <= s.end) path = e.path;
  return path;
}

/** One resource object per program a process ran, shared across graphs so the exporter groups their spans. */
class ResourceCache {
  private readonly cache = new Map<string, Resource>();
  constructor(private readonly serviceName: string) {}

  get(s: Span, path: string | undefined): Resource {
    const key = JSON.stringify([s.host, s.pid, s.comm, path ?? null]);
    let r = this.cache.get(key);
    if (!r) {
      const attrs: Attributes = {
        [ATTR_SERVICE_NAME]: this.serviceName,
        [ATTR_HOST_NAME]: s.host,
        [ATTR_PROCESS_PID]: s.pid,
        [ATTR_PROCESS_COMMAND]: s.comm,
      };
      if (path) attrs[ATTR_PROCESS_EXECUTABLE_PATH] = path;
      this.cache.set(key, (r = resourceFromAttributes(attrs)));
    }
    return r;
  }
}

/** Nanoseconds since the epoch as an HrTime, exact. */
function hrTime(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

function context(trace: string, spanId: string, isRemote: boolean): SpanContext {
  return { traceId: trace.toLowerCase(), spanId: spanId.toLowerCase(), traceFlags: TraceFlags.SAMPLED, isRemote };
}

function channelAttributes(attrs: Attributes, prefix: string, c: Channel): void {
  attrs[`${prefix}.kind`] = c.kind;
  attrs[`${prefix}.id`] = channelName(c);
  switch (c.kind) {
    case 'pipe':
    case 'fifo':
      attrs[`${prefix}.ino`] = c.ino;
      attrs[`${prefix}.dev`] = c.dev;
      break;
    case 'unix':
      attrs[`${prefix}.socket_type`] = c.type;
      attrs[`${prefix}.name`] = c.name;
      break;
    case 'tcp':
      attrs[`${prefix}.local_address`] = c.local;
      attrs[`${prefix}.local_port`] = c.localPort;
      attrs[`${prefix}.remote_address`] = c.remote;
      attrs[`${prefix}.remote_port`] = c.remotePort;
      break;
  }
}

const moves = (e: TraceEvent) => e.type === 'send' || e.type === 'recv' || e.type === 'join';

function spanAttributes(s: Span): Attributes {
  const a = s.startEvent;
  const b = s.endEvent;
  const attrs: Attributes = {
    'causeway.event.start': a.id,
    'causeway.event.end': b.id,
    'causeway.event.start_type': a.type,
    'causeway.event.end_type': b.type,
    'causeway.event.parents': a.parents,
    'causeway.priority': a.priority,
    [ATTR_THREAD_ID]: s.tid,
  };
  for (const [end, e] of [['start', a], ['end', b]] as const) {
    if (!moves(e)) continue;
    attrs[`causeway.${end}.bytes`] = e.bytes;
    if (e.channel) channelAttributes(attrs, `causeway.${end}.channel`, e.channel);
  }
  if (b.type === 'exit') {
    if (b.signal) attrs['causeway.exit.signal'] = b.signal;
    else if (b.exitCode !== undefined) attrs[ATTR_PROCESS_EXIT_CODE] = b.exitCode;
  }
  return attrs;
}

function spanStatus(s: Span): SpanStatus {
  const b = s.endEvent;
  if (b.type !== 'exit') return { code: SpanStatusCode.UNSET };
  if (b.signal) return { code: SpanStatusCode.ERROR, message: `killed by signal ${b.signal}` };
  if (b.exitCode) return { code: SpanStatusCode.ERROR, message: `exit status ${b.exitCode}` };
  return { code: SpanStatusCode.UNSET };
}

/** Parent and links of a span whose start read a record from outside the graph (another host's send); null for any other span. */
interface Outside {
  parent: string;
  links: string[];
}

/** The hop from another host (see the file's comment): the parent and links a span gets when its TCP recv's parents are all outside the graph. */
function fromOutside(s: Span, g: TraceGraph, previous: Map<string, TraceEvent>): Outside | null {
  const e = s.startEvent;
  if (s.parent !== undefined || (e.type !== 'recv' && e.type !== 'join') || e.channel?.kind !== 'tcp') return null;
  const sends = e.parents.filter((p) => isValidSpanId(p.toLowerCase()));
  if (sends.length === 0 || e.parents.some((p) => g.byId.has(p))) return null;
  // The adopted send: a recv's only one, a join's last.
  const ordered = e.type === 'join' ? [...sends].reverse() : sends;
  // A thread that reads the answer to its own request: its wait, the span from its send on this connection, stays the parent.
  const before = previous.get(e.id);
  if (before && before.type === 'send' && sameConnection(before.channel, e.channel)) return { parent: before.id, links: ordered };
  return { parent: ordered[0], links: ordered.slice(1) };
}

/** Each event's previous one in its thread (the events of the whole graph: the agent exports only the spans that are new). */
function previousInThread(g: TraceGraph): Map<string, TraceEvent> {
  const last = new Map<string, TraceEvent>();
  const out = new Map<string, TraceEvent>();
  for (const e of g.events) {
    const k = `${e.host}/${e.tid}`;
    const p = last.get(k);
    if (p) out.set(e.id, p);
    last.set(k, e);
  }
  return out;
}

/**
 * causeway trace --layers: a hop whose layers were timed becomes a span of its
 * own ("hop COMM -> COMM", from the send to the read, child of the sender's
 * span that ends at the send), with a child span per layer ("IFNAME@NETNS
 * KIND DIR", from entering it to entering the next; attributes
 * network.interface.name, causeway.layer.{netns,kind,direction,encap}). Their
 * span ids cannot collide with the events': event ids are 48 bits, and these
 * set the top 16 over the read's 48: 0xbN00 for the read's N-th layered hop,
 * 0xcNMM for its MM-th layer (up to 16 hops per read, 256 layers per hop).
 */
function layerSpans(g: TraceGraph, resourceOf: (s: Span) => Resource): ReadableSpan[] {
  const out: ReadableSpan[] = [];
  const endingAt = new Map(g.spans.map((s) => [s.endEvent.id, s]));
  const nth = new Map<string, number>();
  for (const h of g.hops) {
    if (!h.layers) continue;
    const sender = endingAt.get(h.send.id);
    if (!sender || !isValidTraceId(g.trace.toLowerCase())) continue;
    const n = nth.get(h.recv.id) ?? 0;
    nth.set(h.recv.id, n + 1);
    if (n > 15 || h.layers.length > 256) continue;
    const low = h.recv.id.padStart(16, '0').slice(-12);
    const hopId = `b${n.toString(16)}00${low}`;
    const resource = resourceOf(sender);
    const span = (id: string, parent: string, name: string, start: bigint, end: bigint, attributes: Attributes): ReadableSpan =>
      readableSpan({
        name,
        spanContext: context(g.trace, id, false),
        parentSpanContext: context(g.trace, parent, false),
        start,
        end,
        status: { code: SpanStatusCode.UNSET },
        attributes,
        links: [],
        resource,
      });
    out.push(span(hopId, sender.id, `hop ${h.send.comm} -> ${h.recv.comm}`, h.send.ts, h.recv.ts, {
      'causeway.hop.send': h.send.id,
      'causeway.hop.recv': h.recv.id,
      'causeway.hop.latency_ns': Number(h.latencyNs),
    }));
    h.layers.forEach((l, i) => {
      const id = `c${n.toString(16)}${i.toString(16).padStart(2, '0')}${low}`;
      out.push(span(id, hopId, `${l.kind === 'socket' ? 'socket' : l.ifname}@${l.netns} ${l.kind} ${l.dir}`, l.start, l.start + l.latencyNs, {
        'network.interface.name': l.ifname,
        'causeway.layer.netns': l.netns,
        'causeway.layer.kind': l.kind,
        'causeway.layer.direction': l.dir,
        'causeway.layer.encap': l.encap,
        'causeway.layer.index': i,
      }));
    });
  }
  return out;
}

function sameConnection(a: Channel | null, b: Channel): boolean {
  return a?.kind === 'tcp' && b.kind === 'tcp' && a.local === b.local && a.localPort === b.localPort && a.remote === b.remote && a.remotePort === b.remotePort;
}

/** A graph span as the exporter's input; a parent or link is remote when another process's span, or another host's. */
function toReadableSpan(s: Span, resource: Resource, byId: Map<string, TraceEvent>, outside: Outside | null): ReadableSpan {
  const remote = (id: string) => {
    const other = byId.get(id);
    return other === undefined ? outside !== null : procKey(other) !== procKey(s);
  };
  const parent = outside?.parent ?? s.parent;
  return readableSpan({
    name: `${s.comm} ${s.startEvent.type}->${s.endEvent.type}`,
    spanContext: context(s.trace, s.id, false),
    parentSpanContext: parent === undefined ? undefined : context(s.trace, parent, remote(parent)),
    start: s.start,
    end: s.end,
    status: spanStatus(s),
    attributes: spanAttributes(s),
    links: (outside?.links ?? s.links).map((id) => ({ context: context(s.trace, id, remote(id)) })),
    resource,
  });
}

/** A finished INTERNAL span of ours as the exporter takes it: what varies, and the fields that never do. */
function readableSpan(f: {
  name: string;
  spanContext: SpanContext;
  parentSpanContext: SpanContext | undefined;
  start: bigint;
  end: bigint;
  status: SpanStatus;
  attributes: Attributes;
  links: Link[];
  resource: Resource;
}): ReadableSpan {
  return {
    name: f.name,
    kind: SpanKind.INTERNAL,
    spanContext: () => f.spanContext,
    ...(f.parentSpanContext && { parentSpanContext: f.parentSpanContext }),
    startTime: hrTime(f.start),
    endTime: hrTime(f.end),
    duration: hrTime(f.end - f.start),
    status: f.status,
    attributes: f.attributes,
    links: f.links,
    events: [],
    ended: true,
    resource: f.resource,
    instrumentationScope: SCOPE,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}
