/**
 * Inside a container: a private cgroup namespace rooted below the host's root,
 * with cgroup2 mounted at /sys/fs/cgroup, so that every path and depth the run
 * sees is shifted from the kernel's. The run must follow its command's
 * children there as anywhere.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { BIN, bpfUnavailable, readEvents, tmpdir } from './helpers';
import { cgroup2Mount } from '../src/kernel/cgroup';

const skip = bpfUnavailable();

t.test('a run inside a private cgroup namespace follows its children', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const mount = cgroup2Mount();
  if (!mount) throw new Error('no cgroup v2 hierarchy is mounted');
  // Two levels below the host's root, so that a depth counted from the namespace's root is wrong.
  const outer = path.join(mount, `cwtest-ns-${randomBytes(4).toString('hex')}`);
  const inner = path.join(outer, 'container');
  fs.mkdirSync(inner, { recursive: true });
  t.teardown(() => {
    for (const d of [inner, outer]) {
      try {
        fs.writeFileSync(path.join(d, 'cgroup.kill'), '1');
        fs.rmdirSync(d);
      } catch {
        /* already gone */
      }
    }
  });
  const events = path.join(dir, 'events.jsonl');
  // As a container runtime does: join the cgroup, unshare cgroup and mount namespaces, mount cgroup2.
  const inside = `mount -t cgroup2 none /sys/fs/cgroup && cat /proc/self/cgroup > ${dir}/ns-view && exec "$0" "$@"`;
  const script = `echo $$ > ${inner}/cgroup.procs && exec unshare --cgroup --mount --propagation private sh -c '${inside}' "$@"`;
  const command = ['sh', '-c', 'echo hello | cat > /dev/null; sh -c "exit 0"'];
  const res = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
    const c = spawn('sh', ['-c', script, process.execPath, BIN, 'run', '-e', events, '--', ...command], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (status) => resolve({ status, stderr }));
  });
  t.equal(res.status, 0, res.stderr);
  t.equal(fs.readFileSync(path.join(dir, 'ns-view'), 'utf8').split('\n').find((l) => l.startsWith('0::')), '0::/', 'causeway saw itself at its namespace root');

  const ev = readEvents(events);
  const root = ev.find((e) => e.type === 'exec');
  t.ok(root, 'the command was followed');
  const trace = root?.trace;
  const forks = ev.filter((e) => e.type === 'fork');
  t.ok(forks.length >= 2, `its children were followed (${forks.length} forks)`);
  const cat = ev.find((e) => e.type === 'exec' && e.path?.endsWith('/cat'));
  t.equal(cat?.trace, trace, 'a child carries the run\'s trace');
  t.ok(ev.some((e) => e.type === 'recv' && e.pid === cat?.pid && e.channel?.kind === 'pipe'), 'and its read of the pipe was followed');
  t.same(runCgroups(inner), [], 'the run left no cgroup behind');
});

/** Run cgroups (causeway-* or run-*) anywhere below dir. */
function runCgroups(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) => [...(/^(causeway|run)-/.test(d.name) ? [d.name] : []), ...runCgroups(path.join(dir, d.name))]);
}
