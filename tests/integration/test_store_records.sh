#!/usr/bin/env bash
# test_store_records.sh — records are input too, and removal needs positive evidence. Two Pods
# run; riklet is stopped and their records are tampered with (dir = a victim directory outside
# the state dir, a runc id of another riklet's container), and more unusable records are dropped in
# ([], {}, truncated, 5 MB, a FIFO) with leftovers named after them. The restarted riklet serves
# (a new manifest runs), quarantines every bad record, shows its id as UNKNOWN with the reason in
# `riklet ps` (and --json), keeps everything named after it (the two containers keep their pid,
# their directories stay), leaves the victim directory and the other riklet's container alone,
# and still removes leftovers no record names. Removing a quarantined record then lets the next
# start clean its instance up and create it afresh from its manifest. Last, riklet restarted with
# a runc that fails every `state`, then with no runc at all, leaves the Pods RUNNING (same pids).
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci jq busybox runc
rk_init

mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
IMAGE=oci:$TEST_TMP/layout:latest
pod() { # pod NAME > manifest
	jq -n --arg name "$1" --arg img "$IMAGE" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null,
		  spec: {containers: [{name: "c", image: $img, ports: null, env: null}], function: null}}'
}
R=$STATE/records
Q=$R/quarantine

# --- another riklet (its own state dir, the same runc root) runs a container "other_c" ---------
OTHER_STATE=$TEST_TMP/other-state OTHER_MANIFESTS=$TEST_TMP/other-manifests
mkdir -p "$OTHER_MANIFESTS"
pod other >"$OTHER_MANIFESTS/other.json"
"$RIKLET" --standalone "$OTHER_MANIFESTS" --state-dir "$OTHER_STATE" --runc-root "$RUNC_ROOT" --network none \
	--log-level debug >>"$TEST_TMP/other.log" 2>&1 </dev/null &
OTHER_PID=$!
RK_PIDS+=("$OTHER_PID")
other_running() { [[ $("$RIKLET" ps --json --state-dir "$OTHER_STATE" | jq -r '.instances[0].status') == RUNNING ]]; }
wait_for 60 other_running || { diag_file "$TEST_TMP/other.log" 20; bail_out "the other riklet's Pod did not start"; }
kill -TERM "$OTHER_PID"
wait "$OTHER_PID"
other_pid=$(rk_runc_pid other_c)
like "$other_pid" '^[1-9][0-9]*$' "another riklet's container other_c runs in the same runc root (pid $other_pid)"

# --- two Pods, then riklet stopped --------------------------------------------------------------
pod a >"$MANIFESTS/a.json"
pod b >"$MANIFESTS/b.json"
# ctl: 800 KB of raw control characters in its env (25 values of 32000 bytes): a record that
# re-encoded its definition grew to 4.8 MB, over the read cap, and the Pod was wiped at restart
ctl=$(head -c 32000 /dev/zero | tr '\0' '\001')
{
	printf '{"apiVersion":"v1","kind":"Pod","name":"ctl","replicas":null,"spec":{"function":null,"containers":[{"name":"c","image":"%s","ports":null,"env":[' "$IMAGE"
	for i in $(seq 1 25); do printf '%s{"name":"V%d","value":"%s"}' "$([[ $i == 1 ]] || echo ,)" "$i" "$ctl"; done
	printf ']}]}}'
} >"$TEST_TMP/ctl.json"
unset ctl
mv "$TEST_TMP/ctl.json" "$MANIFESTS/ctl.json"
rk_start_standalone || bail_out "riklet did not start"
rk_wait_status 60 a RUNNING && rk_wait_status 60 b RUNNING && rk_wait_status 60 ctl RUNNING
is "$(rk_status a)/$(rk_status b)/$(rk_status ctl)" RUNNING/RUNNING/RUNNING "Pods a, b and ctl are RUNNING"
pid_a=$(rk_runc_pid a_c) pid_b=$(rk_runc_pid b_c) pid_ctl=$(rk_runc_pid ctl_c)
ok "cmp -s '$MANIFESTS/ctl.json' '$R/ctl.definition'" "ctl's definition is stored byte for byte as it arrived"
ok "(($(stat -c %s "$R/ctl.json") < 65536))" "ctl's record stays small ($(stat -c %s "$R/ctl.json") bytes)"
rk_stop TERM

