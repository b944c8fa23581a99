/**
 * OTLP export end to end: `causeway trace --otlp URL` on a real traced run
 * (sh, a pipeline, pipes in a loop, TCP on loopback, a UNIX socket, a
 * fork-join), sent to an OTLP/HTTP receiver in this process, and compared
 * span by span with what `causeway show TRACE --json` says of the same run.
 * Only the CLI is used (trace, ls --json, show --json): nothing here depends
 * on how the trace store keeps the events.
 *
 * For every span of show --json, the receiver must have got exactly one span
 * with the same trace id, span id, parent span id, name, start and end (ns,
 * exact), kind, flags (sampled; parent remote when another process's), status
 * and exactly the attributes src/tracer/otlp.ts documents, computed here from
 * show's events; links (a join's other parents) likewise; the resource
 * (service.name, host.name, process.pid, process.command,
 * process.executable.path) and nothing else on it; and no span that show does
 * not have. Every hop of show --json must be recoverable from the export: the
 * send's and the recv's times are span boundaries, and their difference is
 * the hop's latencyNs (the exporter has no latency attribute: a hop is the
 * parent edge, with exact times at both ends).
 *
 * Encodings: the CLI's exporter (@opentelemetry/exporter-trace-otlp-http)
 * sends OTLP/JSON only (application/json); OTLP/protobuf is a separate
 * package. The protobuf case below is ready (a wire-format decoder of
 * ExportTraceServiceRequest, since the installed OpenTelemetry packages ship
 * an encoder but no request decoder; tried against the exporter's real
 * protobuf output) and skipped until the CLI can send protobuf
 * (`--otlp-encoding`, see ENCODINGS).
 *
 * Also: a receiver that answers 503 three times before 200 (the exporter's
 * retry: the same batch again, then accepted; nothing lost or doubled) and a
 * receiver that is down (the run keeps the command's status and reports the
 * failed export).
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { bpfUnavailable, causeway, tmpdir, freePort } from './helpers';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
/** The workload exits with this status; causeway trace must return it whatever the export did. */
const STATUS = 3;
/** Spans per export request (src/tracer/otlp.ts OTLP_BATCH_SPANS). */
const BATCH = 512;

interface Encoding {
  name: string;
  /** Added to `causeway trace` to choose it. */
  args: string[];
  contentType: RegExp;
  skip?: string;
}

/**
 * The encodings to test. The CLI has no way to choose one yet: it sends what
 * @opentelemetry/exporter-trace-otlp-http sends, JSON. Once it can send
 * protobuf (e.g. `--otlp-encoding json|protobuf`, protobuf the default as the
 * OTLP exporter spec recommends for OTLP/HTTP), give JSON its args and drop
 * protobuf's skip.
 */
const ENCODINGS: Encoding[] = [
  { name: 'JSON', args: ['--otlp-encoding', 'json'], contentType: /^application\/json\b/ },
  { name: 'protobuf (the default)', args: [], contentType: /^application\/x-protobuf\b/ },
];

// --- the workload ----------------------------------------------------------

/** A shell script that moves bytes over pipes, TCP and a UNIX socket, joins two writers, and exits STATUS. */
function workload(dir: string, port: number): string {
  const file = path.join(dir, 'workload.sh');
  const py = '/usr/bin/python3';
  fs.writeFileSync(
    file,
    `set -e
F=${FIXTURES}
D=${dir}
# a pipeline of four processes
seq 1 20000 | gzip -1 | gunzip | wc -l
# many short pipes: more than one export batch of spans
i=0
while [ $i -lt 160 ]; do echo $i | cat >/dev/null; i=$((i+1)); done
# TCP on loopback: a server, two clients
${py} $F/tcp_once.py serve ${port} $D/tcp.ready &
while [ ! -e $D/tcp.ready ]; do sleep 0.01; done
${py} $F/tcp_once.py send ${port} hello
${py} $F/tcp_once.py send ${port} quit
wait
# a UNIX stream socket
${py} $F/echo_server.py $D/unix.sock $D/unix.ready &
${py} $F/echo_client.py $D/unix.sock $D/unix.ready
wait
# a join: two workers write into one pipe, their parent reads both at once
${py} $F/forkjoin.py
exit ${STATUS}
`,
  );
  return file;
}


// --- what show --json says ----------------------------------------------------

