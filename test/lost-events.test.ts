/**
 * An events file or trace database that fails during the run: the command's
 * status still comes back, and every event not kept is counted and named as a
 * loss. Real processes, /dev/full and small tmpfs mounts that fill up.
 */
import t, { Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { bpfUnavailable, causeway, EventJson } from './helpers';

const skip = bpfUnavailable();

/** A tmpfs of `size` in a new temporary directory: unmounted and removed when the test ends, failed or not. */
function smallDisk(t: Test, size: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-small-'));
  t.teardown(() => {
    if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return dir;
}

/** The run's summary line: its event count and the events file's loss (0 if not named). */
function summary(stderr: string): { events: number; lost: number; line: string } | null {
  const line = /^causeway: \d+ events, .*$/m.exec(stderr)?.[0];
  if (!line) return null;
  const lost = /DROPS: (?:\S+ )*eventsFileLost=(\d+)/.exec(line);
  return { events: Number(/^causeway: (\d+) events/.exec(line)![1]), lost: lost ? Number(lost[1]) : 0, line };
}

const count = (s: string, re: RegExp) => s.match(new RegExp(re.source, 'gm'))?.length ?? 0;

/** Many short processes joined by pipes: thousands of events (the first ones a few at a time). */
const BUSY = 'for i in $(seq 20); do echo $i | cat >/dev/null; sleep 0.01; done; for i in $(seq 300); do echo $i | cat >/dev/null; done';

t.test('-e /dev/full: the command\'s status, and every event counted as lost', { skip: skip ?? false }, async (t) => {
  const r = await causeway(['run', '-e', '/dev/full', '--', 'sh', '-c', 'echo hi | cat; exit 3']);
  t.equal(r.status, 3, `the command's status comes back: ${r.stderr}`);
  t.equal(r.stdout, 'hi\n', 'the command ran to its end');
  t.equal(count(r.stderr, /^causeway: writing events to \/dev\/full failed: ENOSPC/), 1, 'the error is printed once');
  const s = summary(r.stderr);
  t.ok(s, 'the summary is printed');
  t.ok(s && s.events > 0, 'the command produced events');
  t.equal(s?.lost, s?.events, `the summary names each of them as lost: ${s?.line}`);

  const q = await causeway(['run', '-q', '-e', '/dev/full', '--', 'sh', '-c', 'echo hi | cat; exit 3']);
  t.equal(q.status, 3);
  t.match(summary(q.stderr)?.line, /DROPS: .*eventsFileLost=[1-9]/, '-q still prints a summary that has a loss');
});

t.test('an events file whose disk fills mid-run keeps the events before, whole; the rest are counted', { skip: skip ?? false }, async (t) => {
  const file = path.join(smallDisk(t, '64k'), 'ev.jsonl');
  const r = await causeway(['run', '-e', file, '--', 'sh', '-c', `${BUSY}; exit 5`]);
  t.equal(r.status, 5, `the command's status comes back: ${r.stderr}`);
  t.equal(count(r.stderr, /^causeway: writing events to .* failed: ENOSPC/), 1, 'the error is printed once');
  const s = summary(r.stderr);
  t.ok(s && s.lost > 0, `the summary names the loss: ${s?.line}`);
  const text = fs.readFileSync(file, 'utf8');
  t.ok(text === '' || text.endsWith('\n'), 'the file ends with a whole line (a partial one is cut off)');
  const kept = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as EventJson);
  t.ok(kept.length > 0, `events written before the disk filled are kept (${kept.length})`);
  t.equal(kept.length + (s?.lost ?? 0), s?.events, 'kept + lost = every event of the run');
  t.equal(kept[0].type, 'exec', 'from the first one on');
});

t.test('a trace database whose disk fills mid-run: status, loss counted, what was stored still readable', { skip: skip ?? false }, async (t) => {
  const dir = smallDisk(t, '2m');
  const db = path.join(dir, 'traces.db');
  // A few events are stored; then, with nothing else going on, a filler takes every free page of the
  // disk (so that the database has no room left, not even to record the run's end), and more events follow.
  const fill = `import time\ntime.sleep(0.5)\ntry:\n  open("${dir}/filler", "wb").write(bytes(1 << 24))\nexcept OSError:\n  pass\n`;
  const script = `for i in 1 2 3; do echo $i | cat >/dev/null; done; python3 -c '${fill}'; ${BUSY}; exit 5`;
  const r = await causeway(['trace', '--db', db, '--', 'sh', '-c', script]);
  t.equal(r.status, 5, `the command's status comes back: ${r.stderr}`);
  t.notMatch(r.stderr, /SqliteError|\n +at /, 'no stack trace');
  t.equal(count(r.stderr, /^causeway: storing events in .* failed: database or disk is full/), 1, 'the error is printed once');
  t.match(r.stderr, /^causeway: recording the run's end \(status 5\) in .* failed: database or disk is full$/m, 'the run\'s end could not be stored either: said, and the status still comes back');
  const line = /^causeway: tracer stored (\d+) events of (\d+) trace\(s\) in .*; FAILED to store (\d+) events, LOST \(database or disk is full\)/m.exec(r.stderr);
  t.ok(line, `the tracer names the loss: ${r.stderr}`);
  const stored = Number(line?.[1]);
  const lost = Number(line?.[3]);
  t.ok(lost > 0, `${lost} lost`);
  t.ok(stored > 0, `${stored} stored before the disk filled`);
  const s = summary(r.stderr);
  t.notMatch(s?.line, /DROPPED/, 'the tracer kept up: nothing left its queue unstored');
  t.equal(stored + lost, s?.events, 'stored + lost = every event of the run');

  const ls = await causeway(['ls', '--db', db, '--json']);
  t.equal(ls.status, 0, ls.stderr);
  const rows = JSON.parse(ls.stdout) as { id: string; events: number }[];
  t.equal(rows.length, 1, 'causeway ls lists the trace');
  t.equal(rows[0]?.events, stored, 'with the events that were stored');
  const show = await causeway(['show', '--db', db, '--json', rows[0]?.id ?? '']);
  t.equal(show.status, 0, show.stderr);
  const g = JSON.parse(show.stdout) as { events: { type: string; comm: string }[] };
  t.equal(g.events.length, stored, 'causeway show reads every one of them');
  t.equal(g.events[0]?.type, 'exec', 'from the root on');
  t.ok(g.events.some((e) => e.type === 'exec' && e.comm === 'python3'), 'up to the filler');
});