# --- tampering, while riklet is down --------------------------------------------------------------
VICTIM=$TEST_TMP/victim
mkdir -p "$VICTIM" && echo precious >"$VICTIM/file"
jq --arg v "$VICTIM" '.dir = $v' "$R/a.json" >"$TEST_TMP/a.json" && mv "$TEST_TMP/a.json" "$R/a.json"
jq '.containers[0].runc_id = "other_c"' "$R/b.json" >"$TEST_TMP/b.json" && mv "$TEST_TMP/b.json" "$R/b.json"
printf '[]' >"$R/arr.json"
printf '{}' >"$R/obj.json"
head -c 60 "$R/a.json" >"$R/trunc.json"
{ printf '{"id":"big","status":"RUNNING","pad":"'; head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' x; printf '"}'; } >"$R/big.json"
mkfifo "$R/fifo.json"
# things named after the bad ids (kept), and a leftover no record names (removed)
for id in arr obj trunc big fifo zzz; do mkdir -p "$STATE/instances/$id" && echo "$id" >"$STATE/instances/$id/mark"; done
BAD=(a b arr obj trunc big fifo)

# --- restart: riklet serves, quarantines, keeps --------------------------------------------------
pod late >"$MANIFESTS/late.json"
rk_start_standalone || bail_out "riklet did not start over the tampered records"
rk_wait_status 60 late RUNNING
is "$(rk_status late)" RUNNING "riklet serves: a manifest added while it was down reaches RUNNING"
is "$(rk_status ctl)" RUNNING "ctl (800 KB of control characters) is re-adopted RUNNING"
is "$(rk_runc_pid ctl_c)" "$pid_ctl" "ctl keeps its container pid"
for id in "${BAD[@]}"; do
	ok "[[ -e $Q/$id.json && ! -e $R/$id.json ]]" "$id: its record is moved to records/quarantine/"
	is "$(rk_status "$id")" UNKNOWN "$id: riklet ps --json shows it UNKNOWN"
done
like "$(rk_reason a)" "dir .*victim.* is not the instance's directory" "a: the reason names the tampered dir"
like "$(rk_reason b)" 'runc_id "other_c" is not the runc id' "b: the reason names the foreign runc id"
like "$(rk_reason arr)" "JSON array" "arr ([]): the reason says it is an array"
like "$(rk_reason obj)" "no id" "obj ({}): the reason says it has no id"
like "$(rk_reason trunc)" "not valid JSON" "trunc: the reason says it is not valid JSON"
like "$(rk_reason big)" "larger than 4194304" "big (5 MB): the reason says it is over the read cap"
like "$(rk_reason fifo)" "FIFO" "fifo: the reason says it is a FIFO"
table=$("$RIKLET" ps --state-dir "$STATE" 2>&1)
like "$(grep '^a ' <<<"$table")" "UNKNOWN .*victim" "riklet ps (table) shows a UNKNOWN with its reason"
logs_rc=0
logs_out=$("$RIKLET" logs a --state-dir "$STATE" 2>&1) || logs_rc=$?
is "$logs_rc" 1 "riklet logs a (held): exit 1"
like "$logs_out" "instance a is held .*victim" "riklet logs a says it is held and why (not 'no instance')"
like "$logs_out" "$STATE/instances/a/<container>/logs/" "... and where its containers' logs are kept"
logs_rc=0
logs_out=$("$RIKLET" logs arr --state-dir "$STATE" 2>&1) || logs_rc=$?
like "$logs_rc/$logs_out" "^1/.*instance arr is held .*JSON array" "riklet logs arr (held, []): says it is held and why"
is "$(rk_runc_pid a_c)" "$pid_a" "a's container is kept: same pid"
is "$(rk_runc_pid b_c)" "$pid_b" "b's container is kept: same pid"
ok "[[ -d $STATE/instances/a/c && -d $STATE/instances/b/c ]]" "a's and b's directories are kept"
is "$(cat "$VICTIM/file" 2>&1)" precious "the victim directory outside the state dir is untouched"
is "$(rk_runc_pid other_c)" "$other_pid" "the other riklet's container other_c is untouched"
for id in arr obj trunc big fifo; do
	ok "[[ -f $STATE/instances/$id/mark ]]" "$id: the directory named after it is kept"
done
ok "wait_for 10 test ! -e $STATE/instances/zzz" "a leftover directory no record names is removed"
ok "grep -q 'Its containers, directory and network are KEPT' '$RK_LOG'" "the log says what happened and what to do"
ok "kill -0 $RK_PID" "riklet is still running"

# the manifests of a and b are still there: no create over a held id, nothing replaced
like "$(grep 'instance a cannot be created' "$RK_LOG" | head -1)" "quarantine" \
	"a create over a held id is refused, naming the quarantine"
rm "$MANIFESTS/b.json"
sleep 1
is "$(rk_runc_pid b_c)" "$pid_b" "removing b's manifest destroys nothing while its record is in quarantine"

# --- a second restart: still held -------------------------------------------------------------
rk_stop TERM
refusals=$(grep -c 'instance a cannot be created' "$RK_LOG")
rk_start_standalone || bail_out "riklet did not restart"
more_refusals() { (($(grep -c 'instance a cannot be created' "$RK_LOG") > refusals)); }
ok "wait_for 20 more_refusals" "a is still held after another restart"
is "$(rk_status a)" UNKNOWN "a is still UNKNOWN"
is "$(rk_runc_pid a_c)" "$pid_a" "a's container is still the same process"

# --- the operator resolves a: remove the quarantined record, restart ---------------------------
rk_stop TERM
rm -f "$Q/a.json" "$Q/a.definition"
rk_start_standalone || bail_out "riklet did not restart"
new_a() { [[ $(rk_status a) == RUNNING && -n $(rk_runc_pid a_c) && $(rk_runc_pid a_c) != "$pid_a" ]]; }
ok "wait_for 60 new_a" "once its quarantined record is removed, a's leftovers go and a is created afresh"
pid_gone() { [[ ! -e /proc/$1 || $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
ok "wait_for 10 pid_gone $pid_a" "the old container of a is gone"
is "$(cat "$VICTIM/file" 2>&1)" precious "the victim directory is still untouched"
is "$(rk_runc_pid other_c)" "$other_pid" "the other riklet's container is still untouched"
pid_a=$(rk_runc_pid a_c) pid_late=$(rk_runc_pid late_c)
rk_stop TERM

# --- runc failing, or missing, is no evidence that a container is gone ----------------------------
# a runc that answers --version but fails every `state` (as at `ulimit -n 16`)
printf '%s\n' '#!/bin/sh' 'for a in "$@"; do' \
	'	[ "$a" = state ] && { echo "level=error msg=\"open /proc/self/fd: too many open files\"" >&2; exit 1; }' \
	'done' 'exec runc "$@"' >"$TEST_TMP/failing-runc"
chmod +x "$TEST_TMP/failing-runc"
for how in failing missing; do
	runc_opt=$TEST_TMP/failing-runc
	[[ $how == missing ]] && runc_opt=$TEST_TMP/no-such-runc
	rk_start_standalone --runc "$runc_opt" || bail_out "riklet did not start with a $how runc"
	sleep 3
	is "$(rk_status a)/$(rk_status late)" RUNNING/RUNNING "runc $how at restart: the Pods stay RUNNING"
	is "$(rk_runc_pid a_c)/$(rk_runc_pid late_c)" "$pid_a/$pid_late" "runc $how at restart: same container pids"
	rk_stop TERM
done
# (under conmon a live conmon of the container is evidence enough to re-adopt without runc; with
# neither, adoption is retried)
ok "grep -qE 'That is no evidence that it is gone|instance late re-adopted' '$RK_LOG'" \
	"the log says the Pods were re-adopted (their conmon alive) or that adoption is retried, never that they are lost"
rk_start_standalone || bail_out "riklet did not start"
readopted() { (($(grep -c 'instance late re-adopted' "$RK_LOG") >= 2)); }
ok "wait_for 20 readopted" "with runc back, the Pods are re-adopted"
is "$(rk_status a)/$(rk_status late)" RUNNING/RUNNING "and are still RUNNING"
is "$(rk_runc_pid a_c)/$(rk_runc_pid late_c)" "$pid_a/$pid_late" "with the same container pids"
nok "grep -q 'lost while riklet was not running' '$RK_LOG'" "no Pod was ever declared lost"
rk_stop TERM

runc --root "$RUNC_ROOT" delete -f other_c >/dev/null 2>&1
done_testing
