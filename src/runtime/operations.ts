/**
 * Causeway's four operations (inject, read, write, destroy) on a thread, a
 * process, or a channel, for actors. Threads and processes go through the
 * shim's task storage; channels through the shim's channel maps, whose
 * segments say which record each run of pending bytes carries.
 *
 * A channel is changed by reading its map entry, changing the records of its
 * pending segments and writing them into the entry as it is just before the
 * write, so traffic on the channel during those microseconds keeps its byte
 * accounting and the segments it appended (unless one took a slot changed
 * here). A segment's slot is used only once its writer filled it (its seq is
 * its index + 1).
 */
import fs from 'node:fs';
import ipaddr from 'ipaddr.js';
import type { RunScope } from '../kernel/cgroup';
import { TargetError } from '../errors';
import { CausalRecord, decodeRecord, encodeRecord, newRecord, RECORD_VERSION } from '../kernel/record';
import {
  CHAN_KIND_FIFO,
  CHAN_KIND_PIPE,
  CHAN_KIND_TCP,
  CHAN_KIND_UNIX,
  CHAN_OFF_HEAD,
  CHAN_OFF_KIND,
  CHAN_OFF_RD,
  CHAN_OFF_WR,
  CHAN_SEG_OFFSET,
  CHAN_SEGS,
  SEG_BYTES,
  SEG_REC_OFFSET,
  SEG_SEQ_OFFSET,
  chanKey,
  decodeChanKey,
  kernelDev,
} from '../kernel/channel';
import type { Shim, UserMap } from '../kernel/shim';
import { FieldRegistry } from '../actor/fields';
import { RecordPatch, Target } from '../actor/types';

/** A record changed by a patch; fields are the named actor's. */
export function applyPatch(rec: CausalRecord, patch: RecordPatch, registry: FieldRegistry, actor: string): CausalRecord {
  const out: CausalRecord = { ...rec, actor: new Uint8Array(rec.actor) };
  if (patch.priority !== undefined) out.priority = patch.priority;
  if (patch.sampled !== undefined) out.sampled = patch.sampled;
  if (patch.traceId !== undefined) out.traceId = patch.traceId;
  if (patch.fields) registry.write(out.actor, actor, patch.fields);
  encodeRecord(out); // validates every field now, not in the kernel
  return out;
}

/** An all-zero record: version 0 means "no record" to the shim. */
function noRecord(): CausalRecord {
  return { version: 0, sampled: false, priority: 0, traceId: '0'.repeat(32), eventId: '0'.repeat(16), actor: new Uint8Array(32) };
}

export class Operations {
  /** The root's record until it starts; then operations on 'root' go to its process. */
  rootRecord: CausalRecord;
  rootPid: number | undefined;

  constructor(
    private readonly shim: Shim,
    private readonly cgroup: RunScope,
    private readonly registry: FieldRegistry,
    root: CausalRecord,
  ) {
    this.rootRecord = root;
  }

  inject(actor: string, target: Target, init: RecordPatch = {}): CausalRecord {
    const rec = applyPatch(newRecord(), init, this.registry, actor);
    this.put(target, () => rec);
    return rec;
  }

  read(target: Target): CausalRecord | null {
    if (target === 'root' && this.rootPid === undefined) return this.rootRecord;
    const t = this.resolve(target);
    if (t.kind === 'threads') {
      const rec = this.shim.readRecord(t.tids[0]);
      return rec && rec.version !== 0 ? rec : null;
    }
    try {
      const ch = this.loadChannel(t.map, t.keys);
      if (!ch) return null;
      const seg = readableSeg(ch.value);
      return seg === null ? null : recordAt(ch.value, seg);
    } finally {
      t.release?.();
    }
  }

  write(actor: string, target: Target, patch: RecordPatch): void {
    let missing = 0;
    this.put(target, (old) => {
      if (!old || old.version === 0) {
        missing++;
        return null;
      }
      return applyPatch(old, patch, this.registry, actor);
    });
    if (missing && typeof target === 'object' && ('tid' in target || ('pid' in target && target.fd === undefined)))
      throw new TargetError(`${describe(target)} holds no record to write: inject one first`);
  }

  destroy(target: Target): void {
    this.put(target, () => noRecord());
  }

