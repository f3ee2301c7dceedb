#!/usr/bin/env bash
# bench_mem.sh — riklet's memory in scheduler mode and standalone mode, idle and with PODS running
# Pods, and in interLink mode idle, beside the floor (a do-nothing main() linked with the same libraries). A benchmark, not a
# test: it prints a table and fails only when it cannot measure.
#
#   sudo tests/bench/bench_mem.sh [RIKLET]       RIKLET defaults to $RIKLET or build-bench/riklet
#
# Environment: PODS (default 50); BEFORE=/path/to/another/riklet measures that binary the same
# way, in the same run (an older build: before/after); BEFORE_LUA=DIR the same binary with the Lua
# tree DIR (e.g. `git archive main lua policies | tar -x -C /tmp/main`, then DIR=/tmp/main/lua);
# IDLE_RUNS=N measures only idle scheduler mode, N runs of each binary / Lua tree interleaved, and
# prints the medians (and the range) beside the floor, and each mapping's Rss (libc, riklet, [heap]...):
# the quick before/after; GCS="PAUSE,STEPMUL ..." (default
# "100,200 200,200 100,400") measures scheduler mode once per LuaJIT collector setting
# (RIKLET_LUA_GC), idle and with GC_PODS (default 20) Pods, with the CPU time riklet used for the
# whole run (start, register, create, destroy); SETTLE (default 5) seconds to wait before each
# reading.
#
# Each reading: VmRSS and RssAnon (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of riklet.
#  - scheduler mode: `riklet --scheduler` registered with tests/sched/scheduler.py (Debian's
#    grpcio), node metrics sent, idle; then PODS busybox Pods sent as CREATE instructions (image
#    from a local docker-registry), all RUNNING; then destroyed.
#  - standalone mode: `riklet --standalone DIR`, idle; then PODS manifests (a local OCI layout).
#  - interLink mode: `riklet --interlink 127.0.0.1:PORT` (libmicrohttpd loaded), idle, once it answers.
#  - the floor: main() { print VmRSS } linked (--no-as-needed) with the NEEDED libraries of the
#    binary, and the same plus libcurl (what an https:// scheduler, or the older build in scheduler
#    mode, loads with dlopen).
# Both modes run with --network none (the network adds nothing to riklet's own memory but time).
# Targets (issue 12): idle scheduler mode RSS <= 4 MiB, anonymous <= 1 MiB.
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
: "${RIKLET_BUILD_DIR:=$SRC_DIR/build-bench}"
export RIKLET_BUILD_DIR RIKLET_SRC_DIR=$SRC_DIR
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}"
source "$SRC_DIR/tests/lib/registry.sh"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh"

PODS=${PODS:-50}
SETTLE=${SETTLE:-5}
GCS=${GCS:-"100,200 200,200 100,400"}
GC_PODS=${GC_PODS:-20}
bench_init "runc, overlay mounts" runc conmon umoci skopeo jq curl protoc docker-registry cc
"$PYTHON" -c 'import grpc, google.protobuf' 2>/dev/null || die "needs python3-grpcio and python3-protobuf for $PYTHON"
# what is measured: binaries, each with a Lua tree ("" = its own)
BINS=("$RIKLET") LUAS=("")
[[ -n ${BEFORE:-} ]] && { [[ -x $BEFORE ]] || die "BEFORE=$BEFORE is not executable"; BINS+=("$BEFORE") LUAS+=(""); }
if [[ -n ${BEFORE_LUA:-} ]]; then
	[[ -f $BEFORE_LUA/riklet/main.lua ]] || die "BEFORE_LUA=$BEFORE_LUA holds no riklet/main.lua"
	BINS+=("$RIKLET") LUAS+=("$BEFORE_LUA")
fi
LUA_DIR=
label() { printf '%s%s' "${BINS[$1]}" "${LUAS[$1]:+ with the Lua tree ${LUAS[$1]}}"; }

CMD='["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
say "# image: a local OCI layout and the same pushed to a local registry"
bench_image --cmd "$CMD"

status_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
pss_kib() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }
reading() { printf '%s %s %s' "$(status_kib "$1" VmRSS)" "$(status_kib "$1" RssAnon)" "$(pss_kib "$1")"; }
# maps_kib PID: "name=KiB ..." the Rss of each file mapped (all its mappings), [heap], [stack], and
# the rest of the anonymous memory as [anon] (thread stacks, other malloc arenas, LuaJIT's machine code)
maps_kib() {
	awk '/^[0-9a-f]+-[0-9a-f]+ / { n = $6 == "" ? "[anon]" : $6; sub(/.*\//, "", n); if (n ~ /^riklet/) n = "riklet" }
		$1 == "Rss:" { r[n] += $2 } END { for (n in r) if (r[n] > 0) printf "%s=%d ", n, r[n] }' "/proc/$1/smaps"
}
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"; }

