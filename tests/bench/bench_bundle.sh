#!/usr/bin/env bash
# bench_bundle.sh — where the gap between riklet's conmon + `runc run` and the bare one comes from:
# bare conmon + riklet-runc-run starts (the commands bench_pods.sh times) on bundles that differ in
# one thing at a time (a benchmark, not a test: it prints medians, fails only when it cannot measure).
#
#   sudo tests/bench/bench_bundle.sh [RIKLET]    RIKLET defaults to $RIKLET or build/riklet
#
# A standalone riklet (--network bridge, in this script's private network + mount namespace)
# starts one busybox Pod; its config.json is copied, then riklet stops. The variants, each timed
# RUNS (default 12) times, interleaved run by run (one start of every variant per round):
#   bare        umoci's config, rootfs a plain directory (bench_pods.sh's bundle)
#   bare+ovl    umoci's config, rootfs a fresh overlay mount (lower: the plain rootfs), as riklet's
#   rk          riklet's config (its netns path: a namespace made here), on a fresh overlay
#   rk+plain    riklet's config on the plain directory
#   rk-KEY      riklet's config with one field group (a key that differs from umoci's) reverted to
#               umoci's, on a fresh overlay
#   riklet      one riklet Pod per round (the same riklet, kept running): its "conmon + runc run"
#               step from its log, the Pod waited for with one grep per 100 ms poll; RK_PIPELINE=1
#               adds one more Pod per round waited for as bench_pods.sh did before d2ef88e (two
#               subshells of grep | grep | tail per poll): what that polling takes from the start
# Start = conmon spawned until the container's pid file or conmon's sync line (whichever first);
# `runc delete -f` and the overlay mount between runs are not timed. Medians, p90, min, load.
# VARIANTS=REGEX keeps the variants whose name matches; BENCH_RAW=1 prints every run.

set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/private_ns.sh"
[[ -n ${RK_PRIVATE_NS:-} ]] || { echo "bench_bundle: needs unshare -n -m (root)" >&2; exit 1; }
ip link set lo up
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
: "${RIKLET_BUILD_DIR:=$SRC_DIR/build}"
export RIKLET_BUILD_DIR
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh" # ms, bench_sync_pid
RUNS=${RUNS:-12}
bench_init "runc" runc conmon umoci jq awk
SHIM=${RIKLET_RUNC_RUN:-$(dirname "$RIKLET")/riklet-runc-run}
[[ -x $RIKLET && -x $SHIM ]] || die "no riklet / riklet-runc-run at $RIKLET, $SHIM"
RUNC_BIN=$(command -v runc)

MAN=$T/manifests STATE=$T/state RROOT=$T/runc-riklet BROOT=$T/runc-bare LOG=$T/riklet.log
mkdir -p "$MAN" "$STATE" "$RROOT" "$BROOT" "$T/stage"
say "# building the busybox image (offline, umoci)"
mkimage "$T/img:bench" >&2 || die "mkimage failed"
BUNDLE=$T/bundle
umoci unpack --image "$T/img:bench" "$BUNDLE" >/dev/null || die "umoci unpack failed"
jq '.process.terminal = false' "$BUNDLE/config.json" >"$T/umoci.json" || die "jq failed"

# --- riklet's config for one Pod -----------------------------------------------------------------
"$RIKLET" --standalone "$MAN" --state-dir "$STATE" --runc-root "$RROOT" --network bridge \
	--netns-dir "$T/netns" --bridge rkbench0 --pod-cidr 10.97.0.0/16 --log-format text --stop-grace 5 \
	>"$LOG" 2>&1 </dev/null &
