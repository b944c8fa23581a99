#!/usr/bin/env bash
# What a TCP header option on every data segment costs by itself: redis-benchmark
# (-t set,get -c 8) against redis-server, both in a cgroup of their own, with no
# program, with a sockops program that only switches the option callbacks on, and
# with one that writes a 28-byte option on every data segment
# (bench/opt_every_segment.bpf.c). Rounds alternate; prints requests/s and the
# segments that took TCP's header-prediction fast path (TCPHPHits).
#   usage: scripts/option-cost.sh [ROUNDS]     (root; after scripts/build.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
tmp=$(mktemp -d)
cg="$cg2/cw-option-cost-$$"
pin=/sys/fs/bpf/cw-option-cost-$$
srv=
cleanup() {
  [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null || true
  bpftool cgroup detach "$cg" sock_ops pinned "$pin" 2>/dev/null || true
  rm -f "$pin"
  rmdir "$cg" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for w in 0 1; do
  clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -DOPT_WRITE=$w -I"$root/bpf/.output" \
    -c "$root/bench/opt_every_segment.bpf.c" -o "$tmp/opt$w.o"
done
mkdir "$cg"
one() { # none|callbacks|option
  local port=$((20000 + RANDOM % 20000))
  if [ "$1" != none ]; then
    bpftool prog load "$tmp/opt$([ "$1" = option ] && echo 1 || echo 0).o" "$pin" type sockops
    bpftool cgroup attach "$cg" sock_ops pinned "$pin"
  fi
  bash -c "echo \$\$ > $cg/cgroup.procs; exec redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null" &
  srv=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  local hp0 hp1
  hp0=$(nstat -az TcpExtTCPHPHits | awk '/TCPHPHits/ { print $2 }')
  local rates
  rates=$(bash -c "echo \$\$ > $cg/cgroup.procs; exec redis-benchmark -p $port -t set,get -c 8 -n 100000 --csv -q" |
    awk -F'"' '/SET|GET/ { printf "%s %s  ", $2, $4 }')
  hp1=$(nstat -az TcpExtTCPHPHits | awk '/TCPHPHits/ { print $2 }')
  kill "$srv"; wait "$srv" 2>/dev/null || true; srv=
  if [ "$1" != none ]; then bpftool cgroup detach "$cg" sock_ops pinned "$pin"; rm -f "$pin"; fi
  printf '%-10s %s TCPHPHits %d\n' "$1" "$rates" $((hp1 - hp0))
}
for r in $(seq "$rounds"); do
  for c in none callbacks option; do one "$c"; done
done
