# test_prometheus.sh — riklet --metrics-listen scraped by the real Prometheus (Debian's package):
# the target goes up, the query API returns riklet's series with the values `riklet ps --json`
# shows (instances by state, a Pod's memory limit, pids, memory and CPU), `promtool check metrics`
# accepts what /metrics serves, other paths are 404 and other methods 405, and a second riklet
# cannot take a port that is in use (it refuses to start, saying which option).
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd docker-registry umoci skopeo jq curl prometheus promtool
rk_init
rk_registry_image '["sh","-c","sleep 3600"]'
MPORT=$(free_port) || bail_out "no free port"
PPORT=$(free_port) || bail_out "no free port"
jq -n --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: "web", spec: {restartPolicy: "Never",
	containers: [{name: "c", image: $img, command: ["/bin/sh", "-c", "sleep 3600"],
	resources: {limits: {memory: "48Mi"}}}]}}' >"$MANIFESTS/web.json"
jq -n '{apiVersion: "v1", kind: "Pod", name: "bad",
	spec: {containers: [{name: "c", image: "127.0.0.1:1/nothing:latest"}]}}' >"$MANIFESTS/bad.json"
rk_start_standalone --insecure-registries "$REGISTRY" --metrics-listen "127.0.0.1:$MPORT" ||
	bail_out "riklet did not start"
rk_wait_status 120 web RUNNING || bail_out "web is not RUNNING: $(rk_reason web)"
rk_wait_status 60 bad FAILED || bail_out "bad is not FAILED: $(rk_reason bad)"

# --- the endpoint itself ---
URL=http://127.0.0.1:$MPORT/metrics
curl -sS -D "$TEST_TMP/headers" -o "$TEST_TMP/metrics.txt" "$URL"
like "$(tr -d '\r' <"$TEST_TMP/headers" | head -1)" '^HTTP/1\.1 200' "GET /metrics: 200"
like "$(tr -d '\r' <"$TEST_TMP/headers" | grep -i '^content-type:')" 'text/plain; version=0\.0\.4' \
	"Content-Type text/plain; version=0.0.4"
ok "promtool check metrics <'$TEST_TMP/metrics.txt'" "promtool check metrics accepts what /metrics serves"
ok "grep -qx 'riklet_instances{kind=\"Pod\",state=\"RUNNING\"} 1' '$TEST_TMP/metrics.txt'" \
	"the live agent's instances (no agent.json round trip)"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/")" 404 "GET / is 404"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/metrics/x")" 404 "GET /metrics/x is 404"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data x "$URL")" 405 "POST /metrics is 405"
is "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$URL")" 405 "DELETE /metrics is 405"
# many requests (several Lua GC cycles, some clients gone mid-answer, bodies on a GET-only path):
# still served — a server object nothing held was collected with its socket
{
	curl -s -Z --parallel-max 20 "$URL?n=[1-400]"
	curl -s -Z --parallel-max 20 -m 0.01 "$URL?a=[1-100]"
	curl -s -Z --parallel-max 20 -X POST --data-binary @"$RIKLET_SRC_DIR/README.md" "$URL?p=[1-100]"
} >/dev/null 2>&1
is "$(curl -s -o /dev/null -w '%{http_code}' "$URL")" 200 "after 600 requests (GC cycles, aborted clients) /metrics still answers"
ok "kill -0 $RK_PID" "and riklet still runs"

# --- Prometheus scrapes it every second ---
mkdir -p "$TEST_TMP/prom"
cat >"$TEST_TMP/prom.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: riklet
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
EOF
prometheus --config.file="$TEST_TMP/prom.yml" --storage.tsdb.path="$TEST_TMP/prom" \
	--web.listen-address="127.0.0.1:$PPORT" >"$TEST_TMP/prometheus.log" 2>&1 </dev/null &
PROM_PID=$!
on_exit "kill $PROM_PID 2>/dev/null; wait $PROM_PID 2>/dev/null"
API=http://127.0.0.1:$PPORT/api/v1
target_up() {
	[[ $(curl -sf "$API/targets" | jq -r '.data.activeTargets[0] | "\(.health) \(.lastError)"') == "up " ]]
}
if ! wait_for 60 target_up; then
	curl -s "$API/targets" >&2
	tail -n 20 "$TEST_TMP/prometheus.log" >&2
	bail_out "Prometheus does not see the riklet target up"
