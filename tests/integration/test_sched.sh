#!/usr/bin/env bash
# test_sched.sh — `riklet --scheduler URL` against tests/sched/scheduler.py (Debian's grpcio) with a
# real registry, skopeo, umoci and runc: register, node metrics JSON, CREATE of a real Pod ->
# CREATING then RUNNING, bad definitions -> FAILED with the reason, the scheduler killed and
# restarted -> riklet re-registers and re-reports without restarting the Pod, DESTROY ->
# TERMINATED with nothing left, unknown DESTROY -> TERMINATED, and a scheduler sending garbage, an
# oversized message or a truncated frame -> error logged, reconnect, no crash.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc protoc
need_py grpc google.protobuf
rk_init

registry_start || bail_out "docker-registry did not start"
CMD='["sh","-c","trap '"'exit 0'"' TERM INT; echo hello from busybox; sleep 3600 & wait $!"]'
mkimage --cmd "$CMD" "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/busybox:latest" || bail_out "push failed"
IMAGE=$REGISTRY/busybox:latest

source "$(dirname "$0")/../lib/sched.sh"
control() { curl -sf -X POST -d "$2" "$CONTROL$1"; }
instruct() { control /instruct "$(jq -cn --arg id "$1" --arg d "$2" --arg a "$3" '{instance_id: $id, definition: $d, action: $a}')" >/dev/null; }
# events since the given seq for an instance: "STATUS<TAB>metrics" lines
ev_instance() { jq -r --arg id "$1" 'select(.kind == "instance" and .instance_id == $id) | "\(.status)\t\(.metrics)"' "$EVENTS"; }
ev_has() { ev_instance "$1" | cut -f1 | grep -qx "$2"; }
ev_count() { jq -r --arg k "$1" 'select(.kind == $k)' "$EVENTS" | grep -c '^{' || true; }
registrations() { jq -s 'map(select(.kind == "register")) | length' "$EVENTS"; }
# for wait_for (it re-runs a command; a $(...) in its arguments would be expanded only once)
count_ge() { (($(ev_count "$1") >= $2)); }
regs_gt() { (($(registrations) > $1)); }
pod_def() { # pod_def NAME — a Pod with one busybox container, as the scheduler sends it
	jq -cn --arg n "$1" --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: $n, replicas: null,
		spec: {containers: [{name: "c1", image: $img, env: null, ports: null}], function: null}}'
}
riklet_alive() { kill -0 "$RK_PID" 2>/dev/null; }

touch "$EVENTS"
sched_start || bail_out "scheduler.py did not start"
export RIKLET_RECONNECT_HEALTHY=3 # short test sessions count as healthy: backoff restarts at 1 s
"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname node-1 --metrics-interval 2 \
	"${RK_OPTS[@]}" --insecure-registries "$REGISTRY" >>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")

# --- register and node metrics -------------------------------------------------------------
ok "wait_for 20 regs_gt 0" "riklet registers as node-1"
is "$(jq -r 'select(.kind == "register") | .identifier' "$EVENTS" | head -1)" node-1 "with its --hostname"
ok "wait_for 10 count_ge worker 1" "node metrics arrive right after registering"
m=$(jq -r 'select(.kind == "worker") | .metrics' "$EVENTS" | head -1)
is "$(jq -r 'select(.kind == "worker") | .status' "$EVENTS" | head -1)" RUNNING "worker metric status is RUNNING (2)"
is "$(jq -r 'select(.kind == "worker") | .identifier' "$EVENTS" | head -1)" node-1 "worker metric identifier is the hostname"
is "$(jq -c 'keys' <<<"$m")" '["cpu","disks","memory"]' "metrics JSON keys: cpu, memory, disks"
is "$(jq -c '[.cpu | keys, (.total | type), (.free | type)]' <<<"$m")" '[["free","total"],"number","number"]' "cpu.total and cpu.free are numbers"
ok "jq -e '.cpu.total >= 1 and .cpu.free >= 0 and .cpu.free <= 100' <<<'$m'" "cpu.total >= 1, cpu.free a percentage"
ok "jq -e '(.memory | keys) == [\"free\",\"total\"] and .memory.total > .memory.free and .memory.free > 0' <<<'$m'" "memory.total and memory.free in bytes"
ok "jq -e '(.disks | length) >= 1 and all(.disks[]; (keys == [\"disk_name\",\"free\",\"total\"]) and (.disk_name | startswith(\"/dev/\")) and (.total | type) == \"number\")' <<<'$m'" "disks: each {disk_name: /dev/..., total, free}"
ok "jq -e '[.disks[].disk_name] | length == (unique | length)' <<<'$m'" "each disk once"
is "$(jq -r 'select(.kind == "worker") | .has_host_address' "$EVENTS" | head -1)" false "host_address left unset"
ok "wait_for 10 count_ge worker 2" "metrics again after --metrics-interval 2"

