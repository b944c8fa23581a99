/**
 * The run's cgroup v2 directory: where the traced command lives, what scopes
 * the shim, and what is removed afterwards. It is made below the caller's own
 * cgroup (as `systemd-run --scope` does), so that the limits of the caller's
 * unit or container keep applying to the command. Works on pure v2 hosts
 * (/sys/fs/cgroup) and hybrid ones (/sys/fs/cgroup/unified).
 */
import fs from 'node:fs';
import path from 'node:path';
import createDebug from 'debug';
import { CausewayError, PermissionError } from '../errors';

const debug = createDebug('causeway:cgroup');

/** What a user can do when the run's cgroup cannot be made where causeway runs. */
const WHERE_TO_RUN =
  'run causeway from a cgroup where it may create child cgroups, for example `systemd-run --scope -p Delegate=yes causeway run ...`';

/** The name of a run's cgroup directory: causeway- and 12 hex digits. */
export const RUN_CGROUP_NAME = /^causeway-[0-9a-f]{12}$/;

/** cgroup2's filesystem magic (statfs f_type). */
const CGROUP2_SUPER_MAGIC = 0x63677270;

/**
 * Where cgroup v2 is mounted, from /proc/self/mountinfo; null if it is not.
 * The last mount that is still reachable wins: inside a container a fresh
 * cgroup2 mount at /sys/fs/cgroup hides the ones listed before it.
 */
export function cgroup2Mount(): string | null {
  let info: string;
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  const points: string[] = [];
  for (const line of info.split('\n')) {
    // "... mount-point options - fstype source super-options"
    const [pre, post] = line.split(' - ');
    if (!post || post.split(' ')[0] !== 'cgroup2') continue;
    const point = pre.split(' ')[4];
    if (point) points.push(point.replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))));
  }
  for (const point of points.reverse()) {
    try {
      if (Number(fs.statfsSync(point).type) === CGROUP2_SUPER_MAGIC) return point;
    } catch {
      /* hidden or gone: the next one */
    }
  }
  return null;
}

/** True if dir is strictly below mount. */
export function below(mount: string, dir: string): boolean {
  const r = path.relative(mount, dir);
  return r !== '' && !r.startsWith('..') && !path.isAbsolute(r);
}

export function requireMount(): string {
  const mount = cgroup2Mount();
  if (!mount)
    throw new CausewayError('no cgroup v2 hierarchy is mounted: mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`');
  return mount;
}

/**
 * This process's own cgroup v2 directory: the "0::PATH" line of
 * /proc/self/cgroup below the mount. Throws if that directory is not this
 * process's cgroup (a cgroup namespace, or a mount of another part of the
 * hierarchy), checked by finding this process in its cgroup.procs.
 */
export function ownCgroup(mount: string = requireMount()): string {
  let line: string | undefined;
  try {
    line = fs
      .readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
  } catch {
    /* no /proc: below */
  }
  if (line === undefined) throw new CausewayError(`this process is in no cgroup v2 hierarchy (/proc/self/cgroup has no "0::" line): ${WHERE_TO_RUN}`);
  const rel = line.slice(3);
  const dir = path.resolve(mount, '.' + rel);
  const inside = rel.startsWith('/') && !rel.split('/').includes('..') && (dir === path.resolve(mount) || below(mount, dir));
  // A threaded cgroup lists threads, not processes: this process's main thread has its pid.
  if (!inside || !(readIds(dir, 'cgroup.procs').includes(process.pid) || readIds(dir, 'cgroup.threads').includes(process.pid)))
    throw new CausewayError(
      `this process's cgroup ${rel} is not visible under the cgroup v2 mount ${mount} (a cgroup namespace, or a mount of another part of the hierarchy): ${WHERE_TO_RUN}`,
    );
  return dir;
}

/** What a run follows, as the runtime asks it: which processes are part of it, and the cgroup its socket programs attach to. */
export interface RunScope {
  readonly dir: string;
  /** True if process (or thread) pid is part of the run now. */
  contains(pid: number): boolean;
  /** The run's processes now. */
  pids(): number[];
}

/**
 * The cgroup v2 directory of process pid (its "0::" line of /proc/PID/cgroup),
 * or null if it has none or it is not visible under mount.
 */
export function cgroupOf(pid: number, mount: string = requireMount()): string | null {
  let line: string | undefined;
  try {
    line = fs
      .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
  } catch {
    return null;
  }
  if (line === undefined) return null;
  const rel = line.slice(3);
  if (!rel.startsWith('/') || rel.split('/').includes('..')) return null; // "/../x": outside this process's cgroup namespace
  const dir = path.resolve(mount, '.' + rel);
  return fs.existsSync(path.join(dir, 'cgroup.procs')) ? dir : null;
}

/** One run's cgroup. */
export class RunCgroup implements RunScope {
  readonly dir: string;
  readonly id: bigint;
  /** Depth below the cgroup v2 root, as bpf_get_current_ancestor_cgroup_id counts. */
  readonly level: number;

  private constructor(dir: string, id: bigint, level: number) {
    this.dir = dir;
    this.id = id;
    this.level = level;
  }

  /** Where the run named hex (12 hex digits) lives: causeway-HEX below this process's own cgroup. Throws if it cannot. */
  static pathFor(hex: string): string {
    if (!/^[0-9a-f]{12}$/.test(hex)) throw new TypeError(`a run's name is 12 hex digits, not "${hex}"`);
    return path.join(ownCgroup(), `causeway-${hex}`);
  }

