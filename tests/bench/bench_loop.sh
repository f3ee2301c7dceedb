#!/usr/bin/env bash
# bench_loop.sh — riklet's loop lag under Pod churn (a benchmark, not a test: it prints numbers and
# fails only when it cannot measure).
#
#   sudo tests/bench/bench_loop.sh [RIKLET]     RIKLET defaults to $RIKLET or build-bench/riklet
#
# Environment: ROUNDS (default 5) rounds of PODS (default 10) Pods created at once then removed
# at once; KEEP_TMP=1 keeps the temporary directory.
#
# riklet --standalone (--network none, a local OCI layout image, its own state dir and runc root)
# runs the churn while `riklet ps --json` is sampled every 0.5 s: the loop lag is the longest time
# one loop turn kept everything else waiting (core.loop_stats, written to STATE/agent.json by the
# daemon every 5 s). Prints the agent's lag max and recent max at the end of each round, the
# slowest step it named, the number of turns over 100 ms and the log's warnings about them.
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
: "${RIKLET_BUILD_DIR:=$SRC_DIR/build-bench}"
export RIKLET_BUILD_DIR
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh"

ROUNDS=${ROUNDS:-5}
PODS=${PODS:-10}
bench_init "runc, overlay mounts" runc umoci jq

MAN=$T/manifests STATE=$T/state RROOT=$T/runc LOG=$T/riklet.log
mkdir -p "$MAN" "$STATE" "$RROOT"
say "# building the busybox image (offline, umoci)"
mkimage "$T/img:bench" >&2 || die "mkimage failed"
manifest() {
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"oci:%s"}]}}\n' \
		"$1" "$T/img:bench"
}

"$RIKLET" --standalone "$MAN" --state-dir "$STATE" --runc-root "$RROOT" --network none \
	--log-format text --stop-grace 2 >"$LOG" 2>&1 </dev/null &
RPID=$!
bench_stop() {
	rm -f -- "$MAN"/*.json
	wait_for 60 bash -c "! ls '$STATE/records/'*.json >/dev/null 2>&1 || ! jq -e '.instances[] | select(.status != \"TERMINATED\" and .status != \"FAILED\")' <<<\"\$('$RIKLET' ps --json --state-dir '$STATE' 2>/dev/null)\" >/dev/null"
	kill -TERM "$RPID" 2>/dev/null
	wait "$RPID" 2>/dev/null
	for id in $(runc --root "$RROOT" list -q 2>/dev/null); do runc --root "$RROOT" delete -f "$id" >/dev/null 2>&1; done
}
on_exit bench_stop
wait_for 10 grep -q "watching" "$LOG" || { diag_file "$LOG" >&2; die "riklet did not start"; }

ps_json() { "$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null; }
count() { ps_json | jq --arg s "$1" '[.instances[] | select(.status == $s)] | length'; }
all_in() { [[ $(count "$1") -ge $2 ]]; }

printf '%-6s %-6s %-10s %-14s %-14s %s\n' round pods seconds "lag max ms" "lag recent ms" "slowest step" >&2
start=$EPOCHREALTIME
for ((r = 1; r <= ROUNDS; r++)); do
	t0=$EPOCHREALTIME
	for ((i = 1; i <= PODS; i++)); do manifest "r$r-p$i" >"$MAN/r$r-p$i.json"; done
	wait_for 180 all_in RUNNING $((PODS)) || { diag_file "$LOG" 20 >&2; die "round $r: Pods did not all reach RUNNING"; }
	rm -f -- "$MAN"/*.json
	wait_for 180 all_in TERMINATED $((r * PODS)) || { diag_file "$LOG" 20 >&2; die "round $r: Pods were not all TERMINATED"; }
	sleep 5.5 # agent.json is rewritten every 5 s
	a=$(ps_json | jq -c .agent)
	printf '%-6s %-6s %-10.1f %-14.1f %-14.1f %s\n' "$r" "$PODS" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" \
		"$(jq -r .loop.lag_max_ms <<<"$a")" "$(jq -r .loop.lag_recent_ms <<<"$a")" "$(jq -r '.loop.slowest // "-"' <<<"$a")"
done
a=$(ps_json | jq -c .agent)
say "# $((ROUNDS * PODS)) Pods created and destroyed in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
say "# loop: $(jq -r '"max lag \(.loop.lag_max_ms) ms over \(.loop.turns) turns, \(.loop.slow_turns) turns over 100 ms; worker pool: \(.pool.threads) threads, \(.pool.done) jobs"' <<<"$a")"
say "# slow-turn warnings in the log: $(grep -c 'event loop was blocked' "$LOG")"
grep 'event loop was blocked' "$LOG" | head -5 | sed 's/^/#   /' >&2
