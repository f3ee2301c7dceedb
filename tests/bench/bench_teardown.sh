#!/usr/bin/env bash
# bench_teardown.sh — a mass teardown: PODS (default 100) busybox Pods removed by one rm, riklet
# builds interleaved in one run at the same load (a benchmark, not a test: it prints a table; it
# fails only when it cannot measure, or when a Pod is lost).
#
#   sudo tests/bench/bench_teardown.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: PODS (default 100); NETWORK bridge (default: a veth, an address and a port mapping
# per Pod) or none; ROUNDS (default 2) of one teardown per variant, the variants' order turned
# round each round; BEFORE_LUA=DIR (a lua/ tree: riklet/main.lua in it) or BEFORE_REV=GIT-REV (its
# lua/ and policies/ taken from this repository by git archive) adds the variant "before", the same binary with
# that Lua tree; REVS="NAME=GIT-REV|NAME=LUA-DIR ..." adds one such variant per word (e.g. REVS="fifo=f2af17a");
# RUNTIME_PARALLEL=N gives riklet --runtime-parallel N; BENCH_LOCK=FILE as in lib.sh
# (the lock let go between two teardowns). --stop-grace 2 as in bench_scale.sh; the Pods' command
# (tests/lib/mkimage.sh: sh trapping SIGTERM) exits at SIGTERM; IGNORE_TERM=1 gives them one that
# ignores it (sleep as pid 1), so that every Pod waits out its 2 s grace period, then gets SIGKILL.
#
# Per teardown (all Pods RUNNING, 3 s idle first): from the rm to the first TERMINATED, to the
# p50 / p99 Pod's TERMINATED, to the last (the total); p50 / p99 of one Pod's own teardown (its
# "RUNNING -> DESTROYING" log line to its "DESTROYING -> TERMINATED"); FAILED ones; what is left
# (runc containers, conmons, mounts, veths, netns files, per-instance iptables rules); the load
# average before and after; SIGKILLs (Pods that did not end within the grace period after SIGTERM);
# riklet's CPU seconds from the rm to the last TERMINATED (cpu), and its loop's turns of 100 ms or
# more (riklet's "event loop was blocked" warnings) meanwhile. With
# RUNC_TRACE=1 riklet's runc is a wrapper that logs each call's start and end (a bash process more
# per call: compare variants, not absolute figures): per teardown, the calls and their mean seconds
# per command, and how busy the --runtime-parallel slots were (the calls' summed time over slots x
# the teardown's time). Then the medians per variant and the ratios.
# shellcheck source=../lib/private_ns.sh
source "$(dirname "$0")/../lib/private_ns.sh"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$SRC_DIR/build/riklet}}"
source "$SRC_DIR/tests/lib/registry.sh"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh"

PODS=${PODS:-100}
NETWORK=${NETWORK:-bridge}
ROUNDS=${ROUNDS:-2}
BEFORE_LUA=${BEFORE_LUA:-}
BEFORE_REV=${BEFORE_REV:-}

BENCH_SAY_PREFIX='# '
bench_init --ns "runc, overlay mounts, network namespaces" runc conmon umoci skopeo jq ip iptables-legacy docker-registry
[[ $NETWORK == bridge || $NETWORK == none ]] || die "NETWORK is bridge or none"

MAN=$T/manifests STAGE=$T/stage STATE=$T/state RROOT=$T/runc NETNS=$T/netns LOG=$T/riklet.log
mkdir -p "$MAN" "$STAGE" "$STATE" "$RROOT"

VARIANTS=(now)
declare -A VLUA
add_rev() { # NAME REV
	mkdir -p "$T/rev-$1"
	git -C "$SRC_DIR" archive "$2" lua policies | tar -x -C "$T/rev-$1" || die "cannot take lua/ of $2"
	VLUA[$1]=$T/rev-$1/lua
	VARIANTS+=("$1")
}
if [[ -n $BEFORE_REV ]]; then
	add_rev before "$BEFORE_REV"
	BEFORE_LUA=${VLUA[before]}
elif [[ -n $BEFORE_LUA ]]; then
	[[ -f $BEFORE_LUA/riklet/main.lua ]] || die "BEFORE_LUA=$BEFORE_LUA holds no riklet/main.lua"
	VLUA[before]=$BEFORE_LUA
	VARIANTS+=(before)