fi
pass "Prometheus scrapes riklet: target up, no scrape error"
# Prometheus keeps `instance` for the target (127.0.0.1:PORT): riklet's instance label arrives as
# exported_instance (the job does not set honor_labels).
# q EXPR -> "TIMESTAMP VALUE" of the one series EXPR returns (empty when none)
q() { curl -sf -G "$API/query" --data-urlencode "query=$1" | jq -r '.data.result | if length == 1 then "\(.[0].value[0]) \(.[0].value[1])" else empty end'; }
qv() { q "$1" | awk '{ print $2 }'; }
psj() { rk_ps_json | jq -r --arg id web ".instances[] | select(.id == \$id) | $1"; }

is "$(qv 'riklet_instances{kind="Pod",state="RUNNING"}')" \
	"$(rk_ps_json | jq '[.instances[] | select(.kind == "Pod" and .status == "RUNNING")] | length')" \
	"riklet_instances RUNNING = ps --json"
is "$(qv 'riklet_instances{kind="Pod",state="FAILED"}')" \
	"$(rk_ps_json | jq '[.instances[] | select(.kind == "Pod" and .status == "FAILED")] | length')" \
	"riklet_instances FAILED = ps --json"
is "$(qv 'riklet_instance_memory_limit_bytes{exported_instance="web",kind="Pod"}')" "$(psj .metrics.memory_limit_bytes)" \
	"web's memory limit = ps --json ($((48 * 1048576)))"
is "$(qv 'riklet_instance_pids{exported_instance="web",kind="Pod"}')" "$(psj .metrics.pids)" "web's pids = ps --json"
is "$(qv 'riklet_agent_running')" 1 "riklet_agent_running 1"
is "$(qv 'up{job="riklet"}')" 1 "up{job=\"riklet\"} 1"

# CPU seconds only grow: a sample scraped after ps said A and before ps said B lies in [A, B].
# Memory moves a little: within 10% (and 1 MiB) of what ps --json says around the same scrape.
t0=$(date +%s.%N)
cpu_a=$(psj .metrics.cpu_seconds)
mem_a=$(psj .metrics.memory_bytes)
newer() { awk -v t="$t0" '{ exit !($1 > t + 0.2) }' <<<"$(q 'riklet_instance_cpu_seconds_total{exported_instance="web",kind="Pod"}')"; }
ok "wait_for 30 newer" "a scrape after the first ps --json"
cpu_p=$(qv 'riklet_instance_cpu_seconds_total{exported_instance="web",kind="Pod"}')
mem_p=$(qv 'riklet_instance_memory_bytes{exported_instance="web",kind="Pod"}')
cpu_b=$(psj .metrics.cpu_seconds)
mem_b=$(psj .metrics.memory_bytes)
ok "awk -v a='$cpu_a' -v p='$cpu_p' -v b='$cpu_b' 'BEGIN { exit !(p != \"\" && a <= p && p <= b) }'" \
	"web's CPU seconds from Prometheus ($cpu_p) between ps --json before ($cpu_a) and after ($cpu_b)"
ok "awk -v a='$mem_a' -v p='$mem_p' -v b='$mem_b' 'BEGIN { m = (a + b) / 2; d = p - m; if (d < 0) d = -d;
	exit !(p > 0 && (d <= m / 10 || d <= 1048576)) }'" \
	"web's memory from Prometheus ($mem_p) matches ps --json ($mem_a, $mem_b)"
ok "[[ -n \$(qv 'process_resident_memory_bytes{job=\"riklet\"}') ]]" "riklet's own RSS is scraped"

# --- destroyed: the series follow ---
rm -f "$MANIFESTS/web.json"
rk_wait_status 60 web TERMINATED || fail "web did not end: $(rk_status web)"
gone() { [[ $(qv 'riklet_instances{kind="Pod",state="RUNNING"}') == 0 && -z $(q 'riklet_instance_memory_bytes{exported_instance="web"}') ]]; }
ok "wait_for 30 gone" "once web ended: RUNNING 0 and no memory series for it"

# --- the port is taken: a second riklet refuses to start and says why ---
out=$(timeout 30 "$RIKLET" --standalone "$MANIFESTS" --state-dir "$TEST_TMP/state2" --runc-root "$TEST_TMP/runc2" \
	--network none --metrics-listen "127.0.0.1:$MPORT" 2>&1 </dev/null)
rc=$?
kill -0 "$RK_PID" 2>/dev/null || { fail "the first riklet is still running"; diag_file "$RK_LOG" 60; }
isnt "$rc" 0 "a second riklet on the same --metrics-listen port exits non-zero"
like "$out" "--metrics-listen 127\.0\.0\.1:$MPORT" "and its error names the option and the address"
done_testing
