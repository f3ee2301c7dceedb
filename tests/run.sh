#!/usr/bin/env bash
# run.sh — THE test command (README, .ci/run): on Debian 12 as root it installs every package the
# build and the tests need (apt-get update only when something is missing), then
#   1. builds riklet into build/ and runs every test with ctest;
#   2. builds it again with clang, ASan + UBSan + LeakSanitizer (-DRIKLET_SANITIZE=ON) into
#      build-asan/ and runs the same tests there; any sanitizer report, also from a riklet a test
#      ran in the background (build-asan/sanitizer-reports/), fails the run;
#   3. builds the libFuzzer targets (-DRIKLET_FUZZ=ON) into build-fuzz/ and runs each for
#      FUZZ_SECONDS (default 30) from its corpus tests/fuzz/corpus/<target>/, FUZZ_JOBS (default: the
#      number of cores) at a time; a crash fails the run (the input is kept as
#      build-fuzz/artifacts/<target>-crash-*).
# The builds of steps 2 and 3 are made in the background while step 1's tests run, at the lowest
# CPU and I/O priority (their output in build-asan/bg-build.log, build-fuzz/bg-build.log).
# Its last lines summarise the three; its exit code is non-zero when any of them failed.
#
#   bash tests/run.sh [--no-install] [--no-asan] [--no-fuzz] [CTEST-ARGS...]
#   e.g.  bash tests/run.sh --no-install -R integration
#
# With CTEST-ARGS (a subset), steps 2 and 3 run only when asked: RIKLET_ASAN=1, RIKLET_FUZZ=1.
# Step 2 leaves out the slowest integration tests (see below; RIKLET_ASAN_ALL=1 keeps them);
# ASAN_CTEST_ARGS replaces that with other ctest arguments for step 2 only.
# --only-asan / --only-fuzz run just that step. BUILD_DIR (default build) picks another build
# directory. RIKLET_TEST_JOBS (default 2) tests run at a time in steps 1 and 2: each integration
# test keeps to its own corner (state dir, runc root, registry port, network and mount namespace
# under its TEST_TMP; it counts and kills only its own processes), so two run side by side as they
# do beside another developer's run; test_deb (installs the package) runs alone. 1 runs them one
# at a time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tests/lib/deps.sh

install=1
ctest_args=()
do_main=1 do_asan=${RIKLET_ASAN-} do_fuzz=${RIKLET_FUZZ-}
while (($#)); do
	case $1 in
	--no-install) install=; shift ;;
	--no-asan) do_asan=0; shift ;;
	--no-fuzz) do_fuzz=0; shift ;;
	--only-asan) do_main=0 do_asan=1 do_fuzz=0; shift ;;
	--only-fuzz) do_main=0 do_asan=0 do_fuzz=1; shift ;;
	-h | --help) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
	--) shift; ctest_args+=("$@"); break ;;
	*) ctest_args+=("$1"); shift ;;
	esac
done
build=${BUILD_DIR:-build}
test_jobs=${RIKLET_TEST_JOBS:-2}
[[ $test_jobs =~ ^[1-9][0-9]*$ ]] || { echo "error: RIKLET_TEST_JOBS must be a number of tests (1, 2, ...), not '$test_jobs'"; exit 2; }

echo "== dependencies"
if [[ -n $install ]]; then
	deps_install
else
	missing=$(deps_missing | tr '\n' ' ')
	[[ -z $missing ]] || echo "warning: not installed (tests needing them will fail or skip): $missing"
fi

# A build dir configured from another checkout (a copied tree) makes cmake refuse: start it over.
fresh_cache() {
	[[ -f $1/CMakeCache.txt ]] || return 0
	local home
	home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$1/CMakeCache.txt")
	if [[ -n $home && $home != "$PWD" ]]; then
		echo "note: $1/ was configured for $home; reconfiguring for $PWD"
		rm -rf -- "$1/CMakeCache.txt" "$1/CMakeFiles"
	fi
}
fresh_cache "$build"

