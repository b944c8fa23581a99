/**
 * Where a run lives and what it leaves when causeway itself dies: the run's
 * cgroup is a child of the caller's; a SIGKILLed causeway leaves its
 * command running with its bytes intact, and the next run cleans up after it
 * (cgroup, processes, registry entry) without touching a live run; many runs
 * killed at random points leave no cgroup, entry or BPF object; a causeway
 * killed before the command's go never runs the command and never leaves it
 * stopped. Every run starts from a cgroup the test makes, so that what it
 * leaves is counted without racing other test files.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  BIN,
  bpfUnavailable,
  cgroup2Mount,
  cgroupPids,
  cgroupTree,
  entriesBelow,
  inCgroup,
  procState,
  ROOT,
  runOf,
  testCgroup,
  tmpdir,
  waitFor,
} from './helpers';
import { native } from '../src/kernel/native';

const skip = bpfUnavailable();
const FIXTURES = path.join(ROOT, 'test', 'fixtures');

// The 100 runs alone take about a minute on two busy cores.
t.setTimeout(300_000);

interface Run {
  child: ChildProcess;
  pid: number;
  /** Resolves once causeway exited. */
  exit: Promise<[number | null, NodeJS.Signals | null]>;
  /** Resolves once its stdout and stderr are closed (by it and by whatever inherited them). */
  closed: Promise<void>;
  out(): string;
  err(): string;
}

/** Starts `causeway run -q -- CMD` from inside cgroup parent. */
function startRun(parent: string, cmd: string[]): Run {
  const [file, ...args] = inCgroup(parent, [process.execPath, BIN, 'run', '-q', '--', ...cmd]);
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, s) => r([c, s])));
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  return { child, pid: child.pid!, exit, closed, out: () => out, err: () => err };
}

