#!/usr/bin/env bash
# bench_scale.sh — riklet holding PODS (default 1000) busybox Pods on one node, each figure beside
# the same work done by a plain shell loop over conmon + runc in the same run (a benchmark, not a
# test: it prints a table; it fails only when it cannot measure, or when riklet loses a Pod).
#
#   sudo tests/bench/bench_scale.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: PODS (default 1000); NETWORK bridge (default: a veth, an address and a port
# mapping per Pod) or none; BASELINE=0 skips the conmon + runc loop; STEADY (default 30) seconds
# of idle CPU measured at PODS; KEEP_TMP=1 keeps the temporary directory. READOPT_RUNS (default 1)
# kill -9 + restarts in a row; READOPT_ALT=BINARY makes the odd ones (READOPT_ALT_RUNS) run that riklet instead (an
# older build: before/after figures interleaved in one run, at the same load); TEARDOWN=0 skips the
# teardown (riklet killed, the containers deleted by the clean-up: no "left afterwards" figure).
# READOPT_PROFILE=FILE: one more restart of RIKLET under LuaJIT's profiler (RIKLET_BOOT_PROFILE,
# mode READOPT_PROFILE_MODE, default "Fi1": by function, a sample per ms), the profile in FILE.
# READOPT_VARIANTS="LABEL [VAR=VALUE...]|LABEL [VAR=VALUE...]|...": restart k runs with variant
# ((k-1) mod their number)'s environment (e.g. "now|before RIKLET_LUA_DIR=<older lua/>|jit56
# RIKLET_LUA_JIT=hotloop=56,hotexit=10": Lua trees or LuaJIT settings interleaved in one run, with
# READOPT_RUNS a multiple of their number); a table per variant follows (medians). A variant whose
# RIKLET_LUA_DIR is another tree loads the policies beside it, from another path: the fingerprint a
# record keeps of the policies names their paths, so every such restart re-asks the admission and
# network policies for every Pod (a restart after a policy change, not a plain one).
# READOPT_ALT_TREE=DIR (a tree with lua/ and policies/, e.g. `git archive main lua policies`
# extracted): plain restarts of two Lua trees, interleaved. Every riklet of the run (the first
# start too) loads its Lua tree and policies through one symlink, $T/tree, pointed before each
# start at this source tree, or at DIR for the odd restarts (with READOPT_ALT, those also run that
# binary): the policies' paths stay the same, so with the same texts every restart is a plain one.
# READOPT_POLICY_CHANGE=same|rules: every riklet of the run also loads an operator's admission and
# network policy from $T/policies (--policy-dir; each wraps the default, `base`), and before each
# restart both files are edited: "same" changes only a comment (the policies' fingerprints change,
# so every Pod's admission and network policies are asked again, and answer as before); "rules"
# also makes every other restart's network policy give each Pod's DNAT rule a source (10.0.0.0/8),
# so every Pod's rule is replaced at each restart. The policies' paths stay the same (a restart
# after the operator edited the policies, with READOPT_ALT / READOPT_ALT_TREE: interleaved).
# READOPT_POLICY_RUNS=PATTERN of 1 and 0 (default 1): restart k edits the policies when the
# pattern's ((k-1) mod its length)-th character is 1, else it is a plain restart (e.g. 1100 with
# READOPT_ALT: alt and this riklet after a policy change, then both after none; the row says which).
# READOPT_ALT_RUNS=PATTERN of 1 and 0 (default 10): which restarts READOPT_ALT / READOPT_ALT_TREE
# take, as READOPT_POLICY_RUNS (default: the odd ones; e.g. 1100 with READOPT_POLICY_RUNS=10: alt
# after a policy edit, alt plain, this riklet after an edit, this riklet plain).
# READOPT_STEADY=SECONDS (default 0): after each restart (network reconciled, 5 s later), riklet's
# CPU over that many idle seconds (its threads' schedstat: nanoseconds, not clock ticks), then its
# RSS / anon and heap split (with READOPT_ALT_TREE, the memory a re-adopted node holds, per tree,
# interleaved in one run).
# BENCH_LOCK=FILE: the script takes that lock itself and lets it go between its phases (riklet's
# start and restarts / riklet's teardown / the baseline's start / the baseline's teardown), each
# phase shorter than the whole (tests/bench/lib.sh).
#
# Everything runs in a private network + mount namespace (tests/lib/private_ns.sh): the bridge,
# veths, rules and mounts never touch the host's, and die with the namespace whatever happens.
# The image is the cached busybox image (tests/lib/mkimage.sh) pushed to a loopback registry
# (tests/lib/registry.sh), pulled once by a warm-up Pod.
#
# riklet (--standalone, --max-instances PODS+10):
#  1. start: PODS manifests renamed into the directory by one mv; time until every Pod is RUNNING
#     (riklet's log), Pods/s, p50/p99 of one Pod's create ("created in T ms" log lines).
#  2. at PODS: riklet's RSS / RssAnon / Pss 5 s after the last RUNNING and again after STEADY idle
#     seconds (steady state: the post-burst collection and trim come within 20 s), each with the
#     Lua heap and malloc's split (agent.json), the conmons' summed Rss / Pss (reported apart), CPU
#     over STEADY idle seconds (its threads' schedstat) with the loop's turns and turns over 100 ms
#     in that window; then LAGPROBE (default 20) seconds of an API round trip every 20 ms (GET of
#     an unknown path on --metrics-listen, answered 404 by the loop: the wait for the loop's turn
#     plus the probe's own scheduling) -> p50 / p99 / max; one per-instance sweep (GET /metrics:
#     every running instance's cgroups read and rendered; wall time and riklet's CPU for it); one
#     node-metrics sample (riklet.metrics.node_json, `riklet test`, CPU per sample);
#     `riklet ps` and `riklet ps --json` wall time. The load average is printed beside each figure.
#  3. one more Pod at PODS: manifest -> RUNNING, and the network step of its create.
#  4. kill -9 riklet, start it again: time until all PODS+1 are re-adopted (and, with bridge, the
#     network reconciled); every container's pid unchanged (none restarted), none lost; the phases
#     (exec to first log line, records read, adoptions, reconcile: riklet's "boot:" log line).
#  5. teardown: every manifest removed by one rm; first / p50 / p99 / last TERMINATED from the rm;
#     then what is left:
#     runc containers, conmon processes, mounts, veths, netns files, per-instance iptables rules.
# baseline (a shell loop, BASE_PAR Pods at a time: default twice the CPUs, riklet's default
# --runtime-parallel; RUNTIME_PARALLEL=N gives riklet another): per Pod an overlay mount over the unpacked
# image, a copied config.json, conmon running `runc create`, `runc start`; the same figures where
# they exist (no re-adoption: bare runc has no agent to restart); no network (the loop sets up no
# netns, veth or rule: with NETWORK=bridge that work is riklet's alone).

