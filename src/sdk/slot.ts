/**
 * One thread's slot of the in-process SDK (struct cw_sdk_slot in
 * bpf/causeway.h), read and written through the memory that the runtime
 * shares with the kernel. Little-endian:
 *
 *   off size field
 *     0    4 app_gen     bumped by the thread after changing app_active or app_rec; never 0 once set
 *     4    4 app_active  1: app_rec is the thread's record; 0: the kernel's own applies
 *     8    4 kern_gen    bumped by the kernel after it writes kern_rec
 *    12    4 tid         the owning thread (set by the runtime)
 *    64   64 app_rec     the record the thread asks the kernel to carry
 *   128   64 kern_rec    the record the kernel last adopted for the thread (version 0: none)
 *
 * The kernel reads app_* at the thread's next write-family syscall, fork or
 * exec; only the owning thread writes them, so there is no lock. Only the
 * thread that owns the slot may use an SdkSlot over it.
 */
import { CausalRecord, decodeRecord, encodeRecord, RECORD_BYTES } from '../kernel/record';
import { native } from '../kernel/native';
import { CausewayError } from '../errors';

export const SDK_SLOTS = 16;
export const SDK_SLOT_BYTES = 256;
const APP_GEN = 0;
const APP_ACTIVE = 4;
const KERN_GEN = 8;
const TID = 12;
const APP_REC = 64;
const KERN_REC = 128;

/** What the addon's sdkAttach gives the calling thread: its tid, its slot, and the process's whole slot array. */
export interface SdkAttachment {
  tid: number;
  slot: number;
  memory: ArrayBuffer;
}

/** The part of the addon the SDK uses (native/sdk.cc). */
export interface SdkNative {
  sdkAttach(path: string): SdkAttachment;
}

/** Asks the runtime at socketPath for the calling thread's slot; loads the addon only now. Throws CausewayError. */
export function attachSlot(socketPath: string): SdkSlot {
  let a: SdkAttachment;
  try {
    const addon = native() as unknown as SdkNative;
    if (typeof addon.sdkAttach !== 'function') throw new CausewayError('the causeway addon has no sdkAttach: rebuild it (`npm run build`)');
    a = addon.sdkAttach(socketPath);
  } catch (err) {
    if (err instanceof CausewayError) throw err;
    throw new CausewayError((err as Error).message ?? String(err), (err as { errno?: number }).errno);
  }
  const slot = new SdkSlot(a.memory, a.slot);
  const owner = slot.tid;
  if (owner !== 0 && owner !== a.tid)
    throw new CausewayError(`the runtime gave thread ${a.tid} slot ${a.slot}, which belongs to thread ${owner}`);
  return slot;
}

/** Encodings of the records the SDK has seen, so that a record is checked and encoded once. */
const encodings = new WeakMap<CausalRecord, Buffer>();

/** A record's 64 bytes, encoded once per record object (records are treated as immutable); throws RangeError on a bad field. */
export function encoded(rec: CausalRecord): Buffer {
  let buf = encodings.get(rec);
  if (buf === undefined) {
    buf = encodeRecord(rec);
    encodings.set(rec, buf);
  }
  return buf;
}

const UNSET = Symbol('unset');

/** Whether two encoded records are equal (a JS loop: cheaper than a native call for 64 bytes). */
function sameBytes(a: Buffer, b: Buffer): boolean {
  if (a === b) return true;
  for (let i = 0; i < RECORD_BYTES; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A thread's view of its slot: writes app_* only when the record changes, reads kern_rec without a syscall. */
export class SdkSlot {
  readonly index: number;
  private readonly view: DataView;
  private readonly bytes: Buffer;
  /** The record app_* reflects, by identity (undefined: app_active is 0). */
  private held: CausalRecord | undefined | typeof UNSET = UNSET;
  /** The encoding last copied into app_rec (what app_rec holds while app_active is 1). */
  private heldBytes: Buffer | undefined;
  private kernGen = -1;
  private kernRec: CausalRecord | undefined;

  constructor(memory: ArrayBuffer, index: number) {
    if (!Number.isInteger(index) || index < 0 || index >= SDK_SLOTS) throw new RangeError(`an SDK slot index is 0-${SDK_SLOTS - 1}, not ${index}`);
    if (memory.byteLength < (index + 1) * SDK_SLOT_BYTES)
      throw new RangeError(`SDK slot ${index} does not fit in ${memory.byteLength} bytes of slot memory`);
    this.index = index;
    this.view = new DataView(memory, index * SDK_SLOT_BYTES, SDK_SLOT_BYTES);
    this.bytes = Buffer.from(memory, index * SDK_SLOT_BYTES, SDK_SLOT_BYTES);
  }

  /** The owning thread, as the runtime set it (0 if unset). */
  get tid(): number {
    return this.view.getUint32(TID, true);
  }

  /** app_gen: how many times the thread changed what it asks the kernel to carry. */
  get appGen(): number {
    return this.view.getUint32(APP_GEN, true);
  }

  /**
   * Makes app_* say rec (undefined: the kernel's own record applies), bumping
   * app_gen, unless they say it already. The same object as last time costs a
   * compare; another object with the same bytes costs a 64-byte compare.
   * Returns whether the slot changed.
   */
  write(rec: CausalRecord | undefined): boolean {
    if (rec === this.held) return false;
    this.held = rec;
    const active = this.view.getUint32(APP_ACTIVE, true) === 1;
    if (rec === undefined) {
      if (!active) return false;
      this.view.setUint32(APP_ACTIVE, 0, true);
    } else {
      const enc = encoded(rec);
      if (active && this.heldBytes !== undefined && sameBytes(enc, this.heldBytes)) return false;
      this.bytes.set(enc, APP_REC);
      this.heldBytes = enc;
      if (!active) this.view.setUint32(APP_ACTIVE, 1, true);
    }
    // After the change: the kernel compares app_gen with what it last took. 0 means "never set".
    this.view.setUint32(APP_GEN, (this.view.getUint32(APP_GEN, true) + 1) >>> 0 || 1, true);
    return true;
  }

  /** The record the kernel last adopted for this thread (kern_rec), or undefined; decoded once per kern_gen. */
  kernel(): CausalRecord | undefined {
    for (;;) {
      const gen = this.view.getUint32(KERN_GEN, true);
      if (gen === this.kernGen) return this.kernRec;
      const rec = this.bytes[KERN_REC] === 0 ? undefined : decodeRecord(this.bytes, KERN_REC);
      // Someone other than this thread's own syscalls (an actor writing the thread's record) may write kern_*: read again if it moved.
      if (this.view.getUint32(KERN_GEN, true) !== gen) continue;
      this.kernGen = gen;
      this.kernRec = rec;
      return rec;
    }
  }
}
