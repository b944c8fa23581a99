/**
 * `causeway attach`: following what runs already. A target (a cgroup, a
 * systemd unit, a container, a process and its descendants) becomes a scope:
 * the cgroup the socket programs attach to, which processes are part of the
 * run, the threads that run already (adopted: each process gets a root record
 * of its own, which its threads hold until they read a record or act), and
 * how to tell that the target is gone. Nothing here changes a process: no
 * cgroup move, no signal, no byte; detaching frees only the shim's own state.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import createDebug from 'debug';
import { cgroupOf, readIds, requireMount, RunScope, subtree } from '../kernel/cgroup';
import type { Shim } from '../kernel/shim';
import type { CausalRecord } from '../kernel/record';
import { CausewayError } from '../errors';

const debug = createDebug('causeway:attach');

export type AttachTarget = { cgroup: string } | { pid: number } | { unit: string } | { container: string };

/** How often the target is checked for processes moved into it, and for being gone (ms). */
export const RESCAN_MS = 500;

/** A thread's start time in clock ticks after boot (/proc/TID/stat field 22); null if it is gone. */
export function startTicks(tid: number): number | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${tid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) S ppid ...": fields from 3 on follow the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(fields[22 - 3]);
  return Number.isFinite(v) ? v : null;
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** The threads of process pid now ([] if it is gone). */
function threadsOf(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return [];
  }
}