  /** Replaces the record(s) of a target with what change() returns (null: leave it). */
  private put(target: Target, change: (old: CausalRecord | null) => CausalRecord | null): void {
    if (target === 'root' && this.rootPid === undefined) {
      const rec = change(this.rootRecord);
      if (rec) this.rootRecord = rec;
      return;
    }
    const t = this.resolve(target);
    if (t.kind === 'threads') {
      for (const tid of t.tids) {
        let old: CausalRecord | null;
        try {
          old = this.shim.readRecord(tid);
        } catch (err) {
          if (t.tids.length > 1 && err instanceof TargetError) continue; // a thread that just ended
          throw err;
        }
        const rec = change(old);
        if (rec) this.shim.writeRecord(tid, rec);
      }
      return;
    }
    try {
      const ch = this.loadChannel(t.map, t.keys);
      if (!ch) {
        const rec = change(null);
        if (rec && rec.version !== 0) throw new TargetError(`${describe(target)} has carried no tracked bytes yet: nothing to change`);
        return;
      }
      const v = ch.value;
      const head = v.readUInt32LE(CHAN_OFF_HEAD);
      const pending = pendingSegs(v);
      const changed: number[] = [];
      if (pending.length === 0) {
        // An idle channel: what is read next carries the new record, from the read offset on.
        const rec = change(null);
        if (!rec) return;
        const idx = head % CHAN_SEGS;
        const at = segAt(idx);
        v.writeBigUInt64LE(BigInt.asUintN(32, v.readBigUInt64LE(CHAN_OFF_RD)), at);
        encodeRecord(rec, v, at + SEG_REC_OFFSET);
        v.writeUInt32LE((head + 1) >>> 0, at + SEG_SEQ_OFFSET);
        changed.push(idx);
      } else {
        for (const i of pending) {
          const rec = change(recordAt(v, i));
          if (!rec) continue;
          encodeRecord(rec, v, segAt(i) + SEG_REC_OFFSET);
          changed.push(i);
        }
      }
      // The entry as the kernel has it now (its accounting, segments appended meanwhile), with the slots changed here.
      const out = t.map.lookup(ch.key) ?? v;
      for (const i of changed) v.copy(out, segAt(i), segAt(i), segAt(i) + SEG_BYTES);
      // A segment injected into an idle channel is reserved here, unless a writer reserved since.
      if (pending.length === 0 && out.readUInt32LE(CHAN_OFF_HEAD) === head) out.writeUInt32LE((head + 1) >>> 0, CHAN_OFF_HEAD);
      t.map.update(ch.key, out, 2 /* BPF_EXIST */);
    } finally {
      t.release?.();
    }
  }

  private loadChannel(map: UserMap, keys: Buffer[]): { key: Buffer; value: Buffer } | null {
    for (const key of keys) {
      const value = map.lookup(key);
      if (value) return { key, value };
    }
    return null;
  }

  /** Threads of a thread/process target, or the channel map keys of a channel target. */
  private resolve(target: Target): Resolved {
    if (target === 'root') return this.resolve({ pid: this.rootPid! });
    if ('tid' in target) {
      this.checkInRun(target.tid, target);
      return { kind: 'threads', tids: [target.tid] };
    }
    if ('pid' in target) {
      this.checkInRun(target.pid, target);
      if (target.fd !== undefined) return this.fdChannel(target.pid, target.fd);
      let tids: number[];
      try {
        tids = fs.readdirSync(`/proc/${target.pid}/task`).map(Number).sort((a, b) => (a === target.pid ? -1 : b === target.pid ? 1 : a - b));
      } catch {
        throw new TargetError(`no process ${target.pid}`);
      }
      return { kind: 'threads', tids };
    }
    if ('pipe' in target) {
      const dev = parseDev(target.pipe.dev);
      return this.inodeChannel(BigInt(target.pipe.ino), dev, [CHAN_KIND_PIPE, CHAN_KIND_FIFO]);
    }
    if ('tcp' in target) return this.tcpChannel(target.tcp.from, target.tcp.to);
    throw new TypeError(`not a target: ${JSON.stringify(target)}`);
  }

  private checkInRun(id: number, target: Target): void {
    if (!Number.isInteger(id) || id <= 0) throw new TypeError(`not a process or thread id: ${id}`);
    if (!fs.existsSync(`/proc/${id}`)) throw new TargetError(`${describe(target)} does not exist`);
    if (!this.cgroup.contains(id)) throw new TargetError(`${describe(target)} is not part of this run`);
  }

