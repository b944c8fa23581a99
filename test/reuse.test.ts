/**
 * Channels that the kernel hands out again: a UNIX socket object freed and
 * allocated anew, a TCP 4-tuple connected again, a FIFO inode number reused
 * or a FIFO path reopened, each time with bytes left unread in the old
 * channel. A read from the new channel must name the send into the new
 * channel, never a run of bytes that died with the old one.
 *
 * The fixture (fixtures/reuse.c) makes every 1-byte write and read of an
 * iteration in a process of its own and logs their pids, so that each
 * iteration's send and receive are found by pid. TCP connections, all from
 * one client thread on one 4-tuple, are told apart by size: connection i
 * sends a bulk of 1 MiB + i bytes and a payload of 10 + i bytes, each in one
 * syscall, and the server reads each in one. The fixture says why a bulk,
 * and why odd and even connections differ.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, causeway, EventJson, readEvents, Result, tmpdir } from './helpers';

const skip = bpfUnavailable();
const SOURCE = path.join(__dirname, 'fixtures', 'reuse.c');
const TMPFS_MAGIC = 0x01021994;

/** The fixture, compiled once for the file. */
let bin = '';
function fixture(): string {
  if (!bin) {
    const dir = tmpdir(t);
    bin = path.join(dir, 'reuse');
    execFileSync('cc', ['-O2', '-Wall', '-o', bin, SOURCE]);
  }
  return bin;
}

/** A run's summary line: the last line on stderr. */
const summary = (r: Result) => r.stderr.trim().split('\n').pop() ?? '';

/** Stale channels also show as drops: segments overwritten unread, records sharing a TCP segment, joins of too many sends. */
function nothingDropped(t: Tap.Test, r: Result, what: string) {
  t.match(summary(r), /, 0 dropped/, `${what}: nothing dropped (${summary(r)})`);
}

async function traced(t: Tap.Test, dir: string, name: string, args: (string | number)[]): Promise<{ r: Result; events: EventJson[] }> {
  const file = path.join(dir, `${name}.jsonl`);
  const r = await causeway(['run', '-e', file, '--', fixture(), ...args.map(String)]);
  t.equal(r.status, 0, 'the fixture ran', { stderr: r.stderr });
  nothingDropped(t, r, name);
  return { r, events: fs.existsSync(file) ? readEvents(file) : [] };
}

interface Iteration {
  i: number;
  /** The pids of the 1-byte writer and reader. */
  s: number;
  r: number;
  /** FIFOs: the inode numbers of the old FIFO and the new one. */
  oldIno?: number;
  newIno?: number;
}

function readLog(file: string): Iteration[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [i, s, r, oldIno, newIno] = l.split(' ').map(Number);
      return { i, s, r, oldIno, newIno };
    });
}

const isRead = (e: EventJson) => e.type === 'recv' || e.type === 'join';

/** "a send of 1000 B by pid 123", for the messages. */
function describe(byId: Map<string, EventJson>, id: string): string {
  const e = byId.get(id);
  return e ? `${e.type} of ${e.bytes} B by pid ${e.pid}` : `${id} (no such event)`;
}

/**
 * Each iteration's 1-byte read names exactly the 1-byte send of the same
 * iteration. Counts the sends found (one per iteration: not vacuous) and the
 * reads that name their own.
 */
function ownReads(t: Tap.Test, events: EventJson[], log: Iteration[], n: number, kind: string, what: string, chan?: (it: Iteration, e: EventJson) => boolean) {
  const byPid = new Map<number, EventJson[]>();
  for (const e of events) {
    if (!byPid.has(e.pid)) byPid.set(e.pid, []);
    byPid.get(e.pid)!.push(e);
  }
  const byId = new Map(events.map((e) => [e.event, e]));
  let sends = 0;
  let own = 0;
  let none = 0;
  const wrong: string[] = [];
  for (const it of log) {
    const ss = (byPid.get(it.s) ?? []).filter((e) => e.type === 'send' && e.channel?.kind === kind);
    const rs = (byPid.get(it.r) ?? []).filter((e) => isRead(e) && e.channel?.kind === kind);
    const send = ss.length === 1 && ss[0].bytes === 1 && (!chan || chan(it, ss[0])) ? ss[0] : undefined;
    if (send) sends++;
    const recv = rs.length === 1 ? rs[0] : undefined;
    if (send && recv && recv.type === 'recv' && recv.bytes === 1 && (!chan || chan(it, recv)) && JSON.stringify(recv.parents) === JSON.stringify([send.event])) {
      own++;
      continue;
    }
    if (!rs.length) none++;
    if (wrong.length < 5)
      wrong.push(
        `iteration ${it.i}: ${ss.length} send(s) by the writer, ` +
          (rs.length ? rs.map((e) => `${e.type} of ${e.bytes} B naming ${e.parents.map((p) => describe(byId, p)).join(', ')}`).join('; ') : 'no receive event'),
      );
  }
  t.equal(log.length, n, `the fixture logged ${log.length}/${n} iterations`);
  t.equal(sends, n, `${sends}/${n} one-byte sends found, one per iteration`);
  t.equal(own, n, `${own}/${n} one-byte reads name the send of their own ${what} (${none} without a receive event)`, { wrong });
}

