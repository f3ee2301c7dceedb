# test_prom.sh — `riklet metrics` for a running agent: the text passes `promtool check metrics`
# and its numbers are the agent's: instances by state (as ps --json counts them), per-instance
# memory and CPU, container restarts, image pulls (ok and error), start durations, policy errors,
# loop lag, the agent process's RSS and fds. (Scraped by a real Prometheus on --metrics-listen:
# test_prometheus.sh.)
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd docker-registry umoci skopeo jq promtool
rk_init
rk_registry_image '["sh","-c","sleep 3600"]'
POL=$TEST_TMP/policies
mkdir -p "$POL"
# an admission policy that raises for one workload name
cat >"$POL/admission.lua" <<'EOF'
local A = {}
function A.admit(w)
  if w.name == "boom" then error("boom: this policy raises") end
  return w
end
return A
EOF
rk_start_standalone --insecure-registries "$REGISTRY" --policy-dir "$POL" || bail_out "riklet did not start"

pod() { # pod NAME IMAGE [RESTARTPOLICY CMD]
	jq -n --arg n "$1" --arg img "$2" --arg rp "${3:-Never}" --arg cmd "${4:-sleep 3600}" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {restartPolicy: $rp,
		containers: [{name: "c", image: $img, command: ["/bin/sh", "-c", $cmd]}]}}' >"$MANIFESTS/$1.json"
}
pod a "$IMAGE"
pod r "$IMAGE" OnFailure "sleep 1; exit 3"
pod missing "$REGISTRY/no-such-image:latest"
pod boom "$IMAGE"
rk_wait_status 120 a RUNNING || bail_out "a is not RUNNING: $(rk_reason a)"
rk_wait_status 60 missing FAILED
rk_wait_status 60 boom FAILED
restarted() { (($(rk_ps_json | jq '.instances[] | select(.id == "r") | .restarts') >= 1)); }
ok "wait_for 60 restarted" "r was restarted by its policy"

metrics() { "$RIKLET" metrics --state-dir "$STATE"; }
val() { metrics | awk -v s="$1" '$1 == s { print $2 }'; }
# agent.json (the daemon's counters) is rewritten every 5 s
pulled() { [[ -n $(val 'riklet_image_pulls_total{result="error"}') ]]; }
ok "wait_for 30 pulled" "the failed pull is counted once agent.json is rewritten"
out=$(metrics)
ok "promtool check metrics <<<\"\$out\"" "promtool check metrics accepts the exposition"
has() { awk -v s="$1" '$1 == s { print $2 }' <<<"$out"; }
is "$(has riklet_agent_running)" 1 "riklet_agent_running 1"
running=$(rk_ps_json | jq '[.instances[] | select(.status == "RUNNING" and .kind == "Pod")] | length')
failed=$(rk_ps_json | jq '[.instances[] | select(.status == "FAILED" and .kind == "Pod")] | length')
is "$(has 'riklet_instances{kind="Pod",state="RUNNING"}')" "$running" "riklet_instances RUNNING = ps --json ($running)"
is "$(has 'riklet_instances{kind="Pod",state="FAILED"}')" "$failed" "riklet_instances FAILED = ps --json ($failed)"
ok "(( $(has 'riklet_instance_memory_bytes{instance="a",kind="Pod"}') > 0 ))" "a's memory"
like "$(has 'riklet_instance_cpu_seconds_total{instance="a",kind="Pod"}')" '^[0-9.e-]+$' "a's CPU seconds"
ok "(( $(has 'riklet_container_restarts_total{container="c",instance="r"}') >= 1 ))" "r's restarts"
ok "(( $(has 'riklet_image_pulls_total{result="ok"}') >= 1 ))" "the pull of the image: result ok"
ok "(( $(has 'riklet_image_pulls_total{result="error"}') >= 1 ))" "the pull of a missing image: result error"
ok "(( $(has 'riklet_instance_start_duration_seconds_count{kind="Pod"}') >= 2 ))" "start durations of a and r observed"
is "$(has 'riklet_instance_start_duration_seconds_bucket{kind="Pod",le="+Inf"}')" \
	"$(has 'riklet_instance_start_duration_seconds_count{kind="Pod"}')" "the +Inf bucket is the count"
ok "(( $(has 'riklet_policy_errors_total{policy="admission"}') >= 1 ))" "the raising admission policy is counted"
like "$(has 'riklet_loop_lag_seconds{window="all"}')" '^[0-9.e-]+$' "loop lag"
rss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$RK_PID/status")
got=$(has process_resident_memory_bytes)
ok "(( got > rss / 2 && got < rss * 2 ))" "process_resident_memory_bytes ($got) is the agent's RSS ($rss), give or take what changed since"
ok "(( $(has process_open_fds) >= 3 ))" "process_open_fds of the agent"

rk_stop TERM
is "$(metrics | awk '$1 == "riklet_agent_running" { print $2 }')" 0 "with the agent stopped: riklet_agent_running 0"
metrics | promtool check metrics >&2
is "$?" 0 "and the exposition is still valid"

done_testing