fi
for w in ${REVS:-}; do
	[[ $w == ?*=?* ]] || die "REVS: '$w' is not NAME=GIT-REV or NAME=LUA-DIR"
	if [[ -f ${w#*=}/riklet/main.lua ]]; then
		VLUA[${w%%=*}]=${w#*=}
		VARIANTS+=("${w%%=*}")
	else
		add_rev "${w%%=*}" "${w#*=}"
	fi
done
SLOTS=${RUNTIME_PARALLEL:-$((2 * $(nproc)))}
TRACE=$T/runc-trace
RUNC_OPT=()
if [[ ${RUNC_TRACE:-0} == 1 ]]; then
	cat >"$T/trace-runc" <<EOF
#!/bin/bash
s=\$EPOCHREALTIME
$(command -v runc) "\$@"
rc=\$?
for a in "\$@"; do case \$a in state | kill | delete | start | create | run | list | exec) break ;; esac; done
echo "\$s \$EPOCHREALTIME \$a" >>"$TRACE"
exit \$rc
EOF
	chmod +x "$T/trace-runc"
	RUNC_OPT=(--runc "$T/trace-runc")
fi

on_exit bench_cleanup_runc
on_exit bench_kill_riklet
bench_cleanup_runc() { runc --root "$RROOT" list -q 2>/dev/null | xargs -r -P 4 -I{} runc --root "$RROOT" delete -f {} >/dev/null 2>&1; }

on_exit bench_lock_drop
bench_lock_take
say "building the busybox image and starting a loopback registry"
bench_image

RK_OPTS=(--standalone "$MAN" --state-dir "$STATE" --runc-root "$RROOT" --netns-dir "$NETNS" --network "$NETWORK"
	--insecure-registries "$REGISTRY" --max-instances $((PODS + 10)) --stop-grace 2 --log-format text
	${RUNTIME_PARALLEL:+--runtime-parallel "$RUNTIME_PARALLEL"} "${RUNC_OPT[@]}")
start_riklet() { # VARIANT
	local envs=()
	[[ -n ${VLUA[$1]:-} ]] && envs=("RIKLET_LUA_DIR=${VLUA[$1]}")
	env "${envs[@]}" "$RIKLET" "${RK_OPTS[@]}" >>"$LOG" 2>&1 </dev/null &
	RPID=$!
}
manifest() {
	local ports=
	[[ $NETWORK == bridge ]] && ports=$(printf ',"ports":{"port":%d,"target_port":80,"protocol":"TCP"}' $((20000 + $2)))
	local cmd=
	[[ ${IGNORE_TERM:-0} == 1 ]] && cmd=',"command":["sleep","3600"]'
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"%s"%s%s}]}}\n' \
		"$1" "$IMAGE" "$ports" "$cmd"
}
pod() { printf 'pod-%04d' "$1"; }
count_since() { tail -n +"$(($1 + 1))" "$LOG" | grep -cF -- "$2"; }
log_lines() { wc -l <"$LOG"; }
sod() { awk -v e="$1" 'BEGIN { printf "%.3f", e - int(e / 86400) * 86400 }'; }
wait_count() { # LINE PATTERN N TIMEOUT
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
# "ID SOD" of the lines after LINE matching PATTERN (log lines: "2026-11-22T00:32:08.057Z info  [..] instance ID (Pod ...")
id_sods() {
	tail -n +"$(($1 + 1))" "$LOG" | grep -F -- "$2" |
		awk '{ split(substr($1, 12, 12), t, ":"); for (i = 1; i < NF; i++) if ($i == "instance") { print $(i + 1), t[1] * 3600 + t[2] * 60 + t[3]; break } }'
}
pct() { # P V...: nearest rank
	local p=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v p="$p" '{ v[NR] = $1 } END { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; printf "%.2f", v[k] }'
}
left() {
	local what=() n
	n=$(runc --root "$RROOT" list -q 2>/dev/null | grep -c .)
	((n)) && what+=("$n runc containers")
	n=$(pgrep -x conmon | while read -r p; do tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null; echo; done | grep -cF -- "--runtime-arg=$RROOT ")
	((n)) && what+=("$n conmons")
	n=$(awk -v d="$STATE/instances/" 'index($5, d) == 1' /proc/self/mountinfo | grep -c .)
	((n)) && what+=("$n mounts")
	if [[ $NETWORK == bridge ]]; then
		n=$(ip -o link show | grep -c ' rkv')
		((n)) && what+=("$n veths")
		n=$(find "$NETNS" -mindepth 1 2>/dev/null | grep -c .)
		((n)) && what+=("$n netns files")
		n=$({ iptables-legacy-save -t nat; iptables-legacy-save -t filter; } 2>/dev/null | grep -F 'riklet:' | grep -vcF 'riklet:infra')
		((n)) && what+=("$n iptables rules")
	fi
	((${#what[@]})) && { local IFS=,; echo "${what[*]}"; } || echo nothing
}

# riklet's CPU seconds (user + system) so far
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$RPID/stat"; }
# trace_stats T0 T1 (seconds of the day): "state N/MEAN kill N/MEAN delete N/MEAN busy P%" of the
# calls that began in [T0, T1], then "per s:" the mean number of runc calls running in each second
# from T0 (the slots' use over time: idle at the start, throughout, or in the tail)
trace_stats() {
	[[ -f $TRACE ]] || { echo -; return; }
	awk -v t0="$1" -v t1="$2" -v slots="$SLOTS" '{ s = $1 - int($1 / 86400) * 86400; e = s + $2 - $1
		if (s < t0 || s > t1) next; n[$3]++; d[$3] += $2 - $1; busy += $2 - $1
		for (b = int(s - t0); b <= int(e - t0); b++) { lo = s > t0 + b ? s : t0 + b; hi = e < t0 + b + 1 ? e : t0 + b + 1
			if (hi > lo) u[b] += hi - lo } }
		END { for (k in n) if (k == "state" || k == "kill" || k == "delete") printf "%s %d/%.3f ", k, n[k], d[k] / n[k]
			printf "busy %.0f%%; per s:", 100 * busy / (slots * (t1 - t0))
			for (b = 0; b < t1 - t0; b++) printf " %.1f", u[b] }' "$TRACE"
}

declare -A FIRST P50 P99 TOTAL OWN50 OWN99 CPU
ROWS=()
for ((round = 1; round <= ROUNDS; round++)); do
	order=("${VARIANTS[@]}")
	((round % 2 == 0)) && order=($(printf '%s\n' "${VARIANTS[@]}" | tac))
	for v in "${order[@]}"; do
		: >"$LOG"
		start_riklet "$v"
		wait_for 20 grep -q "watching" "$LOG" || { diag_file "$LOG" >&2; die "riklet ($v) did not start"; }
		if [[ ! -e $T/warm ]]; then
			manifest warm 0 >"$STAGE/warm.json" && mv "$STAGE/warm.json" "$MAN/"
			wait_count 0 "instance warm (Pod warm): CREATING -> RUNNING" 1 180
			rm -f "$MAN/warm.json"
			wait_count 0 "instance warm (Pod warm): DESTROYING -> TERMINATED" 1 60
			touch "$T/warm"
		fi
		say "round $round, $v: $PODS Pods"
		for ((i = 1; i <= PODS; i++)); do manifest "$(pod "$i")" "$i" >"$STAGE/$(pod "$i").json"; done
		L1=$(log_lines)
		mv "$STAGE"/pod-*.json "$MAN/"
		wait_count "$L1" ": CREATING -> " "$PODS" $((PODS + 300))
		n=$(count_since "$L1" "CREATING -> RUNNING")
		((n == PODS)) || die "$v: only $n of $PODS Pods RUNNING"
		sleep 3
		LOAD0=$(cut -d' ' -f1 /proc/loadavg)
		L2=$(log_lines)
		C0=$(cpu_s)
		T0=$(sod "$EPOCHREALTIME")
		rm -f "$MAN"/pod-*.json
		wait_count "$L2" "DESTROYING -> " "$PODS" $((PODS * 3 + 300))
		cpu=$(awk -v a="$C0" -v b="$(cpu_s)" 'BEGIN { printf "%.2f", b - a }')
		LOAD1=$(cut -d' ' -f1 /proc/loadavg)
		failed=$(count_since "$L2" "DESTROYING -> FAILED")
		killed=$(count_since "$L2" "did not stop within") # (SIGKILL after the grace period)
		blocked=$(tail -n +"$((L2 + 1))" "$LOG" | sed -n 's/.*the event loop was blocked for \([0-9]*\) ms.*/\1/p' |
			awk '{ n++; s += $1 } END { printf "%d turns, %d ms", n, s }')
		mapfile -t ends < <(id_sods "$L2" "DESTROYING -> TERMINATED" | awk -v t0="$T0" '{ d = $2 - t0; if (d < -43200) d += 86400; print d }')
		mapfile -t own < <(join <(id_sods "$L2" "RUNNING -> DESTROYING" | sort) <(id_sods "$L2" "DESTROYING -> TERMINATED" | sort) |
			awk '{ d = $3 - $2; if (d < -43200) d += 86400; print d }')
		sleep 2
		lf=$(left)
		kill -TERM "$RPID"
		wait "$RPID" 2>/dev/null
		RPID=
		f=$(pct 0 "${ends[@]}") p50=$(pct 50 "${ends[@]}") p99=$(pct 99 "${ends[@]}") tot=$(pct 100 "${ends[@]}")
		o50=$(pct 50 "${own[@]}") o99=$(pct 99 "${own[@]}")
		FIRST[$v]+=" $f" P50[$v]+=" $p50" P99[$v]+=" $p99" TOTAL[$v]+=" $tot" OWN50[$v]+=" $o50" OWN99[$v]+=" $o99" CPU[$v]+=" $cpu"
		ROWS+=("$(printf '%-3s %-7s %8s %8s %8s %8s %8s %8s %6s %7s %6s  %-11s %s' "$round" "$v" "$f" "$p50" "$p99" "$tot" "$o50" "$o99" \
			"$failed" "$killed" "$cpu" "$LOAD0-$LOAD1" "$lf")")
		say "${ROWS[-1]}"
		ROWS+=("    loop blocked >= 100 ms: $blocked")
		say "${ROWS[-1]}"
		if [[ ${RUNC_TRACE:-0} == 1 ]]; then
			ROWS+=("    runc calls: $(trace_stats "$T0" "$(awk -v a="$T0" -v b="$tot" 'BEGIN { printf "%.3f", a + b }')")")
			say "${ROWS[-1]}"
		fi
		bench_lock_pause "the next teardown"
	done
done

med() { pct 50 $1; }
printf '\n%s Pods (%s network), --stop-grace 2%s, seconds from the rm; own = one Pod: its DESTROYING to its TERMINATED\n' "$PODS" "$NETWORK" \
	"$([[ ${IGNORE_TERM:-0} == 1 ]] && echo ', SIGTERM ignored')"
printf '%-3s %-7s %8s %8s %8s %8s %8s %8s %6s %7s %6s  %-11s %s\n' run variant first p50 p99 total own-p50 own-p99 FAILED SIGKILL cpu load left
printf '%s\n' "${ROWS[@]}"
printf '\nmedians (nearest rank: of 2 runs, the lower):\n'
for v in "${VARIANTS[@]}"; do
	printf '%-11s first %s  p50 %s  p99 %s  total %s  own p50 %s  own p99 %s  cpu %s\n' "$v" "$(med "${FIRST[$v]}")" \
		"$(med "${P50[$v]}")" "$(med "${P99[$v]}")" "$(med "${TOTAL[$v]}")" "$(med "${OWN50[$v]}")" "$(med "${OWN99[$v]}")" \
		"$(med "${CPU[$v]}")"
done
for v in "${VARIANTS[@]:1}"; do
	printf 'now / %s: first %s  p50 %s  total %s\n' "$v" \
		"$(awk -v a="$(med "${FIRST[now]}")" -v b="$(med "${FIRST[$v]}")" 'BEGIN { printf "%.2fx", a / b }')" \
		"$(awk -v a="$(med "${P50[now]}")" -v b="$(med "${P50[$v]}")" 'BEGIN { printf "%.2fx", a / b }')" \
		"$(awk -v a="$(med "${TOTAL[now]}")" -v b="$(med "${TOTAL[$v]}")" 'BEGIN { printf "%.2fx", a / b }')"
done
