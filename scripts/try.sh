#!/usr/bin/env bash
# try.sh — the README's "run it" command: on a fresh Debian 12 machine, as root, install the
# packages, build riklet, build the offline example image, and run riklet in standalone mode on
# examples/standalone/ (one busybox Pod that prints a line every 5 s). Works offline once the
# Debian packages are installed.
#
#   bash scripts/try.sh [--no-install] [RIKLET-OPTIONS...]
#
# Ctrl-C stops riklet; by design its workloads keep running (a restarted riklet re-adopts them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tests/lib/deps.sh

install=1
if [[ ${1:-} == --no-install ]]; then install=; shift; fi
if [[ $(id -u) != 0 ]]; then
	echo "try.sh: riklet drives runc, mounts and iptables: run it as root" >&2
	exit 1
fi
[[ -z $install ]] || deps_install
cmake -S . -B build
cmake --build build -j"$(nproc)"
bash scripts/example-image.sh

cat <<HINT

== riklet --standalone examples/standalone   (Ctrl-C to stop riklet)
   in another shell:  build/riklet ps            instances and their state
                      build/riklet logs ID       the container's output (ID from ps)
HINT
# A trap that does nothing (not an ignored signal, which riklet would inherit) lets this script
# outlive Ctrl-C to print what is left running.
trap ':' INT TERM
rc=0
build/riklet --standalone examples/standalone "$@" || rc=$?
echo
# 130/143: stopped by Ctrl-C or SIGTERM; anything else is riklet's own failure, shown above.
[[ $rc == 0 || $rc == 130 || $rc == 143 ]] || echo "riklet exited with status $rc"
cat <<HINT
riklet stopped; the example workload keeps running by design. To remove it, either
  rm examples/standalone/busybox.json and start riklet again (it destroys what has no manifest),
  or run:  build/riklet cleanup
HINT
exit "$rc"
