# test_check_restart.sh — the start-up check (riklet.check) at a restart of a node that holds
# records: it runs beside the re-adoption (cli.lua's daemon), and what it decides must not change:
#  - a required check failing (--skopeo naming a missing file) on a node with a live Pod: riklet
#    starts anyway, says so, and re-adopts the Pod (its container untouched); the front-end (the
#    manifest directory) starts only after the check's verdict, so nothing new is made before it;
#  - the same failure on a node whose records are all ended: riklet exits non-zero saying why;
#  - a passing check: the restart re-adopts as before.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init

mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
# the lines of the log from line $1 on
since() { tail -n +"$(($1 + 1))" "$RK_LOG"; }
# line number (within since $1) of the first line matching $2, or 0
first_at() { since "$1" | grep -n -m1 -E -- "$2" | cut -d: -f1 | grep . || echo 0; }

rk_start_standalone || bail_out "riklet did not start"
rk_pod live
rk_wait_status 60 live RUNNING
is "$(rk_status live)" RUNNING "a Pod runs" || diag_file "$RK_LOG" 30
RUNC_ID=$(rk_runc_ids | head -n 1)
PID0=$(rk_runc_pid "$RUNC_ID")
rk_stop KILL

# --- a failing required check, one live Pod: starts anyway, re-adopts, front-end after the verdict -
L=$(wc -l <"$RK_LOG")
rk_start_standalone --skopeo "$TEST_TMP/no-such-skopeo" || bail_out "riklet did not start with a failing check and a live Pod"
ok "wait_for 30 grep -q 'instance live re-adopted' '$RK_LOG'" "the live Pod is re-adopted" || diag_file "$RK_LOG" 30
like "$(since "$L" | grep -F 'starting anyway')" "skopeo: .*no-such-skopeo.*starting anyway to keep watching the 1 instance\\(s\\)" \
	"the failing check is logged, naming skopeo, and the 1 live instance it starts for"
is "$(rk_runc_pid "$RUNC_ID")" "$PID0" "the container was not restarted (pid $PID0)"
verdict=$(first_at "$L" 'starting anyway') watching=$(first_at "$L" 'watching .* for workload manifests')
ok "((verdict > 0 && watching > verdict))" "the manifest directory is watched only after the check's verdict (lines $verdict, $watching)"
is "$(rk_status live)" RUNNING "still RUNNING"

# --- the same failure once every record has ended: no start --------------------------------------
rk_stop KILL
rk_start_standalone || bail_out "riklet did not start"
rm -f "$MANIFESTS/live.json"
rk_wait_status 60 live TERMINATED
is "$(rk_status live)" TERMINATED "the Pod is removed"
rk_stop
ok "test -n \"\$(ls '$STATE/records')\"" "its record is kept (ended)"
out=$(timeout 60 "$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" --skopeo "$TEST_TMP/no-such-skopeo" 2>&1)
rc=$?
ok "((rc != 0 && rc != 124))" "with only ended records and a failing check, riklet exits non-zero (rc $rc)"
like "$out" "cannot start, a required check failed: skopeo: " "and says it cannot start because of skopeo"

# --- a passing check: starts as before ---------------------------------------------------------
rk_pod again
rk_start_standalone || bail_out "riklet did not start"
rk_wait_status 60 again RUNNING
is "$(rk_status again)" RUNNING "with the check passing, a new Pod runs after the restart"
rm -f "$MANIFESTS/again.json"
rk_wait_status 60 again TERMINATED
rk_stop
ok "rk_nothing_left live && rk_nothing_left again" "nothing is left of either Pod"

done_testing
