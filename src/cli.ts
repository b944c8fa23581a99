/** The `causeway` command line. */
import { Command, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import { run, RunOptions } from './runtime/runtime';
import type { AttachTarget } from './runtime/attach';
import { trace } from './tracer/trace';
import { parseLayerSpecs } from './tracer/layers';
import { defaultDbPath, TraceStore, TraceSummary } from './tracer/store';
import { buildGraph, TraceEvent, TraceGraph } from './tracer/graph';
import { renderTree } from './tracer/tree';
import { renderHtml } from './tracer/html';
import { runChecks, report } from './doctor';
import { runDemo } from './demo';
import { newRecord } from './kernel/record';
import { trustKeys } from './kernel/trust';
import { CausewayError } from './errors';
import { agent, AgentStatus, Watch } from './agent/agent';

function intArg(min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    return n;
  };
}

function sizeArg(v: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(v);
  if (!m) throw new InvalidArgumentError('expected a size such as 4M or 65536');
  const n = Number(m[1]) * ({ k: 1024, m: 1 << 20 }[m[2].toLowerCase() as 'k' | 'm'] ?? 1);
  if (n < 4096 || (n & (n - 1)) !== 0) throw new InvalidArgumentError('the ring buffer size must be a power of two, at least 4K');
  return n;
}

function traceArg(v: string): string {
  const id = v.toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(id) || /^0+$/.test(id)) throw new InvalidArgumentError('expected 32 hex digits, not all zero');
  return id;
}

interface RunFlags {
  events?: string;
  /** run: --no-sample; trace: --sample RATE. */
  sample: boolean | number;
  priority: number;
  trace?: string;
  ringbufSize: number;
  maxChannels: number;
  quiet?: boolean;
  trust: string[];
  tcpOptionKind: number;
  tcpOptionExid: number;
  actor: string[];
  actorQueue: number;
  sdk: boolean;
  /** attach, trace --attach: the target. */
  attach?: boolean;
  cgroup?: string;
  pid?: number;
  unit?: string;
  container?: string;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

function optKindArg(v: string): number {
  const n = Number(v);
  if (n !== 253 && n !== 254) throw new InvalidArgumentError('expected 253 or 254 (the RFC 6994 experimental kinds)');
  return n;
}

function exidArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new InvalidArgumentError('expected a 16-bit number, such as 0xc5a7');
  return n;
}

function rateArg(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError('expected a rate from 0 to 1, such as 0.1');
  return n;
}

/** What a command follows: a command it starts (run), what runs already (attach), or either (trace). */
type Follows = 'command' | 'attach' | 'either';

/** The target options of attach and trace --attach. */
function withTargetOptions(c: Command): Command {
  return c
    .option('--cgroup <path>', 'follow the processes of this cgroup v2 (a directory, or a path as /proc/PID/cgroup shows it)')
    .option('--pid <pid>', 'follow this process and its descendants', intArg(1, 1 << 22))
    .option('--unit <name>', 'follow this systemd unit (its cgroup)')
    .option('--container <name>', 'follow this container (podman or docker)');
}

/** The options `run`, `attach` and `trace` share (trace and attach take --sample RATE instead of --no-sample). */
function withRunOptions(c: Command, follows: Follows = 'command'): Command {
  if (follows === 'command') c.usage('[options] -- CMD [ARGS...]').argument('<cmd...>', 'the command and its arguments');
  if (follows === 'either') c.usage('[options] -- CMD [ARGS...]  |  --attach (--cgroup PATH | --pid PID | --unit NAME | --container NAME) [options]').argument('[cmd...]', 'the command and its arguments');
  if (follows !== 'command') withTargetOptions(c);
  if (follows === 'attach') c.usage('(--cgroup PATH | --pid PID | --unit NAME | --container NAME) [options]');
  c.option('-e, --events <file>', 'write events as JSON Lines to FILE (docs/events.md)');
  if (follows === 'command') c.option('--no-sample', 'start an unsampled record: it propagates, but emits no events');
  return c
    .option('--priority <n>', 'priority of the root record (0-255)', intArg(0, 255), 0)
    .option('--trace <id>', 'trace id of the root record (32 hex digits; default: a new one)', traceArg)
    .option('--ringbuf-size <bytes>', 'event ring buffer size (power of two)', sizeArg, 1 << 22)
    .option('--max-channels <n>', 'pipes, FIFOs and UNIX sockets followed at once', intArg(1, 1 << 22), 16384)
    .option('--trust <cidr>', 'also trust this network (repeatable; loopback is trusted): records cross only within trusted networks; 0.0.0.0/0 is every IPv4 peer, ::/0 every IPv6 one (docs/tcp-option.md)', collect, [])
    .option('--tcp-option-kind <kind>', 'TCP option kind carrying the record across hosts (253 or 254)', optKindArg, 253)
    .option('--tcp-option-exid <exid>', 'its 16-bit ExID (RFC 6994), e.g. 0xc5a7', exidArg, 0xc5a7)
    .option('-a, --actor <spec>', 'run an actor: a built-in name (ingress-mint, accountant) or a module path, with options after ":" (repeatable), e.g. accountant:tenant=3', collect, [])
    .option('--actor-queue <n>', 'events an actor may have waiting before more are dropped for it', intArg(1, 1 << 24), 65536)
    .option('--no-sdk', 'do not serve the in-process SDK to the command (attach never does: it starts no command to tell where it is)')
    .option('-q, --quiet', 'no summary line unless something was dropped')
    .passThroughOptions();
}