/** pid and its descendants now, from the kernel's children lists. */
function processTree(root: number): number[] {
  const out = [root];
  const seen = new Set(out);
  for (let i = 0; i < out.length; i++)
    for (const tid of threadsOf(out[i])) {
      let kids: string;
      try {
        kids = fs.readFileSync(`/proc/${out[i]}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(' ').filter(Boolean).map(Number))
        if (!seen.has(k)) {
          seen.add(k);
          out.push(k);
        }
    }
  return out;
}

/** pid, its parent, its parent's parent, ... up to the first process of its pid namespace. */
function ancestors(pid: number): number[] {
  const out: number[] = [];
  for (let p = pid; p > 0 && out.length < 4096; ) {
    out.push(p);
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      break;
    }
    p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }
  return out;
}

export interface AdoptStats {
  threads: number;
  processes: number;
}

/** A target, resolved: see the file's comment. */
export class AttachScope implements RunScope {
  /** Threads and processes adopted so far (not those followed from a fork). */
  readonly adopted: AdoptStats = { threads: 0, processes: 0 };
  private shim: Shim | null = null;

  private constructor(
    /** The cgroup v2 directory the socket programs attach to. */
    readonly dir: string,
    /** What it is, for messages and the trace store: "cgroup /x", "process 12 (nginx)", ... */
    readonly label: string,
    /** Process mode: the root process (and its start time); the shim follows its descendants wherever they live. */
    private readonly root: { pid: number; start: number } | null,
  ) {}

  /** Follow forks wherever they go (process mode) instead of inside dir only. */
  get followTracked(): boolean {
    return this.root !== null;
  }

  /** Resolves a target; throws a CausewayError that says what is wrong and what to do. */
  static resolve(target: AttachTarget): AttachScope {
    if ('cgroup' in target) return AttachScope.cgroup(target.cgroup, `cgroup ${target.cgroup}`);
    if ('unit' in target) return AttachScope.unit(target.unit);
    if ('container' in target) return AttachScope.container(target.container);
    return AttachScope.process(target.pid, undefined);
  }

  private static cgroup(given: string, label: string): AttachScope {
    const mount = requireMount();
    // A directory under the mount, or a path as /proc/PID/cgroup and systemd print it.
    const dir = path.isAbsolute(given) && (given === mount || given.startsWith(mount + '/')) ? path.resolve(given) : path.resolve(mount, '.' + path.posix.join('/', given));
    if (!fs.existsSync(path.join(dir, 'cgroup.procs')))
      throw new CausewayError(`no cgroup ${given} (looked for ${dir}/cgroup.procs under the cgroup v2 mount ${mount}): give a directory under ${mount} or a path as /proc/PID/cgroup shows it ("0::/PATH")`);
    if (dir === path.resolve(mount))
      throw new CausewayError(`${given} is the root cgroup: every process on the machine lives there or below; attach to a service's cgroup, or to a process tree with --pid`);
    const own = cgroupOf(process.pid, mount);
    if (own && (own === dir || own.startsWith(dir + '/')))
      throw new CausewayError(`causeway itself runs in ${given}: it would follow its own reads and writes; run causeway from another cgroup`);
    return new AttachScope(dir, label, null);
  }

  private static process(pid: number, label: string | undefined): AttachScope {
    if (!Number.isInteger(pid) || pid <= 0) throw new CausewayError(`not a process id: ${pid}`);
    const start = startTicks(pid);
    if (start === null || !fs.existsSync(`/proc/${pid}/task`)) throw new CausewayError(`no process ${pid}`);
    if (fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Tgid:\s+(\d+)/m)?.[1] !== String(pid))
      throw new CausewayError(`${pid} is a thread of process ${fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Tgid:\s+(\d+)/m)?.[1]}: give the process id`);
    if (ancestors(process.pid).includes(pid))
      throw new CausewayError(`process ${pid} is causeway itself or one of its ancestors: causeway would follow its own reads and writes`);
    const dir = cgroupOf(pid);
    if (!dir) throw new CausewayError(`process ${pid}'s cgroup v2 directory is not visible here (another cgroup namespace?): attach from the host's`);
    return new AttachScope(dir, label ?? `process ${pid} (${comm(pid)})`, { pid, start });
  }

  private static unit(name: string): AttachScope {
    if (!/^[\w@.:\\-]+$/.test(name)) throw new CausewayError(`not a systemd unit name: ${JSON.stringify(name)}`);
    if (!fs.existsSync('/run/systemd/system'))
      throw new CausewayError(`systemd is not running here (no /run/systemd/system), so there is no unit ${name}: attach to its cgroup with --cgroup or to its main process with --pid`);
    const unit = name.includes('.') ? name : `${name}.service`;
    let cg: string;
    try {
      cg = execFileSync('systemctl', ['show', '--property=ControlGroup', '--value', unit], { encoding: 'utf8', timeout: 10_000 }).trim();
    } catch (err) {
      throw new CausewayError(`systemctl show ${unit} failed: ${(err as Error).message}`);
    }
    if (!cg) throw new CausewayError(`unit ${unit} has no cgroup: it is not running (systemctl status ${unit})`);
    return AttachScope.cgroup(cg, `unit ${unit}`);
  }

  private static container(name: string): AttachScope {
    if (!/^[\w][\w.-]*$/.test(name)) throw new CausewayError(`not a container name or id: ${JSON.stringify(name)}`);
    const tried: string[] = [];
    for (const tool of ['podman', 'docker']) {
      let out: string;
      try {
        out = execFileSync(tool, ['inspect', '--type', 'container', '--format', '{{.State.Pid}}', name], { encoding: 'utf8', timeout: 15_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { stderr?: string };
        tried.push(`${tool}: ${e.code === 'ENOENT' ? 'not installed' : (e.stderr || e.message).toString().trim().split('\n')[0]}`);
        continue;
      }
      const pid = Number(out);
      if (!Number.isInteger(pid) || pid <= 0) throw new CausewayError(`container ${name} is not running (${tool} inspect gives pid ${out})`);
      // Its own cgroup when the runtime made one; else its process tree.
      const dir = cgroupOf(pid);
      const parent = ancestors(pid)[1];
      const shared = !dir || dir === path.resolve(requireMount()) || (parent !== undefined && cgroupOf(parent) === dir);
      debug('container %s: pid %d, cgroup %s%s', name, pid, dir, shared ? ' (shared: following its process tree)' : '');
      if (shared) return AttachScope.process(pid, `container ${name}`);
      return AttachScope.cgroup(dir, `container ${name}`);
    }
    throw new CausewayError(`no container ${name}: ${tried.join('; ')}`);
  }

  /** The shim that follows the target (process mode asks it which processes are part of the run). */
  bind(shim: Shim): void {
    this.shim = shim;
  }

  contains(pid: number): boolean {
    if (this.root) return this.followed(pid);
    for (const d of subtree(this.dir)) if (readIds(d, 'cgroup.procs').includes(pid) || readIds(d, 'cgroup.threads').includes(pid)) return true;
    return false;
  }

  pids(): number[] {
    if (this.root) {
      const all = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
      return all.filter((p) => this.followed(p));
    }
    return subtree(this.dir).flatMap((d) => readIds(d, 'cgroup.procs'));
  }

  private followed(tid: number): boolean {
    try {
      return this.shim?.readRecord(tid) != null;
    } catch {
      return false;
    }
  }

  /** The target's processes now: the cgroup's, or the root process's tree. */
  private candidates(): number[] {
    if (this.root) return startTicks(this.root.pid) === this.root.start ? processTree(this.root.pid) : [];
    return subtree(this.dir).flatMap((d) => readIds(d, 'cgroup.procs'));
  }

  /**
   * Follows every thread of the target that is not followed yet; recordFor
   * gives each process its root record. Returns the threads adopted in this
   * pass (0 once the target is stable).
   */
  adopt(recordFor: (pid: number) => CausalRecord): number {
    const shim = this.shim;
    if (!shim) throw new Error('bind() the shim first');
    let n = 0;
    for (const pid of this.candidates()) {
      if (pid <= 0) continue; // a process of another pid namespace
      let rec: CausalRecord | null = null;
      let any = false;
      for (const tid of threadsOf(pid)) {
        const start = startTicks(tid);
        if (start === null) continue;
        rec ??= recordFor(pid);
        if (shim.adoptThread(tid, rec, start) === 'adopted') {
          n++;
          any = true;
        }
      }
      if (any) this.adopted.processes++;
    }
    this.adopted.threads += n;
    return n;
  }

  /**
   * Switches the TCP option on for the connections the target opened before
   * the attach (they never passed the callback where it is switched on), in
   * each network namespace its processes live in. Not for a process tree in
   * the root cgroup: that would be every connection of the machine. Returns
   * how many; 0 where the kernel cannot (before 6.10), said once by the caller.
   */
  enableExistingTcp(): number {
    const shim = this.shim;
    if (!shim) throw new Error('bind() the shim first');
    const mount = requireMount();
    const rel = path.relative(mount, this.dir);
    if (rel === '') return 0;
    const id = fs.statSync(this.dir, { bigint: true }).ino; // kernfs node id == cgroup id
    const netns = new Map<bigint, string>();
    for (const pid of this.candidates()) {
      const p = `/proc/${pid}/ns/net`;
      try {
        const ino = fs.statSync(p, { bigint: true }).ino;
        if (!netns.has(ino)) netns.set(ino, p);
      } catch {
        /* exited */
      }
    }
    return shim.enableExistingTcp(id, rel.split(path.sep).length, [...netns.values()]);
  }

  /** Why the target is gone, or null while it is there. */
  gone(): string | null {
    if (this.root) return startTicks(this.root.pid) === this.root.start ? null : `process ${this.root.pid} exited`;
    return fs.existsSync(path.join(this.dir, 'cgroup.procs')) ? null : `its cgroup ${this.dir} was removed`;
  }
}
