/**
 * The runtime: a command in its own cgroup with the shim scoped to it, the
 * actors (meta-applications) fed with its events, and the SDK socket for the
 * programs inside. `causeway run` is `new Runtime(options).run()`.
 *
 * Order matters: actors are loaded and their fields laid out before anything
 * touches the kernel; the shim is attached and the actors' start hooks (their
 * policy) have run before the command starts; the root record is written
 * before the command's first instruction; and everything made here (cgroup,
 * programs, links, slot maps, the socket) is gone before run() returns.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import createDebug from 'debug';
import type { RunScope } from '../kernel/cgroup';
import { Counters, DROP_COUNTERS, EVENT_LATENCY_MS, Shim, STORE_LATENCY_MS } from '../kernel/shim';
import { CausalEvent, EVENT_BYTES, EVENT_FLAG_THREAD, EVENT_OFF, EVENT_TYPE_EXIT } from '../kernel/events';
import { CausalRecord, newEventId, newRecord, newTraceId } from '../kernel/record';
import { CausewayError, PermissionError } from '../errors';
import { FieldRegistry } from '../actor/fields';
import { loadActor } from '../actor/load';
import type { Actor, ActorContext } from '../actor/types';
import { ActorHost, ActorStats } from './dispatch';
import { ChannelSweeper } from './channel-sweep';
import { EventsFile } from './events-file';
import { Operations, applyPatch } from './operations';
import { KernelPolicy } from './policy';
import { SdkServer } from './sdk-server';
import { RunEntry } from './registry';
import { AttachScope, AttachTarget, RESCAN_MS } from './attach';

const debug = createDebug('causeway:runtime');

/** Environment variables the command gets (read by causeway/sdk). */
export const SDK_SOCKET_ENV = 'CAUSEWAY_SDK_SOCKET';
export const ACTOR_LAYOUT_ENV = 'CAUSEWAY_ACTOR_LAYOUT';

export interface RunOptions {
  command: string;
  args: string[];
  /**
   * Follow what runs already instead of starting command (causeway attach):
   * until a signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT) or until the target is
   * gone; nothing of it is stopped or changed (see attach.ts).
   */
  attach?: AttachTarget;
  /** With attach: every adopted process takes record's trace id (default: a new trace each). */
  sharedTrace?: boolean;
  /** With attach: detach when this aborts (its reason says why) instead of on this process's signals (the agent's many attachments). */
  stop?: AbortSignal;
  /** Write events as JSON Lines to this file. */
  eventsFile?: string;
  /** The root process's record (default: a fresh sampled one). */
  record?: CausalRecord;
  /** Actors: built-in names or module paths with options ("accountant:tenant=3"), or actor objects. */
  actors?: (string | Actor)[];
  /** Events an actor may have waiting before more are dropped for it (default 65536). */
  actorQueue?: number;
  /** How long actors may take to catch up after the command ended (ms, default 5000). */
  actorDrainMs?: number;
  /** The fraction of traces minted on ingress that are sampled (default 1). */
  sampleRate?: number;
  /** Serve the in-process SDK (default true). */
  sdk?: boolean;
  /** Called with each batch of events, e.g. by a test. */
  onEvents?: (events: CausalEvent[]) => void;
  /**
   * Called with each batch as the kernel wrote it (whole struct cw_event,
   * EVENT_BYTES each; add clockOffset to a stamp for epoch ns): no
   * JavaScript object per event, for consumers that store or forward them.
   */
  onRawEvents?: (batch: Buffer, clockOffset: bigint) => void;
  /** Called once the command runs in the cgroup (or the target is followed), with the shim (to read or inject records). */
  onStart?: (ctx: { pid: number; shim: Shim; cgroup: RunScope }) => void;
  /** Called once the command has exited, before anything of the run is taken down (a benchmark reads the kernel's accounting of the shim's programs there). */
  onExit?: (status: number) => void;
  ringbufBytes?: number;
  /**
   * How late events may reach the runtime when the ring buffer is not filling
   * (ms): default 20 with actors or onEvents (they react), 100 when events are
   * only stored (-e FILE, the tracer).
   */
  eventLatencyMs?: number;
  /** Pipes, FIFOs and UNIX sockets followed at once (default 16384); past it, counted as channelMapFull. */
  maxChannels?: number;
  /** Networks trusted besides loopback (CIDR): records cross only within them. */
  trust?: string[];
  /** TCP option kind and ExID (defaults: 253, 0xc5a7). */
  optKind?: number;
  optExid?: number;
  /** Print the summary line to stderr (default true); drops are printed regardless. */
  summary?: boolean;
}