t.test('UNIX socketpairs, 200 times over the same socket objects', { skip: skip ?? false }, async (t) => {
  const n = 200;
  const dir = tmpdir(t);
  const log = path.join(dir, 'log');
  const start = Date.now();
  const { events } = await traced(t, dir, 'socketpair', ['socketpair', n, log]);
  t.comment(`socketpairs: ${Date.now() - start} ms`);
  ownReads(t, events, readLog(log), n, 'unix', 'socketpair', (_, e) => e.channel?.type === 'stream' && e.channel?.name === 'socketpair');
});

t.test('anonymous pipes, 1000 closed with unread bytes, each followed by a new one', { skip: skip ?? false }, async (t) => {
  const n = 1000;
  const dir = tmpdir(t);
  const log = path.join(dir, 'log');
  const start = Date.now();
  const { events } = await traced(t, dir, 'pipe', ['pipe', n, log]);
  t.comment(`pipes: ${Date.now() - start} ms`);
  ownReads(t, events, readLog(log), n, 'pipe', 'pipe');
});

/** A directory for FIFOs on a file system that hands inode numbers out again (tmpfs does not). */
function fifoDir(t: Tap.Test): string {
  const dir = tmpdir(t);
  if (fs.statfsSync(dir).type !== TMPFS_MAGIC) return dir;
  const alt = fs.mkdtempSync(path.join(__dirname, '..', '.reuse-test-'));
  t.teardown(() => fs.rmSync(alt, { recursive: true, force: true }));
  return alt;
}

t.test('FIFOs, 1000 made, closed with unread bytes and removed, each followed by a new one', { skip: skip ?? false }, async (t) => {
  const n = 1000;
  const dir = tmpdir(t);
  const fifos = fifoDir(t);
  const log = path.join(dir, 'log');
  const start = Date.now();
  const { events } = await traced(t, dir, 'fifo', ['fifo', n, fifos, log]);
  t.comment(`FIFOs: ${Date.now() - start} ms`);
  const its = readLog(log);
  // Not vacuous: the new FIFO got the inode number of the old one, closed with unread bytes just before.
  const reused = its.filter((it) => it.newIno === it.oldIno).length;
  t.ok(reused >= n / 2, `${reused}/${n} new FIFOs got the old FIFO's inode number (the file system of ${fifos} must reuse them)`);
  ownReads(t, events, its, n, 'fifo', 'FIFO', (it, e) => e.channel?.ino === it.newIno);
});

t.test('one FIFO path reopened 100 times, closed each time with unread bytes', { skip: skip ?? false }, async (t) => {
  const n = 100;
  const dir = tmpdir(t);
  const log = path.join(dir, 'log');
  const { events } = await traced(t, dir, 'fifo-reopen', ['fifo-reopen', n, dir, log]);
  const its = readLog(log);
  t.ok(its.length && its.every((it) => it.newIno === its[0].oldIno), 'always the same inode');
  ownReads(t, events, its, n, 'fifo', 'opening of the FIFO', (it, e) => e.channel?.ino === it.newIno);
});

/** Connection i's two runs of bytes, as the fixture sends them: a bulk, then a payload, each in one syscall. */
const RUNS = [
  { run: 'bulk', size: (i: number) => (1 << 20) + i },
  { run: 'payload', size: (i: number) => 10 + i },
];

/**
 * Each run of bytes of connection i has its one send (by the client, on the
 * client's 4-tuple, of the run's size) and the server's one receive of it
 * (of the same size), which names it and nothing else.
 */
