# test_lib_selftest.sh — the shared test helpers (tests/lib/) work for real: TAP helpers and the
# cleanup stack, a loopback docker-registry, the offline busybox image built with umoci, pushed
# and pulled back with skopeo, and run with runc. Also checks the examples/ manifests parse.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
need_cmd docker-registry umoci skopeo jq curl busybox

# --- common.sh ---------------------------------------------------------------------------------
is "$(printf 'a\nb' | wc -l)" 1 "is compares strings"
like "hello from busybox" '^hello .* busybox$' "like matches a regex"
nok "false" "nok passes on a failing command"
wait_for 0.3 false
is $? 1 "wait_for gives 1 when the time runs out"
( sleep 0.3; touch "$TEST_TMP/flag" ) &
ok "wait_for 5 test -e '$TEST_TMP/flag'" "wait_for gives 0 once the command succeeds"
# kill_ours signals a pid only while it is still this test's process (pids are reused: a riklet
# pid saved early may be another test's conmon by the cleanup)
sleep 60 &
other=$!
bash -c 'exec -a "sleep-for-$1" sleep 60' _ "$TEST_TMP" &
mine=$!
sleep 0.2
kill_ours KILL "$other" "$mine" 99999999 ""
ok "kill -0 $other" "kill_ours leaves alone a process whose command line does not name TEST_TMP (a reused pid)"
wait "$mine" 2>/dev/null
is $? 137 "and kills one whose command line does"
kill "$other"
wait "$other" 2>/dev/null
p1=$(free_port) p2=$(free_port)
like "$p1" '^[0-9]+$' "free_port prints a port number"
isnt "$p1" "$p2" "free_port never hands out a port twice"

