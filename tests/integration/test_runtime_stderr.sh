#!/usr/bin/env bash
# test_runtime_stderr.sh — a runtime that writes more than a pipe holds (64 KiB) on its stderr
# during create. conmon reads its runtime's stderr (the container's stderr pipe) only once the
# runtime has exited, so such a runtime blocked on its write and the create hung until riklet's
# 60 s deadline; riklet-runc-run, the runtime riklet gives conmon, now drains that pipe while the
# runtime runs. Real conmon, runc and riklet; the runtime is a script on --runc writing 200 KiB on
# stderr in create/run, then failing or going on as the real runc, for a one-container Pod
# (`runc create` + `runc start` in the shim) and a two-container one (`runc create`):
#  - failing: the instance is FAILED at once (well within 60 s) with the runtime's last words in a
#    reason of bounded size, and nothing is left (runc container, conmon, directory); the same for
#    a one-container Pod whose `runc start` (in the shim: its fallback when there is no exec.fifo
#    to start the container through) writes 200 KiB on stderr and fails;
#  - going on: the Pod runs, and the container's own stderr still reaches its log;
#  - riklet and riklet-runc-run killed while a restart is between runc create and runc start (its
#    conmon stays): riklet started again takes the created container as ended and restarts it.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init
[[ -x $(dirname "$RIKLET")/riklet-runc-run ]] || bail_out "no riklet-runc-run beside $RIKLET"

mkimage --cmd '["sh","-c","echo from-the-container >&2; trap \"exit 0\" TERM; sleep 3600 & wait $!"]' \
	"$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
# pod NAME [N]: a Pod manifest of N containers (default 1), renamed into place
pod() {
	jq -n --arg n "$1" --arg img "oci:$TEST_TMP/layout:latest" --argjson k "${2:-1}" \
		'{apiVersion: "v1", kind: "Pod", name: $n,
		  spec: {containers: [range(0; $k) | {name: (if . == 0 then "c" else "d\(.)" end), image: $img}]}}' \
		>"$MANIFESTS/.$1"
	mv "$MANIFESTS/.$1" "$MANIFESTS/$1.json"
}
ended() { local s; s=$(rk_status "$1"); [[ $s == FAILED || $s == TERMINATED ]]; }
leftless() { # leftless NAME: no runc container, conmon or instance directory of NAME
	! rk_runc_ids | grep -q -- "^$1_" && (($(rk_conmons "$1_[^ ]*") == 0)) &&
		[[ ! -e $STATE/instances/$1/c/config.json ]]
}

REAL=$(command -v runc)
cat >"$TEST_TMP/loudrunc" <<EOF
#!/bin/bash
mode=\$(cat "$TEST_TMP/mode" 2>/dev/null)
case \$mode:" \$* " in
fail:*" create "* | fail:*" run "* | :*" create "* | :*" run "* | failstart:*" start "*)
	head -c 204800 /dev/zero | tr '\\0' 'E' >&2
	echo " the runtime's last words" >&2
	[[ \$mode == fail* ]] && exit 1 ;;
esac
# after the real create: failstart removes exec.fifo (the shim then runs runc start, the start this
# case is about, instead of opening the fifo itself); gap waits (the shim between create and start)
# until the mode changes
if [[ \$mode == failstart || \$mode == gap ]] && [[ " \$* " == *" create "* ]]; then
	"$REAL" "\$@" || exit
	root= prev=
	for a; do [[ \$prev == --root ]] && root=\$a; prev=\$a; done
	[[ \$mode == failstart ]] && rm -f "\$root/\${!#}/exec.fifo"
	[[ \$mode == gap ]] && { echo \$\$ >"$TEST_TMP/in-gap"; while [[ \$(cat "$TEST_TMP/mode") == gap ]]; do sleep 0.1; done; }
	exit 0
fi
exec "$REAL" "\$@"
EOF
chmod +x "$TEST_TMP/loudrunc"
rk_start_standalone --runc "$TEST_TMP/loudrunc" || bail_out "riklet did not start"

