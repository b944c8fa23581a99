/**
 * `npm run bench`: pipe ping-pong round trips per second in five
 * configurations, alternated over several rounds in one invocation:
 *   baseline  no BPF program loaded
 *   floor     the shim's hooks with programs that return at once
 *   outside   the shim loaded for another run's cgroup; this process outside it
 *   shim      propagation only (an unsampled record, no events)
 *   events    the shim with a sampled record: every causal change is an event
 * Writes BENCHMARKS.md and BENCHMARKS.json at the repository root.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Floor } from '../src/shim';
import { run } from '../src/run';
import { newRecord } from '../src/record';

const ROOT = path.join(__dirname, '..', '..');
const CONFIGS = ['baseline', 'floor', 'outside', 'shim', 'events'] as const;
type ConfigName = (typeof CONFIGS)[number];
const SIZES = [1, 4096];
const CPU = '0'; // both ends on one CPU, as DESIGN.md's floor figures were measured

interface Sample {
  bench: string;
  config: ConfigName;
  value: number;
}

function compile(dir: string): string {
  const bin = path.join(dir, 'pingpong');
  execFileSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'pingpong.c')]);
  return bin;
}

async function spawnWait(cmd: string, args: string[]): Promise<void> {
  const child = spawn(cmd, args, { stdio: 'inherit' });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${cmd} exited with ${code}`);
}

async function measure(config: ConfigName, bin: string, size: number, secs: number, out: string): Promise<number> {
  const args = [String(size), String(secs), out, CPU];
  switch (config) {
    case 'baseline':
      await spawnWait(bin, args);
      break;
    case 'floor': {
      const floor = new Floor();
      try {
        await spawnWait(bin, args);
      } finally {
        floor.close();
      }
      break;
    }
    case 'outside': {
      let stop = () => {};
      const other = run({
        command: 'sleep',
        args: ['3600'],
        summary: false,
        onStart: ({ pid }) => (stop = () => process.kill(pid, 'SIGTERM')),
      });
      await new Promise((r) => setTimeout(r, 100));
      try {
        await spawnWait(bin, args);
      } finally {
        stop();
        await other;
      }
      break;
    }
    case 'shim':
    case 'events': {
      let events = 0;
      const res = await run({
        command: bin,
        args,
        record: newRecord({ sampled: config === 'events' }),
        onEvents: config === 'events' ? (b) => (events += b.length) : undefined,
        summary: false,
      });
      if (res.status !== 0) throw new Error(`pingpong under the shim exited with ${res.status}`);
      if (config === 'events' && events === 0) throw new Error('the events configuration produced no events');
      break;
    }
  }
  return Number(fs.readFileSync(out, 'utf8'));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}`;
}

async function main() {
  const quick = process.argv.includes('--quick');
  const rounds = quick ? 3 : 7;
  const secs = quick ? 1 : 1.5;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-'));
  const samples: Sample[] = [];
  try {
    const bin = compile(dir);
    const out = path.join(dir, 'result');
    for (let r = 0; r < rounds; r++) {
      for (const size of SIZES) {
        // Alternate, and rotate the order each round, so drift hits every configuration alike.
        const order = CONFIGS.map((_, i) => CONFIGS[(i + r) % CONFIGS.length]);
        for (const config of order) {
          const value = await measure(config, bin, size, secs, out);
          samples.push({ bench: `pipe ping-pong, ${size === 1 ? '1 byte' : '4 KiB'}`, config, value });
          process.stderr.write(`round ${r + 1}/${rounds} ${size}B ${config}: ${value.toFixed(0)} round trips/s\n`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const report = summarize(samples, rounds, secs);
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.json'), JSON.stringify(report.json, null, 2) + '\n');
  fs.writeFileSync(path.join(ROOT, 'BENCHMARKS.md'), report.md);
  process.stdout.write(report.md);
}

function summarize(samples: Sample[], rounds: number, secs: number) {
  const benches = [...new Set(samples.map((s) => s.bench))];
  const lines: string[] = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine()}.`,
    `Each figure is the median of ${rounds} alternating runs of ${secs} s; spread is min-max.`,
    'Both ends of each ping-pong are pinned to CPU 0. Ratios are to the baseline of this same invocation.',
    '',
    '| benchmark | configuration | round trips/s (median) | spread | ratio to baseline | added ns per round trip |',
    '|---|---|---|---|---|---|',
  ];
  const json: Record<string, unknown>[] = [];
  const verdicts: string[] = [];
  for (const bench of benches) {
    const med: Partial<Record<ConfigName, number>> = {};
    for (const config of CONFIGS) {
      const xs = samples.filter((s) => s.bench === bench && s.config === config).map((s) => s.value);
      med[config] = median(xs);
    }
    const base = med.baseline!;
    const added = (c: ConfigName) => 1e9 / med[c]! - 1e9 / base;
    for (const config of CONFIGS) {
      const xs = samples.filter((s) => s.bench === bench && s.config === config).map((s) => s.value);
      const m = med[config]!;
      lines.push(
        `| ${bench} | ${config} | ${m.toFixed(0)} | ${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)} | ${(m / base).toFixed(3)} | ${config === 'baseline' ? '-' : added(config).toFixed(0)} |`,
      );
      json.push({ bench, config, median: m, min: Math.min(...xs), max: Math.max(...xs), ratio: m / base, samples: xs });
    }
    const shimVsFloor = added('shim') / added('floor');
    const eventsVsFloor = added('events') / added('floor');
    const outsideVsFloor = added('outside') / added('floor');
    verdicts.push(
      `- ${bench}: shim (propagation only) adds ${shimVsFloor.toFixed(2)}x the floor's time (target <= 1.5: ${shimVsFloor <= 1.5 ? 'met' : 'NOT met'}); ` +
        `with events ${eventsVsFloor.toFixed(2)}x; a process outside the run pays ${outsideVsFloor.toFixed(2)}x the floor (target <= 1: ${outsideVsFloor <= 1.05 ? 'met, within noise' : 'NOT met'}).`,
    );
  }
  lines.push('', '## Against the targets', '', ...verdicts, '');
  return { md: lines.join('\n'), json: { machine: machine(), rounds, seconds: secs, results: json } };
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