/** The target of attach (or trace --attach), exactly one; or null for a command. Throws a CausewayError on a wrong mix. */
function attachTarget(cmd: string[], o: RunFlags, follows: Follows): AttachTarget | null {
  const given: AttachTarget[] = [];
  if (o.cgroup !== undefined) given.push({ cgroup: o.cgroup });
  if (o.pid !== undefined) given.push({ pid: o.pid });
  if (o.unit !== undefined) given.push({ unit: o.unit });
  if (o.container !== undefined) given.push({ container: o.container });
  const attach = follows === 'attach' || o.attach === true;
  if (!attach) {
    if (given.length) throw new CausewayError('--cgroup, --pid, --unit and --container name what to attach to: add --attach (causeway trace --attach --pid PID), or use causeway attach');
    if (cmd.length === 0) throw new CausewayError('no command to run: causeway trace [options] -- CMD [ARGS...], or causeway trace --attach --pid PID');
    return null;
  }
  if (cmd.length) throw new CausewayError(`attach starts no command (got "${cmd.join(' ')}"): it follows what runs already; to start one, use causeway run or causeway trace -- CMD`);
  if (given.length !== 1) throw new CausewayError('say what to attach to, once: --cgroup PATH, --pid PID, --unit NAME or --container NAME');
  return given[0];
}

/** How a target reads on the command line (the trace store's "command" of an attached run). */
function targetLabel(t: AttachTarget): string {
  const [k, v] = Object.entries(t)[0];
  return `attach --${k} ${v}`;
}

function runOptions(cmd: string[], o: RunFlags, follows: Follows = 'command'): RunOptions {
  const target = attachTarget(cmd, o, follows);
  const record = newRecord({ sampled: o.sample !== false, priority: o.priority });
  if (o.trace) record.traceId = o.trace;
  trustKeys(o.trust); // a bad --trust is refused before anything loads
  return {
    command: target ? targetLabel(target) : cmd[0],
    args: target ? [] : cmd.slice(1),
    attach: target ?? undefined,
    sharedTrace: o.trace !== undefined,
    eventsFile: o.events,
    record,
    ringbufBytes: o.ringbufSize,
    maxChannels: o.maxChannels,
    trust: o.trust,
    optKind: o.tcpOptionKind,
    optExid: o.tcpOptionExid,
    summary: !o.quiet,
    actors: o.actor,
    actorQueue: o.actorQueue,
    sdk: o.sdk,
  };
}

function durationArg(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v);
  if (!m) throw new InvalidArgumentError('expected a duration such as 500ms, 30s, 10m, 24h or 7d');
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms']!;
}

function bytesArg(v: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(v);
  if (!m) throw new InvalidArgumentError('expected a size such as 512M or 2G');
  return Number(m[1]) * ({ k: 1024, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as 'k'] ?? 1);
}

const AGENT_STATUS = '/run/causeway/agent.json';