RPID= SPID=
stop_all() {
	[[ -n $RPID ]] && kill -TERM "$RPID" 2>/dev/null && { wait_for 15 bash -c "! kill -0 $RPID 2>/dev/null" || kill -KILL "$RPID"; }
	[[ -n $RPID ]] && wait "$RPID" 2>/dev/null
	[[ -n $SPID ]] && { kill -KILL "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
	RPID= SPID=
	local id
	for id in $(runc --root "$T/runc" list -q 2>/dev/null); do runc --root "$T/runc" delete -f "$id" >/dev/null 2>&1; done
}
on_exit stop_all

# start_riklet BIN LOG ARGS...: riklet in its own state dir (fresh each time)
start_riklet() {
	local bin=$1 log=$2
	shift 2
	rm -rf "$T/state" && mkdir -p "$T/state" "$T/runc"
	RIKLET_LUA_DIR=$LUA_DIR "$bin" --state-dir "$T/state" --runc-root "$T/runc" --network none --log-format text --stop-grace 2 \
		--insecure-registries "$REGISTRY" "$@" >"$log" 2>&1 </dev/null &
	RPID=$!
}

# ---- scheduler mode --------------------------------------------------------------------------
EV=$T/events.jsonl
start_sched() {
	local pf=$T/sched.$RANDOM.json
	: >"$EV"
	"$PYTHON" "$SRC_DIR/tests/sched/scheduler.py" --port-file "$pf" --events "$EV" >>"$T/sched.log" 2>&1 </dev/null &
	SPID=$!
	wait_for 20 test -s "$pf" || die "scheduler.py did not start"
	SCHED=http://127.0.0.1:$(jq -r .grpc "$pf") CONTROL=http://127.0.0.1:$(jq -r .control "$pf")
}
ev_n() { jq -r --arg s "$1" 'select(.kind == "instance" and .status == $s) | .instance_id' "$EV" | sort -u | grep -c . || true; }
ev_ge() { (($(ev_n "$1") >= $2)); }
workers_ge() { (($(jq -r 'select(.kind == "worker") | .kind' "$EV" | grep -c .) >= $1)); }
instruct_all() { # instruct_all ACTION: one instruction per Pod, in one batch
	local def items
	def=$(jq -cn --arg img "$REGISTRY/busybox:latest" '{apiVersion: "v1", kind: "Pod", name: "mem", replicas: null,
		spec: {containers: [{name: "c", image: $img, env: null, ports: null}], function: null}}')
	items=$(jq -cn --arg d "$def" --arg a "$1" --argjson n "$PODS" \
		'{batch: [range(1; $n + 1) | {instance_id: ("mem-\(.)"), definition: $d, action: $a}]}')
	curl -sf -X POST -d "$items" "$CONTROL/instruct" >/dev/null || die "scheduler.py refused the instructions"
}

# sched_run BIN [GC] [PODS?]: RES="idle_rss idle_anon idle_pss [pods_rss pods_anon pods_pss]" (KiB),
# CPU=seconds riklet used until its Pods were destroyed
sched_run() {
	local bin=$1 gc=${2:-} pods=${3:-1} log=$T/riklet-sched.log
	start_sched
	RIKLET_LUA_GC=$gc start_riklet "$bin" "$log" --scheduler "$SCHED" --hostname bench-mem --metrics-interval 15
	wait_for 30 workers_ge 1 || { diag_file "$log" 20 >&2; die "riklet did not register (metrics)"; }
	sleep "$SETTLE"
	local idle
	idle=$(reading "$RPID")
	MAPS=$(maps_kib "$RPID")
	if ((pods)); then
		instruct_all CREATE
		wait_for 300 ev_ge RUNNING "$PODS" || { diag_file "$log" 20 >&2; die "not all $PODS Pods RUNNING"; }
		sleep "$SETTLE"
		RES="$idle $(reading "$RPID")"
		instruct_all DESTROY
		wait_for 300 ev_ge TERMINATED "$PODS" || say "# warning: not all Pods TERMINATED"
	else
		RES=$idle
	fi
	CPU=$(cpu_s "$RPID")
	stop_all
}

# ---- standalone mode -------------------------------------------------------------------------
stand_run() {
	local bin=$1 log=$T/riklet-standalone.log man=$T/manifests i
	rm -rf "$man" && mkdir -p "$man"
	start_riklet "$bin" "$log" --standalone "$man"
	wait_for 20 grep -q watching "$log" || { diag_file "$log" 20 >&2; die "standalone riklet did not start"; }
	sleep "$SETTLE"
	local idle
	idle=$(reading "$RPID")
	for ((i = 1; i <= PODS; i++)); do
		printf '{"apiVersion":"v1","kind":"Pod","name":"m%d","spec":{"containers":[{"name":"c","image":"oci:%s:latest"}]}}\n' \
			"$i" "$T/layout" >"$man/.m$i" && mv "$man/.m$i" "$man/m$i.json"
	done
	running() { (($(grep -c -- '-> RUNNING' "$log") >= PODS)); }
	wait_for 300 running || { diag_file "$log" 20 >&2; die "not all $PODS standalone Pods RUNNING"; }
	sleep "$SETTLE"
	RES="$idle $(reading "$RPID")"
	rm -f "$man"/*.json
	gone() { (($(grep -c -- '-> TERMINATED' "$log") >= PODS)); }
	wait_for 300 gone || say "# warning: not all standalone Pods TERMINATED"
	stop_all
}

# ---- interLink mode ---------------------------------------------------------------------------
il_run() {
	local bin=$1 log=$T/riklet-interlink.log port
	port=$(free_port) || die "no free port"
	start_riklet "$bin" "$log" --interlink "127.0.0.1:$port"
	wait_for 20 curl -s -o /dev/null "http://127.0.0.1:$port/" || { diag_file "$log" 20 >&2; die "interLink riklet did not answer"; }
	sleep "$SETTLE"
	RES=$(reading "$RPID")
	stop_all
}

# ---- the floor ---------------------------------------------------------------------------------
printf '#include <stdio.h>\n#include <string.h>\nint main(void) { char b[64]; FILE *f = fopen("/proc/self/status", "r");\n while (fgets(b, sizeof b, f)) if (!strncmp(b, "VmRSS:", 6) || !strncmp(b, "RssAnon:", 8)) fputs(strchr(b, 58) + 1, stdout); return 0; }\n' >"$T/floor.c"
floor() { # floor BIN [extra-lib]: "rss anon" KiB of main() linked with BIN's NEEDED libraries
	local libs
	objdump -p "$1" >/dev/null 2>&1 || return 1 # not an ELF file (a wrapper script): no floor
	mapfile -t libs < <(objdump -p "$1" | awk '$1 == "NEEDED" { sub(/^lib/, "", $2); sub(/\.so.*/, "", $2); print $2 }')
	[[ -n ${2:-} ]] && libs+=("$2")
	cc -O2 -o "$T/floor" "$T/floor.c" -Wl,--no-as-needed "${libs[@]/#/-l}" 2>/dev/null || return 1
	"$T/floor" | awk '{ printf "%s ", $1 } END { print "" }'
}

