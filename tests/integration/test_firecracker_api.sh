#!/usr/bin/env bash
# test_firecracker_api.sh — the Firecracker backend (lua/riklet/vmm/firecracker.lua) against
# Firecracker's published API contract. No firecracker binary can run here, so a stand-in
# (tests/firecracker/fake_firecracker.py, first on PATH as `firecracker`) serves --api-sock and
# checks EVERY request against tests/firecracker/firecracker-api-v1.16.1.yaml (path, method, body
# against `definitions` with python3-jsonschema), answering as the spec says. The scenarios run in
# `riklet test tests/integration/firecracker_api.lua`: the exact call sequence, a 400 fault_message
# failing the start, SendCtrlAltDel on stop, kill after the grace period, power-off, VMM crash,
# adoption, a missing binary, and the checker refusing bad requests.
source "$(dirname "$0")/../lib/common.sh"
[[ -x $PYTHON ]] || skip_all "needs $PYTHON (apt-get install python3)"
"$PYTHON" -c 'import jsonschema, yaml' 2>/dev/null ||
	skip_all "needs python modules jsonschema and yaml (apt-get install python3-jsonschema python3-yaml)"

mkdir -p "$TEST_TMP/bin"
cat >"$TEST_TMP/bin/firecracker" <<EOS
#!/bin/sh
exec $PYTHON $RIKLET_SRC_DIR/tests/firecracker/fake_firecracker.py "\$@"
EOS
chmod +x "$TEST_TMP/bin/firecracker"
on_exit "pkill -9 -f '[f]ake_firecracker.py --api-sock $TEST_TMP/' || true"

out=$TEST_TMP/lua.tap
if FC_TMP=$TEST_TMP PATH=$TEST_TMP/bin:$PATH timeout 240 "$RIKLET" test \
	"$RIKLET_SRC_DIR/tests/integration/firecracker_api.lua" >"$out" 2>&1; then
	pass "firecracker backend scenarios (riklet test): $(grep -c '^ok' "$out") checks passed"
else
	fail "firecracker backend scenarios (riklet test)"
fi
grep -E '^(not )?ok ' "$out" | sed 's/^/# /'
grep -q '^not ok' "$out" && diag_file "$out" 60

# every request any instance's fake received was valid, except the checker's own refusal tests
bad=$(cat "$TEST_TMP"/i*/fake-firecracker.log 2>/dev/null | "$PYTHON" -c '
import json, sys
for l in sys.stdin:
    c = json.loads(l)
    if not c["valid"]:
        print(c["method"], c["path"], c["problem"])')
is "$(grep -c . <<<"$bad")" 4 "exactly the 4 deliberately bad requests were refused by the contract check"
no_fake() { ! pgrep -f "[f]ake_firecracker.py --api-sock $TEST_TMP/"; }
ok "wait_for 5 no_fake" "no firecracker process left running"
done_testing
