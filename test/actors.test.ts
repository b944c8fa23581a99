/**
 * Actors (meta-applications): loading them as plugins, every hook on real
 * processes, Causeway's four operations on threads, processes and channels,
 * failing and slow actors, actor-area fields, and kernel-side policy.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { bpfUnavailable, causeway, readEvents, tmpdir, waitFor } from './helpers';
import { run } from '../src/runtime/runtime';
import { Actor, ActorContext, channelTarget } from '../src/actor/types';
import { CausalEvent } from '../src/kernel/events';
import { CausalRecord, newRecord } from '../src/kernel/record';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
const WRITER = path.join(FIXTURES, 'ops_writer.py');
const READER = path.join(FIXTURES, 'ops_reader.py');

/** Runs CMD with one library actor; returns the events and the result. */
async function withActor(actor: Actor, script: string, root?: CausalRecord) {
  const events: CausalEvent[] = [];
  const res = await run({ command: 'sh', args: ['-c', script], actors: [actor], onEvents: (b) => events.push(...b), summary: false, record: root });
  return { res, events };
}

const isWriter = (e: CausalEvent) => e.type === 'exec' && e.path === WRITER;
const readerRecv = (events: CausalEvent[], pid?: number) =>
  events.filter((e) => (e.type === 'recv' || e.type === 'join') && e.channel?.kind === 'pipe' && (pid === undefined || e.pid === pid));
const pidOfExec = (events: CausalEvent[], file: string) => events.find((e) => e.type === 'exec' && e.path === file)?.pid;

t.test('a user actor module (ESM) gets every hook, in batches', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'seen.json');
  const trace = newRecord().traceId;
  // Two subshells write into one pipe before the reader reads: one read spans both (a join).
  // The last cat reads stdin, which the test writes from outside the run (ingress).
  const script = `echo c | cat; ( (echo a); (echo b) ) | (sleep 0.4; cat) ; cat`;
  const r = await causeway(['run', '--trace', trace, '--actor', `${FIXTURES}/actor_recorder.mjs:${JSON.stringify({ out })}`, '--', 'sh', '-c', script], {
    input: 'from outside\n',
  });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, "c\na\nb\nfrom outside\n", 'the output is unchanged');
  const seen = JSON.parse(fs.readFileSync(out, 'utf8')) as { hook: string; type?: string; comm?: string; trace?: string; rootPid?: number | null; batches?: number[]; actor?: string }[];
  t.equal(seen[0].hook, 'start', 'start comes first');
  t.equal(seen[0].rootPid, null, 'before the command exists');
  const last = seen[seen.length - 1];
  t.equal(last.hook, 'stop', 'stop comes last');
  t.ok(typeof last.rootPid === 'number' && last.rootPid > 0, 'after it started');
  for (const hook of ['fork', 'exec', 'exit', 'send', 'recv', 'join', 'ingress']) {
    const calls = seen.filter((s) => s.hook === hook);
    t.ok(calls.length >= 1, `${hook} was called`);
    t.ok(calls.every((c) => c.type === hook), `${hook} gets ${hook} events`);
    t.ok(calls.every((c) => c.trace === trace && c.actor === 'recorder'), `${hook} events carry the root's trace`);
  }
  const ingress = seen.find((s) => s.hook === 'ingress');
  t.equal(ingress?.comm, 'cat', 'the ingress is the last cat reading what the test wrote');
  const batches = last.batches ?? [];
  const hooked = seen.filter((s) => s.hook !== 'start' && s.hook !== 'stop').length;
  t.equal(batches.reduce((a, b) => a + b, 0), hooked, 'every event came through events() in batches, once');
  t.match(r.stderr, /actor recorder: \d+ delivered/, 'the summary names the actor');
});