function statusText(s: AgentStatus): string {
  const age = (Date.now() - Date.parse(s.updated)) / 1000;
  const lost = Object.entries(s.lost).filter(([, n]) => n > 0);
  const lines = [
    `agent ${s.pid}: ${s.state}${s.state !== 'stopped' && age > 10 ? ` (NOT UPDATED for ${age.toFixed(0)} s: hung or killed?)` : ''}, since ${s.started}`,
    `targets followed: ${s.targets.length}${s.targets.map((t) => `\n  ${t.target}  since ${t.since}  ${t.events} events`).join('')}`,
    `events: ${s.events} captured, ${s.stored} stored in ${s.db} (${(s.dbBytes / 1048576).toFixed(1)} MiB in use); pruned ${s.pruned.events} events of ${s.pruned.traces} traces`,
    `lost: ${lost.length ? lost.map(([k, n]) => `${k}=${n}`).join(' ') : 'nothing'}`,
    s.export.url
      ? `export to ${s.export.url}: ${s.export.traces} traces, ${s.export.spans} spans; ${s.export.pending} pending; ${s.export.failedAttempts} failed attempts${s.export.lastError ? ` (last: ${s.export.lastError})` : ''}`
      : 'export: off',
  ];
  if (s.ended.length) lines.push(`ended: ${s.ended.map((e) => `${e.target} (${e.why})`).join('; ')}`);
  return lines.join('\n');
}

function lsLine(r: TraceSummary): string {
  const start = new Date(Number(r.start / 1_000_000n)).toISOString();
  const dur = `${(Number(r.end - r.start) / 1e6).toFixed(1)} ms`;
  return `${r.id}  ${start}  ${dur.padStart(10)} ${String(r.processes).padStart(5)} ${String(r.hosts.length).padStart(5)} ${String(r.events).padStart(6)} ${r.command}`;
}

/** A trace as JSON: its events, spans and hops (times as decimal strings of ns). */
function graphJson(g: TraceGraph) {
  const ev = (e: TraceEvent) => ({ ...e, ts: e.ts.toString() });
  return {
    trace: g.trace,
    start: g.start.toString(),
    end: g.end.toString(),
    hosts: g.hosts,
    processes: g.processes,
    events: g.events.map(ev),
    spans: g.spans.map((s) => ({ id: s.id, host: s.host, pid: s.pid, tid: s.tid, comm: s.comm, start: s.start.toString(), end: s.end.toString(), parent: s.parent ?? null, links: s.links })),
    hops: g.hops.map((h) => ({
      send: h.send.id,
      recv: h.recv.id,
      from: `${h.send.comm}[${h.send.pid}]`,
      to: `${h.recv.comm}[${h.recv.pid}]`,
      latencyNs: h.latencyNs.toString(),
      ...(h.layers ? { layers: h.layers.map((l) => ({ ...l, start: l.start.toString(), latencyNs: l.latencyNs.toString() })) } : {}),
    })),
  };
}

