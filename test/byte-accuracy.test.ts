/**
 * Byte accuracy: a writer writes 1000 bytes under record X, is re-injected
 * with record Y, writes 1000 more. A reader taking 1000 at a time adopts X
 * then Y; a reader taking all 2000 at once records a join of X and Y. Over a
 * pipe, a UNIX stream socket, and TCP on loopback (where the two writes leave
 * back to back and the reader sees them in one segment of the stream).
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, tmpdir } from './helpers';
import { run } from '../src/runtime/runtime';
import { newRecord } from '../src/kernel/record';
import type { CausalEvent, Channel } from '../src/kernel/events';
import { DROP_COUNTERS, type Shim } from '../src/kernel/shim';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');

/** Lines from a FIFO, one at a time, without blocking the event loop. */
async function lineReader(file: string) {
  const fh = await fs.promises.open(file, 'r');
  const lines: string[] = [];
  let buf = '';
  let wake: (() => void) | null = null;
  const stream = fh.createReadStream({ encoding: 'utf8' });
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    wake?.();
  });
  return async (): Promise<string> => {
    while (!lines.length) await new Promise<void>((r) => (wake = r));
    return lines.shift()!;
  };
}

type Transport = 'pipe' | 'unix' | 'tcp' | 'tcpcork';

/** Whether a receive is on the channel a send went into (TCP: the same connection, seen from the other end). */
function sameChannel(send: Channel | null | undefined, recv: Channel | null): boolean {
  if (!send || !recv || send.kind !== recv.kind) return false;
  if (send.kind === 'tcp' && recv.kind === 'tcp')
    return send.local === recv.remote && send.localPort === recv.remotePort && send.remote === recv.local && send.remotePort === recv.localPort;
  return JSON.stringify(send) === JSON.stringify(recv);
}

async function scenario(t: Tap.Test, readSize: number, transport: Transport) {
  const dir = tmpdir(t);
  const [ctl, ack, go, out] = ['ctl', 'ack', 'go', 'out'].map((n) => path.join(dir, n));
  const target = transport === 'pipe' ? '' : transport === 'unix' ? `unix:${dir}/sock` : `${transport}:${dir}/port`;
  const script =
    transport === 'pipe'
      ? `python3 ${FIXTURES}/writer.py ${ctl} ${ack} | python3 ${FIXTURES}/reader.py ${go} ${readSize} ${out}`
      : `python3 ${FIXTURES}/reader.py ${go} ${readSize} ${out} ${target} & python3 ${FIXTURES}/writer.py ${ctl} ${ack} ${target}; wait`;
  execFileSync('mkfifo', [ctl, ack, go]);
  const X = newRecord();
  const Y = newRecord();
  const events: CausalEvent[] = [];
  let shim: Shim | null = null;

  const done = run({
    command: 'sh',
    args: ['-c', script],
    onEvents: (b) => events.push(...b),
    onStart: (ctx) => (shim = ctx.shim),
    summary: false,
  });
  const ackLine = await lineReader(ack);
  const ctlFh = await fs.promises.open(ctl, 'w');
  const writerPid = Number(await ackLine());

  shim!.writeRecord(writerPid, X);
  t.same(shim!.readRecord(writerPid)?.traceId, X.traceId, 'X is injected');
  await ctlFh.write('go\n');
  t.equal(await ackLine(), '1');
  shim!.writeRecord(writerPid, Y);
  await ctlFh.write('go\n');
  t.equal(await ackLine(), '2');
  await ctlFh.close();
  const goFh = await fs.promises.open(go, 'w');
  await goFh.write('go\n');
  await goFh.close();

  const res = await done;
  t.equal(res.status, 0, 'the pipeline succeeded');
  for (const k of DROP_COUNTERS) if (k !== 'tcpOptionBoundaries') t.equal(res.counters?.[k], 0, `no ${k}`);
  // Corked, both records leave in one segment: the option can name only one, the
  // record of the segment's last byte (counted), on one host as between hosts.
  if (transport === 'tcpcork') t.ok(res.counters!.tcpOptionBoundaries >= 1, 'the two records shared one segment');
  else t.equal(res.counters?.tcpOptionBoundaries, 0, 'no segment held two records');
  const sends = events.filter((e) => e.type === 'send' && e.pid === writerPid && e.channel?.kind === (transport === 'tcpcork' ? 'tcp' : transport));
  const sendX = sends.find((e) => e.record.traceId === X.traceId);
  const sendY = sends.find((e) => e.record.traceId === Y.traceId);
  t.ok(sendX && sendY, 'one send under X, one under Y');
  t.same(sendX?.parents, [X.eventId], "X's send follows the injected event");
  t.same(sendY?.parents, [Y.eventId], "Y's send follows the injected event");
  const reads = events.filter((e) => (e.type === 'recv' || e.type === 'join') && e.pid !== writerPid && sameChannel(sendX?.channel, e.channel));
  return { reads, sendX: sendX!, sendY: sendY!, got: fs.readFileSync(out, 'utf8'), X, Y };
}

// tcpcork: TCP_CORK holds the first write back, so both records leave in one
// segment, whose option names Y from its first byte on: every read adopts Y.
for (const transport of ['pipe', 'unix', 'tcp', 'tcpcork'] as Transport[]) {
  if (transport === 'tcpcork') {
    for (const readSize of [1000, 2000])
      t.test(`tcpcork: reads of ${readSize} adopt Y, the record of the segment's last byte`, { skip: skip ?? false }, async (t) => {
        const { reads, sendY, got, Y } = await scenario(t, readSize, transport);
        t.equal(got, readSize === 1000 ? '1000 1000' : '2000', 'the reader got every byte');
        t.equal(reads.length, 1, 'one receive event: the second read continues the run of bytes adopted');
        t.match(reads[0], { type: 'recv', bytes: readSize, parents: [sendY.record.eventId], record: { traceId: Y.traceId } });
      });
    continue;
  }
  t.test(`${transport}: reads of 1000 adopt X, then Y`, { skip: skip ?? false }, async (t) => {
    const { reads, sendX, sendY, got, X, Y } = await scenario(t, 1000, transport);
    t.equal(got, '1000 1000', 'the reader got 1000 and 1000');
    t.equal(reads.length, 2, 'two receive events');
    t.match(reads[0], { type: 'recv', bytes: 1000, parents: [sendX.record.eventId], record: { traceId: X.traceId } });
    t.match(reads[1], { type: 'recv', bytes: 1000, parents: [sendY.record.eventId], record: { traceId: Y.traceId } });
  });

  t.test(`${transport}: one read of 2000 is a join of X and Y`, { skip: skip ?? false }, async (t) => {
    const { reads, sendX, sendY, got, Y } = await scenario(t, 2000, transport);
    t.equal(got, '2000', 'the reader got all 2000 at once');
    t.equal(reads.length, 1, 'one event');
    t.match(reads[0], { type: 'join', bytes: 2000, record: { traceId: Y.traceId } });
    t.same(reads[0].parents, [sendX.record.eventId, sendY.record.eventId], 'it names both sends, X first');
  });
}
