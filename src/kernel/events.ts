/**
 * Events from the shim: the fixed layout of struct cw_event (bpf/causeway.h),
 * decoded into objects, and their public JSON Lines form (docs/events.md).
 */
import { CausalRecord, decodeRecord, eventIdHex } from './record';

export const EVENT_BYTES = 288;
export const MAX_PARENTS = 4;

export type EventType = 'fork' | 'exec' | 'exit' | 'send' | 'recv' | 'join' | 'ingress';
const TYPES: Record<number, EventType> = { 1: 'fork', 2: 'exec', 3: 'exit', 4: 'send', 5: 'recv', 6: 'join', 7: 'ingress' };

export type ChannelKind = 'pipe' | 'fifo' | 'unix' | 'tcp';
const CHANNEL_KINDS: Record<number, ChannelKind> = { 1: 'pipe', 2: 'fifo', 3: 'unix', 4: 'tcp' };
const SOCKET_TYPES: Record<number, string> = { 1: 'stream', 2: 'dgram', 5: 'seqpacket' };

/**
 * The channel bytes moved through, and its identity:
 * pipe, fifo: inode number and device; unix: socket type and name (a path,
 * "abstract:NAME", or "socketpair"); tcp: local and remote address and port,
 * as the thread that sent or received sees them.
 */
export type Channel =
  | { kind: 'pipe' | 'fifo'; ino: number; dev: string }
  | { kind: 'unix'; type: string; name: string }
  | { kind: 'tcp'; local: string; localPort: number; remote: string; remotePort: number };

/** One event, decoded. ts is nanoseconds since the Unix epoch. */
export interface CausalEvent {
  type: EventType;
  ts: bigint;
  pid: number;
  tid: number;
  comm: string;
  record: CausalRecord;
  parents: string[];
  channel: Channel | null;
  bytes: number;
  /** fork: the new task; exit: its status; exec: the file run. */
  child?: { pid: number; tid: number };
  thread?: boolean;
  exitCode?: number;
  signal?: number;
  path?: string;
  oldPid?: number;
  /** recv/join: some of the bytes read carried no record. */
  ingress?: boolean;
  /** ingress: the policy minted the record this event carries. */
  minted?: boolean;
  /** The thread's CPU time (ns) and syscall bytes read and written so far, when the event happened. */
  cpuNs: bigint;
  rchar: bigint;
  wchar: bigint;
}

function cstring(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end >= 0 && end < start + len ? end : start + len);
}