export interface RunResult {
  /** The shell-style status: the exit code, 128 + signal, or 127 if not found. */
  status: number;
  counters: Counters | null;
  events: number;
  killedLeftovers: number;
  /** Per actor: events delivered, dropped (queue full or drain deadline), hook failures. */
  actors: Record<string, ActorStats>;
  /** SDK attach requests served and refused. */
  sdk: { attached: number; refused: number };
  /** Events not written to the events file (a write failed: that one's and every later one). */
  eventsFileLost: number;
  /** causeway attach: what was followed, how many threads and processes that ran already were adopted, and why it ended. */
  attached?: { target: string; threads: number; processes: number; connections: number; ended: string };
}

/** Finds a command the way a shell does; null if there is none. */
export function resolveCommand(cmd: string): string | null {
  const candidates = cmd.includes('/')
    ? [cmd]
    : (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').map((d) => path.join(d || '.', cmd));
  for (const c of candidates) {
    try {
      const st = fs.statSync(c);
      if (st.isFile()) {
        fs.accessSync(c, fs.constants.X_OK);
        return c;
      }
    } catch {
      /* next */
    }
  }
  return null;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/** Loads actors and lays out their fields; throws before anything touches the kernel. */
export async function prepareActors(specs: (string | Actor)[]): Promise<{ actors: Actor[]; registry: FieldRegistry }> {
  const actors: Actor[] = [];
  for (const s of specs) actors.push(typeof s === 'string' ? await loadActor(s) : s);
  const registry = new FieldRegistry();
  const names = new Set<string>();
  for (const a of actors) {
    if (names.has(a.name)) throw new CausewayError(`two actors are named "${a.name}": each actor runs once per run`);
    names.add(a.name);
    registry.declare(a.name, a.fields ?? []);
  }
  registry.freeze();
  return { actors, registry };
}

/** Runs a command under the shim and returns its status; never leaves a cgroup or link behind. */
export async function run(opts: RunOptions): Promise<RunResult> {
  return new Runtime(opts).run();
}

export class Runtime {
  constructor(private readonly opts: RunOptions) {}

  async run(): Promise<RunResult> {
    const opts = this.opts;
    if (process.geteuid?.() !== 0) throw new PermissionError(opts.attach ? 'causeway attach' : 'causeway run');
    const result: RunResult = { status: 1, counters: null, events: 0, killedLeftovers: 0, actors: {}, sdk: { attached: 0, refused: 0 }, eventsFileLost: 0 };
    // The target first: a wrong one fails before anything loads.
    const target = opts.attach ? AttachScope.resolve(opts.attach) : null;
    if (!target && !resolveCommand(opts.command)) {
      process.stderr.write(`causeway: ${opts.command}: command not found\n`);
      return { ...result, status: 127 };
    }
    const { actors, registry } = await prepareActors(opts.actors ?? []);

    // Open the events file first: a bad path fails before anything starts.
    const sink = opts.eventsFile ? EventsFile.open(opts.eventsFile) : null;
    // A run: sweeps what dead runs left, registers this one, makes its cgroup below ours.
    const entry = target ? null : await RunEntry.create();
    const cgroup: RunScope = target ?? entry!.cgroup;
    let shim: Shim | null = null;
    let sdk: SdkServer | null = null;
    const hosts: ActorHost[] = [];
    const forwarders: [NodeJS.Signals, () => void][] = [];
    let sweepTimer: NodeJS.Timeout | undefined;
    let gate: Writable | null = null;
    try {
      shim = new Shim({
        cgroupPath: cgroup.dir,
        followTracked: target?.followTracked,
        trust: opts.trust,
        optKind: opts.optKind,
        optExid: opts.optExid,
        ringbufBytes: opts.ringbufBytes,
        maxChannels: opts.maxChannels,
        events: Boolean(opts.eventsFile || opts.onEvents || opts.onRawEvents || actors.length),
        // Consumers that only store (a file, the tracer) bear more latency, and fewer wake-ups cost less.
        eventLatencyMs: opts.eventLatencyMs ?? (opts.onEvents || actors.length ? EVENT_LATENCY_MS : STORE_LATENCY_MS),
      });
      // The SDK socket is found through the environment the command starts with: a run's only.
      if (entry && opts.sdk !== false) sdk = await SdkServer.listen(shim, entry.cgroup, entry.dir);

      const ops = new Operations(shim, cgroup, registry, opts.record ?? newRecord());
      const policy = new KernelPolicy(shim, opts.sampleRate);
      const counters = () => result.counters ?? shimRef.counters(); // the final ones once the shim is closed
      const shimRef = shim;
      for (const a of actors) hosts.push(new ActorHost(a, actorContext(a, ops, policy, registry, counters), opts.actorQueue ?? 65536));
      for (const h of hosts) await h.call('start');

      // Channels of dead pipes and sockets are deleted before the table fills.
      const sweeper = new ChannelSweeper(shim, cgroup, opts.maxChannels ?? 16384);
      sweepTimer = setInterval(() => {
        try {
          sweeper.maybeSweep();
        } catch (err) {
          debug('channel sweep failed: %s', (err as Error).message);
        }
      }, 1000);
      sweepTimer.unref();

      const sdkRef = sdk;
      const offset = shim.clockOffset;
      shim.on('raw', (batch: Buffer) => {
        result.events += batch.length / EVENT_BYTES;
        sink?.writeRaw(batch, offset); // formatted natively: no object per event
        opts.onRawEvents?.(batch, offset);
        if (sdkRef) for (const pid of processExits(batch)) sdkRef.release(pid);
      });
      // Decoded events only for those that need them.
      if (opts.onEvents || hosts.length)
        shim.on('events', (batch: CausalEvent[]) => {
          opts.onEvents?.(batch);
          for (const h of hosts) h.push(batch);
        });

      if (target) {
        target.bind(shim);
        result.attached = await follow(target, shim, ops, opts);
        result.status = 0;
      } else {
        // The wrapper waits on fd 3 until it is in the cgroup and holds its record, then execs (see WRAPPER).
        const env: NodeJS.ProcessEnv = { ...process.env, [ACTOR_LAYOUT_ENV]: registry.serialize() };
        if (sdk) env[SDK_SOCKET_ENV] = sdk.socketPath;
        const child = spawn('/bin/sh', ['-c', WRAPPER, opts.command, path.basename(cgroup.dir), ...opts.args], {
          stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
          env,
        });
        gate = child.stdio[3] as Writable;
        gate.on('error', () => {}); // the wrapper may be gone
        const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
        const pid = child.pid;
        if (pid === undefined) throw new CausewayError(`could not start ${opts.command}`);
        for (const sig of SIGNALS) {
          const f = () => {
            debug('forwarding %s', sig);
            try {
              process.kill(pid, sig);
            } catch {
              /* already gone */
            }
          };
          process.on(sig, f);
          forwarders.push([sig, f]);
        }
        // The record first, then the move: a wrapper in the cgroup holds its record.
        let started = false;
        try {
          shim.writeRecord(pid, ops.rootRecord);
          entry!.cgroup.add(pid);
          started = true;
        } catch (err) {
          if (!gone(pid)) throw err; // else: it died first (a forwarded signal); its status says how
        }
        if (started) {
          ops.rootPid = pid;
          opts.onStart?.({ pid, shim, cgroup });
        }
        gate.destroy(); // the go: EOF on fd 3

        const [code, signal] = await exited;
        result.status = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
        debug('%s exited: code %s signal %s', opts.command, code, signal);
        opts.onExit?.(result.status);
      }
    } finally {
      if (sweepTimer) clearInterval(sweepTimer);
      for (const [sig, f] of forwarders) process.off(sig, f);
      // Leftover processes are killed first, so that nothing runs untracked.
      let cgroupGone = true;
      if (entry)
        result.killedLeftovers = await entry.cgroup.destroy().catch((err) => {
          process.stderr.write(`causeway: ${(err as Error).message}\n`);
          cgroupGone = false;
          return 0;
        });
      gate?.destroy(); // after the kill: a wrapper that was never started does not start now
      // The SDK's slot maps go while the shim that holds them is still there.
      if (sdk) {
        result.sdk = { attached: sdk.attached, refused: sdk.refused };
        await sdk.close().catch((err) => process.stderr.write(`causeway: closing the SDK socket: ${(err as Error).message}\n`));
      }
      // Nothing of the run is left to sweep (unless its cgroup would not go: a later run retries).
      entry?.release(!cgroupGone);
      if (shim) {
        try {
          result.counters = await shim.close();
        } finally {
          // Actors catch up on the last events, then stop.
          const deadline = Date.now() + (opts.actorDrainMs ?? 5000);
          for (const h of hosts) await h.drain(deadline);
          for (const h of hosts) await h.call('stop');
          for (const h of hosts) result.actors[h.actor.name] = h.stats;
        }
      }
      if (sink) {
        await sink.close();
        result.eventsFileLost = sink.lost;
      }
      if (opts.summary !== false || dropped(result)) process.stderr.write(summaryLine(result) + '\n');
    }
    return result;
  }
}

/**
 * The command's wrapper: sh -c WRAPPER COMMAND CGROUP-NAME ARGS... It never
 * stops itself and never runs the command outside the run. It blocks reading
 * fd 3 until EOF: causeway closes its end once the wrapper holds its record
 * and is in the cgroup, and the kernel closes it if causeway dies first. So
 * the wrapper checks where it is: in the run's cgroup it execs the command
 * (fd 3 closed); anywhere else causeway is gone, and it exits 125. (No "go"
 * bytes: a read of bytes by the tracked wrapper would show in the trace as an
 * ingress into the run; a read of EOF is not a transfer and the shim ignores it.)
 */
const WRAPPER = [
  'read -r _ <&3',
  'exec 3<&-',
  'in=',
  'while IFS= read -r l; do case $l in 0::*/"$1") in=1 ;; esac; done </proc/self/cgroup',
  'if [ -z "$in" ]; then echo "causeway: not starting $0: its run was not set up (causeway failed or was killed first)" >&2; exit 125; fi',
  'shift',
  'exec "$0" "$@"',
].join('\n');

/**
 * causeway attach: adopts the threads the target runs already, then keeps
 * adopting what moves into it (checked every RESCAN_MS), until a signal or
 * until the target is gone. Each process adopted gets a root record like the
 * run's (priority, actors' fields), sampled at the run's rate, with a trace
 * of its own unless one was given.
 */
async function follow(target: AttachScope, shim: Shim, ops: Operations, opts: RunOptions): Promise<NonNullable<RunResult['attached']>> {
  const rate = opts.sampleRate ?? 1;
  const recordFor = (): CausalRecord => {
    const root = ops.rootRecord; // as the actors' start hooks left it
    return { ...root, traceId: opts.sharedTrace ? root.traceId : newTraceId(), eventId: newEventId(), sampled: root.sampled && Math.random() < rate };
  };
  let ended = '';
  let connections = 0;
  let tcpRefused = false;
  let wake = () => {};
  const stop = (why: string) => {
    ended ||= why;
    wake();
  };
  const handlers = opts.stop ? [] : SIGNALS.map((sig) => [sig, () => stop(`${sig}`)] as const);
  for (const [sig, f] of handlers) process.on(sig, f);
  const onAbort = () => stop(String(opts.stop?.reason ?? 'stopped'));
  opts.stop?.addEventListener('abort', onAbort, { once: true });
  if (opts.stop?.aborted) onAbort();
  try {
    target.adopt(recordFor);
    const existingTcp = () => {
      try {
        connections += target.enableExistingTcp();
      } catch (err) {
        if (!tcpRefused) process.stderr.write(`causeway: TCP connections opened before the attach carry no record: ${(err as Error).message}\n`);
        tcpRefused = true;
      }
    };
    existingTcp();
    if (opts.summary !== false)
      process.stderr.write(
        `causeway: following ${target.label}: adopted ${target.adopted.threads} running thread(s) of ${target.adopted.processes} process(es) and ${connections} open TCP connection(s); SIGINT or SIGTERM detaches\n`,
      );
    opts.onStart?.({ pid: 0, shim, cgroup: target });
    while (!ended) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, RESCAN_MS);
      });
      if (ended) break;
      const why = target.gone();
      if (why) stop(why);
      else if (target.adopt(recordFor) > 0 && !tcpRefused) existingTcp(); // processes moved in may bring connections
    }
  } finally {
    for (const [sig, f] of handlers) process.off(sig, f);
    opts.stop?.removeEventListener('abort', onAbort);
  }
  return { target: target.label, threads: target.adopted.threads, processes: target.adopted.processes, connections, ended };
}

