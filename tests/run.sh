#!/usr/bin/env bash
# run.sh — THE test command (README, .ci/run): on Debian 12 as root it installs every package the
# build and the tests need (apt-get update only when something is missing), builds riklet into
# build/ and runs every test with ctest. Its last lines are ctest's summary; its exit code is
# ctest's (non-zero when a test fails).
#
#   bash tests/run.sh [--no-install] [CTEST-ARGS...]     e.g.  bash tests/run.sh -R integration
#
# BUILD_DIR (default build) picks another build directory; CTEST_PARALLEL_LEVEL runs tests in
# parallel (default: one at a time, since integration tests drive the host's runc and iptables).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tests/lib/deps.sh

install=1
ctest_args=()
while (($#)); do
	case $1 in
	--no-install) install=; shift ;;
	-h | --help) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
	--) shift; ctest_args+=("$@"); break ;;
	*) ctest_args+=("$1"); shift ;;
	esac
done
build=${BUILD_DIR:-build}

echo "== dependencies"
if [[ -n $install ]]; then
	deps_install
else
	missing=$(deps_missing | tr '\n' ' ')
	[[ -z $missing ]] || echo "warning: not installed (tests needing them will fail or skip): $missing"
fi

# A build dir configured from another checkout (a copied tree) makes cmake refuse: start it over.
if [[ -f $build/CMakeCache.txt ]]; then
	home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
	if [[ -n $home && $home != "$PWD" ]]; then
		echo "note: $build/ was configured for $home; reconfiguring for $PWD"
		rm -rf -- "$build/CMakeCache.txt" "$build/CMakeFiles"
	fi
fi

echo "== build ($build/)"
cmake -S . -B "$build"
cmake --build "$build" -j"$(nproc)"

echo "== tests"
exec ctest --test-dir "$build" --output-on-failure --no-tests=error ${ctest_args[@]+"${ctest_args[@]}"}
