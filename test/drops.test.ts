/**
 * Every drop counter of the shim (DROP_COUNTERS), forced by a real workload
 * whose structure says how many drops it must cause: each subtest asserts
 * that exact number, and that every other drop counter stayed at 0 (a forced
 * drop must not leak into another counter). Where the workload cannot fix the
 * number in advance (the ring buffer drains while it fills; the memory cgroup
 * leaves some elements in per-CPU caches), it fixes a sum instead: events
 * delivered + events dropped, or children tracked + children not tracked.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, runCommand as plain, tmpdir, waitFor } from './helpers';
import { makeHosts, subnet, type Host } from './netns';
import { run, RunOptions } from '../src/runtime/runtime';
import { newTraceId } from '../src/kernel/record';
import type { CausalEvent } from '../src/kernel/events';
import { DROP_COUNTERS, type Counters } from '../src/kernel/shim';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
/** The interpreter itself, not a wrapper script (pyenv): fewer processes to count. */
const PY = skip ? 'python3' : execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();

/** What the helpers use of a tap test. */
interface T {
  ok(v: unknown, m: string): unknown;
  equal(a: unknown, b: unknown, m: string): unknown;
  teardown(fn: () => unknown): void;
}
/** Why TCP-MD5 cannot be used here (setsockopt(TCP_MD5SIG) fails), or null. */
function md5Unavailable(): string | null {
  try {
    execFileSync(PY, [path.join(FIXTURES, 'md5.py'), 'probe', '127.0.0.1', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    return null;
  } catch (err) {
    return `the kernel has no TCP-MD5 (CONFIG_TCP_MD5SIG): ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
}
/** Skipped only where BPF tests may skip; under CAUSEWAY_REQUIRE_BPF=1 a missing TCP-MD5 fails. */
const md5Skip = skip ?? (process.env.CAUSEWAY_REQUIRE_BPF === '1' ? null : md5Unavailable());

type Drops = Partial<Record<keyof Counters, number>>;

/** test/fixtures/drops.c, compiled into the test's directory. */
function dropsBin(t: T): string {
  const out = path.join(tmpdir(t), 'drops');
  execFileSync('cc', ['-O2', '-Wall', '-o', out, path.join(FIXTURES, 'drops.c')]);
  return out;
}

/** A run that collects its events. */
async function traced(opts: Partial<RunOptions> & { command: string; args: string[] }) {
  const events: CausalEvent[] = [];
  const res = await run({ summary: false, ...opts, onEvents: (b) => events.push(...b) });
  return { res, events, counters: res.counters! };
}

/** The drop counters are exactly `expected`; every other one is 0. */
function dropsAre(t: T, c: Counters | null, expected: Drops, who = '') {
  t.ok(c, `${who}counters were read`);
  if (!c) return;
  for (const k of DROP_COUNTERS) t.equal(c[k], expected[k] ?? 0, `${who}${k} = ${expected[k] ?? 0}`);
}

const count = (events: CausalEvent[], type: string, kind?: string) =>
  events.filter((e) => e.type === type && (kind === undefined || e.channel?.kind === kind)).length;

/** The drop counters that the subtests below force. */
const FORCED: (keyof Counters)[] = [
  'ringbufDrops',
  'segmentsOverwritten',
  'parentsTruncated',
  'channelMapFull',
  'tcpOptionNoSpace',
  'tcpOptionBoundaries',
  'tcpOptionMalformed',
  'tcpOptionStale',
  'tcpOptionDuplicate',
  'skStorageFailures',
  'taskStorageFailures',
  'schedulerLost',
];

t.test('every drop counter of the shim has a subtest here that forces it', async (t) => {
  t.same([...DROP_COUNTERS].sort(), [...FORCED].sort(), 'a new drop counter needs a workload here that forces it');
});

t.test('ringbufDrops: events delivered + events dropped = the events the workload makes', { skip: skip ?? false }, async (t) => {
  const bin = dropsBin(t);
  const N = 1000;
  // The fixture's exec, a fork (in the parent) and an exit (in the child) per child, the fixture's exit.
  const made = 1 + 2 * N + 1;
  const big = await traced({ command: bin, args: ['forks', String(N)] });
  t.equal(big.res.status, 0, 'the burst ran');
  t.equal(big.counters.events, made, `with the default ring buffer: ${made} events submitted`);
  t.equal(big.events.length, made, 'and every one delivered');
  t.same([count(big.events, 'exec'), count(big.events, 'fork'), count(big.events, 'exit')], [1, N, N + 1], 'exec 1, fork N, exit N + 1');
  dropsAre(t, big.counters, {});

  // 4096 bytes hold 13 events (288 bytes + an 8-byte header each). The reader drains them as they come
  // (it is woken past a quarter of the ring), so JavaScript holds up the first batch until the burst is
  // over: the reader blocks once 64 batches wait for JavaScript, and the ring overflows.
  let cmd = 0;
  let held = false;
  const ended = () => {
    try {
      return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${cmd}/stat`, 'utf8'));
    } catch {
      return true;
    }
  };
  const small = await traced({
    command: bin,
    args: ['forks', String(N)],
    ringbufBytes: 4096,
    onStart: ({ pid }) => (cmd = pid),
    onRawEvents: () => {
      if (held || !cmd) return;
      held = true;
      const deadline = Date.now() + 30000;
      while (!ended() && Date.now() < deadline); // the command is our child: a zombie until this thread lets libuv reap it
    },
  });
  t.equal(small.res.status, 0, 'the burst ran');
  const c = small.counters;
  t.ok(c.ringbufDrops > 0, `the ring buffer overflowed (${c.ringbufDrops} dropped)`);
  t.equal(small.events.length, c.events, 'every event submitted was delivered');
  t.equal(small.events.length + c.ringbufDrops, made, `delivered (${small.events.length}) + dropped = ${made}`);
  dropsAre(t, c, { ringbufDrops: c.ringbufDrops });
});

