# tests/bench/lib.sh — helpers the benchmarks share (sourced, after tests/lib/common.sh).
#
#   say MSG...                  a line on stderr (BENCH_SAY_PREFIX, e.g. "# ", before it)
#   die MSG...                  "NAME: MSG" on stderr (NAME: the script's, without .sh), exit 1
#   bench_init [--ns] WHY TOOL...
#       the checks every benchmark starts with: root (WHY says what needs it), each TOOL on PATH,
#       RIKLET executable; --ns: inside the private network + mount namespace tests/lib/private_ns.sh
#       made (its lo brought up). T is the run's temp dir (common.sh's TEST_TMP, removed at exit).
#   ms A B                      milliseconds from epoch time A to B (EPOCHREALTIME values), 3 decimals
#   bench_sync_pid NAME PIDFILE [CONMON-LOG]
#       waits for a conmon started with _OCI_SYNCPIPE on the FIFO open on fd $SFD: its container's
#       pid file (runc renames it into place) or conmon's sync line, whichever first; SYNC_T is the
#       time of that first one. Dies when conmon reports no pid (with the end of CONMON-LOG), or
#       says nothing.
#   bench_lock_take / bench_lock_pause WHAT / bench_lock_drop
#       with BENCH_LOCK=FILE (e.g. /work/wt/heavy.lock): the script holds that lock itself (take;
#       drop at the end), and bench_lock_pause lets it go between two phases (others' benchmarks
#       may run meanwhile, while what this one made sits idle), then takes it again; how long it
#       waited is said. Without BENCH_LOCK they do nothing (the caller holds a lock, or none).
#   bench_kill_riklet           kill -9 the riklet whose pid is in RPID (if any), reap it, empty RPID
#                               (an on_exit handler: always returns 0)
#   bench_image [MKIMAGE-OPTION...]
#       starts a loopback registry (tests/lib/registry.sh), builds the busybox image in
#       $T/layout:latest (tests/lib/mkimage.sh, with those options) and pushes it there as
#       busybox:latest; IMAGE is its name in the registry. Dies when one of them fails.

BENCH_NAME=$(basename "$0" .sh)
say() { printf '%s%s\n' "${BENCH_SAY_PREFIX-}" "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

bench_init() {
	local ns= c
	[[ ${1-} == --ns ]] && { ns=1; shift; }
	[[ $(id -u) == 0 ]] || die "needs root ($1)"
	shift
	[[ -z $ns || -n ${RK_PRIVATE_NS:-} ]] || die "cannot create a private network + mount namespace (unshare -n -m)"
	for c; do command -v "$c" >/dev/null || die "needs $c"; done
	[[ -x $RIKLET ]] || die "no riklet binary at $RIKLET (build: cmake -S . -B DIR && cmake --build DIR -j2; then RIKLET=DIR/riklet)"
	[[ -z $ns ]] || ip link set lo up
	T=$TEST_TMP
}

RPID=
bench_kill_riklet() { [[ -n $RPID ]] && kill -KILL "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null; RPID=; return 0; }

bench_image() {
	registry_start >&2 || die "docker-registry did not start"
	mkimage "$@" "$T/layout:latest" >&2 || die "mkimage failed"
	mkimage_push "$T/layout:latest" "$REGISTRY/busybox:latest" >&2 || die "push failed"
	IMAGE=$REGISTRY/busybox:latest
}

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) * 1000 }'; }

bench_sync_pid() {
	local line= part= done= n=0
	# (a read that times out mid-line keeps what it read in part: appended, never lost)
	until [[ -s $2 ]]; do
		read -t 0.001 -r part <&"$SFD" && done=1
		line+=$part
		[[ -n $done ]] && break
		((++n < 60000)) || die "$1: no pid file and no word on conmon's sync pipe within a minute"
	done
	SYNC_T=$EPOCHREALTIME
	if [[ -z $done ]]; then
		read -t 60 -r part <&"$SFD" || die "$1: conmon said nothing on its sync pipe within 60 s"
		line+=$part
	fi
	[[ $line =~ \"data\":\ *[1-9][0-9]* ]] || die "$1 failed: $line${3:+ (conmon log: $(tail -c 600 "$3" 2>/dev/null))}"
}

# (the lock is held by a flock process of its own, not by an fd of this shell: riklet, conmons
# and every other child would inherit that, and hold the lock after this script ends)
BENCH_LOCK_PID= BENCH_LOCK_FLAG=
bench_lock_take() {
	[[ -n ${BENCH_LOCK:-} ]] || return 0
	local a=$EPOCHREALTIME
	BENCH_LOCK_FLAG=$(mktemp -u /tmp/bench-lock.XXXXXX)
	# held while the flag file exists and this shell lives
	flock -o "$BENCH_LOCK" sh -c 'touch "$1"; while [ -e "$1" ] && kill -0 "$2" 2>/dev/null; do sleep 1; done' \
		sh "$BENCH_LOCK_FLAG" "$$" </dev/null >/dev/null 2>&1 &
	BENCH_LOCK_PID=$!
	until [[ -e $BENCH_LOCK_FLAG ]]; do
		kill -0 "$BENCH_LOCK_PID" 2>/dev/null || die "cannot take $BENCH_LOCK"
		sleep 0.5
	done
	say "holding $BENCH_LOCK (waited $(awk -v a="$a" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s), $(date -u +%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
}
bench_lock_drop() {
	[[ -n $BENCH_LOCK_PID ]] || return 0
	rm -f "$BENCH_LOCK_FLAG"
	wait "$BENCH_LOCK_PID" 2>/dev/null
	BENCH_LOCK_PID=
}
bench_lock_pause() {
	[[ -n $BENCH_LOCK_PID ]] || return 0
	bench_lock_drop
	say "$BENCH_LOCK let go before $1, $(date -u +%H:%M:%SZ)"
	sleep 5 # (a chance for a benchmark waiting on it)
	bench_lock_take
}
