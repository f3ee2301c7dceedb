#!/usr/bin/env bash
# test_function_sched.sh — a Function CREATE / DESTROY from the scheduler (tests/sched/scheduler.py)
# gives the same statuses as a Pod: CREATING, RUNNING (a real QEMU guest, -accel tcg, serving
# through its node port), TERMINATED after DESTROY with no QEMU, TAP or directory left; a Function
# whose rootfs is not ext4 reports FAILED with the reason. With --instance-metrics-interval the
# RUNNING Function's metrics JSON reaching the scheduler is its VMM's (vmm_pid, CPU, RSS, threads).
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/guest.sh"
need_root
need_cmd qemu-system-x86_64 qemu-img mkfs.ext4 busybox curl jq ip cpio modinfo
need_py grpc google.protobuf
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
guest_kernel >/dev/null 2>&1 || skip_all "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
rk_init
ip link set lo up
G=$TEST_TMP/guest
guest_build "$G" serve >&2 || bail_out "cannot build the test guest"
head -c 1M /dev/urandom >"$G/junk.img"
qemu_pids() { pgrep -f -- "-pidfile $STATE/instances/${1:-}" || true; }
on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'

source "$(dirname "$0")/../lib/sched.sh"
instruct() {
	curl -sf -X POST -d "$(jq -cn --arg id "$1" --arg d "$2" --arg a "$3" '{instance_id: $id, definition: $d, action: $a}')" \
		"$CONTROL/instruct" >/dev/null
}
ev_statuses() { jq -r --arg id "$1" 'select(.kind == "instance" and .instance_id == $id) | .status' "$EVENTS" | paste -sd,; }
ev_has() { jq -r --arg id "$1" 'select(.kind == "instance" and .instance_id == $id) | .status' "$EVENTS" | grep -qx "$2"; }
ev_reason() { jq -r --arg id "$1" 'select(.kind == "instance" and .instance_id == $id and .status == "FAILED") | .metrics' "$EVENTS" | head -1; }
fn_def() { # fn_def NAME ROOTFS [PORT]
	local exposure=null
	[[ -n ${3:-} ]] && exposure="{\"port\": $3, \"targetPort\": 8080, \"type\": \"NodePort\"}"
	printf '{"apiVersion":"v1","kind":"Function","name":"%s","replicas":null,"spec":{"containers":[],"function":{"execution":{"rootfs":"file://%s"},"exposure":%s}}}' \
		"$1" "$2" "$exposure"
}
serves() { [[ $(curl -sS -m 3 http://127.0.0.1:45010/ 2>/dev/null) == "hello from a riklet guest" ]]; }

touch "$EVENTS"
sched_start || bail_out "scheduler.py did not start"
"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname node-1 "${RK_OPTS[@]}" --network bridge \
	--kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel tcg --local-image-dirs "$G" \
	--instance-metrics-interval 2 >>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")

registered() { jq -e -s 'map(select(.kind == "register")) | length > 0' "$EVENTS" >/dev/null; }
ok "wait_for 30 registered" "riklet registers with the scheduler" || { diag_file "$RK_LOG"; bail_out "no registration"; }
instruct fn-1 "$(fn_def web "$G/rootfs-serve.ext4" 45010)" CREATE
ok "wait_for 120 ev_has fn-1 RUNNING" "CREATE of a Function: RUNNING reported" || diag_file "$RK_LOG"
is "$(ev_statuses fn-1 | cut -d, -f1-2)" "CREATING,RUNNING" "CREATING came first, then RUNNING"
ok "wait_for 120 serves" "the guest serves through node port 45010"
pid=$(qemu_pids fn-1/)
ok "[[ -n '$pid' ]]" "a QEMU runs for fn-1 ($pid)"
fn_metrics() { jq -r 'select(.kind == "instance" and .instance_id == "fn-1" and (.metrics | startswith("{"))) | .metrics' \
	"$EVENTS" | tail -1; }
has_fn_metrics() { [[ -n $(fn_metrics) ]]; }
ok "wait_for 20 has_fn_metrics" "--instance-metrics-interval 2: fn-1's metrics reach the scheduler"
ok "jq -e --argjson pid '${pid:-0}' '.vmm_pid == \$pid and .cpu_seconds > 0 and .memory_bytes > 10000000 and .pids >= 1' <<<'$(fn_metrics)'" \
	"they are its VMM's: vmm_pid $pid, CPU seconds, RSS over 10 MB, threads"

instruct fn-bad "$(fn_def junk "$G/junk.img")" CREATE
ok "wait_for 60 ev_has fn-bad FAILED" "CREATE of a Function whose rootfs is not ext4: FAILED reported"
like "$(ev_reason fn-bad)" "not an ext4 image" "the reason reaches the scheduler"

# a file:// rootfs from the scheduler is taken only inside --local-image-dirs (not any node file)
instruct fn-out "$(fn_def out "$RK_LOG")" CREATE
ok "wait_for 60 ev_has fn-out FAILED" "CREATE of a Function whose file:// rootfs is outside --local-image-dirs: FAILED"
like "$(ev_reason fn-out)" "not inside --local-image-dirs" "... with the reason"

instruct fn-1 "" DESTROY
ok "wait_for 60 ev_has fn-1 TERMINATED" "DESTROY: TERMINATED reported"
ok "wait_for 20 test -z \"\$(qemu_pids fn-1/)\"" "no QEMU left"
is "$(ip -o link show | grep -c ': rkt' || true)" 0 "no TAP left"
ok "[[ ! -e $STATE/instances/fn-1 ]]" "no instance directory left"
ok "kill -0 $RK_PID" "riklet is still running"

done_testing