t.test('segmentsOverwritten: K records into a pipe with a tracked reader that waits', { skip: skip ?? false }, async (t) => {
  const bin = dropsBin(t);
  const K = 40;
  // The reader read byte 0 (segment 0); writes 1..K are segments 1..K. The j-th reuses the ring
  // slot (16) of segment j - 16, which holds byte j - 16: still unread for j = 17..K.
  const lost = K - 16;
  const { res, events, counters: c } = await traced({ command: bin, args: ['overwrite', String(K)] });
  t.equal(res.status, 0, 'the reader read every byte');
  dropsAre(t, c, { segmentsOverwritten: lost });
  t.equal(c.ingressReads, lost, 'the bytes of the overwritten segments were read with no record');
  t.equal(count(events, 'send', 'pipe'), 1 + K + 2, 'a send per record: byte 0, the K children, and the reader\'s ack and the go byte');
});

t.test('parentsTruncated: one per read that spans more than CW_MAX_PARENTS records', { skip: skip ?? false }, async (t) => {
  const bin = dropsBin(t);
  const rounds = 3;
  // Each round, 6 children write a byte each under 6 records, then one read takes all 6: it names 4.
  const six = await traced({ command: bin, args: ['joins', '6', String(rounds)] });
  t.equal(six.res.status, 0, 'every read took its 6 bytes at once');
  dropsAre(t, six.counters, { parentsTruncated: rounds });
  const joins = six.events.filter((e) => e.type === 'join' && e.bytes === 6);
  t.equal(joins.length, rounds, 'one join per round');
  t.same(joins.map((e) => e.parents.length), [4, 4, 4], 'each names CW_MAX_PARENTS = 4 parents');
  // A read over exactly 4 records names them all: nothing is truncated.
  const four = await traced({ command: bin, args: ['joins', '4', String(rounds)] });
  t.equal(four.res.status, 0);
  dropsAre(t, four.counters, {}, '4 records per read: ');
  t.same(four.events.filter((e) => e.type === 'join' && e.bytes === 4).map((e) => e.parents.length), [4, 4, 4], 'each names its 4');
});

