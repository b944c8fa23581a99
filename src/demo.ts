/**
 * The built-in demo: a small multi-process system shipped in demo/ (a shell
 * driver, a Python api, a Node store and collector, a C filter) runs under
 * the tracer. Requests cross a pipe, a UNIX socket, another pipe and TCP
 * between two network namespaces the demo makes (and always removes); the
 * demo prints the stored trace as a tree and points at the hops worth seeing.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { channelName } from './kernel/events';
import { newRecord } from './kernel/record';
import { trace } from './tracer/trace';
import { TraceStore } from './tracer/store';
import { buildGraph, Hop, TraceGraph, TraceEvent } from './tracer/graph';
import { renderTree } from './tracer/tree';

export interface DemoOptions {
  /** Also keep the events as JSON Lines. */
  events?: string;
  /** The HTML report (default causeway-demo.html in the current directory). */
  html?: string;
  /** The trace database (default: a fresh file under os.tmpdir()). */
  db?: string;
}

/** The demo's private network: namespace A holds .1, B holds .2. */
export const DEMO_NET = '10.215.0';
export const DEMO_SUBNET = `${DEMO_NET}.0/24`;
const NS_PREFIX = 'cwdemo';
const PORT = 7215;

/** Where the demo system's programs are (demo/ at the top of the package). */
function demoDir(): string {
  for (const d of [path.resolve(__dirname, '..', '..', 'demo'), path.resolve(__dirname, '..', 'demo')])
    if (fs.existsSync(path.join(d, 'system.sh'))) return d;
  throw new Error(`the demo system (demo/system.sh) is missing next to ${__dirname}`);
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why a command failed, in one line. */
function why(err: unknown, cmd: string, pkg: string): string {
  const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
  if (e.code === 'ENOENT') return `${cmd} is missing (Debian: apt-get install ${pkg})`;
  return (e.stderr?.toString().trim() || e.message).split('\n')[0];
}

/** Removes the namespaces of demos whose process is gone (SIGKILLed, say). */
function sweep(): void {
  let list = '';
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return;
  }
  for (const line of list.split('\n')) {
    const m = new RegExp(`^(${NS_PREFIX}(\\d+)[ab])\\b`).exec(line);
    if (!m) continue;
    try {
      process.kill(Number(m[2]), 0);
      continue; // its demo still runs
    } catch {
      /* dead: remove */
    }
    try {
      ip('netns', 'del', m[1]);
    } catch {
      /* gone meanwhile */
    }
  }
}

