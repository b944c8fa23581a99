#!/usr/bin/env bash
# What the shim's programs cost per request in a real application (docs/hot-path.md):
# the three-tier system of the application benchmark (bench/app/system.js: a Node load
# generator, a Node front and back, redis-server; a new trace per request) under
# `causeway run --no-sample` (run) or `causeway trace` (trace), with kernel.bpf_stats_enabled;
# each program's calls, ns per call and µs per request over the load's measured seconds.
#   usage: scripts/app-programs.sh [run|trace] [SECONDS]    (root, a built tree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-run}
secs=${2:-6}
[[ $mode == run || $mode == trace ]] || { echo "app-programs: run or trace, not $mode" >&2; exit 2; }
tmp=$(mktemp -d)
stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
trap 'echo "$stats" > /proc/sys/kernel/bpf_stats_enabled; rm -rf "$tmp"' EXIT
cfg=$(node -e 'const [dir, secs, mode] = process.argv.slice(1);
  console.log(JSON.stringify({ dir, secs: Number(secs), warmup: 1, conc: 16, items: 1000, out: dir + "/result.json", otel: null,
    sampled: mode === "trace", sampleRate: null, observerPid: process.pid }))' "$tmp" "$secs" "$mode")
echo 1 > /proc/sys/kernel/bpf_stats_enabled
if [[ $mode == run ]]; then
  node "$root/bin/causeway.js" run -q --no-sample -- node "$root/bench/app/system.js" "$cfg" &
else
  node "$root/bin/causeway.js" trace -q --db "$tmp/traces.db" -- node "$root/bench/app/system.js" "$cfg" &
fi
pid=$!
# The programs' accounting over the middle of the measured load (the warm-up is 1 s).
sleep 2.5
bpftool prog show -j > "$tmp/before.json"
t0=$(date +%s.%N)
sleep $((secs - 2))
bpftool prog show -j > "$tmp/after.json"
t1=$(date +%s.%N)
wait $pid
node -e '
const fs = require("fs");
const [dir, t0, t1] = process.argv.slice(1);
const rps = JSON.parse(fs.readFileSync(dir + "/result.json", "utf8")).rps;
const requests = rps * (Number(t1) - Number(t0));
const before = new Map(JSON.parse(fs.readFileSync(dir + "/before.json", "utf8")).map((p) => [p.id, p]));
let total = 0;
console.log(`${rps.toFixed(0)} requests/s; per request over ${(Number(t1) - Number(t0)).toFixed(1)} s:`);
for (const p of JSON.parse(fs.readFileSync(dir + "/after.json", "utf8"))) {
  const b = before.get(p.id);
  if (!b || !/^handle_/.test(p.name) || p.run_cnt === b.run_cnt) continue;
  const calls = p.run_cnt - b.run_cnt, ns = p.run_time_ns - b.run_time_ns;
  total += ns / requests;
  console.log(`  ${p.name.padEnd(17)} ${(calls / requests).toFixed(1).padStart(5)} calls ${(ns / calls).toFixed(0).padStart(5)} ns per call ${(ns / requests / 1000).toFixed(1).padStart(5)} us`);
}
console.log(`  in all${" ".repeat(39)}${(total / 1000).toFixed(1).padStart(5)} us`);' "$tmp" "$t0" "$t1"