function killRun(r: Run): void {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The cgroup v2 path (the 0:: line) of process pid, or null. */
function v2Path(pid: number): string | null {
  try {
    const line = fs
      .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    return line ? line.slice(3) : null;
  } catch {
    return null;
  }
}

const dead = (pid: number) => ['Z', null].includes(procState(pid));

/** Who holds a flock on the file open at fd (/proc/locks), with each holder's state and kernel stack: what a failure needs to say. */
function lockHolders(fd: number): string {
  const ino = fs.fstatSync(fd).ino;
  const pids = fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .filter((l) => new RegExp(`:${ino} `).test(l))
    .map((l) => Number(l.split(/\s+/)[4]));
  const about = (pid: number) => {
    const read = (f: string) => {
      try {
        return fs.readFileSync(`/proc/${pid}/${f}`, 'utf8').trim();
      } catch {
        return '?';
      }
    };
    const cmd = read('cmdline').split('\0').join(' ').trim();
    return `pid ${pid} (${cmd || read('comm')}, ${/^State:\s*(.*)$/m.exec(read('status'))?.[1] ?? '?'}, cgroup ${v2Path(pid)}), stack: ${read('stack').split('\n').slice(0, 8).join(' / ')}`;
  };
  return pids.length ? pids.map(about).join('; ') : 'no holder in /proc/locks';
}
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

t.test("the run's cgroup is a child of the caller's", { skip: skip ?? false }, async (t) => {
  const P = testCgroup(t, 'nest');
  const r = startRun(P, ['cat', '/proc/self/cgroup']);
  t.teardown(() => killRun(r));
  const [code] = await r.exit;
  await r.closed;
  t.equal(code, 0, `causeway ran cat ${r.err()}`);
  const lines = r.out().split('\n').filter(Boolean);
  const v2 = lines.find((l) => l.startsWith('0::'))?.slice(3) ?? '';
  const rel = '/' + path.relative(cgroup2Mount(), P);
  t.match(v2, new RegExp(`^${escape(rel)}/causeway-[0-9a-f]{12}$`), `the command ran in ${v2}, strictly below the caller's ${rel}`);
  const callerV1 = fs
    .readFileSync('/proc/self/cgroup', 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('0::'));
  const commandV1 = lines.filter((l) => !l.startsWith('0::'));
  t.same(commandV1, callerV1, callerV1.length ? `its v1 cgroups (${callerV1.map((l) => l.split(':')[1]).join(' ')}) are the caller's` : 'no v1 hierarchies here');
  t.same(cgroupTree(P).slice(1), [], 'the run removed its cgroup');
  t.same(entriesBelow(P), [], 'and its registry entry');
});

t.test("a caller in a cgroup that cannot have the run's as a child", { skip: skip ?? false }, async (t) => {
  const cases: [string, (P: string) => string, RegExp][] = [
    [
      'a threaded cgroup',
      (P) => {
        const T = path.join(P, 'threads');
        fs.mkdirSync(T);
        fs.writeFileSync(path.join(T, 'cgroup.type'), 'threaded');
        return T;
      },
      /threaded subtree/,
    ],
    [
      'a cgroup at its cgroup.max.descendants',
      (P) => {
        fs.writeFileSync(path.join(P, 'cgroup.max.descendants'), '0');
        return P;
      },
      /cgroup\.max\.descendants/,
    ],
  ];
  for (const [name, make, why] of cases)
    await t.test(name, async (t) => {
      const P = testCgroup(t, 'bad');
      const caller = make(P);
      const dir = tmpdir(t);
      const marker = path.join(dir, 'ran');
      const r = startRun(caller, ['touch', marker]);
      t.teardown(() => killRun(r));
      const [code] = await r.exit;
      await r.closed;
      t.equal(code, 1, 'causeway fails');
      t.match(r.err(), why, `it says why: ${r.err().trim()}`);
      t.match(r.err(), /systemd-run --scope -p Delegate=yes/, 'and what to do');
      t.notOk(fs.existsSync(marker), 'the command did not run');
      t.same(cgroupTree(P).slice(1), caller === P ? [] : [caller], 'no cgroup is left');
      t.same(entriesBelow(P), [], 'no registry entry is left');
    });
});

t.test('SIGKILL to causeway mid-traffic, another run live, then a new run', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const f = (name: string) => path.join(dir, name);
  const SIZE = 4 << 20;

  // A live run: its command waits for the file "stop".
  const PL = testCgroup(t, 'live');
  const live = startRun(PL, ['sh', '-c', `echo $$ > ${f('live.pid')}; while [ ! -e ${f('stop')} ]; do sleep 0.05; done`]);
  t.teardown(() => killRun(live));
  const liveSeen: { run: ReturnType<typeof runOf> } = { run: null };
  await waitFor(() => fs.existsSync(f('live.pid')) && (liveSeen.run = runOf(live.pid)) !== null, 30000, 'the live run to start');
  const L = liveSeen.run!;
  const livePid = Number(fs.readFileSync(f('live.pid'), 'utf8'));

  // The run to kill: a client and a server over TCP loopback, then a process left behind.
  const PD = testCgroup(t, 'dead');
  const traffic = path.join(FIXTURES, 'traffic.py');
  const script =
    `python3 ${traffic} server ${f('port')} ${f('server.json')} & ` +
    `python3 ${traffic} client ${f('port')} ${SIZE} ${f('client.json')} ${f('progress')}; ` +
    `wait; echo $$ > ${f('leftover.pid')}; exec sleep 60`;
  const victim = startRun(PD, ['sh', '-c', script]);
  t.teardown(() => killRun(victim));
  // The entry as first seen: read once, so that a second look cannot race with what the run does next.
  const seen: { run: ReturnType<typeof runOf> } = { run: null };
  await waitFor(() => (seen.run = runOf(victim.pid)) !== null, 30000, 'the run to register');
  const D = seen.run!;
  // Tests in parallel start runs too, and any of them would sweep the dead run at once (as it should):
  // this test holds the dead run's lock until its traffic is over, then lets the new run sweep it.
  const lock = fs.openSync(path.join(D.entry, 'lock'), 'r');
  let lockOpen = true;
  t.teardown(() => {
    if (lockOpen) fs.closeSync(lock);
  });
  await waitFor(() => fs.existsSync(f('progress')), 30000, 'the traffic to be under way');
  t.notOk(fs.existsSync(f('client.json')), 'causeway is killed mid-traffic');
  victim.child.kill('SIGKILL');
  // 30 s: the dead runtime's exit, or another test's run sweeping it meanwhile, can be slow on a loaded machine.
  const end = Date.now() + 30000;
  while (!native().flockTry(lock))
    if (Date.now() > end) throw new Error(`causeway's lock was not released: ${lockHolders(lock)}; the killed runtime was pid ${victim.pid} (state ${procState(victim.pid)})`);
  const [, signal] = await victim.exit;
  t.equal(signal, 'SIGKILL', 'causeway was SIGKILLed');

  await waitFor(() => fs.existsSync(f('client.json')) && fs.existsSync(f('server.json')), 30000, 'the traffic to end');
  const server = JSON.parse(fs.readFileSync(f('server.json'), 'utf8'));
  const client = JSON.parse(fs.readFileSync(f('client.json'), 'utf8'));
  t.ok(server.ok && client.ok, `no application error (server ${JSON.stringify(server)}, client ${JSON.stringify(client)})`);
  t.equal(server.bytes, SIZE, 'the server got every byte');
  t.equal(server.sha256, client.sent, 'the server got the bytes the client sent');
  t.equal(client.bytes, SIZE, 'the client got every byte back');
  t.equal(client.sha256, client.sent, 'unchanged');

  await waitFor(() => fs.existsSync(f('leftover.pid')), 10000, 'the leftover');
  const leftover = Number(fs.readFileSync(f('leftover.pid'), 'utf8'));
  t.ok(!dead(leftover) && cgroupPids(D.cgroup).includes(leftover), "a process is left in the dead run's cgroup");
  fs.closeSync(lock);
  lockOpen = false;

  const PN = testCgroup(t, 'next');
  const next = startRun(PN, ['true']);
  t.teardown(() => killRun(next));
  const [code] = await next.exit;
  t.equal(code, 0, `the next run ran ${next.err()}`);
  t.notOk(fs.existsSync(D.cgroup), "the next run removed the dead run's cgroup");
  await waitFor(() => dead(leftover), 5000, 'the leftover to die').catch(() => {});
  t.ok(dead(leftover), 'killed the process left in it');
  t.notOk(fs.existsSync(D.entry), 'and removed its registry entry');

  t.ok(fs.existsSync(L.cgroup), "the live run's cgroup is untouched");
  t.ok(fs.existsSync(path.join(L.entry, 'lock')), 'so is its registry entry');
  t.ok(!dead(livePid) && procState(livePid) !== 'T' && cgroupPids(L.cgroup).includes(livePid), 'and its command runs on in its cgroup');

  fs.writeFileSync(f('stop'), '');
  const [liveCode] = await live.exit;
  t.equal(liveCode, 0, 'the live run ends normally');
  t.notOk(fs.existsSync(L.cgroup), 'and removes its cgroup');
  t.notOk(fs.existsSync(L.entry), 'and its registry entry');
});