# shellcheck source=../lib/private_ns.sh
source "$(dirname "$0")/../lib/private_ns.sh"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$SRC_DIR/build/riklet}}"
source "$SRC_DIR/tests/lib/registry.sh"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh"

PODS=${PODS:-1000}
NETWORK=${NETWORK:-bridge}
BASELINE=${BASELINE:-1}
STEADY=${STEADY:-30}
READOPT_RUNS=${READOPT_RUNS:-1}
READOPT_ALT=${READOPT_ALT:-}
READOPT_ALT_TREE=${READOPT_ALT_TREE:-}
READOPT_VARIANTS=${READOPT_VARIANTS:-}
READOPT_STEADY=${READOPT_STEADY:-0}
READOPT_POLICY_CHANGE=${READOPT_POLICY_CHANGE:-}
READOPT_POLICY_RUNS=${READOPT_POLICY_RUNS:-1}
READOPT_ALT_RUNS=${READOPT_ALT_RUNS:-10}
TEARDOWN=${TEARDOWN:-1}
BASE_PAR=${BASE_PAR:-$((2 * $(nproc)))}
LAGPROBE=${LAGPROBE:-20}
METRICS_PORT=${METRICS_PORT:-19464} # (in the private namespace; Pods map 20000 + i)

BENCH_SAY_PREFIX='# '
bench_init --ns "runc, overlay mounts, network namespaces" runc conmon umoci skopeo jq ip iptables-legacy docker-registry
[[ $NETWORK == bridge || $NETWORK == none ]] || die "NETWORK is bridge or none"
[[ -z $READOPT_POLICY_CHANGE || $READOPT_POLICY_CHANGE == same || $READOPT_POLICY_CHANGE == rules ]] ||
	die "READOPT_POLICY_CHANGE is same or rules"
[[ $READOPT_POLICY_RUNS =~ ^[01]+$ ]] || die "READOPT_POLICY_RUNS is a pattern of 1 and 0"
[[ $READOPT_ALT_RUNS =~ ^[01]+$ ]] || die "READOPT_ALT_RUNS is a pattern of 1 and 0"

MAN=$T/manifests STAGE=$T/stage STATE=$T/state RROOT=$T/runc-riklet BROOT=$T/runc-bare NETNS=$T/netns
LOG=$T/riklet.log
mkdir -p "$MAN" "$STAGE" "$STATE" "$RROOT" "$BROOT"

# the cleanup stack runs last-in first-out: riklet killed, then every container of both roots
# deleted (their conmons exit with them); common.sh then detaches the mounts under $T
on_exit bench_cleanup_runc
on_exit bench_kill_riklet
bench_cleanup_runc() {
	local root
	for root in "$RROOT" "$BROOT"; do
		[[ -d $root ]] || continue
		# (BASE_PAR at once: a thousand one after the other took minutes with TEARDOWN=0)
		runc --root "$root" list -q 2>/dev/null | xargs -r -P "$BASE_PAR" -I{} runc --root "$root" delete -f {} >/dev/null 2>&1
	done
}

on_exit bench_lock_drop
bench_lock_take
say "building the busybox image and starting a loopback registry"
bench_image

RK_OPTS=(--standalone "$MAN" --state-dir "$STATE" --runc-root "$RROOT" --netns-dir "$NETNS" --network "$NETWORK"
	--insecure-registries "$REGISTRY" --max-instances $((PODS + 10)) --stop-grace 2 --log-format text
	--metrics-listen "127.0.0.1:$METRICS_PORT"
	${RUNTIME_PARALLEL:+--runtime-parallel "$RUNTIME_PARALLEL"}
	${READOPT_POLICY_CHANGE:+--policy-dir "$T/policies"})