mib() { if [[ -n $1 ]]; then awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; else printf -- -; fi; }
row() { printf '| %-52s | %-10s | %-10s | %-10s |\n' "$@"; }
r3() { read -r a b c <<<"$2"; row "$1" "$(mib "$a")" "$(mib "$b")" "$(mib "$c")"; }

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n ${IDLE_RUNS:-} ]]; then
	declare -A RSS ANON PSS MAP MAPNAMES
	for ((r = 1; r <= IDLE_RUNS; r++)); do
		for i in "${!BINS[@]}"; do
			say "# run $r/$IDLE_RUNS: $(label "$i"): idle scheduler mode"
			LUA_DIR=${LUAS[$i]}
			sched_run "${BINS[$i]}" "" 0
			read -r a b c <<<"$RES"
			RSS[$i]+="$a " ANON[$i]+="$b " PSS[$i]+="$c "
			for m in $MAPS; do MAP["$i ${m%%=*}"]+="${m#*=} " MAPNAMES[${m%%=*}]=1; done
		done
	done
	LUA_DIR=
	med() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (%.2f-%.2f)", m / 1024, v[1] / 1024, v[NR] / 1024 }'; }
	read -r F_RSS F_ANON < <(floor "$RIKLET")
	printf '\nidle scheduler mode, registered, --network none: median (range) of %d runs each, interleaved; load %s at the start, %s at the end; %s\n\n' \
		"$IDLE_RUNS" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(uname -r)"
	printf '| %-70s | %-20s | %-20s | %-20s |\n' "riklet (MiB)" RSS anon Pss "$(printf -- '-%.0s' {1..70})" "--------------------" "--------------------" "--------------------"
	for i in "${!BINS[@]}"; do
		printf '| %-70s | %-20s | %-20s | %-20s |\n' "$(label "$i")" "$(med "${RSS[$i]}")" "$(med "${ANON[$i]}")" "$(med "${PSS[$i]}")"
	done
	printf '| %-70s | %-20s | %-20s | %-20s |\n\n' "floor: main() with the same libraries" "$(mib "$F_RSS")" "$(mib "$F_ANON")" -
	# where the RSS is: each mapping's Rss, median (range) in KiB, one column per binary / Lua tree
	kmed() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { if (!NR) { printf "-"; exit } m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d (%d-%d)", m, v[1], v[NR] }'; }
	printf '| %-24s |' "Rss by mapping (KiB)"
	for i in "${!BINS[@]}"; do printf ' %-20s |' "#$((i + 1))"; done
	printf '\n| %-24s |' "------------------------"
	for i in "${!BINS[@]}"; do printf ' %-20s |' "--------------------"; done
	printf '\n'
	for n in $(printf '%s\n' "${!MAPNAMES[@]}" | sort); do
		printf '| %-24s |' "$n"
		for i in "${!BINS[@]}"; do printf ' %-20s |' "$(kmed "${MAP["$i $n"]:-}")"; done
		printf '\n'
	done
	for i in "${!BINS[@]}"; do printf '#%d: %s\n' "$((i + 1))" "$(label "$i")"; done
	printf '\n'
	exit 0
fi

for i in "${!BINS[@]}"; do
	bin=${BINS[$i]} LUA_DIR=${LUAS[$i]}
	say "# $(label "$i"): scheduler mode"
	sched_run "$bin" "" 1
	S=$RES
	say "# $bin: standalone mode"
	stand_run "$bin"
	A=$RES
	say "# $bin: interLink mode"
	il_run "$bin"
	I=$RES
	read -r F_RSS F_ANON < <(floor "$bin")
	read -r FC_RSS FC_ANON < <(floor "$bin" curl)
	printf '\n%s (%s), %d Pods, %s, load %s\n\n' "$(label "$i")" "$("$bin" version 2>/dev/null | head -n 1)" "$PODS" "$(uname -r)" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
	row "riklet (MiB)" RSS anon Pss
	row "$(printf -- '-%.0s' {1..52})" ---------- ---------- ----------
	r3 "scheduler mode, idle (target RSS <= 4, anon <= 1)" "$(cut -d' ' -f1-3 <<<"$S")"
	r3 "scheduler mode, $PODS Pods" "$(cut -d' ' -f4-6 <<<"$S")"
	r3 "standalone, idle" "$(cut -d' ' -f1-3 <<<"$A")"
	r3 "standalone, $PODS Pods" "$(cut -d' ' -f4-6 <<<"$A")"
	r3 "interLink mode, idle" "$I"
	row "floor: main() with the same libraries" "$(mib "$F_RSS")" "$(mib "$F_ANON")" -
	row "floor + libcurl (https://, or dlopen'ed)" "$(mib "$FC_RSS")" "$(mib "$FC_ANON")" -
	row "scheduler mode idle above the floor" "$(mib ${F_RSS:+$(($(cut -d' ' -f1 <<<"$S") - F_RSS))})" \
		"$(mib ${F_ANON:+$(($(cut -d' ' -f2 <<<"$S") - F_ANON))})" -
	printf '\n'
done
LUA_DIR=

printf 'LuaJIT collector (RIKLET_LUA_GC=PAUSE,STEPMUL), %s, scheduler mode, idle then %d Pods:\n\n' "$RIKLET" "$GC_PODS"
grow() { printf '| %-24s | %-10s | %-10s | %-10s | %-10s | %-10s |\n' "$@"; }
grow "setting" "idle RSS" "idle anon" "Pods RSS" "Pods anon" "CPU s"
grow "$(printf -- '-%.0s' {1..24})" ---------- ---------- ---------- ---------- ----------
ALL_PODS=$PODS PODS=$GC_PODS
for gc in $GCS; do
	sched_run "$RIKLET" "$gc" 1
	read -r a b _ d e _ <<<"$RES"
	grow "$gc$([[ $gc == 100,200 ]] && echo ' (riklet)')$([[ $gc == 200,200 ]] && echo ' (LuaJIT)')" \
		"$(mib "$a")" "$(mib "$b")" "$(mib "$d")" "$(mib "$e")" "$CPU"
done
PODS=$ALL_PODS
printf '\n'
exit 0