interface ShownChannel {
  kind: 'pipe' | 'fifo' | 'unix' | 'tcp';
  ino?: number;
  dev?: string;
  type?: string;
  name?: string;
  local?: string;
  localPort?: number;
  remote?: string;
  remotePort?: number;
}
interface ShownEvent {
  id: string;
  type: string;
  ts: string;
  host: string;
  pid: number;
  tid: number;
  comm: string;
  parents: string[];
  channel: ShownChannel | null;
  bytes: number;
  priority: number;
  path?: string;
  exitCode?: number;
  signal?: number;
}
interface ShownSpan {
  id: string;
  host: string;
  pid: number;
  tid: number;
  comm: string;
  start: string;
  end: string;
  parent: string | null;
  links: string[];
}
interface Shown {
  trace: string;
  events: ShownEvent[];
  spans: ShownSpan[];
  hops: { send: string; recv: string; latencyNs: string }[];
}

async function shown(t: Test, db: string): Promise<Shown[]> {
  const ls = await causeway(['ls', '--db', db, '--json']);
  t.equal(ls.status, 0, `ls: ${ls.stderr}`);
  const out: Shown[] = [];
  for (const { id } of JSON.parse(ls.stdout) as { id: string }[]) {
    const r = await causeway(['show', id, '--db', db, '--json']);
    t.equal(r.status, 0, `show: ${r.stderr}`);
    out.push(JSON.parse(r.stdout) as Shown);
  }
  return out;
}

// --- one normal form for what was sent and what was expected -----------------

/** An attribute value: s string, i integer (decimal, exact), b bool, d double, a array, kv list, x bytes (hex). */
type V = { s: string } | { i: string } | { b: boolean } | { d: number } | { a: V[] } | { kv: Record<string, V> } | { x: string };
type Attrs = Record<string, V>;

interface NLink {
  traceId: string;
  spanId: string;
  traceState: string;
  flags: number;
  attributes: Attrs;
  droppedAttributesCount: number;
}
/** A span as it arrived (or should have), with its resource and scope. */
interface NSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  name: string;
  kind: number;
  start: string;
  end: string;
  flags: number;
  attributes: Attrs;
  droppedAttributesCount: number;
  events: number;
  droppedEventsCount: number;
  links: NLink[];
  droppedLinksCount: number;
  status: { code: number; message: string };
  resource: Attrs;
  resourceDroppedAttributesCount: number;
  scope: { name: string; version: string };
}

/** Spans as received, and problems the decoder saw (a repeated attribute key, a malformed message). */
interface Received {
  spans: NSpan[];
  problems: string[];
}

/** Attributes by key; a key seen twice is a problem (an exporter must not send two values for one key). */
function attrMap(list: [string, V][], problems: string[], where: string): Attrs {
  const out: Attrs = {};
  for (const [k, v] of list) {
    if (k in out) problems.push(`${where}: attribute ${k} twice`);
    out[k] = v;
  }
  return out;
}

// OTLP/JSON (the OTLP spec's JSON mapping: ids as hex, 64-bit integers as decimal strings or numbers).

interface JKV {
  key: string;
  value?: JAny;
}
interface JAny {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: JAny[] };
  kvlistValue?: { values?: JKV[] };
  bytesValue?: string;
}

function jsonValue(v: JAny | undefined, problems: string[]): V {
  if (!v) return { s: '' };
  if (v.stringValue !== undefined) return { s: v.stringValue };
  if (v.boolValue !== undefined) return { b: v.boolValue };
  if (v.intValue !== undefined) return { i: BigInt(v.intValue).toString() };
  if (v.doubleValue !== undefined) return { d: v.doubleValue };
  if (v.arrayValue !== undefined) return { a: (v.arrayValue.values ?? []).map((x) => jsonValue(x, problems)) };
  if (v.kvlistValue !== undefined) return { kv: attrMap((v.kvlistValue.values ?? []).map((kv) => [kv.key, jsonValue(kv.value, problems)]), problems, 'kvlist') };
  if (v.bytesValue !== undefined) return { x: Buffer.from(v.bytesValue, 'base64').toString('hex') };
  return { s: '' };
}
const jsonAttrs = (list: JKV[] | undefined, problems: string[], where: string) =>
  attrMap((list ?? []).map((kv) => [kv.key, jsonValue(kv.value, problems)]), problems, where);
/** A time: must be exact, so a JSON number beyond 2^53 (already rounded by JSON.parse) is a problem. */
function jsonTime(v: unknown, problems: string[]): string {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) problems.push(`a time sent as a JSON number (${v}) is not exact`);
  return BigInt(v as string | number).toString();
}

