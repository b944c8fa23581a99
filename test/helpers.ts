/** Shared by the tests: running the real CLI, and the rule for BPF-dependent tests. */
import { spawn, SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
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

/** Runs `causeway ARGS` to completion. */
export function causeway(args: string[], opts: SpawnOptions & { input?: string } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    child.stdin!.end(opts.input ?? '');
  });
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
