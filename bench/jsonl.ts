/**
 * What `-e FILE` costs to format: the native formatter (native/jsonl.cc)
 * against the TypeScript path it replaced (decodeEvents, eventToJson,
 * JSON.stringify, Buffer.from, as EventsFile did), in one process on the same
 * raw batches: those of a real run (pipe ping-pong with a sampled record, as
 * fast as it goes: four events per round trip). Rounds alternate the paths
 * and rotate their order; each is timed over every batch, CPU time of the
 * process (user + system, GC included) and wall time. Nothing is written:
 * this is the formatting alone, not the file's writes.
 */
import { run } from '../src/runtime/runtime';
import { decodeEvents, eventToJson, EVENT_BYTES } from '../src/kernel/events';
import { native } from '../src/kernel/native';
import { median } from './common';

interface PathResult {
  path: string;
  /** CPU ns per event, one sample per round. */
  cpuNs: number[];
  /** Wall ns per event, one sample per round. */
  wallNs: number[];
}

const PATHS: { path: string; format: (raw: Buffer, offset: bigint) => unknown }[] = [
  {
    path: 'TypeScript: decodeEvents + eventToJson + JSON.stringify + Buffer.from',
    format: (raw, offset) => Buffer.from(decodeEvents(raw, offset).map((e) => JSON.stringify(eventToJson(e))).join('\n') + '\n'),
  },
  { path: 'TypeScript: decodeEvents alone (what onEvents and actors still pay)', format: (raw, offset) => decodeEvents(raw, offset) },
  { path: 'native: formatJsonLines', format: (raw, offset) => native().formatJsonLines(raw, offset) },
];

/** Raw batches of a real run: pingpong (bench/pingpong.c) pipe mode for secs, at most maxEvents of them. */
async function capture(pingpong: string, out: string, secs: number, maxEvents: number): Promise<{ batches: Buffer[]; offset: bigint; drops: number }> {
  const batches: Buffer[] = [];
  let events = 0;
  let offset = 0n;
  const res = await run({
    command: pingpong,
    args: ['pipe', '1', String(secs), out, '-1'],
    summary: false,
    onRawEvents: (b, o) => {
      offset = o;
      if (events >= maxEvents) return;
      batches.push(b);
      events += b.length / EVENT_BYTES;
    },
  });
  if (res.status !== 0) throw new Error(`pingpong under the run exited with ${res.status}`);
  return { batches, offset, drops: res.counters?.ringbufDrops ?? 0 };
}

function timeOnce(format: (raw: Buffer, offset: bigint) => unknown, batches: Buffer[], offset: bigint, events: number): { cpu: number; wall: number } {
  const c0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  for (const b of batches) format(b, offset);
  const wall = Number(process.hrtime.bigint() - w0);
  const c = process.cpuUsage(c0);
  return { cpu: ((c.user + c.system) * 1000) / events, wall: wall / events };
}

export async function benchJsonl(opts: { pingpong: string; out: string; quick: boolean }): Promise<{ json: unknown; md: string }> {
  const { batches, offset, drops } = await capture(opts.pingpong, opts.out, opts.quick ? 1 : 2, 200_000);
  const events = batches.reduce((n, b) => n + b.length / EVENT_BYTES, 0);
  if (!events) throw new Error('the run gave no events to format');
  // The two must agree before their times mean anything.
  let bytes = 0;
  for (const b of batches) {
    const n = native().formatJsonLines(b, offset);
    if (!n.equals(PATHS[0].format(b, offset) as Buffer)) throw new Error('the native and TypeScript formats differ: run test/jsonl.test.ts');
    bytes += n.length;
  }
  const rounds = opts.quick ? 5 : 9;
  const results: PathResult[] = PATHS.map((p) => ({ path: p.path, cpuNs: [], wallNs: [] }));
  for (let r = -1; r < rounds; r++) {
    for (let k = 0; k < PATHS.length; k++) {
      const i = (k + Math.max(r, 0)) % PATHS.length;
      const t = timeOnce(PATHS[i].format, batches, offset, events);
      if (r < 0) continue; // a warm-up round
      results[i].cpuNs.push(t.cpu);
      results[i].wallNs.push(t.wall);
    }
  }
  const [ts, , nat] = results;
  const med = (xs: number[]) => median(xs);
  const speedup = med(ts.cpuNs) / med(nat.cpuNs);
  for (const p of results) process.stderr.write(`jsonl: ${p.path}: ${med(p.cpuNs).toFixed(0)} ns CPU per event, ${(1e9 / med(p.cpuNs)).toFixed(0)} events/s\n`);
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;
  const md = [
    '## Events to a file: formatting (bench/jsonl.ts)',
    '',
    `${events} events in ${batches.length} raw batches from a real run (pipe ping-pong with a sampled record; ring buffer drops in that run: ${drops}), ` +
      `${(bytes / events).toFixed(0)} bytes of JSON per event; each path over every batch, ${rounds} rounds alternated after a warm-up, in one process. ` +
      'CPU time is the process\'s (user + system, garbage collection included); events/s is per core of CPU time. The formats were checked equal byte for byte first.',
    '',
    '| path | CPU ns per event, median (min-max) | events/s per core | wall ns per event, median |',
    '|---|---|---|---|',
    ...results.map((p) => `| ${p.path} | ${med(p.cpuNs).toFixed(0)} (${range(p.cpuNs)}) | ${(1e9 / med(p.cpuNs)).toFixed(0)} | ${med(p.wallNs).toFixed(0)} |`),
    '',
    `- \`-e FILE\` formats natively: ${speedup.toFixed(1)}x less CPU per event than the TypeScript path, which spent ${(med(ts.cpuNs) - med(nat.cpuNs)).toFixed(0)} ns more on each.`,
    '',
  ].join('\n');
  return { json: { events, batches: batches.length, bytesPerEvent: bytes / events, ringbufDrops: drops, rounds, results, speedup }, md };
}
