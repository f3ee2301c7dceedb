# common.sh — TAP helpers for the integration tests (tests/integration/test_*.sh).
#
# ctest runs each test as `bash test_X.sh /path/to/riklet` with RIKLET_SRC_DIR and RIKLET_BUILD_DIR
# in the environment. A test starts with
#     source "$(dirname "$0")/../lib/common.sh"
# and gets:
#   RIKLET                 the riklet binary ($1, or $RIKLET, or $RIKLET_BUILD_DIR/riklet)
#   RIKLET_SRC_DIR, RIKLET_BUILD_DIR   (defaulted from this file's place when run by hand)
#   TEST_TMP               a fresh directory, removed at exit (KEEP_TMP=1 keeps it)
#   ok CMD MSG             pass when the shell command string CMD (eval'd) succeeds
#   nok CMD MSG            pass when CMD fails
#   is GOT EXPECTED MSG    string equality;  isnt GOT UNEXPECTED MSG
#   like GOT REGEX MSG     bash regex match; unlike GOT REGEX MSG
#   pass MSG / fail MSG    an unconditional result;  skip MSG  a skipped result
#   diag MSG... / diag_file FILE [N]   "# " lines (FILE: its last N lines, default 40)
#   skip_all REASON        "1..0 # SKIP REASON", exit 77 (ctest counts it as skipped)
#   bail_out REASON        "Bail out! REASON", exit 1
#   done_testing           print the plan "1..N"; exit 1 if any test failed, else 0
#   wait_for TIMEOUT_S CMD [ARG...]   run CMD every 0.1 s until it succeeds (0) or time runs out (1)
#   need_root, need_cmd CMD...        skip_all unless root / unless each CMD is on PATH
#   PYTHON                 Debian's /usr/bin/python3 (a python3 earlier on PATH, e.g. pyenv's,
#                          lacks Debian's grpcio); need_py MODULE...  skip_all unless importable
#   on_exit CMD            push a shell command string onto the cleanup stack; at exit (normal,
#                          failure, ctest timeout's SIGTERM, Ctrl-C) the stack runs last-in first-out,
#                          each command's failure ignored, then mounts under TEST_TMP are detached
#                          and TEST_TMP removed without crossing file systems.
#   free_port              print a loopback TCP port nothing listens on (not handed out twice)
#   kill_ours SIGNAL PID...  signal each PID that is still this test's process (its command line
#                          names TEST_TMP): a pid saved earlier may have ended and been given to
#                          another process since (pid_max is 32,768 here; a run of many Pods wraps
#                          it in minutes), which a plain kill -9 at the cleanup would kill
# Output of the commands that ok/nok run goes to stderr so stdout stays a clean TAP stream.

[[ -n ${RK_COMMON_SH:-} ]] && return 0
RK_COMMON_SH=1

RK_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${RIKLET_SRC_DIR:=$(cd "$RK_LIB_DIR/../.." && pwd)}"
: "${RIKLET_BUILD_DIR:=$RIKLET_SRC_DIR/build}"
export RIKLET_SRC_DIR RIKLET_BUILD_DIR
# Sourced without arguments, $1 here is the test's own $1: the riklet binary given by ctest.
RIKLET=${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}
export RIKLET

# --- TAP --------------------------------------------------------------------------------------
RK_TAP_N=0
RK_TAP_FAILED=0

diag() { local l; while IFS= read -r l; do printf '# %s\n' "$l"; done <<<"$*"; }

# diag_file FILE [N]: the last N lines of FILE as diagnostics (a log after a failure).
diag_file() {
	local f=$1 n=${2:-40}
	if [[ -r $f ]]; then
		printf '# --- %s (last %s lines)\n' "$f" "$n"
		tail -n "$n" -- "$f" | sed 's/^/#   /'
	else
		printf '# --- %s: not readable\n' "$f"
	fi
}

rk__result() { # rk__result PASSED(0|1) MSG
	RK_TAP_N=$((RK_TAP_N + 1))
	if (($1)); then
		printf 'ok %d - %s\n' "$RK_TAP_N" "$2"
	else
		RK_TAP_FAILED=$((RK_TAP_FAILED + 1))
		printf 'not ok %d - %s\n' "$RK_TAP_N" "$2"
		printf '#   Failed test at %s line %s.\n' "${BASH_SOURCE[2]##*/}" "${BASH_LINENO[1]}"
	fi
}

pass() { rk__result 1 "$1"; }
fail() { rk__result 0 "$1"; }
skip() { RK_TAP_N=$((RK_TAP_N + 1)); printf 'ok %d # SKIP %s\n' "$RK_TAP_N" "$1"; }

ok() {
	if eval "$1" >&2; then rk__result 1 "$2"; return 0; fi
	rk__result 0 "$2"; printf '#   command: %s\n' "$1"; return 1
}
nok() {
	if eval "$1" >&2; then rk__result 0 "$2"; printf '#   command succeeded: %s\n' "$1"; return 1; fi
	rk__result 1 "$2"; return 0
}
is() {
	if [[ $1 == "$2" ]]; then rk__result 1 "$3"; return 0; fi
	rk__result 0 "$3"; printf "#          got: '%s'\n#     expected: '%s'\n" "$1" "$2"; return 1
}
isnt() {
	if [[ $1 != "$2" ]]; then rk__result 1 "$3"; return 0; fi
	rk__result 0 "$3"; printf "#          got: '%s'\n#     expected anything else\n" "$1"; return 1
}
like() {
	if [[ $1 =~ $2 ]]; then rk__result 1 "$3"; return 0; fi
	rk__result 0 "$3"; printf "#                   '%s'\n#     doesn't match '%s'\n" "$1" "$2"; return 1
}
unlike() {
	if ! [[ $1 =~ $2 ]]; then rk__result 1 "$3"; return 0; fi
	rk__result 0 "$3"; printf "#                   '%s'\n#           matches '%s'\n" "$1" "$2"; return 1
}

