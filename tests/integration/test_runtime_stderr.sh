#!/usr/bin/env bash
# test_runtime_stderr.sh — a runtime that writes more than a pipe holds (64 KiB) on its stderr
# during create. conmon reads its runtime's stderr (the container's stderr pipe) only once the
# runtime has exited, so such a runtime blocked on its write and the create hung until riklet's
# 60 s deadline; riklet-runc-run, the runtime riklet gives conmon, now drains that pipe while the
# runtime runs. Real conmon, runc and riklet; the runtime is a script on --runc writing 200 KiB on
# stderr in create/run, then failing or going on as the real runc, for a one-container Pod
# (`runc create` + its start, through exec.fifo, in the shim) and a two-container one (`runc create`):
#  - failing: the instance is FAILED at once (well within 60 s) with the runtime's last words in a
#    reason of bounded size, and nothing is left (runc container, conmon, directory); the same for
#    a one-container Pod whose `runc start` (in the shim: its fallback when there is no exec.fifo
#    to start the container through) writes 200 KiB on stderr and fails;
#  - going on: the Pod runs, and the container's own stderr still reaches its log;
#  - riklet and riklet-runc-run killed while a restart is between runc create and its start (its
#    conmon stays): riklet started again takes the created container as ended and restarts it;
#  - riklet alone killed there (the shim lives on): riklet started again follows the start in flight
#    to a stated end, and the record never stays "created": the shim starts the container after
#    riklet's restart, or before it (conmon ends at its report of the start, which meets the dead
#    riklet's pipe: taken as ended, restarted under a new conmon), the shim dies before it (taken
#    as ended, never started: restarted), the shim stuck past conmon's 60 s limit (its conmon
#    stopped, the shim with it, the container taken as ended: restarted).
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
# case is about, instead of opening the fifo itself); gap waits (the shim between create and start:
# its runc create not ended yet, the container created) until the mode changes (in-gap.ID: this
# process's pid, ID the container's: the last argument)
if [[ \$mode == failstart || \$mode == gap ]] && [[ " \$* " == *" create "* ]]; then
	"$REAL" "\$@" || exit
	root= prev=
	for a; do [[ \$prev == --root ]] && root=\$a; prev=\$a; done
	[[ \$mode == failstart ]] && rm -f "\$root/\${!#}/exec.fifo"
	[[ \$mode == gap ]] && { echo \$\$ >"$TEST_TMP/in-gap.\${!#}"; while [[ \$(cat "$TEST_TMP/mode") == gap ]]; do sleep 0.1; done; }
	exit 0
fi
exec "$REAL" "\$@"
EOF
chmod +x "$TEST_TMP/loudrunc"
# (--runtime-parallel 8: the five starts held below hold a slot each)
rk_start_standalone --runc "$TEST_TMP/loudrunc" --runtime-parallel 8 || bail_out "riklet did not start"

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

# --- a restart of a one-container Pod's container held between runc create and its start (the
# wrapper waits after the real runc create, the shim waiting for it to end), then riklet killed:
#  gap1: the shim killed too: its conmon stays (it waits for the failed runtime's stderr, which the
#        created container holds), and nothing will ever start that container; riklet started
#        again must take it as ended (the restart policy then runs it again), not adopt it as
#        running for ever
#  gap2: riklet alone: the shim (its runc create held) is let go once riklet was started again: the
#        container runs, and its conmon ends (conmon 2.1.6 exits when its report of the start meets
#        the closed pipe of the riklet that started it): taken as ended and restarted under a new
#        conmon (it was watched without its conmon, the record saying "created" for ever)
#  gap5: riklet alone: the shim let go before riklet is started again: the same, found at adoption
#  gap3: riklet alone: the shim is killed once riklet was started again (it adopted the start in
#        flight): nothing will start the container; riklet must notice, take it as ended and
#        restart it (it waited on conmon for ever)
#  gap4: riklet alone: the shim's start is stuck past conmon's 60 s limit (its conmon.pid made 2
#        minutes old): riklet started again stops its conmon (the shim ends with it) and takes the
#        container as ended, restarted
gaps="gap1 gap2 gap3 gap4 gap5"
tg=$EPOCHREALTIME
for p in $gaps; do
	jq -n --arg n "$p" --arg img "oci:$TEST_TMP/layout:latest" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {restartPolicy: "Always", containers: [{name: "c", image: $img}]}}' \
		>"$MANIFESTS/.$p" && mv "$MANIFESTS/.$p" "$MANIFESTS/$p.json"
