/**
 * Propagation through real pipelines of unmodified programs: every reader
 * adopts the root's trace through pipe receive events whose parents are the
 * writer's send events.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { bpfUnavailable, causeway, EventJson, readEvents, tmpdir } from './helpers';
import { newTraceId } from '../src/kernel/record';

const skip = bpfUnavailable();

/**
 * The pid whose first exec was of a file named `name`. Only the first exec
 * counts: Debian's gunzip is a shell script that execs gzip in turn.
 */
function pidOf(events: EventJson[], name: string): number {
  const first = new Map<number, EventJson>();
  for (const e of events) if (e.type === 'exec' && !first.has(e.pid)) first.set(e.pid, e);
  const e = [...first.values()].find((e) => path.basename(e.path ?? '') === name);
  if (!e) throw new Error(`no exec of ${name}`);
  return e.pid;
}

t.test('seq | gzip | gunzip | wc', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const trace = newTraceId();
  const r = await causeway(['run', '--trace', trace, '--events', file, '--', 'sh', '-c', 'seq 1 200000 | gzip -1 | gunzip | wc -l']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '200000', 'the output is unchanged');
  t.match(r.stderr, /0 dropped/, 'nothing was dropped');

  const events = readEvents(file);
  const byId = new Map(events.map((e) => [e.event, e]));
  for (const e of events) {
    t.match(e, { type: /^(fork|exec|exit|send|recv|join)$/, ts: /^\d{19}$/, trace: /^[0-9a-f]{32}$/, event: /^[0-9a-f]{16}$/ });
    t.equal(e.trace, trace, `${e.type} of ${e.comm} carries the root's trace`);
  }
  const order = ['seq', 'gzip', 'gunzip', 'wc'].map((n) => pidOf(events, n));
  const rootPid = pidOf(events, 'sh');
  for (let i = 1; i < order.length; i++) {
    const [writer, reader] = [order[i - 1], order[i]];
    const recvs = events.filter((e) => e.pid === reader && e.type === 'recv' && e.channel?.kind === 'pipe');
    t.ok(recvs.length >= 1, `process ${reader} received through a pipe`);
    const recv = recvs[0];
    t.equal(recv.parents.length, 1);
    const send = byId.get(recv.parents[0]);
    t.ok(send, 'the parent event was reported');
    t.equal(send?.type, 'send', 'the parent is a send');
    t.equal(send?.pid, writer, `the send is by the upstream process ${writer}`);
    t.same(send?.channel, recv.channel, 'on the same pipe');
    // And the send leads back to the root: first parents chain to the root's exec of sh.
    let cur = send!;
    for (let hops = 0; hops < 1000 && byId.has(cur.parents[0] ?? ''); hops++) cur = byId.get(cur.parents[0])!;
    t.match(cur, { type: 'exec', path: /\/sh$/, pid: rootPid }, `the chain from ${writer}'s send ends at the root`);
  }
  // The event stream is a DAG: each parent is an earlier event.
  const ids = new Set<string>();
  let ok = true;
  for (const e of [...events].sort((a, b) => (BigInt(a.ts) < BigInt(b.ts) ? -1 : 1))) {
    for (const p of e.parents) if (byId.has(p) && !ids.has(p) && BigInt(byId.get(p)!.ts) > BigInt(e.ts)) ok = false;
    ids.add(e.event);
  }
  t.ok(ok, 'parents come before their children');
});

t.test('a FIFO between two unrelated processes of one run', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const fifo = path.join(dir, 'fifo');
  // A Python writer and a reader started separately by the root: neither
  // inherits the other's descriptors; they meet only at the FIFO's path.
  const script = [
    `mkfifo ${fifo}`,
    `python3 -c 'import os,sys; f=open(sys.argv[1],"wb",0); f.write(b"x"*5000); f.close()' ${fifo} &`,
    `wc -c < ${fifo}`,
    'wait',
  ].join('\n');
  const r = await causeway(['run', '--events', file, '--', 'sh', '-c', script]);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '5000');
  const events = readEvents(file);
  const send = events.find((e) => e.type === 'send' && e.comm.startsWith('python3'));
  const recv = events.find((e) => e.type === 'recv' && e.comm === 'wc');
  t.ok(send && recv, 'the writer sent and the reader received');
  t.equal(send?.channel?.kind, 'fifo');
  t.same(recv?.channel, send?.channel, 'through the FIFO');
  t.same(recv?.parents, [send?.event], "the reader's parent is the writer's send");
  t.equal(recv?.trace, send?.trace);
  t.equal(recv?.channel?.ino, fs.statSync(fifo).ino, "the channel's identity is the FIFO's inode");
});

t.test('unsampled records propagate without events', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const r = await causeway(['run', '--no-sample', '--events', file, '--', 'sh', '-c', 'seq 1 1000 | wc -l']);
  t.equal(r.status, 0);
  t.equal(r.stdout.trim(), '1000');
  t.same(readEvents(file), [], 'no events');
  t.match(r.stderr, /[1-9]\d* receives carried records/, 'the record still rode the pipe');
});

t.test('two runs at once do not see each other', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [fa, fb] = [path.join(dir, 'a.jsonl'), path.join(dir, 'b.jsonl')];
  const [ta, tb] = [newTraceId(), newTraceId()];
  const script = 'for i in 1 2 3 4 5; do seq 1 2000 | wc -l; sleep 0.05; done';
  const [ra, rb] = await Promise.all([
    causeway(['run', '--trace', ta, '--events', fa, '--', 'sh', '-c', script]),
    causeway(['run', '--trace', tb, '--events', fb, '--', 'sh', '-c', script]),
  ]);
  t.equal(ra.status, 0);
  t.equal(rb.status, 0);
  const [ea, eb] = [readEvents(fa), readEvents(fb)];
  t.ok(ea.length > 10 && eb.length > 10, 'both runs reported');
  t.ok(ea.every((e) => e.trace === ta), 'run A reports only its trace');
  t.ok(eb.every((e) => e.trace === tb), 'run B reports only its trace');
  const pidsA = new Set(ea.map((e) => e.pid));
  t.notOk(eb.some((e) => pidsA.has(e.pid)), 'no process appears in both');
});
