#!/usr/bin/env bash
# test_sched_instance_metrics.sh — `--instance-metrics-interval` against tests/sched/scheduler.py
# (Debian's grpcio) with a real Pod (registry, skopeo, umoci, runc, conmon): without the flag no
# InstanceMetric carries metrics JSON; with it (riklet restarted, the Pod re-adopted) every second
# the peer receives InstanceMetric{pod-1, RUNNING, metrics = the cgroup numbers as JSON} with
# plausible values (CPU seconds growing, memory and pids of the busybox processes, no OOM kill);
# after DESTROY no RUNNING metric follows TERMINATED; `riklet ps --json` shows the scheduler
# connection and queue the Prometheus series are made of.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc protoc
need_py grpc google.protobuf
rk_init

# a container that burns some CPU, then holds a few MB and two processes (sh + sleep)
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM INT; x=$(seq 1 400000); sleep 3600 & wait $!"]'

source "$(dirname "$0")/../lib/sched.sh"
instruct() { curl -sf -X POST -d "$(jq -cn --arg id "$1" --arg d "$2" --arg a "$3" \
	'{instance_id: $id, definition: $d, action: $a}')" "$CONTROL/instruct" >/dev/null; }
pod_def() {
	jq -cn --arg n "$1" --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: $n, replicas: null,
		spec: {containers: [{name: "c1", image: $img, env: null, ports: null}], function: null}}'
}
# instance events of pod-1 after line $1 of the event log, as compact JSON lines
ev_since() { tail -n +"$(($1 + 1))" "$EVENTS" | jq -c 'select(.kind == "instance" and .instance_id == "pod-1")'; }
# the metrics JSON objects among them (a status message is never a JSON object)
metric_events() { ev_since "$1" | jq -c 'select(.metrics | startswith("{"))'; }
n_metrics_ge() { (($(metric_events "$1" | grep -c .) >= $2)); }
has_status() { ev_since "$1" | jq -r .status | grep -qx "$2"; }
registered_n() { (($(jq -s 'map(select(.kind == "register")) | length' "$EVENTS") >= $1)); }
start_riklet() {
	"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname node-1 --metrics-interval 60 \
		"${RK_OPTS[@]}" --insecure-registries "$REGISTRY" "$@" >>"$RK_LOG" 2>&1 </dev/null &
	RK_PID=$!
	RK_PIDS+=("$RK_PID")
}

touch "$EVENTS"
sched_start || bail_out "scheduler.py did not start"
export RIKLET_RECONNECT_HEALTHY=3

