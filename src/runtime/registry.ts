/**
 * The run registry: one directory per run under /run/causeway, so that what a
 * run whose causeway died (SIGKILL, OOM kill) left behind is cleaned up by the
 * next run, and only that.
 *
 *   /run/causeway/HEX/lock      flock(LOCK_EX) held by the runtime for its whole life
 *   /run/causeway/HEX/cgroup    the path of the run's cgroup (.../causeway-HEX)
 *   /run/causeway/HEX/sdk.sock  the SDK socket, when the run serves it
 *
 * A lock that can be taken proves its runtime dead: the kernel drops it with
 * the runtime's last file descriptor, whatever pid namespace the runtime ran
 * in and whoever has its pid now. An entry is built under .new-HEX, locked,
 * then renamed into place; its cgroup is made only after that, so no cgroup
 * ever exists that no entry names. Directories are 0711: programs of any user
 * in the run reach the socket by its path, nobody else lists the runs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import createDebug from 'debug';
import { CausewayError } from '../errors';
import { native } from '../kernel/native';
import { RunCgroup, below, cgroup2Mount, removeCgroup } from '../kernel/cgroup';

const debug = createDebug('causeway:registry');

/** Where runs register. */
export const REGISTRY_DIR = '/run/causeway';

/** An entry still being built may not hold its lock yet: younger than this, a sweep leaves it alone. */
const BUILD_GRACE_MS = 60_000;

/** How long a sweep waits for the processes of one dead run to drain before it leaves the cgroup to the next run. */
const DRAIN_MS = 2000;

/** What one sweep cleaned up. */
export interface SweepResult {
  /** Entries of dead runs removed. */
  entries: number;
  /** Processes killed in their cgroups. */
  killed: number;
  /** Dead runs whose cgroup would not go yet (left for the next sweep). */
  busy: number;
}

/** Creates root if needed and checks that nobody else could have planted entries in it. */
function ensureRoot(root: string): void {
  try {
    fs.mkdirSync(root, { recursive: true, mode: 0o711 });
  } catch (err) {
    throw new CausewayError(`cannot create the run registry ${root}: ${(err as Error).message}`);
  }
  const st = fs.lstatSync(root);
  const uid = process.geteuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0)
    throw new CausewayError(`the run registry ${root} must be a directory owned by uid ${uid} and writable by it alone: remove it and run again`);
  if ((st.mode & 0o777) !== 0o711) fs.chmodSync(root, 0o711);
}

/**
 * Cleans up after every registered run whose runtime is dead: kills the
 * processes left in its cgroup, removes the cgroup and the entry. Entries
 * whose lock is held (live runs) are never touched.
 */
export async function sweepRegistry(root: string = REGISTRY_DIR): Promise<SweepResult> {
  const result: SweepResult = { entries: 0, killed: 0, busy: 0 };
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return result;
  }
  for (const name of names) {
    const m = /^(\.new-)?([0-9a-f]{12})$/.exec(name);
    if (!m) continue;
    const building = m[1] !== undefined;
    const dir = path.join(root, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch {
      continue; // removed meanwhile
    }
    if (!st.isDirectory()) continue;
    // The cgroup file is written under the lock: without it, a young entry's maker may not have locked it yet.
    const hasCgroup = fs.existsSync(path.join(dir, 'cgroup'));
    if (building && !hasCgroup && Date.now() - st.mtimeMs < BUILD_GRACE_MS) continue;
    let fd: number;
    try {
      fd = fs.openSync(path.join(dir, 'lock'), 'r');
    } catch {
      // No lock: a remover died after unlinking it (the cgroup file went first), or a maker died before making it.
      if (!hasCgroup) removeEntry(dir);
      continue;
    }
    try {
      if (!native().flockTry(fd)) continue; // a live run's
      const r = await cleanDead(dir, m[2]);
      result.killed += r.killed;
      if (r.removed) result.entries++;
      else result.busy++;
    } finally {
      fs.closeSync(fd);
    }
  }
  if (result.entries || result.busy) debug('swept %d dead run(s): %d process(es) killed, %d cgroup(s) still draining', result.entries, result.killed, result.busy);
  return result;
}

