#!/usr/bin/env bash
# test_hostile_fake_conmon.sh (hostile) — processes of an unprivileged user whose command lines
# imitate riklet's conmons (argv[0] "conmon", --cid=, --bundle= in the state dir, riklet's runc
# root): anyone can write such a command line, so it is no evidence that a process is riklet's.
#   - one naming an instance no record names ("ghost"): the boot's clean-up of leftover conmons
#     (the /proc listing, riklet.procscan) must leave it alone; likewise one imitating a QEMU of
#     the Function driver (-pidfile STATE/instances/ID/qemu.pid, riklet.vmmproc);
#   - one standing for a live Pod's conmon at a recycled pid (the record's conmon_pid pointed at
#     it while riklet is stopped): the Pod is re-adopted RUNNING (its container is watched), and
#     its destroy must not SIGKILL that process.
# The Pod stays RUNNING with its container pid, and is TERMINATED with nothing left once removed.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon setpriv
rk_init
[[ -x $PYTHON ]] || skip_all "needs $PYTHON"

rk_image
jq -n --arg img "oci:$TEST_TMP/layout:latest" \
	'{apiVersion: "v1", kind: "Pod", name: "live", spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/live.json"
chmod 755 "$TEST_TMP"

FAKES=()
fake() { # fake ID: a process of nobody's whose command line imitates conmon of container ID_c
	setpriv --reuid=nobody --regid=nogroup --clear-groups bash -c 'exec -a conmon "$0" "$@"' \
		"$PYTHON" -c 'import time; time.sleep(600)' --api-version 1 "--cid=$1_c" "--cuuid=$1_c" \
		"--bundle=$STATE/instances/$1/c" "--runtime-arg=--root" "--runtime-arg=$RUNC_ROOT" </dev/null >/dev/null 2>&1 &
	FAKES+=($!)
	disown "$!"
	LAST_FAKE=$!
}
kill_fakes() { local p; for p in "${FAKES[@]}"; do kill -9 "$p" 2>/dev/null; done; }
on_exit kill_fakes
looks_like_conmon() { tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "^conmon .*--cid=$2_c "; }

rk_start_standalone || bail_out "riklet did not start"
rk_wait_status 90 live RUNNING
is "$(rk_status live)" RUNNING "a Pod runs" || diag_file "$RK_LOG" 20
pid=$(rk_runc_pid live_c)
real=$(cat "$STATE/instances/live/c/conmon.pid" 2>/dev/null)
rk_stop

fake ghost
ghost=$LAST_FAKE
fake live
imitator=$LAST_FAKE
ok "wait_for 10 looks_like_conmon $ghost ghost && wait_for 10 looks_like_conmon $imitator live" \
	"two processes of nobody's imitate conmons (ghost_c, live_c)"
# the live Pod's conmon "recycled": its record names the imitator's pid
rec=$STATE/records/live.json
jq --argjson p "$imitator" '.containers[0].conmon_pid = $p' "$rec" >"$rec.new" && mv "$rec.new" "$rec"
is "$(jq -r '.containers[0].conmon_pid' "$rec")" "$imitator" "the record's conmon pid is now the imitator's (pid recycled)"

# a VMM's the same way (riklet.vmmproc: QEMU by its -pidfile in the instances directory), when
# QEMU is there for the Function driver to look for its VMMs at boot
vmm=
if command -v qemu-system-x86_64 >/dev/null; then
	setpriv --reuid=nobody --regid=nogroup --clear-groups bash -c 'exec -a qemu-system-x86_64 "$0" "$@"' \
		"$PYTHON" -c 'import time; time.sleep(600)' -pidfile "$STATE/instances/vghost/qemu.pid" </dev/null >/dev/null 2>&1 &
	vmm=$!
	FAKES+=("$vmm")
	disown "$vmm"
	ok "wait_for 10 bash -c \"tr '\\\\0' ' ' </proc/$vmm/cmdline | grep -q '^qemu-system-x86_64 .*-pidfile '\"" "a process of nobody's imitates a QEMU (vghost)"
fi

rk_start_standalone || bail_out "riklet did not restart"
booted_twice() { (($(grep -c 'boot: .* re-adopted and leftovers reconciled' "$RK_LOG") >= 2)); }
ok "wait_for 60 booted_twice" "riklet re-adopted and cleaned up at start"
is "$(rk_status live)/$(rk_runc_pid live_c)" "RUNNING/$pid" "the Pod is re-adopted RUNNING, same container pid" ||
	diag_file "$RK_LOG" 20
ok "kill -0 $ghost" "the boot's clean-up left nobody's imitation of a conmon of no record alone" ||
	grep 'ghost' "$RK_LOG" | diag "$(cat)"
ok "kill -0 $imitator" "and the imitation standing at the live Pod's recycled conmon pid"
if [[ -n $vmm ]]; then
	ok "kill -0 $vmm" "and nobody's imitation of a QEMU of an instance with no record" || grep 'vghost' "$RK_LOG" | diag "$(cat)"
else
	skip "no qemu-system-x86_64: the Function driver's VMM search is not tried"
fi
rm -f "$MANIFESTS/live.json"
rk_wait_status 60 live TERMINATED ""
ok "rk_nothing_left live" "the Pod removed: nothing of it left" || diag_file "$RK_LOG" 30
ok "kill -0 $imitator" "its destroy did not kill the process at its recorded conmon pid (not its conmon)" ||
	grep "$imitator" "$RK_LOG" | diag "$(cat)"
ok "kill -0 $ghost" "nor the other imitation"
real_gone() { [[ ! -e /proc/$real || $(awk '{ print $3 }' "/proc/$real/stat" 2>/dev/null) == Z ]]; }
ok "wait_for 15 real_gone" "the Pod's real conmon ($real, not in the record) ended with its container" ||
	ps -o pid,ppid,stat,args -p "$real" | diag "$(cat)"
rk_stop
done_testing
