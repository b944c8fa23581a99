/**
 * Nothing a run made outlives it: its cgroup, its registry entry, its
 * programs and links, and the processes left in its cgroup, after a normal
 * exit, a killed command, and SIGINT to causeway itself. (After SIGKILL to
 * causeway: test/leftovers.test.ts.) And the hooks a library user gets around
 * that: onExit runs once the command exited, while the programs are loaded.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BIN, bpfUnavailable, pidAlive, runOf, tmpdir, waitFor } from './helpers';
import { run as runInProcess } from '../src/runtime/runtime';

const skip = bpfUnavailable();

/** The BPF program and link ids a process holds open, from /proc/PID/fdinfo. */
function bpfObjects(pid: number): { progs: number[]; links: number[] } {
  const progs = new Set<number>();
  const links = new Set<number>();
  let fds: string[] = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
  } catch {
    return { progs: [], links: [] };
  }
  for (const fd of fds) {
    let info = '';
    try {
      info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const p = /^prog_id:\s*(\d+)/m.exec(info);
    const l = /^link_id:\s*(\d+)/m.exec(info);
    if (l) links.add(Number(l[1]));
    else if (p) progs.add(Number(p[1]));
  }
  return { progs: [...progs], links: [...links] };
}

function bpfExists(kind: 'prog' | 'link', id: number): boolean {
  return spawnSync('bpftool', [kind, 'show', 'id', String(id)], { stdio: 'ignore' }).status === 0;
}

/** Starts causeway run; resolves once the shim is attached and the command started. */
async function start(t: Tap.Test, script: string, dir: string) {
  const child = spawn(process.execPath, [BIN, 'run', '-q', '--', 'sh', '-c', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: dir,
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const exit = new Promise<[number | null, string | null]>((r) => child.on('exit', (c, s) => r([c, s])));
  const pid = child.pid!;
  let objs = { progs: [] as number[], links: [] as number[] };
  await waitFor(() => {
    objs = bpfObjects(pid);
    return objs.links.length >= 5 && fs.existsSync(path.join(dir, 'started'));
  }, 15000, 'the shim to attach and the command to start');
  const run = runOf(pid);
  t.ok(run && fs.existsSync(run.cgroup), 'a registered run and its cgroup while it runs');
  return { child, exit, pid, objs, run: run! };
}

async function assertGone(t: Tap.Test, run: { entry: string; cgroup: string }, objs: { progs: number[]; links: number[] }) {
  t.notOk(fs.existsSync(run.cgroup), 'the run cgroup is removed');
  t.notOk(fs.existsSync(run.entry), 'the registry entry is removed');
  t.ok(objs.progs.length >= 5, `the run held its programs (${objs.progs})`);
  t.same(objs.links.filter((id) => bpfExists('link', id)), [], 'no link is left');
  // The kernel frees a program from a work queue after its last reference goes.
  await waitFor(() => objs.progs.every((id) => !bpfExists('prog', id)), 10000, 'the programs to be freed').catch(() => {});
  t.same(objs.progs.filter((id) => bpfExists('prog', id)), [], 'no program is left');
}

t.test('after a normal exit', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const { exit, objs, run } = await start(t, 'touch started; sleep 0.2; sleep 60 & echo $! > leftover', dir);
  const [code] = await exit;
  t.equal(code, 0);
  const leftover = Number(fs.readFileSync(path.join(dir, 'leftover'), 'utf8'));
  // Killed by the run; its reaper (init) may take a moment to collect it.
  await waitFor(() => !pidAlive(leftover), 10000, 'the leftover to go').catch(() => {});
  t.notOk(pidAlive(leftover), 'a background process left in the cgroup is killed');
  await assertGone(t, run, objs);
});

t.test('after the command is killed', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const { exit, objs, run } = await start(t, 'echo $$ > cmdpid; touch started; exec sleep 60', dir);
  process.kill(Number(fs.readFileSync(path.join(dir, 'cmdpid'), 'utf8')), 'SIGKILL');
  const [code] = await exit;
  t.equal(code, 128 + 9, 'exit status of a SIGKILLed command');
  await assertGone(t, run, objs);
});

t.test('after SIGINT to causeway', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const { child, exit, objs, run } = await start(t, 'touch started; exec sleep 60', dir);
  child.kill('SIGINT');
  const [code] = await exit;
  t.equal(code, 128 + 2, 'the command got SIGINT and causeway exits with its status');
  await assertGone(t, run, objs);
});

t.test('onExit: after the command, before the programs go', { skip: skip ?? false }, async (t) => {
  const before = new Set(bpfObjects(process.pid).progs);
  let atExit: number[] = [];
  let status = -1;
  const res = await runInProcess({
    command: 'sh',
    args: ['-c', 'exit 3'],
    summary: false,
    onExit: (s) => {
      status = s;
      atExit = bpfObjects(process.pid).progs.filter((id) => !before.has(id));
    },
  });
  t.equal(res.status, 3);
  t.equal(status, 3, 'onExit gets the status');
  t.ok(atExit.length >= 5, `the run's programs are still loaded in onExit (${atExit.length})`);
  // The kernel frees a program from a work queue after its last reference goes.
  await waitFor(() => atExit.every((id) => !bpfExists('prog', id)), 10000, 'the programs to be freed').catch(() => {});
  t.same(atExit.filter((id) => bpfExists('prog', id)), [], 'and gone once run() returned');
});