t.test('operations on processes and threads', { skip: skip ?? false }, async (t) => {
  const script = `${WRITER} 0.8 x 100 | ${READER} 1.6`;

  t.test('write changes a process record in place', async (t) => {
    const root = newRecord();
    const got: { before?: CausalRecord | null; after?: CausalRecord | null } = {};
    const { res, events } = await withActor(
      {
        name: 'op',
        exec(e, ctx) {
          if (e.path !== WRITER) return;
          got.before = ctx.read({ pid: e.pid });
          ctx.write({ pid: e.pid }, { priority: 9 });
          got.after = ctx.read({ tid: e.tid });
        },
      },
      script,
      root,
    );
    t.equal(res.status, 0);
    t.equal(got.before?.traceId, root.traceId, 'read: the writer holds the root trace');
    t.equal(got.before?.priority, 0);
    t.equal(got.after?.priority, 9, 'read after write sees the change');
    t.equal(got.after?.traceId, root.traceId, 'write keeps the trace');
    const recv = readerRecv(events, pidOfExec(events, READER));
    t.equal(recv.length, 1, 'the reader received once');
    t.equal(recv[0]?.record.priority, 9, 'the reader adopted the changed record');
    t.equal(recv[0]?.record.traceId, root.traceId);
  });

  t.test('inject gives a thread a new trace', async (t) => {
    let injected: CausalRecord | undefined;
    const { res, events } = await withActor(
      {
        name: 'op',
        exec(e, ctx) {
          if (e.path === WRITER) injected = ctx.inject({ tid: e.tid }, { priority: 4 });
        },
      },
      script,
    );
    t.equal(res.status, 0);
    t.ok(injected, 'inject returned the record');
    const recv = readerRecv(events, pidOfExec(events, READER));
    t.equal(recv[0]?.record.traceId, injected?.traceId, "the reader adopted the injected trace");
    t.equal(recv[0]?.record.priority, 4);
    const send = events.find((e) => e.type === 'send' && e.pid === pidOfExec(events, WRITER));
    t.same(send?.parents, [injected?.eventId], "the writer's send follows the injected record");
  });

  t.test('destroy leaves a process with no record to carry', async (t) => {
    const { res, events } = await withActor(
      {
        name: 'op',
        exec(e, ctx) {
          if (e.path === WRITER) ctx.destroy({ pid: e.pid });
        },
      },
      script,
    );
    t.equal(res.status, 0);
    const writer = pidOfExec(events, WRITER);
    t.equal(events.filter((e) => e.pid === writer && e.type === 'send').length, 0, 'the writer sends nothing recorded');
    t.equal(readerRecv(events, pidOfExec(events, READER)).length, 0, 'the reader adopts nothing');
    t.ok(events.some((e) => e.type === 'exit' && e.pid === pidOfExec(events, READER)), 'the reader keeps its own record');
  });

  t.test('targets that do not exist or are outside the run', async (t) => {
    const errors: string[] = [];
    const { res } = await withActor(
      {
        name: 'op',
        start(ctx) {
          for (const target of [{ pid: 1 }, { pid: 4194303 }, { tid: process.pid }])
            try {
              ctx.read(target);
              errors.push('no error');
            } catch (err) {
              errors.push(`${(err as Error).name}: ${(err as Error).message}`);
            }
        },
      },
      'true',
    );
    t.equal(res.status, 0);
    t.match(errors[0], /^TargetError: process 1 is not part of this run/);
    t.match(errors[1], /^TargetError: process 4194303 does not exist/);
    t.match(errors[2], /^TargetError: thread \d+ is not part of this run/);
  });
});

