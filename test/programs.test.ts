/**
 * Real programs in several languages: threads, Node's libuv pipes, and C
 * programs that move bytes with splice(2) and tee(2).
 */
import t from 'tap';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, causeway, EventJson, readEvents, tmpdir } from './helpers';
import { newTraceId } from '../src/kernel/record';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');

function chainOk(t: Tap.Test, events: EventJson[], reader: (e: EventJson) => boolean, writer: (e: EventJson) => boolean, what: string) {
  const byId = new Map(events.map((e) => [e.event, e]));
  const recv = events.find((e) => e.type === 'recv' && reader(e));
  t.ok(recv, `${what}: the reader received`);
  const send = recv && byId.get(recv.parents[0]);
  t.ok(send && send.type === 'send' && writer(send), `${what}: its parent is the writer's send`);
  t.same(send?.channel, recv?.channel, `${what}: on one channel`);
}

t.test('a thread inherits its creator\'s record', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'ev.jsonl');
  const trace = newTraceId();
  const py = 'import threading,os\nt=threading.Thread(target=lambda: os.write(1, b"from-thread\\n"))\nt.start(); t.join()';
  const r = await causeway(['run', '--trace', trace, '-e', file, '--', 'sh', '-c', `python3 -c '${py}' | cat`]);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, 'from-thread\n');
  const events = readEvents(file);
  const fork = events.find((e) => e.type === 'fork' && e.child && e.child.tid !== e.child.pid);
  t.ok(fork, 'a thread fork event');
  t.match(fork, { thread: true, trace });
  const send = events.find((e) => e.type === 'send' && fork && e.tid === fork.child!.tid);
  t.ok(send, 'the new thread sent');
  t.equal(send?.pid, fork?.pid, 'from the same process');
  t.equal(send?.trace, trace, "with the creator's trace");
  chainOk(t, events, (e) => e.comm === 'cat', (e) => e.tid === fork?.child?.tid, 'thread -> cat');
});

t.test('Node writes, Python reads', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'ev.jsonl');
  const script = `node -e 'process.stdout.write("x".repeat(300000))' | python3 -c 'import sys; print(len(sys.stdin.buffer.read()))'`;
  const r = await causeway(['run', '-e', file, '--', 'sh', '-c', script]);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '300000');
  const events = readEvents(file);
  chainOk(t, events, (e) => e.comm.startsWith('python3'), (e) => e.comm === 'node', 'node -> python3');
});

t.test('splice(2) and tee(2) carry records', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const bin = path.join(dir, 'splicer');
  execFileSync('cc', ['-O2', '-o', bin, path.join(FIXTURES, 'splicer.c')]);
  for (const mode of ['splice', 'tee']) {
    const file = path.join(dir, `${mode}.jsonl`);
    const r = await causeway(['run', '-e', file, '--', 'sh', '-c', `seq 1 50000 | ${bin} ${mode} | wc -l`]);
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout.trim(), '50000', `${mode}: output unchanged`);
    const events = readEvents(file);
    chainOk(t, events, (e) => e.comm === 'splicer', (e) => e.comm === 'seq', `${mode}: seq -> splicer`);
    chainOk(t, events, (e) => e.comm === 'wc', (e) => e.comm === 'splicer', `${mode}: splicer -> wc`);
  }
});

// Event ids come from a counter per CPU mixed by splitmix64 (bpf/lib/events.bpf.h new_id), command names
// from two loads of task->comm: a busy run on both CPUs, programs named at exec and renamed by prctl.
t.test('event ids are unique and command names right under load on every CPU', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const bin = path.join(dir, 'pingpong');
  execFileSync('cc', ['-O2', '-o', bin, path.join(__dirname, '..', 'bench', 'pingpong.c')]);
  const file = path.join(dir, 'ev.jsonl');
  const script = `${bin} pipe 1 1 ${dir}/a -1 & ${bin} unix 1 1 ${dir}/b -1 & ` +
    `python3 -c 'import ctypes, os; ctypes.CDLL(None).prctl(15, b"renamed-worker"); r, w = os.pipe(); os.write(w, b"x"); os.read(r, 1)'; wait`;
  const r = await causeway(['run', '-e', file, '--', 'sh', '-c', script]);
  t.equal(r.status, 0, r.stderr);
  const events = readEvents(file);
  const ids = events.map((e) => e.event);
  t.ok(events.length > 50000, `a busy run (${events.length} events)`);
  t.equal(new Set(ids).size, ids.length, 'no two events share an id');
  t.notOk(ids.some((id) => !/^0000[0-9a-f]{12}$/.test(id) || /^0+$/.test(id)), 'every id is 48 bits and not zero');
  const pairs = new Set(events.filter((e) => e.comm === 'pingpong').map((e) => e.pid));
  t.ok(pairs.size >= 4, `both ping-pong pairs made events (${pairs.size} processes)`);
  t.ok(events.some((e) => e.comm === 'renamed-worker' && e.type === 'send'), 'a thread renamed by prctl has its new name in its events');
  t.ok(events.every((e) => e.comm.length > 0 && !e.comm.includes('\u0000')), 'no empty or padded command name');
});
