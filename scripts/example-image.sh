#!/usr/bin/env bash
# example-image.sh — build the offline example image used by examples/busybox.json: busybox-static
# in a local OCI layout (no docker, no network), whose container prints a line every 5 seconds
# (so `riklet logs` shows something) and exits 0 on SIGTERM.
#
#   scripts/example-image.sh [LAYOUT[:TAG]]     default /var/lib/riklet/example/busybox:latest
#
# Workloads reference it as "oci:/var/lib/riklet/example/busybox:latest". Rebuilding with the same
# inputs is a no-op. Needs umoci, jq and busybox-static (scripts/try.sh installs them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/mkimage.sh"

ref=${1:-/var/lib/riklet/example/busybox:latest}
script='trap "echo \"$GREETING from busybox: bye\"; exit 0" TERM INT
i=0
while :; do
	i=$((i + 1))
	echo "$GREETING from busybox on $(hostname): tick $i"
	sleep 5 & wait $!
done'
mkimage --env GREETING=hello --cmd "$(jq -cn --arg s "$script" '["sh", "-c", $s]')" "$ref"
IFS=$'\t' read -r layout tag < <(rk__split_ref "$ref")
echo "example image ready: oci:$layout:$tag"
