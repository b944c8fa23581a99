/**
 * Across hosts: network namespaces joined by veth through a bridge, each
 * acting as its own host with its own causeway run (its own shim and maps:
 * no same-kernel shortcut between them). The record crosses in the TCP
 * header option only.
 */
import t, { Test } from 'tap';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { bpfUnavailable, causeway, EventJson, readEvents, tmpdir, waitFor } from './helpers';
import { makeHosts, makePair, subnet, subnet6, Host } from './netns';
import { readTcpPackets, TcpPacket } from './pcap';
import { newTraceId } from '../src/kernel/record';
import fs from 'node:fs';

const skip = bpfUnavailable();
const NODE = path.join(__dirname, 'fixtures', 'tcp_node.py');

/** `causeway run` of a tcp_node.py role inside a host. */
function traced(h: Host, dir: string, name: string, role: string[], opts: { trust?: string[]; trace?: string } = {}) {
  const args = ['run', '-e', path.join(dir, `${name}.jsonl`)];
  for (const c of opts.trust ?? []) args.push('--trust', c);
  if (opts.trace) args.push('--trace', opts.trace);
  return causeway([...args, '--', 'ip', 'netns', 'exec', h.ns, 'python3', NODE, ...role]);
}

/** The same role, not traced. */
function plain(h: Host, role: string[]) {
  return new Promise<{ status: number | null; stdout: string }>((resolve) => {
    const c = spawn('ip', ['netns', 'exec', h.ns, 'python3', NODE, ...role], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.on('close', (status) => resolve({ status, stdout }));
  });
}

const tcpEvents = (file: string) => readEvents(file).filter((e) => e.channel?.kind === 'tcp');

/** tcpdump on a host's link, in the hub: what the wire carries. Resolves to a function that stops it and returns the packets. */
async function captureLink(t: Test, h: Host, dir: string): Promise<() => Promise<TcpPacket[]>> {
  const pcap = path.join(dir, `${h.hubIf}.pcap`);
  const hub = h.ns.replace(/n\d+$/, 'h');
  const dump = spawn('ip', ['netns', 'exec', hub, 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', h.hubIf, '-U', '-w', pcap, 'tcp'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.teardown(() => dump.kill());
  let dumpLog = '';
  dump.stderr!.on('data', (d) => (dumpLog += d));
  await waitFor(() => /listening on/.test(dumpLog), 10000, 'tcpdump to start');
  return async () => {
    dump.kill('SIGINT');
    await new Promise((r) => dump.on('close', r));
    return readTcpPackets(pcap);
  };
}

/** The first data segment from `src` carries causeway's option naming `trace` and the send `event`. */
function checkOptionOnWire(t: Test, packets: TcpPacket[], src: string, trace: string, event: string | undefined) {
  const data = packets.filter((p) => p.src === src && p.payload > 0);
  t.ok(data.length >= 1, `the capture holds the request from ${src}`);
  const opt = data[0]?.options.find((o) => o.kind === 253);
  t.ok(opt, 'an experimental option (kind 253) in the data segment');
  if (opt) {
    t.equal(opt.bytes.length, 28, '28 bytes');
    t.equal(opt.bytes.readUInt16BE(2), 0xc5a7, 'ExID 0xc5a7');
    t.equal(opt.bytes[4] >> 4, 1, 'layout version 1');
    t.equal(opt.bytes[4] & 1, 1, 'sampled');
    t.equal(opt.bytes.toString('hex', 6, 22), trace, 'the trace id');
    t.equal(opt.bytes.toString('hex', 22, 28), event?.slice(4), "the 48-bit id of the client's send");
  }
  t.ok(data[0]?.options.some((o) => o.kind === 8), 'beside the timestamps option');
}

t.test('two hosts: the server adopts the client\'s trace and event ids from the option', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const trust = [subnet(a)];
  const trace = newTraceId();
  const stopCapture = await captureLink(t, a, dir);

  const server = traced(b, dir, 'server', ['server', b.addr, '7000', path.join(dir, 'ready')], { trust });
  const client = await traced(a, dir, 'client', ['client', b.addr, '7000'], { trust, trace });
  const srv = await server;
  t.equal(client.status, 0, client.stderr);
  t.equal(srv.status, 0, srv.stderr);
  t.equal(client.stdout, 'ok:hello\n', 'the conversation is unchanged');
  t.match(client.stderr, /tcpOptionsWritten=[1-9]/, 'the client wrote the option');
  t.match(srv.stderr, /tcpOptionsReceived=[1-9]/, 'the server received it');

  const ce = tcpEvents(path.join(dir, 'client.jsonl'));
  const se = tcpEvents(path.join(dir, 'server.jsonl'));
  const send = ce.find((e) => e.type === 'send');
  const recv = se.find((e) => e.type === 'recv');
  t.match(send, { trace, channel: { local: a.addr, remote: b.addr, remotePort: 7000 } });
  t.match(recv, { trace, channel: { local: b.addr, localPort: 7000, remote: a.addr } }, "the server holds the client's trace");
  t.same(recv?.parents, [send?.event], "and names the client's send as parent");
  const back = ce.find((e) => e.type === 'recv');
  const answer = se.find((e) => e.type === 'send');
  t.same(back?.parents, [answer?.event], "the answer leads back to the server's send");

  checkOptionOnWire(t, await stopCapture(), a.addr, trace, send?.event);
});

t.test('a first send of many segments leaves at once: its mss has room for the option', { skip: skip ?? false }, async (t) => {
  // Before: the first record of a connection was published after tcp_sendmsg computed its mss, so the first full
  // segments left 28 bytes over the MTU once the option was written: refused by IP (DF), sent again 200 ms later.
  // A veth pair with no bridge between (through a bridge, the oversized segment went through).
  const dir = tmpdir(t);
  const [a, b] = makePair(t, '10.218.0');
  const trust = ['--trust', '10.218.0.0/24'];
  const N = 200000;
  const server = `import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('${b.addr}', 7001)); s.listen(1)
open('${dir}/ready', 'w').close()
c, _ = s.accept(); got = 0
while got < ${N}:
    d = c.recv(1 << 20)
    if not d: break
    got += len(d)
c.sendall(b'k'); print(got)`;
  const client = `import socket, os, time
while not os.path.exists('${dir}/ready'): time.sleep(0.02)
c = socket.create_connection(('${b.addr}', 7001)); c.sendall(b'x' * ${N}); print(c.recv(1).decode())`;
  // The oversized segments never reached the wire: the sender's IP layer refused them (DF set), counted as FragFails.
  const fragFails = () => {
    const snmp = execFileSync('ip', ['netns', 'exec', a.ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith('Ip:'));
    const [names, values] = snmp.map((l) => l.split(/\s+/));
    return Number(values[names.indexOf('FragFails')]);
  };
  const srv = causeway(['run', '-q', ...trust, '--', 'ip', 'netns', 'exec', b.ns, 'python3', '-c', server]);
  const before = fragFails();
  const cli = await causeway(['run', ...trust, '--', 'ip', 'netns', 'exec', a.ns, 'python3', '-c', client]);
  const after = fragFails();
  const s = await srv;
  t.equal(cli.stdout, 'k\n', cli.stderr);
  t.equal(s.stdout, `${N}\n`, 'every byte arrived');
  t.match(cli.stderr, /tcpOptionsWritten=[1-9]/, 'with the option on the wire');
  t.equal(after - before, 0, 'and no segment was too big for the path (FragFails of the client\'s host; before the fix: one per segment of the first flight, resent after 200 ms)');
});

t.test('two hosts over IPv6', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const trust = [subnet6(a)];
  const trace = newTraceId();
  const stopCapture = await captureLink(t, a, dir);
  const server = traced(b, dir, 'server', ['server', b.addr6, '7000', path.join(dir, 'ready')], { trust });
  const client = await traced(a, dir, 'client', ['client', b.addr6, '7000'], { trust, trace });
  const srv = await server;
  t.equal(client.stdout, 'ok:hello\n', client.stderr);
  t.equal(srv.status, 0, srv.stderr);
  const send = tcpEvents(path.join(dir, 'client.jsonl')).find((e) => e.type === 'send');
  const recv = tcpEvents(path.join(dir, 'server.jsonl')).find((e) => e.type === 'recv');
  t.match(recv, { trace, channel: { local: b.addr6, remote: a.addr6 } }, "the server holds the client's trace");
  t.same(recv?.parents, [send?.event], "and names the client's send");
  checkOptionOnWire(t, await stopCapture(), a.addr6, trace, send?.event);
});

t.test('three hops: client -> middle -> backend, one causal chain', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b, c] = makeHosts(t, 3);
  const trust = [subnet(a)];
  const trace = newTraceId();
  const backend = traced(c, dir, 'backend', ['server', c.addr, '7001', path.join(dir, 'r1')], { trust });
  const middle = traced(b, dir, 'middle', ['middle', b.addr, '7000', path.join(dir, 'r2'), c.addr, '7001'], { trust });
  const client = await traced(a, dir, 'client', ['client', b.addr, '7000'], { trust, trace });
  const [m, be] = [await middle, await backend];
  t.equal(client.stdout, 'ok:hello\n');
  t.equal(m.status, 0, m.stderr);
  t.equal(be.status, 0, be.stderr);

  const all = new Map<string, EventJson>();
  for (const f of ['client', 'middle', 'backend']) for (const e of readEvents(path.join(dir, `${f}.jsonl`))) all.set(e.event, e);
  const bRecv = tcpEvents(path.join(dir, 'backend.jsonl')).find((e) => e.type === 'recv');
  t.equal(bRecv?.trace, trace, "the backend holds the client's trace");
  // Walk first parents back from the backend's receive to the client.
  const chain: EventJson[] = [];
  for (let cur = bRecv; cur && chain.length < 100; cur = all.get(cur.parents[0] ?? '')) chain.push(cur);
  const hops = chain.filter((e) => e.channel?.kind === 'tcp').map((e) => `${e.type}@${e.channel?.local}`);
  t.same(hops.slice(0, 4), [`recv@${c.addr}`, `send@${b.addr}`, `recv@${b.addr}`, `send@${a.addr}`], 'backend recv <- middle send <- middle recv <- client send');
});