/** The ids of every BPF program, map and link now. */
function bpfIds(): { prog: Set<number>; map: Set<number>; link: Set<number> } {
  const ids = (kind: string) => new Set(bpftool(kind).map((o) => o.id));
  return { prog: ids('prog'), map: ids('map'), link: ids('link') };
}

interface BpfObject {
  id: number;
  name?: string;
  map_ids?: number[];
  prog_id?: number;
}

function bpftool(kind: string): BpfObject[] {
  return JSON.parse(execFileSync('bpftool', ['-j', kind, 'show'], { maxBuffer: 64 << 20 }).toString()) as BpfObject[];
}

/** The BPF objects some process holds an fd to (what bpftool's "pids" shows where it is built with it). */
function heldByFd(): { prog: Set<number>; map: Set<number>; link: Set<number> } {
  const held = { prog: new Set<number>(), map: new Set<number>(), link: new Set<number>() };
  for (const pid of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let info: string;
      try {
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      } catch {
        continue;
      }
      for (const [key, set] of [
        ['link_id', held.link],
        ['prog_id', held.prog],
        ['map_id', held.map],
      ] as const) {
        const m = new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(info);
        if (m) set.add(Number(m[1]));
      }
    }
  }
  return held;
}

/**
 * BPF objects made since `before` that nothing holds: no process has an fd
 * to them, and no held link or program refers to them. Safe while other
 * tests run: their objects are held by their causeway. SDK slot maps are
 * left out (a traced program may hold one by its mapping alone); these runs
 * make none.
 */
function bpfOrphans(before: ReturnType<typeof bpfIds>): string[] {
  const links = bpftool('link');
  const progs = bpftool('prog');
  const maps = bpftool('map');
  const held = heldByFd();
  const liveProgs = new Set([...held.prog, ...links.filter((l) => held.link.has(l.id)).map((l) => l.prog_id!)]);
  const liveMaps = new Set([...held.map, ...progs.filter((p) => liveProgs.has(p.id)).flatMap((p) => p.map_ids ?? [])]);
  return [
    ...links.filter((l) => !before.link.has(l.id) && !held.link.has(l.id)).map((l) => `link ${l.id} (prog ${l.prog_id})`),
    ...progs.filter((p) => !before.prog.has(p.id) && !liveProgs.has(p.id)).map((p) => `prog ${p.id} ${p.name}`),
    ...maps.filter((m) => !before.map.has(m.id) && !liveMaps.has(m.id) && m.name !== 'cw_sdk_slots').map((m) => `map ${m.id} ${m.name}`),
  ];
}

