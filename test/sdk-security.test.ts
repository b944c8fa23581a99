/**
 * The SDK socket against a local user outside the run (uid 65534): anyone may
 * connect to it, but nobody can hold the run open, and nobody gets a slot by
 * naming a pid that a process of the run was handed after them.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { BIN, bpfUnavailable, tmpdir } from './helpers';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');

/** Lines of a child's stdout, one at a time. */
class Lines {
  private buf = '';
  private readonly queue: string[] = [];
  private waiter: (() => void) | null = null;
  constructor(child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        this.queue.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      this.waiter?.();
    });
  }
  async next(what: string, timeoutMs = 10000): Promise<string> {
    const end = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
    }
    return this.queue.shift()!;
  }
}

/** `causeway run` of sdk_forker.py: its first line is the SDK socket's path. */
async function startRun(t: Test, dir: string) {
  const fifo = path.join(dir, 'ctl');
  spawnSync('mkfifo', [fifo]);
  const run = spawn(process.execPath, [BIN, 'run', '--', 'python3', path.join(FIXTURES, 'sdk_forker.py'), fifo], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  run.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => run.on('close', (code) => r(code)));
  t.teardown(() => run.kill('SIGKILL'));
  const lines = new Lines(run);
  const socketPath = await lines.next('the SDK socket path');
  const ctl = fs.createWriteStream(fifo);
  t.teardown(() => ctl.destroy());
  return { run, lines, socketPath, ctl, exited, stderr: () => stderr };
}

/** sdk_intruder.py as uid 65534 (system python: root's may not be readable by nobody). */
function intruder(t: Test) {
  const c = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', path.join(FIXTURES, 'sdk_intruder.py')], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.teardown(() => c.kill('SIGKILL'));
  return { send: (line: string) => c.stdin!.write(line + '\n'), lines: new Lines(c) };
}

t.test('idle connections from another user do not hold the run open', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const r = await startRun(t, dir);
  const bad = intruder(t);
  // More connections than the runtime serves at once; none of them ever sends a byte.
  for (let i = 0; i < 80; i++) {
    bad.send(`hold ${r.socketPath}`);
    await bad.lines.next('the connection');
  }
  r.ctl.write('quit\n');
  // Held connections used to keep causeway (and its programs) waiting for as long as they lasted.
  let timer: NodeJS.Timeout | undefined;
  const status = await Promise.race([r.exited, new Promise<string>((res) => (timer = setTimeout(() => res('still running 30 s after its command ended'), 30000)))]);
  clearTimeout(timer);
  t.equal(status, 0, `causeway ended with its command's status (${r.stderr()})`);
});

t.test('a dead peer\'s pid, reused by a process of the run, gets no slot', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const r = await startRun(t, dir);
  const bad = intruder(t);
  // Make the run's next child take the pid of the intruder's connected, exited child (ns_last_pid).
  let reused = 0;
  for (let attempt = 0; attempt < 20 && !reused; attempt++) {
    bad.send(`new ${r.socketPath}`);
    const dead = Number(await bad.lines.next("the intruder's child pid"));
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(dead - 1));
    r.ctl.write('fork\n');
    const child = Number(await r.lines.next("the run's child pid"));
    if (child === dead) reused = child;
  }
  if (!reused) return t.fail('the run never got the pid back in 20 attempts (another process took it each time)');
  bad.send(`ask ${reused}`);
  const answer = await bad.lines.next('the answer');
  t.match(answer, /^error .* fd=no$/, 'refused, and no slot map was sent');
  t.notMatch(answer, /^ok/, 'never a slot');
  r.ctl.write('quit\n');
  t.equal(await r.exited, 0, r.stderr());
});
