#!/usr/bin/env bash
# Makes a fresh Debian machine ready: system packages, npm packages, the build.
# Each step runs only when what it makes is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the BPF toolchain, libbpf, what node-gyp needs, and what the
# tests use (tcpdump; chromium renders the tracer's HTML report), the
# application benchmark's data store (redis-server, bench/app), and the real
# servers and their load generators of bench/servers.ts (redis-benchmark is in
# redis-tools; PostgreSQL, with pgbench, in postgresql and postgresql-contrib),
# and the scheduler experiment's Python front's PostgreSQL driver (psycopg2 for
# the system /usr/bin/python3, bench/scheduler), and what the container test
# runs (test/containers.ts: podman with runc, which works on hybrid cgroups
# where podman's default crun does not, and netavark, the network backend the
# test configures; busybox-static and the system python3 make the containers'
# root filesystem).
pkgs=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make g++ python3 pkg-config iproute2 curl tcpdump chromium
  redis-server redis-tools postgresql postgresql-contrib python3-psycopg2 podman runc netavark busybox-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "causeway setup: missing Debian packages: ${missing[*]}" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "causeway setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages, from the lock file. No dependency's install script is needed:
# the addon is built below, by us.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "causeway setup: installing npm packages" >&2
  npm ci --ignore-scripts --no-audit --no-fund >/dev/null
fi

# better-sqlite3 (the tracer's store) is a native module: build it from source
# here, since its install script was skipped (it would try to download a binary).
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
  echo "causeway setup: building better-sqlite3 (about a minute)" >&2
  (cd node_modules/better-sqlite3 && npx --no-install node-gyp rebuild --release --silent >/dev/null)
fi

# The build, when a source is newer than its last output.
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ ! -f build/Release/causeway.node ] || \
   [ -n "$(find bpf native src bench binding.gyp tsconfig.json package.json -newer "$stamp" -type f ! -path 'bpf/.output/*' 2>/dev/null | head -1)" ]; then
  bash scripts/build.sh
fi
