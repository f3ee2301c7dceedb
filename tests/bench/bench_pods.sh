#!/usr/bin/env bash
# bench_pods.sh — riklet's Pod start latency and memory, side by side with bare runc (a benchmark,
# not a test: it prints numbers and a table, and fails only when it cannot measure).
#
#   sudo tests/bench/bench_pods.sh [RIKLET]     RIKLET defaults to $RIKLET or build-bench/riklet
#
# Environment: RUNS (default 20) start measurements; PODS (default 50) Pods for the RSS measure;
# KEEP_TMP=1 keeps the temporary directory; BENCH_QUIET=1 hides the per-run lines; NETWORK=bridge
# (default none) gives riklet's Pods their bridge network (netns, veth, address, rules), the whole
# benchmark then running in a private network + mount namespace; PODS=0 skips the memory part;
# BEFORE_LUA=DIR also runs a second riklet, the same binary with the Lua tree DIR (e.g. an older
# commit's: `git archive int3 lua | tar -x -C /tmp/old`), in its own network namespace, measured in
# the same interleaved runs: a before/after comparison that shares the machine's load;
# BEFORE_RIKLET=BINARY runs that second riklet from another build (with its own Lua tree unless
# BEFORE_LUA is given too): before/after of a change in C as well.
#
# What it measures, all in one run:
#  1. manifest -> RUNNING for a cached image: a manifest is written next to the standalone dir,
#     then a helper process (the waiter: python3, kept running) takes the time right before its
#     rename(2) into the dir (so no fork/exec of `mv` is counted; `mv` and EPOCHREALTIME without
#     python3), and the latency is the time the waiter read riklet's "-> RUNNING" log line, blocked
#     on an inotify watch of the log (no polling: nothing of the benchmark runs while riklet works),
#     minus that time; the log line's own millisecond stamp is printed too (without python3: that
#     one, found by polling). riklet runs at --log-level debug (BENCH_LOG_LEVEL): its per-phase
#     line of each start (4. below). The image was pulled and unpacked by a warm-up instance first. Before each
#     run the previous instance is destroyed (manifest removed, TERMINATED waited for; not timed).
#  2. bare runc on the same image (umoci unpack into a prepared bundle, process not on a terminal):
#     `runc run --detach` and `runc create` + `runc start`, wall time of the commands, and conmon
#     + runc as riklet runs them (conmon runs `runc create`, the container's pid file or conmon's
#     line on its sync pipe ends it, whichever comes first; then `runc start`), and conmon running
#     `runc create` + `runc start` through riklet-runc-run (the shim riklet gives conmon for a
#     one-container Pod: one runtime invocation, ended the same way, no `runc start` of its own;
#     `runc run --detach` until 2026-11-30), with `runc delete -f` between runs (not
#     timed). Runs are interleaved with riklet's. conmon + shim - `runc run --detach` is what
#     conmon itself costs on riklet's path.
#  3. riklet's VmRSS (and VmHWM) from /proc/PID/status: idle after start, with 1, 20 and PODS
#     running Pods (busybox sleeping), and idle again after they are destroyed; conmon's own memory
#     per container (Rss and Pss from /proc/PID/smaps_rollup, averaged over the PODS conmons)
#     beside runc alone (no process of its own stays once a container runs). For the why, also RssAnon
#     (riklet's own heap and library data) and Pss (shared library pages divided among their
#     users), and the RSS of a do-nothing C program linked with riklet's libraries (`ldd`), when
#     a C compiler is there: the floor that dynamic loading alone costs.
#  4. where a start goes: riklet logs each create's steps ("instance ID: created in T ms (record
#     writes a, image b, network c, overlay mount d, bundle config e, conmon + runc create f, runc
#     start g, beside them: network setup h ms)": h overlaps the create, c is the namespace and the
#     wait for the rest); the median of each over the timed runs is printed, with what is left of the
#     manifest -> RUNNING time; and the lifecycle's phases ("start phases" debug line: CREATING
#     stored, decode + validation, admission policy, the create, RUNNING stored + reported, the
#     CREATING fsync beside them), with the rename -> handed over time (inotify, manifest read).
# Targets (issue 2, 7, 12): start <= 1.3x (issue 7), <= 1.0x (issue 12) bare runc run --detach (conmon
# in the path); idle RSS <= 8 MiB;
# <= 16 MiB with 50 Pods; riklet's RSS does not grow per Pod.

set -uo pipefail
NETWORK=${NETWORK:-none}
if [[ $NETWORK == bridge ]]; then
	# a bridge, veths and iptables rules of its own, never the host's (as the network tests do)
	source "$(dirname "${BASH_SOURCE[0]}")/../lib/private_ns.sh"
	[[ -n ${RK_PRIVATE_NS:-} ]] || { echo "bench_pods: NETWORK=bridge needs unshare -n -m (root)" >&2; exit 1; }
	ip link set lo up
