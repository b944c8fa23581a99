/**
 * Forged and malformed record options, by the tens of thousands, injected
 * with raw IP into a live connection between two hosts (network namespaces):
 * an untraced echo client on host a (test/fixtures/fuzz_options.py) echoes a
 * few MB through a traced echo server on host b and, between its rounds,
 * injects segments of every category at the connection's own sequence
 * numbers. Once from a peer outside --trust, once from a trusted but hostile
 * one. Every option that reaches the shim is accounted for under exactly one
 * counter; segments that the kernel drops before the shim sees them are
 * accounted for by the kernel's own counters where it keeps one, and are
 * never taken in any case. The echoed bytes must be the bytes sent.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, runCommand as plain, tmpdir, waitFor } from './helpers';
import { makeHosts, subnet } from './netns';
import { run } from '../src/runtime/runtime';
import type { CausalEvent } from '../src/kernel/events';
import type { Counters } from '../src/kernel/shim';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');
const PY = skip ? 'python3' : execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
/** Every forged trace id starts so (fuzz_options.py). */
const FORGED = 'f04cedf04ced';
const [ROUNDS, PER_ROUND, CHUNK] = [25, 2400, 128 * 1024];

type Category =
  | 'valid'
  | 'wrong_kind'
  | 'wrong_exid'
  | 'wrong_length'
  | 'wrong_version'
  | 'zero_event'
  | 'zero_trace'
  | 'no_payload'
  | 'truncated'
  | 'duplicated'
  | 'syn'
  | 'out_of_window'
  | 'old_seq'
  | 'bad_ack_future'
  | 'bad_ack_old'
  | 'no_ack_flag'
  | 'bad_checksum';
interface FuzzReport {
  sent: Record<Category, number>;
  total: number;
  sha_sent: string;
  sha_echoed: string;
  bytes: number;
}

/** The kernel's TCP counters in a network namespace (/proc/net/snmp and netstat), e.g. TcpInCsumErrors, TcpExtTCPSYNChallenge. */
function kernelCounters(ns: string): Record<string, number> {
  const lines = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp', '/proc/net/netstat'], { encoding: 'utf8' }).split('\n');
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i++) {
    const [p1, ...names] = lines[i].trim().split(/\s+/);
    const [p2, ...values] = lines[i + 1].trim().split(/\s+/);
    if (p1 !== p2 || !p1.endsWith(':') || names.length !== values.length || !Number.isNaN(Number(names[0]))) continue;
    names.forEach((n, j) => (out[p1.slice(0, -1) + n] = Number(values[j])));
    i++;
  }
  return out;
}

/** The shim's counters this test accounts for: every way an option of ours can go. */
const OPTION_COUNTERS: (keyof Counters)[] = [
  'tcpOptionsReceived',
  'tcpOptionBadAck',
  'tcpOptionUntrustedIn',
  'tcpOptionDuplicate',
  'tcpOptionMalformed',
  'tcpOptionStale',
  'actorAreasLost',
  'skStorageFailures',
];
/** The kernel counters printed with the figures (deltas on the receiving host). */
const KERNEL_COUNTERS = ['TcpInCsumErrors', 'TcpExtTCPSYNChallenge', 'TcpExtTCPChallengeACK', 'TcpExtTCPBacklogDrop'];

let totalSent = 0;

