/**
 * Two writers entering write(2) on one pipe at the same instant, on two CPUs
 * (fixtures/pipe_race.c: two threads, or two processes, released by a
 * spinning barrier), and a reader that reads both writes in one read. The
 * shim reserves each writer's offsets and segment slot in one atomic step at
 * sys_enter, so neither write's segment can replace the other's: every such
 * read is a join that names both sends of its round. Before that (see
 * docs/hot-path.md), about one round in three named only one of them.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bpfUnavailable, tmpdir } from './helpers';
import { run } from '../src/runtime/runtime';
import type { CausalEvent } from '../src/kernel/events';
import { DROP_COUNTERS } from '../src/kernel/shim';

const skip = bpfUnavailable();
const ROUNDS = 200;

function fixture(dir: string): string {
  const bin = path.join(dir, 'pipe_race');
  execFileSync('cc', ['-O2', '-Wall', '-pthread', '-o', bin, path.join(__dirname, 'fixtures', 'pipe_race.c')]);
  return bin;
}

for (const mode of ['threads', 'procs']) {
  t.test(`two ${mode} writing one pipe at once, ${ROUNDS} rounds: every read of both writes is a join of both sends`, { skip: skip ?? false, timeout: 120000 }, async (t) => {
    const dir = tmpdir(t);
    const report = path.join(dir, 'report');
    const events: CausalEvent[] = [];
    const res = await run({ command: fixture(dir), args: [mode, String(ROUNDS), report], summary: false, onEvents: (b) => events.push(...b) });
    t.equal(res.status, 0, 'the fixture ran every round');
    const c = res.counters!;
    for (const k of DROP_COUNTERS) t.equal(c[k], 0, `${k} = 0`);

    const [ino, ...spreads] = fs.readFileSync(report, 'utf8').trim().split('\n').map(Number);
    const onPipe = events.filter((e) => e.channel?.kind === 'pipe' && e.channel.ino === ino);
    const sends = onPipe.filter((e) => e.type === 'send');
    const reads = onPipe.filter((e) => e.type === 'recv' || e.type === 'join');
    const sendBy = new Map(sends.map((e) => [e.record.eventId, e]));
    t.equal(sends.length, 2 * ROUNDS, 'a send per write: each writer writes under a new record every round');
    t.equal(new Set(sends.map((e) => e.tid)).size, 2, 'by two threads');
    t.equal(reads.length, ROUNDS, 'a read per round');

    let joins = 0;
    const named = new Set<string>();
    const bad: string[] = [];
    reads.forEach((e, r) => {
      const parents = e.parents.map((p) => sendBy.get(p));
      const ok = e.type === 'join' && parents.length === 2 && parents.every(Boolean) && parents[0]!.tid !== parents[1]!.tid;
      if (ok) joins++;
      else if (bad.length < 5) bad.push(`read ${r}: ${e.type} of ${e.bytes} B naming ${parents.map((p) => (p ? `a send by ${p.tid}` : 'no send on this pipe')).join(', ')}`);
      for (const p of e.parents) named.add(p);
    });
    t.equal(joins, ROUNDS, `${joins}/${ROUNDS} reads are joins naming both writers' sends`, { bad });
    t.equal(named.size, 2 * ROUNDS, 'every send is named by a read');

    const close = spreads.filter((ns) => ns < 1000).length;
    t.comment(`${close}/${ROUNDS} rounds had the two writes start within 1 us of each other; writersRaced = ${c.writersRaced}`);
    t.ok(c.writersRaced <= 2 * ROUNDS, 'writersRaced counts at most the writes to the data pipe');
    if (close >= ROUNDS / 4) t.ok(c.writersRaced > 0, 'writes that entered while the other writer was in write(2) were counted');
  });
}