skip_all() { printf '1..0 # SKIP %s\n' "$*"; exit 77; }
bail_out() { printf 'Bail out! %s\n' "$*"; exit 1; }

done_testing() {
	printf '1..%d\n' "$RK_TAP_N"
	if ((RK_TAP_FAILED)); then
		printf '# Looks like you failed %d test(s) of %d.\n' "$RK_TAP_FAILED" "$RK_TAP_N"
		exit 1
	fi
	exit 0
}

# --- waiting ----------------------------------------------------------------------------------
# wait_for TIMEOUT_S CMD [ARG...]: TIMEOUT_S may be fractional ("2.5"). CMD runs as an argv (use
# `wait_for 5 bash -c '...'` or a function for pipelines); its output is discarded.
wait_for() {
	local t=$1; shift
	local now deadline
	now=${EPOCHREALTIME/./}
	deadline=$((now + $(awk -v t="$t" 'BEGIN { printf "%d", t * 1000000 }')))
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		now=${EPOCHREALTIME/./}
		((now >= deadline)) && return 1
		sleep 0.1
	done
}

# --- requirements -----------------------------------------------------------------------------
need_root() { [[ $(id -u) == 0 ]] || skip_all "needs root"; }

# The Debian package that brings each tool, to make a skip actionable.
declare -A RK_CMD_PKG=(
	[runc]=runc [skopeo]=skopeo [umoci]=umoci [docker-registry]=docker-registry
	[busybox]=busybox-static [jq]=jq [curl]=curl [ip]=iproute2 [iptables]=iptables
	[python3]=python3 [luajit]=luajit [ss]=iproute2 [unshare]=util-linux [nsenter]=util-linux
)
PYTHON=${PYTHON:-/usr/bin/python3}
export PYTHON
declare -A RK_PY_PKG=([grpc]=python3-grpcio [google.protobuf]=python3-protobuf [grpc_tools]=python3-grpc-tools)
need_py() {
	local m
	[[ -x $PYTHON ]] || skip_all "needs $PYTHON (apt-get install python3)"
	for m in "$@"; do
		"$PYTHON" -c "import $m" 2>/dev/null ||
			skip_all "needs python module $m${RK_PY_PKG[$m]:+ (apt-get install ${RK_PY_PKG[$m]})}"
	done
}
need_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			skip_all "needs $c${RK_CMD_PKG[$c]:+ (apt-get install ${RK_CMD_PKG[$c]})}"
	done
}

# --- temp dir and cleanup stack ---------------------------------------------------------------
RK_CLEANUP=()
TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/riklet-test.XXXXXX") || bail_out "mktemp failed"
export TEST_TMP

on_exit() { RK_CLEANUP+=("$1"); }

kill_ours() {
	local sig=$1 p
	shift
	for p in "$@"; do
		[[ -n $p ]] && tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$TEST_TMP" &&
			kill -"$sig" "$p" 2>/dev/null
	done
	return 0
}

rk__unmount_under() { # detach every mount at or below $1, deepest first
	local d=$1 mp
	[[ -r /proc/self/mountinfo ]] || return 0
	# field 5 is the mount point, octal-escaped (\040 for a space)
	awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r mp; do
		printf -v mp '%b' "$mp" # (no $(...): a fork per mount, polled every 0.1 s)
		[[ $mp == "$d" || $mp == "$d"/* ]] && printf '%s\n' "$mp"
	done | sort -r | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
	return 0
}

rk__cleanup() {
	local rc=$? i
	trap - EXIT INT TERM HUP
	set +e
	for ((i = ${#RK_CLEANUP[@]} - 1; i >= 0; i--)); do
		eval "${RK_CLEANUP[i]}" </dev/null >&2
	done
	RK_CLEANUP=()
	if [[ -n ${TEST_TMP:-} && -d $TEST_TMP ]]; then
		if [[ -n ${KEEP_TMP:-} ]]; then
			printf '# KEEP_TMP: kept %s\n' "$TEST_TMP" >&2
		else
			rk__unmount_under "$TEST_TMP"
			rm -rf --one-file-system -- "$TEST_TMP"
		fi
	fi
	exit "$rc"
}
trap rk__cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- ports ------------------------------------------------------------------------------------
# free_port: a random port in 20000-32767 (below Linux's default ephemeral range, so outgoing
# connections do not take it meanwhile) on which nothing listens now.
# Ports handed out are noted in a file, since callers run free_port in a $(...) subshell.
free_port() {
	local p i given=$TEST_TMP/.ports-given
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + SRANDOM % 12768))
		grep -qx "$p" "$given" 2>/dev/null && continue
		if command -v ss >/dev/null 2>&1; then
			[[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] || continue
		else
			(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
		fi
		printf '%s\n' "$p" >>"$given"
		printf '%s\n' "$p"
		return 0
	done
	echo "free_port: no free port found" >&2
	return 1
}
