/**
 * `causeway run`: a command in its own cgroup, with the shim scoped to it.
 *
 * Order matters: the shim is attached before the command starts, the root
 * record is written before the command's first instruction, and everything
 * made here (cgroup, programs, links) is gone before run() returns.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import createDebug from 'debug';
import { RunCgroup } from './cgroup';
import { Counters, DROP_COUNTERS, Shim } from './shim';
import { CausalEvent, eventToJson } from './events';
import { CausalRecord, newRecord } from './record';
import { CausewayError, PermissionError } from './errors';

const debug = createDebug('causeway:run');

export interface RunOptions {
  command: string;
  args: string[];
  /** Write events as JSON Lines to this file. */
  eventsFile?: string;
  /** The root process's record (default: a fresh sampled one). */
  record?: CausalRecord;
  /** Called with each batch of events, e.g. by a test or an actor. */
  onEvents?: (events: CausalEvent[]) => void;
  /** Called once the command runs in the cgroup, with the shim (to read or inject records). */
  onStart?: (ctx: { pid: number; shim: Shim; cgroup: RunCgroup }) => void;
  ringbufBytes?: number;
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

/** Runs a command under the shim and returns its status; never leaves a cgroup or link behind. */
export async function run(opts: RunOptions): Promise<RunResult> {
  if (process.geteuid?.() !== 0) throw new PermissionError('causeway run');
  if (!resolveCommand(opts.command)) {
    process.stderr.write(`causeway: ${opts.command}: command not found\n`);
    return { status: 127, counters: null, events: 0, killedLeftovers: 0 };
  }

  // Open the events file first: a bad path fails before anything starts.
  let sinkFd: number | undefined;
  if (opts.eventsFile) {
    try {
      sinkFd = fs.openSync(opts.eventsFile, 'w');
    } catch (err) {
      throw new CausewayError(`cannot write events to ${opts.eventsFile}: ${(err as Error).message}`);
    }
  }
  const cgroup = RunCgroup.create();
  const result: RunResult = { status: 1, counters: null, events: 0, killedLeftovers: 0 };
  let shim: Shim | null = null;
  let sink: fs.WriteStream | null = null;
  const forwarders: [NodeJS.Signals, () => void][] = [];
  try {
    shim = new Shim({
      cgroupId: cgroup.id,
      cgroupLevel: cgroup.level,
      cgroupPath: cgroup.dir,
      trust: opts.trust,
      optKind: opts.optKind,
      optExid: opts.optExid,
      ringbufBytes: opts.ringbufBytes,
      events: Boolean(opts.eventsFile || opts.onEvents),
    });
    if (sinkFd !== undefined) {
      sink = fs.createWriteStream('', { fd: sinkFd });
      sink.on('error', (err) => process.stderr.write(`causeway: writing events: ${err.message}\n`));
    }
    shim.on('events', (batch: CausalEvent[]) => {
      result.events += batch.length;
      if (sink) sink.write(batch.map((e) => JSON.stringify(eventToJson(e))).join('\n') + '\n');
      opts.onEvents?.(batch);
    });

    // The wrapper waits on fd 3 until it is in the cgroup and holds its record, then execs.
    const child = spawn('/bin/sh', ['-c', 'read _ <&3; exec 3<&-; exec "$0" "$@"', opts.command, ...opts.args], {
      stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    });
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
    cgroup.add(pid);
    shim.writeRecord(pid, opts.record ?? newRecord());
    opts.onStart?.({ pid, shim, cgroup });
    const gate = child.stdio[3] as NodeJS.WritableStream;
    gate.on('error', () => {}); // the child may die before reading it
    gate.end('\n');

    const [code, signal] = await exited;
    result.status = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
    debug('%s exited: code %s signal %s', opts.command, code, signal);
  } finally {
    for (const [sig, f] of forwarders) process.off(sig, f);
    // Leftover processes are killed first, so that nothing runs untracked.
    result.killedLeftovers = await cgroup.destroy().catch((err) => {
      process.stderr.write(`causeway: ${(err as Error).message}\n`);
      return 0;
    });
    if (shim) result.counters = await shim.close();
    if (sink) {
      sink.end();
      await once(sink, 'close');
    }
    if (opts.summary !== false || dropped(result.counters)) process.stderr.write(summaryLine(result) + '\n');
  }
  return result;
}

/** True if any drop counter is non-zero. */
export function dropped(c: Counters | null): boolean {
  return c !== null && DROP_COUNTERS.some((k) => c[k] > 0);
}

/** The end-of-run summary: counts, and every drop by name. */
export function summaryLine(s: RunResult): string {
  const c = s.counters;
  if (!c) return 'causeway: the shim was not loaded';
  const drops = DROP_COUNTERS.filter((k) => c[k] > 0).map((k) => `${k}=${c[k]}`);
  let line = `causeway: ${s.events} events, ${c.sends} sends and ${c.recvs} receives carried records, `;
  line += drops.length ? `DROPS: ${drops.join(' ')}` : '0 dropped';
  const net = (['tcpOptionsWritten', 'tcpOptionsReceived', 'tcpOptionUntrustedOut', 'tcpOptionUntrustedIn', 'tcpOptionMalformed', 'tcpOptionStale', 'unfollowedSends'] as const)
    .filter((k) => c[k] > 0)
    .map((k) => `${k}=${c[k]}`);
  if (net.length) line += `; ${net.join(' ')}`;
  if (s.killedLeftovers) line += `; killed ${s.killedLeftovers} leftover process(es)`;
  return line;
}