t.test('channelMapFull: each read or write on a pipe that found no room in the table', { skip: skip ?? false }, async (t) => {
  const bin = dropsBin(t);
  const [max, pipes] = [8, 20];
  // 20 pipes written once and read once: the first 8 get the table's 8 entries, the other 12 pipes fail twice each.
  const { res, events, counters: c } = await traced({ command: bin, args: ['chans', String(pipes)], maxChannels: max });
  t.equal(res.status, 0, 'the program is unaffected');
  dropsAre(t, c, { channelMapFull: 2 * (pipes - max) });
  t.equal(c.channelsCreated, max, 'the table filled up');
  t.same([count(events, 'send', 'pipe'), count(events, 'recv', 'pipe')], [max, max], 'the pipes that fit are followed');
});

/** The run of `ip netns exec NS ARGS...`. */
function inNs(ns: string, args: string[], opts: Partial<RunOptions> = {}) {
  return traced({ command: 'ip', args: ['netns', 'exec', ns, ...args], ...opts });
}

/** TCP-MD5 conversations in host h: the server in one run, the client in another (the record crosses only in the option). */
async function md5Conversations(dir: string, h: Host, port: number, n: number, extra: string[]) {
  const md5 = path.join(FIXTURES, 'md5.py');
  const ready = path.join(dir, `ready${port}`);
  const server = inNs(h.ns, [PY, md5, 'server', '127.0.0.1', String(port), ready, String(n), ...extra]);
  await waitFor(() => fs.existsSync(ready), 10000, 'the server to listen');
  const client = await inNs(h.ns, [PY, md5, 'client', '127.0.0.1', String(port), String(n), ...extra]);
  return { client, server: await server };
}

t.test('tcpOptionNoSpace: TCP-MD5 on both ends leaves no room for the option', { skip: md5Skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [h] = makeHosts(t, 1);
  const n = 3;
  const control = await md5Conversations(dir, h, 7000, n, ['plain']);
  t.equal(control.client.res.status, 0, 'without MD5: the conversations ran');
  t.equal(control.server.res.status, 0, 'without MD5: the server answered them');
  t.equal(control.client.counters.tcpOptionsWritten, n, 'without MD5: the client wrote an option per request');
  t.equal(control.server.counters.tcpOptionsReceived, n, 'which the server accepted');
  dropsAre(t, control.client.counters, {}, 'without MD5, client: ');
  dropsAre(t, control.server.counters, {}, 'without MD5, server: ');

  const { client, server } = await md5Conversations(dir, h, 7001, n, []);
  t.equal(client.res.status, 0, 'with MD5: the conversations ran (exit 3: the kernel has no TCP-MD5)');
  t.equal(server.res.status, 0, 'the server answered them');
  // Each connection's request is one data segment that starts a record (the client's), and so is
  // each answer (the server's); loopback loses nothing, so none is sent twice.
  dropsAre(t, client.counters, { tcpOptionNoSpace: n }, 'client: ');
  dropsAre(t, server.counters, { tcpOptionNoSpace: n }, 'server: ');
  t.equal(client.counters.tcpOptionsWritten + server.counters.tcpOptionsWritten, 0, 'no option was written');
  t.equal(server.counters.tcpOptionsReceived, 0, 'none was received');
  t.equal(count(server.events, 'recv', 'tcp'), 0, "the server never adopted the client's record");
});

/**
 * A record lost for want of option room is counted once, on the segment that holds its first
 * byte, though every segment sent while that byte is unacknowledged asks for room (a 1 MiB
 * write of one record is several segments: it counted 2 before opt_reserve checked snd_nxt).
 */