async function fuzz(t: Test, trusted: boolean) {
  const dir = tmpdir(t);
  const [a, b] = makeHosts(t, 2);
  const ready = path.join(dir, 'ready');
  const events: CausalEvent[] = [];
  const before = kernelCounters(b.ns);
  const server = run({
    command: 'ip',
    args: ['netns', 'exec', b.ns, PY, path.join(FIXTURES, 'tcp_node.py'), 'echo', b.addr, '7000', ready],
    trust: trusted ? [subnet(a)] : [],
    summary: false,
    onEvents: (batch) => events.push(...batch),
  });
  await waitFor(() => fs.existsSync(ready), 15000, 'the echo server to listen');
  const start = Date.now();
  const peer = await plain('ip', ['netns', 'exec', a.ns, PY, path.join(FIXTURES, 'fuzz_options.py'), b.addr, '7000', '253', '0xc5a7', String(ROUNDS), String(PER_ROUND), String(CHUNK)]);
  const seconds = (Date.now() - start) / 1000;
  const res = await server;
  const after = kernelCounters(b.ns);
  t.equal(peer.status, 0, `the injecting peer ran to the end: ${peer.stderr}`);
  t.equal(res.status, 0, 'the traced echo server ran to the end');
  const c = res.counters;
  t.ok(c, 'the shim counters were read: the shim was still loaded');
  if (peer.status !== 0 || !c) return;
  const r = JSON.parse(peer.stdout) as FuzzReport;
  const s = r.sent;
  totalSent += r.total;
  const got = Object.fromEntries(OPTION_COUNTERS.map((k) => [k, c[k]]));
  const kernel = Object.fromEntries(KERNEL_COUNTERS.map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));
  t.comment(JSON.stringify({ peer: trusted ? 'trusted, hostile' : 'untrusted', seconds, total: r.total, sent: s, shim: got, kernel, echoed: r.bytes }));

  t.equal(r.total, ROUNDS * PER_ROUND, `${r.total} segments injected`);
  t.equal(r.sha_echoed, r.sha_sent, `the ${r.bytes} bytes echoed are the bytes sent`);
  // What reaches the shim with an option of ours on it, by the order of its checks.
  const ours = s.valid + s.wrong_length + s.wrong_version + s.zero_event + s.zero_trace + s.no_payload + s.duplicated;
  const malformed = s.wrong_length + s.wrong_version + s.zero_event + s.zero_trace + s.no_payload;
  const expected: Partial<Record<keyof Counters, number>> = trusted
    ? { tcpOptionsReceived: s.valid, tcpOptionBadAck: s.bad_ack_future + s.bad_ack_old, tcpOptionDuplicate: s.duplicated, tcpOptionMalformed: malformed }
    : { tcpOptionBadAck: s.bad_ack_future + s.bad_ack_old, tcpOptionUntrustedIn: ours };
  for (const k of OPTION_COUNTERS) t.equal(c[k], expected[k] ?? 0, `${k} = ${expected[k] ?? 0}`);
  // Dropped by the kernel before the shim: counted by the kernel where it keeps a count.
  t.equal(kernel.TcpInCsumErrors, s.bad_checksum, `the kernel counted ${s.bad_checksum} bad checksums (TcpInCsumErrors)`);
  t.equal(kernel.TcpExtTCPSYNChallenge, s.syn, `and ${s.syn} SYNs on the established connection (TCPSYNChallenge)`);
  t.equal(kernel.TcpExtTCPBacklogDrop, 0, 'and dropped none for a busy socket (TCPBacklogDrop): every injected segment was processed');

  const forged = events.filter((e) => e.record.traceId.startsWith(FORGED));
  if (trusted) {
    // The control: records from a trusted peer are taken, forged or not; its next bytes carry the last one.
    t.ok(forged.some((e) => e.type === 'recv'), 'the records of the well-formed segments were adopted (the peer is trusted)');
  } else {
    t.equal(forged.length, 0, 'no event carries a forged trace');
    t.equal(c.tcpOptionsReceived, 0, 'not one option from the untrusted peer was taken');
  }
}

t.test('an untrusted peer: every option refused and counted, no forged trace anywhere, the bytes unchanged', { skip: skip ?? false }, async (t) => {
  await fuzz(t, false);
});

t.test('a trusted but hostile peer: every malformed option refused and counted by reason, the bytes unchanged', { skip: skip ?? false }, async (t) => {
  await fuzz(t, true);
});

t.test('at least 100,000 segments were injected in all', { skip: skip ?? false }, async (t) => {
  t.ok(totalSent >= 100000, `${totalSent} segments`);
});
