/**
 * Events from the shim: the fixed layout of struct cw_event (bpf/causeway.h),
 * decoded into objects, and their public JSON Lines form (docs/events.md).
 */
import { CausalRecord, decodeRecord, eventIdHex } from './record';

export const EVENT_BYTES = 224;
export const MAX_PARENTS = 4;

export type EventType = 'fork' | 'exec' | 'exit' | 'send' | 'recv' | 'join';
const TYPES: Record<number, EventType> = { 1: 'fork', 2: 'exec', 3: 'exit', 4: 'send', 5: 'recv', 6: 'join' };

export type ChannelKind = 'pipe' | 'fifo';
const CHANNEL_KINDS: Record<number, ChannelKind> = { 1: 'pipe', 2: 'fifo' };

/** The channel bytes moved through: its kind and identity (inode number and device). */
export interface Channel {
  kind: ChannelKind;
  ino: number;
  dev: string;
}

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
}

function cstring(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end >= 0 && end < start + len ? end : start + len);
}

/** Linux encodes a device number as major << 20 | minor inside the kernel. */
function devString(dev: number): string {
  return `${dev >>> 20}:${dev & 0xfffff}`;
}

/** Decodes every event in a batch; clockOffset turns CLOCK_BOOTTIME into epoch ns. */
export function decodeEvents(batch: Buffer, clockOffset: bigint): CausalEvent[] {
  const out: CausalEvent[] = [];
  for (let off = 0; off + EVENT_BYTES <= batch.length; off += EVENT_BYTES) out.push(decodeEvent(batch, off, clockOffset));
  return out;
}

export function decodeEvent(b: Buffer, off: number, clockOffset: bigint): CausalEvent {
  const type = TYPES[b.readUInt8(off + 16)] ?? 'exit';
  const nparents = Math.min(b.readUInt8(off + 17), MAX_PARENTS);
  const kind = CHANNEL_KINDS[b.readUInt8(off + 18)];
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
    channel: kind ? { kind, ino: Number(b.readBigUInt64LE(off + 32)), dev: devString(b.readUInt32LE(off + 28)) } : null,
    bytes: Number(b.readBigUInt64LE(off + 40)),
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
  } else if (flags & 2) {
    ev.ingress = true;
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
  };
  if (e.child) o.child = e.child;
  if (e.thread !== undefined) o.thread = e.thread;
  if (e.exitCode !== undefined) o.exit_code = e.exitCode;
  if (e.signal !== undefined) o.signal = e.signal;
  if (e.path !== undefined) o.path = e.path;
  if (e.ingress) o.ingress = true;
  return o;
}
