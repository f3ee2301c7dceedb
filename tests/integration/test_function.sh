#!/usr/bin/env bash
# test_function.sh — Functions end to end with real QEMU guests (-accel tcg), through
# `riklet --standalone` in a private network + mount namespace: a guest built from Debian packages
# (tests/lib/guest.sh) boots CREATING -> RUNNING, a client in another namespace fetches its page
# through the node port, kill -9 of riklet with two VMs running re-adopts both (same QEMU pids) and
# the port still serves; bad input (not ext4, a guest that panics, a missing kernel, a missing QEMU)
# goes FAILED with the reason and leaves no QEMU, TAP, rule, disk or socket; a guest that powers off
# is TERMINATED; a destroy leaves nothing at all.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/guest.sh"
source "$(dirname "$0")/../lib/fntest.sh"
need_root
need_cmd qemu-system-x86_64 qemu-img mkfs.ext4 busybox curl jq iptables-legacy ip nsenter cpio modinfo
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
guest_kernel >/dev/null 2>&1 || skip_all "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
mount --make-rprivate / || bail_out "cannot make / private in the test mount namespace"
rk_init
ip link set lo up

G=$TEST_TMP/guest
guest_build "$G" serve poweroff panic >&2 || bail_out "cannot build the test guest"
head -c 4M /dev/urandom >"$G/not-ext4.img"
sum0=$(md5sum <"$G/rootfs-serve.ext4")

# every QEMU this test's riklet started (its command line names the state dir), killed at exit
on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'

FN_OPTS=(--network bridge --kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel tcg --vm-machine pc
	--stop-grace 5)

# fn_manifest ID ROOTFS [PORT]
fn_manifest() {
	local exposure=null
	[[ -n ${3:-} ]] && exposure="{\"port\": $3, \"targetPort\": 8080, \"type\": \"NodePort\"}"
	cat >"$MANIFESTS/$1.json" <<EOF
{"apiVersion": "v1", "kind": "Function", "name": "$1", "replicas": null,
 "spec": {"containers": [], "function": {"execution": {"rootfs": "file://$2"}, "exposure": $exposure}}}
EOF
}
ps_vm() { rk_ps_json | jq -r --arg id "$1" ".instances[] | select(.id == \$id) | .vm.$2 // empty"; }
qpid() { qemu_pids "$1/" | head -n1; }
# alive PID: running, not a zombie (a QEMU orphaned by a killed riklet is reaped by init, in its time)
alive() { [[ -r /proc/$1/stat ]] && ! grep -q '^[0-9]* ([^)]*) [ZX]' "/proc/$1/stat"; }
fetch_ok() { [[ $(client "$1") == "hello from a riklet guest" ]]; }

# a client host in its own namespace, reaching the node on 192.168.77.1
fn_client_ns

# --- boot, serve, bad input, power off ------------------------------------------------------------
cp "$G/rootfs-serve.ext4" "$G/serve-copy.ext4"
fn_manifest fn-a "$G/rootfs-serve.ext4" 45001
fn_manifest fn-b "$G/serve-copy.ext4" 45002
fn_manifest bad-ext4 "$G/not-ext4.img"
fn_manifest panic "$G/rootfs-panic.ext4"
fn_manifest off "$G/rootfs-poweroff.ext4"
rk_start_standalone "${FN_OPTS[@]}" || bail_out "riklet did not start"

