#!/usr/bin/env bash
# Per-program cost of the shim (ns per call, from kernel.bpf_stats_enabled)
# while a workload runs inside `causeway run --no-sample` (propagation only).
#   usage: scripts/hot-path-profile.sh [CAUSEWAY_DIR] [MODE...]   (modes of bench/pingpong.c)
# Prints one line per program and mode: calls, ns per call.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
shift || true
modes=("${@:-pipe unix tcp}")
tmp=$(mktemp -d)
trap 'sysctl -qw kernel.bpf_stats_enabled=0; rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/pingpong" "$(dirname "$0")/../bench/pingpong.c"
sysctl -qw kernel.bpf_stats_enabled=1
for mode in ${modes[@]}; do
  node "$dir/bin/causeway.js" run -q --no-sample -- "$tmp/pingpong" "$mode" 64 3 "$tmp/out" 0 &
  run=$!
  sleep 1
  # The shim's programs are the ones named handle_*: sum over every run loaded now.
  bpftool prog show -j | node -e '
    const before = JSON.parse(require("fs").readFileSync(0, "utf8")).filter((p) => /^handle_/.test(p.name));
    require("fs").writeFileSync(process.argv[1], JSON.stringify(before));' "$tmp/before.json"
  sleep 1.5
  bpftool prog show -j | node -e '
    const fs = require("fs");
    const before = new Map(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).map((p) => [p.id, p]));
    for (const p of JSON.parse(fs.readFileSync(0, "utf8"))) {
      const b = before.get(p.id);
      if (!b || p.run_cnt === b.run_cnt) continue;
      const calls = p.run_cnt - b.run_cnt, ns = (p.run_time_ns - b.run_time_ns) / calls;
      console.log(`${process.argv[2].padEnd(5)} ${p.name.padEnd(18)} ${String(calls).padStart(9)} calls ${ns.toFixed(0).padStart(5)} ns/call`);
    }' "$tmp/before.json" "$mode"
  wait $run
  echo "$mode: $(cat "$tmp/out") round trips/s"
done
