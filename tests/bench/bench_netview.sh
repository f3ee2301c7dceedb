#!/usr/bin/env bash
# bench_netview.sh [RIKLET...] — CPU per net.view (a re-adoption's look inside a Pod's namespace:
# links, addresses, routes) and per net.links (52 links), through `riklet test`
# bench_netview.lua, each binary in turn, RUNS rounds (default 5), BENCH_NETVIEW_N calls each
# (default 2000), the load average on every line. Runs in a private network + mount namespace: 25
# veth pairs + lo + one veth to a Pod namespace (eth0 10.88.0.2/16 up, lo up, default route).
#   RIKLET_LUA_DIR   the Lua tree (default: <src>/lua)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
[[ $(id -u) == 0 ]] || { echo "bench_netview: needs root (unshare -n -m, ip link)"; exit 77; }
if [[ -z ${BENCH_NETVIEW_INNER:-} ]]; then
	exec env BENCH_NETVIEW_INNER=1 unshare -n -m --propagation private bash "$0" "$@"
fi
(($#)) || set -- "$src/build/riklet"
mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
ip link set lo up
for i in $(seq 1 25); do ip link add "bva$i" type veth peer name "bvb$i"; done
ip netns add pod
ip link add bvh type veth peer name eth0 netns pod
ip addr add 10.88.0.1/16 dev bvh
ip link set bvh up
ip -n pod link set lo up
ip -n pod link set eth0 up
ip -n pod addr add 10.88.0.2/16 dev eth0
ip -n pod route add default via 10.88.0.1
for r in $(seq 1 "${RUNS:-5}"); do
	for b in "$@"; do
		printf '%s load %s  %s  ' "$r" "$(cut -d' ' -f1-3 /proc/loadavg)" "$b"
		NS=/run/netns/pod RIKLET_LUA_DIR=${RIKLET_LUA_DIR:-$src/lua} "$b" test "$src/tests/bench/bench_netview.lua" |
			grep -v '^1\.\.0$'
	done
done