t.test('a peer outside the run sees the same bytes, both ways', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const trust = [subnet(a)];
  const size = '3000000';
  // Traced client, plain echo server.
  let server: Promise<{ status: number | null; stdout: string }> = plain(b, ['echo', b.addr, '7000', path.join(dir, 'r1')]);
  const c1 = await traced(a, dir, 'c1', ['blast', b.addr, '7000', size], { trust });
  t.equal(c1.status, 0, c1.stderr);
  t.equal((await server).status, 0);
  const [sent, got, n] = c1.stdout.trim().split(' ');
  t.equal(n, size, 'every byte came back');
  t.equal(got, sent, 'byte-identical');
  t.match(c1.stderr, /tcpOptionsWritten=[1-9]/, 'options were on the wire');
  // Traced echo server, plain client.
  const s2 = traced(b, dir, 's2', ['echo', b.addr, '7001', path.join(dir, 'r2')], { trust });
  const c2 = await plain(a, ['blast', b.addr, '7001', size]);
  t.equal((await s2).status, 0);
  const [sent2, got2, n2] = c2.stdout.trim().split(' ');
  t.equal(n2, size);
  t.equal(got2, sent2, 'byte-identical');
});

t.test('records from an untrusted peer are ignored and counted; none are sent to it', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const trace = newTraceId();
  // The client trusts the server's network and writes records; the server trusts only loopback.
  const server = traced(b, dir, 'server', ['server', b.addr, '7000', path.join(dir, 'r1')]);
  const client = await traced(a, dir, 'client', ['client', b.addr, '7000'], { trust: [subnet(a)], trace });
  const srv = await server;
  t.equal(client.stdout, 'ok:hello\n', 'the conversation still works');
  t.match(srv.stderr, /tcpOptionUntrustedIn=[1-9]/, 'the server counted the untrusted records');
  t.notOk(tcpEvents(path.join(dir, 'server.jsonl')).some((e) => e.trace === trace), "the server never adopted the client's trace");
  t.match(srv.stderr, /tcpOptionUntrustedOut=[1-9]/, 'and wrote no record towards the untrusted client');
  t.notMatch(srv.stderr, /tcpOptionsWritten/, 'not one');
});

