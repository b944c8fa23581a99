import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BIN, ROOT, bpfUnavailable, causeway, Result, runCommand, tmpdir } from './helpers';

const skip = bpfUnavailable();

t.test('doctor reports on this machine', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['doctor']);
  t.equal(r.status, 0, `doctor passes:\n${r.stdout}${r.stderr}`);
  for (const name of ['kernel', 'BTF', 'privileges', 'cgroup v2', 'bpf() syscall', 'task storage map', 'ring buffer map', 'LPM trie map', 'shim'])
    t.match(r.stdout, new RegExp(`^ok {3}${name.replace(/[()]/g, '\\$&')}[ :]`, 'm'), `${name} checked`);
  t.match(r.stdout, /causeway can run here/);
  const j = await causeway(['doctor', '--json']);
  const checks = JSON.parse(j.stdout) as { name: string; ok: boolean; required: boolean }[];
  t.ok(checks.length >= 10);
  t.ok(checks.every((c) => c.ok || !c.required), 'every required check passes');
});

t.test('the exit status is the command\'s', { skip: skip ?? false }, async (t) => {
  t.equal((await causeway(['run', '--', 'sh', '-c', 'exit 7'])).status, 7);
  t.equal((await causeway(['run', '--', 'true'])).status, 0);
  t.equal((await causeway(['run', '--', 'sh', '-c', 'kill -TERM $$'])).status, 128 + 15, 'a signal is 128 + its number');
});

t.test('the shim loads in a process signalled every millisecond (node --cpu-prof)', { skip: skip ?? false }, async (t) => {
  // The verifier gives up with EAGAIN on a pending signal, and V8's profiler sends SIGPROF every millisecond:
  // without the signals held during the load, every attempt of libbpf's failed.
  const dir = tmpdir(t);
  const r = await runCommand(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, BIN, 'run', '--', 'sh', '-c', 'echo hi | cat']);
  t.equal(r.status, 0, `loaded and ran:\n${r.stderr}`);
  t.equal(r.stdout, 'hi\n');
  t.match(r.stderr, /causeway: 0 events, [1-9]\d* sends and [1-9]\d* receives carried records, 0 dropped/, 'the shim followed the pipe');
  t.ok(fs.readdirSync(dir).some((f) => f.endsWith('.cpuprofile')), 'the profiler ran');
});

t.test('a missing command gives 127 with a clear message', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['run', '--', 'no-such-command-causeway']);
  t.equal(r.status, 127);
  t.match(r.stderr, /no-such-command-causeway: command not found/);
});

t.test('stdio passes through untouched', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['run', '-q', '--', 'sh', '-c', 'cat; echo to-stderr >&2'], { input: 'hello\nworld\n' });
  t.equal(r.status, 0);
  t.equal(r.stdout, 'hello\nworld\n');
  t.match(r.stderr, /^to-stderr$/m);
  t.notMatch(r.stderr, /causeway:/, '-q prints no summary');
});

t.test('bad flags say what is wrong', async (t) => {
  const r = await causeway(['run', '--priority', '300', '--', 'true']);
  t.not(r.status, 0);
  t.match(r.stderr, /priority.*0 to 255/);
  const r2 = await causeway(['run', '--trace', 'nothex', '--', 'true']);
  t.match(r2.stderr, /32 hex digits/);
  const r3 = await causeway(['frobnicate']);
  t.not(r3.status, 0);
  t.match(r3.stderr, /unknown command/);
});

/** Why the checkout cannot be run as nobody here, or false. */
function nobodySkip(): string | false {
  if (process.geteuid?.() !== 0) return 'needs root to switch to nobody';
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'test', '-r', path.join(ROOT, 'dist', 'src', 'cli.js')]);
  return r.status === 0 ? false : 'nobody cannot read this checkout (a private parent directory)';
}

t.test('without privileges: a clear error', { skip: nobodySkip() }, async (t) => {
  const asNobody = (args: string[]) =>
    new Promise<Result>((resolve) => {
      const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    });
  const r = await asNobody(['run', '--', 'true']);
  t.equal(r.status, 1);
  t.match(r.stderr, /needs root.*sudo/);
  const d = await asNobody(['doctor']);
  t.equal(d.status, 1, 'doctor fails');
  t.match(d.stdout, /^FAIL privileges: .* -- run as root/m);
  t.match(d.stdout, /causeway cannot run here/);
});

t.test('an events file that cannot be written is refused before the command runs', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['run', '-e', '/nonexistent-dir/ev.jsonl', '--', 'sh', '-c', 'echo ran']);
  t.equal(r.status, 1);
  t.equal(r.stdout, '', 'the command did not run');
  t.match(r.stderr, /cannot write events to \/nonexistent-dir\/ev.jsonl/);
});
