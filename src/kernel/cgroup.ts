/**
 * The run's cgroup v2 directory: where the traced command lives, what scopes
 * the shim, and what is removed afterwards. Works on pure v2 hosts
 * (/sys/fs/cgroup) and hybrid ones (/sys/fs/cgroup/unified).
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import createDebug from 'debug';
import { CausewayError, PermissionError } from '../errors';

const debug = createDebug('causeway:cgroup');

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

/** The parent of every run's directory. */
export function runsRoot(mount: string): string {
  return path.join(mount, 'causeway');
}

/** Whether a process exists (EPERM: it does, owned by someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One run's cgroup. */
export class RunCgroup {
  readonly dir: string;
  readonly id: bigint;
  /** Depth below the cgroup v2 root, as bpf_get_current_ancestor_cgroup_id counts. */
  readonly level: number;

  private constructor(dir: string, id: bigint, level: number) {
    this.dir = dir;
    this.id = id;
    this.level = level;
  }

  /** Creates a fresh directory for this process's run; sweeps the leftovers of dead runs first. */
  static create(): RunCgroup {
    const mount = cgroup2Mount();
    if (!mount)
      throw new CausewayError('no cgroup v2 hierarchy is mounted: mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`');
    const root = runsRoot(mount);
    try {
      fs.mkdirSync(root, { recursive: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw new PermissionError('creating a cgroup');
      throw err;
    }
    sweepStale(root);
    const dir = path.join(root, `run-${process.pid}-${randomBytes(3).toString('hex')}`);
    fs.mkdirSync(dir);
    const id = fs.statSync(dir, { bigint: true }).ino; // kernfs node id == cgroup id
    const level = path.relative(mount, dir).split(path.sep).length;
    debug('created %s (id %d, level %d)', dir, id, level);
    return new RunCgroup(dir, id, level);
  }

  /** Moves a process (all of its threads) into the cgroup. */
  add(pid: number): void {
    fs.writeFileSync(path.join(this.dir, 'cgroup.procs'), `${pid}\n`);
  }

  /** True if process (or thread) pid lives in this cgroup or below it; false if not or if it is gone. */
  contains(pid: number): boolean {
    let lines: string;
    try {
      lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      return false;
    }
    const mount = cgroup2Mount();
    if (!mount) return false;
    const rel = '/' + path.relative(mount, this.dir);
    // The cgroup v2 line is "0::/path".
    const v2 = lines.split('\n').find((l) => l.startsWith('0::'));
    const p = v2?.slice(3) ?? '';
    return p === rel || p.startsWith(rel + '/');
  }

  /** Processes in the cgroup now. */
  pids(): number[] {
    return readPids(this.dir);
  }

  /** Kills everything left in the cgroup, waits until it is empty, removes it. Returns how many it killed. */
  async destroy(timeoutMs = 5000): Promise<number> {
    const killed = killAll(this.dir);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        fs.rmdirSync(this.dir);
        debug('removed %s', this.dir);
        return killed;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return killed;
        if (code !== 'EBUSY' || Date.now() > deadline)
          throw new CausewayError(`could not remove the run's cgroup ${this.dir}: ${(err as Error).message}`);
      }
      killAll(this.dir);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function readPids(dir: string): number[] {
  try {
    return fs
      .readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** SIGKILLs every process in dir (cgroup.kill where the kernel has it, 5.14+). */
function killAll(dir: string): number {
  const pids = readPids(dir);
  if (pids.length === 0) return 0;
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  return pids.length;
}

/** Removes the directories of runs whose causeway process died without cleaning up (SIGKILL). */
export function sweepStale(root: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^run-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    const dir = path.join(root, name);
    killAll(dir);
    try {
      fs.rmdirSync(dir);
      debug('swept stale %s', dir);
    } catch {
      /* still draining: the next run sweeps it */
    }
  }
}