function decodeJson(body: Buffer): Received {
  const problems: string[] = [];
  const spans: NSpan[] = [];
  const req = JSON.parse(body.toString('utf8')) as {
    resourceSpans?: {
      resource?: { attributes?: JKV[]; droppedAttributesCount?: number };
      scopeSpans?: { scope?: { name?: string; version?: string }; spans?: Record<string, unknown>[] }[];
    }[];
  };
  for (const rs of req.resourceSpans ?? []) {
    const resource = jsonAttrs(rs.resource?.attributes, problems, 'resource');
    for (const ss of rs.scopeSpans ?? [])
      for (const s of ss.spans ?? []) {
        const where = `span ${String(s.spanId)}`;
        const links = (s.links as Record<string, unknown>[] | undefined) ?? [];
        const status = (s.status as { code?: number; message?: string } | undefined) ?? {};
        spans.push({
          traceId: String(s.traceId ?? ''),
          spanId: String(s.spanId ?? ''),
          parentSpanId: String(s.parentSpanId ?? ''),
          traceState: String(s.traceState ?? ''),
          name: String(s.name ?? ''),
          kind: Number(s.kind ?? 0),
          start: jsonTime(s.startTimeUnixNano, problems),
          end: jsonTime(s.endTimeUnixNano, problems),
          flags: Number(s.flags ?? 0),
          attributes: jsonAttrs(s.attributes as JKV[] | undefined, problems, where),
          droppedAttributesCount: Number(s.droppedAttributesCount ?? 0),
          events: ((s.events as unknown[] | undefined) ?? []).length,
          droppedEventsCount: Number(s.droppedEventsCount ?? 0),
          links: links.map((l) => ({
            traceId: String(l.traceId ?? ''),
            spanId: String(l.spanId ?? ''),
            traceState: String(l.traceState ?? ''),
            flags: Number(l.flags ?? 0),
            attributes: jsonAttrs(l.attributes as JKV[] | undefined, problems, `${where} link`),
            droppedAttributesCount: Number(l.droppedAttributesCount ?? 0),
          })),
          droppedLinksCount: Number(s.droppedLinksCount ?? 0),
          status: { code: Number(status.code ?? 0), message: status.message ?? '' },
          resource,
          resourceDroppedAttributesCount: Number(rs.resource?.droppedAttributesCount ?? 0),
          scope: { name: ss.scope?.name ?? '', version: ss.scope?.version ?? '' },
        });
      }
  }
  return { spans, problems };
}

// OTLP/protobuf: a minimal reader of the protobuf wire format
// (https://protobuf.dev/programming-guides/encoding/) for the messages of
// opentelemetry/proto/collector/trace/v1/trace_service.proto and the
// trace/common/resource protos it includes, written here because the
// OpenTelemetry packages installed (otlp-transformer 0.2xx) encode requests
// by hand and decode only responses. Wire types: 0 varint, 1 fixed 64-bit,
// 2 length-delimited, 5 fixed 32-bit (3 and 4, groups, are not used by
// OTLP). Integers are read as bigint, so 64-bit values stay exact. Field
// numbers used (unknown fields are skipped, as protobuf requires):
//   ExportTraceServiceRequest  1 resource_spans (repeated ResourceSpans)
//   ResourceSpans              1 resource, 2 scope_spans (repeated)
//   Resource                   1 attributes (repeated KeyValue), 2 dropped_attributes_count
//   ScopeSpans                 1 scope (InstrumentationScope), 2 spans (repeated Span)
//   InstrumentationScope       1 name, 2 version
//   Span                       1 trace_id, 2 span_id (bytes), 3 trace_state, 4 parent_span_id,
//                              5 name, 6 kind (enum), 7 start_time_unix_nano, 8 end_time_unix_nano
//                              (fixed64), 9 attributes, 10 dropped_attributes_count, 11 events,
//                              12 dropped_events_count, 13 links, 14 dropped_links_count,
//                              15 status, 16 flags (fixed32)
//   Span.Link                  1 trace_id, 2 span_id, 3 trace_state, 4 attributes,
//                              5 dropped_attributes_count, 6 flags (fixed32)
//   Status                     2 message, 3 code (enum)
//   KeyValue                   1 key, 2 value (AnyValue)
//   AnyValue (oneof)           1 string, 2 bool, 3 int64 (varint, two's complement), 4 double,
//                              5 array (ArrayValue: 1 values), 6 kvlist (KeyValueList: 1 values), 7 bytes

