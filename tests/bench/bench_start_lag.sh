#!/usr/bin/env bash
# bench_start_lag.sh — riklet's loop while it starts PODS Pods at once (issue 12: turns of 31.9 s
# and 19.1 s at 1,000), before/after interleaved in one invocation (a benchmark, not a test).
#
#   sudo tests/bench/bench_start_lag.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: PODS (default 300); NETWORK bridge (default) or none; ROUNDS (default 1);
# BEFORE_RIKLET=BINARY (an older build, with its own Lua tree beside it): each round runs it, then
# RIKLET, on the same Pods' names and image, so both see the same load; ALT_ENV="VAR=VALUE ..." a
# third variant (RIKLET with that environment, e.g. RIKLET_LOOP_BUDGET_MS=5); BENCH_LOCK=FILE: the lock
# is held for the whole run (tests/bench/lib.sh). KEEP_TMP=1 keeps the temporary directory.
# RUN_LIST="LABEL=BINARY[,VAR=VALUE...] ..." instead: these variants in this order, each round (e.g.
# one with RIKLET_LUA_DIR=<another Lua tree> beside the same binary).
#
# Per variant and round, riklet --standalone in a private network + mount namespace
# (tests/lib/private_ns.sh), image from a loopback registry, pulled by a warm-up Pod:
#  - PODS manifests renamed into the directory by one mv; time until every create ended (RUNNING
#    or FAILED: counted);
#  - meanwhile an API round trip every 20 ms (GET of an unknown path on --metrics-listen, answered
#    404 by the loop): p50 / p99 / max over the start;
#  - the loop's longest turn and turns over 100 ms (STATE/agent.json, since riklet started), the
#    log's slow-turn warnings (their longest), riklet's peak RSS (VmHWM);
#  - teardown: every manifest removed by one rm, time until the last TERMINATED; the peak RSS again;
#    riklet's CPU time (user + system) until the rm and during the teardown; the SIGKILLs sent
#    (a container seen ending only after its --stop-grace of 2 s: each one more runc call).
# The load average is printed beside every figure.

# shellcheck source=../lib/private_ns.sh
source "$(dirname "$0")/../lib/private_ns.sh"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$SRC_DIR/build/riklet}}"
source "$SRC_DIR/tests/lib/registry.sh"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh"

PODS=${PODS:-300}
NETWORK=${NETWORK:-bridge}
ROUNDS=${ROUNDS:-1}
METRICS_PORT=${METRICS_PORT:-19465}
BENCH_SAY_PREFIX='# '
bench_init --ns "runc, overlay mounts, network namespaces" runc conmon umoci skopeo jq ip docker-registry
[[ -z ${BEFORE_RIKLET:-} || -x $BEFORE_RIKLET ]] || die "no riklet binary at BEFORE_RIKLET=$BEFORE_RIKLET"
RPID= RROOT=
# riklet's CPU time so far (user + system, seconds)
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"; }
kill_riklet() { [[ -n $RPID ]] && kill -KILL "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null; RPID=; return 0; }
cleanup_runc() {
	[[ -n $RROOT && -d $RROOT ]] || return 0
	runc --root "$RROOT" list -q 2>/dev/null | xargs -r -P 4 -I{} runc --root "$RROOT" delete -f {} >/dev/null 2>&1
}
on_exit cleanup_runc
on_exit kill_riklet
on_exit bench_lock_drop
bench_lock_take
registry_start >&2 || die "docker-registry did not start"
mkimage "$T/layout:latest" >&2 || die "mkimage failed"
mkimage_push "$T/layout:latest" "$REGISTRY/busybox:latest" || die "push failed"
IMAGE=$REGISTRY/busybox:latest
load1() { cut -d' ' -f1 /proc/loadavg; }
manifest() {
	local ports=
	[[ $NETWORK == bridge ]] && ports=$(printf ',"ports":{"port":%d,"target_port":80,"protocol":"TCP"}' $((20000 + $2)))
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"%s"%s}]}}\n' \
		"$1" "$IMAGE" "$ports"
}
# the probe: an API round trip every 20 ms until the file $2 exists -> "N P50 P99 MAX"
probe() {
	/usr/bin/python3 - "$METRICS_PORT" "$1" <<'PY'
import http.client, os, sys, time
port, stop = int(sys.argv[1]), sys.argv[2]
v = []
c = None
while not os.path.exists(stop):
    try:
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        a = time.monotonic()
        c.request("GET", "/lag-probe")
        c.getresponse().read()
        v.append((time.monotonic() - a) * 1000)
    except Exception:
        c = None
    time.sleep(0.02)
v = sorted(v) or [0]
k = lambda p: v[max(0, min(len(v) - 1, int(p / 100 * len(v) + 0.999999) - 1))]
print("%d %.1f %.1f %.1f" % (len(v), k(50), k(99), v[-1]))
PY
}
count() { grep -cF -- "$2" "$1" 2>/dev/null; }
wait_count() { # LOG PATTERN N TIMEOUT
	local i
	for ((i = 0; i < $4 * 2; i++)); do
		(($(count "$1" "$2") >= $3)) && return 0
		kill -0 "$RPID" 2>/dev/null || { diag_file "$1" 30 >&2; die "riklet died"; }
		sleep 0.5
	done
	diag_file "$1" 30 >&2
	die "only $(count "$1" "$2") of $3 '$2' lines within $4 s"
}