RPID=$!
stop_riklet() {
	rm -f "$MAN"/*.json
	sleep 1
	kill -TERM "$RPID" 2>/dev/null
	wait_for 10 bash -c "! kill -0 $RPID 2>/dev/null" || kill -KILL "$RPID" 2>/dev/null
	wait "$RPID" 2>/dev/null
}
cleanup_runc() { for id in $(runc --root "$BROOT" list -q 2>/dev/null); do runc --root "$BROOT" delete -f "$id" >/dev/null 2>&1; done; }
on_exit cleanup_runc
on_exit stop_riklet
wait_for 60 grep -q watching "$LOG" || { diag_file "$LOG" >&2; die "riklet did not start"; }
printf '{"apiVersion":"v1","kind":"Pod","name":"cfg","spec":{"containers":[{"name":"main","image":"oci:%s:bench"}]}}\n' \
	"$T/img" >"$T/stage/cfg.json" && mv "$T/stage/cfg.json" "$MAN/cfg.json"
wait_for 120 grep -q "instance cfg (.*-> RUNNING" "$LOG" || { diag_file "$LOG" >&2; die "the Pod did not run"; }
RKCFG=$(find "$STATE" -path '*/main/config.json' | head -n 1)
[[ -f $RKCFG ]] || die "no config.json under $STATE"
cp "$RKCFG" "$T/riklet.json"
rm -f "$MAN/cfg.json"
wait_for 30 grep -q "instance cfg (.*-> TERMINATED" "$LOG" || die "the Pod did not end"

# the netns riklet's config joins: a persistent one made here (riklet's went with its Pod)
touch "$T/pod.net" && unshare --net="$T/pod.net" true || die "cannot make a network namespace"
on_exit "umount $T/pod.net"
jq --arg ns "$T/pod.net" '(.linux.namespaces[] | select(.type == "network") | .path) = $ns' \
	"$T/riklet.json" >"$T/rk.json" || die "jq failed"
say "# riklet's config against umoci's (top-level and second-level keys that differ):"
KEYS=$(jq -rn --slurpfile a "$T/umoci.json" --slurpfile b "$T/rk.json" '
	[($a[0], $b[0]) | paths(type != "object") | .[0:2]] | unique | map(select(
		(. as $p | $a[0] | getpath($p)) != (. as $p | $b[0] | getpath($p)))) | .[] | join(".")')
say "$(jq -rn --slurpfile a "$T/umoci.json" --slurpfile b "$T/rk.json" --arg k "$KEYS" '
	$k | split("\n")[] | select(length > 0) as $key | ($key | split(".")) as $p |
	"#   \($key): umoci \($a[0] | getpath($p) | tojson | .[0:160]) / riklet \($b[0] | getpath($p) | tojson | .[0:160])"')"

# --- the variants -------------------------------------------------------------------------------
declare -a V_NAME=() V_ROOT=()
declare -A V_MS=()
variant() { # variant NAME CONFIG ROOT (plain | ovl | ovl-volatile | ovl-tmpfs | bind)
	mkdir -p "$T/v/$1"
	jq --arg r "${3}" '.root.path = (if $r == "plain" then "'"$BUNDLE"'/rootfs" else "'"$T"'/v/'"$1"'/ovl" end)' \
		"$2" >"$T/v/$1/config.json" || die "jq failed ($1)"
	[[ $1 =~ ${VARIANTS:-.} ]] && V_NAME+=("$1") V_ROOT+=("$3")
}
variant bare "$T/umoci.json" plain
variant bare+ovl "$T/umoci.json" ovl
variant bare+bind "$T/umoci.json" bind
variant bare+ovl-volatile "$T/umoci.json" ovl-volatile
variant bare+ovl-tmpfs "$T/umoci.json" ovl-tmpfs
variant rk "$T/rk.json" ovl
variant rk+plain "$T/rk.json" plain
variant rk+log "$T/rk.json" ovl # runc's --log (json) as riklet gives it
for k in $KEYS; do
	[[ $k == root.path ]] && continue
	jq --slurpfile a "$T/umoci.json" --arg k "$k" '($k | split(".")) as $p |
		if ($a[0] | getpath($p)) == null then delpaths([$p]) else setpath($p; $a[0] | getpath($p)) end' \
		"$T/rk.json" >"$T/rk-$k.json" || die "jq failed ($k)"
	variant "rk-$k" "$T/rk-$k.json" ovl
done

mkfifo "$T/sync.fifo" || die "mkfifo failed"
exec {SFD}<>"$T/sync.fifo"
sync_pid() { bench_sync_pid "$1" "$2" "$CM/$b.out"; } # (tests/bench/lib.sh, as bench_pods.sh)
CM=$T/conmon
mkdir -p "$CM"
start_one() { # start_one VARIANT-INDEX RUN
	local name=${V_NAME[$1]} d=$T/v/${V_NAME[$1]}
	b=v$1-$2
	local r=${V_ROOT[$1]} opt=
	if [[ $r != plain ]]; then # a fresh mount per start, as riklet's per-instance overlay (untimed)
		rm -rf "$d/up" "$d/work" && mkdir -p "$d/up" "$d/work" "$d/ovl" "$d/tmp"
		case $r in
		bind) mount --bind "$BUNDLE/rootfs" "$d/ovl" ;;
		ovl-volatile) opt=,volatile ;&
		ovl) mount -t overlay overlay -o "lowerdir=$BUNDLE/rootfs,upperdir=$d/up,workdir=$d/work$opt" "$d/ovl" ;;
		ovl-tmpfs) # upper and work on a tmpfs
			mount -t tmpfs tmpfs "$d/tmp" && mkdir -p "$d/tmp/up" "$d/tmp/work" &&
				mount -t overlay overlay -o "lowerdir=$BUNDLE/rootfs,upperdir=$d/tmp/up,workdir=$d/tmp/work" "$d/ovl" ;;
		esac || die "mount ($r) failed"
	fi
	mkdir -p "$CM/$b.exit"
	local log=()
	[[ $name == *+log ]] && log=(--runtime-arg=--log --runtime-arg="$CM/$b.runc.log" --runtime-arg=--log-format --runtime-arg=json)
	local a=$EPOCHREALTIME
	_OCI_SYNCPIPE=$SFD conmon --api-version 1 --cid="$b" --cuuid="$b" --name="$b" --runtime="$SHIM" --bundle="$d" \
		--container-pidfile="$CM/$b.pid" --conmon-pidfile="$CM/$b.cpid" --log-path="k8s-file:$CM/$b.log" \
		--log-size-max=10485760 --persist-dir="$CM/$b.exit" --full-attach --runtime-arg="$RUNC_BIN" \
		--runtime-arg=--root --runtime-arg="$BROOT" "${log[@]}" --runtime-opt=-- >"$CM/$b.out" 2>&1 </dev/null ||
		{ cat "$CM/$b.out" >&2; die "conmon ($name) failed"; }
	sync_pid "$name" "$CM/$b.pid"
	V_MS[$1]+=" $(ms "$a" "$SYNC_T")"
	runc --root "$BROOT" delete -f "$b" >/dev/null 2>&1 || die "runc delete -f $b failed"
	[[ $r == plain ]] || { umount "$d/ovl" || die "umount $d/ovl failed"; }
	[[ $r == ovl-tmpfs ]] && { umount "$d/tmp" || die "umount $d/tmp failed"; }
	return 0
}
# riklet itself, one Pod per round: its "conmon + runc run" step (spawn to the pid file or sync line,
# the same span as the bare starts') from its log, the Pod destroyed before the next start
RK_STEP= RK_STEP_P=
state_line() { grep -F "] instance $1 (" "$LOG" | grep -F -- "-> $2" | tail -n 1; } # bench_pods.sh's
has_state() { [[ -n $(state_line "$1" "$2") ]]; }
has_state_or_failed() { has_state "$1" "$2" || { [[ $2 != TERMINATED ]] && has_state "$1" FAILED; }; }
rk_one() { # rk_one ROUND WAIT (grep | pipeline): one Pod, its step added to RK_STEP_<WAIT>
	local id=r$1$2 step
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"oci:%s:bench"}]}}\n' \
		"$id" "$T/img" >"$T/stage/$id.json" && mv "$T/stage/$id.json" "$MAN/$id.json"
	# WAIT pipeline: poll as bench_pods.sh does (two greps and a tail in a subshell, twice, per
	# 100 ms poll: forks that compete with runc for the 2 cores), else one grep per poll
	if [[ $2 == pipeline ]]; then
		wait_for 60 has_state_or_failed "$id" RUNNING
	else
		wait_for 60 grep -q "instance $id (.*-> RUNNING" "$LOG"
	fi || { diag_file "$LOG" >&2; die "Pod $id did not run"; }
	step=$(grep -F "] instance $id: created in " "$LOG" | grep -oE 'conmon \+ runc run [0-9.]+' | awk '{ print $NF }')
	[[ -n $step ]] || die "no conmon + runc run step for $id in riklet's log"
	[[ $2 == pipeline ]] && RK_STEP_P+=" $step" || RK_STEP+=" $step"
	rm -f "$MAN/$id.json"
	wait_for 60 grep -q "instance $id (.*-> TERMINATED" "$LOG" || die "Pod $id did not end"
}
for ((j = 0; j < ${#V_NAME[@]}; j++)); do start_one "$j" 0; done # warm-up, untimed
V_MS=()
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((i = 1; i <= RUNS; i++)); do
	# rotate the order every round: no variant always right after the same one
	for ((k = 0; k < ${#V_NAME[@]}; k++)); do start_one $(((k + i) % ${#V_NAME[@]})) "$i"; done
	rk_one "$i" grep
	[[ -z ${RK_PIPELINE:-} ]] || rk_one "$i" pipeline
	say "# round $i done, load $(cut -d' ' -f1 /proc/loadavg)"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		n = NR; med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		p = int(0.9 * n + 0.999999); if (p < 1) p = 1
		printf "%.1f %.1f %.1f\n", med, v[p], v[1] }'
}
printf '\nconmon + riklet-runc-run starts, %d interleaved rounds, runc %s, %s; load %s before, %s after\n\n' \
	"$RUNS" "$(runc --version | awk 'NR == 1 { print $3 }')" "$(uname -r)" "$LOAD_START" "$LOAD_END"
read -r BASE _ < <(stats ${V_MS[0]})
printf '| %-40s | %-8s | %-8s | %-8s | %-10s |\n' variant median p90 min "vs bare"
for ((j = 0; j < ${#V_NAME[@]}; j++)); do
	read -r med p90 min < <(stats ${V_MS[$j]})
	printf '| %-40s | %-8s | %-8s | %-8s | %-10s |\n' "${V_NAME[$j]}" "$med" "$p90" "$min" \
		"$(awk -v a="$med" -v b="$BASE" 'BEGIN { printf "%+.1f ms", a - b }')"
	[[ -z ${BENCH_RAW:-} ]] || say "#   ${V_NAME[$j]} runs (ms):$(printf ' %.0f' ${V_MS[$j]})"
done
read -r med p90 min < <(stats $RK_STEP)
printf '| %-40s | %-8s | %-8s | %-8s | %-10s |\n' "riklet's step (conmon + runc run)" "$med" "$p90" "$min" \
	"$(awk -v a="$med" -v b="$BASE" 'BEGIN { printf "%+.1f ms", a - b }')"
[[ -z ${BENCH_RAW:-} ]] || say "#   riklet's step runs (ms):$(printf ' %.0f' $RK_STEP)"
if [[ -n $RK_STEP_P ]]; then
	read -r med p90 min < <(stats $RK_STEP_P)
	printf '| %-40s | %-8s | %-8s | %-8s | %-10s |\n' "  the same, waited for as bench_pods.sh" "$med" "$p90" "$min" \
		"$(awk -v a="$med" -v b="$BASE" 'BEGIN { printf "%+.1f ms", a - b }')"
	[[ -z ${BENCH_RAW:-} ]] || say "#   riklet's step, bench_pods.sh's wait (ms):$(printf ' %.0f' $RK_STEP_P)"
fi
exit 0