for p in run1 create2 start1; do
	case $p in start1) echo failstart ;; *) echo fail ;; esac >"$TEST_TMP/mode"
	case $p in run1) pod "$p" 1 ;; create2) pod "$p" 2 ;; start1) pod "$p" 1 ;; esac
	t0=$EPOCHREALTIME
	ok "wait_for 50 ended $p" "$p: the runtime writes 200 KiB on stderr and fails (${p%[0-9]}): the create ends" ||
		diag_file "$RK_LOG" 20
	took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	ok "awk 'BEGIN { exit !($took < 30) }'" "$p: well before riklet's 60 s deadline (${took} s, load $(cut -d' ' -f1 /proc/loadavg))"
	is "$(rk_status "$p")" FAILED "$p: FAILED"
	reason=$(rk_reason "$p")
	like "$reason" "the runtime's last words" "$p: with the runtime's last words in the reason"
	unlike "$reason" "did not finish within" "$p: not a timeout"
	ok "((${#reason} < 4096))" "$p: a reason of bounded size (${#reason} bytes): ${reason:0:90}...${reason: -60}"
	ok "wait_for 30 leftless $p" "$p: nothing is left of it (runc container, conmon, directory)"
done
ok "kill -0 $RK_PID" "riklet is still up"

: >"$TEST_TMP/mode"
pod ok1 1
pod ok2 2
for p in ok1 ok2; do
	rk_wait_status 60 "$p" RUNNING
	is "$(rk_status "$p")" RUNNING "$p: the runtime writes 200 KiB on stderr and goes on: RUNNING" ||
		diag "$(rk_reason "$p")"
	ok "wait_for 20 grep -q from-the-container $STATE/instances/$p/c/logs/0.log" \
		"$p: the container's own stderr still reaches its log"
done

# --- riklet and the shim killed while a restart of a one-container Pod's container is between
# runc create and runc start: its conmon stays (it waits for the failed runtime's stderr, which the
# created container holds), and nothing will ever start that container; riklet started again must
# take it as ended (the restart policy then runs it again), not adopt it as running for ever
jq -n --arg img "oci:$TEST_TMP/layout:latest" \
	'{apiVersion: "v1", kind: "Pod", name: "gap1", spec: {restartPolicy: "Always", containers: [{name: "c", image: $img}]}}' \
	>"$MANIFESTS/.gap1" && mv "$MANIFESTS/.gap1" "$MANIFESTS/gap1.json"
rk_wait_status 60 gap1 RUNNING
echo gap >"$TEST_TMP/mode"
runc --root "$RUNC_ROOT" kill gap1_c TERM # (exit 0: restarted after 1 s)
ok "wait_for 20 test -s $TEST_TMP/in-gap" "gap1: its container restarted, the shim between its create and start"
t0=$EPOCHREALTIME
rk_stop KILL
kill_ours 9 "$(awk '{ print $4 }' "/proc/$(cat "$TEST_TMP/in-gap")/stat")" # (the shim)
: >"$TEST_TMP/mode"
is "$(runc --root "$RUNC_ROOT" state gap1_c | jq -r .status)" created "gap1: riklet and the shim killed: its container is only created"
rk_start_standalone --runc "$TEST_TMP/loudrunc" || bail_out "riklet did not start again"
running() { [[ $(runc --root "$RUNC_ROOT" state gap1_c 2>/dev/null | jq -r .status) == running ]]; }
ok "wait_for 20 running" "gap1: riklet started again takes it as ended and restarts it: running" ||
	diag "$(runc --root "$RUNC_ROOT" state gap1_c; grep gap1 "$RK_LOG" | tail -n 5)"
diag "gap1: running again $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s after riklet was killed (load $(cut -d' ' -f1 /proc/loadavg))"
like "$(grep 'gap1_c was never started' "$RK_LOG")" "taken as ended" "gap1: and says why"
is "$(rk_status gap1)" RUNNING "gap1: RUNNING"

rm -f "$MANIFESTS"/*.json
for p in run1 create2 start1 ok1 ok2 gap1; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop
ok "for p in run1 create2 start1 ok1 ok2 gap1; do rk_nothing_left \$p || exit 1; done" "once the manifests are removed nothing is left"
done_testing