/** The pids of the processes (not threads) whose exit is in a raw batch. */
function* processExits(batch: Buffer): Generator<number> {
  for (let off = 0; off + EVENT_BYTES <= batch.length; off += EVENT_BYTES)
    if (batch[off + EVENT_OFF.type] === EVENT_TYPE_EXIT && !(batch[off + EVENT_OFF.flags] & EVENT_FLAG_THREAD)) yield batch.readUInt32LE(off + EVENT_OFF.pid);
}

/** True if process pid has exited (a zombie, or reaped). */
function gone(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  // "pid (comm) S ...": the state follows the last ')'.
  const state = stat.charAt(stat.lastIndexOf(')') + 2);
  return state === 'Z' || state === 'X';
}

function actorContext(a: Actor, ops: Operations, policy: KernelPolicy, registry: FieldRegistry, counters: () => Counters): ActorContext {
  const name = a.name;
  return {
    actor: name,
    get rootPid() {
      return ops.rootPid;
    },
    inject: (t, init) => ops.inject(name, t, init),
    read: (t) => ops.read(t),
    write: (t, p) => ops.write(name, t, p),
    destroy: (t) => ops.destroy(t),
    fields: (rec) => registry.read(rec.actor, name),
    withFields: (rec, values) => applyPatch(rec, { fields: values }, registry, name),
    policy: policy.forActor(name),
    counters,
    log: (m) => process.stderr.write(`causeway: ${name}: ${m}\n`),
  };
}

