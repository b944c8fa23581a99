/**
 * `causeway show`: a trace as a tree in the terminal. Each event hangs under
 * the event it follows (its first parent in the trace; for a join, the one it
 * adopted), children in time order. Times are relative to the trace's start;
 * a recv or join shows the hop's latency from the send it read, and under it
 * the layers of the hop's path if they were timed (--layers): each layer's
 * name, kind, direction and the time from entering it to entering the next.
 */
import { channelName } from '../kernel/events';
import type { Hop, Layer, TraceEvent, TraceGraph } from './graph';

const ms = (ns: bigint) => (Number(ns) / 1e6).toFixed(3);
const layerName = (l: Layer) => (l.kind === 'socket' ? `socket@${l.netns}` : `${l.ifname}@${l.netns}`);

function describe(e: TraceEvent, g: TraceGraph): string {
  const who = `${e.comm}[${e.pid}${e.tid !== e.pid ? `/${e.tid}` : ''}]${g.hosts.length > 1 ? `@${e.host}` : ''}`;
  switch (e.type) {
    case 'fork':
      return `fork   ${who} -> ${e.child ? `pid ${e.child.pid}${e.child.tid !== e.child.pid ? ` thread ${e.child.tid}` : ''}` : ''}`;
    case 'exec':
      return `exec   ${who} ${e.path ?? ''}`;
    case 'exit':
      return `exit   ${who}${e.signal ? ` killed by signal ${e.signal}` : e.exitCode !== undefined ? ` status ${e.exitCode}` : ''}`;
    case 'send':
      return `send   ${who} ${channelName(e.channel)} ${e.bytes} B`;
    case 'ingress':
      return `ingress ${who} ${channelName(e.channel)}${e.minted ? ' (new trace minted)' : ' (bytes with no record)'}`;
    case 'recv':
    case 'join': {
      const hops = e.parents
        .map((p) => g.byId.get(p))
        .filter((s): s is TraceEvent => s !== undefined && s.type === 'send')
        .map((s) => `${s.comm}[${s.pid}] +${ms(e.ts - s.ts)} ms`);
      return `${e.type.padEnd(6)} ${who} ${channelName(e.channel)} ${e.bytes} B${hops.length ? ` <- ${hops.join(', ')}` : ''}`;
    }
  }
}

/** The tree of one trace, one line per event. */
export function renderTree(g: TraceGraph): string {
  const children = new Map<string, TraceEvent[]>();
  const top: TraceEvent[] = [];
  for (const e of g.events) {
    const inTrace = e.parents.filter((p) => g.byId.has(p));
    const parent = e.type === 'join' ? inTrace[inTrace.length - 1] : inTrace[0];
    if (!parent) top.push(e);
    else {
      let list = children.get(parent);
      if (!list) children.set(parent, (list = []));
      list.push(e);
    }
  }
  // Hops with layers (causeway trace --layers), listed under their read.
  const layered = new Map<string, Hop[]>();
  for (const h of g.hops)
    if (h.layers) {
      let list = layered.get(h.recv.id);
      if (!list) layered.set(h.recv.id, (list = []));
      list.push(h);
    }
  const dur = g.end - g.start;
  const lines = [
    `trace ${g.trace}: ${g.events.length} events, ${g.processes.length} processes, ${g.hosts.length} host(s) (${g.hosts.join(', ')}), ${ms(dur)} ms`,
  ];
  // Iterative depth-first walk: traces can be deep (long chains on one thread).
  const stack: [TraceEvent, number][] = top.reverse().map((e) => [e, 0]);
  while (stack.length) {
    const [e, depth] = stack.pop()!;
    const indent = '  '.repeat(Math.min(depth, 40));
    lines.push(`${('+' + ms(e.ts - g.start)).padStart(11)} ms ${indent}${describe(e, g)}`);
    for (const h of layered.get(e.id) ?? []) {
      const pad = ' '.repeat(15) + indent + '     ';
      if ((layered.get(e.id) ?? []).length > 1) lines.push(`${pad}layers of the hop from ${h.send.comm}[${h.send.pid}]:`);
      for (const l of h.layers!) lines.push(`${pad}| ${layerName(l).padEnd(28)} ${l.kind.padEnd(7)} ${l.dir.padEnd(3)} ${('+' + ms(l.latencyNs)).padStart(10)} ms${l.encap ? ' (in VXLAN)' : ''}`);
    }
    const kids = children.get(e.id) ?? [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  return lines.join('\n');
}
