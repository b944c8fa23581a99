/**
 * causeway/sdk without the kernel: the slot is an ArrayBuffer laid out as
 * struct cw_sdk_slot (bpf/causeway.h), attached with _attachForTest. Real
 * sockets, child processes and OTel spans write it; the test reads it back.
 */
import t from 'tap';
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter, once } from 'node:events';
import childProcess, { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { context, trace, TraceFlags } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import * as sdk from '../src/sdk';
import { CausewayContextManager, kernelSpanContext } from '../src/sdk/otel';
import { SDK_SLOT_BYTES, SDK_SLOTS, SdkNative } from '../src/sdk/slot';
import { native } from '../src/kernel/native';
import { tmpdir } from './helpers';
import { CausalRecord, decodeRecord, encodeRecord, newRecord } from '../src/kernel/record';
import { FieldRegistry } from '../src/actor/fields';

delete process.env[sdk.SOCKET_ENV];
const addonLoadedByImport = Object.keys(require.cache).some((k) => k.endsWith('.node'));
/** Taken before the SDK installs its sync points: calls through it reach no sync point. */
const spawnSyncBeforeAttach = childProcess.spawnSync;

const SLOT = 3;
const memory = new ArrayBuffer(SDK_SLOTS * SDK_SLOT_BYTES);
const mem = Buffer.from(memory);
const base = SLOT * SDK_SLOT_BYTES;
const app = () => ({
  gen: mem.readUInt32LE(base),
  active: mem.readUInt32LE(base + 4),
  rec: decodeRecord(mem, base + 64),
});
/** What the kernel does when the thread adopts a record: kern_rec, then kern_gen. */
function kernelAdopts(rec: CausalRecord | undefined): void {
  if (rec) encodeRecord(rec, mem, base + 128);
  else mem.fill(0, base + 128, base + 192);
  mem.writeUInt32LE(mem.readUInt32LE(base + 8) + 1, base + 8);
}
const tick = () => new Promise((resolve) => setImmediate(resolve));

t.test('importing the SDK loads no addon', async (t) => {
  t.notOk(addonLoadedByImport, 'no native module in require.cache after the imports');
});

t.test('detached: no CAUSEWAY_SDK_SOCKET', async (t) => {
  t.equal(sdk.attached(), false);
  t.equal(sdk.current(), undefined, 'no record outside run()');
  const a = sdk.newTrace();
  const b = sdk.newTrace({ sampled: false, priority: 9 });
  t.match(b, { sampled: false, priority: 9 });
  await sdk.run(a, async () => {
    t.equal(sdk.current(), a);
    sdk.run(b, () => t.equal(sdk.current(), b, 'nested'));
    await tick();
    t.equal(sdk.current(), a, 'after an await');
    sdk.sync();
  });
  t.equal(sdk.current(), undefined, 'after run()');
  t.throws(() => sdk.run({ ...a, priority: 300 }, () => t.fail('ran')), RangeError, 'a record that cannot be encoded, before fn');
});

t.test('attach failure: one warning, then detached', async (t) => {
  sdk._resetForTest();
  process.env[sdk.SOCKET_ENV] = '/nonexistent/causeway-sdk.sock';
  t.teardown(() => {
    delete process.env[sdk.SOCKET_ENV];
  });
  const warnings: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => warnings.push(String(chunk)) > 0) as typeof write;
  try {
    t.equal(sdk.current(), undefined);
    t.equal(sdk.attached(), false);
    const r = newRecord();
    t.equal(sdk.run(r, () => sdk.current()), r, 'run() still works');
  } finally {
    process.stderr.write = write;
  }
  t.equal(warnings.length, 1, 'warned once');
  t.match(warnings[0], /^causeway\/sdk: the main thread runs without the kernel .*: .+\n$/);
});

