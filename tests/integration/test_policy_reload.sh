# test_policy_reload.sh — SIGHUP makes a running riklet reload its policies and its config file,
# and say so in its log: a changed admission policy decides the next workload; a policy that no
# longer compiles keeps the previous version, and the log says why; a changed live option applies,
# one that needs a restart is reported; the same riklet keeps serving throughout.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd jq
rk_init

PD=$TEST_TMP/policies
CONF=$TEST_TMP/riklet.conf.lua
mkdir -p "$PD"
policy() { # policy VERSION: an admission policy over the default, refusing Pods named probe*
	cat >"$PD/admission.lua" <<EOF
local A = setmetatable({}, { __index = base })
function A.admit(w, ctx)
  if type(w.name) == "string" and w.name:find("^probe") then return nil, "refused by policy $1" end
  return base.admit(w, ctx)
end
return A
EOF
}
pod() { jq -n --arg name "$1" '{apiVersion: "v1", kind: "Pod", name: $name, spec: {containers: [{name: "c", image: "busybox"}]}}'; }
logged() { grep -qF -- "$1" "$RK_LOG"; }
hup_count() { grep -c 'SIGHUP: reloading' "$RK_LOG"; }
hup() { # send SIGHUP, wait for its summary line
	local before
	before=$(grep -c 'SIGHUP: .* reloaded, ' "$RK_LOG")
	kill -HUP "$RK_PID"
	wait_for 10 bash -c "(( \$(grep -c 'SIGHUP: .* reloaded, ' '$RK_LOG') > $before ))"
}
probe() { # probe NAME EXPECTED_REASON MESSAGE
	pod "$1" >"$MANIFESTS/$1.json"
	rk_wait_status 20 "$1" FAILED
	like "$(rk_reason "$1")" "$2" "$3" || diag_file "$RK_LOG" 20
}

policy v1
echo 'return { keep_records = 100, pod_cidr = "10.89.0.0/16" }' >"$CONF"
rk_start_standalone --policy-dir "$PD" --config "$CONF" || bail_out "riklet did not start"
ok "logged 'policy admission loaded from $PD/admission.lua'" "the operator's policy is loaded at start"
probe probe-a "refused by policy v1" "version 1 decides the first workload"

policy v2
echo 'return { keep_records = 50, pod_cidr = "10.77.0.0/16" }' >"$CONF"
ok hup "SIGHUP is answered with a summary in the log"
is "$(hup_count)" 1 "the log says SIGHUP: reloading once"
ok "logged 'policy admission reloaded from $PD/admission.lua'" "the log names the reloaded policy"
ok "logged 'SIGHUP: --keep-records is now 50'" "a live option from the config file applies"
ok "logged '--pod-cidr changed; that takes effect when riklet restarts'" "an option needing a restart is reported"
probe probe-b "refused by policy v2" "version 2 decides the next workload"

echo 'return { admit = function(' >"$PD/admission.lua"
ok hup "SIGHUP with a broken policy is answered too"
ok "logged 'policy admission was not reloaded, the version loaded before stays in use: policy $PD/admission.lua does not compile'" \
	"the log says the broken policy was not loaded, and why"
probe probe-c "refused by policy v2" "version 2 stays in use"

echo 'return {' >"$CONF"
ok hup "SIGHUP with a broken config file is answered too"
ok "logged 'SIGHUP: the configuration is not valid, the running one stays in use'" "the log says the config file is not valid"
ok "kill -0 $RK_PID" "the same riklet is still running"
rk_stop
is "$?" 0 "and stops with status 0 on SIGTERM"
done_testing
