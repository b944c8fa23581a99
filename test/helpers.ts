/** Shared by the tests: running the real CLI, and the rule for BPF-dependent tests. */
import { spawn, SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import net, { AddressInfo } from 'node:net';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..');
export const BIN = path.join(ROOT, 'bin', 'causeway.js');

/**
 * Why BPF tests cannot run here, or null if they can. Under
 * CAUSEWAY_REQUIRE_BPF=1 (CI) they never skip: a missing feature fails them.
 */
export function bpfUnavailable(): string | null {
  if (process.env.CAUSEWAY_REQUIRE_BPF === '1') return null;
  if (process.geteuid?.() !== 0) return 'needs root to load BPF programs (set CAUSEWAY_REQUIRE_BPF=1 to fail instead)';
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) return 'the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)';
  return null;
}

export interface Result {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, its output collected. */
export function runCommand(cmd: string, args: string[], opts: SpawnOptions & { input?: string } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    child.stdin!.end(opts.input ?? '');
  });
}

/** Runs `causeway ARGS` to completion. */
export function causeway(args: string[], opts: SpawnOptions & { input?: string } = {}): Promise<Result> {
  return runCommand(process.execPath, [BIN, ...args], opts);
}

/** A temporary directory removed at the end of the test. */
export function tmpdir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Reads a JSON Lines events file. */
export function readEvents(file: string): EventJson[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as EventJson);
}

export interface EventJson {
  type: string;
  ts: string;
  pid: number;
  tid: number;
  comm: string;
  trace: string;
  event: string;
  parents: string[];
  channel: { kind: string; ino?: number; dev?: string; type?: string; name?: string; local?: string; localPort?: number; remote?: string; remotePort?: number } | null;
  bytes: number;
  path?: string;
  child?: { pid: number; tid: number };
  exit_code?: number;
}

/** Waits until cond() holds, polling; throws after timeoutMs. */
export async function waitFor(cond: () => boolean, timeoutMs = 10000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether a process exists (a zombie still does). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The registry entry and cgroup of the run that causeway process pid holds (found by its lock's fd); null if none. */
export function runOf(pid: number): { entry: string; cgroup: string } | null {
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  for (const fd of fds) {
    let dest: string;
    try {
      dest = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^(\/run\/causeway\/[0-9a-f]{12})\/lock$/.exec(dest);
    if (!m) continue;
    // A runtime that starts opens the other runs' locks too, to sweep dead ones: its own is the one it holds.
    if (!holdsFlock(pid, `/proc/${pid}/fd/${fd}`)) continue;
    try {
      return { entry: m[1], cgroup: fs.readFileSync(path.join(m[1], 'cgroup'), 'utf8').trim() };
    } catch {
      return null; // being removed
    }
  }
  return null;
}

/** Whether process pid holds a flock on the file open at fdPath (/proc/locks: its pid on the file's device and inode). */
function holdsFlock(pid: number, fdPath: string): boolean {
  let st: fs.Stats;
  try {
    st = fs.statSync(fdPath);
  } catch {
    return false;
  }
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  const id = `${hex(Math.floor(st.dev / 256))}:${hex(st.dev % 256)}:${st.ino}`;
  return fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .some((l) => {
      const f = l.trim().split(/\s+/);
      return f[1] === 'FLOCK' && Number(f[4]) === pid && f[5] === id;
    });
}

/** The registry entries (/run/causeway/*, under construction too) whose cgroup file names a cgroup below dir. */
export function entriesBelow(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync('/run/causeway');
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return fs.readFileSync(path.join('/run/causeway', n, 'cgroup'), 'utf8').trim().startsWith(dir + '/');
    } catch {
      return false;
    }
  });
}

/** Where cgroup v2 is mounted (hybrid hosts: /sys/fs/cgroup/unified). */
export function cgroup2Mount(): string {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (post?.split(' ')[0] === 'cgroup2') return pre.split(' ')[4];
  }
  throw new Error('no cgroup v2 hierarchy is mounted');
}

/** dir and the cgroups below it, parents first. */
export function cgroupTree(dir: string): string[] {
  const out = [dir];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const e of fs.readdirSync(out[i], { withFileTypes: true })) if (e.isDirectory()) out.push(path.join(out[i], e.name));
    } catch {
      /* removed meanwhile */
    }
  }
  return out;
}

/** The processes in cgroup dir and below it. */
export function cgroupPids(dir: string): number[] {
  return cgroupTree(dir).flatMap((d) => {
    try {
      return fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
}

/**
 * A fresh cgroup v2 directory for one test, below the mount: everything in it
 * is killed and it is removed (with what is below it) at the end of the test.
 */
export function testCgroup(t: { teardown(fn: () => void | Promise<void>): void }, tag: string): string {
  const dir = path.join(cgroup2Mount(), `cwtest-${tag}-${process.pid}-${Math.random().toString(16).slice(2, 8)}`);
  fs.mkdirSync(dir);
  t.teardown(async () => {
    const end = Date.now() + 10000;
    for (;;) {
      try {
        fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
      } catch {
        for (const pid of cgroupPids(dir))
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
      }
      let busy = false;
      for (const d of cgroupTree(dir).reverse())
        try {
          fs.rmdirSync(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') busy = true;
        }
      if (!busy || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // The entries of runs that were killed here (their runtimes were in dir too).
    for (const n of entriesBelow(dir)) fs.rmSync(path.join('/run/causeway', n), { recursive: true, force: true });
  });
  return dir;
}

/** argv that runs argv inside cgroup dir (the process moves itself, then execs). */
export function inCgroup(dir: string, argv: string[]): string[] {
  return ['/bin/sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, ...argv];
}

/** The state letter of a process (R, S, T, Z, ...), or null if it is gone. */
export function procState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2);
  } catch {
    return null;
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}