export function program(): Command {
  const cli = new Command('causeway')
    .description('carry causal metadata with the bytes unmodified programs exchange (eBPF)')
    .version(require('../../package.json').version as string)
    .enablePositionalOptions()
    .showHelpAfterError('(run causeway --help for usage)');

  withRunOptions(cli.command('run').description('run CMD in its own cgroup with the shim loaded; exits with its status')).action(
    async (cmd: string[], o: RunFlags) => {
      const res = await run(runOptions(cmd, o));
      process.exitCode = res.status;
    },
  );

  withRunOptions(
    cli
      .command('attach')
      .description('follow processes that run already (a cgroup, a unit, a process tree, a container) until SIGINT/SIGTERM or until it is gone; they are left running, unchanged'),
    'attach',
  )
    .option('--sample <rate>', 'fraction of adopted processes whose root record is sampled, 0-1', rateArg, 1)
    .action(async (o: RunFlags) => {
      const opts = runOptions([], o, 'attach');
      const res = await run({ ...opts, sampleRate: Number(o.sample) });
      process.exitCode = res.status;
    });

  withRunOptions(cli.command('trace').description('run CMD (or, with --attach, follow what runs) with the tracer: every causal path stored, shown, reported'), 'either')
    .option('--attach', 'trace what runs already (with --cgroup, --pid, --unit or --container) instead of starting CMD')
    .option('--db <file>', `the trace database (default ${defaultDbPath()}, or $CAUSEWAY_DB)`)
    .option('--html <file>', 'write a self-contained HTML report of the run\'s traces')
    .option('--otlp <url>', 'export the spans over OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces')
    .addOption(new Option('--otlp-encoding <encoding>', 'the OTLP/HTTP body').choices(['protobuf', 'json']).default('protobuf'))
    .option('--sample <rate>', 'fraction of root records sampled, 0-1 (unsampled ones still propagate)', rateArg, 1)
    .option('--host <name>', 'the host name stored with the events (default: this host\'s)')
    .option('--layers <list>', 'time each hop in the layers of its path: tc programs on these interfaces, NETNS:IFNAME[:in|out][,...] (NETNS: a name under /run/netns, pid:PID, host); repeatable', collect, [])
    .action(async (cmd: string[], o: RunFlags & { db?: string; html?: string; otlp?: string; otlpEncoding: 'json' | 'protobuf'; host?: string; layers: string[] }) => {
      const layers = o.layers.length ? parseLayerSpecs(o.layers) : undefined;
      const res = await trace({ ...runOptions(cmd, o, 'either'), db: o.db, html: o.html, otlp: o.otlp, otlpEncoding: o.otlpEncoding, sample: Number(o.sample), host: o.host, layers });
      process.exitCode = res.status;
    });

  cli
    .command('agent')
    .description('follow cgroups, units and containers (names or glob patterns, new ones as they appear), store traces within a size and an age, export them over OTLP; runs until SIGINT/SIGTERM')
    .option('--cgroup <pattern>', 'cgroups to follow, as /proc/PID/cgroup shows them, e.g. "/services/*" (repeatable)', collect, [])
    .option('--unit <pattern>', 'systemd units to follow, e.g. "nginx.service" or "app-*.service" (repeatable)', collect, [])
    .option('--container <pattern>', 'containers (podman or docker) to follow, by name, e.g. "web-*" (repeatable)', collect, [])
    .option('--db <file>', 'the trace database', '/var/lib/causeway/agent.db')
    .option('--max-size <bytes>', 'keep the database within this size (oldest events go first)', bytesArg, 256 << 20)
    .option('--max-age <duration>', 'drop events older than this', durationArg, 86_400_000)
    .option('--otlp <url>', 'export finished traces over OTLP/HTTP, e.g. http://collector:4318/v1/traces')
    .addOption(new Option('--otlp-encoding <encoding>', 'the OTLP/HTTP body').choices(['protobuf', 'json']).default('protobuf'))
    .option('--export-quiet <duration>', 'a trace is exported once it had no new event for this long', durationArg, 5000)
    .option('--status <file>', 'where the agent writes its health and counters (causeway status reads it)', AGENT_STATUS)
    .option('--interval <duration>', 'how often new targets are looked for, limits applied and traces exported', durationArg, 2000)
    .option('--sample <rate>', 'fraction of adopted processes whose root record is sampled, 0-1', rateArg, 1)
    .option('--priority <n>', 'priority of the adopted processes\' root records (0-255)', intArg(0, 255), 0)
    .option('--trust <cidr>', 'also trust this network (repeatable; loopback is trusted)', collect, [])
    .option('--tcp-option-kind <kind>', 'TCP option kind (253 or 254)', optKindArg, 253)
    .option('--tcp-option-exid <exid>', 'its 16-bit ExID', exidArg, 0xc5a7)
    .option('-a, --actor <spec>', 'run an actor on every target (repeatable)', collect, [])
    .option('--host <name>', 'the host name stored with the events (default: this host\'s)')
    .action(async (o: { cgroup: string[]; unit: string[]; container: string[]; db: string; maxSize: number; maxAge: number; otlp?: string; otlpEncoding: 'json' | 'protobuf'; exportQuiet: number; status: string; interval: number; sample: number; priority: number; trust: string[]; tcpOptionKind: number; tcpOptionExid: number; actor: string[]; host?: string }) => {
      trustKeys(o.trust);
      const watch: Watch[] = [
        ...o.cgroup.map((pattern) => ({ kind: 'cgroup' as const, pattern })),
        ...o.unit.map((pattern) => ({ kind: 'unit' as const, pattern })),
        ...o.container.map((pattern) => ({ kind: 'container' as const, pattern })),
      ];
      process.exitCode = await agent({
        watch,
        db: o.db,
        maxBytes: o.maxSize,
        maxAgeMs: o.maxAge,
        otlp: o.otlp,
        otlpEncoding: o.otlpEncoding,
        exportQuietMs: o.exportQuiet,
        statusFile: o.status,
        intervalMs: o.interval,
        host: o.host,
        run: {
          record: newRecord({ priority: o.priority }),
          sampleRate: Number(o.sample),
          trust: o.trust,
          optKind: o.tcpOptionKind,
          optExid: o.tcpOptionExid,
          actors: o.actor,
        },
      });
    });

  cli
    .command('status')
    .description("print a causeway agent's health and counters")
    .option('--status <file>', 'the agent\'s status file', AGENT_STATUS)
    .option('--json', 'as JSON')
    .action((o: { status: string; json?: boolean }) => {
      let s: AgentStatus;
      try {
        s = JSON.parse(fs.readFileSync(o.status, 'utf8')) as AgentStatus;
      } catch (err) {
        throw new CausewayError(`no agent status at ${o.status} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): is causeway agent running, with --status ${o.status}?`);
      }
      process.stdout.write((o.json ? JSON.stringify(s, null, 2) : statusText(s)) + '\n');
      const stale = s.state !== 'stopped' && Date.now() - Date.parse(s.updated) > 10_000;
      process.exitCode = s.state === 'running' && !stale ? 0 : 1;
    });

  cli
    .command('ls')
    .description('list the stored traces, newest first')
    .option('--db <file>', 'the trace database')
    .option('-n, --limit <n>', 'how many', intArg(1, 1 << 30), 50)
    .option('--json', 'as JSON')
    .action((o: { db?: string; limit: number; json?: boolean }) => {
      const store = TraceStore.open(o.db ?? defaultDbPath(), { readonly: true });
      try {
        const rows = store.list(o.limit);
        if (o.json) {
          const out = rows.map((r) => ({ ...r, start: r.start.toString(), end: r.end.toString(), durationNs: (r.end - r.start).toString() }));
          process.stdout.write(JSON.stringify(out, null, 2) + '\n');
          return;
        }
        process.stdout.write(['TRACE                             START                     DURATION   PROCS HOSTS EVENTS COMMAND', ...rows.map(lsLine)].join('\n') + '\n');
      } finally {
        store.close();
      }
    });

  cli
    .command('show')
    .description('print one trace as a tree with per-hop latencies')
    .argument('<trace>', 'a trace id, or a unique prefix or suffix of one (ids begin with their time; their last digits are random)')
    .option('--db <file>', 'the trace database')
    .option('--json', 'the trace as JSON: events, spans and hops')
    .option('--html <file>', 'write it as a self-contained HTML report')
    .action((id: string, o: { db?: string; json?: boolean; html?: string }) => {
      const store = TraceStore.open(o.db ?? defaultDbPath(), { readonly: true });
      try {
        const full = store.resolve(id);
        const g = buildGraph(full, store.events(full), store.layerStamps(full));
        if (o.html) {
          fs.writeFileSync(o.html, renderHtml([g], { title: `causeway trace ${full}` }));
          process.stderr.write(`causeway: wrote ${o.html}\n`);
        }
        if (o.json) process.stdout.write(JSON.stringify(graphJson(g), null, 2) + '\n');
        else if (!o.html) process.stdout.write(renderTree(g) + '\n');
      } finally {
        store.close();
      }
    });

  cli
    .command('doctor')
    .description('check that this machine can run the shim')
    .option('--json', 'print the checks as JSON')
    .action(async (o: { json?: boolean }) => {
      const checks = await runChecks();
      if (o.json) {
        process.stdout.write(JSON.stringify(checks, null, 2) + '\n');
        process.exitCode = checks.some((c) => !c.ok && c.required) ? 1 : 0;
      } else process.exitCode = report(checks);
    });

  cli
    .command('demo')
    .description('run the built-in demo: a traced multi-process system (pipe, UNIX socket, TCP between two namespaces)')
    .option('-e, --events <file>', 'also keep the events as JSON Lines')
    .option('--html <file>', 'the HTML report (default causeway-demo.html here)')
    .option('--db <file>', 'the trace database (default: a fresh file in the temporary directory)')
    .action(async (o: { events?: string; html?: string; db?: string }) => {
      process.exitCode = await runDemo(o);
    });

  return cli;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (err) {
    if (err instanceof CausewayError) {
      process.stderr.write(`causeway: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}