/** Two namespaces joined by a veth pair; `made` lists what exists, for removal even if a step fails. */
function makeNamespaces(made: string[]): { a: string; b: string } {
  sweep();
  const a = `${NS_PREFIX}${process.pid}a`;
  const b = `${NS_PREFIX}${process.pid}b`;
  for (const ns of [a, b]) {
    ip('netns', 'add', ns);
    made.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  ip('-n', a, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b);
  ip('-n', a, 'addr', 'add', `${DEMO_NET}.1/24`, 'dev', 'eth0');
  ip('-n', b, 'addr', 'add', `${DEMO_NET}.2/24`, 'dev', 'eth0');
  ip('-n', a, 'link', 'set', 'eth0', 'up');
  ip('-n', b, 'link', 'set', 'eth0', 'up');
  return { a, b };
}

function removeNamespaces(made: string[]): void {
  while (made.length) {
    const ns = made.pop()!;
    try {
      ip('netns', 'del', ns);
    } catch {
      /* already gone */
    }
  }
}

/** The C filter, compiled into dir if a C compiler exists; else a shell pipeline doing the same. */
function filterCommand(src: string, dir: string, notes: string[]): string[] {
  const bin = path.join(dir, 'tally');
  try {
    execFileSync('cc', ['-O2', '-o', bin, src], { stdio: ['ignore', 'ignore', 'pipe'] });
    return [bin];
  } catch (err) {
    notes.push(`no C filter (${why(err, 'cc', 'gcc')}): sort and uniq do its work`);
    return ['/bin/sh', '-c', "tr -s ' ' '\\n' | sort | uniq -c | sort -k1,1nr -k2,2 | awk '{ print $1, $2 }'"];
  }
}

/** A free TCP port on loopback (for the fallback without namespaces). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const ms = (ns: bigint) => (Number(ns) / 1e6).toFixed(3);

/** Runs the demo; returns the exit status (0 when the demo worked). */
export async function runDemo(opts: DemoOptions = {}, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const dir = demoDir();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-demo-'));
  const db = path.resolve(opts.db ?? path.join(os.tmpdir(), `causeway-demo-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}.db`));
  const html = path.resolve(opts.html ?? 'causeway-demo.html');
  const made: string[] = [];
  const notes: string[] = [];
  let interrupted: NodeJS.Signals | null = null;
  // While the demo runs, a signal ends the traced system (the runtime forwards it)
  // instead of this process, so that the namespaces are removed below.
  const onSignal = (sig: NodeJS.Signals) => (interrupted ??= sig);
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  const cleanup = () => {
    removeNamespaces(made);
    fs.rmSync(work, { recursive: true, force: true });
  };
  process.on('exit', cleanup); // should anything exit the process before the finally below
  try {
    let ns = { a: '', b: '' };
    let addrA = '127.0.0.1';
    let addrB = '127.0.0.1';
    let port = PORT;
    try {
      ns = makeNamespaces(made);
      addrA = `${DEMO_NET}.1`;
      addrB = `${DEMO_NET}.2`;
    } catch (err) {
      removeNamespaces(made);
      port = await freePort();
      notes.push(`could not make network namespaces (${why(err, 'ip', 'iproute2')}): NOTE the TCP hop runs over loopback in this namespace instead`);
    }
    const filter = filterCommand(path.join(dir, 'tally.c'), work, notes);
    const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
    const sock = path.join(work, 'store.sock');
    const args = [path.join(dir, 'system.sh'), ns.a, ns.b, addrB, String(port), sock, python, process.execPath, ...filter];

    out.write('causeway demo: a small system of unmodified programs (demo/) under `causeway trace`:\n');
    out.write(`  system.sh (sh)      sends 3 requests through a pipe to api.py\n`);
    out.write(`  api.py (Python)     asks store.js over the UNIX socket ${sock}\n`);
    out.write(`  store.js (Node)     answers each request with a basket of fruit\n`);
    out.write(`  ${filter.length === 1 ? 'tally (C)          ' : 'sort | uniq -c     '} counts the fruit, reading and writing pipes to api.py\n`);
    out.write(`  collector.js (Node) gets the count over TCP from ${addrA} to ${addrB}:${port}\n`);
    if (ns.a) out.write(`  network namespaces: ${ns.a} (api, store: ${addrA}) and ${ns.b} (collector: ${addrB}), over a veth pair\n`);
    for (const n of notes) out.write(`  ${n}\n`);
    out.write('\n');
    if (interrupted) return 130;

    const root = newRecord();
    const res = await trace({
      command: '/bin/sh',
      args,
      record: root,
      db,
      html,
      eventsFile: opts.events,
      trust: ns.a ? [DEMO_SUBNET] : [],
      status: false,
    });
    if (interrupted) {
      out.write(`\ncauseway demo: interrupted (${interrupted}); cleaned up (namespaces, temporary files)\n`);
      return res.status || 130;
    }

    const store = TraceStore.open(db, { readonly: true });
    let graphs: TraceGraph[];
    try {
      // The root's trace first: it holds the whole system.
      const ids = [...res.traces].sort((x, y) => Number(y === root.traceId) - Number(x === root.traceId));
      graphs = ids.map((id) => buildGraph(id, store.events(id)));
    } finally {
      store.close();
    }
    out.write('\n');
    for (const g of graphs) out.write(renderTree(g) + '\n\n');
    const main = graphs.find((g) => g.trace === root.traceId);
    const missing = (['pipe', 'unix', 'tcp'] as const).filter((k) => !main?.hops.some((h) => h.recv.channel?.kind === k));
    const c = res.counters;
    out.write(explain(main, { a: ns.a, b: ns.b, addrA, addrB }, { written: c?.tcpOptionsWritten ?? 0, received: c?.tcpOptionsReceived ?? 0 }));
    out.write(`\nthe trace database: ${db}\n  causeway ls --db ${db}\n  causeway show --db ${db} ${root.traceId.slice(-12)}\n`);
    out.write(`the HTML report (timeline, process graph, hops): ${html}\n`);
    if (opts.events) out.write(`the events as JSON Lines: ${opts.events} (format: docs/events.md)\n`);
    if (res.status !== 0) {
      out.write(`causeway demo: FAILED: the system exited with status ${res.status}\n`);
      return res.status;
    }
    if (missing.length) {
      out.write(`causeway demo: FAILED: no hop over ${missing.join(', ')} in the trace\n`);
      return 1;
    }
    return 0;
  } finally {
    for (const s of signals) process.off(s, onSignal);
    process.off('exit', cleanup);
    cleanup();
  }
}

/** What to look at in the tree: the hops, grouped by writer, reader and channel, with their latencies. */
export function explain(
  g: TraceGraph | undefined,
  net: { a: string; b: string; addrA: string; addrB: string },
  options: { written: number; received: number } = { written: 0, received: 0 },
): string {
  if (!g) return 'the root record stored no events: was the run sampled?\n';
  const who = (e: TraceEvent) => `${e.comm}[${e.pid}]`;
  const groups = new Map<string, Hop[]>();
  for (const h of g.hops) {
    const k = `${who(h.send)} -> ${who(h.recv)} over ${h.recv.channel?.kind === 'tcp' ? channelName(h.send.channel) : channelName(h.recv.channel)}`;
    const list = groups.get(k) ?? [];
    groups.set(k, list);
    list.push(h);
  }
  const lines = [
    `what to look at: each "recv" line above names the send it read and the hop's latency (+ms).`,
    `the hops of trace ${g.trace.slice(-12)}, by writer, reader and channel:`,
  ];
  for (const [k, hs] of groups) {
    const lat = hs.map((h) => h.latencyNs).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    const range = hs.length > 1 ? `${ms(lat[0])} to ${ms(lat[lat.length - 1])} ms` : `${ms(lat[0])} ms`;
    lines.push(`  ${k}: ${hs.length} hop(s), ${range}`);
  }
  const tcp = g.hops.filter((h) => h.recv.channel?.kind === 'tcp');
  const first = g.hops.find((h) => h.recv.channel?.kind === 'pipe');
  if (first)
    lines.push(`- a hop's latency runs from the write to the read: ${ms(first.latencyNs)} ms for the requests, as ${first.recv.comm} started up before reading them.`);
  const unix = g.hops.filter((h) => h.recv.channel?.kind === 'unix');
  if (unix.length)
    lines.push(`- the UNIX socket: ${unix.length} hops, each request from the api to the store and each answer back; the reader adopts the writer's record and names its send as parent.`);
  // Said only as the run's own counters show it.
  const crossed = options.received > 0
    ? `the record rode in the TCP header option (${options.written} written, ${options.received} accepted in this run)`
    : `no TCP header option was accepted in this run (tcpOptionsReceived = 0)`;
  if (tcp.length && net.a) lines.push(`- across the namespaces: ${net.a} (${net.addrA}) -> ${net.b} (${net.addrB}); ${crossed}${options.received > 0 ? `, accepted because ${DEMO_SUBNET} is trusted` : ''}.`);
  else if (tcp.length) lines.push(`- TCP over loopback (no namespaces here): ${crossed}.`);
  if (g.roots.length === 1)
    lines.push(`- one root: every event of the ${g.processes.length} processes descends from the driver's first event; the whole run took ${ms(g.end - g.start)} ms.`);
  else lines.push(`- ${g.roots.length} roots: some events do not descend from the driver's first one.`);
  return lines.join('\n') + '\n';
}
