#!/usr/bin/env bash
# What each step of the shim's hot path costs, per round trip (issue 9; docs/hot-path.md):
# builds copies of this tree whose shim stops after step N (CW_PROFILE_STOP, bpf/shim.bpf.c)
# and measures them and the full build against the floor (bench/hot-path-steps.ts).
#   usage: scripts/hot-path-steps.sh [ROUNDS]    (default 5; needs root and a built tree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-5}
[[ -f $root/dist/bench/hot-path-steps.js ]] || { echo "hot-path-steps: build the tree first (npm run build)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
labels=([1]="stop after the syscall number" [2]="+ the thread's task storage" [3]="+ the fd table" [4]="+ the channel (chans; TCP: the socket's storage)")
specs=()
for n in 1 2 3 4; do
  d=$tmp/stop$n
  mkdir -p "$d"
  tar -C "$root" --exclude=./node_modules --exclude=./.git --exclude=./build -cf - . | tar -C "$d" -xf -
  ln -s "$root/node_modules" "$d/node_modules"
  echo "hot-path-steps: building CW_PROFILE_STOP=$n" >&2
  make -s -C "$d/bpf" -B CW_BPF_CFLAGS=-DCW_PROFILE_STOP=$n .output/shim.skel.h
  (cd "$d" && npx --no-install node-gyp rebuild --silent >/dev/null)
  specs+=("${labels[$n]}=$d")
done
cc -O2 -o "$tmp/rtloop" "$root/bench/rtloop.c"
node "$root/dist/bench/hot-path-steps.js" "$rounds" "$tmp/rtloop" "${specs[@]}" "the full shim (this tree)=$root"