done
for p in $gaps; do rk_wait_status 60 "$p" RUNNING; done
echo gap >"$TEST_TMP/mode"
for p in $gaps; do runc --root "$RUNC_ROOT" kill "${p}_c" TERM; done # (exit 0: restarted after 1 s)
held() { for p in $gaps; do [[ -s $TEST_TMP/in-gap.${p}_c ]] || return 1; done; }
ok "wait_for 20 held" "gap1-5: their containers restarted, each shim between its create and start"
wrapper() { cat "$TEST_TMP/in-gap.$1_c"; }
cstate() { rk_ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .containers[0].state'; }
running() { [[ $(runc --root "$RUNC_ROOT" state "$1_c" 2>/dev/null | jq -r .status) == running ]]; }
up() { running "$1" && [[ $(cstate "$1") == running ]]; } # (the container runs, and its record says so)
no_conmon() { (($(rk_conmons "$1_c") == 0)); }
logged() { grep -qF -- "$1" "$RK_LOG"; }
shim() { awk '{ print $4 }' "/proc/$(wrapper "$1")/stat"; }
t0=$EPOCHREALTIME
rk_stop KILL
kill_ours 9 "$(shim gap1)"
for p in gap2 gap3 gap4; do kill_ours STOP "$(wrapper $p)"; done # (held, the mode cleared)
shim3=$(shim gap3)
: >"$TEST_TMP/mode"
touch -d '-2 min' "$STATE/instances/gap4/c/conmon.pid"
# gap5's shim, let go (the mode cleared), starts its container; its conmon then ends
ok "wait_for 5 running gap5" "gap5: the shim let go while riklet is down: its container runs"
ok "wait_for 5 no_conmon gap5" "gap5: and its conmon ended"
fifo_log=$STATE/instances/gap5/c/runc.log
ok "grep -q 'gap5_c started through runc.s exec.fifo' $fifo_log && ! grep -q 'not through exec.fifo' $fifo_log" \
	"gap5: started by the shim through exec.fifo (no runc start)"
for p in gap1 gap2 gap3 gap4; do
	is "$(runc --root "$RUNC_ROOT" state "${p}_c" | jq -r .status)" created "$p: riklet killed: its container is only created"
done
rk_start_standalone --runc "$TEST_TMP/loudrunc" --runtime-parallel 8 || bail_out "riklet did not start again"
adopted() { for p in gap2 gap3; do logged "instance $p re-adopted" || return 1; done; }
ok "wait_for 10 adopted" "gap2, gap3: re-adopted while their shims are held"
# gap2's shim let go, gap3's killed: each case then goes on beside the others
kill_ours CONT "$(wrapper gap2)"
kill_ours 9 "$shim3"
ok "wait_for 20 running gap1" "gap1: riklet started again takes it as ended and restarts it: running" ||
	diag "$(runc --root "$RUNC_ROOT" state gap1_c; grep gap1 "$RK_LOG" | tail -n 5)"
diag "gap1: running again $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s after riklet was killed (load $(cut -d' ' -f1 /proc/loadavg))"
like "$(grep 'gap1_c was never started' "$RK_LOG")" "taken as ended" "gap1: and says why"
is "$(rk_status gap1)" RUNNING "gap1: RUNNING"

ok "wait_for 8 logged 'instance gap2: container c started after riklet stopped, without its conmon'" \
	"gap2: the shim let go: its container started, its conmon ended: taken as ended, and says why"
ok "wait_for 8 up gap2" "gap2: restarted: running, and the record says so" ||
	diag "gap2: $(runc --root "$RUNC_ROOT" state gap2_c | jq -r .status), the record says $(cstate gap2); $(grep 'gap2' "$RK_LOG" | tail -n 4)"
is "$(rk_conmons gap2_c)" 1 "gap2: under a conmon"
ok "! grep -q 'not through exec.fifo' $STATE/instances/gap2/c/runc.log" "gap2: its shim, let go, started it through exec.fifo"
ok "wait_for 8 up gap5" "gap5: taken as ended at adoption, restarted: running, and the record says so" ||
	diag "gap5: $(runc --root "$RUNC_ROOT" state gap5_c | jq -r .status), the record says $(cstate gap5); $(grep 'gap5' "$RK_LOG" | tail -n 4)"
like "$(grep 'gap5_c was started after riklet stopped' "$RK_LOG")" "without its conmon" "gap5: and says why"
is "$(rk_conmons gap5_c)" 1 "gap5: under a conmon"

ok "wait_for 8 up gap3" "gap3: its shim killed after the adoption: taken as ended, restarted, running" ||
	diag "gap3: $(runc --root "$RUNC_ROOT" state gap3_c | jq -r .status), the record says $(cstate gap3); $(grep 'gap3' "$RK_LOG" | tail -n 4)"
like "$(grep 'gap3_c: its start' "$RK_LOG")" "ended without starting it" "gap3: and says why"
is "$(rk_conmons gap3_c)" 1 "gap3: one conmon (the stuck one stopped)"

ok "wait_for 8 up gap4" "gap4: its shim stuck past the limit: conmon stopped, taken as ended, restarted, running" ||
	diag "gap4: $(runc --root "$RUNC_ROOT" state gap4_c | jq -r .status), the record says $(cstate gap4); $(grep 'gap4' "$RK_LOG" | tail -n 4)"
like "$(grep 'instance gap4: container c never started' "$RK_LOG")" "did not end within 60s" "gap4: and says why"
is "$(rk_conmons gap4_c)" 1 "gap4: one conmon (the stuck one stopped)"
gone() { [[ ! -e /proc/$1 || $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) == Z ]]; } # (or a zombie)
ok "wait_for 2 gone $(wrapper gap4)" "gap4: the stuck shim's held runc create is gone (PDEATHSIG)"
for p in $gaps; do is "$(rk_status "$p")" RUNNING "$p: RUNNING"; done
diag "gap1-5: $(awk -v a="$tg" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s in all (load $(cut -d' ' -f1 /proc/loadavg))"

rm -f "$MANIFESTS"/*.json
for p in run1 create2 start1 ok1 ok2 $gaps; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop
ok "for p in run1 create2 start1 ok1 ok2 $gaps; do rk_nothing_left \$p || exit 1; done" "once the manifests are removed nothing is left"
done_testing