t.test('100 runs, a fifth of them SIGKILLed at random points', { skip: skip ?? false }, async (t) => {
  const P = testCgroup(t, 'many');
  const before = bpfIds();
  // A small seeded generator: a failure names the seed that reproduces it.
  let seed = Date.now() % 2 ** 31;
  t.comment(`seed ${seed}`);
  const random = () => ((seed = (seed * 48271) % 2147483647) - 1) / 2147483646;
  const order = Array.from({ length: 100 }, (_, i) => i).sort(() => random() - 0.5);
  const toKill = new Set(order.slice(0, 20));
  const failed: string[] = [];
  let killed = 0;
  for (let i = 0; i < 100; i++) {
    const r = startRun(P, ['true']);
    if (toKill.has(i)) {
      await sleep(Math.floor(random() * 700));
      killRun(r);
    }
    const [code, signal] = await Promise.race([r.exit, sleep(30000).then(() => [null, null] as [null, null])]);
    if (signal === 'SIGKILL') killed++;
    else if (code !== 0) {
      killRun(r);
      failed.push(`run ${i}: status ${code} signal ${signal}: ${r.err().trim()}`);
    }
  }
  t.same(failed, [], 'every run not killed exited 0');
  t.ok(killed > 0, `${killed} runs were SIGKILLed mid-way (20 kills sent)`);
  const last = startRun(P, ['true']);
  const [code] = await last.exit;
  t.equal(code, 0, 'then a normal run');
  t.same(
    cgroupTree(P)
      .slice(1)
      .map((d) => path.basename(d)),
    [],
    'no cgroup of these runs is left',
  );
  t.same(cgroupPids(P), [], 'no process of these runs is left');
  t.same(entriesBelow(P), [], 'no registry entry of these runs is left');
  // The kernel frees programs and maps from a work queue after the last reference goes.
  await waitFor(() => bpfOrphans(before).length === 0, 30000, 'BPF objects to be freed').catch(() => {});
  t.same(bpfOrphans(before), [], 'no BPF program, map or link is left');
});

t.test('causeway SIGKILLed before the go', { skip: skip ?? false }, async (t) => {
  const P = testCgroup(t, 'early');
  const dir = tmpdir(t);
  let hits = 0;
  let misses = 0;
  const stopped: string[] = [];
  const problems: string[] = [];
  for (let i = 0; i < 40 && hits < 5; i++) {
    const marker = path.join(dir, `ran-${i}`);
    const r = startRun(P, ['touch', marker]);
    // Spin (no await) until causeway has a child: its command's wrapper, forked, not yet told to go.
    const children = `/proc/${r.pid}/task/${r.pid}/children`;
    let wrapper = 0;
    const end = Date.now() + 30000;
    while (!wrapper && Date.now() < end) {
      try {
        wrapper = Number(fs.readFileSync(children, 'utf8').trim().split(' ')[0]) || 0;
      } catch {
        break; // causeway is gone
      }
    }
    if (!wrapper) {
      killRun(r);
      await r.exit;
      problems.push(`run ${i}: causeway started no command: ${r.err().trim()}`);
      continue;
    }
    // Freeze causeway where it is, see whether it already let the wrapper go (moved it into the run's cgroup), kill it.
    process.kill(r.pid, 'SIGSTOP');
    // SIGSTOP is asynchronous: until causeway is seen stopped, a write to cgroup.procs may still land.
    for (const end = Date.now() + 10000; !/^[tT]$/.test(procState(r.pid) ?? 'T') && Date.now() < end; ) await sleep(1);
    const before = !/\/causeway-[0-9a-f]{12}$/.test(v2Path(wrapper) ?? '');
    process.kill(r.pid, 'SIGKILL');
    await r.exit;
    // The wrapper must end by itself, and never be seen stopped.
    const deadline = Date.now() + 10000;
    let state: string | null;
    while ((state = procState(wrapper)) !== null && state !== 'Z' && Date.now() < deadline) {
      if (state === 'T' || state === 't') {
        stopped.push(`run ${i}: process ${wrapper} is stopped (${before ? 'killed before the go' : 'after'})`);
        break;
      }
      await sleep(5);
    }
    if (state !== null && state !== 'Z' && !stopped.length) problems.push(`run ${i}: process ${wrapper} still runs (state ${state})`);
    if (before) {
      hits++;
      await Promise.race([r.closed, sleep(5000)]);
      if (fs.existsSync(marker)) problems.push(`run ${i}: killed before the go, yet the command ran`);
      if (!/not starting touch/.test(r.err())) problems.push(`run ${i}: the wrapper did not say why it stopped: ${r.err().trim()}`);
    } else misses++;
    if (stopped.length) break;
  }
  t.comment(`${hits} kill(s) before the go, ${misses} after`);
  t.same(stopped, [], 'no process of these runs was ever left stopped');
  t.same(problems, [], 'killed before the go, the command never ran and its wrapper ended');
  t.ok(hits > 0, 'at least one kill landed before the go');
  // The next run sweeps what the killed ones left.
  const last = startRun(P, ['true']);
  const [code] = await last.exit;
  t.equal(code, 0, 'then a normal run');
  t.same(cgroupTree(P).slice(1), [], 'no cgroup of these runs is left');
  t.same(cgroupPids(P), [], 'no process of these runs is left');
  t.same(entriesBelow(P), [], 'no registry entry of these runs is left');
});
