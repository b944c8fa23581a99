#!/usr/bin/env bash
# The build: kernel programs (clang, CO-RE) -> skeletons embedded in the addon
# (node-gyp, libbpf) -> TypeScript (tsc).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "causeway build: bpf" >&2
# A real build: CW_BPF_CFLAGS is for scripts/hot-path-steps.sh's profiling builds only.
CW_BPF_CFLAGS= make -s -C bpf
echo "causeway build: addon" >&2
npx --no-install node-gyp rebuild --silent >/dev/null
echo "causeway build: typescript" >&2
npx --no-install tsc -p tsconfig.json
touch dist/.build-stamp
