/**
 * A loaded kernel shim, scoped to one cgroup: its events, its counters, and
 * the records of the threads it tracks. Not safe to use after close().
 */
import { EventEmitter } from 'node:events';
import createDebug from 'debug';
import { native, NativeSchedStats, NativeShim, UserMapName } from './native';
import { CausalEvent, decodeEvents, EVENT_BYTES } from './events';
import { CausalRecord, decodeRecord, encodeRecord, RECORD_BYTES } from './record';
import fs from 'node:fs';
import os from 'node:os';
import { fromNative, NotSupportedError, TargetError } from '../errors';
import { trustKeys } from './trust';
import { CHAN_BYTES, CHAN_OFF_HEAD, CHAN_SEG_OFFSET, SEG_BYTES, SEG_SEQ_OFFSET } from './channel';

const debug = createDebug('causeway:shim');

/** The shim's counters (enum cw_counter in bpf/causeway.h), in that order. */
export const COUNTER_NAMES = [
  'events',
  'ringbufDrops',
  'taskStorageFailures',
  'channelMapFull',
  'segmentsOverwritten',
  'parentsTruncated',
  'ingressReads',
  'unfollowedSends',
  'tcpOptionsWritten',
  'tcpOptionNoSpace',
  'tcpOptionBoundaries',
  'tcpOptionsReceived',
  'tcpOptionUntrustedOut',
  'tcpOptionUntrustedIn',
  'tcpOptionMalformed',
  'tcpOptionStale',
  'sends',
  'recvs',
  'minted',
  'tcpOptionStripped',
  'sdkSyncs',
  'sdkInvalid',
  'skStorageFailures',
  'channelsCreated',
  'actorAreasLost',
  'tcpOptionBadAck',
  'tcpOptionDuplicate',
  'schedulerReports',
  'schedulerLost',
  'writersRaced',
] as const;
export type Counters = Record<(typeof COUNTER_NAMES)[number], number>;

/** Counters that mean something was lost. */
export const DROP_COUNTERS: (keyof Counters)[] = [
  'ringbufDrops',
  'taskStorageFailures',
  'channelMapFull',
  'segmentsOverwritten',
  'parentsTruncated',
  'tcpOptionNoSpace',
  'tcpOptionBoundaries',
  'tcpOptionMalformed',
  'tcpOptionStale',
  'tcpOptionDuplicate',
  'skStorageFailures',
  'schedulerLost',
];

/** The TCP option's defaults: an RFC 6994 experimental kind and causeway's ExID. */
export const DEFAULT_OPT_KIND = 253;
export const DEFAULT_OPT_EXID = 0xc5a7;
/** How late events may reach user space by default (ms): what a consumer that reacts to them (an actor) can bear. */
export const EVENT_LATENCY_MS = 20;
/** The same for consumers that only store events (the tracer, `-e FILE`): fewer wake-ups of the process. */
export const STORE_LATENCY_MS = 100;

export interface ShimOptions {
  /** The run's cgroup directory: the shim follows forks inside it, the TCP option program attaches there. */
  cgroupPath: string;
  /** Networks (CIDR) trusted besides loopback. */
  trust?: string[];
  /** TCP option kind (253 or 254, default 253) and ExID (16 bits). */
  optKind?: number;
  optExid?: number;
  /** Ring buffer size in bytes, a power of two (default 4 MiB). */
  ringbufBytes?: number;
  /** Emit events at all (default true); false propagates records only. */
  events?: boolean;
  /**
   * How late an event may reach user space (ms, default EVENT_LATENCY_MS):
   * the kernel wakes the reader only once a quarter of the ring is used, and
   * the reader takes what arrived without a wake-up this often. Each of these
   * wake-ups costs the process ~0.2 ms of CPU on a busy machine.
   */
  eventLatencyMs?: number;
  /** Pipes, FIFOs and UNIX sockets followed at once (the chans table; default 16384). */
  maxChannels?: number;
  /**
   * Follow the children of followed threads wherever they live (causeway
   * attach --pid); default false: only children forked inside cgroupPath.
   */
  followTracked?: boolean;
}

export interface UserMap {
  lookup(key: Buffer): Buffer | null;
  /** flags: 0 any, 1 only if absent, 2 only if present (bpf(2)). */
  update(key: Buffer, value: Buffer, flags?: number): void;
  delete(key: Buffer): boolean;
  /** Every key now (hash maps). */
  keys(): Buffer[];
}

/**
 * Emits 'raw' (Buffer: whole struct cw_event, EVENT_BYTES each) for every
 * batch; 'events' (CausalEvent[], decoded) only while someone listens for
 * them, so that a consumer of raw batches pays no JavaScript object per
 * event; and 'end' once after close().
 */
