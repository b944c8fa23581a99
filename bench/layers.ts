/**
 * What the layer programs (causeway trace --layers, bpf/layers.bpf.c) cost:
 * TCP request/response (bench/pingpong.c tcpns, 64-byte messages) from one
 * container to the other across the VXLAN overlay of test/overlay.ts, with
 * and without the programs on all 10 interfaces of the path in both
 * directions (20 attachments: each packet runs them 10 times on the way
 * there, 10 on the way back), alternating, several rounds; and the kernel's
 * own accounting of the programs (kernel.bpf_stats_enabled): ns per run.
 *
 *   node dist/bench/index.js --only layers    (a section of npm run bench)
 *
 * Without a causeway run the packets carry no record: this measures the
 * parse that every packet of a watched interface pays. With records (the
 * option on the first segment of each), those segments also pay a hash
 * insert: the `records` rows measure that, two `causeway run --trust` ends.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeOverlay } from '../test/overlay';
import { native } from '../src/kernel/native';
import { median, progStats } from './common';

const ROOT = path.join(__dirname, '..', '..');

/** What BENCHMARKS.json keeps of it. */
export interface LayersBench {
  rounds: number;
  seconds: number;
  rows: { records: boolean; off: number[]; on: number[]; nsPerRun: number[]; stamps?: number[]; lost?: number[] }[];
}

/** Round trips per second of one pingpong tcpns run, each end in its container (each in `causeway run` if records). */
async function pingpong(bin: string, o: ReturnType<typeof makeOverlay>, dir: string, records: boolean, SECONDS: number, drain?: () => void): Promise<number> {
  const out = path.join(dir, 'rate');
  const env = { ...process.env, PP_SERVER_NS: o.ctrB, PP_CLIENT_NS: o.ctrA, PP_ADDR: o.addrB, PP_PORT: '7100' };
  if (!records) {
    execFileSync(bin, ['tcpns', '64', String(SECONDS), out, '-1'], { env });
    return Number(fs.readFileSync(out, 'utf8'));
  }
  const cw = path.join(ROOT, 'bin', 'causeway.js');
  const server = spawn(process.execPath, [cw, 'run', '--trust', o.trust, '--', bin, 'tcpns', '64', String(SECONDS), path.join(dir, 'srv'), '-1'], { env: { ...env, PP_ROLE: 'server' }, stdio: 'ignore' });
  const client = spawn(process.execPath, [cw, 'run', '--trust', o.trust, '--', bin, 'tcpns', '64', String(SECONDS), out, '-1'], { env: { ...env, PP_ROLE: 'client' }, stdio: 'ignore' });
  // Stamps leave the kernel's table while it runs, as `causeway trace` takes them (every second there): a full table would measure failed inserts.
  const timer = drain ? setInterval(drain, 250) : undefined;
  await Promise.all([new Promise((r) => client.on('close', r)), new Promise((r) => server.on('close', r))]);
  if (timer) clearInterval(timer);
  return Number(fs.readFileSync(out, 'utf8'));
}

/** ns spent in the layer programs, and their runs, so far (kernel.bpf_stats_enabled). */
function layerStats(): { ns: number; runs: number } {
  let ns = 0;
  let runs = 0;
  for (const p of progStats(['cw_layer_in', 'cw_layer_out']).values()) {
    ns += p.ns;
    runs += p.calls;
  }
  return { ns, runs };
}