function ownConnections(t: Tap.Test, sendEvents: EventJson[], recvEvents: EventJson[], n: number, port: number, sport: number) {
  const sends = sendEvents.filter((e) => e.type === 'send' && e.channel?.kind === 'tcp' && e.channel.localPort === sport && e.channel.remotePort === port);
  const recvs = recvEvents.filter((e) => isRead(e) && e.channel?.kind === 'tcp' && e.channel.localPort === port && e.channel.remotePort === sport);
  const byId = new Map([...sendEvents, ...recvEvents].map((e) => [e.event, e]));
  for (const { run, size } of RUNS) {
    let found = 0;
    let own = 0;
    let none = 0;
    const wrong: string[] = [];
    for (let i = 0; i < n; i++) {
      const ss = sends.filter((e) => e.bytes === size(i));
      const rs = recvs.filter((e) => e.bytes === size(i));
      if (ss.length === 1) found++;
      if (ss.length === 1 && rs.length === 1 && rs[0].type === 'recv' && JSON.stringify(rs[0].parents) === JSON.stringify([ss[0].event])) {
        own++;
        continue;
      }
      if (!rs.length) none++;
      if (wrong.length < 6)
        wrong.push(
          `connection ${i}: ${ss.length} send(s) of ${size(i)} B, ` +
            (rs.length ? rs.map((e) => `${e.type} naming ${e.parents.map((p) => describe(byId, p)).join(', ') || 'nothing'}`).join('; ') : 'no receive event'),
        );
    }
    t.equal(found, n, `${run}: ${found}/${n} connections have their send event`);
    t.equal(own, n, `${run}: ${own}/${n} server receives name the send of their own connection (${none} without a receive event)`, { wrong });
  }
}

t.test('TCP: 200 connections on one 4-tuple, client and server in one run', { skip: skip ?? false }, async (t) => {
  const n = 200;
  const dir = tmpdir(t);
  const ready = path.join(dir, 'ready');
  const bin = fixture();
  const script = `${bin} tcp-server ${n} ${ready} > ${dir}/port & s=$!; ${bin} tcp-client ${n} ${ready} > ${dir}/sport || exit 1; wait $s`;
  const file = path.join(dir, 'ev.jsonl');
  const start = Date.now();
  const r = await causeway(['run', '-e', file, '--', 'sh', '-c', script]);
  t.comment(`TCP, one run: ${Date.now() - start} ms`);
  t.equal(r.status, 0, 'the run succeeded', { stderr: r.stderr });
  nothingDropped(t, r, 'the run');
  const port = Number(fs.readFileSync(path.join(dir, 'port'), 'utf8'));
  const sport = Number(fs.readFileSync(path.join(dir, 'sport'), 'utf8'));
  t.ok(port > 0 && sport > 0, `every connection went from 127.0.0.1:${sport} to 127.0.0.1:${port}`);
  const events = readEvents(file);
  ownConnections(t, events, events, n, port, sport);
});

t.test('TCP: 200 connections on one 4-tuple, server and client in two runs (the TCP option)', { skip: skip ?? false }, async (t) => {
  const n = 200;
  const dir = tmpdir(t);
  const ready = path.join(dir, 'ready');
  const [sfile, cfile] = [path.join(dir, 'server.jsonl'), path.join(dir, 'client.jsonl')];
  const start = Date.now();
  const server = causeway(['run', '-e', sfile, '--', fixture(), 'tcp-server', String(n), ready]);
  const client = await causeway(['run', '-e', cfile, '--', fixture(), 'tcp-client', String(n), ready]);
  const srv = await server;
  t.comment(`TCP, two runs: ${Date.now() - start} ms`);
  t.equal(client.status, 0, 'the client run succeeded', { stderr: client.stderr });
  t.equal(srv.status, 0, 'the server run succeeded', { stderr: srv.stderr });
  nothingDropped(t, client, 'the client run');
  nothingDropped(t, srv, 'the server run');
  const port = Number(srv.stdout);
  const sport = Number(client.stdout);
  t.ok(port > 0 && sport > 0, `every connection went from 127.0.0.1:${sport} to 127.0.0.1:${port}`);
  const written = Number(/tcpOptionsWritten=(\d+)/.exec(client.stderr)?.[1] ?? 0);
  const received = Number(/tcpOptionsReceived=(\d+)/.exec(srv.stderr)?.[1] ?? 0);
  // At least one TCP segment of each run of bytes: the bulk takes several.
  t.ok(written >= 2 * n, `the client run wrote the option, at least twice per connection (tcpOptionsWritten=${written})`);
  t.ok(received >= 2 * n, `the server run accepted it, at least twice per connection (tcpOptionsReceived=${received})`);
  t.notMatch(summary(srv), /tcpOptionStale=/, `no option was taken for stale (${/tcpOptionStale=\d+/.exec(summary(srv))?.[0] ?? 'none'})`);
  ownConnections(t, readEvents(cfile), readEvents(sfile), n, port, sport);
});