type Field = { n: number; wire: 0 | 1 | 5; v: bigint } | { n: number; wire: 2; v: Buffer };

/** The fields of one message, in order. Throws on a malformed message. */
function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= buf.length || shift > 63n) throw new Error('protobuf: truncated or overlong varint');
      const b = buf[pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  const take = (n: number): Buffer => {
    if (pos + n > buf.length) throw new Error('protobuf: field runs past the end of its message');
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  while (pos < buf.length) {
    const tag = varint();
    const n = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (n === 0) throw new Error('protobuf: field number 0');
    if (wire === 0) out.push({ n, wire, v: varint() });
    else if (wire === 1) out.push({ n, wire, v: take(8).readBigUInt64LE() });
    else if (wire === 5) out.push({ n, wire, v: BigInt(take(4).readUInt32LE()) });
    else if (wire === 2) out.push({ n, wire, v: take(Number(varint())) });
    else throw new Error(`protobuf: wire type ${wire} (field ${n})`);
  }
  return out;
}

const bytesOf = (msg: Field[], n: number) => msg.filter((f): f is Field & { wire: 2 } => f.n === n && f.wire === 2).map((f) => f.v);
const numOf = (msg: Field[], n: number) => msg.filter((f) => f.n === n && f.wire !== 2).map((f) => f.v as bigint);
/** The last value of a singular field (protobuf: the last one wins), or undefined. */
const lastBytes = (msg: Field[], n: number) => bytesOf(msg, n).at(-1);
const lastNum = (msg: Field[], n: number) => numOf(msg, n).at(-1);
const str = (msg: Field[], n: number) => lastBytes(msg, n)?.toString('utf8') ?? '';
const hex = (msg: Field[], n: number) => lastBytes(msg, n)?.toString('hex') ?? '';
const num = (msg: Field[], n: number) => Number(lastNum(msg, n) ?? 0n);

function pbValue(buf: Buffer, problems: string[]): V {
  const f = fields(buf).at(-1); // a oneof: the last one set wins
  if (!f) return { s: '' };
  switch (f.n) {
    case 1:
      return { s: (f.v as Buffer).toString('utf8') };
    case 2:
      return { b: f.v !== 0n };
    case 3:
      return { i: BigInt.asIntN(64, f.v as bigint).toString() };
    case 4: {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(f.v as bigint);
      return { d: b.readDoubleLE() };
    }
    case 5:
      return { a: bytesOf(fields(f.v as Buffer), 1).map((x) => pbValue(x, problems)) };
    case 6:
      return { kv: pbAttrs(bytesOf(fields(f.v as Buffer), 1), problems, 'kvlist') };
    case 7:
      return { x: (f.v as Buffer).toString('hex') };
  }
  problems.push(`AnyValue field ${f.n}`);
  return { s: '' };
}

function pbAttrs(kvs: Buffer[], problems: string[], where: string): Attrs {
  return attrMap(
    kvs.map((kv) => {
      const f = fields(kv);
      const v = lastBytes(f, 2);
      return [str(f, 1), v ? pbValue(v, problems) : { s: '' }];
    }),
    problems,
    where,
  );
}

function decodeProtobuf(body: Buffer): Received {
  const problems: string[] = [];
  const spans: NSpan[] = [];
  for (const rsBuf of bytesOf(fields(body), 1)) {
    const rs = fields(rsBuf);
    const res = fields(lastBytes(rs, 1) ?? Buffer.alloc(0));
    const resource = pbAttrs(bytesOf(res, 1), problems, 'resource');
    for (const ssBuf of bytesOf(rs, 2)) {
      const ss = fields(ssBuf);
      const scope = fields(lastBytes(ss, 1) ?? Buffer.alloc(0));
      for (const spanBuf of bytesOf(ss, 2)) {
        const s = fields(spanBuf);
        const where = `span ${hex(s, 2)}`;
        const status = fields(lastBytes(s, 15) ?? Buffer.alloc(0));
        spans.push({
          traceId: hex(s, 1),
          spanId: hex(s, 2),
          parentSpanId: hex(s, 4),
          traceState: str(s, 3),
          name: str(s, 5),
          kind: num(s, 6),
          start: (lastNum(s, 7) ?? 0n).toString(),
          end: (lastNum(s, 8) ?? 0n).toString(),
          flags: num(s, 16),
          attributes: pbAttrs(bytesOf(s, 9), problems, where),
          droppedAttributesCount: num(s, 10),
          events: bytesOf(s, 11).length,
          droppedEventsCount: num(s, 12),
          links: bytesOf(s, 13).map((lb) => {
            const l = fields(lb);
            return {
              traceId: hex(l, 1),
              spanId: hex(l, 2),
              traceState: str(l, 3),
              flags: num(l, 6),
              attributes: pbAttrs(bytesOf(l, 4), problems, `${where} link`),
              droppedAttributesCount: num(l, 5),
            };
          }),
          droppedLinksCount: num(s, 14),
          status: { code: num(status, 3), message: str(status, 2) },
          resource,
          resourceDroppedAttributesCount: num(res, 2),
          scope: { name: str(scope, 1), version: str(scope, 2) },
        });
      }
    }
  }
  return { spans, problems };
}

function decode(contentType: string, body: Buffer): Received {
  if (/^application\/json\b/.test(contentType)) return decodeJson(body);
  if (/^application\/x-protobuf\b/.test(contentType)) return decodeProtobuf(body);
  return { spans: [], problems: [`a request with Content-Type ${contentType}`] };
}

// --- what the export should carry, from show --json (src/tracer/otlp.ts's documentation) ---

const SAMPLED = 0x01;
/** OTLP SpanFlags: whether the parent's (a link's) remoteness is known, and that it is remote. */
const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;
const INTERNAL = 1;
const STATUS_UNSET = 0;
const STATUS_ERROR = 2;

const s = (v: string): V => ({ s: v });
const i = (v: number): V => ({ i: String(v) });

/** The channel's id as causeway names it (channelName, docs/tracer.md). */
function channelId(c: ShownChannel): string {
  switch (c.kind) {
    case 'pipe':
    case 'fifo':
      return `${c.kind}:[${c.ino}]`;
    case 'unix':
      return `unix:${c.name}`;
    case 'tcp':
      return `tcp:${c.local}:${c.localPort}->${c.remote}:${c.remotePort}`;
  }
}

function channelAttrs(out: Attrs, prefix: string, c: ShownChannel): void {
  out[`${prefix}.kind`] = s(c.kind);
  out[`${prefix}.id`] = s(channelId(c));
  if (c.kind === 'pipe' || c.kind === 'fifo') {
    out[`${prefix}.ino`] = i(c.ino!);
    out[`${prefix}.dev`] = s(c.dev!);
  } else if (c.kind === 'unix') {
    out[`${prefix}.socket_type`] = s(c.type!);
    out[`${prefix}.name`] = s(c.name!);
  } else {
    out[`${prefix}.local_address`] = s(c.local!);
    out[`${prefix}.local_port`] = i(c.localPort!);
    out[`${prefix}.remote_address`] = s(c.remote!);
    out[`${prefix}.remote_port`] = i(c.remotePort!);
  }
}

const moves = (e: ShownEvent) => e.type === 'send' || e.type === 'recv' || e.type === 'join';
const proc = (e: { host: string; pid: number }) => `${e.host}/${e.pid}`;

/** The spans of one shown trace as the receiver should get them; problems if show's spans are not what its events say. */
function expected(g: Shown, problems: string[]): NSpan[] {
  const byId = new Map(g.events.map((e) => [e.id, e]));
  // A span runs from one event of a thread to the thread's next (events are in time order).
  const next = new Map<string, ShownEvent>();
  const last = new Map<string, ShownEvent>();
  for (const e of g.events) {
    const k = `${e.host}/${e.tid}`;
    const prev = last.get(k);
    if (prev) next.set(prev.id, e);
    last.set(k, e);
  }
  const remote = (from: ShownSpan, id: string) => {
    const other = byId.get(id);
    return other !== undefined && proc(other) !== proc(from);
  };
  return g.spans.map((sp) => {
    const a = byId.get(sp.id);
    const b = next.get(sp.id);
    if (!a || !b || a.ts !== sp.start || b.ts !== sp.end) {
      problems.push(`show's span ${sp.id} is not from one event of its thread to the next`);
    }
    const attributes: Attrs = {};
    if (a && b) {
      attributes['causeway.event.start'] = s(a.id);
      attributes['causeway.event.end'] = s(b.id);
      attributes['causeway.event.start_type'] = s(a.type);
      attributes['causeway.event.end_type'] = s(b.type);
      attributes['causeway.event.parents'] = { a: a.parents.map(s) };
      attributes['causeway.priority'] = i(a.priority);
      attributes['thread.id'] = i(sp.tid);
      for (const [end, e] of [['start', a], ['end', b]] as const) {
        if (!moves(e)) continue;
        attributes[`causeway.${end}.bytes`] = i(e.bytes);
        if (e.channel) channelAttrs(attributes, `causeway.${end}.channel`, e.channel);
      }
      if (b.type === 'exit') {
        if (b.signal) attributes['causeway.exit.signal'] = i(b.signal);
        else if (b.exitCode !== undefined) attributes['process.exit.code'] = i(b.exitCode);
      }
    }
    const status =
      b?.type === 'exit' && b.signal
        ? { code: STATUS_ERROR, message: `killed by signal ${b.signal}` }
        : b?.type === 'exit' && b.exitCode
          ? { code: STATUS_ERROR, message: `exit status ${b.exitCode}` }
          : { code: STATUS_UNSET, message: '' };
    const resource: Attrs = { 'service.name': s('causeway'), 'host.name': s(sp.host), 'process.pid': i(sp.pid), 'process.command': s(sp.comm) };
    let exe: string | undefined;
    for (const e of g.events) if (e.type === 'exec' && e.path && proc(e) === proc(sp) && BigInt(e.ts) <= BigInt(sp.end)) exe = e.path;
    if (exe) resource['process.executable.path'] = s(exe);
    return {
      traceId: g.trace,
      spanId: sp.id,
      parentSpanId: sp.parent ?? '',
      traceState: '',
      name: `${sp.comm} ${a?.type}->${b?.type}`,
      kind: INTERNAL,
      start: sp.start,
      end: sp.end,
      flags: SAMPLED | HAS_IS_REMOTE | (sp.parent && remote(sp, sp.parent) ? IS_REMOTE : 0),
      attributes,
      droppedAttributesCount: 0,
      events: 0,
      droppedEventsCount: 0,
      links: sp.links.map((id) => ({
        traceId: g.trace,
        spanId: id,
        traceState: '',
        flags: SAMPLED | HAS_IS_REMOTE | (remote(sp, id) ? IS_REMOTE : 0),
        attributes: {},
        droppedAttributesCount: 0,
      })),
      droppedLinksCount: 0,
      status,
      resource,
      resourceDroppedAttributesCount: 0,
      scope: { name: 'causeway', version: '' },
    };
  });
}

/** JSON with object keys sorted: equal strings for equal values. */
function canon(x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as object).sort(([p], [q]) => (p < q ? -1 : 1))) : v,
  );
}

