# test_policy_results.sh — what an operator's admission policy returns or raises is input too: a
# refusal whose reason is not a string (a table, a boolean), a reason or an error message of
# megabytes, one holding a NUL, a newline or a terminal escape: each fails only its instance,
# FAILED with a readable reason (escaped, cut), nothing created, no forged log line, and the same
# riklet keeps serving the next workload. (Before: a table or boolean reason raised inside the
# agent and left the instance CREATING; a NUL made the record unwritable; a newline forged a line.)
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd jq
rk_init

PD=$TEST_TMP/policies
mkdir -p "$PD"
cat >"$PD/admission.lua" <<'EOF_POLICY'
local A = setmetatable({}, { __index = base })
local say = {
  ["r-table"] = function() return nil, { why = "a table" } end,
  ["r-bool"] = function() return false, true end,
  ["r-number"] = function() return nil, 42 end,
  ["r-huge"] = function() return nil, "huge " .. string.rep("x", 4 * 1024 * 1024) end,
  ["r-nul"] = function() return nil, "before\0after" end,
  ["r-forge"] = function() return nil, "no\n2099-01-01 riklet[1]: forged line \27[31mred" end,
  ["r-utf8"] = function() return nil, "bad \255\254 utf8" end,
  ["r-raise-table"] = function() error({ code = 1 }) end,
  ["r-raise-forge"] = function() error("no\n2099-01-01 riklet[1]: forged by error\0 after the NUL", 0) end,
  ["r-raise-huge"] = function() error(string.rep("y", 3 * 1024 * 1024), 0) end,
}
function A.admit(w, ctx)
  local f = say[w.name]
  if f then return f() end
  return base.admit(w, ctx)
end
return A
EOF_POLICY

pod() { jq -n --arg name "$1" '{apiVersion: "v1", kind: "Pod", name: $name, spec: {containers: [{name: "c", image: "busybox"}]}}'; }
rk_start_standalone --policy-dir "$PD" || bail_out "riklet did not start"

check() { # check NAME REASON_PATTERN MESSAGE
	pod "$1" >"$MANIFESTS/$1.json"
	if rk_wait_status 60 "$1" FAILED; then
		pass "$3: FAILED"
	else
		fail "$3: FAILED (status: '$(rk_status "$1")')"
		diag_file "$RK_LOG" 30
	fi
	like "$(rk_reason "$1")" "$2" "$3: the reason says why"
	ok "rk_nothing_left $1" "$3: nothing created"
	ok "kill -0 $RK_PID" "$3: riklet is still running"
}
check r-table 'its reason is a table, not a string: \{"why":"a table"\}' "a reason that is a table"
check r-bool 'its reason is a boolean, not a string: true' "a reason that is a boolean"
check r-number '^42$' "a reason that is a number"
check r-huge '^rejected by the admission policy: "huge x+"\.\.\. \(4194309 bytes\)$' "a reason of 4 MiB"
check r-nul 'rejected by the admission policy: "before\\u0000after"' "a reason with a NUL"
check r-forge '"no\\n2099-01-01 riklet\[1\]: forged line \\u001b\[31mred"' "a reason with a newline and an escape"
check r-utf8 '"bad \\xff\\xfe utf8"' "a reason that is not UTF-8"
check r-raise-table 'error object is a table' "an error object that is a table"
check r-raise-forge 'failed: no\\n2099-01-01 riklet\[1\]: forged by error\\u0000 after the NUL' "an error message with a newline and a NUL"
check r-raise-huge 'failed: y+\.\.\. \(cut, 3145728 bytes\)' "an error message of 3 MiB"
reason=$(rk_reason r-raise-huge)
ok "(( ${#reason} < 8192 ))" "the 3 MiB error message is cut (${#reason} bytes)"
nok "grep -q '^2099-01-01 riklet' '$RK_LOG'" "no reason forged a log line"
ok "rk_ps_json | jq -e . >/dev/null" "ps --json is still valid JSON"

# the agent still admits and refuses as before
pod plain >"$MANIFESTS/plain.json"
ok "rk_wait_status 60 plain RUNNING FAILED" "a plain Pod after them is served"
loglines=$(wc -c <"$RK_LOG")
ok "(( loglines < 1024 * 1024 ))" "the log did not take the megabytes ($loglines bytes)"
rk_stop
is "$?" 0 "riklet stops with status 0 on SIGTERM"
done_testing
