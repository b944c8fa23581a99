/**
 * What each step of the shim's hot path costs (issue 9), run by
 * scripts/hot-path-steps.sh over builds of the shim that stop after step N
 * (bpf/shim.bpf.c, CW_PROFILE_STOP): bench/rtloop.c's request/response in one
 * thread (pipe, UNIX socketpair, TCP loopback) inside `causeway run --no-sample` of each build, and once under the
 * floor (empty programs), with kernel.bpf_stats_enabled. Per round trip:
 * ns spent in the programs, as the kernel counts it. The builds alternate
 * over the rounds; medians, and the rounds' range.
 *
 *   node dist/bench/hot-path-steps.js ROUNDS RTLOOP LABEL=DIR...
 * Prints a markdown table. Each DIR is a built copy of the repository.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median, progDelta, progSnapshot, type ProgSnapshot, spawnWait, withFloor } from './common';

const MODES = ['pipe', 'unix', 'tcp'] as const;
// TCP goes through tcp_sendmsg_locked, sock_recv_length and sockops (the option path) too.
const SHIM = ['handle_enter', 'handle_exit', 'handle_sock_recv', 'handle_tcp_send', 'handle_sockops'];
const FLOOR = ['floor_enter', 'floor_exit', 'floor_sock_recv', 'floor_tcp_send'];
const SECS = 1.5;

type RunFn = (opts: Record<string, unknown>) => Promise<{ status: number }>;

/** ns the programs spent between two snapshots. */
const spent = (before: ProgSnapshot, after: ProgSnapshot) => [...progDelta(before, after).values()].reduce((a, s) => a + s.ns, 0);

/** ns in the programs per round trip, for one run of rtloop. */
async function once_(rtloop: string, mode: string, out: string, dir: string | null): Promise<number> {
  const args = [mode, '64', String(SECS), out, '1'];
  let before: ProgSnapshot = new Map();
  let after: ProgSnapshot = new Map();
  if (!dir) {
    await withFloor(async () => {
      before = progSnapshot(FLOOR);
      await spawnWait(rtloop, args);
      after = progSnapshot(FLOOR);
    });
  } else {
    // Each build's own runtime: its addon holds its shim.
    const { run } = require(path.join(dir, 'dist', 'src', 'runtime', 'runtime')) as { run: RunFn };
    const { newRecord } = require(path.join(dir, 'dist', 'src', 'kernel', 'record')) as { newRecord: (o: object) => unknown };
    const res = await run({
      command: rtloop,
      args,
      record: newRecord({ sampled: false }),
      summary: false,
      onStart: () => void (before = progSnapshot(SHIM)),
      onExit: () => void (after = progSnapshot(SHIM)),
    });
    if (res.status !== 0) throw new Error(`rtloop under ${dir} exited with ${res.status}`);
  }
  const rts = Number(fs.readFileSync(out, 'utf8').split(' ')[1]);
  if (!(rts > 0)) throw new Error(`rtloop ${mode} wrote no count`);
  return spent(before, after) / rts;
}

async function main(): Promise<void> {
  const [roundsArg, rtloop, ...specs] = process.argv.slice(2);
  const rounds = Number(roundsArg);
  if (!(rounds > 0) || !rtloop || !specs.length) throw new Error('usage: hot-path-steps ROUNDS RTLOOP LABEL=DIR...');
  const builds: { label: string; dir: string | null }[] = [
    { label: 'floor (empty programs)', dir: null },
    ...specs.map((s) => ({ label: s.slice(0, s.indexOf('=')), dir: s.slice(s.indexOf('=') + 1) })),
  ];
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-steps-')), 'out');
  const statsBefore = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  const ns: Record<string, Record<string, number[]>> = {};
  try {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
    for (let r = 0; r < rounds; r++)
      for (const mode of MODES)
        for (let i = 0; i < builds.length; i++) {
          const b = builds[(i + r) % builds.length];
          const v = await once_(rtloop, mode, out, b.dir);
          ((ns[mode] ??= {})[b.label] ??= []).push(v);
          process.stderr.write(`steps round ${r + 1}/${rounds} ${mode} ${b.label}: ${v.toFixed(0)} ns per round trip\n`);
        }
  } finally {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  }
  const fmt = (x: number) => x.toFixed(0);
  const lines = [
    `| build | ${MODES.map((m) => `${m}: ns per round trip in the programs (range)`).join(' | ')} | ${MODES.map((m) => `${m}: this step`).join(' | ')} |`,
    `|---|${MODES.map(() => '---|').join('')}${MODES.map(() => '---|').join('')}`,
  ];
  builds.forEach((b, i) => {
    const cells = MODES.map((m) => `${fmt(median(ns[m][b.label]))} (${fmt(Math.min(...ns[m][b.label]))}-${fmt(Math.max(...ns[m][b.label]))})`);
    const steps = MODES.map((m) => (i === 0 ? '-' : `+${fmt(median(ns[m][b.label]) - median(ns[m][builds[i - 1].label]))}`));
    lines.push(`| ${b.label} | ${cells.join(' | ')} | ${steps.join(' | ')} |`);
  });
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
  process.stderr.write(`hot-path-steps: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
