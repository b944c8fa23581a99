/**
 * The actor API: what a meta-application (tracer, scheduler, accountant)
 * implements, and what the runtime gives it. An actor is a plain object;
 * every member is optional except its name.
 *
 * Hooks run after the fact, in user space, on batches of events from the
 * kernel; they never hold up the traced programs. What must happen at once
 * (the join rule, minting records on ingress, stripping on egress) is
 * kernel-side policy that an actor sets through ctx.policy, usually in start().
 */
import type { CausalEvent, Channel } from '../kernel/events';
import type { CausalRecord } from '../kernel/record';
import type { Counters } from '../kernel/shim';
import type { FieldDecl, FieldValue } from './fields';

export type HookName = 'fork' | 'exec' | 'exit' | 'send' | 'recv' | 'join' | 'ingress';
export const HOOK_NAMES: readonly HookName[] = ['fork', 'exec', 'exit', 'send', 'recv', 'join', 'ingress'];

export type Hook = (event: CausalEvent, ctx: ActorContext) => void | Promise<void>;

export interface Actor {
  /** Unique within a run; names its fields, its counters and its errors. */
  name: string;
  /** Typed fields this actor keeps in the record's actor area (laid out by the runtime). */
  fields?: FieldDecl[];
  /** Before the command starts: set policy, set the root record's fields. */
  start?(ctx: ActorContext): void | Promise<void>;
  /** After the command ended and every event was delivered. */
  stop?(ctx: ActorContext): void | Promise<void>;
  /** Every event, in batches, before the per-type hooks. */
  events?(batch: CausalEvent[], ctx: ActorContext): void | Promise<void>;
  fork?: Hook;
  exec?: Hook;
  exit?: Hook;
  send?: Hook;
  recv?: Hook;
  join?: Hook;
  /** A tracked thread read bytes that carried no record (reported once per channel). */
  ingress?: Hook;
}

/** A module's export may be an actor, or a factory that takes the options given on the command line. */
export type ActorFactory = (options: Record<string, unknown>) => Actor | Promise<Actor>;

/**
 * What an operation acts on:
 * - 'root': the command's first process (before it starts, in start(): its initial record);
 * - { tid }: one thread; { pid }: every thread of a process;
 * - { pid, fd }: the channel that process reads through fd (a pipe, FIFO or TCP socket);
 * - { pipe: { ino, dev } } or { tcp: { from, to } } ("addr:port", IPv6 as "[addr]:port"):
 *   a channel, as named in events (see channelTarget()).
 * A channel's record is the one its pending (written, unread) bytes carry.
 */
export type Target =
  | 'root'
  | { tid: number }
  | { pid: number; fd?: number }
  | { pipe: { ino: number; dev: string } }
  | { tcp: { from: string; to: string } };

/** Changes to a record; fields are the calling actor's own, by name. */
export interface RecordPatch {
  priority?: number;
  sampled?: boolean;
  traceId?: string;
  fields?: Record<string, FieldValue>;
}

export type JoinRule = 'last' | 'first' | 'priority';

/** Kernel-side policy: takes effect at once, for every thread of the run. */
export interface PolicyApi {
  /** Which record a read that spans several adopts (default 'last'). */
  joinRule(rule: JoinRule): void;
  /** Bytes with no record arriving on these local TCP ports get a new trace, one per connection. */
  mintOnIngress(opts: { ports: number[]; sampled?: boolean; priority?: number; sampleRate?: number }): void;
  /** No record is written towards these remote TCP ports (the TCP option is left out). */
  stripOnEgress(opts: { ports: number[] }): void;
  /**
   * CPU and egress priority follow the record: from now on, within tens of
   * microseconds of a thread of the run coming to hold a record of priority p
   * (a read, an SDK change, a record written by an actor; children keep it),
   * it runs at nice[p] ('own': the nice it had before the scheduler touched
   * it), and its TCP packets leave with SO_PRIORITY socketPriority[p] (null:
   * unchanged). Both tables have 256 entries. Threads get their own nice back
   * when they hold a record that maps to 'own', and at the end of the run.
   */
  schedule(opts: { nice: (number | 'own')[]; socketPriority: (number | null)[] }): Scheduling;
}

/** A running schedule(): its figures so far, and the end of it. */
export interface Scheduling {
  stats(): SchedulingStats;
  /** Stops renicing and gives every thread still reniced its own nice back. */
  stop(): SchedulingStats;
}

export interface SchedulingStats {
  /** Priority changes reported (by the kernel at once, or by user space writing a record). */
  changes: number;
  /** Nice values changed. */
  reniced: number;
  /** Threads the scheduler reniced at some point. */
  threads: number;
  /** Threads that had exited when reniced; other failures. */
  gone: number;
  failed: number;
  /** Threads given their own nice back while waiting in a blocking accept() (serving no one). */
  idled: number;
  /** Threads reniced ahead of their read: a record arrived on the TCP connection they read last. */
  arrivals: number;
  /** At the end: threads given their own nice back; tids that had become other threads (left alone). */
  restored: number;
  reused: number;
  /** Priority changes the kernel could not report (its ring buffer was full): those threads kept their nice. */
  lost: number;
  /** Whether the reactor thread ran SCHED_FIFO (else nice -20). */
  realtime: boolean;
  /** From the kernel's report of a change to the new nice in effect, in ns, per change (a sample). */
  latencyNs: number[];
}

export interface ActorContext {
  /** The actor this context belongs to. */
  readonly actor: string;
  /** The command's first process, once it started. */
  readonly rootPid: number | undefined;
  /** Causeway's four operations. Each throws a TargetError for a target that does not exist or is outside the run. */
  inject(target: Target, init?: RecordPatch): CausalRecord;
  read(target: Target): CausalRecord | null;
  write(target: Target, patch: RecordPatch): void;
  destroy(target: Target): void;
  /** This actor's fields in a record (all of them, by name). */
  fields(record: CausalRecord): Record<string, FieldValue>;
  /** A copy of record with some of this actor's fields changed; other bytes untouched. */
  withFields(record: CausalRecord, values: Record<string, FieldValue>): CausalRecord;
  readonly policy: PolicyApi;
  /** The shim's counters now. */
  counters(): Counters;
  /** A line on stderr, prefixed with the actor's name. */
  log(message: string): void;
}

/** The target for the channel an event moved bytes through, in the direction of those bytes. */
export function channelTarget(event: CausalEvent): Target | null {
  const c: Channel | null = event.channel;
  if (!c) return null;
  if (c.kind === 'pipe' || c.kind === 'fifo') return { pipe: { ino: c.ino, dev: c.dev } };
  if (c.kind === 'tcp') {
    const local = hostPort(c.local, c.localPort);
    const remote = hostPort(c.remote, c.remotePort);
    const sent = event.type === 'send';
    return { tcp: sent ? { from: local, to: remote } : { from: remote, to: local } };
  }
  return null;
}

function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}
