/** The `causeway` command line. */
import { Command, InvalidArgumentError } from 'commander';
import { run } from './runtime/runtime';
import { runChecks, report } from './doctor';
import { runDemo } from './demo';
import { newRecord } from './record';
import { parseTrust } from './trust';
import { CausewayError } from './errors';

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
  sample: boolean;
  priority: number;
  trace?: string;
  ringbufSize: number;
  quiet?: boolean;
  trust: string[];
  tcpOptionKind: number;
  tcpOptionExid: number;
  actor: string[];
  actorQueue: number;
  sdk: boolean;
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

export function program(): Command {
  const cli = new Command('causeway')
    .description('carry causal metadata with the bytes unmodified programs exchange (eBPF)')
    .version(require('../../package.json').version as string)
    .enablePositionalOptions()
    .showHelpAfterError('(run causeway --help for usage)');

  cli
    .command('run')
    .description('run CMD in its own cgroup with the shim loaded; exits with its status')
    .usage('[options] -- CMD [ARGS...]')
    .argument('<cmd...>', 'the command and its arguments')
    .option('-e, --events <file>', 'write events as JSON Lines to FILE (docs/events.md)')
    .option('--no-sample', 'start an unsampled record: it propagates, but emits no events')
    .option('--priority <n>', 'priority of the root record (0-255)', intArg(0, 255), 0)
    .option('--trace <id>', 'trace id of the root record (32 hex digits; default: a new one)', traceArg)
    .option('--ringbuf-size <bytes>', 'event ring buffer size (power of two)', sizeArg, 1 << 22)
    .option('--trust <cidr>', 'also trust this network (repeatable; loopback is trusted): records cross only within trusted networks', collect, [])
    .option('--tcp-option-kind <kind>', 'TCP option kind carrying the record across hosts (253 or 254)', optKindArg, 253)
    .option('--tcp-option-exid <exid>', 'its 16-bit ExID (RFC 6994), e.g. 0xc5a7', exidArg, 0xc5a7)
    .option('-a, --actor <spec>', 'run an actor: a built-in name (ingress-mint, accountant) or a module path, with options after ":" (repeatable), e.g. accountant:tenant=3', collect, [])
    .option('--actor-queue <n>', 'events an actor may have waiting before more are dropped for it', intArg(1, 1 << 24), 65536)
    .option('--no-sdk', 'do not serve the in-process SDK to the command')
    .option('-q, --quiet', 'no summary line unless something was dropped')
    .passThroughOptions()
    .action(async (cmd: string[], o: RunFlags) => {
      const record = newRecord({ sampled: o.sample, priority: o.priority });
      if (o.trace) record.traceId = o.trace;
      const res = await run({
        command: cmd[0],
        args: cmd.slice(1),
        eventsFile: o.events,
        record,
        ringbufBytes: o.ringbufSize,
        trust: o.trust.map((c) => (parseTrust(c), c)),
        optKind: o.tcpOptionKind,
        optExid: o.tcpOptionExid,
        summary: !o.quiet,
        actors: o.actor,
        actorQueue: o.actorQueue,
        sdk: o.sdk,
      });
      process.exitCode = res.status;
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
    .description('run the built-in demo: a record rides through a shell pipeline')
    .option('-e, --events <file>', 'also keep the events as JSON Lines')
    .action(async (o: { events?: string }) => {
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
