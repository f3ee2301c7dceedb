# test_teardown_order.sh — a mass teardown runs per Pod: behind --runtime-parallel 1 (one runc at
# a time), 6 Pods removed at once, with every runc state/kill/delete slowed to SLOW s (a wrapper
# that logs each call), so that the order of the slot queue, not the machine's speed, decides:
#  - a destroy that got its first runc call in gets its kill, then its delete once the container
#    exited, before the destroys not begun yet: the runc deletes come in the order the destroys
#    began, and the first Pod's delete comes before the last Pod's first call (a FIFO queue across
#    Pods runs the 6 states, then the 6 kills, then the 6 deletes);
#  - the Pods end TERMINATED in that order, the first one TERMINATED first;
#  - waiting for an exit holds no slot: the next destroys' calls run meanwhile;
#  - a CREATE arriving during the teardown is not starved: it is RUNNING before the last of the
#    6 is TERMINATED (it gets a slot after at most 4 calls of the destroys);
#  - nothing is left afterwards (runc containers, conmons, mounts, directories).
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init

SLOW=${SLOW:-1}
rk_image

# a runc that logs "CMD ID" for state, kill and delete (once it has a slot: riklet runs it), then
# sleeps SLOW s while $TEST_TMP/slow exists, then runs the real one
REAL=$(command -v runc)
CALLS=$TEST_TMP/calls
cat >"$TEST_TMP/lrunc" <<EOF
#!/bin/bash
cmd= id= seen=
for a in "\$@"; do
	if [[ -n \$seen ]]; then id=\$a; break; fi
	case \$a in state | kill | delete) [[ -z \$cmd ]] && cmd=\$a ;; --) seen=1 ;; esac
done
if [[ -n \$cmd && -e "$TEST_TMP/slow" ]]; then
	echo "\$cmd \${id%_c}" >>"$CALLS"
	sleep $SLOW
fi
exec "$REAL" "\$@"
EOF
chmod +x "$TEST_TMP/lrunc"
rk_start_standalone --runc "$TEST_TMP/lrunc" --runtime-parallel 1 || bail_out "riklet did not start"

PODS=(t1 t2 t3 t4 t5 t6)
for p in "${PODS[@]}"; do rk_pod "$p"; done
for p in "${PODS[@]}"; do rk_wait_status 120 "$p" RUNNING; done
is "$(for p in "${PODS[@]}"; do rk_status "$p"; done | tr '\n' ' ')" "$(printf 'RUNNING %.0s' "${PODS[@]}")" \
	"6 Pods run behind --runtime-parallel 1" || diag_file "$RK_LOG" 30

: >"$CALLS"
touch "$TEST_TMP/slow"
L0=$(wc -l <"$RK_LOG")
rm -f "$MANIFESTS"/t?.json
ok "wait_for 30 grep -q . '$CALLS'" "the teardown's first runc call ran"
rk_pod late
for p in "${PODS[@]}"; do rk_wait_status $((60 + 12 * SLOW * ${#PODS[@]})) "$p" TERMINATED; done
rk_wait_status 60 late RUNNING
rm -f "$TEST_TMP/slow"
is "$(for p in "${PODS[@]}"; do rk_status "$p"; done | tr '\n' ' ')" "$(printf 'TERMINATED %.0s' "${PODS[@]}")" \
	"all 6 are TERMINATED" || diag_file "$RK_LOG" 40
diag "runc calls, in the order they got the slot: $(tr '\n' ',' <"$CALLS")"

# the order the destroys began (their first runc call), and the order of their deletes
began=$(awk '!seen[$2]++ { print $2 }' "$CALLS" | tr '\n' ' ')
deletes=$(awk '$1 == "delete" { print $2 }' "$CALLS" | tr '\n' ' ')
is "$(wc -w <<<"$began")" 6 "each of the 6 destroys ran runc calls"
is "$deletes" "$began" "the runc deletes came in the order the destroys began"
first=${began%% *} last=$(awk '{ print $NF }' <<<"$began")
at_first_delete=$(grep -nx "delete $first" "$CALLS" | head -1 | cut -d: -f1)
at_last_begin=$(grep -n " $last\$" "$CALLS" | head -1 | cut -d: -f1)
ok "((${at_first_delete:-99} < ${at_last_begin:-0}))" \
	"the first destroy's delete (call $at_first_delete) came before the last destroy's first call ($at_last_begin)"
# a Pod waiting for its container's exit holds no slot: another Pod's call ran between its kill and its delete
ok "awk -v p=$first '\$2 == p && \$1 == \"kill\" { k = NR } \$2 == p && \$1 == \"delete\" { d = NR } END { exit !(d > k + 1) }' '$CALLS'" \
	"while the first destroy waited for its container's exit, other Pods' calls ran"

# TERMINATED in that order (the log's "DESTROYING -> TERMINATED" lines)
terminated=$(tail -n +"$((L0 + 1))" "$RK_LOG" | grep -F 'DESTROYING -> TERMINATED' |
	sed -n 's/.*instance \([^ ]*\) .*/\1/p' | grep -vx late | tr '\n' ' ')
is "${terminated%% *}" "$first" "the destroy that began first ended TERMINATED first"
is "$terminated" "$began" "the 6 ended TERMINATED in the order their destroys began"

# the CREATE that arrived during the teardown did not wait for all of it
running_at=$(grep -n 'instance late .*CREATING -> RUNNING' "$RK_LOG" | head -1 | cut -d: -f1)
last_term_at=$(grep -n "instance $last .*DESTROYING -> TERMINATED" "$RK_LOG" | head -1 | cut -d: -f1)
ok "((${running_at:-999999} < ${last_term_at:-0}))" \
	"a CREATE arriving during the teardown was RUNNING before its last Pod was TERMINATED (log lines $running_at < $last_term_at)"

rm -f "$MANIFESTS"/late.json
rk_wait_status 60 late TERMINATED
rk_stop
ok "for p in ${PODS[*]} late; do rk_nothing_left \$p || exit 1; done" "nothing is left of the 7 Pods"
done_testing
