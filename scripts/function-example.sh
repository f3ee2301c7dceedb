#!/usr/bin/env bash
# function-example.sh — run examples/function.json offline: build the tiny test guest from Debian
# packages (tests/lib/guest.sh: the cloud kernel, a busybox initrd with the virtio modules, an ext4
# rootfs whose init serves HTTP on 8080), serve the rootfs on 127.0.0.1:8000 (busybox httpd), run
# the Function with `riklet run`, fetch the guest's page on the node port 45000 with curl, then
# stop riklet (Ctrl-C: the VM is destroyed).
#
#   scripts/function-example.sh [GUEST_DIR]     default /var/lib/riklet/example/guest
#
# As root, on a Debian 12 with linux-image-cloud-amd64, busybox-static, qemu-system-x86,
# qemu-utils, e2fsprogs, cpio, kmod (tests/lib/deps.sh). riklet's options come from the
# environment as usual (RIKLET_STATE_DIR, RIKLET_VM_ACCEL=tcg where KVM does not work...).
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
riklet=${RIKLET:-$src/build/riklet}
dir=${1:-/var/lib/riklet/example/guest}
source "$src/tests/lib/guest.sh"

guest_build "$dir" serve
cp "$dir/rootfs-serve.ext4" "$dir/hello-function.ext4"
def=$src/examples/function.json
if [[ ! -f $src/lua/riklet/rootfs.lua ]]; then
	# this build has no HTTP rootfs download yet: the same workload, its rootfs as a file:// URL
	def=$(mktemp --suffix=.json)
	jq --arg u "file://$dir/hello-function.ext4" '.spec.function.execution.rootfs = $u' "$src/examples/function.json" >"$def"
fi

busybox httpd -f -p 127.0.0.1:8000 -h "$dir" </dev/null >/dev/null 2>&1 &
httpd=$!
"$riklet" run "$def" --kernel-path "$dir/vmlinuz" --initrd-path "$dir/initrd.img" &
rk=$!
trap 'kill -INT $rk 2>/dev/null || true; wait $rk 2>/dev/null || true; kill $httpd 2>/dev/null || true' EXIT

for _ in $(seq 1 240); do
	if page=$(curl -fsS -m 2 http://127.0.0.1:45000/ 2>/dev/null); then
		echo "curl http://127.0.0.1:45000/ -> $page"
		exit 0
	fi
	kill -0 "$rk" 2>/dev/null || { echo "riklet ended before the guest answered" >&2; exit 1; }
	sleep 0.5
done
echo "the guest did not answer on 127.0.0.1:45000 within 120 s" >&2
exit 1