ok "rk_wait_status 60 fn-a RUNNING" "fn-a: CREATING -> RUNNING"
ok "wait_for 120 fetch_ok 45001" "a client in another namespace fetches the guest's page through node port 45001"
is "$(client 45001)" "hello from a riklet guest" "the page is the guest's"
pid_a=$(qpid fn-a)
ok "[[ -n '$pid_a' ]] && kill -0 $pid_a" "fn-a has a QEMU process ($pid_a)"
is "$(ps_vm fn-a pid)" "$pid_a" "ps --json shows the QEMU pid"
like "$(ps_vm fn-a answering_after)" '^[0-9]+(\.[0-9]+)?$' "ps --json shows the time from CREATE to the guest answering ($(ps_vm fn-a answering_after) s)"
like "$(ps_vm fn-a running_after)" '^[0-9]+(\.[0-9]+)?$' "ps --json shows the time from CREATE to RUNNING ($(ps_vm fn-a running_after) s)"
is "$(rules_of fn-a)" 3 "fn-a has its DNAT and forward rules"
ok "[[ -e $STATE/instances/fn-a/disk.qcow2 && -S $STATE/instances/fn-a/qmp.sock ]]" "fn-a boots its own qcow2 overlay, QMP on a socket in its dir"
like "$(qemu-img info -U "$STATE/instances/fn-a/disk.qcow2")" "backing file: base\.img \(actual path: $STATE/instances/fn-a/base\.img\)" \
	"the overlay's backing file is the instance's own link to the cached rootfs, never written (named relative to the overlay)"
ok "grep -q 'serving HTTP on 8080' $STATE/instances/fn-a/console.log" "the guest's serial console is in console.log"

ok "rk_wait_status 60 bad-ext4 FAILED" "a rootfs that is not ext4: FAILED"
like "$(rk_reason bad-ext4)" "not an ext4 image" "  with the reason ($(rk_reason bad-ext4))"
is "$(vm_left bad-ext4)" "" "  and nothing left (no QEMU, rule, disk, socket)"

ok "rk_wait_status 120 panic FAILED" "a guest whose init dies (kernel panic): FAILED"
like "$(rk_reason panic)" "rebooted|panic" "  the reason says the guest panicked ($(rk_reason panic | cut -c1-160))"
like "$(rk_reason panic)" "Kernel panic|Attempted to kill init" "  with the console's last lines"
is "$(vm_left panic)" "" "  and nothing left (no QEMU, rule, disk, socket)"
ok "'$RIKLET' logs panic --state-dir '$STATE' | grep -q 'Kernel panic'" "riklet logs shows the failed guest's console (kept until destroy)"
is "$("$RIKLET" logs fn-a --tail 1 --state-dir "$STATE" | wc -l)" 1 "riklet logs --tail 1 gives one console line"

ok "rk_wait_status 120 off TERMINATED" "a guest that powers off: TERMINATED"
like "$(rk_reason off)" "powered off" "  the reason says so ($(rk_reason off))"
is "$(vm_left off)" "" "  and nothing left (no QEMU, rule, disk, socket)"

# --- kill -9 riklet with two VMs running: both re-adopted, same pids --------------------------------
ok "rk_wait_status 60 fn-b RUNNING" "fn-b RUNNING (a second VM)"
ok "wait_for 120 fetch_ok 45002" "fn-b serves on 45002"
pid_b=$(qpid fn-b)
fn_manifest off2 "$G/rootfs-poweroff.ext4"
ok "rk_wait_status 60 off2 RUNNING" "off2 (a guest that powers off soon after boot) RUNNING"
rk_stop KILL
pid_off2=$(qpid off2)
ok "[[ -n '$pid_off2' ]] && wait_for 90 eval '! alive $pid_off2'" "off2 powers off while riklet is down"
ok "alive $pid_a && alive $pid_b" "both QEMUs outlive riklet killed with -9"
rk_start_standalone "${FN_OPTS[@]}" || bail_out "riklet did not restart"
ok "wait_for 30 grep -q 'instance fn-b re-adopted' $RK_LOG" "fn-b re-adopted"
ok "grep -q 'instance fn-a re-adopted' $RK_LOG" "fn-a re-adopted"
is "$(qpid fn-a) $(qpid fn-b)" "$pid_a $pid_b" "same QEMU pids: re-adopted, not restarted"
is "$(rk_status fn-a) $(rk_status fn-b)" "RUNNING RUNNING" "both stay RUNNING"
ok "rk_wait_status 30 off2 TERMINATED" "off2, which powered off while riklet was down: TERMINATED at restart"
like "$(rk_reason off2)" "powered off while riklet was not running" "  saying so ($(rk_reason off2))"
is "$(vm_left off2)" "" "  and freed"
ok "fetch_ok 45001 && fetch_ok 45002" "both ports still serve"
# a re-adopted VM whose QEMU is killed on the host: FAILED, and what it held is freed
kill -9 "$pid_b"
ok "rk_wait_status 60 fn-b FAILED" "fn-b's QEMU killed with -9 (after re-adoption): FAILED"
like "$(rk_reason fn-b)" "^QEMU " "  the reason says QEMU ended ($(rk_reason fn-b | cut -c1-100))"
ok "wait_for 20 eval '[[ -z \$(vm_left fn-b) ]]'" "  its rules, disk and socket are freed"

