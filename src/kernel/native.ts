/**
 * The addon (native/addon.cc) behind typed signatures. Nothing else in src/
 * touches the raw native functions.
 */
import path from 'node:path';
import { CausewayError } from '../errors';

/** A loaded shim or floor, as the addon sees it. Methods run on the JS thread. */
export interface NativeShim {
  startEvents(onBatch: (batch: Buffer | null) => void, pollMs: number): void;
  stopEvents(): void;
  counters(): bigint[];
  readTask(tid: number): Buffer | null;
  writeRecord(tid: number, record: Buffer): void;
  adoptThread(tid: number, record: Buffer, startTicks: number): 'adopted' | 'followed' | 'gone';
  enableExistingTcp(cgroupId: bigint, level: number, netns: string[]): number;
  /** The maps user space may change (policy, ingress_ports, egress_strip, chans, tcp_chans). */
  mapLookup(map: UserMapName, key: Buffer): Buffer | null;
  mapUpdate(map: UserMapName, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(map: UserMapName, key: Buffer): boolean;
  mapKeys(map: UserMapName): Buffer[];
  /** A new slot map for process tgid, registered with the shim: its fd (close with closeFd). */
  sdkSlots(tgid: number): number;
  sdkRelease(tgid: number): void;
  /** Thread tid reads SDK slot `slot` of the map slotsFd; false if it holds no record. */
  setSdkSlot(tid: number, slot: number, slotsFd: number): boolean;
  /** The scheduler (native/sched.cc): nice[p] -20..19 or 100 (the thread's own); skprio[p] -1 (leave) or SO_PRIORITY. */
  schedStart(nice: number[], skprio: number[]): void;
  schedStats(): NativeSchedStats | null;
  /** Stops renicing; threads still reniced get their own nice back. */
  schedStop(): void;
  detach(): void;
  destroy(): void;
}

export interface NativeSchedStats {
  changes: number;
  reniced: number;
  gone: number;
  failed: number;
  restored: number;
  idled: number;
  arrivals: number;
  reused: number;
  threads: number;
  realtime: boolean;
  latencyNs: number[];
}

export interface NativeShimOptions {
  kind: 'shim' | 'floor';
  ringbufBytes?: number;
  maxChannels?: number;
  emitEvents?: boolean;
  cgroupPath?: string;
  trust?: { prefixlen: number; addr: Buffer }[];
  optKind?: number;
  optExid?: number;
  followTracked?: boolean;
}

export type UserMapName = 'policy' | 'ingress_ports' | 'egress_strip' | 'chans' | 'sk_in' | 'sk_out';

/** One stamp of the layer programs (bpf/layers.bpf.c): a record's first segment entering an interface. */
export interface NativeLayerStamp {
  /** The send event's 48-bit id, 16 hex digits. */
  event: string;
  ifindex: number;
  /** The network namespace's inode number. */
  netns: number;
  dir: 'in' | 'out';
  /** CLOCK_BOOTTIME ns. */
  ts: bigint;
  /** Bit 0: seen inside a VXLAN packet. */
  flags: number;
  len: number;
  seq: number;
  trace: string;
}

/** The tc programs of causeway trace --layers (native/layers.cc). */
export interface NativeLayers {
  /** Attaches (TCX) to ifname's ingress or egress inside the network namespace at nsPath; returns its ifindex there and the namespace's inode. */
  attach(nsPath: string, ifname: string, dir: 'in' | 'out'): { ifindex: number; netns: number };
  /** Takes the stamps out of the kernel's table (each is returned once). */
  read(): NativeLayerStamp[];
  counters(): { packets: number; options: number; stored: number; full: number };
  detach(): void;
  destroy(): void;
}

export interface NativeAddon {
  Shim: new (opts: NativeShimOptions) => NativeShim;
  Layers: new (opts: { optKind: number; optExid: number }) => NativeLayers;
  clockOffset(): bigint;
  layout(): { record: number; task: number; event: number; counters: number; chan: number; chanSeg: number; chanHead: number; seg: number; segSeq: number; sdkSlot: number; sdkSlots: number };
  probe(): Record<string, boolean>;
  /** A duplicate, in this process, of fd of process pid (pidfd_getfd); the caller closes it. */
  pidfdGetfd(pid: number, fd: number): number;
  /** flock(fd, LOCK_EX | LOCK_NB): true once held, false if another open file holds it. */
  flockTry(fd: number): boolean;
  /** The other end of a UNIX socket. */
  /** The process that connected to a UNIX socket: a pidfd (-1: gone), the pid it names now (-1: exited), its credentials at connect. */
  peerProcess(fd: number): { pidfd: number; pid: number; uid: number; gid: number };
  /** Whether the process a pidfd names has not been reaped (its pid still names it). */
  pidfdAlive(pidfd: number): boolean;
  /** Sends payload and a copy of fd (-1: none) in one message. */
  sendFd(sock: number, fd: number, payload: Buffer): void;
  closeFd(fd: number): void;
  gettid(): number;
  /**
   * Packs raw batches (whole struct cw_event) into one event blob of the trace
   * store (docs/tracer.md); level 1-9 deflates its body, 0 does not. traces:
   * 40 bytes per trace of the blob, in order of first appearance (id[16],
   * first and last ts as i64 epoch ns, events u32, processes u32); pids: the
   * processes' pids (u32), trace after trace.
   */
  packEvents(batches: Buffer[], clockOffset: bigint, level: number): { blob: Buffer; traces: Buffer; pids: Buffer };
  /**
   * A blob's events (only those of trace, a 16-byte id, if given) as whole
   * struct cw_event, zeroed except the fields the blob stores; total counts
   * every event of the blob. Throws on a corrupt blob or an unknown format.
   */
  unpackEvents(blob: Buffer, trace?: Buffer | null): { events: Buffer; clockOffset: bigint; total: number };
  /** In a traced program: asks the runtime for this thread's SDK slot and maps the process's slots. */
  sdkAttach(socketPath: string): { tid: number; slot: number; memory: ArrayBuffer };
  /**
   * Whole events of a raw batch (struct cw_event each) as JSON Lines, byte for byte what
   * decodeEvents(raw, clockOffset).map((e) => JSON.stringify(eventToJson(e))).join('\n') + '\n' gives
   * (native/jsonl.cc); clockOffset must fit in 64 bits (RangeError).
   */
  formatJsonLines(raw: Buffer, clockOffset: bigint): Buffer;
}

let addon: NativeAddon | undefined;

/** The addon, loaded once; a clear error says how to build it if it is missing. */
export function native(): NativeAddon {
  if (addon) return addon;
  const file = path.join(__dirname, '..', '..', '..', 'build', 'Release', 'causeway.node');
  const alt = path.join(__dirname, '..', '..', 'build', 'Release', 'causeway.node');
  for (const f of [file, alt]) {
    try {
      addon = require(f) as NativeAddon;
      return addon;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new CausewayError('the causeway addon is not built: run `npm run build` (or `npm run setup` on a fresh machine)');
}