t.test('operations on a channel: the record its pending bytes carry', { skip: skip ?? false }, async (t) => {
  // The writer writes at once and exits; the reader reads a second later: the bytes wait in the pipe.
  const script = `${WRITER} 0 x 100 | ${READER} 1.2`;

  t.test('read and inject', async (t) => {
    let seenBySend: CausalRecord | null = null;
    let injected: CausalRecord | undefined;
    let sendEvent: CausalEvent | undefined;
    const { res, events } = await withActor(
      {
        name: 'op',
        send(e, ctx) {
          if (e.channel?.kind !== 'pipe' || e.comm !== 'ops_writer.py' || injected) return;
          const target = channelTarget(e)!;
          sendEvent = e;
          seenBySend = ctx.read(target);
          injected = ctx.inject(target, { priority: 5 });
        },
      },
      script,
    );
    t.equal(res.status, 0);
    t.ok(sendEvent, 'the send was seen');
    t.equal(seenBySend?.traceId, sendEvent?.record.traceId, 'read: the pending bytes carry the send');
    t.equal(seenBySend?.eventId, sendEvent?.record.eventId);
    const recv = readerRecv(events, pidOfExec(events, READER));
    t.equal(recv[0]?.record.traceId, injected?.traceId, 'the reader adopted the record injected into the pipe');
    t.equal(recv[0]?.record.priority, 5);
    t.same(recv[0]?.parents, [injected?.eventId], 'its parent is the injected record');
  });

  t.test('write and destroy', async (t) => {
    for (const op of ['write', 'destroy'] as const) {
      const { res, events } = await withActor(
        {
          name: 'op',
          send(e, ctx) {
            if (e.channel?.kind !== 'pipe' || e.comm !== 'ops_writer.py') return;
            if (op === 'write') ctx.write(channelTarget(e)!, { priority: 7 });
            else ctx.destroy(channelTarget(e)!);
          },
        },
        script,
      );
      t.equal(res.status, 0);
      const recv = readerRecv(events, pidOfExec(events, READER));
      if (op === 'write') {
        t.equal(recv[0]?.record.priority, 7, 'write: the reader adopted the changed record');
        t.equal(recv[0]?.record.traceId, events[0].record.traceId, 'write: same trace');
      } else {
        t.equal(recv.length, 0, 'destroy: the reader adopted nothing');
        t.ok(res.counters!.ingressReads >= 1, 'destroy: the bytes were read as bytes with no record');
      }
    }
  });

  t.test('an fd target: the pipe a process reads', async (t) => {
    let viaFd: CausalRecord | null = null;
    let send: CausalEvent | undefined;
    let reader: number | undefined;
    // Whichever of the two events comes second reads the reader's stdin.
    const look = (ctx: ActorContext) => {
      if (send && reader && !viaFd) viaFd = ctx.read({ pid: reader, fd: 0 });
    };
    const { res } = await withActor(
      {
        name: 'op',
        send(e, ctx) {
          if (e.channel?.kind === 'pipe' && e.comm === 'ops_writer.py') send = e;
          look(ctx);
        },
        exec(e, ctx) {
          if (e.path === READER) reader = e.pid;
          look(ctx);
        },
      },
      script,
    );
    t.equal(res.status, 0);
    t.equal(viaFd?.eventId, send?.record.eventId, "the reader's stdin holds the writer's send");
  });
});

t.test('an actor that throws and one that is slow change nothing for the programs', { skip: skip ?? false }, async (t) => {
  const script = 'seq 1 100000 | md5sum; for i in $(seq 1 60); do echo $i | cat; done | wc -l; exit 3';
  const plain = await causeway(['run', '-q', '--', 'sh', '-c', script]);
  const r = await causeway([
    'run',
    '--actor', `${FIXTURES}/actor_thrower.cjs`,
    '--actor', `${FIXTURES}/actor_slow.cjs:delay=200`,
    '--actor-queue', '20',
    '--', 'sh', '-c', script,
  ]);
  t.equal(plain.status, 3);
  t.equal(r.status, 3, 'the exit status is unchanged');
  t.equal(r.stdout, plain.stdout, 'the output is unchanged');
  t.match(r.stderr, /actor "thrower" failed in start: boom in start/, 'a failure is reported with its hook');
  t.match(r.stderr, /actor "thrower": further failures are only counted/);
  const m = /actor thrower: \d+ delivered(?:, DROPPED \d+)?, (\d+) hook failure/.exec(r.stderr);
  t.ok(m && Number(m[1]) > 3, `every failure is counted (${m?.[1]})`);
  const s = /actor slow: (\d+) delivered, DROPPED (\d+)/.exec(r.stderr);
  t.ok(s, 'the slow actor dropped events, and the summary says so');
  const total = Number(/causeway: (\d+) events/.exec(r.stderr)?.[1]);
  t.ok(s && Number(s[2]) > 0, `bounded: ${s?.[1]} delivered, ${s?.[2]} dropped`);
  t.equal(Number(s?.[1]) + Number(s?.[2]), total, 'every event was either delivered or counted as dropped');
});

