#!/usr/bin/env bash
# bench_metrics.sh — CPU of one per-instance metrics sweep and of one Prometheus exposition at N
# Pods (default 50): N real cgroups (v1 memory/cpuacct/pids, or v2), one sleeping process in each,
# and N RUNNING records naming them; riklet (`riklet test`) reads them with riklet.cgstats and
# renders riklet.prom, ROUNDS times, and prints the CPU time per sweep and per scrape.
#   sudo tests/bench/bench_metrics.sh [RIKLET]     (PODS=50, ROUNDS=200)
set -euo pipefail
RIKLET=${1:-${RIKLET:-build/riklet}}
PODS=${PODS:-50} ROUNDS=${ROUNDS:-200}
TMP=$(mktemp -d /tmp/riklet-bench-metrics.XXXXXX)
PIDS=() DIRS=()
cleanup() {
	local p d
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for d in "${DIRS[@]}"; do rmdir "$d" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then CTL=(/sys/fs/cgroup); else
	CTL=(/sys/fs/cgroup/memory /sys/fs/cgroup/cpuacct /sys/fs/cgroup/pids); fi
for ((i = 0; i < PODS; i++)); do
	sleep 3600 &
	PIDS+=($!)
	for c in "${CTL[@]}"; do
		mkdir -p "$c/riklet-bench/p${i}_c"
		DIRS+=("$c/riklet-bench/p${i}_c")
		echo "$!" >"$c/riklet-bench/p${i}_c/cgroup.procs"
	done
done
for c in "${CTL[@]}"; do DIRS+=("$c/riklet-bench"); done
printf '%s\n' "${PIDS[@]}" >"$TMP/pids"
cat >"$TMP/bench.lua" <<LUA
local cgstats = require "riklet.cgstats"
local prom = require "riklet.prom"
local recs, i = {}, 0
for pid in io.lines("$TMP/pids") do
  recs[#recs + 1] = { id = "p" .. i, kind = "Pod", status = "RUNNING",
    containers = { { name = "c", state = "running", pid = tonumber(pid), runc_id = "p" .. i .. "_c", restart_count = 0 } } }
  i = i + 1
end
local n = 0
for _, r in ipairs(recs) do if cgstats.of_instance(r) then n = n + 1 end end
assert(n == #recs, ("only %d of %d instances measured"):format(n, #recs))
local t0 = os.clock()
for _ = 1, $ROUNDS do for _, r in ipairs(recs) do cgstats.of_instance(r) end end
local sweep = (os.clock() - t0) / $ROUNDS
local text
t0 = os.clock()
for _ = 1, $ROUNDS do text = prom.render(prom.collect({ records = recs, pid = require("riklet.core").getpid() })) end
local scrape = (os.clock() - t0) / $ROUNDS
io.stdout:write(("| per-instance metrics sweep, %d Pods | %.2f ms CPU (%.0f us per Pod) |\n"):format(#recs, sweep * 1000, sweep * 1e6 / #recs))
io.stdout:write(("| Prometheus exposition (collect + render), %d Pods | %.2f ms CPU, %d bytes |\n"):format(#recs, scrape * 1000, #text))
LUA
"$RIKLET" test "$TMP/bench.lua" | grep '^|'