export class Shim extends EventEmitter {
  private readonly handle: NativeShim;
  /** Add to an event's CLOCK_BOOTTIME stamp to get ns since the Unix epoch. */
  readonly clockOffset: bigint;
  private ended: Promise<void> | null = null;
  private endResolve: (() => void) | null = null;
  private closed = false;
  private finalCounters: Counters | undefined;
  private finalSched: NativeSchedStats | null = null;

  /** Loads and attaches the shim; throws a CausewayError that says which step failed. */
  constructor(opts: ShimOptions) {
    super();
    const addon = native();
    const layout = addon.layout();
    if (
      layout.event !== EVENT_BYTES ||
      layout.record !== RECORD_BYTES ||
      layout.counters !== COUNTER_NAMES.length ||
      layout.chan !== CHAN_BYTES ||
      layout.chanSeg !== CHAN_SEG_OFFSET ||
      layout.chanHead !== CHAN_OFF_HEAD ||
      layout.seg !== SEG_BYTES ||
      layout.segSeq !== SEG_SEQ_OFFSET
    )
      throw new Error(`the addon and the TypeScript disagree on layouts (${JSON.stringify(layout)}): run \`npm run build\``);
    const ringbufBytes = opts.ringbufBytes ?? 1 << 22;
    if (ringbufBytes < 4096 || (ringbufBytes & (ringbufBytes - 1)) !== 0)
      throw new RangeError(`the ring buffer size must be a power of two of at least 4096 bytes, not ${ringbufBytes}`);
    const maxChannels = opts.maxChannels ?? 16384;
    if (!Number.isInteger(maxChannels) || maxChannels < 1 || maxChannels > 1 << 22)
      throw new RangeError(`the channel table holds 1 to ${1 << 22} channels, not ${maxChannels}`);
    const latency = opts.eventLatencyMs ?? EVENT_LATENCY_MS;
    if (!Number.isInteger(latency) || latency < 1 || latency > 10000) throw new RangeError(`events' latency is 1 to 10000 ms, not ${latency}`);
    if (!fs.existsSync('/sys/kernel/btf/vmlinux')) throw new NotSupportedError('kernel BTF (CONFIG_DEBUG_INFO_BTF)', '5.5');
    const trust = trustKeys(opts.trust); // a bad network is the caller's error, on any kernel
    try {
      this.handle = new addon.Shim({
        kind: 'shim',
        ringbufBytes,
        maxChannels,
        emitEvents: opts.events ?? true,
        cgroupPath: opts.cgroupPath,
        trust,
        optKind: opts.optKind ?? DEFAULT_OPT_KIND,
        optExid: opts.optExid ?? DEFAULT_OPT_EXID,
        followTracked: opts.followTracked ?? false,
      });
    } catch (err) {
      if (!kernelAtLeast(6, 2))
        throw new NotSupportedError('the shim (BTF tracepoints, task storage, bpf_rdonly_cast)', '6.2', (err as Error).message);
      throw fromNative(err);
    }
    this.clockOffset = addon.clockOffset();
    if (opts.events ?? true) {
      this.ended = new Promise((resolve) => (this.endResolve = resolve));
      this.handle.startEvents((batch) => {
        if (batch === null) {
          this.emit('end');
          this.endResolve?.();
          return;
        }
        this.emit('raw', batch);
        if (this.listenerCount('events')) this.emit('events', decodeEvents(batch, this.clockOffset));
      }, latency);
    }
    debug('loaded for cgroup %s', opts.cgroupPath);
  }