/** IPv4-mapped addresses are shown as IPv4. */
function ipString(b: Buffer, off: number): string {
  const a = b.subarray(off, off + 16);
  if (a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff) return `${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(a.readUInt16BE(i).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 says.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** A UNIX socket's name: its path, "abstract:NAME", or "socketpair" when unbound. */
function unixName(b: Buffer, off: number): string {
  if (b[off] !== 0) return cstring(b, off, 64);
  const rest = cstring(b, off + 1, 63);
  return rest ? `abstract:${rest}` : 'socketpair';
}

function decodeChannel(b: Buffer, off: number): Channel | null {
  const kind = CHANNEL_KINDS[b.readUInt8(off + 18)];
  switch (kind) {
    case 'pipe':
    case 'fifo':
      return { kind, ino: Number(b.readBigUInt64LE(off + 32)), dev: devString(b.readUInt32LE(off + 28)) };
    case 'unix':
      return { kind, type: SOCKET_TYPES[b.readUInt8(off + 260)] ?? String(b.readUInt8(off + 260)), name: unixName(b, off + 160) };
    case 'tcp':
      return {
        kind,
        local: ipString(b, off + 224),
        localPort: b.readUInt16LE(off + 256),
        remote: ipString(b, off + 240),
        remotePort: b.readUInt16LE(off + 258),
      };
    default:
      return null;
  }
}

/** Linux encodes a device number as major << 20 | minor inside the kernel. */
function devString(dev: number): string {
  return `${dev >>> 20}:${dev & 0xfffff}`;
}

/** A short name for a channel: pipe:[ino], fifo:[ino], unix:NAME, tcp:LOCAL->REMOTE. */
export function channelName(c: Channel | null): string {
  if (!c) return '-';
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

/** Decodes every event in a batch; clockOffset turns CLOCK_BOOTTIME into epoch ns. */
/** Offsets in struct cw_event (bpf/causeway.h) read without decoding an event. */
export const EVENT_OFF = { pid: 8, type: 16, flags: 19 } as const;
/** cw_event.type of an exit, and the flag that marks a thread's (not its process's). */
export const EVENT_TYPE_EXIT = 3;
export const EVENT_FLAG_THREAD = 1;

export function decodeEvents(batch: Buffer, clockOffset: bigint): CausalEvent[] {
  const out: CausalEvent[] = [];
  for (let off = 0; off + EVENT_BYTES <= batch.length; off += EVENT_BYTES) out.push(decodeEvent(batch, off, clockOffset));
  return out;
}

export function decodeEvent(b: Buffer, off: number, clockOffset: bigint): CausalEvent {
  const type = TYPES[b.readUInt8(off + 16)] ?? 'exit';
  const nparents = Math.min(b.readUInt8(off + 17), MAX_PARENTS);
  const flags = b.readUInt8(off + 19);
  const arg = b.readUInt32LE(off + 20);
  const arg2 = b.readUInt32LE(off + 24);
  const parents: string[] = [];
  for (let i = 0; i < nparents; i++) parents.push(eventIdHex(b.readBigUInt64LE(off + 48 + 8 * i)));
  const ev: CausalEvent = {
    type,
    ts: b.readBigUInt64LE(off) + clockOffset,
    pid: b.readUInt32LE(off + 8),
    tid: b.readUInt32LE(off + 12),
    comm: cstring(b, off + 144, 16),
    record: decodeRecord(b, off + 80),
    parents,
    channel: decodeChannel(b, off),
    bytes: Number(b.readBigUInt64LE(off + 40)),
    cpuNs: b.readBigUInt64LE(off + 264),
    rchar: b.readBigUInt64LE(off + 272),
    wchar: b.readBigUInt64LE(off + 280),
  };
  const thread = (flags & 1) !== 0;
  if (type === 'fork') {
    ev.child = { tid: arg, pid: arg2 };
    ev.thread = thread;
  } else if (type === 'exit') {
    ev.thread = thread;
    // task->exit_code: status << 8 for exit(), the signal number for a kill.
    if (arg & 0x7f) ev.signal = arg & 0x7f;
    else ev.exitCode = (arg >> 8) & 0xff;
  } else if (type === 'exec') {
    ev.path = cstring(b, off + 160, 64);
    ev.oldPid = arg;
  } else {
    if (flags & 2) ev.ingress = true;
    if (flags & 4) ev.minted = true;
  }
  return ev;
}

/** The public JSON form of an event (one line of `causeway run --events`). */
export function eventToJson(e: CausalEvent): Record<string, unknown> {
  const o: Record<string, unknown> = {
    type: e.type,
    ts: e.ts.toString(),
    pid: e.pid,
    tid: e.tid,
    comm: e.comm,
    trace: e.record.traceId,
    event: e.record.eventId,
    parents: e.parents,
    channel: e.channel,
    bytes: e.bytes,
    priority: e.record.priority,
    sampled: e.record.sampled,
    cpu_ns: Number(e.cpuNs),
    rchar: Number(e.rchar),
    wchar: Number(e.wchar),
  };
  if (e.child) o.child = e.child;
  if (e.thread !== undefined) o.thread = e.thread;
  if (e.exitCode !== undefined) o.exit_code = e.exitCode;
  if (e.signal !== undefined) o.signal = e.signal;
  if (e.path !== undefined) o.path = e.path;
  if (e.ingress) o.ingress = true;
  if (e.minted) o.minted = true;
  return o;
}
