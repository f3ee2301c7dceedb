#!/usr/bin/env bash
# test_hostile_agent_json.sh (hostile) — STATE/agent.json is rewritten without fsync (riklet.status):
# a machine crash or a full disk can leave it empty, torn or zeroed, and the pid it names may be
# reused by any process. `riklet ps` (and --json), `riklet metrics` and `riklet prune` must read
# every such file as "no riklet runs" (said, not a traceback), never signal the process at that
# pid, and the next riklet must start over it and write a good one. A big one (a prune's list of
# what it removed) is still read.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
rk_init
AJ=$STATE/agent.json

rk_start_standalone || bail_out "riklet did not start"
ok "wait_for 20 test -s '$AJ'" "riklet wrote agent.json"
good=$(cat "$AJ")
is "$("$RIKLET" ps --json --state-dir "$STATE" | jq -r .agent.pid)" "$RK_PID" "ps --json names the running riklet"
rk_stop

sleep 600 &
other=$!
disown "$other"
on_exit "kill -9 $other"
ticks=$(awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$other/stat")

readers_ok() { # readers_ok WHAT: ps, ps --json and metrics on the agent.json in place
	local what=$1 out err rc
	out=$("$RIKLET" ps --state-dir "$STATE" 2>"$TEST_TMP/err")
	rc=$?
	err=$(cat "$TEST_TMP/err")
	ok "((rc == 0)) && [[ \$out == *'agent: not running ('* ]] && [[ -z \$err ]]" "$what: riklet ps says no riklet runs" ||
		diag "rc $rc" "out: $out" "err: $err"
	out=$("$RIKLET" ps --json --state-dir "$STATE" 2>"$TEST_TMP/err")
	is "$(jq -r '.agent' <<<"$out" 2>&1)/$(wc -c <"$TEST_TMP/err")" "null/0" "$what: ps --json: agent null" ||
		diag "out: $out" "err: $(cat "$TEST_TMP/err")"
	out=$("$RIKLET" metrics --state-dir "$STATE" 2>"$TEST_TMP/err")
	rc=$?
	ok "((rc == 0)) && grep -q '^riklet_agent_running 0' <<<\"\$out\"" "$what: riklet metrics: agent down, no error" ||
		diag "rc $rc" "out: $(head -5 <<<"$out")" "err: $(cat "$TEST_TMP/err")"
}

: >"$AJ"
readers_ok "empty"
head -c $((${#good} / 2)) <<<"$good" >"$AJ"
readers_ok "torn (first half)"
head -c 4096 /dev/zero >"$AJ"
readers_ok "zeroed (4096 NULs)"
echo '[]' >"$AJ"
readers_ok "[]"
echo '{"pid": "12"}' >"$AJ"
readers_ok "pid a string"
echo '{"pid": -1}' >"$AJ"
readers_ok "pid -1"
echo '{"pid": 1e300}' >"$AJ"
readers_ok "pid 1e300"
# the pid reused by another process: with start_ticks it is told apart; without them (a riklet that
# could not read its own /proc/PID/stat at start) it must not be taken for a riklet either
jq -c --argjson p "$other" '.pid = $p' <<<"$good" >"$AJ"
readers_ok "pid reused (start time differs)"
jq -c --argjson p "$other" '.pid = $p | del(.start_ticks)' <<<"$good" >"$AJ"
readers_ok "pid reused, no start time"
"$RIKLET" prune --state-dir "$STATE" >/dev/null 2>&1 &
pp=$!
wait_for 70 bash -c "! kill -0 $pp"
ok "kill -0 $other" "riklet prune did not signal the process at that pid (SIGUSR1 would end it)"
# the right process, but fields of the wrong types: said as far as they can be, never a traceback
jq -c --argjson p "$other" --argjson t "$ticks" '.pid = $p | .start_ticks = $t | .started_at = "x" | .instances = {}
	| .loop = {lag_max_ms: "x", lag_recent_ms: [], slowest: 7} | .version = null | .prom = "x" | .pool = 3' <<<"$good" >"$AJ"
out=$("$RIKLET" ps --state-dir "$STATE" 2>"$TEST_TMP/err")
rc=$?
ok "((rc == 0)) && [[ -z \$(cat '$TEST_TMP/err') ]]" "fields of the wrong types: riklet ps does not fail" ||
	diag "rc $rc" "out: $out" "err: $(cat "$TEST_TMP/err")"
out=$("$RIKLET" metrics --state-dir "$STATE" 2>"$TEST_TMP/err")
rc=$?
ok "((rc == 0)) && [[ -z \$(cat '$TEST_TMP/err') ]]" "fields of the wrong types: riklet metrics does not fail" ||
	diag "rc $rc" "out: $(head -3 <<<"$out")" "err: $(cat "$TEST_TMP/err")"

# a big one (a prune that removed 1,000 image directories lists them all in image_gc.last_removed):
# still the running riklet's, not "no agent.json"
jq -c --argjson p "$other" --argjson t "$ticks" '.pid = $p | .start_ticks = $t
	| .image_gc.last_removed = [range(1000) | "\(.)" * 1 | "/var/lib/riklet/images/blobs/sha256/\(. | tostring)0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"]' <<<"$good" >"$AJ"
diag "agent.json of $(wc -c <"$AJ") bytes"
is "$("$RIKLET" ps --json --state-dir "$STATE" 2>&1 | jq -r .agent.pid)" "$other" "a 100 KB agent.json (1,000 removed image directories): ps --json reads it"
like "$("$RIKLET" ps --state-dir "$STATE" 2>&1 | tail -n 1)" "^agent: pid $other," "and riklet ps names that agent"

# the next riklet starts over a torn file and writes a good one
head -c 100 <<<"$good" >"$AJ"
rk_start_standalone || bail_out "riklet did not start over a torn agent.json"
names_it() { [[ $("$RIKLET" ps --json --state-dir "$STATE" | jq -r .agent.pid) == "$RK_PID" ]]; }
ok "wait_for 20 names_it" "riklet started over a torn agent.json, which names it again"
rk_stop
done_testing