/** What differs between two normal forms, field by field (attributes key by key). */
function differences(want: NSpan, got: NSpan): string[] {
  const out: string[] = [];
  for (const k of Object.keys(want) as (keyof NSpan)[]) {
    if (k === 'attributes' || k === 'resource') {
      const w = want[k];
      const g = got[k];
      for (const key of new Set([...Object.keys(w), ...Object.keys(g)]))
        if (canon(w[key]) !== canon(g[key])) out.push(`${k}.${key}: want ${canon(w[key]) ?? 'none'}, got ${canon(g[key]) ?? 'none'}`);
    } else if (canon(want[k]) !== canon(got[k])) out.push(`${k}: want ${canon(want[k])}, got ${canon(got[k])}`);
  }
  for (const k of Object.keys(got)) if (!(k in want)) out.push(`unexpected field ${k}`);
  return out;
}

/**
 * The receiver got every span of graphs exactly once, as expected(), and
 * nothing else; every hop of show --json can be read back from the spans.
 */
function checkExport(t: Test, graphs: Shown[], received: NSpan[]): void {
  const problems: string[] = [];
  const want = graphs.flatMap((g) => expected(g, problems));
  t.same(problems, [], "show's spans are consecutive events of a thread");
  t.equal(received.length, want.length, `as many spans as show has (${want.length})`);

  const byKey = new Map<string, NSpan[]>();
  for (const sp of received) {
    const k = `${sp.traceId}/${sp.spanId}`;
    byKey.set(k, [...(byKey.get(k) ?? []), sp]);
  }
  const wanted = new Set(want.map((w) => `${w.traceId}/${w.spanId}`));
  const extra = [...byKey.keys()].filter((k) => !wanted.has(k));
  t.same(extra, [], 'no span that show does not have');

  let missing = 0;
  let doubled = 0;
  let altered = 0;
  for (const w of want) {
    const list = byKey.get(`${w.traceId}/${w.spanId}`) ?? [];
    if (list.length === 0 && missing++ < 5) t.fail(`span ${w.spanId} (${w.name}) never arrived`);
    if (list.length > 1 && doubled++ < 5) t.fail(`span ${w.spanId} (${w.name}) arrived ${list.length} times`);
    for (const got of list) {
      const d = differences(w, got);
      if (d.length && altered++ < 5) t.fail(`span ${w.spanId} (${w.name}) differs:\n  ${d.join('\n  ')}`);
    }
  }
  t.equal(missing, 0, 'no span missing');
  t.equal(doubled, 0, 'no span twice');
  t.equal(altered, 0, 'every span as show has it: ids, parent, name, kind, times, flags, status, attributes, links, resource');

  // Hops: the send's time and the recv's time are span boundaries in the export.
  // An event that ends one span and starts the next must have one time in both.
  const timeOf = new Map<string, bigint>();
  let twoTimes = 0;
  const at = (v: V | undefined, ts: string) => {
    if (!v || !('s' in v)) return;
    const prev = timeOf.get(v.s);
    if (prev !== undefined && prev !== BigInt(ts) && twoTimes++ < 5) t.fail(`event ${v.s} at ${prev} and at ${ts}`);
    timeOf.set(v.s, BigInt(ts));
  };
  for (const sp of received) {
    at(sp.attributes['causeway.event.start'], sp.start);
    at(sp.attributes['causeway.event.end'], sp.end);
  }
  t.equal(twoTimes, 0, 'each event has one time in the export');
  let hops = 0;
  let wrong = 0;
  for (const g of graphs)
    for (const h of g.hops) {
      hops++;
      const sent = timeOf.get(h.send);
      const read = timeOf.get(h.recv);
      const latency = sent !== undefined && read !== undefined ? read - sent : undefined;
      if (latency !== BigInt(h.latencyNs) && wrong++ < 5) t.fail(`hop ${h.send} -> ${h.recv}: latency ${h.latencyNs} ns in show, ${latency ?? 'not recoverable'} from the export`);
    }
  t.equal(wrong, 0, `all ${hops} hop latencies of show, to the ns, from the exported spans' times`);
}