# --- CREATE a real Pod ---------------------------------------------------------------------
instruct pod-1 "$(pod_def web)" CREATE
ok "wait_for 60 ev_has pod-1 RUNNING" "CREATE pod-1: RUNNING reported"
is "$(ev_instance pod-1 | cut -f1 | head -2 | paste -sd,)" "CREATING,RUNNING" "CREATING came first, then RUNNING"
ok "rk_runc_ids | grep -qx pod-1_c1" "runc runs pod-1_c1"
pid1=$(rk_runc_pid pod-1_c1)
like "$pid1" '^[1-9][0-9]*$' "pod-1_c1 has a pid"
n_before=$(ev_instance pod-1 | grep -c .)
instruct pod-1 "$(pod_def web)" CREATE
sleep 1
is "$(rk_runc_pid pod-1_c1)" "$pid1" "a repeated CREATE of pod-1 does not start a second one"

# --- bad definitions -----------------------------------------------------------------------
instruct bad-1 '{not json' CREATE
ok "wait_for 20 ev_has bad-1 FAILED" "CREATE with a broken JSON definition: FAILED"
like "$(ev_instance bad-1 | grep ^FAILED | cut -f2)" '[Jj][Ss][Oo][Nn]' "the reason (in metrics) says the JSON is bad"
instruct bad-2 '{"apiVersion":"v1","kind":"Deployment","name":"x","replicas":null,"spec":{"containers":[],"function":null}}' CREATE
ok "wait_for 20 ev_has bad-2 FAILED" "CREATE of kind Deployment: FAILED"
like "$(ev_instance bad-2 | grep ^FAILED | cut -f2)" 'Deployment|kind' "the reason names the kind"
ok "riklet_alive" "riklet is still running"

# --- the scheduler dies and comes back ----------------------------------------------------
sched_kill
mark=$(wc -l <"$EVENTS")
ok "wait_for 10 grep -q 'lost the scheduler' '$RK_LOG'" "riklet logs that it lost the scheduler"
sleep 1
sched_start || bail_out "scheduler.py did not restart"
ok "wait_for 30 regs_gt 1" "riklet registers again with the restarted scheduler"
resent() { tail -n +"$((mark + 1))" "$EVENTS" | jq -r 'select(.kind == "instance" and .instance_id == "pod-1") | .status' | grep -qx RUNNING; }
ok "wait_for 10 resent" "after re-registering, pod-1's RUNNING is re-sent"
metrics_since() { tail -n +"$((mark + 1))" "$EVENTS" | jq -r 'select(.kind == "worker") | .status' | grep -qx RUNNING; }
ok "wait_for 10 metrics_since" "node metrics again on the new connection"
is "$(rk_runc_pid pod-1_c1)" "$pid1" "pod-1's container was not restarted (same pid)"

# --- DESTROY --------------------------------------------------------------------------------
instruct pod-1 "" DESTROY
ok "wait_for 60 ev_has pod-1 TERMINATED" "DESTROY pod-1: TERMINATED reported"
ok "wait_for 10 rk_nothing_left pod-1" "no container, mount or directory left for pod-1"
instruct ghost-1 "" DESTROY
ok "wait_for 10 ev_has ghost-1 TERMINATED" "DESTROY of an unknown instance: TERMINATED, no crash"

# --- a misbehaving scheduler --------------------------------------------------------------
regs=$(registrations)
control /misbehave '{"mode":"garbage"}' >/dev/null
ok "wait_for 10 grep -q 'cannot decode' '$RK_LOG'" "garbage instead of protobuf: the error is logged"
ok "wait_for 20 regs_gt $regs" "... and riklet registers again"
regs=$(registrations)
control /misbehave '{"mode":"oversized"}' >/dev/null
ok "wait_for 10 grep -q 'larger than max' '$RK_LOG'" "a 5 MiB message: 'larger than max' logged"
ok "wait_for 20 regs_gt $regs" "... and riklet registers again"
ok "riklet_alive" "riklet survived garbage and an oversized message"

sched_kill
sched_start --raw truncated || bail_out "raw scheduler did not start"
ok "wait_for 30 grep -q 'truncated frame' '$RK_LOG'" "a truncated frame: logged"
sched_kill
sched_start || bail_out "scheduler.py did not restart"
regs=$(registrations)
ok "wait_for 40 regs_gt $regs" "after the broken server, riklet registers with a good one again"
ok "riklet_alive" "riklet is still running"
like "$(grep -c 'retrying in\|registering again in' "$RK_LOG")" '^[1-9]' "reconnect delays are logged"

# riklet's log shows no Lua error or crash
nok "grep -E 'task failed|stack traceback|panic' '$RK_LOG'" "no task failure or panic in riklet's log"
(( RK_TAP_FAILED == 0 )) || { diag_file "$RK_LOG" 60; diag_file "$SCHED_LOG" 20; }
done_testing
