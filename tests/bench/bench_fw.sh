#!/usr/bin/env bash
# bench_fw.sh [N] — build bench_fw.c against core/ (from the build dir) and run it inside a private
# network namespace, so the host's iptables are never touched. Prints a table.
#   RIKLET_BUILD_DIR   the cmake build dir holding librkcore.a (default: <src>/build)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${RIKLET_BUILD_DIR:-$src/build}
[[ $(id -u) == 0 ]] || { echo "bench_fw: needs root (unshare -n, iptables)"; exit 77; }
[[ -f $build/librkcore.a ]] || { echo "bench_fw: no $build/librkcore.a: build first (cmake --build $build)"; exit 1; }
command -v iptables-legacy >/dev/null || { echo "bench_fw: iptables-legacy missing (apt-get install iptables)"; exit 77; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -D_GNU_SOURCE -I"$src/core" -I"$build/proto" -o "$out/bench_fw" "$src/tests/bench/bench_fw.c" \
	"$build/librkcore.a" $(pkg-config --libs libip4tc libnl-route-3.0 libnl-3.0 libcjson libcurl libprotobuf-c) -lm
exec unshare -n "$out/bench_fw" "${1:-1000}"