  /** The channel a process reads through fd: a pipe, a FIFO, a UNIX socket, or the incoming direction of a TCP socket. */
  private fdChannel(pid: number, fd: number): Resolved {
    const link = `/proc/${pid}/fd/${fd}`;
    let dest: string;
    let st: fs.BigIntStats;
    try {
      dest = fs.readlinkSync(link);
      st = fs.statSync(link, { bigint: true });
    } catch {
      throw new TargetError(`process ${pid} has no fd ${fd}`);
    }
    if (st.isFIFO()) return this.inodeChannel(st.ino, kernelDev(st.dev), [dest.startsWith('pipe:') ? CHAN_KIND_PIPE : CHAN_KIND_FIFO]);
    const m = /^socket:\[(\d+)\]$/.exec(dest);
    if (!m) throw new TargetError(`fd ${fd} of process ${pid} is ${dest}: not a channel causeway follows`);
    if (tcpByInode(pid, m[1])) return this.socketChannel(pid, fd, 'sk_in');
    // A UNIX socket's channel is keyed by its own inode (the receiving end).
    return { kind: 'channel', map: this.shim.map('chans'), keys: [chanKey(st.ino, kernelDev(st.dev), CHAN_KIND_UNIX)] };
  }

  /** The chans keys of an inode (a FIFO's key also holds its generation, which only the map knows). */
  private inodeChannel(ino: bigint, dev: number, kinds: number[]): Resolved {
    const map = this.shim.map('chans');
    const keys = map.keys().filter((k) => {
      const d = decodeChanKey(k);
      return d.ino === ino && d.dev === dev && kinds.includes(d.kind);
    });
    if (keys.length === 0) keys.push(chanKey(ino, dev, kinds[0]));
    return { kind: 'channel', map, keys };
  }

  /** A TCP socket's channel in socket-local storage, named by a duplicate of the process's fd. */
  private socketChannel(pid: number, fd: number, map: 'sk_in' | 'sk_out'): Resolved {
    const { key, release } = this.shim.socketKey(pid, fd);
    return { kind: 'channel', map: this.shim.map(map), keys: [key], release };
  }

  /** The data direction from -> to: its reader's socket in the run, else its writer's. */
  private tcpChannel(from: string, to: string): Resolved {
    const want = { from: canonical(from), to: canonical(to) };
    let writer: { pid: number; fd: number } | null = null;
    for (const pid of this.cgroup.pids()) {
      let fds: string[];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const f of fds) {
        let dest: string;
        try {
          dest = fs.readlinkSync(`/proc/${pid}/fd/${f}`);
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(dest);
        const conn = m && tcpByInode(pid, m[1]);
        if (!conn) continue;
        if (canonical(conn.local) === want.to && canonical(conn.remote) === want.from) return this.socketChannel(pid, Number(f), 'sk_in');
        if (!writer && canonical(conn.local) === want.from && canonical(conn.remote) === want.to) writer = { pid, fd: Number(f) };
      }
    }
    if (writer) return this.socketChannel(writer.pid, writer.fd, 'sk_out');
    throw new TargetError(`no process of this run holds the TCP connection ${from} -> ${to}`);
  }
}

type Resolved =
  | { kind: 'threads'; tids: number[] }
  | { kind: 'channel'; map: UserMap; keys: Buffer[]; release?: () => void };

/** "addr:port" with the address in one canonical form (IPv4-mapped IPv6 as IPv4). */
function canonical(endpoint: string): string {
  const { addr, port } = parseHostPort(endpoint);
  return `${ipaddr.fromByteArray([...addr]).toString()}:${port}`;
}

function describe(target: Target): string {
  if (target === 'root') return 'the root process';
  if ('tid' in target) return `thread ${target.tid}`;
  if ('pid' in target) return target.fd === undefined ? `process ${target.pid}` : `fd ${target.fd} of process ${target.pid}`;
  if ('pipe' in target) return `pipe [${target.pipe.ino}]`;
  return `tcp ${target.tcp.from} -> ${target.tcp.to}`;
}

/** "maj:min" as the kernel encodes it (major << 20 | minor). */
function parseDev(dev: string): number {
  const m = /^(\d+):(\d+)$/.exec(dev);
  if (!m) throw new TypeError(`a device is "major:minor", not "${dev}"`);
  return (Number(m[1]) << 20) | Number(m[2]);
}