  /** Events as an async iterator of batches; ends after close(). */
  async *batches(): AsyncGenerator<CausalEvent[]> {
    const queue: CausalEvent[][] = [];
    let wake: (() => void) | null = null;
    let done = false;
    const onEvents = (b: CausalEvent[]) => {
      queue.push(b);
      wake?.();
    };
    const onEnd = () => {
      done = true;
      wake?.();
    };
    this.on('events', onEvents);
    this.once('end', onEnd);
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (done) return;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
    } finally {
      this.off('events', onEvents);
      this.off('end', onEnd);
    }
  }

  /** The counters now, summed over CPUs (after close(): the final ones). */
  counters(): Counters {
    if (this.finalCounters) return this.finalCounters;
    const raw = this.handle.counters();
    const out = {} as Counters;
    COUNTER_NAMES.forEach((name, i) => (out[name] = Number(raw[i] ?? 0n)));
    return out;
  }

  /** The record thread tid holds, or null if it has none. */
  readRecord(tid: number): CausalRecord | null {
    let buf: Buffer | null;
    try {
      buf = this.handle.readTask(tid);
    } catch (err) {
      throw targetError(err, tid);
    }
    return buf ? decodeRecord(buf, 0) : null;
  }

  /** Makes thread tid hold record from its next syscall on (Causeway's inject/write). */
  writeRecord(tid: number, record: CausalRecord): void {
    try {
      this.handle.writeRecord(tid, encodeRecord(record));
    } catch (err) {
      throw targetError(err, tid);
    }
  }

  /**
   * Follows thread tid, which runs already, from its next syscall on, holding
   * record: "adopted"; "followed" if it was already (it keeps its record);
   * "gone" if it exited or its tid is another thread's now (startTicks: its
   * start time, /proc/TID/stat field 22, as read when it was found).
   */
  adoptThread(tid: number, record: CausalRecord, startTicks: number): 'adopted' | 'followed' | 'gone' {
    try {
      return this.handle.adoptThread(tid, encodeRecord(record), startTicks);
    } catch (err) {
      throw targetError(err, tid);
    }
  }

  /**
   * Connections opened before the shim was there (causeway attach): switches
   * the TCP option on for the established ones made in cgroup dir (id and
   * depth below mount) or below, in each network namespace given
   * (/proc/PID/ns/net). Returns how many it switched on.
   */
  enableExistingTcp(cgroupId: bigint, level: number, netns: string[]): number {
    try {
      return this.handle.enableExistingTcp(cgroupId, level, netns);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** A map that user space may read and change (policy, channels); raw bytes in and out. */
  map(name: UserMapName): UserMap {
    const h = this.handle;
    return {
      lookup: (key) => h.mapLookup(name, key),
      update: (key, value, flags = 0) => {
        try {
          h.mapUpdate(name, key, value, flags);
        } catch (err) {
          throw fromNative(err);
        }
      },
      delete: (key) => h.mapDelete(name, key),
      keys: () => h.mapKeys(name),
    };
  }

  /**
   * The key that names fd of process pid to socket-local storage (sk_in,
   * sk_out): a duplicate of that fd in this process, closed by release().
   */
  socketKey(pid: number, fd: number): { key: Buffer; release(): void } {
    let dup: number;
    try {
      dup = native().pidfdGetfd(pid, fd);
    } catch (err) {
      throw new TargetError(`fd ${fd} of process ${pid}: ${(err as Error).message}`);
    }
    const key = Buffer.alloc(4);
    key.writeInt32LE(dup);
    return { key, release: () => fs.closeSync(dup) };
  }

  /** The SDK: a slot map for process tgid (its fd), its release, and a thread's slot. */
  sdkSlots(tgid: number): number {
    return this.handle.sdkSlots(tgid);
  }
  sdkRelease(tgid: number): void {
    this.handle.sdkRelease(tgid);
  }
  setSdkSlot(tid: number, slot: number, slotsFd: number): boolean {
    try {
      return this.handle.setSdkSlot(tid, slot, slotsFd);
    } catch (err) {
      throw targetError(err, tid);
    }
  }

  /**
   * The scheduler's reactor (native/sched.cc): from now on a thread of the run
   * that comes to hold a record of priority p runs at nice[p] (a number -20..19,
   * or 'own': the nice it had before), and its TCP packets leave with
   * socketPriority[p] (null: unchanged).
   */
  startScheduler(nice: (number | 'own')[], socketPriority: (number | null)[]): void {
    try {
      this.handle.schedStart(nice.map((n) => (n === 'own' ? 100 : n)), socketPriority.map((v) => (v === null ? -1 : v)));
    } catch (err) {
      throw fromNative(err);
    }
  }
  schedulerStats(): NativeSchedStats | null {
    return this.closed ? this.finalSched : this.handle.schedStats();
  }
  /** Stops the scheduler, gives every thread still reniced its own nice back; its final figures. */
  stopScheduler(): NativeSchedStats | null {
    if (this.closed) return this.finalSched;
    this.handle.schedStop();
    return this.handle.schedStats();
  }

  /** Detaches the programs, delivers the last events, frees everything. Returns the final counters. */
  async close(): Promise<Counters> {
    if (this.closed) throw new Error('the shim is already closed');
    this.closed = true;
    this.handle.schedStop();  // nothing stays reniced, whoever forgot to stop it
    this.finalSched = this.handle.schedStats();
    this.handle.detach();
    this.handle.stopEvents();
    if (this.ended) await this.ended;
    const counters = this.counters();
    this.finalCounters = counters;
    this.handle.destroy();
    debug('closed: %o', counters);
    return counters;
  }
}

/** True if the running kernel is at least major.minor. */
export function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(os.release());
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

function targetError(err: unknown, tid: number) {
  const e = fromNative(err);
  if (e.errno === 3 /* ESRCH */) return new TargetError(`no thread ${tid}`);
  return e;
}

/** The floor for benchmarks: the same hooks, programs that return at once. */
export class Floor {
  private readonly handle: NativeShim;
  constructor() {
    try {
      this.handle = new (native().Shim)({ kind: 'floor' });
    } catch (err) {
      throw fromNative(err);
    }
  }
  close(): void {
    this.handle.detach();
    this.handle.destroy();
  }
}