/** One dead run's entry, whose lock the caller holds: its cgroup first, then the entry. */
async function cleanDead(dir: string, hex: string): Promise<{ killed: number; removed: boolean }> {
  let cg: string | null = null;
  try {
    cg = fs.readFileSync(path.join(dir, 'cgroup'), 'utf8').trim();
  } catch {
    /* none: nothing was made */
  }
  let killed = 0;
  if (cg) {
    const mount = cgroup2Mount();
    // Never kill a cgroup that is not this entry's own run cgroup, whatever the file says.
    if (!mount || path.basename(cg) !== `causeway-${hex}` || !path.isAbsolute(cg) || !below(mount, cg)) {
      debug('entry %s names %s, not its run cgroup under %s: removing the entry only', dir, cg, mount);
    } else {
      const r = await removeCgroup(cg, DRAIN_MS);
      killed = r.killed;
      if (!r.removed) {
        debug('cgroup %s of dead run %s not removed yet: %s', cg, dir, r.error?.message);
        return { killed, removed: false };
      }
    }
  }
  removeEntry(dir);
  debug('removed dead run %s (%d process(es) killed)', dir, killed);
  return { killed, removed: true };
}

/** Removes an entry, its cgroup file first: an entry with a lock and no cgroup file names nothing to clean. */
function removeEntry(dir: string): void {
  fs.rmSync(path.join(dir, 'cgroup'), { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
}

/** This process's run in the registry: its entry, its lock and its cgroup. */
export class RunEntry {
  /** The entry's directory (the SDK socket goes here). */
  readonly dir: string;
  readonly cgroup: RunCgroup;
  private fd: number | null;

  private constructor(dir: string, cgroup: RunCgroup, fd: number) {
    this.dir = dir;
    this.cgroup = cgroup;
    this.fd = fd;
  }

  /**
   * Sweeps the leftovers of dead runs, registers a new run and makes its
   * cgroup below this process's own. Throws (leaving nothing behind) if the
   * cgroup cannot be made there.
   */
  static async create(root: string = REGISTRY_DIR): Promise<RunEntry> {
    const hex = randomBytes(6).toString('hex');
    const cgdir = RunCgroup.pathFor(hex); // checks the caller's cgroup before anything is made
    ensureRoot(root);
    await sweepRegistry(root);
    const building = path.join(root, `.new-${hex}`);
    const dir = path.join(root, hex);
    let fd: number | null = null;
    let at = building;
    try {
      fs.mkdirSync(building, { mode: 0o711 });
      fs.chmodSync(building, 0o711);
      fd = fs.openSync(path.join(building, 'lock'), 'wx', 0o600); // O_CLOEXEC: the command never holds it
      if (!native().flockTry(fd)) throw new CausewayError(`the fresh lock ${building}/lock is held by another process`);
      fs.writeFileSync(path.join(building, 'cgroup'), cgdir + '\n', { mode: 0o600 });
      fs.renameSync(building, dir);
      at = dir;
      const cgroup = RunCgroup.create(cgdir);
      debug('registered %s for %s', dir, cgdir);
      return new RunEntry(dir, cgroup, fd);
    } catch (err) {
      removeEntry(at);
      if (fd !== null) fs.closeSync(fd);
      throw err;
    }
  }

  /**
   * Ends the registration: removes the entry (keep: leaves it, for a cgroup
   * that could not be removed, so that a later run retries) and drops the lock.
   * Call it after the cgroup is destroyed and the SDK socket closed.
   */
  release(keep = false): void {
    if (this.fd === null) return;
    try {
      if (!keep) removeEntry(this.dir);
    } finally {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}
