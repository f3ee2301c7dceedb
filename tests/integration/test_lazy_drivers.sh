# test_lazy_drivers.sh — the Pod and Function drivers loaded on demand (riklet.drivers, issue 12's
# idle memory), and what must not change with it:
#  - a clean node (--network none, nothing recorded or left over) starts without loading them; its
#    first Pod loads the Pod driver and runs;
#  - that first load reads the files riklet held open since its start: pod.lua and runc.lua
#    replaced under the running riklet (a package upgrade renames new files over them) by files
#    that raise at load change nothing; riklet.procscan (the drivers' /proc listing) and riklet.image wait for them too;
#  - a broken or missing driver file stops riklet at start (not at the first create), and
#    `riklet check` says which; a bad Function option (--vm-vcpus 0) too;
#  - a node holding something (a leftover instance directory) loads the drivers at start: the
#    leftover is cleaned up at once, as before.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init

# a copy of the Lua tree (and the policies beside it) this test may break
TREE=$TEST_TMP/tree
mkdir -p "$TREE"
cp -r "$RIKLET_SRC_DIR/lua" "$RIKLET_SRC_DIR/policies" "$TREE/"
export RIKLET_LUA_DIR=$TREE/lua
mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
# replace FILE CONTENT: as a package upgrade does (a new file renamed over the old one)
replace() { printf '%s\n' "$2" >"$1.new" && mv "$1.new" "$1"; }
holds_open() { ls -l "/proc/$RK_PID/fd" 2>/dev/null | grep -q -- "-> $1\$"; }

# --- a clean node: no driver at start, the first Pod loads it -----------------------------------
rk_start_standalone || bail_out "riklet did not start"
ok "wait_for 10 grep -q 'boot: 0 record' '$RK_LOG'" "clean node: riklet booted"
nok "grep -q 'driver loaded' '$RK_LOG'" "no driver is loaded at start on a clean node"
ok "holds_open '$TREE/lua/riklet/pod.lua'" "riklet holds pod.lua open for its first load"
ok "holds_open '$TREE/lua/riklet/runc.lua'" "... and runc.lua, which it requires"
nok "holds_open '$TREE/lua/riklet/lifecycle.lua'" "lifecycle.lua (loaded at start by the agent itself) is not held"
ok "holds_open '$TREE/lua/riklet/procscan.lua'" "... and procscan.lua (conmon's): with no driver the boot reconciles nothing and loads it not"
ok "holds_open '$TREE/lua/riklet/image.lua'" "... and image.lua: the image code waits for the first Pod (the agent set up the cache with riklet.imagecfg)"

replace "$TREE/lua/riklet/pod.lua" 'error("the replaced pod.lua was loaded")'
replace "$TREE/lua/riklet/runc.lua" 'error("the replaced runc.lua was loaded")'
rk_pod first
rk_wait_status 60 first RUNNING
is "$(rk_status first)" RUNNING "the first Pod runs after its files were replaced: the held ones were loaded" ||
	diag_file "$RK_LOG" 30
ok "grep -q 'Pod driver loaded (first Pod)' '$RK_LOG'" "the log says the Pod driver was loaded by the first Pod"
nok "grep -q 'replaced .*.lua was loaded' '$RK_LOG'" "the replaced files were never loaded"
nok "holds_open '$TREE/lua/riklet/pod.lua'" "pod.lua is no longer held once loaded"
rk_pod second
rk_wait_status 60 second RUNNING
is "$(rk_status second)" RUNNING "a second Pod runs too"
rm -f "$MANIFESTS"/*.json
rk_wait_status 60 first TERMINATED
rk_wait_status 60 second TERMINATED
is "$(rk_status first)/$(rk_status second)" TERMINATED/TERMINATED "both Pods are removed"
rk_stop
ok "rk_nothing_left first && rk_nothing_left second" "nothing is left of either Pod"

# --- broken driver code: riklet does not start, and says which file ----------------------------
S2=$TEST_TMP/state2 M2=$TEST_TMP/manifests2
mkdir -p "$M2"
replace "$TREE/lua/riklet/pod.lua" 'local x = = 1 -- a syntax error'
out=$(timeout 60 "$RIKLET" --standalone "$M2" --state-dir "$S2" --runc-root "$TEST_TMP/runc2" --network none 2>&1)
rc=$?
isnt "$rc" 0 "riklet with a broken pod.lua exits at start (exit $rc)"
like "$out" "cannot start.*driver code.*pod.lua" "... saying the driver code check failed, on pod.lua"
out=$("$RIKLET" check --state-dir "$S2" --network none 2>&1)
like "$out" "driver code +FAIL .*pod.lua" "riklet check shows the driver code check failing on pod.lua"
rm -f "$TREE/lua/riklet/pod.lua"
out=$(timeout 60 "$RIKLET" --standalone "$M2" --state-dir "$S2" --runc-root "$TEST_TMP/runc2" --network none 2>&1)
rc=$?
isnt "$rc" 0 "riklet with pod.lua missing exits at start (exit $rc)"
like "$out" "cannot load riklet.pod: module 'riklet.pod' not found" "... saying the Pod driver's module is not found"
cp "$RIKLET_SRC_DIR/lua/riklet/"{pod,runc}.lua "$TREE/lua/riklet/"
out=$(timeout 60 "$RIKLET" check --state-dir "$S2" --network none 2>&1)
like "$out" "driver code +ok" "with the files back, riklet check passes the driver code check"

# --- a bad option of the (not yet loaded) Function driver stops the start too -------------------
out=$(timeout 60 "$RIKLET" --standalone "$M2" --state-dir "$S2" --runc-root "$TEST_TMP/runc2" --network none --vm-vcpus 0 2>&1)
rc=$?
isnt "$rc" 0 "riklet --vm-vcpus 0 exits at start (exit $rc)"
like "$out" "vm-vcpus" "... naming --vm-vcpus"

# --- a node holding something loads the drivers at start ---------------------------------------
S3=$TEST_TMP/state3
mkdir -p "$S3/instances/ghost/c"
echo leftover >"$S3/instances/ghost/c/file"
RK_LOG3=$TEST_TMP/riklet3.log
"$RIKLET" --standalone "$M2" --state-dir "$S3" --runc-root "$TEST_TMP/runc3" --network none >"$RK_LOG3" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
ok "wait_for 30 grep -q 'removed leftover directory of instance ghost' '$RK_LOG3'" \
	"a leftover instance directory at start: the Pod driver is loaded at start and removes it"
ok "test ! -e '$S3/instances/ghost'" "the leftover directory is gone"
nok "grep -q 'driver loaded (first' '$RK_LOG3'" "(loaded at start, not by a first create)"
rk_stop

done_testing