t.test('tcpOptionNoSpace: one record in a write of several segments is one option missing', { skip: md5Skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [h] = makeHosts(t, 1);
  const size = String(1 << 20);
  // With room, this record takes one option (on the segment holding its first byte)...
  const control = await md5Conversations(dir, h, 7000, 1, [size, 'plain']);
  t.equal(control.client.res.status, 0, 'without MD5: the conversation ran');
  t.equal(control.client.counters.tcpOptionsWritten, 1, 'without MD5: one option for the one record');
  dropsAre(t, control.client.counters, {}, 'without MD5, client: ');
  // ...so without room, one option is missing: on the client, and on the server for its answer.
  const { client, server } = await md5Conversations(dir, h, 7001, 1, [size]);
  t.equal(client.res.status, 0, 'with MD5: the conversation ran');
  t.equal(server.res.status, 0, 'the server answered');
  t.equal(client.counters.tcpOptionNoSpace, 1, 'client: tcpOptionNoSpace = 1, the one record');
  dropsAre(t, client.counters, { tcpOptionNoSpace: client.counters.tcpOptionNoSpace }, 'client, the other counters: ');
  dropsAre(t, server.counters, { tcpOptionNoSpace: 1 }, 'server: ');
});

t.test('tcpOptionBoundaries: a segment holding bytes of two records', { skip: skip ?? false }, async (t) => {
  const rounds = 3;
  // Each round, 100 bytes under the parent's record and 100 under a child's leave corked in one segment.
  const { res, counters: c } = await traced({ command: PY, args: [path.join(FIXTURES, 'cork.py'), String(rounds)] });
  t.equal(res.status, 0, 'every round read its 200 bytes');
  dropsAre(t, c, { tcpOptionBoundaries: rounds });
  t.equal(c.tcpOptionsWritten, rounds, "one option per segment, naming the child's record");
  t.equal(c.tcpOptionsReceived, rounds);
});

/** The traced tcp_node.py server on host b, trusting host a's network, and a raw-IP peer on a. */
async function hostilePeer(t: T, fixture: string, args: string[]) {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const server = inNs(b.ns, [PY, path.join(FIXTURES, 'tcp_node.py'), 'server', b.addr, '7000', path.join(dir, 'ready')], { trust: [subnet(a)] });
  const peer = await plain('ip', ['netns', 'exec', a.ns, PY, path.join(FIXTURES, fixture), b.addr, '7000', '253', '0xc5a7', ...args]);
  const srv = await server;
  t.equal(peer.status, 0, peer.stderr);
  t.equal(srv.res.status, 0, 'the traced server survived');
  t.equal(peer.stdout, 'ok:hello\n', 'and answered the same bytes');
  return srv;
}

t.test('tcpOptionMalformed: the hostile peer sends two malformed options', { skip: skip ?? false }, async (t) => {
  // One truncated option, one of a wrong version (test/fixtures/hostile.py).
  const { counters: c } = await hostilePeer(t, 'hostile.py', []);
  dropsAre(t, c, { tcpOptionMalformed: 2 });
  t.equal(c.tcpOptionsReceived, 0, 'none was accepted');
});

t.test('tcpOptionStale: options for bytes older than the last record, from a reordering peer', { skip: skip ?? false }, async (t) => {
  const trace = newTraceId();
  // Record A at offset 2 is accepted; then B at offset 1 and C at offset 0 start before A: 2 stale.
  const { counters: c, events } = await hostilePeer(t, 'stale.py', [trace]);
  dropsAre(t, c, { tcpOptionStale: 2 });
  t.equal(c.tcpOptionsReceived, 1, 'A was accepted');
  const recvs = events.filter((e) => e.type === 'recv' && e.channel?.kind === 'tcp');
  t.equal(recvs.length, 1, 'the server adopted one record');
  t.match(recvs[0], { parents: ['000000000000000a'], record: { traceId: trace } }, 'A, not a stale one');
});

t.test('tcpOptionDuplicate: segments carrying two options of ours, from a hostile peer', { skip: skip ?? false }, async (t) => {
  const trace = newTraceId();
  // Two segments, each with a well-formed option and an 8-byte one (test/fixtures/duplicate.py): neither is taken.
  const { counters: c, events } = await hostilePeer(t, 'duplicate.py', [trace]);
  dropsAre(t, c, { tcpOptionDuplicate: 2 });
  t.equal(c.tcpOptionsReceived, 0, 'neither option of either segment was taken');
  t.notOk(events.some((e) => e.record.traceId === trace), 'no event carries their trace');
});

