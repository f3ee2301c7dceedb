# test_agent_status.sh — STATE/agent.json and what `riklet ps` shows of the agent: a running riklet
# writes its pid, version, loop lag and instance count; `ps --json` is {"agent": ..., "instances":
# [...]} and `ps` prints a footer with the loop lag; a riklet killed with -9, or an agent.json whose
# pid is now another process (pid reused) or a riklet that exited but is not reaped yet (zombie),
# shows as no agent (null), never as a live one.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
rk_init

rk_start_standalone || bail_out "riklet did not start"
ok "wait_for 10 test -s '$STATE/agent.json'" "the daemon writes STATE/agent.json"
json=$(rk_ps_json)
is "$(jq -r '.agent.pid' <<<"$json")" "$RK_PID" "ps --json: agent.pid is the running riklet"
is "$(jq -r '.agent.instances' <<<"$json")" 0 "ps --json: agent.instances counts the instances (none)"
ok "jq -e '.agent.loop.lag_max_ms >= 0 and .agent.loop.lag_recent_ms >= 0 and .agent.loop.turns > 0' <<<'$json' >/dev/null" \
	"ps --json: agent.loop has the loop lag (max and recent) and the turn count"
is "$(jq -c '.instances' <<<"$json")" "[]" "ps --json: instances is an array"
like "$("$RIKLET" ps --state-dir "$STATE")" "agent: pid $RK_PID, .*loop lag max [0-9]+ ms" "riklet ps prints the loop lag in its footer"
# the file is rewritten: updated_at moves
u1=$(jq -r .updated_at "$STATE/agent.json")
rewritten() { [[ $(jq -r .updated_at "$STATE/agent.json") != "$u1" ]]; }
ok "wait_for 12 rewritten" "agent.json is rewritten periodically"
# worker threads start on demand and leave after 2 s idle; agent.json goes without fsync, on the loop
ok "jq -e '.agent.pool.max_threads >= 2 and .agent.pool.threads <= .agent.pool.max_threads' <<<'$(rk_ps_json)' >/dev/null" \
	"ps --json: agent.pool has the pool's cap and its live threads (not more than the cap)"

rk_stop KILL
is "$(rk_ps_json | jq -c .agent)" null "after kill -9, ps --json says no agent runs (agent: null)"
like "$("$RIKLET" ps --state-dir "$STATE")" "agent: not running" "and riklet ps says so"
# a stale file whose pid now names another live process (pid reuse) is not taken for a riklet
sleep 100 &
other=$!
jq --argjson p "$other" '.pid = $p' "$STATE/agent.json" >"$STATE/agent.json.new" && mv "$STATE/agent.json.new" "$STATE/agent.json"
is "$(rk_ps_json | jq -c .agent)" null "a reused pid (another live process) is not shown as the agent"
kill "$other"
wait "$other" 2>/dev/null

# a riklet that has exited but is not reaped yet (a zombie: its parent never waits) is not running
sh -c "\"$RIKLET\" --standalone $MANIFESTS ${RK_OPTS[*]} >>$RK_LOG 2>&1 </dev/null & echo \$! >$TEST_TMP/zpid; exec sleep 60" &
parent=$!
zpid() { cat "$TEST_TMP/zpid" 2>/dev/null; }
agent_is_z() { [[ -n $(zpid) && $(rk_ps_json | jq -r '.agent.pid') == "$(zpid)" ]]; }
ok "wait_for 15 agent_is_z" "a second riklet (child of a parent that never reaps) shows as the agent"
kill -TERM "$(zpid)"
zombie() { [[ $(awk '{ print $3 }' "/proc/$(zpid)/stat" 2>/dev/null) == Z ]]; }
ok "wait_for 10 zombie" "it exited on SIGTERM and stays a zombie"
is "$(rk_ps_json | jq -c .agent)" null "a zombie riklet is not shown as the agent"
kill "$parent"
wait "$parent" 2>/dev/null

# a riklet killed while writing agent.json leaves agent.json.<n>.tmp.<pid>: the next one removes it
# (the kill loop found one under the sanitizer build, where writes are slower)
printf '{}' >"$STATE/agent.json.7.tmp.999999"
rk_start_standalone || bail_out "riklet did not restart"
ok "wait_for 10 test ! -e '$STATE/agent.json.7.tmp.999999'" "a stale agent.json temp file of a dead pid is removed at start"
rk_stop
done_testing