t.test('attached to a slot', async (t) => {
  sdk._attachForTest(memory, SLOT);
  t.equal(sdk.attached(), true);

  t.test('current() reads kern_rec', async (t) => {
    t.equal(sdk.current(), undefined, 'version 0: none');
    const k1 = newRecord({ priority: 4 });
    kernelAdopts(k1);
    t.same(sdk.current(), k1);
    t.equal(sdk.current(), sdk.current(), 'decoded once per kern_gen');
    const k2 = newRecord();
    kernelAdopts(k2);
    t.same(sdk.current(), k2, 'the next adoption');
    const inner = newRecord();
    t.equal(sdk.run(inner, sdk.current), inner, 'run() wins over the kernel');
    t.same(sdk.run(undefined, sdk.current), k2, 'run(undefined) gives the kernel record back');
  });

  t.test('run() nests and follows async work', async (t) => {
    const [a, b, c] = [newRecord(), newRecord(), newRecord()];
    const ee = new EventEmitter();
    const seen: Record<string, CausalRecord | undefined> = {};
    ee.on('ev', (tag: string) => (seen[tag] = sdk.current()));
    await sdk.run(a, async () => {
      const timer = new Promise<void>((resolve) => setTimeout(() => ((seen.timeout = sdk.current()), resolve()), 5));
      await sdk.run(b, async () => {
        await Promise.resolve();
        seen.promise = sdk.current();
        ee.emit('ev', 'emit-b');
        sdk.run(c, () => ee.emit('ev', 'emit-c'));
        queueMicrotask(() => (seen.microtask = sdk.current()));
        await tick();
        seen.afterB = sdk.current();
      });
      seen.backInA = sdk.current();
      setImmediate(() => ee.emit('ev', 'emit-later'));
      await once(ee, 'ev');
      await timer;
    });
    t.same(
      seen,
      { promise: b, 'emit-b': b, 'emit-c': c, microtask: b, afterB: b, backInA: a, 'emit-later': a, timeout: a },
      'each callback sees the record of the code that scheduled or emitted it',
    );
  });

  t.test('sync() writes the slot only when the record differs', async (t) => {
    // Snapshots first, assertions after: tap's own output is a socket write, which syncs.
    // A context captured with AsyncLocalStorage.snapshot() and entered later is not entered
    // through run(): the slot keeps what it held, and only sync() changes it.
    const a = newRecord({ priority: 7 });
    const b = newRecord({ sampled: false });
    const inA = sdk.run(a, () => AsyncLocalStorage.snapshot());
    const inACopy = sdk.run({ ...a }, () => AsyncLocalStorage.snapshot());
    const inB = sdk.run(b, () => AsyncLocalStorage.snapshot());
    const seen: Record<string, ReturnType<typeof app>> = {};
    const snap = (what: string) => (seen[what] = app());
    sdk.sync();
    snap('outside');
    sdk.sync();
    snap('outside again');
    inA(() => {
      snap('a, before sync');
      sdk.sync();
      snap('a');
      sdk.sync();
      snap('a again');
    });
    inACopy(() => (sdk.sync(), snap('a copy')));
    inB(() => (sdk.sync(), snap('b')));
    sdk.sync();
    snap('left');
    sdk.sync();
    snap('still outside');
    const ran = sdk.run(a, async () => {
      await tick();
      snap('continuation of a');
      sdk.sync();
      snap('continuation synced');
      sdk.sync();
      snap('continuation synced again');
    });
    snap('run() returned');
    await ran;
    mem.writeUInt32LE(0xffffffff, base);
    inB(() => (sdk.sync(), snap('b at wrap')));
    sdk.sync();
    snap('outside after wrap');

    const g0 = seen.outside.gen;
    t.match(seen.outside, { active: 0 });
    t.match(seen['outside again'], { gen: g0, active: 0 }, 'the same record (none): no bump');
    t.match(seen['a, before sync'], { gen: g0, active: 0 }, 'entering a context without run() writes nothing');
    t.match(seen.a, { gen: g0 + 1, active: 1 }, 'sync(): app_active set, app_gen bumped');
    t.same(seen.a.rec, a, 'app_rec is the record');
    t.match(seen['a again'], { gen: g0 + 1, active: 1 }, 'the same record: no bump');
    t.match(seen['a copy'], { gen: g0 + 1, active: 1 }, 'another object with the same bytes: no bump');
    t.match(seen.b, { gen: g0 + 2, active: 1 });
    t.same(seen.b.rec, b);
    t.match(seen.left, { gen: g0 + 3, active: 0 }, 'outside run(): the kernel record applies');
    t.match(seen['still outside'], { gen: g0 + 3, active: 0 }, 'still outside: no bump');
    t.match(seen['run() returned'], { gen: g0 + 5, active: 0 }, 'run() wrote a on entry and nothing (the caller’s) on exit');
    t.match(seen['continuation of a'], { gen: g0 + 5, active: 0 }, 'a continuation of run() finds the slot as run() left it');
    t.match(seen['continuation synced'], { gen: g0 + 6, active: 1 }, 'sync() in the continuation writes its record');
    t.same(seen['continuation synced'].rec, a);
    t.match(seen['continuation synced again'], { gen: g0 + 6, active: 1 }, 'and once only');
    t.match(seen['b at wrap'], { gen: 1, active: 1 }, 'app_gen skips 0 when it wraps');
    t.same(seen['b at wrap'].rec, b);
    t.match(seen['outside after wrap'], { gen: 2, active: 0 });
    const others = Buffer.concat([mem.subarray(0, base), mem.subarray(base + SDK_SLOT_BYTES)]);
    t.ok(others.every((x) => x === 0), 'other threads’ slots untouched');
  });

  t.test('run() writes its record on entry and the caller’s on exit', async (t) => {
    // Snapshots first, assertions after, as above. Each snapshot inside fn is taken before any sync point.
    const a = newRecord({ priority: 5 });
    const b = newRecord({ sampled: false });
    const seen: Record<string, ReturnType<typeof app>> = {};
    const snap = (what: string) => (seen[what] = app());
    sdk.sync();
    snap('outside');
    sdk.run(a, () => snap('in a'));
    snap('after a');
    sdk.run(a, () => {
      sdk.run(b, () => snap('b in a'));
      snap('back in a from b');
      sdk.run(undefined, () => snap('undefined in a'));
      snap('back in a from undefined');
    });
    snap('after nested');
    const boom = new Error('boom');
    let caught: unknown;
    try {
      sdk.run(a, () => {
        snap('a, throwing');
        throw boom;
      });
    } catch (err) {
      caught = err;
    }
    snap('after a threw');
    await sdk.run(a, async () => {
      await tick();
      snap('continuation of a');
      sdk.run(b, () => snap('b in continuation of a'));
      snap('after b in continuation of a');
    });
    sdk.sync();
    snap('outside again');
    // A spawnSync reference from before attach has no sync point: only run()'s entry write puts a in the slot for its fork.
    const viaRun = sdk.run(a, () => {
      const atCall = app();
      const { status } = spawnSyncBeforeAttach(process.execPath, ['-e', '']);
      return { atCall, after: app(), status };
    });
    snap('after spawnSync in a');
    // In a continuation (no entry write) the same reference leaves the slot as it was; the exported spawnSync syncs it.
    const inContinuation = await sdk.run(a, async () => {
      await tick();
      const atCall = app();
      const { status } = spawnSyncBeforeAttach(process.execPath, ['-e', '']);
      const afterOld = app();
      childProcess.spawnSync(process.execPath, ['-e', '']);
      return { atCall, afterOld, afterWrapped: app(), status };
    });

    const g0 = seen.outside.gen;
    t.match(seen.outside, { active: 0 });
    t.match(seen['in a'], { gen: g0 + 1, active: 1 }, 'inside run(a), before any sync point: a');
    t.same(seen['in a'].rec, a);
    t.match(seen['after a'], { gen: g0 + 2, active: 0 }, 'after run() outside any context: app_active 0');
    t.match(seen['b in a'], { gen: g0 + 4, active: 1 }, 'nested: b while the inner fn runs');
    t.same(seen['b in a'].rec, b);
    t.match(seen['back in a from b'], { gen: g0 + 5, active: 1 }, 'after the inner run() returns: a again');
    t.same(seen['back in a from b'].rec, a);
    t.match(seen['undefined in a'], { gen: g0 + 6, active: 0 }, 'run(undefined): the kernel record applies');
    t.match(seen['back in a from undefined'], { gen: g0 + 7, active: 1 }, 'and a after it');
    t.same(seen['back in a from undefined'].rec, a);
    t.match(seen['after nested'], { gen: g0 + 8, active: 0 });
    t.equal(caught, boom, 'run() rethrows what fn throws');
    t.match(seen['a, throwing'], { gen: g0 + 9, active: 1 });
    t.match(seen['after a threw'], { gen: g0 + 10, active: 0 }, 'fn threw: the caller’s record all the same');
    t.match(seen['continuation of a'], { gen: g0 + 12, active: 0 }, 'a continuation finds the slot as run() left it');
    t.match(seen['b in continuation of a'], { gen: g0 + 13, active: 1 });
    t.same(seen['b in continuation of a'].rec, b);
    t.match(seen['after b in continuation of a'], { gen: g0 + 14, active: 1 }, 'on exit, the caller’s record, not what the slot held on entry');
    t.same(seen['after b in continuation of a'].rec, a);
    t.match(seen['outside again'], { gen: g0 + 15, active: 0 });

    t.not(spawnSyncBeforeAttach, childProcess.spawnSync, 'the reference predates the SDK’s wrapper');
    t.equal(viaRun.status, 0);
    t.match(viaRun.atCall, { gen: g0 + 16, active: 1 }, 'spawnSync taken before attach, inside run(a): a in the slot at the call');
    t.same(viaRun.atCall.rec, a);
    t.same(viaRun.after, viaRun.atCall, 'the slot unchanged by the call');
    t.match(seen['after spawnSync in a'], { gen: g0 + 17, active: 0 });
    t.equal(inContinuation.status, 0);
    t.match(inContinuation.atCall, { gen: g0 + 19, active: 0 }, 'in a continuation of a the slot does not say a');
    t.same(inContinuation.afterOld, inContinuation.atCall, 'the reference from before attach does not sync');
    t.match(inContinuation.afterWrapped, { gen: g0 + 20, active: 1 }, 'the exported spawnSync does');
    t.same(inContinuation.afterWrapped.rec, a);
    sdk.sync();
  });

  t.test('socket writes sync the slot first', async (t) => {
    const server = net.createServer();
    const received: Buffer[] = [];
    server.on('connection', (s) => s.on('data', (d) => received.push(d)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.teardown(() => server.close());
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    t.teardown(() => client.destroy());
    await once(client, 'connect');
    // What the slot says when the bytes reach the handle, i.e. the syscall.
    const atWrite: { active: number; trace: string }[] = [];
    const handle = (client as unknown as { _handle: Record<string, (...a: unknown[]) => unknown> })._handle;
    for (const m of ['writeUtf8String', 'writeLatin1String', 'writeBuffer', 'writev']) {
      const orig = handle[m];
      handle[m] = function (this: unknown, ...args: unknown[]) {
        atWrite.push({ active: app().active, trace: app().rec.traceId });
        return orig.apply(this, args);
      };
    }
    const [a, b] = [newRecord(), newRecord()];
    const k = newRecord();
    kernelAdopts(k);
    await sdk.run(a, () => new Promise((resolve) => client.write('a1', resolve)));
    await sdk.run(b, async () => {
      await tick();
      await new Promise((resolve) => client.write('b1', resolve));
    });
    await new Promise((resolve) => client.write('k1', resolve));
    client.cork();
    sdk.run(a, () => client.write('a2'));
    sdk.run(a, () => client.write('a3'));
    await sdk.run(a, () => new Promise((resolve) => process.nextTick(() => (client.uncork(), client.write('', resolve)))));
    t.same(
      atWrite.slice(0, 4),
      [
        { active: 1, trace: a.traceId },
        { active: 1, trace: b.traceId },
        { active: 0, trace: b.traceId },
        { active: 1, trace: a.traceId },
      ],
      'each write went out under the record of the code that wrote it (corked: the one that uncorked)',
    );
    while (Buffer.concat(received).length < 8) await tick();
    t.equal(Buffer.concat(received).toString(), 'a1b1k1a2a3', 'the bytes are unchanged');
  });

  t.test('spawn and synchronous fs writes sync the slot first', async (t) => {
    // In a continuation of run(), or a context entered without run(), the slot does not say the record
    // until a sync point writes it: what the slot says after the call is what the call synced.
    const [a, b] = [newRecord(), newRecord()];
    const fd = fs.openSync('/dev/null', 'w');
    t.teardown(() => fs.closeSync(fd));
    const seen: Record<string, ReturnType<typeof app>> = {};
    let child: ChildProcess | undefined;
    await sdk.run(a, async () => {
      await tick();
      seen.beforeSpawn = app();
      child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
      seen.afterSpawn = app();
    });
    await once(child!, 'exit');
    await sdk.run(b, async () => {
      await tick();
      seen.beforeWrite = app();
      fs.writeSync(fd, 'x');
      seen.afterWrite = app();
    });
    const outside = AsyncLocalStorage.snapshot();
    sdk.run(b, () =>
      outside(() => {
        seen.beforeWriteOutside = app();
        fs.writeSync(fd, 'x');
        seen.afterWriteOutside = app();
      }),
    );
    t.match(seen.beforeSpawn, { active: 0 });
    t.match(seen.afterSpawn, { gen: seen.beforeSpawn.gen + 1, active: 1, rec: { traceId: a.traceId } }, 'the child forked under the record');
    t.match(seen.beforeWrite, { active: 0 });
    t.match(seen.afterWrite, { gen: seen.beforeWrite.gen + 1, active: 1, rec: { traceId: b.traceId } }, 'writeSync in a continuation of run()');
    t.match(seen.beforeWriteOutside, { active: 1, rec: { traceId: b.traceId } });
    t.match(seen.afterWriteOutside, { gen: seen.beforeWriteOutside.gen + 1, active: 0 }, 'writeSync outside run()');
    sdk.sync();
  });

  t.test('actor fields', async (t) => {
    const reg = new FieldRegistry();
    reg.declare('sched', [{ name: 'prio', type: 'u8' }, { name: 'urgent', type: 'flag' }]);
    reg.declare('acct', [{ name: 'cost', type: 'u64' }]);
    process.env[sdk.LAYOUT_ENV] = reg.freeze().serialize();
    t.teardown(() => {
      delete process.env[sdk.LAYOUT_ENV];
    });
    const r = newRecord();
    const r2 = sdk.withFields(r, 'sched', { prio: 5, urgent: true });
    const r3 = sdk.withFields(r2, 'acct', { cost: 12n });
    t.same(sdk.fields(r3, 'sched'), { prio: 5, urgent: true });
    t.same(sdk.fields(r3, 'acct'), { cost: 12n });
    t.same(sdk.fields(r, 'sched'), { prio: 0, urgent: false }, 'the original is unchanged');
    t.equal(r3.traceId, r.traceId);
    t.throws(() => sdk.withFields(r, 'sched', { prio: 256 }), RangeError);
    delete process.env[sdk.LAYOUT_ENV];
    t.throws(() => sdk.fields(r, 'sched'), /CAUSEWAY_ACTOR_LAYOUT is not set/);
    t.same(sdk.fields(r3, 'sched', reg), { prio: 5, urgent: true }, 'or with a registry passed in');
  });

  t.test('OpenTelemetry bridge', async (t) => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    t.ok(context.setGlobalContextManager(new CausewayContextManager().enable()));
    t.ok(trace.setGlobalTracerProvider(provider));
    t.teardown(() => {
      context.disable();
      trace.disable();
    });
    const tracer = trace.getTracer('sdk-unit');
    const k = newRecord();
    k.eventId = '00000a0b0c0d0e0f';
    kernelAdopts(k);

    t.same(kernelSpanContext(), { traceId: k.traceId, spanId: k.eventId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
    const span = tracer.startSpan('no parent');
    t.equal(span.spanContext().traceId, k.traceId, "a span with no parent joins the kernel record's trace");
    span.end();
    t.equal(exporter.getFinishedSpans()[0].parentSpanContext?.spanId, k.eventId, 'its parent is the record’s event');

    const unsampled = newRecord({ sampled: false });
    sdk.run(unsampled, () => {
      const s = tracer.startSpan('unsampled parent');
      t.equal(s.spanContext().traceId, unsampled.traceId, 'run() record wins over the kernel’s');
      t.equal(s.isRecording(), false, 'and its sampled flag decides');
      s.end();
    });

    const own = tracer.startSpan('own trace', { root: true });
    const sc = own.spanContext();
    t.not(sc.traceId, k.traceId);
    await context.with(trace.setSpan(context.active(), own), async () => {
      await tick();
      sdk.sync();
      t.match(app(), { active: 1, rec: { traceId: sc.traceId, eventId: '0000' + sc.spanId.slice(4), sampled: true } }, 'the slot carries the span’s trace');
      t.equal(sdk.current()?.priority, k.priority, 'keeping the priority');
      t.equal(tracer.startSpan('child').spanContext().traceId, sc.traceId, 'children stay in the span’s trace');
    });
    own.end();

    const joined = tracer.startSpan('kernel trace');
    context.with(trace.setSpan(context.active(), joined), () => {
      t.same(sdk.runRecord(), k, 'a span of the kernel’s trace pins the kernel record');
    });
    joined.end();
    sdk.sync();
  });
});

/** A stand-in for the runtime's SDK socket, in another process (sdkAttach blocks this one): it answers "ok SLOT" with a file as the slot memory. */
const FAKE_RUNTIME = `
import os, socket, struct, sys
path, memfile, slot, tid_delta, ready = sys.argv[1:6]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
open(ready, 'w').close()
conn, _ = srv.accept()
tid = int(conn.recv(64).decode().split()[1])
fd = os.open(memfile, os.O_RDWR)
os.pwrite(fd, struct.pack('<I', tid + int(tid_delta)), int(slot) * 256 + 12)
socket.send_fds(conn, [('ok %s\\n' % slot).encode()], [fd])
conn.close()
`;

function hasSdkAttach(): boolean {
  try {
    return typeof (native() as unknown as SdkNative).sdkAttach === 'function';
  } catch {
    return false;
  }
}

t.test('attaching through the addon to a runtime socket', { skip: hasSdkAttach() ? false : 'the addon has no sdkAttach yet' }, async (t) => {
  const dir = tmpdir(t);
  const start = async (tidDelta: number) => {
    const [sock, file, ready] = ['sdk.sock', 'slots', 'ready'].map((f) => path.join(dir, f));
    fs.rmSync(sock, { force: true });
    fs.rmSync(ready, { force: true });
    const slots = Buffer.alloc(SDK_SLOTS * SDK_SLOT_BYTES);
    encodeRecord(kernel, slots, 5 * SDK_SLOT_BYTES + 128);
    slots.writeUInt32LE(1, 5 * SDK_SLOT_BYTES + 8);
    fs.writeFileSync(file, slots);
    const py = spawn('python3', ['-c', FAKE_RUNTIME, sock, file, '5', String(tidDelta), ready], { stdio: 'inherit' });
    t.teardown(() => py.kill());
    while (!fs.existsSync(ready)) await new Promise((resolve) => setTimeout(resolve, 10));
    process.env[sdk.SOCKET_ENV] = sock;
    sdk._resetForTest();
    return { file, exited: once(py, 'exit') };
  };
  const kernel = newRecord({ priority: 3 });
  t.teardown(() => {
    delete process.env[sdk.SOCKET_ENV];
  });

  t.test('a slot of another thread is refused', async (t) => {
    const { exited } = await start(1);
    const write = process.stderr.write;
    const warnings: string[] = [];
    process.stderr.write = ((chunk: string) => warnings.push(String(chunk)) > 0) as typeof write;
    try {
      t.equal(sdk.attached(), false);
    } finally {
      process.stderr.write = write;
    }
    t.match(warnings, [/^causeway\/sdk: .*slot 5, which belongs to thread \d+/]);
    await exited;
  });

  t.test('the slot the runtime gives', async (t) => {
    const { file, exited } = await start(0);
    t.equal(sdk.attached(), true, 'lazily, from CAUSEWAY_SDK_SOCKET');
    await exited;
    t.same(sdk.current(), kernel, "current() reads the kernel's record from the shared memory");
    const a = newRecord();
    const slot = () => fs.readFileSync(file).subarray(5 * SDK_SLOT_BYTES, 6 * SDK_SLOT_BYTES);
    const seen = sdk.run(a, () => (sdk.sync(), slot()));
    t.equal(seen.readUInt32LE(4), 1, 'app_active, through the mapping');
    t.same(decodeRecord(seen, 64), a, 'app_rec, through the mapping');
    t.ok(seen.readUInt32LE(0) > 0, 'app_gen');
  });
});