fi
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
: "${RIKLET_BUILD_DIR:=$SRC_DIR/build-bench}"
export RIKLET_BUILD_DIR
# common.sh: TEST_TMP, on_exit (cleanup stack, also on Ctrl-C), wait_for, need_root, need_cmd
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$BENCH_DIR/lib.sh" # ms, bench_sync_pid

RUNS=${RUNS:-20}
PODS=${PODS:-50}
((PODS == 0 || PODS >= 20)) || PODS=20 # measured at 1, 20 and PODS

bench_init "runc, overlay mounts" runc conmon umoci jq awk date

MAN=$T/manifests STAGE=$T/stage STATE=$T/state RROOT=$T/runc-riklet BROOT=$T/runc-bare
LOG=$T/riklet.log
mkdir -p "$MAN" "$STAGE" "$STATE" "$RROOT" "$BROOT"

# --- image and bare bundle ---------------------------------------------------------------------
say "# building the busybox image (offline, umoci)"
IMG=$T/img
mkimage "$IMG:bench" >&2 || die "mkimage failed"
IMAGE_REF=oci:$IMG:bench

BUNDLE=$T/bundle
umoci unpack --image "$IMG:bench" "$BUNDLE" >/dev/null || die "umoci unpack failed"
# the same process riklet runs (the image's cmd: a shell that sleeps), never on a terminal
jq '.process.terminal = false' "$BUNDLE/config.json" >"$BUNDLE/config.json.new" &&
	mv "$BUNDLE/config.json.new" "$BUNDLE/config.json" || die "cannot edit the bundle config"

# --- riklet ------------------------------------------------------------------------------------
# manifest NAME: a sleeping busybox Pod named NAME
manifest() {
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"main","image":"%s"}]}}\n' \
		"$1" "$IMAGE_REF"
}

"$RIKLET" --standalone "$MAN" --state-dir "$STATE" --runc-root "$RROOT" --network "$NETWORK" \
	--netns-dir "$T/netns" --bridge rkbench0 --pod-cidr 10.97.0.0/16 \
	--log-format text --log-level "${BENCH_LOG_LEVEL:-debug}" --stop-grace 5 >"$LOG" 2>&1 </dev/null &
RPID=$!
# the cleanup stack runs last-in first-out: riklet destroys its Pods and stops, then leftovers go
on_exit "bench_cleanup_runc"
on_exit "bench_stop_riklet"

# the second riklet (BEFORE_LUA): as_before CMD... runs CMD with its manifests, log and pid
BEFORE_LUA=${BEFORE_LUA:-} BEFORE_RIKLET=${BEFORE_RIKLET:-}
MAN_B=$T/manifests-before STATE_B=$T/state-before RROOT_B=$T/runc-before LOG_B=$T/riklet-before.log RPID_B=
as_before() { local MAN=$MAN_B LOG=$LOG_B RPID=$RPID_B; "$@"; }
if [[ -n $BEFORE_LUA || -n $BEFORE_RIKLET ]]; then
	[[ -z $BEFORE_LUA || -f $BEFORE_LUA/riklet/main.lua ]] || die "BEFORE_LUA=$BEFORE_LUA holds no riklet/main.lua"
	[[ -z $BEFORE_RIKLET || -x $BEFORE_RIKLET ]] || die "BEFORE_RIKLET=$BEFORE_RIKLET is not an executable"
	mkdir -p "$MAN_B" "$STATE_B" "$RROOT_B"
	NSRUN=()
	[[ $NETWORK == bridge ]] && NSRUN=(unshare -n)
	BEFORE_ENV=()
	[[ -z $BEFORE_LUA ]] || BEFORE_ENV=("RIKLET_LUA_DIR=$BEFORE_LUA")
	env "${BEFORE_ENV[@]}" "${NSRUN[@]}" "${BEFORE_RIKLET:-$RIKLET}" --standalone "$MAN_B" --state-dir "$STATE_B" \
		--runc-root "$RROOT_B" --network "$NETWORK" --netns-dir "$T/netns-before" --bridge rkbench0 \
		--pod-cidr 10.97.0.0/16 --log-format text --log-level "${BENCH_LOG_LEVEL:-debug}" --stop-grace 5 >"$LOG_B" 2>&1 </dev/null &
	RPID_B=$!
	on_exit "as_before bench_stop_riklet"
fi

bench_cleanup_runc() {
	local root id
	for root in "$RROOT" "$BROOT" "$RROOT_B"; do
		[[ -d $root ]] || continue
		for id in $(runc --root "$root" list -q 2>/dev/null); do runc --root "$root" delete -f "$id" >/dev/null 2>&1; done
	done
}

# state_line ID STATUS: the log line of ID's transition to STATUS (the last one), if any. Text
# log lines: "2026-11-22T00:32:08.057Z info  [agent] instance ID (Pod NAME): CREATING -> RUNNING"
# (the JSON log format writes escaped strings a character at a time: not on a timed path)
state_line() { grep -F "] instance $1 (" "$LOG" | grep -F -- "-> $2" | tail -n 1; }
# the polls run while riklet starts a Pod: one grep each, no subshell (two greps, a tail and two
# subshells per poll, as before, took ~55 ms from the start on 2 cores: bench_bundle.sh)
has_state() { grep -qE -- "\] instance $1 \(.*-> $2" "$LOG"; }
failed_line() { state_line "$1" FAILED; }
has_state_or_failed() {
	local st=$2
	[[ $2 == TERMINATED ]] || st="($2|FAILED)"
	grep -qE -- "\] instance $1 \(.*-> $st" "$LOG"
}

