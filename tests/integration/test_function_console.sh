#!/usr/bin/env bash
# test_function_console.sh — a Function's guest that floods its serial console (review finding):
# console.log stays near --log-size-max (riklet starts it over, as conmon does a container's log)
# instead of growing until the node's disk is full; the VM keeps running and is destroyed cleanly.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/guest.sh"
source "$(dirname "$0")/../lib/fntest.sh"
need_root
need_cmd qemu-system-x86_64 qemu-img mkfs.ext4 busybox jq iptables-legacy ip cpio modinfo
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
guest_kernel >/dev/null 2>&1 || skip_all "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
mount --make-rprivate / || bail_out "cannot make / private in the test mount namespace"
rk_init
ip link set lo up

G=$TEST_TMP/guest
guest_build "$G" flood >&2 || bail_out "cannot build the test guest"
on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'
CAP=262144
cat >"$MANIFESTS/flood.json" <<JSON
{"apiVersion": "v1", "kind": "Function", "name": "flood", "replicas": null,
 "spec": {"containers": [], "function": {"execution": {"rootfs": "file://$G/rootfs-flood.ext4"}}}}
JSON
rk_start_standalone --network bridge --kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel tcg \
	--vm-machine pc --stop-grace 2 --log-size-max "$CAP" || bail_out "riklet did not start"
ok "rk_wait_status 60 flood RUNNING" "the flooding Function runs"
LOGF=$STATE/instances/flood/console.log
flooding() { grep -q 'flood flood' "$LOGF" 2>/dev/null; }
ok "wait_for 120 flooding" "its guest floods the console" || diag_file "$LOGF" 20
# sample size and allocated blocks for 20 s; a shrink means riklet started the file over
max=0 written=0 prev=0
for _ in $(seq 40); do
	sleep 0.5
	sz=$(stat -c %s "$LOGF" 2>/dev/null || echo 0)
	blocks=$(($(stat -c %b "$LOGF" 2>/dev/null || echo 0) * 512))
	((sz < prev)) && written=$((written + prev))
	prev=$sz
	((sz > max)) && max=$sz
	((blocks > max)) && max=$blocks
done
written=$((written + prev))
diag "console.log: at most $max bytes seen; at least $written bytes written by the guest in 20 s"
ok "((written > 2 * CAP))" "the guest wrote more than twice the cap ($written bytes)"
ok "((max <= 4 * CAP))" "console.log (size and blocks) stayed within 4 x --log-size-max ($max <= $((4 * CAP)))"
is "$(rk_status flood)" RUNNING "the VM is still RUNNING"
rm -f "$MANIFESTS/flood.json"
ok "wait_for 60 test ! -e $STATE/instances/flood" "destroyed: its directory is gone"
ok "wait_for 20 test -z \"\$(qemu_pids flood/)\"" "no QEMU left"
done_testing