t.test('malformed options from a hostile peer are rejected and counted', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const server = traced(b, dir, 'server', ['server', b.addr, '7000', path.join(dir, 'r1')], { trust: [subnet(a)] });
  const hostile = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const c = spawn('ip', ['netns', 'exec', a.ns, 'python3', path.join(__dirname, 'fixtures', 'hostile.py'), b.addr, '7000', '253', '0xc5a7']);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  const srv = await server;
  t.equal(hostile.status, 0, hostile.stderr);
  t.equal(srv.status, 0, `the traced server survived: ${srv.stderr}`);
  t.equal(hostile.stdout, 'ok:hello\n', 'and answered the same bytes');
  t.match(srv.stderr, /tcpOptionMalformed=2\b/, 'both malformed options were counted');
  t.notMatch(srv.stderr, /tcpOptionsReceived/, 'none was accepted');
});

/**
 * A blind off-path attacker who guesses a sequence number in the window but not the ACK: the
 * peer's kernel discards such segments in tcp_ack(), after the sockops program parsed their
 * options (test/fixtures/blind.py plays it from the client's own address). Taken, the forged
 * records would name bytes after the genuine record's start, so the genuine option would look
 * stale and the server would adopt the forged trace.
 */
t.test('a blind injection whose ACK the kernel discards publishes nothing; the genuine record still arrives', { skip: skip ?? false }, async (t) => {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const trust = [subnet(a)];
  const [trace, forged] = [newTraceId(), newTraceId()];
  const server = traced(b, dir, 'server', ['server', b.addr, '7000', path.join(dir, 'ready')], { trust });
  const blind = path.join(__dirname, 'fixtures', 'blind.py');
  const client = await causeway(['run', '-e', path.join(dir, 'client.jsonl'), '--trust', trust[0], '--trace', trace, '--',
    'ip', 'netns', 'exec', a.ns, 'python3', blind, b.addr, '7000', '253', '0xc5a7', forged]);
  const srv = await server;
  t.equal(client.status, 0, client.stderr);
  t.equal(srv.status, 0, srv.stderr);
  t.equal(client.stdout, 'ok:hello\n', 'the conversation is unchanged');
  t.match(srv.stderr, /tcpOptionBadAck=2\b/, 'both forged options were refused for their ACK, and counted');
  t.match(srv.stderr, /tcpOptionsReceived=1\b/, 'one option was taken: the genuine one');
  t.notMatch(srv.stderr, /tcpOptionStale/, 'the genuine option was not taken for stale');
  const se = tcpEvents(path.join(dir, 'server.jsonl'));
  t.notOk(readEvents(path.join(dir, 'server.jsonl')).some((e) => e.trace === forged), 'no event of the server carries the forged trace');
  const send = tcpEvents(path.join(dir, 'client.jsonl')).find((e) => e.type === 'send');
  const recv = se.find((e) => e.type === 'recv');
  t.match(recv, { trace, channel: { local: b.addr, remote: a.addr } }, "the server holds the client's genuine trace");
  t.same(recv?.parents, [send?.event], "and names the client's send as parent");
});