# wait_state ID STATUS TIMEOUT: dies with the log when ID fails or times out
wait_state() {
	local id=$1 st=$2 t=$3
	wait_for "$t" has_state_or_failed "$id" "$st"
	has_state "$id" "$st" && return 0
	diag_file "$LOG" 20 >&2
	[[ -n $(failed_line "$id") ]] && die "instance $id FAILED: $(failed_line "$id")"
	die "instance $id did not reach $st within ${t}s"
}

# to epoch seconds (with fraction) from a log line's "ts"
line_epoch() { date -u -d "${1%% *}" +%s.%N; }

rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
pss_kib() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }
rollup_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/smaps_rollup"; }

bench_stop_riklet() {
	[[ -n ${RPID:-} ]] && kill -0 "$RPID" 2>/dev/null || return 0
	# destroy what is still there first (riklet's stop leaves workloads running by design)
	local f ids=()
	for f in "$MAN"/*.json; do [[ -e $f ]] && ids+=("$(basename "$f" .json)") && rm -f -- "$f"; done
	for f in "${ids[@]}"; do wait_for 30 has_state "$f" TERMINATED; done
	kill -TERM "$RPID"
	wait_for 10 bash -c "! kill -0 $RPID 2>/dev/null" || kill -KILL "$RPID"
	wait "$RPID" 2>/dev/null
	RPID=
}

if [[ -n $RPID_B ]]; then
	wait_for 60 grep -q "watching" "$LOG_B" || { diag_file "$LOG_B" >&2; die "the BEFORE_LUA riklet did not start"; }
fi
wait_for 60 grep -q "watching" "$LOG" || { diag_file "$LOG" >&2; die "riklet did not start"; }
kill -0 "$RPID" 2>/dev/null || { diag_file "$LOG" >&2; die "riklet exited"; }
sleep 1
IDLE_RSS=$(rss_kib "$RPID" VmRSS)
IDLE_ANON=$(rss_kib "$RPID" RssAnon)
IDLE_PSS=$(pss_kib "$RPID")
say "# riklet pid $RPID idle: VmRSS $IDLE_RSS KiB"

# The waiter (python3, kept running): one request per line, tab-separated, one answer line each.
#   rename SRC DST        -> the time right before rename(2)
#   log FILE REGEX SECS   -> "TIME<TAB>LINE": the first new line of FILE matching REGEX (Python re),
#                            TIME when the waiter read it; it blocks on an inotify watch of FILE
#                            (IN_MODIFY), no polling; each FILE is read on from where the last
#                            match ended (only for waits made one after another: the timed runs)
#   fifo PATH             -> "ok": opens conmon's sync FIFO (both ways, never an end of file)
#   pid PIDFILE SECS      -> "TIME<TAB>LINE": TIME is the first of PIDFILE non-empty (an inotify
#                            watch of its directory: runc renames it into place) and a line on the
#                            FIFO; LINE is conmon's line then read (untimed)
#   "timeout" when SECS pass. Both sides of every comparison end the same way: woken by the kernel.
WAITER=
if [[ -x $PYTHON ]]; then
	coproc REN { exec "$PYTHON" -u -c '
import ctypes, os, re, select, sys, time
libc = ctypes.CDLL(None, use_errno=True)
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
if ino < 0: raise OSError(ctypes.get_errno(), "inotify_init1")
def watch(path, mask):
    wd = libc.inotify_add_watch(ino, path.encode(), mask)
    if wd < 0: raise OSError(ctypes.get_errno(), "inotify_add_watch " + path)
    return wd
def drain():
    try:
        while os.read(ino, 65536): pass
    except BlockingIOError: pass
logs, fifo, fbuf = {}, None, b""
def wait_log(path, rx, secs):
    st = logs.get(path)
    if st is None:
        st = logs[path] = [os.open(path, os.O_RDONLY | os.O_CLOEXEC), b""]
        watch(path, IN_MODIFY)
    pat, end = re.compile(rx.encode()), time.monotonic() + secs
    while True:
        drain() # before reading: a write after the read leaves an event for the select
        while True:
            chunk = os.read(st[0], 65536)
            if not chunk: break
            st[1] += chunk
        while b"\n" in st[1]:
            line, st[1] = st[1].split(b"\n", 1)
            if pat.search(line): return "%.6f\t%s" % (time.time(), line.decode(errors="replace"))
        left = end - time.monotonic()
        if left <= 0: return "timeout"
        select.select([ino], [], [], left)
def fifo_read():
    global fbuf
    try: fbuf += os.read(fifo, 4096)
    except BlockingIOError: pass
def wait_pid(pidfile, secs):
    global fbuf
    wd, end, t = watch(os.path.dirname(pidfile), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE), time.monotonic() + secs, None
    try:
        while t is None:
            drain()
            if (os.path.exists(pidfile) and os.path.getsize(pidfile) > 0) or b"\n" in fbuf:
                t = time.time()
                break
            left = end - time.monotonic()
            if left <= 0: return "timeout"
            if fifo in select.select([ino, fifo], [], [], left)[0]: fifo_read()
        while b"\n" not in fbuf:
            left = end + 60 - time.monotonic()
            if left <= 0: return "%.6f\t(no line from conmon)" % t
            if select.select([fifo], [], [], left)[0]: fifo_read()
        line, fbuf = fbuf.split(b"\n", 1)
        return "%.6f\t%s" % (t, line.decode(errors="replace"))
    finally:
        libc.inotify_rm_watch(ino, wd)
for req in sys.stdin:
    a = req.rstrip("\n").split("\t")
    if a[0] == "rename":
        t = time.time()
        os.rename(a[1], a[2])
        r = "%.6f" % t
    elif a[0] == "log": r = wait_log(a[1], a[2], float(a[3]))
    elif a[0] == "fifo":
        fifo, r = os.open(a[1], os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC), "ok"
    elif a[0] == "pid": r = wait_pid(a[1], float(a[2]))
    else: r = "bad request " + a[0]
    print(r, flush=True)
'; }
	WAITER=python3
	on_exit "exec {REN[1]}>&- 2>/dev/null"
fi
# waiter ARG...: one request; its answer in WAITED (in this shell: not for $(...))
waiter() {
	local IFS=$'\t'
	printf '%s\n' "$*" >&"${REN[1]}"
	read -r WAITED <&"${REN[0]}" || die "the waiter (python3) died"
}
# create ID: rename its manifest into the dir; prints the time taken right before the rename
create() {
	manifest "$1" >"$STAGE/$1.json"
	if [[ -n $WAITER ]]; then
		waiter rename "$STAGE/$1.json" "$MAN/$1.json"
		printf '%s\n' "$WAITED"
	else
		local t0=$EPOCHREALTIME
		mv -T -- "$STAGE/$1.json" "$MAN/$1.json"
		printf '%s\n' "$t0"
	fi
}
# wait_exact ID STATUS TIMEOUT: wait_state for waits made one after another (the timed runs):
# blocking on the waiter; sets WAIT_T (when the line was read) and WAIT_LINE. Without python3 it
# polls (wait_state) and takes the log line's own millisecond stamp.
wait_exact() {
	local id=$1 st=$2
	if [[ -z $WAITER ]]; then
		wait_state "$@"
		WAIT_LINE=$(state_line "$id" "$st")
		WAIT_T=$(line_epoch "$WAIT_LINE")
		return
	fi
	[[ $st == TERMINATED ]] || st="($st|FAILED)"
	waiter log "$LOG" "\\] instance $id \\(.*-> $st" "$3"
	if [[ $WAITED == timeout ]] || [[ $WAITED == *"-> FAILED"* && $2 != FAILED ]]; then
		diag_file "$LOG" 20 >&2
		[[ $WAITED == timeout ]] && die "instance $id did not reach $2 within ${3}s"
		die "instance $id FAILED: ${WAITED#*$'\t'}"
	fi
	WAIT_T=${WAITED%%$'\t'*} WAIT_LINE=${WAITED#*$'\t'}
}
destroy() { rm -f -- "$MAN/$1.json"; wait_exact "$1" TERMINATED 60; }

# warm-up: pull (oci: layout lookup) and unpack the image once
say "# warm-up instance"
create warm >/dev/null
wait_exact warm RUNNING 120
destroy warm
if [[ -n $RPID_B ]]; then
	as_before create warm >/dev/null
	as_before wait_exact warm RUNNING 120
	as_before destroy warm
fi

# --- timed runs, interleaved ---------------------------------------------------------------------
declare -a R_MS=() R_STAMP_MS=() RUN_MS=() CS_MS=() CM_MS=() CR_MS=() B_MS=()
declare -A T0_OF=()
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RUNC_BIN=$(command -v runc)
SHIM=${RIKLET_RUNC_RUN:-$(dirname "$RIKLET")/riklet-runc-run}
[[ -x $SHIM ]] || die "no riklet-runc-run beside riklet ($SHIM): build it, or set RIKLET_RUNC_RUN"
CM=$T/conmon-bare
mkdir -p "$CM"
# The end of conmon's create, as riklet sees it: the first of runc's pid file (renamed into place
# once the container is created / runs) and conmon's line on its sync pipe ({"data": PID}, written
# after conmon reaped runc); the waiter blocks on an inotify watch of the pid file's directory and
# on the FIFO, as riklet does (without python3: the pid file looked at every 1 ms while waiting
# for the line). The sync pipe is a FIFO held open both ways (a conmon that fails without a word
# is a timeout, not an end of file). sync_pid WHAT PIDFILE sets SYNC_T (the time it ended), then
# reads the line (untimed).
mkfifo "$T/sync.fifo" || die "mkfifo failed"
exec {SFD}<>"$T/sync.fifo"
[[ -z $WAITER ]] || { waiter fifo "$T/sync.fifo"; [[ $WAITED == ok ]] || die "the waiter cannot open the sync FIFO: $WAITED"; }
sync_pid() {
	if [[ -n $WAITER ]]; then
		waiter pid "$2" 60
		[[ $WAITED != timeout ]] || die "$1: no pid file and no word on conmon's sync pipe within a minute"
		SYNC_T=${WAITED%%$'\t'*}
		[[ ${WAITED#*$'\t'} =~ \"data\":\ *[1-9][0-9]* ]] || die "$1 failed: ${WAITED#*$'\t'}"
		return
	fi
	bench_sync_pid "$1" "$2" # (tests/bench/lib.sh)
}
for ((i = 1; i <= RUNS; i++)); do
	id=$(printf 'bench-%02d' "$i")
	# riklet
	t0=$(create "$id")
	wait_exact "$id" RUNNING 60
	R_MS+=("$(ms "$t0" "$WAIT_T")")
	R_STAMP_MS+=("$(ms "$t0" "$(line_epoch "$WAIT_LINE")")")
	T0_OF[$id]=$t0
	destroy "$id"
	if [[ -n $RPID_B ]]; then # the same with the BEFORE_LUA riklet
		t0=$(as_before create "$id")
		as_before wait_exact "$id" RUNNING 60
		B_MS+=("$(ms "$t0" "$WAIT_T")")
		as_before destroy "$id"
	fi
	# bare runc run --detach
	b=bare-$i
	a=$EPOCHREALTIME
	runc --root "$BROOT" run --detach --bundle "$BUNDLE" "$b" >"$T/bare.out" 2>&1 </dev/null ||
		{ cat "$T/bare.out" >&2; die "runc run failed"; }
	z=$EPOCHREALTIME
	RUN_MS+=("$(ms "$a" "$z")")
	runc --root "$BROOT" delete -f "$b" >/dev/null 2>&1 || die "runc delete -f $b failed"
	# bare runc create + start
	b=barecs-$i
	a=$EPOCHREALTIME
	runc --root "$BROOT" create --bundle "$BUNDLE" "$b" >"$T/bare.out" 2>&1 </dev/null &&
		runc --root "$BROOT" start "$b" >>"$T/bare.out" 2>&1 </dev/null ||
		{ cat "$T/bare.out" >&2; die "runc create/start failed"; }
	z=$EPOCHREALTIME
	CS_MS+=("$(ms "$a" "$z")")
	runc --root "$BROOT" delete -f "$b" >/dev/null 2>&1 || die "runc delete -f $b failed"
	# conmon + runc, as riklet runs them
	b=barecm-$i
	mkdir -p "$CM/$b.exit"
	a=$EPOCHREALTIME
	_OCI_SYNCPIPE=$SFD conmon --api-version 1 --cid="$b" --cuuid="$b" --name="$b" --runtime="$RUNC_BIN" --bundle="$BUNDLE" \
		--container-pidfile="$CM/$b.pid" --conmon-pidfile="$CM/$b.cpid" --log-path="k8s-file:$CM/$b.log" \
		--log-size-max=10485760 --persist-dir="$CM/$b.exit" --full-attach --runtime-arg=--root \
		--runtime-arg="$BROOT" --runtime-opt=-- >"$T/bare.out" 2>&1 </dev/null || { cat "$T/bare.out" >&2; die "conmon failed"; }
	sync_pid "conmon + runc create" "$CM/$b.pid"
	runc --root "$BROOT" start "$b" >>"$T/bare.out" 2>&1 </dev/null || { cat "$T/bare.out" >&2; die "runc start (conmon) failed"; }
	z=$EPOCHREALTIME
	CM_MS+=("$(ms "$a" "$z")")
	runc --root "$BROOT" delete -f "$b" >/dev/null 2>&1 || die "runc delete -f $b failed"
	# conmon + runc create + start through riklet-runc-run, as riklet runs a one-container Pod
	b=barecr-$i
	mkdir -p "$CM/$b.exit"
	a=$EPOCHREALTIME
	_OCI_SYNCPIPE=$SFD conmon --api-version 1 --cid="$b" --cuuid="$b" --name="$b" --runtime="$SHIM" --bundle="$BUNDLE" \
		--container-pidfile="$CM/$b.pid" --conmon-pidfile="$CM/$b.cpid" --log-path="k8s-file:$CM/$b.log" \
		--log-size-max=10485760 --persist-dir="$CM/$b.exit" --full-attach --runtime-arg="$RUNC_BIN" \
		--runtime-arg=--root --runtime-arg="$BROOT" --runtime-opt=-- >"$T/bare.out" 2>&1 </dev/null ||
		{ cat "$T/bare.out" >&2; die "conmon (riklet-runc-run) failed"; }
	sync_pid "conmon + runc run" "$CM/$b.pid"
	z=$SYNC_T
	CR_MS+=("$(ms "$a" "$z")")
	runc --root "$BROOT" delete -f "$b" >/dev/null 2>&1 || die "runc delete -f $b failed"
	[[ -n ${BENCH_QUIET:-} ]] || say "# run $i: riklet ${R_MS[-1]} ms${RPID_B:+ (before: ${B_MS[-1]} ms)}, runc run ${RUN_MS[-1]} ms, runc create+start ${CS_MS[-1]} ms, conmon+runc ${CM_MS[-1]} ms, conmon+shim run ${CR_MS[-1]} ms"
done

# stats V...: "median p90 min" (nearest-rank p90)
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		n = NR; med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		p = int(0.9 * n + 0.999999); if (p < 1) p = 1
		printf "%.1f %.1f %.1f\n", med, v[p], v[1] }'
}
read -r R_MED R_P90 R_MIN < <(stats "${R_MS[@]}")
read -r RUN_MED RUN_P90 RUN_MIN < <(stats "${RUN_MS[@]}")
read -r CS_MED CS_P90 CS_MIN < <(stats "${CS_MS[@]}")
read -r CM_MED CM_P90 CM_MIN < <(stats "${CM_MS[@]}")
read -r CR_MED CR_P90 CR_MIN < <(stats "${CR_MS[@]}")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# per-step medians from riklet's "instance bench-NN: created in T ms (step v, ...)" lines
step_median() { # step_median NAME: the median of that step over the timed runs, ms
	local vals
	mapfile -t vals < <(grep -E '\] instance bench-[0-9]+: created in ' "$LOG" | grep -oE "(\(|, |: )${1//+/\\+} [0-9.]+" |
		awk '{ print $NF }')
	((${#vals[@]})) && stats "${vals[@]}" | awk '{ print $1 }' || echo -
}
STEP_NAMES=("record writes" "image" "network" "overlay mount" "bundle config" "conmon + runc create" "conmon + runc run" "runc start")
# not on the create's path: the Pod's network setup made while conmon and runc create run
STEP_BESIDE="beside them: network setup"
BREAKDOWN= STEP_SUM=0
for n in "${STEP_NAMES[@]}"; do
	v=$(step_median "$n")
	[[ $v == - ]] && continue
	BREAKDOWN+="${BREAKDOWN:+, }$n $v"
	STEP_SUM=$(awk -v a="$STEP_SUM" -v b="$v" 'BEGIN { print a + b }')
done
v=$(step_median "$STEP_BESIDE")
[[ $v == - ]] || BREAKDOWN+="; $STEP_BESIDE $v"
CREATE_MED=$(step_median "created in")
# the lifecycle's phases of each start (riklet's debug line "instance ID: start phases (ms): ..."),
# and from the rename to riklet handing the manifest over (inotify, the manifest read)
phase_median() { # phase_median NAME: the median of that phase over the timed runs, ms
	local vals
	mapfile -t vals < <(grep -E '\] instance bench-[0-9]+: start phases' "$LOG" |
		awk -v n="$1 " 'i = index($0, n) { s = substr($0, i + length(n)); sub(/[^0-9.].*/, "", s); print s }')
	((${#vals[@]})) && stats "${vals[@]}" | awk '{ print $1 }' || echo -
}
PHASES= NOTICE_MS=()
for n in "handed over -> CREATING stored" "decode + validation" "admission policy" ", create" \
	"RUNNING stored + reported" "CREATING on disk (fsync)"; do
	v=$(phase_median "$n")
	[[ $v == - ]] || PHASES+="${PHASES:+, }${n#, } $v"
done
for id in "${!T0_OF[@]}"; do
	h=$(grep -E "\] instance $id: start phases" "$LOG" | grep -oE 'handed over at [0-9.]+' | tail -n 1)
	[[ -n $h ]] && NOTICE_MS+=("$(ms "${T0_OF[$id]}" "${h##* }")")
done
((${#NOTICE_MS[@]})) && PHASES="rename -> handed over (inotify, manifest read) $(stats "${NOTICE_MS[@]}" | awk '{ print $1 }'), $PHASES"
BEFORE_LINE=
if [[ -n $RPID_B ]]; then
	read -r B_MED B_P90 B_MIN < <(stats "${B_MS[@]}")
	B_STEPS=
	for n in "${STEP_NAMES[@]}"; do
		v=$(as_before step_median "$n")
		[[ $v == - ]] || B_STEPS+="${B_STEPS:+, }$n $v"
	done
	BEFORE_LINE="before (${BEFORE_RIKLET:+binary $BEFORE_RIKLET, }Lua tree ${BEFORE_LUA:-its own}), same runs: median $B_MED ms (p90 $B_P90, min $B_MIN), $(awk -v a="$B_MED" -v b="$RUN_MED" 'BEGIN { printf "%.2fx", a / b }') run --detach; per-step medians: ${B_STEPS:-none}"
fi

if ((PODS > 0)); then
# --- RSS with PODS Pods --------------------------------------------------------------------------
# pods_up FROM TO: Pods FROM..TO created and RUNNING
pods_up() {
	local i
	for ((i = $1; i <= $2; i++)); do create "$(printf 'pod-%02d' "$i")" >/dev/null; done
	for ((i = $1; i <= $2; i++)); do wait_state "$(printf 'pod-%02d' "$i")" RUNNING 180; done
	sleep 2
}
say "# starting 1, then 20, then $PODS Pods"
pods_up 1 1
ONE_RSS=$(rss_kib "$RPID" VmRSS)
ONE_ANON=$(rss_kib "$RPID" RssAnon)
pods_up 2 20
TWENTY_RSS=$(rss_kib "$RPID" VmRSS)
TWENTY_ANON=$(rss_kib "$RPID" RssAnon)
pods_up 21 "$PODS"
running=$(runc --root "$RROOT" list -q | grep -c '^pod-')
[[ $running == "$PODS" ]] || die "runc lists $running pod containers, expected $PODS"
PODS_RSS=$(rss_kib "$RPID" VmRSS)
PODS_HWM=$(rss_kib "$RPID" VmHWM)
PODS_ANON=$(rss_kib "$RPID" RssAnon)
PODS_PSS=$(pss_kib "$RPID")
# conmon's own memory per container: Rss and Pss of each Pod's conmon, averaged
CM_RSS_SUM=0 CM_PSS_SUM=0 CM_N=0
for f in "$STATE"/instances/pod-*/main/conmon.pid; do
	cp=$(cat "$f" 2>/dev/null) || continue
	[[ -r /proc/$cp/smaps_rollup ]] || continue
	CM_RSS_SUM=$((CM_RSS_SUM + $(rollup_kib "$cp" Rss)))
	CM_PSS_SUM=$((CM_PSS_SUM + $(rollup_kib "$cp" Pss)))
	CM_N=$((CM_N + 1))
done
((CM_N)) || die "no conmon found for the $PODS Pods"
CM_RSS=$((CM_RSS_SUM / CM_N)) CM_PSS=$((CM_PSS_SUM / CM_N))
say "# with $PODS Pods: VmRSS $PODS_RSS KiB, VmHWM $PODS_HWM KiB"
say "# destroying the $PODS Pods"
for ((i = 1; i <= PODS; i++)); do rm -f -- "$MAN/$(printf 'pod-%02d' "$i").json"; done
for ((i = 1; i <= PODS; i++)); do wait_state "$(printf 'pod-%02d' "$i")" TERMINATED 120; done
sleep 1
AFTER_RSS=$(rss_kib "$RPID" VmRSS)

fi

# The floor: a C program that does nothing, linked with riklet's direct libraries (as-needed off).
FLOOR_RSS= FLOOR_CURL=
if ((PODS > 0)) && command -v cc >/dev/null; then
	mapfile -t LIBS < <(objdump -p "$RIKLET" 2>/dev/null | awk '$1 == "NEEDED" { sub(/^lib/, "", $2); sub(/\.so.*/, "", $2); print $2 }')
	printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { char b[64]; FILE *f = fopen("/proc/self/status", "r");\n while (fgets(b, sizeof b, f)) if (!strncmp(b, "VmRSS:", 6)) fputs(b + 6, stdout); return 0; }\n' |
		sed '1i #include <string.h>' >"$T/floor.c"
	floor() { # floor LIB... -> VmRSS kB of the do-nothing program linked with LIBs
		cc -O2 -o "$T/floor" "$T/floor.c" -Wl,--no-as-needed "${@/#/-l}" 2>/dev/null && "$T/floor" | awk '{ print $1 }'
	}
	FLOOR_RSS=$(floor "${LIBS[@]}")
	FLOOR_CURL=$(floor "${LIBS[@]}" curl) # what an https:// scheduler adds (dlopen)
fi

# --- table ---------------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "ok" : "MISSED" }'; }
R_RATIO=$(awk -v a="$R_MED" -v b="$RUN_MED" 'BEGIN { printf "%.2f", a / b }')

printf '\n%s, runc %s, %d runs, %d Pods, --network %s, %s; load average %s before the timed runs, %s after\n\n' \
	"$("$RIKLET" version 2>/dev/null | head -n 1)" "$(runc --version | awk 'NR == 1 { print $3 }')" \
	"$RUNS" "$PODS" "$NETWORK" "$(uname -r)" "$LOAD_START" "$LOAD_END"
fmt='| %-44s | %-22s | %-22s | %-30s |\n'
printf "$fmt" metric riklet "baseline (bare runc)" "ratio / target"
printf "$fmt" "$(printf -- '-%.0s' {1..44})" "$(printf -- '-%.0s' {1..22})" "$(printf -- '-%.0s' {1..22})" "$(printf -- '-%.0s' {1..30})"
printf "$fmt" "start, cached image: median (ms)" "$R_MED" "run --detach: $RUN_MED" \
	"${R_RATIO}x / 1.3x $(verdict "$R_RATIO" 1.3), 1.0x $(verdict "$R_RATIO" 1.0)"
printf "$fmt" "start: p90 (ms)" "$R_P90" "run --detach: $RUN_P90" "$(ratio "$R_P90" "$RUN_P90")"
printf "$fmt" "start: min (ms)" "$R_MIN" "run --detach: $RUN_MIN" "$(ratio "$R_MIN" "$RUN_MIN")"
printf "$fmt" "start: median vs runc create+start (ms)" "$R_MED" "create+start: $CS_MED" "$(ratio "$R_MED" "$CS_MED") (p90 $CS_P90, min $CS_MIN)"
printf "$fmt" "start: median vs conmon + runc (ms)" "$R_MED" "conmon+runc: $CM_MED" "$(ratio "$R_MED" "$CM_MED") (p90 $CM_P90, min $CM_MIN)"
printf "$fmt" "start: median vs conmon + shim run (ms)" "$R_MED" "conmon+shim: $CR_MED" "$(ratio "$R_MED" "$CR_MED") (p90 $CR_P90, min $CR_MIN)"
printf "$fmt" "  what conmon costs: conmon+runc - create+start" "-" "$(awk -v a="$CM_MED" -v b="$CS_MED" 'BEGIN { printf "%.1f ms", a - b }')" ""
printf "$fmt" "  what conmon costs: conmon+shim - run" "-" "$(awk -v a="$CR_MED" -v b="$RUN_MED" 'BEGIN { printf "%.1f ms", a - b }')" \
	"conmon+shim / run: $(ratio "$CR_MED" "$RUN_MED")"
printf "$fmt" "  the driver's create (median ms)" "$CREATE_MED" "-" \
	"rest of the start: $(awk -v a="$R_MED" -v b="$CREATE_MED" 'BEGIN { printf "%.1f ms", a - b }')"
printf '\nper-step medians of the create (ms): %s\n' "${BREAKDOWN:-(no breakdown in the log: an older riklet)}"
printf 'phases of the start, medians (ms): %s\n' "${PHASES:-(none in the log: an older riklet, or not at --log-level debug)}"
read -r RS_MED _ < <(stats "${R_STAMP_MS[@]}")
printf 'riklet start by its log line'"'"'s own ms stamp (as before the waiter): median %s ms\n\n' "$RS_MED"
[[ -z $BEFORE_LINE ]] || printf '%s\n\n' "$BEFORE_LINE"
((PODS > 0)) || exit 0 # cleanup: the on_exit stack
printf "$fmt" "RSS idle, after start" "$(mib "$IDLE_RSS")" "-" "<= 8 MiB $(verdict "$IDLE_RSS" 8192)"
printf "$fmt" "  of which anon / Pss" "$(mib "$IDLE_ANON") / $(mib "$IDLE_PSS")" "-" ""
printf "$fmt" "RSS with 1 / 20 running Pods" "$(mib "$ONE_RSS") / $(mib "$TWENTY_RSS")" "-" \
	"$(awk -v a="$ONE_RSS" -v b="$TWENTY_RSS" 'BEGIN { printf "%+.0f KiB per Pod", (b - a) / 19 }')"
printf "$fmt" "  of which anon, 1 / 20 Pods" "$(mib "$ONE_ANON") / $(mib "$TWENTY_ANON")" "-" \
	"$(awk -v a="$ONE_ANON" -v b="$TWENTY_ANON" 'BEGIN { printf "%+.0f KiB per Pod", (b - a) / 19 }')"
printf "$fmt" "RSS with $PODS running Pods" "$(mib "$PODS_RSS")" "-" "<= 16 MiB $(verdict "$PODS_RSS" 16384)"
printf "$fmt" "  of which anon / Pss" "$(mib "$PODS_ANON") / $(mib "$PODS_PSS")" "-" ""
printf "$fmt" "peak RSS (VmHWM) during the Pods" "$(mib "$PODS_HWM")" "-" ""
printf "$fmt" "RSS idle again, Pods destroyed" "$(mib "$AFTER_RSS")" "-" ""
printf "$fmt" "conmon per container: Rss / Pss (avg of $CM_N)" "$(mib "$CM_RSS") / $(mib "$CM_PSS")" "runc alone: 0 (no process stays)" ""
if [[ -n $FLOOR_RSS ]]; then
	printf "$fmt" "RSS of an empty main() with riklet's libs" "-" "$(mib "$FLOOR_RSS")" "riklet idle - floor: $(mib $((IDLE_RSS - FLOOR_RSS)))"
	printf "$fmt" "  the same + libcurl (https:// scheduler)" "-" "$(mib "$FLOOR_CURL")" "libcurl alone: $(mib $((FLOOR_CURL - FLOOR_RSS)))"
fi
printf '\n'

# cleanup: the on_exit stack (riklet stopped after its instances are destroyed, runc leftovers
# deleted in both roots), then common.sh unmounts and removes TEST_TMP
exit 0
