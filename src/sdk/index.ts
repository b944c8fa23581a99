/**
 * causeway/sdk: the in-process SDK for Node programs run under `causeway run`.
 *
 * The kernel gives every thread one record: the one it last read. An event
 * loop that interleaves requests needs to say which request it works on now;
 * run(record, fn) says it, with AsyncLocalStorage semantics, and the bytes the
 * code inside fn hands to the kernel carry that record.
 *
 * How the kernel learns it, with no extra syscall and nothing per async
 * switch: each thread that uses the SDK gets a slot in a BPF array mapped into
 * its process (src/sdk/slot.ts). At the points where Node hands bytes to the
 * kernel (socket writes, synchronous fs writes, spawning a child) a wrapper
 * calls sync(), which writes the record of the code running now into the
 * slot if it is not there already (a pointer compare when nothing changed).
 * The kernel reads the slot at that thread's next write, fork or exec.
 *
 * Outside causeway (no CAUSEWAY_SDK_SOCKET), or if attaching fails (warned
 * once on stderr), the SDK is detached: run() and current() work within the
 * process, and nothing reaches the kernel. Nothing here throws into the app's
 * request path except run() given a record that cannot be encoded.
 *
 * Threads: module state is per thread (each worker_thread loads its own copy
 * of this module), and each thread attaches to its own slot. The SDK reaches
 * only the threads of its own process.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import childProcess from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';
import { threadId } from 'node:worker_threads';
import { CausalRecord, newRecord } from '../kernel/record';
import { FieldLayoutError, FieldRegistry, FieldValue } from '../actor/fields';
import { attachSlot, encoded, SdkSlot } from './slot';

export type { CausalRecord } from '../kernel/record';
export type { FieldValue } from '../actor/fields';

/** The environment variable, set by `causeway run`, that names the runtime's SDK socket. */
export const SOCKET_ENV = 'CAUSEWAY_SDK_SOCKET';
/** The environment variable, set by `causeway run`, that holds the actor field layout (FieldRegistry.serialize()). */
export const LAYOUT_ENV = 'CAUSEWAY_ACTOR_LAYOUT';

const als = new AsyncLocalStorage<CausalRecord | undefined>();
/** 'new': not tried yet; then attached (slot set) or detached for the life of the thread. */
let state: 'new' | 'attached' | 'detached' = 'new';
let slot: SdkSlot | undefined;

function ensure(): SdkSlot | undefined {
  if (state === 'new') attachFromEnv();
  return slot;
}

function attachFromEnv(): void {
  state = 'detached';
  const socketPath = process.env[SOCKET_ENV];
  if (!socketPath) return;
  try {
    use(attachSlot(socketPath));
  } catch (err) {
    const who = threadId === 0 ? 'the main thread' : `worker thread ${threadId}`;
    process.stderr.write(`causeway/sdk: ${who} runs without the kernel (records stay in this process): ${(err as Error).message}\n`);
  }
}

function use(s: SdkSlot): void {
  slot = s;
  state = 'attached';
  installSyncPoints();
}

/** The record of the code running now: the one run() set, else the kernel's for this thread (no syscall), else undefined. */
export function current(): CausalRecord | undefined {
  const rec = als.getStore();
  if (rec !== undefined) return rec;
  return ensure()?.kernel();
}

/** The record that run() made current for the code running now; undefined outside run() (or in run(undefined, ...)). */
export function runRecord(): CausalRecord | undefined {
  return als.getStore();
}

/**
 * Runs fn with record current for it and everything it schedules
 * asynchronously; undefined: the kernel's own record applies. The record is
 * encoded once and must not be changed afterwards (withFields() makes a new
 * one). Throws RangeError, before running fn, if the record cannot be encoded.
 */
export function run<R>(record: CausalRecord | undefined, fn: () => R): R {
  if (state === 'new') attachFromEnv();
  if (record !== undefined) encoded(record);
  if (!slot) return als.run(record, fn);
  // The slot holds record while fn runs synchronously, so that its syscalls carry it
  // however they are reached (a spawnSync taken before the SDK wrapped it, say);
  // what fn schedules goes through the sync points. Then the caller's record again.
  try {
    return als.run(record, () => {
      slot!.write(record);
      return fn();
    });
  } finally {
    slot.write(als.getStore());
  }
}

/**
 * Tells the kernel the record of the code running now, for this thread's next
 * write, fork or exec. The SDK calls it before socket writes, synchronous fs
 * writes and spawns; call it before other syscalls that carry bytes (a native
 * addon's write, say). Costs a pointer compare when nothing changed.
 */