t.test('actor fields: no collisions, and a declaration that does not fit', { skip: skip ?? false }, async (t) => {
  const got: Record<string, unknown> = {};
  const mk = (name: string, fields: Actor['fields'], values: Record<string, number | bigint | boolean>): Actor => ({
    name,
    fields,
    start(ctx) {
      ctx.write('root', { fields: values });
    },
    recv(e, ctx) {
      if (e.comm === 'cat') got[name] = ctx.fields(e.record);
    },
  });
  const events: CausalEvent[] = [];
  const res = await run({
    command: 'sh',
    args: ['-c', 'echo hi | cat'],
    summary: false,
    onEvents: (b) => events.push(...b),
    actors: [
      mk('alpha', [{ name: 'tenant', type: 'u32' }, { name: 'vip', type: 'flag' }, { name: 'hops', type: 'u8' }], { tenant: 0xfffffffe, vip: true, hops: 255 }),
      mk('beta', [{ name: 'budget', type: 'u64' }, { name: 'vip', type: 'flag' }, { name: 'class', type: 'u16' }], { budget: 2n ** 63n + 5n, vip: false, class: 0xbeef }),
    ],
  });
  t.equal(res.status, 0);
  t.same(got.alpha, { tenant: 0xfffffffe, vip: true, hops: 255 }, "alpha's fields arrive intact downstream");
  t.same(got.beta, { budget: 2n ** 63n + 5n, vip: false, class: 0xbeef }, "beta's fields arrive intact downstream");

  const marker = path.join(tmpdir(t), 'ran');
  const r = await causeway(['run', '--actor', `${FIXTURES}/actor_fat.cjs`, '--', 'touch', marker]);
  t.equal(r.status, 1, 'refused');
  t.match(r.stderr, /actor "fat" declares 40 bytes of fields.*32 bytes/, 'the error names the actor and the sizes');
  t.notOk(fs.existsSync(marker), 'the command was not started');
  t.notMatch(r.stderr, /causeway: \d+ events/, 'nor the shim');
  const bad = await causeway(['run', '--actor', 'no-such-actor', '--', 'true']);
  t.equal(bad.status, 1);
  t.match(bad.stderr, /no built-in actor "no-such-actor" \(built-in: ingress-mint, accountant, scheduler\)/);
});

t.test('kernel policy: the join rule', { skip: skip ?? false }, async (t) => {
  // Three writers, one after another, into one pipe; the reader reads all at once: a join of three.
  const script = `( ${WRITER} 0.5 a 10; ${WRITER} 0.5 b 10; ${WRITER} 0.5 c 10 ) | ${READER} 2.5`;
  const priorities = [3, 9, 1];
  for (const [rule, expected] of [['last', 1], ['first', 3], ['priority', 9]] as const) {
    let n = 0;
    const { res, events } = await withActor(
      {
        name: 'sched',
        start(ctx: ActorContext) {
          if (rule !== 'last') ctx.policy.joinRule(rule);
        },
        exec(e, ctx) {
          if (isWriter(e)) ctx.write({ pid: e.pid }, { priority: priorities[n++] });
        },
      },
      script,
    );
    t.equal(res.status, 0);
    const join = events.find((e) => e.type === 'join' && e.pid === pidOfExec(events, READER));
    t.equal(join?.parents.length, 3, `${rule}: one read joined three records`);
    t.equal(join?.record.priority, expected, `${rule}: adopted priority ${expected}`);
  }
});