/** True if anything was lost: a shim drop counter, an actor's dropped events, or events the events file did not get. */
export function dropped(r: Pick<RunResult, 'counters' | 'actors' | 'eventsFileLost'>): boolean {
  const c = r.counters;
  return (
    (c !== null && DROP_COUNTERS.some((k) => c[k] > 0)) ||
    Object.values(r.actors ?? {}).some((s) => s.dropped > 0 || s.errors > 0) ||
    r.eventsFileLost > 0
  );
}

/** The end-of-run summary: counts, and every drop by name. */
export function summaryLine(s: RunResult): string {
  const c = s.counters;
  if (!c) return 'causeway: the shim was not loaded';
  const drops = DROP_COUNTERS.filter((k) => c[k] > 0).map((k) => `${k}=${c[k]}`);
  if (s.eventsFileLost) drops.push(`eventsFileLost=${s.eventsFileLost}`);
  let line = `causeway: ${s.events} events, ${c.sends} sends and ${c.recvs} receives carried records, `;
  line += drops.length ? `DROPS: ${drops.join(' ')}` : '0 dropped';
  const net = (['tcpOptionsWritten', 'tcpOptionsReceived', 'tcpOptionUntrustedOut', 'tcpOptionUntrustedIn', 'tcpOptionMalformed', 'tcpOptionDuplicate', 'tcpOptionBadAck', 'tcpOptionStale', 'tcpOptionStripped', 'unfollowedSends', 'minted', 'sdkSyncs', 'sdkInvalid', 'writersRaced'] as const)
    .filter((k) => c[k] > 0)
    .map((k) => `${k}=${c[k]}`);
  if (net.length) line += `; ${net.join(' ')}`;
  for (const [name, a] of Object.entries(s.actors ?? {})) {
    line += `; actor ${name}: ${a.delivered} delivered`;
    if (a.dropped) line += `, DROPPED ${a.dropped}`;
    if (a.errors) line += `, ${a.errors} hook failure(s)`;
  }
  if (s.killedLeftovers) line += `; killed ${s.killedLeftovers} leftover process(es)`;
  if (s.attached) line += `; detached from ${s.attached.target} (${s.attached.ended}); adopted ${s.attached.threads} running thread(s) of ${s.attached.processes} process(es) and ${s.attached.connections} open TCP connection(s)`;
  return line;
}