export function sync(): void {
  ensure()?.write(als.getStore());
}

/** Whether this thread reaches the kernel through a slot. */
export function attached(): boolean {
  return ensure() !== undefined;
}

/** A record for a new trace: random trace and event ids, sampled unless told otherwise. */
export function newTrace(opts: { sampled?: boolean; priority?: number } = {}): CausalRecord {
  return newRecord(opts);
}

let layout: { json: string; registry: FieldRegistry } | undefined;

/** The actor field registry of the run, from CAUSEWAY_ACTOR_LAYOUT; throws FieldLayoutError if it is not set or not valid. */
export function fieldRegistry(): FieldRegistry {
  const json = process.env[LAYOUT_ENV];
  if (!json)
    throw new FieldLayoutError(`${LAYOUT_ENV} is not set: run under \`causeway run\` with actors that declare fields, or pass a FieldRegistry`);
  if (layout?.json !== json) layout = { json, registry: FieldRegistry.parse(json) };
  return layout.registry;
}

/** A copy of rec whose actor area has the named fields of actor set to values; rec is not changed. */
export function withFields(
  rec: CausalRecord,
  actor: string,
  values: Record<string, FieldValue>,
  registry: FieldRegistry = fieldRegistry(),
): CausalRecord {
  const area = new Uint8Array(registry.areaBytes);
  area.set(rec.actor.subarray(0, area.length));
  registry.write(area, actor, values);
  return { ...rec, actor: area };
}

/** The fields of actor in rec's actor area. */
export function fields(rec: CausalRecord, actor: string, registry: FieldRegistry = fieldRegistry()): Record<string, FieldValue> {
  const area = new Uint8Array(registry.areaBytes);
  area.set(rec.actor.subarray(0, area.length));
  return registry.read(area, actor);
}

/** Testing seam: attaches this thread to a slot of memory laid out as the kernel's slot array, with no runtime. */
export function _attachForTest(memory: ArrayBuffer, index: number): void {
  use(new SdkSlot(memory, index));
}

/** Testing seam: forgets the slot; the next use attaches from the environment again. The sync points stay installed (idle). */
export function _resetForTest(): void {
  slot = undefined;
  state = 'new';
}

let installed = false;

/**
 * The sync points, installed once per thread on attach: each wrapper calls
 * sync() and then the original. They are where Node's JS hands bytes to the
 * kernel on this thread, synchronously in the caller's async context:
 *  - net.Socket _writeGeneric and _writev: TCP, UNIX sockets, pipes, and what
 *    runs over them (HTTP, TLS, process.stdout/stderr when they are pipes).
 *    libuv tries the write at once; a write that it finishes later, under
 *    backpressure, goes out with the record synced last on this thread, as do
 *    writes that Writable buffered meanwhile (flushed from the completion of an
 *    earlier write, in that write's context).
 *  - ChildProcess spawn (spawn, exec, execFile, fork) and the exported
 *    spawnSync, execSync, execFileSync: the child inherits the record at fork.
 *  - fs.writeSync, fs.writevSync, fs.writeFileSync, fs.appendFileSync (a FIFO, say).
 * Not fs.write, fs.writev, fs.promises or streams of fs: libuv's thread pool
 * does those writes, and a pool thread has no slot, so they carry the pool
 * thread's own record. Nor calls that reach a function through a reference
 * taken inside Node before the wrapper was installed.
 */
function installSyncPoints(): void {
  if (installed) return;
  installed = true;
  before(net.Socket.prototype, '_writeGeneric');
  before(net.Socket.prototype, '_writev');
  before(childProcess.ChildProcess.prototype, 'spawn');
  for (const name of ['spawnSync', 'execSync', 'execFileSync'] as const) before(childProcess, name);
  for (const name of ['writeSync', 'writevSync', 'writeFileSync', 'appendFileSync'] as const) before(fs, name);
  // ESM named imports of node:fs and node:child_process see the wrappers too.
  syncBuiltinESMExports();
}

/** Replaces obj[name] with a function that syncs the slot, then calls the original. */
function before(obj: object, name: string): void {
  const o = obj as Record<string, unknown>;
  const orig = o[name];
  if (typeof orig !== 'function') return;
  const wrapped = function (this: unknown) {
    // sync(), minus the attach check: wrappers exist only once attached.
    if (slot !== undefined) slot.write(als.getStore());
    // eslint-disable-next-line prefer-rest-params
    return orig.apply(this, arguments);
  };
  Object.defineProperty(wrapped, 'name', { value: orig.name });
  o[name] = wrapped;
}