t.test('kernel policy: minting on ingress, stripping on egress', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'events.jsonl');
  const ready = path.join(dir, 'ready');
  const port = 20000 + (process.pid % 20000);
  const root = newRecord().traceId;
  const once = path.join(FIXTURES, 'tcp_once.py');
  const done = causeway(['run', '--trace', root, '--events', file, '--actor', `ingress-mint:ports=${port}`, '--', once, 'serve', String(port), ready]);
  await waitFor(() => fs.existsSync(ready), 10000, 'the server');
  const ports: number[] = [];
  const before = Date.now();
  for (const text of ['one', 'two', 'quit'])
    await new Promise<void>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1', () => {
        ports.push(c.localPort!);
        c.end(text + '\n');
      });
      c.on('data', () => {});
      c.on('close', () => resolve());
      c.on('error', reject);
    });
  const r = await done;
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /minted=3/, 'three connections, three records minted');
  t.match(r.stderr, /ingress-mint: 3 inbound connection\(s\) on port\(s\) \d+ got a new trace/);
  const events = readEvents(file);
  const traces = ports.map((p) => events.find((e) => e.type === 'ingress' && (e as { minted?: boolean }).minted && e.channel?.remotePort === p)?.trace);
  t.ok(traces.every((x) => x && x !== root), 'each connection got a trace of its own');
  t.equal(new Set(traces).size, 3, 'three different traces');
  // The shim's ids begin with the time in ms (bpf/shim.bpf.c, new_trace_id): the store's index appends.
  const times = traces.map((x) => parseInt((x ?? '').slice(0, 12), 16));
  t.ok(times.every((ms) => ms >= before - 1000 && ms <= Date.now() + 1000), `the minted ids begin with the time of the connection: ${times.map((ms) => ms - before).join(', ')} ms after the first`);
  for (const [i, p] of ports.entries()) {
    const recv = events.find((e) => e.type === 'recv' && e.channel?.kind === 'tcp' && e.channel.remotePort === p);
    t.equal(recv?.trace, traces[i], `the server read connection ${i + 1} under its minted trace`);
    const reply = events.find((e) => e.type === 'send' && e.channel?.kind === 'tcp' && e.channel.remotePort === p);
    t.equal(reply?.trace, traces[i], `and answered under it`);
  }

  // Stripping: a traced client towards an outside server; the same run without the policy writes the option.
  const srv = net.createServer((s) => s.on('data', () => s.end('ok\n')));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => srv.close());
  const sport = (srv.address() as net.AddressInfo).port;
  const base = await causeway(['run', '--', once, 'send', String(sport), 'hello']);
  t.match(base.stderr, /tcpOptionsWritten=[1-9]/, 'without the policy the record goes out in the option');
  const stripped = await causeway(['run', '--actor', `${FIXTURES}/actor_strip.cjs:ports=${sport}`, '--', once, 'send', String(sport), 'hello']);
  t.equal(stripped.status, 0);
  t.equal(stripped.stdout.trim(), 'ok', 'the data is unchanged');
  t.notMatch(stripped.stderr, /tcpOptionsWritten/, 'with it, no option is written');
  t.match(stripped.stderr, /tcpOptionStripped=[1-9]/, 'and the stripped records are counted');
});

t.test("the README's example actor works on a real pipeline", { skip: skip ?? false }, async (t) => {
  const example = path.join(__dirname, '..', 'examples', 'slow-hops.mjs');
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  t.ok(readme.includes('```js\n' + fs.readFileSync(example, 'utf8') + '```'), 'the README shows examples/slow-hops.mjs as it is');
  const r = await causeway(['run', '--actor', `${example}:ms=50`, '--', 'sh', '-c', 'seq 1 3 | (sleep 0.2; cat) | wc -l']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '3');
  t.match(r.stderr, /slow-hops: seq -> cat over pipe: 1 hop\(s\), 1 at or over 50 ms/, 'the slow hop is found');
  t.match(r.stderr, /slow-hops: cat -> wc over pipe: 1 hop\(s\), 0 at or over 50 ms/, 'the fast one is not slow');
});