# The cleanup stack runs last-in first-out, on failure too, and removes the temp dir.
out=$(bash -c '
	source "$1/tests/lib/common.sh"
	echo "$TEST_TMP" >"$2/child-tmp"
	on_exit "echo first-pushed >>$2/order"
	on_exit "echo second-pushed >>$2/order; false"
	exit 3' _ "$RIKLET_SRC_DIR" "$TEST_TMP" 2>&1)
rc=$?
is "$rc" 3 "a test's exit code survives the cleanup"
is "$(tr '\n' ' ' <"$TEST_TMP/order")" "second-pushed first-pushed " "cleanups run last-in first-out"
nok "test -e '$(cat "$TEST_TMP/child-tmp")'" "the child's TEST_TMP is gone"
# skip_all exits 77, which ctest counts as skipped.
out=$(bash -c 'source "$1/tests/lib/common.sh"; skip_all "no frobnicator"' _ "$RIKLET_SRC_DIR")
rc=$?
is "$rc/$out" "77/1..0 # SKIP no frobnicator" "skip_all prints the SKIP plan and exits 77"
out=$(bash -c 'source "$1/tests/lib/common.sh"; need_py no_such_module_xyz' _ "$RIKLET_SRC_DIR")
is "$?/$out" "77/1..0 # SKIP needs python module no_such_module_xyz" "need_py skips on a missing module"
if "$PYTHON" -c 'import grpc' 2>/dev/null; then
	pass "PYTHON ($PYTHON) imports grpc"
else
	skip "python3-grpcio is not installed"
fi

# --- registry.sh ------------------------------------------------------------------------------
registry_start || bail_out "docker-registry did not start"
like "$REGISTRY" '^127\.0\.0\.1:[0-9]+$' "REGISTRY is a loopback address"
is "$(curl -s "http://$REGISTRY/v2/")" "{}" "the registry answers /v2/ without auth"

# --- mkimage.sh -------------------------------------------------------------------------------
layout=$TEST_TMP/images/busybox
ok "mkimage --env GREETING=selftest '$layout:latest'" "mkimage builds a layout from busybox-static"
ok "umoci stat --image '$layout:latest'" "umoci reads the built image"
size=$(du -sk "$layout" | cut -f1)
ok "((size < 5 * 1024))" "the image is small (${size} KiB)"
stamp=$(cat "$layout/.mkimage-latest")
t0=${EPOCHREALTIME/./}
mkimage --env GREETING=selftest "$layout:latest"
ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
is "$(cat "$layout/.mkimage-latest")" "$stamp" "same inputs reuse the built tag (${ms} ms)"
ok "mkimage --cmd '[\"sh\",\"-c\",\"echo two\"]' '$layout:two'" "a second tag in the same layout"
is "$(umoci ls --layout "$layout" | sort | tr '\n' ' ')" "latest two " "both tags are listed"
nok "mkimage --cmd 'not json' '$layout:bad' 2>/dev/null" "mkimage rejects a --cmd that is not a JSON array"

# --- push, inspect, pull back -----------------------------------------------------------------
ok "mkimage_push '$layout:latest' '$REGISTRY/busybox:latest'" "skopeo pushes the image to the registry"
inspect=$(skopeo inspect --tls-verify=false "docker://$REGISTRY/busybox:latest")
is "$(jq -r '.RepoTags | join(",")' <<<"$inspect")" latest "skopeo inspect sees the tag"
is "$(jq -r '.Os + "/" + .Architecture' <<<"$inspect")" "linux/$(dpkg --print-architecture)" "os/arch set"
ok "jq -e '.Env | index(\"GREETING=selftest\")' <<<'$inspect' >/dev/null" "the image env carries GREETING"
is "$(curl -s "http://$REGISTRY/v2/_catalog" | jq -c .repositories)" '["busybox"]' "the catalog lists busybox"
pulled=$TEST_TMP/pulled
ok "skopeo --insecure-policy copy -q --src-tls-verify=false docker://$REGISTRY/busybox:latest oci:$pulled:latest" \
	"skopeo pulls it back into an OCI layout"
is "$(umoci stat --image "$pulled:latest" --json | jq -r '.history | length')" \
	"$(umoci stat --image "$layout:latest" --json | jq -r '.history | length')" "the pulled image has the same history"

# --- run it with runc -------------------------------------------------------------------------
if [[ $(id -u) == 0 ]] && command -v runc >/dev/null; then
	bundle=$TEST_TMP/bundle
	umoci unpack --image "$pulled:latest" "$bundle" >/dev/null
	ok "test -x '$bundle/rootfs/bin/busybox' && test -L '$bundle/rootfs/bin/sh'" "rootfs has busybox and its applets"
	jq '.process.terminal = false
	    | .process.args = ["sh", "-c", "echo hello from busybox $GREETING; wget --help >/dev/null 2>&1; echo rc=$?"]' \
		"$bundle/config.json" >"$bundle/config.json.new" && mv "$bundle/config.json.new" "$bundle/config.json"
	id=rk-selftest-$$
	on_exit "runc delete -f $id 2>/dev/null"
	out=$(timeout 60 runc run --bundle "$bundle" "$id" </dev/null 2>&1)
	like "$out" "hello from busybox selftest" "runc runs the image and its env applies"
	like "$out" "rc=[01]" "busybox applets like wget are there"
	nok "runc state $id >/dev/null 2>&1" "the runc container is gone after it exits"
else
	skip "runc run needs root and runc"
	skip "runc run needs root and runc"
	skip "runc run needs root and runc"
	skip "runc run needs root and runc"
fi

# --- examples ---------------------------------------------------------------------------------
for f in "$RIKLET_SRC_DIR"/examples/*.json "$RIKLET_SRC_DIR"/examples/standalone/*.json; do
	[[ -e $f ]] || continue
	ok "jq -e '.apiVersion == \"v1\" and (.kind == \"Pod\" or .kind == \"Function\") and (.name | type == \"string\")' '$f' >/dev/null" \
		"examples/${f#"$RIKLET_SRC_DIR"/examples/} is a RIK workload"
done
if [[ -e $RIKLET_SRC_DIR/examples/standalone/busybox.json ]]; then
	ok "cmp '$RIKLET_SRC_DIR/examples/busybox.json' '$RIKLET_SRC_DIR/examples/standalone/busybox.json'" \
		"examples/standalone/ holds the same busybox manifest"
fi

# --- deps.sh waits for another apt run's lock, and needs none when nothing is missing ---------------
# The lock is held the way apt and dpkg hold it (fcntl, not flock) for 3 s by a background python.
# Nothing is ever installed: the package does not exist, and the package lists apt reads are an
# empty directory of this test's.
source "$RIKLET_SRC_DIR/tests/lib/deps.sh"
hold_lock() { # hold_lock FILE SECONDS: prints once held
	"$PYTHON" -c 'import fcntl, os, sys, time
f = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))' "$1" "$2" >"$TEST_TMP/held" &
	HOLDER=$!
	wait_for 10 grep -q held "$TEST_TMP/held"
}
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
	skip "deps.sh lock wait: needs root and apt-get"
else
	mkdir -p "$TEST_TMP/lists/partial"
	: >"$TEST_TMP/empty.list"
	DEPS_APT_OPTS=(-o "Dir::Etc::SourceList=$TEST_TMP/empty.list" -o "Dir::Etc::SourceParts=$TEST_TMP/none"
		-o "Dir::State::Lists=$TEST_TMP/lists")
	DEPS_LOCK_TIMEOUT=30
	hold_lock /var/lib/dpkg/lock-frontend 3
	t0=$SECONDS
	is "$(deps_install bash 2>&1)" "deps: all packages present" "nothing missing: deps_install returns at once, lock held or not"
	ok "(( SECONDS - t0 < 2 ))" "... without waiting for the lock"
	out=$(deps_install riklet-no-such-package 2>&1)
	dt=$((SECONDS - t0))
	wait "$HOLDER"
	like "$out" 'waiting up to 30 s .*/var/lib/dpkg/lock-frontend pid [0-9]+ \(python3\)' "something missing, dpkg lock held: says it waits, and for whom"
	ok "(( dt >= 2 ))" "... waits for the lock (${dt} s) instead of failing at once"
	like "$out" 'Unable to locate package riklet-no-such-package' "... then apt runs (and has nothing to install)"
	unlike "$out" 'E: Could not get lock' "... no lock error"
	# apt-get update's package-lists lock, which DPkg::Lock::Timeout does not cover
	hold_lock "$TEST_TMP/lists/lock" 3
	t0=$SECONDS
	out=$(deps__apt update -q 2>&1)
	rc=$? dt=$((SECONDS - t0))
	wait "$HOLDER"
	is "$rc" 0 "apt-get update with its lists lock held: succeeds once the lock is free"
	ok "(( dt >= 2 ))" "... after waiting (${dt} s)"
	like "$out" "waiting up to 30 s .*Could not get lock $TEST_TMP/lists/lock" "... and says what it waited for"
	unset DEPS_APT_OPTS DEPS_LOCK_TIMEOUT
fi

# --- riklet.sh: rk_conmons counts this test's conmons only (ctest -j runs other tests beside) ----
source "$(dirname "$0")/../lib/riklet.sh"
RUNC_ROOT=$TEST_TMP/runc
fakes=()
fake_conmon() { perl -e 'sleep 60' conmon --cid="$1" --runtime-arg=--root "--runtime-arg=$2" & fakes+=($!); }
fake_conmon x_c "$RUNC_ROOT"
fake_conmon x_c "$RUNC_ROOT-other"
fake_conmon x_cc "$RUNC_ROOT"
fake_conmon y_c "$RUNC_ROOT"
sleep 0.2
is "$(rk_conmons x_c)/$(rk_conmons 'x_c|y_c')/$(rk_conmons 'z_c')" 1/2/0 \
	"rk_conmons: the id matched whole, another runc root's conmon of the same id not counted"
kill "${fakes[@]}" 2>/dev/null
wait "${fakes[@]}" 2>/dev/null

# --- stop -------------------------------------------------------------------------------------
addr=$REGISTRY
registry_stop
nok "curl -s --max-time 2 'http://$addr/v2/'" "registry_stop stops it"

done_testing