export async function benchLayers(opts: { quick?: boolean } = {}): Promise<{ json: LayersBench; md: string }> {
  const ROUNDS = opts.quick ? 3 : 5;
  const SECONDS = opts.quick ? 1 : 2;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-bench-layers-'));
  const teardown: (() => void)[] = [];
  const bin = path.join(dir, 'pingpong');
  execFileSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'pingpong.c')]);
  const o = makeOverlay({ teardown: (fn) => teardown.push(fn) });
  const statsBefore = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  try {
    const rows: { records: boolean; off: number[]; on: number[]; nsPerRun: number[] }[] = [];
    for (const records of [false, true]) {
      const row = { records, off: [] as number[], on: [] as number[], nsPerRun: [] as number[], stamps: [] as number[], lost: [] as number[] };
      await pingpong(bin, o, dir, records, SECONDS); // warm: neighbours, caches
      for (let r = 0; r < ROUNDS; r++) {
        row.off.push(await pingpong(bin, o, dir, records, SECONDS));
        const L = new (native().Layers)({ optKind: 253, optExid: 0xc5a7 });
        try {
          for (const item of o.pathAB) {
            const [ns, ifname] = item.split(':');
            for (const d of ['in', 'out'] as const) L.attach(`/run/netns/${ns}`, ifname, d);
          }
          const s0 = layerStats();
          row.on.push(await pingpong(bin, o, dir, records, SECONDS, () => void L.read()));
          const s1 = layerStats();
          row.nsPerRun.push((s1.ns - s0.ns) / Math.max(1, s1.runs - s0.runs));
          const c = L.counters();
          row.stamps.push(Number(c.stored));
          row.lost.push(Number(c.full));
          if (r === 0) process.stderr.write(`records=${records}: ${c.packets} packets, ${c.options} with a record, ${c.stored} stamps, ${c.full} lost (table full)\n`);
        } finally {
          L.destroy();
        }
      }
      rows.push(row);
    }
    const json: LayersBench = { rounds: ROUNDS, seconds: SECONDS, rows };
    return { json, md: layersMarkdown(json) };
  } finally {
    fs.writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
    for (const fn of teardown) fn();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The BENCHMARKS.md section, from the figures (so that --from-json follows changes to the text). */
export function layersMarkdown(b: LayersBench): string {
  const lines = [
    '## Layers: the tc programs of `causeway trace --layers` (bench/layers.ts)',
    '',
    `TCP request/response (64 bytes) between the two containers of a VXLAN overlay in namespaces (test/overlay.ts), without and with the layer programs on all 10 interfaces of the path in both directions (each packet runs them 10 times one way); ${b.rounds} alternated rounds of ${b.seconds} s. "ns per program run" is the kernel's own accounting (kernel.bpf_stats_enabled) over the rounds with the programs.`,
    '',
    '| packets carry records | round trips/s without | with the programs | ratio (median; min-max of rounds) | added per round trip | ns per program run (bpf_stats) |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of b.rows) {
    const ratios = r.on.map((v, i) => v / r.off[i]);
    const added = 1e9 / median(r.on) - 1e9 / median(r.off);
    lines.push(
      `| ${r.records ? 'yes (two causeway runs)' : 'no'} | ${median(r.off).toFixed(0)} | ${median(r.on).toFixed(0)} | ${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(3)}-${Math.max(...ratios).toFixed(3)}) | ${added.toFixed(0)} ns | ${median(r.nsPerRun).toFixed(0)} (${Math.min(...r.nsPerRun).toFixed(0)}-${Math.max(...r.nsPerRun).toFixed(0)}) |`,
    );
  }
  const verdict = b.rows.map((r) => {
    const ratios = r.on.map((v, i) => v / r.off[i]);
    return `${r.records ? 'with records' : 'without records'}: ${Math.max(...ratios) < 1 ? `the programs cost ${((1 - median(ratios)) * 100).toFixed(0)}% of the round trips (every round slower)` : 'not resolvable here (a round with the programs was as fast as one without)'}`;
  });
  lines.push('', `- ${verdict.join('; ')}.`);
  const rec = b.rows.find((r) => r.records);
  if (rec?.stamps) lines.push(`- With records, the stamps were taken out of the kernel's table every 250 ms while the rounds ran (as \`causeway trace\` does every second): ${rec.stamps.reduce((x, y) => x + y, 0)} stored, ${rec.lost?.reduce((x, y) => x + y, 0) ?? 0} lost to a full table.`);
  return lines.join('\n');
}
