/**
 * How late events reach the runtime when the ring buffer is not filling: the
 * kernel wakes the reader only past a quarter of the ring, and the reader
 * takes what arrived without a wake-up every eventLatencyMs. A command makes
 * a few events, then sleeps: the time from its "made" marker to the first
 * batch shows which interval the reader used.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../src/runtime/runtime';
import { Shim, STORE_LATENCY_MS } from '../src/kernel/shim';
import { bpfUnavailable } from './helpers';

const skip = bpfUnavailable();

/** A few events (a pipe, a fork), a marker file, then 3 s of sleep; ms from the marker to the first batch. */
async function firstBatchAfter(opts: { eventLatencyMs?: number; onEvents?: boolean }): Promise<number> {
  return (await timings(opts)).first;
}

/** first: ms from the marker to the first batch; run: ms the whole run took. */
async function timings(opts: { eventLatencyMs?: number; onEvents?: boolean }): Promise<{ first: number; run: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-latency-'));
  const marker = path.join(dir, 'made');
  let first = 0;
  const t0 = Date.now();
  try {
    const res = await run({
      command: 'sh',
      args: ['-c', `echo hi | cat >/dev/null; touch ${marker}; sleep 3`],
      summary: false,
      eventLatencyMs: opts.eventLatencyMs,
      onRawEvents: () => (first ||= Date.now()),
      ...(opts.onEvents ? { onEvents: () => {} } : {}),
    });
    if (res.status !== 0) throw new Error(`the command failed: ${res.status}`);
    if (!first) throw new Error('no event arrived');
    return { first: first - fs.statSync(marker).mtimeMs, run: Date.now() - t0 };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

t.test('events reach the runtime within eventLatencyMs while the command still runs, and not before the reader looks', { skip: skip ?? false }, async (t) => {
  // 20 ms: well inside the command's 3 s of sleep, however loaded the machine.
  const fast = await firstBatchAfter({ eventLatencyMs: 20 });
  t.ok(fast < 2500, `with 20 ms, the first batch came ${fast.toFixed(0)} ms after the events, before the command ended`);
  // 10 s: the reader looks only once the command has ended (its 3 s of sleep), at the stop.
  const slow = await timings({ eventLatencyMs: 10000 });
  t.ok(slow.first >= 2900, `with 10 s, the first batch came at the end, ${slow.first.toFixed(0)} ms after the events`);
  // The reader checks for the stop every 50 ms whatever the interval: the run does not wait 10 s for it.
  t.ok(slow.run < 8000, `and the run ended ${slow.run} ms after it started (the command sleeps 3 s)`);
});

t.test('by default (100 ms when events are only stored, 20 ms with decoded-event consumers) events still arrive while the command runs', { skip: skip ?? false }, async (t) => {
  t.equal(STORE_LATENCY_MS, 100);
  const stored = await firstBatchAfter({});
  t.ok(stored < 2500, `raw events only: the first batch came ${stored.toFixed(0)} ms after the events`);
  const reacting = await firstBatchAfter({ onEvents: true });
  t.ok(reacting < 2500, `with onEvents: ${reacting.toFixed(0)} ms`);
});

t.test('a bad eventLatencyMs is refused before anything is loaded', async (t) => {
  for (const bad of [0, -1, 1.5, 10001, NaN])
    t.throws(() => new Shim({ cgroupPath: '/nonexistent', eventLatencyMs: bad }), { name: 'RangeError', message: /events' latency is 1 to 10000 ms/ }, String(bad));
});
