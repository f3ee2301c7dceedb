#!/usr/bin/env bash
# bench_runc_ab.sh — where riklet could make its `runc run --detach` cheaper without weakening
# isolation: bare `runc run --detach` of one busybox bundle (runc spec's config, whose mounts are
# umoci's defaults, as in riklet's bundles) in interleaved rounds, one variant at a time:
#   base    --root under /run (as riklet's default /run/riklet/runc)
#   tmpfs   --root on /dev/shm (a tmpfs)
#   nocg    without the config's /sys/fs/cgroup mount (NOT taken: shown for its cost only)
#   cgpath  with a cgroupsPath of its own (/rkbench/ID)
# Medians and every run (ms) printed with the load before and after. A benchmark, not a test.
#   sudo ROUNDS=10 tests/bench/bench_runc_ab.sh        (take /work/wt/heavy.lock on a shared host)
set -u
ROUNDS=${ROUNDS:-10}
[[ $(id -u) == 0 ]] || { echo "bench_runc_ab: needs root" >&2; exit 1; }
for c in runc jq busybox; do command -v "$c" >/dev/null || { echo "bench_runc_ab: needs $c" >&2; exit 1; }; done
T=$(mktemp -d /tmp/bench-runc-ab.XXXXXX)
DISK_ROOT=/run/bench-runc-ab.$$ SHM_ROOT=/dev/shm/bench-runc-ab.$$
cleanup() {
	for r in "$DISK_ROOT" "$SHM_ROOT"; do
		for id in $(runc --root "$r" list -q 2>/dev/null); do runc --root "$r" delete -f "$id" >/dev/null 2>&1; done
		rm -rf "$r"
	done
	rmdir /sys/fs/cgroup/*/rkbench /sys/fs/cgroup/*/*/*/rkbench 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/rootfs/bin" "$T/rootfs/proc" "$T/rootfs/dev" "$T/rootfs/sys" "$T/rootfs/tmp"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
ln -s busybox "$T/rootfs/bin/sleep"
(cd "$T" && runc spec) || exit 1
jq '.process.terminal = false | .process.args = ["sleep", "3600"]' "$T/config.json" >"$T/base.json"
mk() { # mk NAME JQ: a bundle dir sharing the rootfs (by absolute path: runc refuses a symlink)
	mkdir -p "$T/$1" && jq --arg r "$T/rootfs" "$2 | .root.path = \$r" "$T/base.json" >"$T/$1/config.json"
}
mk base '.'
mk nocg 'del(.mounts[] | select(.destination == "/sys/fs/cgroup"))'
mk cgpath '.linux.cgroupsPath = "/rkbench/ID"'
VARIANTS=(base tmpfs nocg cgpath)
declare -A ROOT=([base]=$DISK_ROOT [tmpfs]=$SHM_ROOT [nocg]=$DISK_ROOT [cgpath]=$DISK_ROOT)
declare -A DIR=([base]=base [tmpfs]=base [nocg]=nocg [cgpath]=cgpath)
declare -A MS
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); /run is $(stat -f -c %T /run), /dev/shm $(stat -f -c %T /dev/shm)"
for r in $(seq "$ROUNDS"); do
	for v in "${VARIANTS[@]}"; do
		id=ab$v$r
		[[ $v == cgpath ]] && jq --arg p "/rkbench/$id" --arg r "$T/rootfs" '.linux.cgroupsPath = $p | .root.path = $r' \
			"$T/base.json" >"$T/cgpath/config.json"
		s=$(date +%s%N)
		(cd "$T/${DIR[$v]}" && runc --root "${ROOT[$v]}" run --detach "$id" </dev/null >"$T/out" 2>&1) ||
			{ echo "runc run ($v) failed: $(cat "$T/out")" >&2; exit 1; }
		e=$(date +%s%N)
		runc --root "${ROOT[$v]}" delete -f "$id" >/dev/null 2>&1
		MS[$v]+="$(((e - s) / 100000)) "
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for v in "${VARIANTS[@]}"; do
	med=$(tr ' ' '\n' <<<"${MS[$v]}" | grep . | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 10 }')
	printf '%-7s median %6s ms   runs (0.1 ms): %s\n' "$v" "$med" "${MS[$v]}"
done