# --- destroy: the guest powers off on the ACPI button, nothing is left -------------------------------
rm "$MANIFESTS/fn-a.json"
ok "rk_wait_status 60 fn-a TERMINATED" "fn-a removed: TERMINATED"
ok "! alive $pid_a" "fn-a's QEMU is gone"
nok "grep -q 'QEMU $pid_a: the guest did not power off' $RK_LOG" "the guest powered off on the ACPI power button (no quit, no kill)"
ok "[[ ! -e $STATE/instances/fn-a ]]" "fn-a's directory (disk, socket, console) is gone"
is "$(rules_of fn-a)" 0 "fn-a's rules are gone"
nok "client 45001 | grep -q hello" "port 45001 no longer serves"
for id in fn-b bad-ext4 panic off off2; do rm "$MANIFESTS/$id.json"; done
ok "rk_wait_status 60 fn-b TERMINATED" "fn-b (FAILED) removed: TERMINATED"
ok "wait_for 30 test -z \"\$(qemu_pids)\"" "no QEMU left"
is "$(taps)" 0 "no TAP left"
is "$(iptables-legacy-save 2>/dev/null | grep -c 'riklet:\(fn\|bad\|panic\|off\)')" 0 "no instance rule left"
is "$(ip -o addr show | grep -c ' 10\.90\.')" 0 "no Function address left"
ok "wait_for 30 test -z \"\$(ls $STATE/instances)\"" "no instance directory (disk copy, socket) left"
is "$(md5sum <"$G/rootfs-serve.ext4")" "$sum0" "the rootfs image the guests booted from (read-write) is byte for byte unchanged"
rk_stop TERM

# --- node without a kernel, without QEMU: FAILED naming the flag ------------------------------------
# (riklet refuses to start when they are missing: `riklet check`; so they vanish once it runs)
cp "$G/vmlinuz" "$G/gone-vmlinuz"
ln -s "$(command -v qemu-system-x86_64)" "$G/gone-qemu"
# a QEMU left by an instance that has no record (a crash between the start and the record)
mkdir -p "$STATE/instances/ghost"
qemu-system-x86_64 -M pc -accel tcg -display none -nodefaults -S -pidfile "$STATE/instances/ghost/qemu.pid" -daemonize
ghost=$(qemu_pids ghost/)
rk_start_standalone "${FN_OPTS[@]}" --kernel-path "$G/gone-vmlinuz" || bail_out "riklet did not restart"
rm "$G/gone-vmlinuz"
fn_manifest nokernel "$G/rootfs-serve.ext4"
ok "rk_wait_status 60 nokernel FAILED" "a missing kernel: FAILED"
like "$(rk_reason nokernel)" "kernel-path" "  the reason names the flag ($(rk_reason nokernel))"
is "$(vm_left nokernel) $(taps)" " 0" "  nothing left (no TAP either)"
ok "[[ -n '$ghost' ]] && wait_for 30 eval '! alive $ghost'" "a leftover QEMU of an instance without a record is stopped at start"
rk_stop TERM
rm "$MANIFESTS/nokernel.json"
rk_start_standalone "${FN_OPTS[@]}" --qemu "$G/gone-qemu" || bail_out "riklet did not restart"
rm "$G/gone-qemu"
fn_manifest novmm "$G/rootfs-serve.ext4"
ok "rk_wait_status 60 novmm FAILED" "a missing QEMU binary: FAILED"
like "$(rk_reason novmm)" "gone-qemu.*does not exist" "  the reason says which binary ($(rk_reason novmm | cut -c1-120))"
is "$(vm_left novmm) $(taps)" " 0" "  nothing left"
rk_stop TERM

done_testing