/** "addr:port" or "[v6]:port" as 16 bytes (IPv4-mapped) and a port. */
function parseHostPort(s: string): { addr: Buffer; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m || !ipaddr.isValid(m[1]) || Number(m[2]) > 65535) throw new TypeError(`an endpoint is "addr:port" or "[v6addr]:port", not "${s}"`);
  let a = ipaddr.parse(m[1]);
  if (a.kind() === 'ipv4') a = (a as ipaddr.IPv4).toIPv4MappedAddress();
  return { addr: Buffer.from(a.toByteArray()), port: Number(m[2]) };
}

/** struct cw_tcp_key for data flowing from -> to. */
/** The TCP connection of socket inode ino, from the process's network namespace. */
function tcpByInode(pid: number, ino: string): { local: string; remote: string } | null {
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[9] !== ino) continue;
      return { local: procEndpoint(f[1]), remote: procEndpoint(f[2]) };
    }
  }
  return null;
}

/** /proc/net/tcp's "0100007F:1F90" (address in host-order 32-bit words) as "addr:port". */
function procEndpoint(s: string): string {
  const [hex, port] = s.split(':');
  const words = hex.match(/.{8}/g)!.map((w) => Buffer.from(w, 'hex').reverse());
  const bytes = Buffer.concat(words);
  const p = parseInt(port, 16);
  if (bytes.length === 4) return `${bytes.join('.')}:${p}`;
  const a = ipaddr.fromByteArray([...bytes]);
  return `[${a.toString()}]:${p}`;
}

/** Byte offset of ring slot idx in a struct cw_chan. */
function segAt(idx: number): number {
  return CHAN_SEG_OFFSET + idx * SEG_BYTES;
}

function recordAt(v: Buffer, seg: number): CausalRecord | null {
  const rec = decodeRecord(v, segAt(seg) + SEG_REC_OFFSET);
  return rec.version === RECORD_VERSION ? rec : null;
}

/** a - b in the channel's offset space: every kind wraps at 32 bits (TCP: sequence numbers). */
function offDiff(_tcp: boolean, a: bigint, b: bigint): bigint {
  return BigInt.asIntN(32, BigInt.asUintN(32, a - b));
}

/** Ring indexes of the segments that cover bytes not read yet, oldest first. */
function pendingSegs(v: Buffer): number[] {
  const head = v.readUInt32LE(CHAN_OFF_HEAD);
  const tcp = v.readUInt16LE(CHAN_OFF_KIND) === CHAN_KIND_TCP;
  const rd = v.readBigUInt64LE(CHAN_OFF_RD);
  const wr = BigInt(v.readUInt32LE(CHAN_OFF_WR));
  // The filled segments, oldest first (a slot reserved and not filled yet holds no bytes).
  const filled: number[] = [];
  for (let k = Math.min(head, CHAN_SEGS); k >= 1; k--) {
    const index = (head - k) >>> 0;
    if (v.readUInt32LE(segAt(index % CHAN_SEGS) + SEG_SEQ_OFFSET) === ((index + 1) >>> 0)) filled.push(index % CHAN_SEGS);
  }
  const out: number[] = [];
  filled.forEach((idx, j) => {
    const start = v.readBigUInt64LE(segAt(idx));
    const newer = j + 1 < filled.length ? v.readBigUInt64LE(segAt(filled[j + 1])) : null;
    // Pending: some of its bytes are written and not read. A segment ends where the next one
    // starts; the newest ends at the write offset (TCP: unknown here, so it counts as pending).
    const end = newer ?? (tcp ? null : wr);
    const endsAfterRd = end === null || offDiff(tcp, end, rd) > 0n;
    const startsBeforeWr = tcp || offDiff(tcp, start, wr) < 0n;
    if (endsAfterRd && startsBeforeWr) out.push(idx);
  });
  return out;
}

/** The segment holding the next unread byte, or the first pending one. */
function readableSeg(v: Buffer): number | null {
  const pending = pendingSegs(v);
  if (pending.length === 0) return null;
  const tcp = v.readUInt16LE(CHAN_OFF_KIND) === CHAN_KIND_TCP;
  const rd = v.readBigUInt64LE(CHAN_OFF_RD);
  let best: number | null = null;
  for (const i of pending) if (offDiff(tcp, v.readBigUInt64LE(segAt(i)), rd) <= 0n) best = i;
  return best ?? pending[0];
}

