/**
 * The built-in demo: a shell pipeline of unmodified programs runs under the
 * shim, and the demo prints how the root's record reached each of them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { run } from './runtime/runtime';
import { CausalEvent, channelName, eventToJson } from './events';
import { newRecord } from './record';

export const DEMO_PIPELINE = 'seq 1 200000 | gzip -1 | gunzip | wc -l';

/** Runs the demo; returns the exit status. */
export async function runDemo(opts: { events?: string } = {}, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const events: CausalEvent[] = [];
  const root = newRecord();
  out.write(`$ causeway run -- sh -c '${DEMO_PIPELINE}'\n`);
  const res = await run({
    command: 'sh',
    args: ['-c', DEMO_PIPELINE],
    record: root,
    onEvents: (b) => events.push(...b),
  });
  if (opts.events) fs.writeFileSync(opts.events, events.map((e) => JSON.stringify(eventToJson(e)) + '\n').join(''));
  out.write(`\nroot record: trace ${root.traceId}, event ${root.eventId}\n`);
  out.write('how each process got it (events from the kernel shim; no program was changed):\n');
  out.write(describe(events, root.traceId));
  return res.status;
}

/** How each process came to hold its record: by fork, or through the bytes it read. */
export function describe(events: CausalEvent[], traceId: string): string {
  const byId = new Map(events.map((e) => [e.record.eventId, e]));
  // A process is named by the first program it executed (gunzip, not the gzip it runs).
  const name = new Map<number, string>();
  for (const e of events) if (e.type === 'exec' && !name.has(e.pid)) name.set(e.pid, path.basename(e.path ?? e.comm));
  const who = (e: CausalEvent) => `${name.get(e.pid) ?? e.comm}[${e.pid}]`;
  const lines: string[] = [];
  for (const e of events) {
    if (e.type === 'fork' && !e.thread) lines.push(`  fork   ${who(e)} -> pid ${e.child?.pid}`);
    else if (e.type === 'exec') lines.push(`  exec   [${e.pid}] ${e.path}`);
    else if (e.type === 'recv' || e.type === 'join') {
      const from = e.parents.map((p) => byId.get(p)).filter((p): p is CausalEvent => Boolean(p));
      const writers = from.map((s) => who(s)).join(' + ') || 'outside the run';
      const same = e.record.traceId === traceId ? "the root's trace" : `trace ${e.record.traceId}`;
      lines.push(`  ${e.type.padEnd(6)} ${who(e)} read ${channelName(e.channel)} from ${writers}: adopts ${same}`);
    }
  }
  const readers = new Set(events.filter((e) => e.type === 'recv' && e.record.traceId === traceId).map(who));
  lines.push(`\n${readers.size} process(es) adopted the root's trace through pipes: ${[...readers].join(', ')}`);
  lines.push('keep the events with: causeway demo --events FILE (format: docs/events.md)');
  return lines.join('\n') + '\n';
}
