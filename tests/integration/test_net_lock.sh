#!/usr/bin/env bash
# test_net_lock.sh — one riklet per network namespace manages the Pod network. Inside a private
# network + mount namespace: riklet A runs a Pod with networking; a second riklet with another state
# dir is refused the Pod network (its Pod driver is disabled, whether --network is bridge or auto),
# naming A's pid and state dir, and `riklet cleanup` of another state dir leaves A's network alone; A's Pod keeps its
# namespace, veth and rules throughout. Killed with -9 (its containers still running), A releases
# the lock at once. Finally `riklet cleanup` leaves nothing mounted at --netns-dir.

source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
need_root
need_cmd unshare iptables-legacy ip busybox runc umoci jq
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
[[ -x $RIKLET ]] || bail_out "riklet binary not found at '$RIKLET'"
ip link set lo up

RUNC_ROOT=$TEST_TMP/runc
NETNS=$TEST_TMP/netns
RK_PIDS=()
teardown() {
	local p c
	kill_ours KILL "${RK_PIDS[@]}" # (only those still riklets of this test: pids are reused)
	for p in "${RK_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	for c in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do runc --root "$RUNC_ROOT" delete -f "$c"; done
	return 0
}
on_exit teardown
opts() { # opts NAME: the flags of riklet NAME (its own state dir and manifests)
	mkdir -p "$TEST_TMP/$1/manifests"
	echo --standalone "$TEST_TMP/$1/manifests" --state-dir "$TEST_TMP/$1/state" --runc-root "$RUNC_ROOT" \
		--netns-dir "$NETNS" --stop-grace 2 --log-level debug
}
# start NAME [FLAG...]: riklet NAME in the background, logging to $TEST_TMP/NAME.log; sets PID
start() {
	local n=$1
	shift
	# shellcheck disable=SC2046 # opts prints words without spaces
	"$RIKLET" $(opts "$n") "$@" >>"$TEST_TMP/$n.log" 2>&1 </dev/null &
	PID=$!
	RK_PIDS+=("$PID")
}
started() { grep -q 'riklet .* started' "$TEST_TMP/$1.log"; }
status() { "$RIKLET" ps --json --state-dir "$TEST_TMP/$1/state" 2>/dev/null | jq -r --arg id "$2" '.instances[] | select(.id == $id) | .status'; }
has_status() { [[ $(status "$1" "$2") == "$3" ]]; }
net_state() { # what A's Pod has in the kernel: its netns, the bridge's veths, riklet's rules
	ls "$NETNS" 2>/dev/null | tr '\n' ' '
	ip -j link show master riklet0 2>/dev/null | jq -r '.[].ifname' | sort | tr '\n' ' '
	iptables-legacy-save 2>/dev/null | grep -c 'riklet:' || true
}
mounted_at_or_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo; }

CMD='["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
mkimage --cmd "$CMD" "$TEST_TMP/layout:sleep" >&2 || bail_out "mkimage failed"
jq -n --arg img "oci:$TEST_TMP/layout:sleep" '{apiVersion: "v1", kind: "Pod", name: "pa", replicas: null,
	spec: {function: null, containers: [{name: "c", image: $img, env: null,
	ports: {port: 8080, target_port: 80, protocol: "TCP"}}]}}' >"$TEST_TMP/pod.json"

# --- riklet A manages the network ---------------------------------------------------------------
opts a >/dev/null
cp "$TEST_TMP/pod.json" "$TEST_TMP/a/manifests/pa.json"
start a --network bridge
APID=$PID
ok "wait_for 60 has_status a pa RUNNING" "riklet A: Pod pa RUNNING with networking"
before=$(net_state)
like "$before" "^pa rkv[0-9a-f]{8} [1-9]" "... its netns, veth on riklet0 and rules are there ($before)"

# --- a second riklet, another state dir: refused the network ----------------------------------------
# (--network bridge asked for what it cannot have: riklet B exits non-zero saying why; it never
# touches A's network)
start b --network bridge
BPID=$PID
ok "wait_for 15 grep -q 'another riklet' '$TEST_TMP/b.log'" "riklet B (--network bridge, another state dir) is refused the Pod network"
ok "wait_for 15 eval '! kill -0 $BPID 2>/dev/null'" "... and does not start (exits)"
wait "$BPID" 2>/dev/null
isnt "$?" 0 "... with a non-zero exit status"
msg=$(grep -m1 'another riklet' "$TEST_TMP/b.log")
like "$msg" "another riklet \(pid $APID, state dir $TEST_TMP/a/state, bridge riklet0\) manages the Pod network" \
	"... saying which riklet (pid, state dir, bridge) manages this network namespace"
like "$msg" "--network none" "... and what to do"
sleep 1
is "$(net_state)" "$before" "A's Pod networking is untouched"

# --network auto: runs, networking off, says why
start c --network auto --bridge riklet9
CPID=$PID
ok "wait_for 20 started c" "riklet C (--network auto, another bridge) starts..."
ok "grep -q 'pod networking is off: another riklet (pid $APID' '$TEST_TMP/c.log'" "... with networking off, saying why"
sleep 1
is "$(net_state)" "$before" "A's Pod networking is still untouched"
kill -TERM "$CPID"
wait "$CPID" 2>/dev/null

# riklet cleanup of another state dir leaves A's network alone
# shellcheck disable=SC2046
"$RIKLET" cleanup $(opts d) >"$TEST_TMP/cleanup-d.out" 2>&1
ok "grep -q 'network cleanup: another riklet (pid $APID' '$TEST_TMP/cleanup-d.out'" \
	"riklet cleanup with another state dir refuses to touch the network"
is "$(net_state)" "$before" "A's Pod networking is still untouched after it"
ok "kill -0 $APID" "riklet A is still running"

# --- A killed: the lock goes with it -------------------------------------------------------------------
kill -KILL "$APID"
wait "$APID" 2>/dev/null
ok "runc --root '$RUNC_ROOT' list -q | grep -qx pa_c" "A killed with -9: its container runs on (children never hold the lock)"
mv "$TEST_TMP/a.log" "$TEST_TMP/a.1.log"
start a --network bridge
APID=$PID
ok "wait_for 20 started a" "A restarted..."
nok "grep -q 'another riklet' '$TEST_TMP/a.log'" "... takes the lock again at once"
ok "wait_for 30 has_status a pa RUNNING" "... and re-adopts pa"
kill -TERM "$APID"
wait "$APID" 2>/dev/null

# --- riklet cleanup: nothing left mounted at --netns-dir ---------------------------------------------
like "$(mounted_at_or_under "$NETNS" | head -1)" "^$NETNS" "before the cleanup, $NETNS is a mount point (riklet's bind)"
# shellcheck disable=SC2046
"$RIKLET" cleanup $(opts a) >"$TEST_TMP/cleanup-a.out" 2>&1
is "$?" 0 "riklet cleanup exits 0"
is "$(mounted_at_or_under "$NETNS")" "" "after it, nothing is mounted at or under $NETNS"
is "$(net_state | tr -d ' \n')" "0" "no netns, veth or rule left"

for n in a b c; do nok "grep -E 'task failed|stack traceback' '$TEST_TMP/$n.log'" "no task failure in riklet $n's log"; done
((RK_TAP_FAILED == 0)) || { for n in a b c; do diag_file "$TEST_TMP/$n.log" 30; done; diag_file "$TEST_TMP/cleanup-a.out"; }
done_testing