# --- a bad value is refused with the reason ----------------------------------------------------
out=$(timeout 30 "$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname node-x "${RK_OPTS[@]}" \
	--instance-metrics-interval -1 2>&1 </dev/null)
isnt "$?" 0 "--instance-metrics-interval -1: riklet exits non-zero"
like "$out" 'instance-metrics-interval must be 0' "and says what the value must be"

# --- off by default ------------------------------------------------------------------------------
start_riklet
ok "wait_for 20 registered_n 1" "riklet (no --instance-metrics-interval) registers"
instruct pod-1 "$(pod_def web)" CREATE
ok "wait_for 90 has_status 0 RUNNING" "pod-1 is RUNNING"
sleep 4
is "$(metric_events 0 | grep -c .)" 0 "without the flag: no InstanceMetric with metrics JSON in 4 s"
sched_ok() { rk_ps_json | jq -e '.agent.scheduler.connected == true and .agent.scheduler.queued == 0' >/dev/null; }
ok "wait_for 20 sched_ok" "ps --json: scheduler connected, nothing queued (the Prometheus series' values)"
pid1=$(rk_runc_pid pod-1_c1)
rk_stop

# --- on: riklet restarted with --instance-metrics-interval 1; pod-1 is re-adopted --------------
mark=$(wc -l <"$EVENTS")
start_riklet --instance-metrics-interval 1
ok "wait_for 20 registered_n 2" "riklet with --instance-metrics-interval 1 registers again"
ok "wait_for 30 n_metrics_ge $mark 3" "the peer receives metrics for pod-1 every second"
is "$(rk_runc_pid pod-1_c1)" "$pid1" "pod-1 was re-adopted, not restarted"
evs=$(metric_events "$mark") # one snapshot: more arrive while the checks run
first=$(head -1 <<<"$evs")
last=$(tail -1 <<<"$evs")
diag "first: $first"
diag "reports at: $(jq -r .t <<<"$evs" | paste -sd" ")"
is "$(jq -r .status <<<"$first")" RUNNING "InstanceMetric.status is the instance's status (RUNNING)"
is "$(jq -r .identifier <<<"$first")" node-1 "WorkerStatus.identifier is the hostname"
m=$(jq -r .metrics <<<"$first")
ok "jq -e '(.cpu_seconds | type) == \"number\" and .cpu_seconds > 0 and .cpu_seconds < 600' <<<'$m'" \
	"cpu_seconds: a positive number of seconds"
ok "jq -e '.memory_bytes > 1000000 and .memory_bytes < 1073741824' <<<'$m'" \
	"memory_bytes: between 1 MB (the 4 MB the shell holds) and 1 GiB"
ok "jq -e '(.memory_peak_bytes == null) or (.memory_peak_bytes >= .memory_bytes)' <<<'$m'" \
	"memory_peak_bytes (when the kernel has it) >= memory_bytes"
ok "jq -e '.pids >= 2 and .pids < 50' <<<'$m'" "pids: sh and sleep (2 or a few more)"
is "$(jq -r '.oom_kills // 0' <<<"$m")" 0 "oom_kills: 0"
ok "jq -e '.containers.c1.pids == .pids and .containers.c1.cpu_seconds == .cpu_seconds' <<<'$m'" \
	"containers.c1 holds the one container's numbers"
ok "jq -e --argjson a '$m' '.cpu_seconds >= \$a.cpu_seconds' <<<'$(jq -r .metrics <<<"$last")'" \
	"cpu_seconds never goes backwards between reports"
# no more than one report per second (+ slack for a slow machine)
t0=$(jq -r .t <<<"$first")
t1=$(jq -r .t <<<"$last")
n=$(grep -c . <<<"$evs")
ok "awk -v n=$n -v a=$t0 -v b=$t1 'BEGIN { exit !(n <= (b - a) / 0.8 + 2) }'" \
	"about one report per second ($n in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
sent_ok() { rk_ps_json | jq -e '.agent.scheduler.instance_metrics_sent >= 3' >/dev/null; }
ok "wait_for 20 sent_ok" "ps --json counts the reports sent"
prom_ok() {
	local m
	m=$("$RIKLET" metrics --state-dir "$STATE" 2>/dev/null) || return 1
	grep -qx 'riklet_scheduler_connected 1' <<<"$m" && grep -qx 'riklet_status_updates_queued 0' <<<"$m" &&
		awk '$1 == "riklet_instance_metrics_sent_total" && $2 >= 3 { f = 1 } END { exit !f }' <<<"$m"
}
ok "wait_for 20 prom_ok" "riklet metrics: scheduler_connected 1, status_updates_queued 0, instance_metrics_sent_total >= 3"

# --- DESTROY: TERMINATED is the last word, no RUNNING metric after it ---------------------------
instruct pod-1 "" DESTROY
ok "wait_for 60 has_status $mark TERMINATED" "DESTROY pod-1: TERMINATED reported"
sleep 3
is "$(ev_since "$mark" | jq -r .status | tail -1)" TERMINATED "nothing follows TERMINATED (3 s later)"
ok "wait_for 10 rk_nothing_left pod-1" "no container, mount or directory left for pod-1"
ok "kill -0 $RK_PID" "riklet still runs"
rk_stop
done_testing