  /** Makes dir (from pathFor); throws a CausewayError that says why it cannot and what to do. */
  static create(dir: string): RunCgroup {
    const mount = requireMount();
    if (!RUN_CGROUP_NAME.test(path.basename(dir)) || !below(mount, dir)) throw new TypeError(`not a run's cgroup: ${dir}`);
    try {
      fs.mkdirSync(dir);
    } catch (err) {
      throw createError(dir, err as NodeJS.ErrnoException);
    }
    // Below a threaded cgroup a new one is "domain invalid": no process can move in.
    let type = 'domain';
    try {
      type = fs.readFileSync(path.join(dir, 'cgroup.type'), 'utf8').trim();
    } catch {
      /* before Linux 4.14: no threaded cgroups */
    }
    if (type !== 'domain') {
      try {
        fs.rmdirSync(dir);
      } catch {
        /* the registry's sweep removes it */
      }
      throw new CausewayError(
        `cannot run a command in a new cgroup below ${path.dirname(dir)}: it is part of a threaded subtree (a child there is "${type}") and processes can only move into domain cgroups: ${WHERE_TO_RUN}`,
      );
    }
    const id = fs.statSync(dir, { bigint: true }).ino; // kernfs node id == cgroup id
    const level = path.relative(mount, dir).split(path.sep).length;
    debug('created %s (id %d, level %d)', dir, id, level);
    return new RunCgroup(dir, id, level);
  }

  /** Moves a process (all of its threads) into the cgroup. */
  add(pid: number): void {
    try {
      fs.writeFileSync(path.join(this.dir, 'cgroup.procs'), `${pid}\n`);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ESRCH') throw err; // the process is gone: the caller decides
      throw new CausewayError(`cannot move process ${pid} into the run's cgroup ${this.dir}: ${e.message}: ${WHERE_TO_RUN}`, e.errno ? -e.errno : undefined);
    }
  }

  /** True if process (or thread) pid lives in this cgroup or below it; false if not or if it is gone. */
  contains(pid: number): boolean {
    // The kernel's own lists (pids as this process sees them), not paths: they hold in any cgroup namespace.
    for (const dir of subtree(this.dir)) if (readIds(dir, 'cgroup.procs').includes(pid) || readIds(dir, 'cgroup.threads').includes(pid)) return true;
    return false;
  }

  /** Processes in the cgroup and below it now. */
  pids(): number[] {
    return subtree(this.dir).flatMap((d) => readIds(d, 'cgroup.procs'));
  }

  /** Kills everything left in the cgroup, waits until it is empty, removes it. Returns how many it killed. */
  async destroy(timeoutMs = 5000): Promise<number> {
    const r = await removeCgroup(this.dir, timeoutMs);
    if (r.error) throw new CausewayError(`could not remove the run's cgroup ${this.dir}: ${r.error.message}`);
    return r.killed;
  }
}

/** What mkdir's failure means for the user. */
function createError(dir: string, err: NodeJS.ErrnoException): CausewayError {
  const parent = path.dirname(dir);
  const errno = err.errno ? -err.errno : undefined;
  switch (err.code) {
    case 'EACCES':
    case 'EPERM':
      if (process.geteuid?.() !== 0) return new PermissionError('creating a cgroup');
      return new CausewayError(`cannot create the run's cgroup in ${parent}: permission denied (a cgroup not delegated to this user or container): ${WHERE_TO_RUN}`, errno);
    case 'EROFS':
      return new CausewayError(`cannot create the run's cgroup in ${parent}: the cgroup v2 hierarchy is mounted read-only (as in many containers): ${WHERE_TO_RUN}`, errno);
    case 'EAGAIN':
      return new CausewayError(`cannot create the run's cgroup in ${parent}: cgroup.max.descendants or cgroup.max.depth of this cgroup or one above it is reached: ${WHERE_TO_RUN}`, errno);
    default:
      return new CausewayError(`cannot create the run's cgroup ${dir}: ${err.message}: ${WHERE_TO_RUN}`, errno);
  }
}

/** dir and every cgroup below it, parents first. */
export function subtree(dir: string): string[] {
  const out = [dir];
  for (let i = 0; i < out.length; i++) {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(out[i], { withFileTypes: true });
    } catch {
      continue; // removed meanwhile
    }
    for (const e of entries) if (e.isDirectory()) out.push(path.join(out[i], e.name));
  }
  return out;
}

/** The ids in a cgroup's cgroup.procs or cgroup.threads; [] if it is gone. */
export function readIds(dir: string, file: 'cgroup.procs' | 'cgroup.threads'): number[] {
  try {
    return fs
      .readFileSync(path.join(dir, file), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** SIGKILLs every process in dir and below (cgroup.kill where the kernel has it, 5.14+). Returns how many there were. */
function killAll(dir: string): number {
  const pids = subtree(dir).flatMap((d) => readIds(d, 'cgroup.procs'));
  if (pids.length === 0) return 0;
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    for (const pid of pids) {
      try {
        if (pid > 0) process.kill(pid, 'SIGKILL'); // 0: a process of another pid namespace
      } catch {
        /* already gone */
      }
    }
  }
  return pids.length;
}

/**
 * Kills every process in cgroup dir and below, then removes dir and the
 * cgroups below it, retrying while they drain (EBUSY) until timeoutMs.
 * A cgroup already gone counts as removed.
 */
export async function removeCgroup(dir: string, timeoutMs = 5000): Promise<{ killed: number; removed: boolean; error?: Error }> {
  const killed = killAll(dir);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let error: NodeJS.ErrnoException | undefined;
    for (const d of subtree(dir).reverse()) {
      try {
        fs.rmdirSync(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') error ??= err as NodeJS.ErrnoException;
      }
    }
    if (!error) {
      debug('removed %s', dir);
      return { killed, removed: true };
    }
    if (error.code !== 'EBUSY' || Date.now() > deadline) return { killed, removed: false, error };
    killAll(dir);
    await new Promise((r) => setTimeout(r, 10));
  }
}