# A subset of the tests (CTEST-ARGS) is for iterating: the sanitizer and fuzzing steps only when asked.
if ((${#ctest_args[@]})); then
	do_asan=${do_asan:-0} do_fuzz=${do_fuzz:-0}
else
	do_asan=${do_asan:-1} do_fuzz=${do_fuzz:-1}
fi
[[ $do_asan == 0 && $do_fuzz == 0 ]] || command -v clang >/dev/null ||
	{ echo "error: the sanitizer and fuzzing steps need clang (apt-get install clang libclang-rt-14-dev)"; exit 1; }

summary=() failed=0
step() { # step NAME RC: remember how a step went
	if (($2 == 0)); then summary+=("$1: passed"); else summary+=("$1: FAILED"); failed=1; fi
}

asan=build-asan fz=build-fuzz
fuzz_targets=()
for c in tests/fuzz/corpus/*/; do fuzz_targets+=("$(basename "$c")"); done
build_asan() {
	cmake -S . -B "$asan" -DCMAKE_C_COMPILER=clang -DRIKLET_SANITIZE=ON && cmake --build "$asan" -j"$(nproc)"
}
build_fuzz() {
	cmake -S . -B "$fz" -DCMAKE_C_COMPILER=clang -DRIKLET_FUZZ=ON &&
		cmake --build "$fz" -j"$(nproc)" --target "${fuzz_targets[@]/#/fuzz_}"
}

# Steps 2 and 3 need builds of their own (clang, instrumented: minutes on CI's 2 cores). When step 1
# runs, they are made meanwhile in the background, at the lowest CPU and I/O priority (nice 19,
# ionice idle): the integration tests mostly wait (containers, timers, a registry), the builds take
# only the CPU they leave, and steps 2 and 3 start at once. Their output goes to DIR/bg-build.log.
bg_pid=
kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill "$1" 2>/dev/null || true; }
if ((do_main && (do_asan || do_fuzz))); then
	((do_asan)) && fresh_cache "$asan" && mkdir -p -- "$asan" && rm -f -- "$asan/bg-build.rc"
	((do_fuzz)) && fresh_cache "$fz" && mkdir -p -- "$fz" && rm -f -- "$fz/bg-build.rc"
fi
bg_builds() {
	renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
	ionice -c 3 -p "$BASHPID" >/dev/null 2>&1 || true
	local t r
	if ((do_asan)); then
		t=$SECONDS r=0
		build_asan >"$asan/bg-build.log" 2>&1 || r=$?
		echo "$r $((SECONDS - t))" >"$asan/bg-build.rc"
	fi
	if ((do_fuzz)); then
		t=$SECONDS r=0
		build_fuzz >"$fz/bg-build.log" 2>&1 || r=$?
		echo "$r $((SECONDS - t))" >"$fz/bg-build.rc"
	fi
}
# bg_wait DIR: wait for DIR's background build; fail the run (as a failed build in the foreground
# does) with the end of its log when it failed
bg_wait() {
	local r secs
	while [[ ! -e $1/bg-build.rc ]] && kill -0 "$bg_pid" 2>/dev/null; do sleep 1; done
	read -r r secs 2>/dev/null <"$1/bg-build.rc" || r=1 secs=?
	if ((r)); then
		echo "error: the build in $1/ failed (exit $r); the end of $1/bg-build.log:"
		tail -n 60 -- "$1/bg-build.log"
		exit 1
	fi
	echo "(built in the background during step 1, at low priority, in $secs s: $1/bg-build.log)"
}

if ((do_main)); then
	echo "== build ($build/)"
	cmake -S . -B "$build"
	cmake --build "$build" -j"$(nproc)"
	if ((do_asan || do_fuzz)); then
		bg_builds &
		bg_pid=$!
		trap 'for j in $(jobs -p); do kill_tree "$j"; done' EXIT # (only a job still running)
	fi
	echo "== tests"
	rc=0
	ctest --test-dir "$build" -j "$test_jobs" --output-on-failure --no-tests=error ${ctest_args[@]+"${ctest_args[@]}"} || rc=$?
	step "tests ($build/)" $rc
fi

if ((do_asan)); then
	echo "== sanitizer build ($asan/: clang, ASan + UBSan + LeakSanitizer)"
	if [[ -n $bg_pid ]]; then
		bg_wait "$asan"
	else
		fresh_cache "$asan"
		build_asan
	fi
	reports=$asan/sanitizer-reports
	rm -rf -- "$reports" && mkdir -p -- "$reports"
	echo "== tests under the sanitizers (reports go to $reports/)"
	t0=$SECONDS rc=0
	# Only riklet's C (core/, bindings/) is instrumented: LuaJIT code and the tools a test drives are
	# not. The integration tests whose minutes go to QEMU guests booting, dpkg/cpack, or dozens of
	# kill/crash/restart rounds of the same C paths the others run, or probe periods waited out
	# (test_interlink_probes: probe.test.lua runs its C, usock in a netns, here), or a sweep of riklet
	# starts under fd limits (test_standalone_emfile: ~13 starts, ASan's own fds move its limits), or
	# a kill -9 at a random point of a 40-Pod burst and held conmons waited out on a held xtables lock
	# (test_hostile_held_burst, test_hostile_conmon_held: ~1 min each, the create and teardown paths
	# test_conmon and test_lifecycle run here), or a 10 MB log line followed by clients that never
	# read, whose point is riklet's RSS, not asserted here (test_hostile_follow_clients; its httpd
	# side runs in test_hostile_http here), are left out of this pass by
	# default to keep CI under its 45 minutes (they run in step 1); RIKLET_ASAN_ALL=1 runs them too.
	# ASAN_CTEST_ARGS replaces that default (e.g. "-E test_kill_loop").
	asan_skip='test_fault_points|test_kill_loop|test_function|test_firecracker_function|test_deb|test_interlink_probes|test_standalone_emfile|test_hostile_held_burst|test_hostile_conmon_held|test_hostile_follow_clients'
	if [[ -z ${ASAN_CTEST_ARGS-} && -z ${RIKLET_ASAN_ALL-} ]]; then
		ASAN_CTEST_ARGS="-E $asan_skip"
		echo "(left out of this pass, run in step 1: ${asan_skip//|/, }; RIKLET_ASAN_ALL=1 runs them)"
	fi
	# shellcheck disable=SC2086
	ctest --test-dir "$asan" -j "$test_jobs" --output-on-failure --no-tests=error ${ctest_args[@]+"${ctest_args[@]}"} \
		${ASAN_CTEST_ARGS-} || rc=$?
	echo "sanitizer tests took $((SECONDS - t0)) s"
	# A file that only says LeakSanitizer could not stop a thread of a process for its exit-time
	# leak check (PTRACE_GETREGS failed: the process was being killed meanwhile, e.g. a test's
	# kill -9 during that check) holds no finding: it is shown, and does not fail the step.
	shopt -s nullglob
	found=() stopped=()
	for f in "$reports"/*; do
		if [[ -s $f ]] && ! grep -qvE '^==[0-9]+==Unable to get registers from thread [0-9]+\.$' "$f"; then
			stopped+=("$f")
		else
			found+=("$f")
		fi
	done
	shopt -u nullglob
	for f in ${stopped[@]+"${stopped[@]}"}; do
		echo "note: $f: $(head -c 200 -- "$f") (LeakSanitizer's leak check of a process killed during it: no finding)"
	done
	if ((${#found[@]})); then
		echo "== ${#found[@]} sanitizer report(s): FAILED"
		for f in "${found[@]}"; do
			echo "--- $f"
			head -n 80 -- "$f"
		done
		rc=1
	fi
	step "tests under ASan + UBSan + LSan ($asan/, ${#found[@]} report(s))" $rc
fi

if ((do_fuzz)); then
	secs=${FUZZ_SECONDS:-30}
	echo "== fuzz targets ($fz/: clang, libFuzzer + ASan + UBSan), ${secs} s each"
	if [[ -n $bg_pid ]]; then
		bg_wait "$fz"
		wait "$bg_pid" || true # reaped, so that `wait -n` below sees only fuzzers
	else
		fresh_cache "$fz"
		build_fuzz
	fi
	targets=("${fuzz_targets[@]}")
	mkdir -p -- "$fz/artifacts" "$fz/stats"
	# The targets run FUZZ_JOBS at a time (default: one per core): each is one process on one core
	# for its FUZZ_SECONDS of wall time, so two at a time on CI's 2 cores give each the same CPU as
	# one after another did, in half the wall time.
	jobs=${FUZZ_JOBS:-$(nproc)}
	fuzz_one() { # fuzz_one TARGET: its exit code in $fz/stats/TARGET.rc
		local t=$1 r=0 dict=()
		# new inputs go to $fz/corpus/<t> (kept between runs), never into the repository's seeds
		mkdir -p -- "$fz/corpus/$t"
		[[ -f tests/fuzz/$t.dict ]] && dict=(-dict="tests/fuzz/$t.dict")
		"$fz/fuzz_$t" ${dict[@]+"${dict[@]}"} -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
			-artifact_prefix="$fz/artifacts/$t-" "$fz/corpus/$t" "tests/fuzz/corpus/$t" \
			>"$fz/stats/$t.log" 2>&1 || r=$?
		echo "$r" >"$fz/stats/$t.rc"
	}
	running=0
	for t in "${targets[@]}"; do
		rm -f -- "$fz/stats/$t.rc"
		if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
		fuzz_one "$t" &
		running=$((running + 1))
	done
	wait
	rc=0
	for t in "${targets[@]}"; do
		r=$(cat "$fz/stats/$t.rc" 2>/dev/null || echo 1)
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fz/stats/$t.log" | tail -n 1)
		if ((r)); then
			echo "fuzz_$t: CRASH (exit $r) after ${runs:-?} executions; the input is in $fz/artifacts/:"
			grep -E -A40 'ERROR:|runtime error|raised instead' "$fz/stats/$t.log" | head -n 60
			rc=1
		else
			echo "fuzz_$t: ${runs:-?} executions in ${secs} s, no crash"
		fi
		echo "$t ${runs:-?} $secs $r" >>"$fz/stats/last-run.txt.new"
	done
	mv -f -- "$fz/stats/last-run.txt.new" "$fz/stats/last-run.txt"
	rm -rf -- /dev/shm/riklet-fuzz-store # fuzz_store's state dir (fixed: its seeds name it)
	step "fuzzing ($fz/, ${secs} s per target)" $rc
fi

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