// --- the receiver ---------------------------------------------------------------

interface Post {
  path: string;
  contentType: string;
  body: Buffer;
  /** What the receiver answered. */
  status: number;
}

/** An OTLP/HTTP receiver on 127.0.0.1 that keeps every request; the first statuses.length requests get those statuses, the rest 200. */
async function receiver(t: Test, statuses: number[] = []): Promise<{ url: string; posts: Post[] }> {
  const posts: Post[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const contentType = String(req.headers['content-type'] ?? '');
      const status = req.method !== 'POST' || req.url !== '/v1/traces' ? 404 : (statuses[posts.length] ?? 200);
      posts.push({ path: `${req.method} ${req.url}`, contentType, body: Buffer.concat(chunks), status });
      // An empty ExportTraceServiceResponse: {} in JSON, no bytes in protobuf.
      const json = /json/.test(contentType);
      res.writeHead(status, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(status === 200 && json ? '{}' : '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, posts };
}

/** Runs the workload under `causeway trace --otlp url`; returns the run and what show --json says of it. */
async function tracedRun(t: Test, url: string, extra: string[] = []) {
  const dir = tmpdir(t);
  const db = path.join(dir, 'traces.db');
  const t0 = Date.now();
  const run = await causeway(['trace', '--db', db, '--otlp', url, ...extra, '--', 'sh', workload(dir, await freePort())]);
  const ms = Date.now() - t0;
  t.equal(run.status, STATUS, `causeway trace returns the command's status (${run.stderr.trim().split('\n').slice(-3).join(' | ')})`);
  const out = run.stdout.split('\n').filter(Boolean).sort();
  t.same(out, ['20000', 'echo:hello', 'echo:quit', 'left done', 'pong:ping', 'right done'], 'the workload ran: pipeline, TCP, UNIX socket, fork-join');
  const graphs = await shown(t, db);
  const spans = graphs.reduce((n, g) => n + g.spans.length, 0);
  return { run, graphs, spans, ms };
}

/** The workload did what the test needs: several processes, every kind of channel, a join with a link, more spans than one batch. */
function checkWorkload(t: Test, graphs: Shown[], spans: number): void {
  const events = graphs.flatMap((g) => g.events);
  const kinds = new Set(events.filter(moves).map((e) => e.channel?.kind));
  t.ok(new Set(events.map((e) => proc(e))).size >= 10, 'several processes');
  for (const k of ['pipe', 'tcp', 'unix']) t.ok(kinds.has(k as ShownChannel['kind']), `hops over ${k}`);
  t.ok(graphs.some((g) => g.spans.some((sp) => sp.links.length > 0)), `a join with a link (join events: ${events.filter((e) => e.type === 'join').map((e) => JSON.stringify(e)).join(' ')})`);
  t.ok(spans > BATCH, `more spans (${spans}) than one request carries (${BATCH})`);
  t.ok(events.some((e) => e.type === 'exit' && e.exitCode === STATUS), 'an exit with an error status');
}

function receivedSpans(t: Test, posts: Post[], enc: Encoding): NSpan[] {
  const out: NSpan[] = [];
  const problems: string[] = [];
  for (const p of posts) {
    if (p.status !== 200) continue;
    t.equal(p.path, 'POST /v1/traces', 'POSTed to the traces path');
    t.match(p.contentType, enc.contentType, `Content-Type ${p.contentType}`);
    try {
      const r = decode(p.contentType, p.body);
      out.push(...r.spans);
      problems.push(...r.problems);
      if (r.spans.length > BATCH) problems.push(`${r.spans.length} spans in one request`);
    } catch (err) {
      problems.push(`a request that does not decode: ${String(err)}`);
    }
  }
  t.same(problems, [], 'every request decodes, no attribute twice, at most one batch each');
  return out;
}

// --- tests ------------------------------------------------------------------------

for (const enc of ENCODINGS) {
  t.test(`${enc.name}: every span of show --json arrives once, as show has it`, { skip: skip ?? enc.skip ?? false }, async (t) => {
    const { url, posts } = await receiver(t);
    const { run, graphs, spans } = await tracedRun(t, url, enc.args);
    checkWorkload(t, graphs, spans);
    t.match(run.stderr, `causeway: exported ${spans} span(s) to ${url}\n`, 'the run says how many spans it exported');
    t.notMatch(run.stderr, /FAILED/);
    t.equal(posts.length, Math.ceil(spans / BATCH), `one request per batch of ${BATCH}`);
    checkExport(t, graphs, receivedSpans(t, posts, enc));
  });
}

t.test('a receiver answering 503 three times: the exporter retries the batch, nothing lost or doubled', { skip: skip ?? false }, async (t) => {
  const rejections = 3;
  const { url, posts } = await receiver(t, Array(rejections).fill(503));
  const { run, graphs, spans } = await tracedRun(t, url);
  t.notMatch(run.stderr, /FAILED/, 'the export succeeded');
  t.match(run.stderr, `causeway: exported ${spans} span(s) to ${url}\n`);
  const batches = Math.ceil(spans / BATCH);
  t.equal(posts.length, batches + rejections, `${rejections} rejected tries, then each of the ${batches} batches accepted once`);
  t.same(posts.slice(0, rejections + 1).map((p) => p.status), [...Array(rejections).fill(503), 200]);
  const accepted = posts[rejections];
  t.ok(posts.slice(0, rejections).every((p) => p.body.equals(accepted.body)), 'each retry sent the same batch, byte for byte');
  checkExport(t, graphs, receivedSpans(t, posts, ENCODINGS[1])); // the default encoding
});

t.test('a receiver that is down: the command keeps its status, the failure is reported', { skip: skip ?? false }, async (t) => {
  const url = `http://127.0.0.1:${await freePort()}/v1/traces`;
  const { run, graphs, spans, ms } = await tracedRun(t, url);
  t.match(
    run.stderr,
    new RegExp(`causeway: exported ${spans} span\\(s\\) to ${url.replace(/\./g, '\\.')}; FAILED: ${spans} \\(OTLP export to ${url.replace(/\./g, '\\.')} failed: .*ECONNREFUSED.*unreachable`),
    'every span counted as failed, with the reason',
  );
  t.ok(graphs.length >= 1 && spans > 0, 'the trace is still stored and shown');
  t.ok(ms < 60_000, `the run ended (${ms} ms): the export gave up within its timeout`);
});