t.test('skStorageFailures: socket storage refused by net.core.optmem_max', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [h] = makeHosts(t, 1);
  const node = path.join(FIXTURES, 'tcp_node.py');
  const optmem = (v: string) => {
    try {
      execFileSync('ip', ['netns', 'exec', h.ns, 'sh', '-c', `echo ${v} > /proc/sys/net/core/optmem_max`], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new Error(`this kernel does not let a network namespace set its own net.core.optmem_max: ${(err as Error).message}`);
    }
  };
  const converse = (tag: string) =>
    inNs(h.ns, ['sh', '-c', `"$0" "$1" server 127.0.0.1 7000 "$2" & "$0" "$1" client 127.0.0.1 7000 > "$3"; wait`, PY, node, path.join(dir, `ready-${tag}`), path.join(dir, `out-${tag}`)]);
  const control = await converse('control');
  t.equal(control.res.status, 0);
  t.equal(fs.readFileSync(path.join(dir, 'out-control'), 'utf8'), 'ok:hello\n');
  dropsAre(t, control.counters, {}, 'default optmem_max: ');
  t.same([control.counters.sends, control.counters.recvs], [2, 2], 'default optmem_max: both TCP hops carried records');

  // Socket storage is charged to the socket's option memory (sk_omem_alloc), capped per network namespace.
  optmem('0');
  const { res, counters: c } = await converse('zero');
  t.equal(res.status, 0);
  t.equal(fs.readFileSync(path.join(dir, 'out-zero'), 'utf8'), 'ok:hello\n', 'the conversation is unchanged');
  // Every TCP send (sk_out) and receive (sk_in) syscall tries to create its socket's storage and
  // fails: the client's send, the server's receive, the server's send, the client's receive.
  dropsAre(t, c, { skStorageFailures: 4 });
  t.same([c.sends, c.recvs, c.tcpOptionsWritten], [0, 0, 0], 'no TCP hop carried a record');
});

/**
 * The memory cgroup of this process, v1 or v2: where a child group may be
 * made, which files limit it, and where this process goes back to.
 */
