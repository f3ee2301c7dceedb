#!/usr/bin/env bash
# test_runc_run_shim.sh — riklet-runc-run, the runtime riklet hands conmon for a one-container
# Pod: conmon's `create` becomes one `runc run --detach`, any other command passes unchanged, a
# global option's value is never taken for the command, a runtime that cannot be executed is said
# in runc's --log (JSON, where riklet reads runc's errors) with exit 127. Then the real thing:
# conmon + the shim + runc on a bundle whose process prints and exits 3 at once (before runc run
# returns): conmon's pid file, CRI log line and exit file (3) are all there, and runc knows the
# container (stopped) — what riklet reads after a create.
source "$(dirname "$0")/../lib/common.sh"
SHIM=$(dirname "$RIKLET")/riklet-runc-run
[[ -x $SHIM ]] || bail_out "no riklet-runc-run beside $RIKLET"

# a fake runc printing its arguments, one a line
FAKE=$TEST_TMP/fake-runc
printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$FAKE"
chmod +x "$FAKE"
args() { "$SHIM" "$FAKE" "$@" | tr '\n' ' '; }

is "$(args --root /r --log /l --log-format json create --bundle /b --pid-file /p -- id)" \
	"--root /r --log /l --log-format json run --detach --bundle /b --pid-file /p -- id " \
	"create becomes run --detach, global options and create's options kept in place"
is "$(args --root create create -- create)" "--root create run --detach -- create " \
	"a global option's value or an id named create is not the command"
is "$(args --root /r exec -d --pid-file /p -- id sh)" "--root /r exec -d --pid-file /p -- id sh " \
	"exec (conmon's exec sessions) passes unchanged"
is "$(args --debug --root=/r create id)" "--debug --root=/r run --detach id " "flags and --opt=value forms"
"$SHIM" >/dev/null 2>&1
is "$?" 2 "no runtime path: usage, exit 2"
"$SHIM" relative/runc create x >/dev/null 2>&1
is "$?" 2 "a relative runtime path is refused (conmon passes an absolute one)"
"$SHIM" "$TEST_TMP/absent" --log "$TEST_TMP/runc.log" --log-format json create x 2>"$TEST_TMP/err"
is "$?" 127 "a runtime that cannot be executed: exit 127"
like "$(jq -r 'select(.level == "error") | .msg' "$TEST_TMP/runc.log")" \
	"riklet-runc-run: cannot execute the runtime $TEST_TMP/absent: No such file or directory" \
	"and why, as a JSON error line in runc's --log"
like "$(cat "$TEST_TMP/err")" "cannot execute the runtime" "and on stderr"

# --- the real thing: conmon + shim + runc --------------------------------------------------------
BUSYBOX=/bin/busybox
if [[ $(id -u) != 0 ]] || ! command -v conmon >/dev/null || ! command -v runc >/dev/null ||
	[[ $(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true) != *"not a dynamic executable"* ]]; then
	skip "conmon + runc through the shim: needs root, conmon, runc, a static $BUSYBOX (busybox-static)"
	done_testing
fi
# a bundle by hand (an image would take minutes on a loaded machine): static busybox + runc spec
B=$TEST_TMP/bundle ROOT=$TEST_TMP/runc D=$TEST_TMP/c
mkdir -p "$B/rootfs/bin" "$ROOT" "$D/exit"
cp "$BUSYBOX" "$B/rootfs/bin/busybox" && ln -s busybox "$B/rootfs/bin/sh"
(cd "$B" && runc spec) || bail_out "runc spec failed"
jq '.process.terminal = false | .process.args = ["sh", "-c", "echo out-of-the-container; exit 3"]' \
	"$B/config.json" >"$B/c.json" && mv "$B/c.json" "$B/config.json"
on_exit "runc --root '$ROOT' delete -f shimtest >/dev/null 2>&1"
conmon --api-version 1 --cid=shimtest --cuuid=shimtest --name=shimtest --runtime="$SHIM" --bundle="$B" \
	--container-pidfile="$D/init.pid" --conmon-pidfile="$D/conmon.pid" --log-path="k8s-file:$D/0.log" \
	--persist-dir="$D/exit" --full-attach --runtime-arg="$(command -v runc)" --runtime-arg=--root \
	--runtime-arg="$ROOT" --runtime-arg=--log --runtime-arg="$D/runc.log" --runtime-opt=-- >"$D/out" 2>&1 </dev/null
is "$?" 0 "conmon with riklet-runc-run as its runtime starts"
ok "wait_for 30 test -s '$D/exit/exit'" "conmon writes the exit file of a container that ended at once" || diag_file "$D/out"
is "$(cat "$D/exit/exit" 2>/dev/null)" 3 "with its exit code, 3"
like "$(cat "$D/init.pid" 2>/dev/null)" '^[0-9]+$' "runc's pid file is there (riklet's signal that the container runs)"
like "$(cat "$D/0.log" 2>/dev/null)" '^[0-9T:.+-]+ stdout F out-of-the-container$' "its output is in the CRI log"
is "$(runc --root "$ROOT" state shimtest 2>/dev/null | jq -r .status)" stopped "runc knows the container: stopped"
ok "wait_for 10 bash -c '! kill -0 $(cat "$D/conmon.pid") 2>/dev/null'" "conmon has ended"
done_testing