# policy_edit N: the operator's policies, version N (READOPT_POLICY_CHANGE)
policy_edit() {
	mkdir -p "$T/policies"
	printf -- '-- the operator'"'"'s admission policy, version %d (bench_scale.sh)\nreturn base\n' "$1" >"$T/policies/admission.lua"
	local src=nil
	[[ $READOPT_POLICY_CHANGE == rules ]] && (($1 % 2 == 1)) && src='"10.0.0.0/8"'
	cat >"$T/policies/network.lua" <<-LUA
		-- the operator's network policy, version $1 (bench_scale.sh)
		local SRC = $src
		local N = setmetatable({}, { __index = base })
		function N.rules(w, ctx)
		  local rules, err = base.rules(w, ctx)
		  if not rules then return nil, err end
		  for _, r in ipairs(rules) do
		    if r.chain == "RIKLET" and SRC then r.src = SRC end
		  end
		  return rules
		end
		return N
	LUA
}
[[ -z $READOPT_POLICY_CHANGE ]] || policy_edit 0
# (READOPT_ALT_TREE: every start loads its tree through $T/tree; TREE=DIR points it elsewhere)
start_riklet() { # [BINARY [VAR=VALUE...]]
	local tree=()
	if [[ -n $READOPT_ALT_TREE ]]; then
		ln -sfn "${TREE:-$SRC_DIR}" "$T/tree"
		tree=("RIKLET_LUA_DIR=$T/tree/lua")
	fi
	env "${tree[@]}" "${@:2}" "${1:-$RIKLET}" "${RK_OPTS[@]}" >>"$LOG" 2>&1 </dev/null &
	RPID=$!
}
# manifest NAME N: a sleeping busybox Pod; with bridge, node port 20000+N mapped to its port 80
manifest() {
	local ports=
	[[ $NETWORK == bridge ]] && ports=$(printf ',"ports":{"port":%d,"target_port":80,"protocol":"TCP"}' $((20000 + $2)))
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"%s"%s}]}}\n' \
		"$1" "$IMAGE" "$ports"
}
pod() { printf 'pod-%04d' "$1"; }