function memcg(): { make: string; home: string; limit: string; usage: string } | string {
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const self = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  for (const line of info) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const [fstype, , opts] = post.split(' ');
    const [, , , root, mount] = pre.split(' ');
    if (root !== '/') continue;
    if (fstype === 'cgroup' && opts.split(',').includes('memory')) {
      const mine = self.map((l) => l.split(':')).find((p) => p.length >= 3 && p[1].split(',').includes('memory'));
      if (!mine) continue;
      const home = path.join(mount, mine.slice(2).join(':'));
      return { make: home, home, limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes' };
    }
    if (fstype === 'cgroup2' && fs.readFileSync(path.join(mount, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory')) {
      if (!fs.readFileSync(path.join(mount, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory'))
        return `the cgroup v2 root (${mount}) does not enable the memory controller for its children`;
      const mine = self.find((l) => l.startsWith('0::'));
      if (!mine) continue;
      return { make: mount, home: path.join(mount, mine.slice(3)), limit: 'memory.max', usage: 'memory.current' };
    }
  }
  return 'no memory cgroup controller is mounted';
}

t.test('taskStorageFailures: task storage refused by the memory cgroup charged for the maps', { skip: skip ?? false }, async (t) => {
  const bin = dropsBin(t);
  const cg = memcg();
  if (typeof cg === 'string') {
    t.fail(cg);
    return;
  }
  // The shim's maps are charged to the memory cgroup of the process that creates them: this one,
  // while it is in `dir`. Once the command runs, everything leaves `dir` and it is limited to what
  // it holds. Task storage elements come from per-CPU caches refilled without blocking, which the
  // limit refuses: once the caches are empty, forks find no storage for their children.
  const dir = path.join(cg.make, `cw-drops-${process.pid}`);
  fs.mkdirSync(dir);
  const procs = (d: string) => fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
  const leave = () => {
    for (const p of procs(dir))
      try {
        fs.writeFileSync(path.join(cg.home, 'cgroup.procs'), p);
      } catch {
        /* exited */
      }
  };
  t.teardown(async () => {
    leave();
    for (let i = 0; i < 50; i++) {
      try {
        fs.rmdirSync(dir);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  const limit = () => {
    const file = path.join(dir, cg.limit);
    const usage = () => Number(fs.readFileSync(path.join(dir, cg.usage), 'utf8'));
    // One page below first: that drains the per-CPU charge caches (the write may fail: nothing to reclaim).
    try {
      fs.writeFileSync(file, String(usage() - 4096));
    } catch {
      /* EBUSY */
    }
    for (let extra = 0; extra < 1 << 20; extra += 4096)
      try {
        fs.writeFileSync(file, String(usage() + extra));
        return;
      } catch {
        /* EBUSY: usage grew meanwhile */
      }
    throw new Error(`could not limit ${dir}`);
  };
  fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
  const N = 2000; // the per-CPU caches and what this process frees meanwhile held 150 to 700 here
  const { res, events, counters: c } = await traced({
    command: bin,
    args: ['hold', String(N)],
    // Before the command continues: this process leaves, and (cgroup v1) so does its wrapper, waiting for its go.
    onStart: () => {
      leave();
      limit();
    },
  }).finally(leave);
  t.equal(res.status, 0, 'every fork succeeded: only the shim went without');
  const tracked = count(events, 'fork');
  t.ok(c.taskStorageFailures > 0, `the limit refused task storage (${c.taskStorageFailures} children untracked, ${tracked} tracked)`);
  // A fork either gave its child storage (a fork event, and the child's exit) or counted a failure.
  t.equal(tracked + c.taskStorageFailures, N, `tracked + untracked = ${N} children`);
  t.equal(count(events, 'exit'), tracked + 1, 'the tracked children and the parent exited tracked');
  dropsAre(t, c, { taskStorageFailures: c.taskStorageFailures });
});

t.test('schedulerLost: priority changes with nobody draining the scheduler\'s ring buffer', { skip: skip ?? false, timeout: 120000 }, async (t) => {
  // The reader alternates one-byte reads between two connections from runs of priority 5 and 6:
  // each read is a priority change. The scheduler's switch is turned on with no reactor to drain
  // its ring buffer, so once it is full every further report is lost: reported + lost = 2N
  // priority changes + 1 (the reader thread's exit, reported since it was told of).
  const N = 2000;
  const fixture = path.join(FIXTURES, 'sched-alternate.py');
  const portFile = path.join(tmpdir(t), 'port');
  const reader = run({
    summary: false,
    command: PY,
    args: [fixture, 'reader', String(N), portFile],
    onStart: ({ shim }) => {
      const policy = Buffer.alloc(8);
      policy.writeUInt8(1, 1); // struct cw_policy.sched
      shim.map('policy').update(Buffer.alloc(4), policy);
    },
  });
  await waitFor(() => fs.existsSync(portFile), 20000, 'the reader to listen');
  const port = fs.readFileSync(portFile, 'utf8');
  const writers = [5, 6].map((p) =>
    plain(process.execPath, [path.join(__dirname, '..', 'bin', 'causeway.js'), 'run', '-q', '--no-sample', '--priority', String(p), '--', PY, fixture, 'writer', port, String(N)]),
  );
  const res = await reader;
  for (const w of await Promise.all(writers)) t.equal(w.status, 0, w.stderr);
  t.equal(res.status, 0, 'the reader read every byte');
  const c = res.counters!;
  t.equal(c.recvs, 2 * N, 'every read adopted a record');
  t.equal(c.schedulerReports + c.schedulerLost, 2 * N + 1, `reported ${c.schedulerReports} + lost ${c.schedulerLost} = ${2 * N} priority changes and an exit`);
  t.ok(c.schedulerLost > 0, 'the ring buffer filled up');
  dropsAre(t, c, { schedulerLost: c.schedulerLost });
});
