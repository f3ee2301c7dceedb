#!/usr/bin/env bash
# test_destroy_during_pull.sh — a DESTROY (manifest removed) while the instance's image is still
# being pulled from a registry that never answers: the instance goes TERMINATED at once, without
# waiting for the pull and without a FAILED on the way, leaves nothing behind, and riklet goes on
# serving (a good instance created afterwards reaches RUNNING). riklet killed with -9 during a
# creation: the next riklet rolls it back and creates it again.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd umoci skopeo
need_py
rk_init

# A "registry" that accepts connections and never says a word.
HOLE_PORT=$(free_port)
"$PYTHON" - "$HOLE_PORT" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
PY
HOLE_PID=$!
# stopping the black hole also ends the skopeo still waiting on it (connection reset)
on_exit "kill $HOLE_PID 2>/dev/null; wait $HOLE_PID 2>/dev/null"
wait_for 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HOLE_PORT" || bail_out "black-hole registry did not start"

mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"

pod() { # pod FILE IMAGE
	cat >"$MANIFESTS/.$1.tmp" <<JSON
{"apiVersion":"v1","kind":"Pod","name":"$1","spec":{"containers":[{"name":"main","image":"$2","env":null,"ports":null}]}}
JSON
	mv "$MANIFESTS/.$1.tmp" "$MANIFESTS/$1.json"
}

rk_start_standalone --insecure-registries "127.0.0.1:$HOLE_PORT" --pull-timeout 300 || bail_out "riklet did not start"

pod stuck "127.0.0.1:$HOLE_PORT/never/answers:latest"
ok "rk_wait_status 10 stuck CREATING" "the instance is CREATING while its pull hangs"
sleep 1
is "$(rk_status stuck)" CREATING "still CREATING a second later (the pull really hangs)"
ok "pgrep -f 'skopeo.*$HOLE_PORT' >/dev/null" "skopeo is waiting on the silent registry"

t0=$(date +%s%N)
rm "$MANIFESTS/stuck.json"
ok "rk_wait_status 5 stuck TERMINATED" "removing the manifest gives TERMINATED"
ms=$((($(date +%s%N) - t0) / 1000000))
ok "((ms < 5000))" "TERMINATED within 5 s of the destroy, not after the pull timeout (${ms} ms)"
is "$(rk_reason stuck)" destroyed "the reason says destroyed"
nok "grep -q 'stuck.*-> FAILED' '$RK_LOG'" "no FAILED was reported on the way"
ok "grep -q 'stuck.*CREATING -> DESTROYING' '$RK_LOG'" "CREATING -> DESTROYING -> TERMINATED"
ok "rk_nothing_left stuck" "nothing left behind (no container, mount or directory)"

# riklet killed with -9 in the middle of a creation: the next riklet rolls it back and creates it
# again from the stored definition; then a destroy still ends it at once.
pod again "127.0.0.1:$HOLE_PORT/never/answers:v2"
ok "rk_wait_status 10 again CREATING" "a second instance is CREATING on the silent registry"
rk_stop KILL
rk_start_standalone --insecure-registries "127.0.0.1:$HOLE_PORT" --pull-timeout 300 || bail_out "riklet did not restart"
ok "wait_for 10 grep -q 'again was being created when riklet stopped' '$RK_LOG'" \
	"the restarted riklet rolls back the interrupted creation and creates it again"
ok "rk_wait_status 10 again CREATING" "it is CREATING again"
rm "$MANIFESTS/again.json"
ok "rk_wait_status 5 again TERMINATED" "and a destroy still ends it at once"
ok "rk_nothing_left again" "nothing left behind by the interrupted creation"

pod good "oci:$TEST_TMP/layout:latest"
ok "rk_wait_status 20 good RUNNING" "riklet goes on serving: a good instance reaches RUNNING"
ok "kill -0 $RK_PID" "riklet is still running"
nok "grep -q 'stack traceback' '$RK_LOG'" "no Lua error in the log"
done_testing