# Log lines: "2026-11-22T00:32:08.057Z info  [agent] instance ID (Pod NAME): CREATING -> RUNNING".
# count_since LINE PATTERN: lines matching the fixed PATTERN after line LINE of the log
count_since() { tail -n +"$(($1 + 1))" "$LOG" | grep -cF -- "$2"; }
log_lines() { wc -l <"$LOG"; }
# seconds of the UTC day (log time stamps; EPOCHREALTIME is converted the same way)
sod() { awk -v e="$1" 'BEGIN { printf "%.3f", e - int(e / 86400) * 86400 }'; }
# wait_count LINE PATTERN N TIMEOUT: until N lines match; dies on timeout, with the log
wait_count() {
	local i n
	for ((i = 0; i < $4 * 2; i++)); do
		n=$(count_since "$1" "$2")
		((n >= $3)) && return 0
		kill -0 "$RPID" 2>/dev/null || { diag_file "$LOG" 30 >&2; die "riklet died"; }
		sleep 0.5
	done
	diag_file "$LOG" 30 >&2
	die "only $n of $3 '$2' lines within $4 s"
}
# last_sod LINE PATTERN: the time of day of the last matching line after LINE
last_sod() {
	tail -n +"$(($1 + 1))" "$LOG" | grep -F -- "$2" | tail -n 1 |
		awk '{ split(substr($1, 12, 12), t, ":"); printf "%.3f", t[1] * 3600 + t[2] * 60 + t[3] }'
}
# elapsed FROM_SOD TO_SOD (across midnight)
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { d = b - a; if (d < -43200) d += 86400; printf "%.2f", d }'; }
# pct P V...: nearest-rank percentile
pct() {
	local p=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v p="$p" '{ v[NR] = $1 } END { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; printf "%.0f", v[k] }'
}
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/${3:-status}"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
# conmon_mem ROOT: "RSS_KIB PSS_KIB N" summed over the conmons whose runtime root is ROOT
conmon_mem() {
	local p r s rss=0 pss=0 n=0
	for p in $(pgrep -x conmon); do
		{ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "--runtime-arg=$1 " || continue
		r=$(kib "$p" Rss smaps_rollup 2>/dev/null) && s=$(kib "$p" Pss smaps_rollup 2>/dev/null) || continue
		rss=$((rss + r)) pss=$((pss + s)) n=$((n + 1))
	done
	echo "$rss $pss $n"
}
conmon_count() { set -- $(conmon_mem "$1"); echo "$3"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU nanoseconds of every thread of process $1 (schedstat: finer than the stat file's ticks)
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# the loop's counters from `riklet ps --json`: "TURNS SLOW_TURNS"
loop_turns() { "$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null | jq -r '.agent.loop | "\(.turns // 0) \(.slow_turns // 0)"'; }
# where riklet's anonymous memory is, from `riklet ps --json` (agent.json: up to 5 s old): the Lua
# heap (live + not yet collected) and glibc's malloc (in use / free in the heap) -> one string
heap_split() {
	"$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null | jq -r '.agent.memory // empty |
		"Lua heap \(.lua_kib / 1024 * 10 | round / 10) MiB (\(if .lua_live_kib then "\(.lua_live_kib / 1024 * 10 | round / 10) live at the last full collection" else "no full collection yet" end)), malloc in use \(.malloc_used_kib / 1024 * 10 | round / 10) / free \(.malloc_free_kib / 1024 * 10 | round / 10) MiB"' 2>/dev/null
}
# probe lag SECONDS | probe get PATH: API round trips to riklet's --metrics-listen (keep-alive, Debian's python3)
probe() {
	/usr/bin/python3 - "$METRICS_PORT" "$@" <<'PY'
import http.client, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
def get(path):
    a = time.monotonic()
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    return (time.monotonic() - a) * 1000, r.status, body
if mode == "lag":
    secs, v = float(sys.argv[3]), []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        v.append(get("/lag-probe")[0])
        time.sleep(0.02)
    v.sort()
    k = lambda p: v[max(0, min(len(v) - 1, int(p / 100 * len(v) + 0.999999) - 1))]
    print("%d %.1f %.1f %.1f" % (len(v), k(50), k(99), v[-1]))
else:
    ms, st, body = get(sys.argv[3])
    n = sum(1 for l in body.split(b"\n") if l.startswith(b"riklet_instance_memory_bytes{"))
    print("%.1f %d %d %d" % (ms, st, len(body), n))
PY
}
# wall SECONDS of a command (median of 3)
wall3() {
	local i a v=()
	for i in 1 2 3; do
		a=$EPOCHREALTIME
		"$@" >/dev/null 2>&1
		v+=("$(awk -v a="$a" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')")
	done
	printf '%s\n' "${v[@]}" | sort -g | sed -n 2p
}

# ================================= riklet ========================================================
say "riklet: warm-up (pull)"
start_riklet
wait_for 20 grep -q "watching" "$LOG" || { diag_file "$LOG" >&2; die "riklet did not start"; }
L0=$(log_lines)
manifest warm 0 >"$STAGE/warm.json" && mv "$STAGE/warm.json" "$MAN/"
wait_count "$L0" "instance warm (Pod warm): CREATING -> RUNNING" 1 180
rm -f "$MAN/warm.json"
wait_count "$L0" "instance warm (Pod warm): DESTROYING -> TERMINATED" 1 60

say "riklet: $PODS Pods at once ($NETWORK network)"
for ((i = 1; i <= PODS; i++)); do manifest "$(pod "$i")" "$i" >"$STAGE/$(pod "$i").json"; done
L1=$(log_lines)
R_START_LOAD=$(load1)
T0=$EPOCHREALTIME
mv "$STAGE"/pod-*.json "$MAN/"
# every create ended: RUNNING, or FAILED (counted below; one Pod that failed must not stall the run)
wait_count "$L1" ": CREATING -> " "$PODS" $((PODS + 300))
R_START=$(elapsed "$(sod "$T0")" "$(last_sod "$L1" ": CREATING -> RUNNING")")
FAILED=$(count_since "$L1" "-> FAILED")
mapfile -t CREATE_MS < <(tail -n +"$((L1 + 1))" "$LOG" | grep -E '\] instance pod-[0-9]+: created in ' | grep -oE 'created in [0-9.]+' | awk '{ print $3 }')
R_P50=$(pct 50 "${CREATE_MS[@]}") R_P99=$(pct 99 "${CREATE_MS[@]}")
R_START_LOAD="$R_START_LOAD-$(load1)"
say "riklet: all RUNNING in $R_START s (create p50 $R_P50 ms, p99 $R_P99 ms, $FAILED failed), load $R_START_LOAD"

sleep 5
R_RSS=$(kib "$RPID" VmRSS) R_ANON=$(kib "$RPID" RssAnon) R_PSS=$(kib "$RPID" Pss smaps_rollup) R_HWM=$(kib "$RPID" VmHWM)
read -r R_CM_RSS R_CM_PSS R_CM_N < <(conmon_mem "$RROOT")
R_MEM_LOAD=$(load1)
R_HEAP=$(heap_split)
# idle: CPU (schedstat, ns) and the loop's turns over STEADY seconds (agent.json: up to 5 s old)
read -r tu0 sl0 < <(loop_turns)
c0=$(cpu_ns "$RPID") a=$EPOCHREALTIME R_CPU_LOAD=$(load1)
sleep "$STEADY"
read -r R_CPU R_CPU_MIN < <(awk -v c="$(($(cpu_ns "$RPID") - c0))" -v a="$a" -v b="$EPOCHREALTIME" \
	'BEGIN { printf "%.2f %.0f", c / 1e9 / (b - a) * 100, c / 1e6 / (b - a) * 60 }')
R_CPU_LOAD="$R_CPU_LOAD-$(load1)"
# the same after STEADY idle seconds: what a node holding PODS keeps (the post-burst collection and
# malloc_trim come within 20 s: riklet.cli trim_after_bursts), where the figure above still holds
# what the start's last seconds left
R_RSS2=$(kib "$RPID" VmRSS) R_ANON2=$(kib "$RPID" RssAnon) R_PSS2=$(kib "$RPID" Pss smaps_rollup) R_MEM2_LOAD=$(load1)
R_HEAP2=$(heap_split)
read -r tu1 sl1 < <(loop_turns)
R_TURNS="$((tu1 - tu0)) turns, $((sl1 - sl0)) over 100 ms"
R_LAG=$("$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null | jq -r '.agent.loop | "max \(.lag_max_ms | floor) ms (since start), recent \(.lag_recent_ms | floor) ms"' 2>/dev/null)
say "riklet at $PODS: RSS $R_RSS KiB, anon $R_ANON KiB, CPU $R_CPU % ($R_CPU_MIN ms per minute, $R_TURNS), load $R_CPU_LOAD"
# the loop's lag as an API client sees it, then one per-instance sweep and one node-metrics sample
R_PROBE_LOAD=$(load1)
read -r R_PROBE_N R_PROBE_P50 R_PROBE_P99 R_PROBE_MAX < <(probe lag "$LAGPROBE")
R_PROBE_LOAD="$R_PROBE_LOAD-$(load1)"
R_SWEEP_LOAD=$(load1)
c0=$(cpu_ns "$RPID")
read -r R_SWEEP_MS R_SWEEP_ST R_SWEEP_BYTES R_SWEEP_N < <(probe get /metrics)
R_SWEEP_CPU=$(awk -v c="$(($(cpu_ns "$RPID") - c0))" 'BEGIN { printf "%.0f", c / 1e6 }')
cat >"$T/node_metrics.lua" <<'LUA'
local metrics = require "riklet.metrics"
assert(metrics.node_json())
local n, t0 = 50, os.clock()
for _ = 1, n do assert(metrics.node_json()) end
io.stdout:write(("%.0f %d\n"):format((os.clock() - t0) / n * 1e6, #metrics.node_json()))
LUA
read -r R_NODE_US R_NODE_BYTES < <("$RIKLET" test "$T/node_metrics.lua" 2>/dev/null | head -n 1)
say "riklet at $PODS: API round trip p50 / p99 / max $R_PROBE_P50 / $R_PROBE_P99 / $R_PROBE_MAX ms ($R_PROBE_N, load $R_PROBE_LOAD); /metrics $R_SWEEP_MS ms ($R_SWEEP_CPU ms CPU, $R_SWEEP_N instances, HTTP $R_SWEEP_ST); node metrics $R_NODE_US us CPU"
R_PS_LOAD=$(load1)
R_PS=$(wall3 "$RIKLET" ps --state-dir "$STATE")
R_PSJ=$(wall3 "$RIKLET" ps --json --state-dir "$STATE")

say "riklet: one more Pod at $PODS"
manifest extra $((PODS + 1)) >"$STAGE/extra.json"
L2=$(log_lines)
T0=$EPOCHREALTIME
mv "$STAGE/extra.json" "$MAN/"
wait_count "$L2" "instance extra (Pod extra): CREATING -> RUNNING" 1 120
R_ONE=$(elapsed "$(sod "$T0")" "$(last_sod "$L2" "instance extra (Pod extra): CREATING -> RUNNING")")
R_ONE_LOAD=$(load1)
R_ONE_NET=$(tail -n +"$((L2 + 1))" "$LOG" | grep -F '] instance extra: created in ' | grep -oE 'network [0-9.]+' | awk '{ print $2 }')

say "riklet: kill -9 and restart with $((PODS + 1)) Pods, $READOPT_RUNS time(s)${READOPT_ALT:+ (runs $READOPT_ALT_RUNS: $READOPT_ALT)}${READOPT_ALT_TREE:+ (runs $READOPT_ALT_RUNS with the Lua tree $READOPT_ALT_TREE)}${READOPT_VARIANTS:+ (variants: $READOPT_VARIANTS)}"
VARIANTS=()
[[ -z $READOPT_VARIANTS ]] || IFS='|' read -r -a VARIANTS <<<"$READOPT_VARIANTS"
declare -A V_READOPT V_BOOTCPU V_STEADY V_PREBOOT
pids_of() { runc --root "$RROOT" list --format json 2>/dev/null | jq -r '.[] | "\(.id) \(.pid) \(.status)"' | sort; }
pids_of >"$T/pids.before"
# the Pods RUNNING now are the ones to re-adopt (one that failed meanwhile is reported, not waited for)
N_RUN=$("$RIKLET" ps --json --state-dir "$STATE" | jq '[.instances[] | select(.status == "RUNNING")] | length')
((N_RUN == PODS + 1)) || say "riklet: only $N_RUN of $((PODS + 1)) Pods RUNNING before the kill"
tod() { awk '{ split(substr($1, 12, 12), t, ":"); printf "%.3f", t[1] * 3600 + t[2] * 60 + t[3] }'; }
READOPT_ROWS=() L3=0 POLICY_VERSION=0
for ((run = 1; run <= READOPT_RUNS + (${#READOPT_PROFILE} > 0); run++)); do
	BIN=$RIKLET WHO=riklet PROF=()
	TREE=
	ALT_RUN=${READOPT_ALT_RUNS:(run - 1) % ${#READOPT_ALT_RUNS}:1}
	[[ -n $READOPT_ALT ]] && ((ALT_RUN)) && BIN=$READOPT_ALT WHO=alt
	[[ -n $READOPT_ALT_TREE ]] && ((ALT_RUN && run <= READOPT_RUNS)) && TREE=$READOPT_ALT_TREE WHO=alt
	VLABEL=
	if ((${#VARIANTS[@]} && run <= READOPT_RUNS)); then
		read -r -a vwords <<<"${VARIANTS[(run - 1) % ${#VARIANTS[@]}]}"
		VLABEL=${vwords[0]} WHO=${vwords[0]} PROF=("${vwords[@]:1}")
	fi
	((run > READOPT_RUNS)) && BIN=$RIKLET WHO="riklet, profiled" \
		PROF=("RIKLET_BOOT_PROFILE=$READOPT_PROFILE" "RIKLET_BOOT_PROFILE_MODE=${READOPT_PROFILE_MODE:-Fi1}")
	kill -KILL "$RPID"
	wait "$RPID" 2>/dev/null
	if [[ -n $READOPT_POLICY_CHANGE && ${READOPT_POLICY_RUNS:(run - 1) % ${#READOPT_POLICY_RUNS}:1} == 1 ]]; then
		policy_edit $((++POLICY_VERSION))
		WHO+=" after a policy edit"
	fi
	L3=$(log_lines)
	T0=$EPOCHREALTIME
	start_riklet "$BIN" "${PROF[@]}"
	wait_count "$L3" " re-adopted: " "$N_RUN" 600
	R_READOPT=$(elapsed "$(sod "$T0")" "$(last_sod "$L3" " re-adopted: ")")
	# per phase: exec to riklet's first log line, then what the boot logs (wall and CPU of each phase)
	R_FIRSTLINE=$(elapsed "$(sod "$T0")" "$(tail -n +"$((L3 + 1))" "$LOG" | head -n 1 | tod)")
	R_RECONCILED=-
	if [[ $NETWORK == bridge ]]; then
		wait_count "$L3" "network reconciled:" 1 120
		R_RECONCILED=$(elapsed "$(sod "$T0")" "$(last_sod "$L3" "network reconciled:")")
	fi
	wait_count "$L3" "[agent] boot: " 1 120
	R_BOOT=$(tail -n +"$((L3 + 1))" "$LOG" | grep -F "[agent] boot: " | head -n 1 | sed 's/.*leftovers reconciled in //')
	# the boot (agent.init: records read, adoptions, reconcile) began its line's wall time before
	# it: what came before is the process start, the code loaded, the drivers' init (and, before
	# 22f01a6, the start-up check)
	R_PREBOOT=$(elapsed "$(sod "$T0")" "$(awk -v t="$(last_sod "$L3" "[agent] boot: ")" -v w="${R_BOOT%% ms*}" 'BEGIN { printf "%.3f", t - w / 1000 }')")
	LOADNOW=$(cut -d' ' -f1 /proc/loadavg)
	R_STEADY_RUN= R_STEADY_MEM=
	if ((READOPT_STEADY > 0)); then
		sleep 5
		c0=$(cpu_ns "$RPID") a=$EPOCHREALTIME
		sleep "$READOPT_STEADY"
		R_STEADY_RUN=$(awk -v c="$(($(cpu_ns "$RPID") - c0))" -v a="$a" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", c / 1e9 / (b - a) * 100 }')
		# and its memory then (no burst of creates behind it: the re-adopted node's own)
		R_STEADY_MEM="RSS / anon $(mib "$(kib "$RPID" VmRSS)") / $(mib "$(kib "$RPID" RssAnon)") (load $(load1); $(heap_split))"
	fi
	say "riklet ($WHO, run $run): re-adopted in $R_READOPT s, reconciled $R_RECONCILED s, first log line $R_FIRSTLINE s, boot began $R_PREBOOT s; boot $R_BOOT; load $LOADNOW${R_STEADY_RUN:+; idle CPU $R_STEADY_RUN %, $R_STEADY_MEM}"
	READOPT_ROWS+=("$WHO run $run (load $LOADNOW): all re-adopted $R_READOPT s, network reconciled $R_RECONCILED s, first log line $R_FIRSTLINE s, boot began $R_PREBOOT s; boot $R_BOOT${R_STEADY_RUN:+; idle CPU $R_STEADY_RUN % over $READOPT_STEADY s, then $R_STEADY_MEM}")
	if [[ -n $VLABEL ]]; then
		V_READOPT[$VLABEL]+=" $R_READOPT"
		V_PREBOOT[$VLABEL]+=" $R_PREBOOT"
		# the boot's CPU: the first "(CPU N)" of its line, the whole boot's
		V_BOOTCPU[$VLABEL]+=" $(grep -oE '\(CPU [0-9]+\)' <<<"$R_BOOT" | head -n 1 | tr -dc 0-9)"
		V_STEADY[$VLABEL]+=" ${R_STEADY_RUN:--}"
	fi
	sleep 2
done
pids_of >"$T/pids.after"
R_CHANGED=$(diff "$T/pids.before" "$T/pids.after" | grep -c '^>')
R_RUNNING=$("$RIKLET" ps --json --state-dir "$STATE" | jq '[.instances[] | select(.status == "RUNNING")] | length')
R_RESTARTS=$(count_since "$L3" "restarting it in")
R_RULES=-
[[ $NETWORK == bridge ]] && R_RULES=$(iptables-legacy -t nat -S RIKLET 2>/dev/null | grep -c -- '-j DNAT')
say "riklet: re-adopted in $R_READOPT s; $R_CHANGED containers changed, $R_RUNNING RUNNING"

R_DOWN="- (TEARDOWN=0)" R_LEFT="- (TEARDOWN=0)"
if ((TEARDOWN)); then
	bench_lock_pause "riklet's teardown"
	say "riklet: teardown"
	R_DOWN_LOAD=$(cut -d' ' -f1 /proc/loadavg)
	L4=$(log_lines)
	T0=$EPOCHREALTIME
	rm -f "$MAN"/*.json
	# ended: TERMINATED, or FAILED when a destroy overran its deadline (its work goes on)
	wait_count "$L4" "DESTROYING -> " $((PODS + 1)) $((PODS + 300))
	R_DOWN=$(elapsed "$(sod "$T0")" "$(last_sod "$L4" "DESTROYING -> ")")
	# every Pod's end, seconds from the rm: first / p50 / p99 (the last is R_DOWN)
	T0S=$(sod "$T0")
	mapfile -t DOWN_S < <(tail -n +"$((L4 + 1))" "$LOG" | grep -F "DESTROYING -> " |
		awk -v a="$T0S" '{ split(substr($1, 12, 12), t, ":"); d = t[1] * 3600 + t[2] * 60 + t[3] - a; if (d < -43200) d += 86400; printf "%.0f\n", d * 1000 }')
	R_DOWN_PCT="first $(awk -v m="$(pct 0 "${DOWN_S[@]}")" 'BEGIN { printf "%.2f", m / 1000 }') s, p50 $(awk -v m="$(pct 50 "${DOWN_S[@]}")" 'BEGIN { printf "%.2f", m / 1000 }') s, p99 $(awk -v m="$(pct 99 "${DOWN_S[@]}")" 'BEGIN { printf "%.2f", m / 1000 }') s"
	R_DOWN_LOAD="$R_DOWN_LOAD-$(cut -d' ' -f1 /proc/loadavg)"
	R_DOWN_FAILED=$(count_since "$L4" "DESTROYING -> FAILED")
	((R_DOWN_FAILED == 0)) || R_DOWN="$R_DOWN ($R_DOWN_FAILED FAILED)"
	say "riklet: teardown: $R_DOWN_PCT, last $R_DOWN s, load $R_DOWN_LOAD"
	sleep 2
fi
# what is left (riklet still running: only its node-wide bridge and riklet:infra rules may stay)
left() {
	local root=$1 what=()
	local n
	n=$(runc --root "$root" list -q 2>/dev/null | grep -c .)
	((n)) && what+=("$n runc containers")
	n=$(conmon_count "$root")
	((n)) && what+=("$n conmons")
	n=$(awk -v d="$2" 'index($5, d) == 1' /proc/self/mountinfo | grep -c .)
	((n)) && what+=("$n mounts")
	if [[ $NETWORK == bridge && $root == "$RROOT" ]]; then
		n=$(ip -o link show | grep -c ' rkv')
		((n)) && what+=("$n veths")
		n=$(find "$NETNS" -mindepth 1 2>/dev/null | grep -c .)
		((n)) && what+=("$n netns files")
		n=$({ iptables-legacy-save -t nat; iptables-legacy-save -t filter; } 2>/dev/null | grep -F 'riklet:' | grep -vcF 'riklet:infra')
		((n)) && what+=("$n iptables rules")
	fi
	((${#what[@]})) && { local IFS=,; echo "${what[*]}"; } || echo nothing
}
((TEARDOWN)) && R_LEFT=$(left "$RROOT" "$STATE/")
kill -"$( ((TEARDOWN)) && echo TERM || echo KILL)" "$RPID"
wait "$RPID" 2>/dev/null
RPID=

# ================================= baseline: conmon + runc in a shell loop =======================
B_START=- B_P50=- B_P99=- B_CM_RSS=0 B_CM_PSS=0 B_CM_N=0 B_ONE=- B_PS=- B_DOWN=- B_LEFT=-
if ((BASELINE)); then
	bench_lock_pause "the baseline's start"
	say "baseline: $PODS Pods, conmon + runc in a loop"
	B_START_LOAD=$(cut -d' ' -f1 /proc/loadavg)
	LOWER=$T/bare-image
	umoci unpack --image "$T/layout:latest" "$LOWER" >/dev/null || die "umoci unpack failed"
	jq '.process.terminal = false | .root.path = "rootfs"' "$LOWER/config.json" >"$T/bare-config.json" || die "jq failed"
	RUNC_BIN=$(command -v runc)
	B=$T/bare
	bare_start() { # bare_start ID: overlay, config, conmon + runc create, runc start
		local d=$B/$1
		mkdir -p "$d/upper" "$d/work" "$d/rootfs" "$d/exit"
		mount -t overlay overlay -o "lowerdir=$LOWER/rootfs,upperdir=$d/upper,workdir=$d/work" "$d/rootfs" || return 1
		cp "$T/bare-config.json" "$d/config.json"
		conmon --api-version 1 --cid="$1" --cuuid="$1" --name="$1" --runtime="$RUNC_BIN" --bundle="$d" \
			--container-pidfile="$d/pid" --conmon-pidfile="$d/cpid" --log-path="k8s-file:$d/log" \
			--log-size-max=10485760 --persist-dir="$d/exit" --full-attach --runtime-arg=--root \
			--runtime-arg="$BROOT" --runtime-opt=-- >/dev/null 2>&1 </dev/null || return 1
		until [[ -s $d/pid ]]; do
			kill -0 "$(cat "$d/cpid" 2>/dev/null)" 2>/dev/null || { [[ -s $d/pid ]] && break; return 1; }
			sleep 0.005
		done
		runc --root "$BROOT" start "$1" >/dev/null 2>&1
	}
	bare_stop() { # bare_stop ID: SIGTERM, wait stopped (grace 2 s, as riklet), delete, unmount
		local d=$B/$1 i
		runc --root "$BROOT" kill "$1" TERM >/dev/null 2>&1
		for ((i = 0; i < 200; i++)); do
			[[ $(runc --root "$BROOT" state "$1" 2>/dev/null | jq -r .status) == running ]] || break
			sleep 0.01
		done
		runc --root "$BROOT" delete -f "$1" >/dev/null 2>&1
		umount "$d/rootfs" && rm -rf -- "$d"
	}
	ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'; }
	# BASE_PAR Pods at a time (the --runtime-parallel this script gives riklet: RUNTIME_PARALLEL, default twice the CPUs), each one's
	# time in $B/ms.N
	timed_start() { local a=$EPOCHREALTIME; if bare_start "$1"; then ms_since "$a" >"$B/ms.$1"; else say "baseline: $1 did not start"; fi; }
	T0=$EPOCHREALTIME
	mkdir -p "$B"
	( # a subshell: its wait is for these jobs only (not the registry)
		for ((i = 1; i <= PODS; i++)); do
			(($(jobs -rp | wc -l) < BASE_PAR)) || wait -n
			timed_start "$(pod "$i")" &
		done
		wait
	)
	B_START=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
	mapfile -t B_MS < <(cat "$B"/ms.* 2>/dev/null)
	((${#B_MS[@]} == PODS)) || die "baseline: only ${#B_MS[@]} of $PODS Pods started"
	B_P50=$(pct 50 "${B_MS[@]}") B_P99=$(pct 99 "${B_MS[@]}")
	sleep 5
	read -r B_CM_RSS B_CM_PSS B_CM_N < <(conmon_mem "$BROOT")
	B_PS=$(wall3 runc --root "$BROOT" list)
	a=$EPOCHREALTIME
	bare_start extra || die "baseline: one more Pod did not start"
	B_ONE=$(awk -v a="$a" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
	say "baseline: all running in $B_START s"
	B_START_LOAD="$B_START_LOAD-$(cut -d' ' -f1 /proc/loadavg)"
	((TEARDOWN)) && bench_lock_pause "the baseline's teardown"
	B_DOWN_LOAD=$(cut -d' ' -f1 /proc/loadavg)
	T0=$EPOCHREALTIME
	(
		for ((i = 1; i <= PODS; i++)); do
			(($(jobs -rp | wc -l) < BASE_PAR)) || wait -n
			bare_stop "$(pod "$i")" &
		done
		bare_stop extra
		wait
	)
	B_DOWN=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
	B_DOWN_LOAD="$B_DOWN_LOAD-$(cut -d' ' -f1 /proc/loadavg)"
	sleep 2
	B_LEFT=$(left "$BROOT" "$B/")
fi

# ================================= table =========================================================
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s + 0 > 0) printf "%.1f", n / s; else print "-" }'; }
printf '\n%s, runc %s, %d Pods, --network %s, %s, load %s\n\n' \
	"$("$RIKLET" version 2>/dev/null | head -n 1)" "$(runc --version | awk 'NR == 1 { print $3 }')" \
	"$PODS" "$NETWORK" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"
fmt='| %-40s | %-34s | %-34s |\n'
printf "$fmt" metric riklet "baseline (conmon + runc loop, $BASE_PAR at once)"
printf "$fmt" "$(printf -- '-%.0s' {1..40})" "$(printf -- '-%.0s' {1..34})" "$(printf -- '-%.0s' {1..34})"
printf "$fmt" "all $PODS RUNNING (s)" "$R_START ($(rate "$PODS" "$R_START") Pods/s), load $R_START_LOAD" "$B_START ($(rate "$PODS" "$B_START") Pods/s)${B_START_LOAD:+, load $B_START_LOAD}"
printf "$fmt" "one Pod's start p50 / p99 (ms)" "$R_P50 / $R_P99 (create step)" "$B_P50 / $B_P99"
printf "$fmt" "failed" "$FAILED" "0"
printf "$fmt" "riklet RSS / anon / Pss at $PODS" "$(mib "$R_RSS") / $(mib "$R_ANON") / $(mib "$R_PSS") (5 s after the last RUNNING, load $R_MEM_LOAD; ${R_HEAP:-heap split unknown})" "-"
printf "$fmt" "  the same after $STEADY s idle" "$(mib "$R_RSS2") / $(mib "$R_ANON2") / $(mib "$R_PSS2") (load $R_MEM2_LOAD; ${R_HEAP2:-heap split unknown})" "-"
printf "$fmt" "riklet peak RSS (VmHWM)" "$(mib "$R_HWM")" "-"
printf "$fmt" "conmons: Rss / Pss summed" "$(mib "$R_CM_RSS") / $(mib "$R_CM_PSS") ($R_CM_N)" "$(mib "$B_CM_RSS") / $(mib "$B_CM_PSS") ($B_CM_N)"
printf "$fmt" "riklet CPU idle at $PODS (${STEADY} s)" "$R_CPU % of a core, $R_CPU_MIN ms per minute (load $R_CPU_LOAD)" "-"
printf "$fmt" "  loop turns in that window" "$R_TURNS" "-"
printf "$fmt" "loop lag (riklet ps --json)" "$R_LAG" "-"
printf "$fmt" "API round trip p50 / p99 / max (ms)" "$R_PROBE_P50 / $R_PROBE_P99 / $R_PROBE_MAX ($R_PROBE_N in $LAGPROBE s, load $R_PROBE_LOAD)" "-"
printf "$fmt" "per-instance sweep (GET /metrics)" "$R_SWEEP_MS ms, riklet CPU $R_SWEEP_CPU ms, $R_SWEEP_N instances, $R_SWEEP_BYTES bytes (load $R_SWEEP_LOAD)" "-"
printf "$fmt" "node metrics sample (CPU)" "$R_NODE_US us, $R_NODE_BYTES bytes of JSON" "-"
printf "$fmt" "one more Pod at $PODS (s)" "$R_ONE (network step $R_ONE_NET ms, load $R_ONE_LOAD)" "$B_ONE"
printf "$fmt" "riklet ps / ps --json at $PODS (s)" "$R_PS / $R_PSJ (load $R_PS_LOAD)" "runc list: $B_PS"
printf "$fmt" "kill -9 + restart: all re-adopted (s)" "$R_READOPT (network reconciled: $R_RECONCILED)" "- (no agent)"
printf '| %-40s | %-71s |\n' "  phases" "exec to first log line $R_FIRSTLINE s, to the boot's start $R_PREBOOT s; boot $R_BOOT"
if ((READOPT_RUNS > 1)); then
	for row in "${READOPT_ROWS[@]}"; do printf '| %-40s | %-71s |\n' "  each restart" "$row"; done
fi
printf "$fmt" "  containers changed / RUNNING after" "$R_CHANGED / $R_RUNNING of $N_RUN ($R_RESTARTS restarts)" "-"
printf "$fmt" "  port mappings (DNAT rules) after" "$R_RULES" "-"
printf "$fmt" "teardown of all (s)" "$R_DOWN${R_DOWN_PCT:+ ($R_DOWN_PCT)}${R_DOWN_LOAD:+ (load $R_DOWN_LOAD)}" "$B_DOWN${B_DOWN_LOAD:+ (load $B_DOWN_LOAD)}"
printf "$fmt" "left afterwards" "$R_LEFT" "$B_LEFT"
printf '\n'
if ((${#VARIANTS[@]})); then
	# med V...: the median of the numbers among V (the lower middle one of an even count), or -
	med() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : "-" }'; }
	vfmt='| %-12s | %-30s | %-30s | %-30s | %-34s |\n'
	printf "$vfmt" variant "all re-adopted (s): median, each" "boot began (s): median, each" "boot CPU (ms): median, each" "idle CPU after (% of a core): median, each"
	printf "$vfmt" ------------ ------------------------------ ------------------------------ ------------------------------ ----------------------------------
	for v in "${VARIANTS[@]}"; do
		v=${v%% *}
		# shellcheck disable=SC2086 # (the lists split into their numbers)
		printf "$vfmt" "$v" "$(med ${V_READOPT[$v]}):${V_READOPT[$v]}" "$(med ${V_PREBOOT[$v]}):${V_PREBOOT[$v]}" "$(med ${V_BOOTCPU[$v]}):${V_BOOTCPU[$v]}" \
			"$(med ${V_STEADY[$v]}):${V_STEADY[$v]}"
	done
	printf '\n'
fi
((R_CHANGED == 0 && R_RUNNING == N_RUN)) || die "riklet lost or restarted Pods across its restart"
[[ $NETWORK != bridge || $R_RULES == "$N_RUN" ]] || die "riklet has $R_RULES port mappings after its restart, not $N_RUN"
((!TEARDOWN)) || [[ $R_LEFT == nothing ]] || die "riklet left $R_LEFT"
exit 0
