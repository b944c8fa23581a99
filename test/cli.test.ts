import t from 'tap';
import { bpfUnavailable, causeway } from './helpers';

const skip = bpfUnavailable();

t.test('doctor reports on this machine', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['doctor']);
  t.equal(r.status, 0, `doctor passes:\n${r.stdout}${r.stderr}`);
  for (const name of ['kernel', 'BTF', 'privileges', 'cgroup v2', 'bpf() syscall', 'task storage map', 'ring buffer map', 'shim'])
    t.match(r.stdout, new RegExp(`^ok {3}${name.replace(/[()]/g, '\\$&')}: `, 'm'), `${name} checked`);
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