ROWS=()
run_one() { # LABEL BINARY ROUND [VAR=VALUE...]
	local label=$1 bin=$2 d=$T/run-$1-$3
	local man=$d/manifests stage=$d/stage state=$d/state log=$d/riklet.log
	RROOT=$d/runc
	mkdir -p "$man" "$stage" "$state" "$RROOT"
	env "${@:4}" "$bin" --standalone "$man" --state-dir "$state" --runc-root "$RROOT" --netns-dir "$d/netns" --network "$NETWORK" \
		--insecure-registries "$REGISTRY" --max-instances $((PODS + 10)) --stop-grace 2 --log-format text \
		--metrics-listen "127.0.0.1:$METRICS_PORT" >"$log" 2>&1 </dev/null &
	RPID=$!
	wait_for 20 grep -q "watching" "$log" || { diag_file "$log" >&2; die "$label: riklet did not start"; }
	manifest warm 0 >"$stage/warm.json" && mv "$stage/warm.json" "$man/"
	wait_count "$log" "instance warm (Pod warm): CREATING -> RUNNING" 1 180
	local i
	for ((i = 1; i <= PODS; i++)); do manifest "$(printf 'pod-%04d' "$i")" "$i" >"$stage/$(printf 'pod-%04d' "$i").json"; done
	local l0 t0 t1 load0 hwm
	l0=$(load1)
	rm -f "$d/stop"
	probe "$d/stop" >"$d/probe" &
	local ppid=$!
	sleep 1
	t0=$EPOCHREALTIME
	mv "$stage"/pod-*.json "$man/"
	wait_count "$log" ": CREATING -> " $((PODS + 1)) $((PODS * 2 + 300))
	t1=$EPOCHREALTIME
	touch "$d/stop"
	wait "$ppid"
	hwm=$(awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$RPID/status")
	local failed start n p50 p99 pmax
	failed=$(grep -cF -- "-> FAILED" "$log")
	start=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	read -r n p50 p99 pmax <"$d/probe"
	sleep 5.5 # agent.json: rewritten every 5 s
	local lag slowest warn
	lag=$("$RIKLET" ps --json --state-dir "$state" 2>/dev/null | jq -r '.agent.loop | "\(.lag_max_ms | floor) ms (its slowest step: \(.slowest // "-")), \(.slow_turns) turns over 100 ms of \(.turns)"')
	warn=$(grep -oE 'event loop was blocked for [0-9]+ ms' "$log" | awk '{ print $6 }' | sort -g | tail -n 1)
	slowest=$(grep 'event loop was blocked' "$log" | awk '{ for (i = 1; i <= NF; i++) if ($i == "for") { print $(i + 1) "\t" $0; break } }' |
		sort -g | tail -n 1 | cut -f2 | sed 's/.*longest step was //' | cut -c1-160)
	local l1 dl0 d0 down
	l1=$(load1)
	dl0=$(load1)
	local c0
	c0=$(cpu_s "$RPID")
	d0=$EPOCHREALTIME
	rm -f "$man"/*.json
	wait_count "$log" "DESTROYING -> " $((PODS + 1)) $((PODS * 2 + 300))
	down=$(awk -v a="$d0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	local hwm2 c1
	c1=$(cpu_s "$RPID")
	hwm2=$(awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$RPID/status")
	local row="$label round $3: all $PODS created in $start s ($failed FAILED), load $l0 -> $l1; API p50/p99/max $p50/$p99/$pmax ms ($n requests); longest turn $lag (longest warned: ${warn:-none} ms: ${slowest:--}); peak RSS $hwm MiB (with the teardown: $hwm2); teardown $down s ($(count "$log" "sending SIGKILL") SIGKILLs sent in the run), riklet CPU ${c0} s to the rm, +$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", b - a }') s in the teardown (load $dl0 -> $(load1))"
	say "$row"
	ROWS+=("$row")
	kill -TERM "$RPID" 2>/dev/null
	wait "$RPID" 2>/dev/null
	RPID=
	cleanup_runc
}
for ((r = 1; r <= ROUNDS; r++)); do
	if [[ -n ${RUN_LIST:-} ]]; then
		# RUN_LIST="label=binary[,VAR=VALUE] ...": these variants, in this order
		for spec in $RUN_LIST; do
			lab=${spec%%=*} rest=${spec#*=}
			IFS=, read -r -a parts <<<"$rest"
			run_one "$lab" "${parts[0]}" "$r" "${parts[@]:1}"
		done
		continue
	fi
	[[ -n ${BEFORE_RIKLET:-} ]] && run_one before "$BEFORE_RIKLET" "$r"
	run_one now "$RIKLET" "$r"
	if [[ -n ${ALT_ENV:-} ]]; then
		read -r -a alt_env <<<"$ALT_ENV"
		run_one alt "$RIKLET" "$r" "${alt_env[@]}"
	fi
done
printf '\n%d Pods at once, --network %s, %s%s\n' "$PODS" "$NETWORK" "$(date -u +%Y-%m-%dT%H:%MZ)" "${ALT_ENV:+, alt: $ALT_ENV}"
printf '%s\n' "${ROWS[@]}"
