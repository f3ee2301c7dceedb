#!/usr/bin/env bash
# test_store_net.sh — restarts that must cost no Pod its network, with Pod networking on
# (`--network bridge`), inside a network + mount namespace this test creates:
#  - start-up order: riklet is started again and again with a new manifest already present and
#    the previous Pod left over (record and manifest removed while riklet was down); every time
#    the leftovers go and the new Pod comes up with its namespace, veth, address and DNAT rule
#    (the boot clean-up used to remove the network of a Pod created in the same instant);
#  - an unreadable record: its Pod keeps its container and network (also when network.json lost
#    its entry), and loses them once the operator removes the quarantined record;
#  - a full state disk: the state dir is a small tmpfs, filled up while riklet is down (SIGTERM,
#    then kill -9) after a Pod's network.json entry was dropped; the restarted riklet cannot write
#    the entry it rebuilt from the Pod's record, and every Pod stays RUNNING
#    with its container pid and its network; once space is freed, the state is written again.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
need_root
need_cmd unshare iptables-legacy ip busybox runc umoci jq
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
[[ -x $RIKLET ]] || bail_out "riklet binary not found at '$RIKLET'"
ip link set lo up

STATE=$TEST_TMP/state
RUNC_ROOT=$TEST_TMP/runc
NETNS=$TEST_TMP/netns
MANIFESTS=$TEST_TMP/manifests
LOG=$TEST_TMP/riklet.log
mkdir -p "$MANIFESTS" "$STATE"
mount -t tmpfs -o size=48m,mode=0700 riklet-test-state "$STATE" || bail_out "cannot mount a tmpfs on $STATE"
OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge
	--stop-grace 3 --log-level debug)
RK_PIDS=()
teardown() {
	local p c
	kill_ours KILL "${RK_PIDS[@]}" # (only those still riklets of this test: pids are reused)
	for p in "${RK_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [[ -d $RUNC_ROOT ]]; then
		for c in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do runc --root "$RUNC_ROOT" delete -f "$c"; done
	fi
	[[ -n ${KEEP_TMP:-} ]] && echo "# riklet log: $LOG"
	return 0
}
on_exit teardown

start_riklet() {
	local before=0
	[[ -f $LOG ]] && before=$(grep -c 'riklet .* started' "$LOG")
	"$RIKLET" --standalone "$MANIFESTS" "${OPTS[@]}" >>"$LOG" 2>&1 </dev/null &
	RK_PID=$!
	RK_PIDS+=("$RK_PID")
	wait_for 20 started_or_dead "$before" && kill -0 "$RK_PID" 2>/dev/null
}
started_or_dead() { ! kill -0 "$RK_PID" 2>/dev/null || (($(grep -c 'riklet .* started' "$LOG") > $1)); }
stop_riklet() { kill -"${1:-TERM}" "$RK_PID" 2>/dev/null; wait "$RK_PID" 2>/dev/null; }
ps_json() { "$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null; }
status() { ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .status'; }
has_status() { [[ $(status "$1") == "$2" ]]; }
wait_status() { wait_for "$1" has_status "$2" "$3"; }
runc_pid() { runc --root "$RUNC_ROOT" state "$1" 2>/dev/null | jq -r .pid; }
pod_ip() { nsenter --net="$NETNS/$1" ip -j -4 addr show eth0 2>/dev/null | jq -r '.[0].addr_info[0].local // empty'; }
veth_of() { jq -r --arg id "$1" '.instances[$id].host_if // empty' "$STATE/network.json" 2>/dev/null; }
on_bridge() { [[ -n $1 ]] && ip -j link show master riklet0 2>/dev/null | jq -e --arg l "$1" 'any(.[]; .ifname == $l)' >/dev/null; }
dnat_for() { iptables-legacy -t nat -S RIKLET 2>/dev/null | grep -- "--dport $1 " | grep -c "riklet:$2"; }

mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
IMAGE=oci:$TEST_TMP/layout:latest
manifest() { # manifest ID PORT
	jq -n --arg name "$1" --arg img "$IMAGE" --argjson port "$2" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null, spec: {function: null, containers: [
		  {name: "c", image: $img, env: null, ports: {port: $port, target_port: 80, protocol: "TCP"}}]}}' \
		>"$MANIFESTS/.$1.tmp" && mv "$MANIFESTS/.$1.tmp" "$MANIFESTS/$1.json"
}
# has_network ID PORT: its namespace, a veth on the bridge, an address, its DNAT rule
has_network() {
	[[ -e $NETNS/$1 && -n $(pod_ip "$1") ]] && on_bridge "$(veth_of "$1")" && (($(dnat_for "$2" "$1") == 1))
}

# --- start-up order ----------------------------------------------------------------------------
N=8
good=0
prev=
for i in $(seq 1 $N); do
	id=p$i port=$((8100 + i))
	manifest "$id" "$port"
	start_riklet || { diag_file "$LOG" 30; bail_out "riklet did not start (trial $i)"; }
	if wait_status 60 "$id" RUNNING && wait_for 5 has_network "$id" "$port"; then
		good=$((good + 1))
	else
		diag "trial $i: $id is $(status "$id"), netns $(ls "$NETNS" 2>&1 | tr '\n' ' '), veth '$(veth_of "$id")'"
	fi
	if [[ -n $prev ]]; then
		ok "[[ ! -e $NETNS/$prev && -z \$(runc_pid ${prev}_c) && ! -e $STATE/instances/$prev ]]" \
			"trial $i: the previous Pod's leftovers ($prev: container, namespace, directory) are removed"
	fi
	# leave this Pod behind for the next start: riklet killed, its record and manifest removed
	stop_riklet KILL
	rm -f "$STATE/records/$id.json" "$STATE/records/$id.definition" "$MANIFESTS/$id.json"
	prev=$id
done
is "$good" "$N" "in $N starts over leftovers with a manifest present, the new Pod always came up with its network"
start_riklet || bail_out "riklet did not start"
ok "wait_for 20 test ! -e $NETNS/$prev" "the last leftover goes too"
stop_riklet TERM

# --- an unreadable record keeps its Pod's network -----------------------------------------------
manifest q1 8301
manifest q2 8302
start_riklet || bail_out "riklet did not start"
wait_status 60 q1 RUNNING && wait_status 60 q2 RUNNING
ok "has_network q1 8301 && has_network q2 8302" "Pods q1 and q2 are RUNNING with their network"
q1_pid=$(runc_pid q1_c) q2_pid=$(runc_pid q2_c) q2_veth=$(veth_of q2)
stop_riklet KILL
for q in q1 q2; do head -c 50 "$STATE/records/$q.json" >"$TEST_TMP/r" && cat "$TEST_TMP/r" >"$STATE/records/$q.json"; done
# q2's entry in network.json is lost too: its namespace and veth are still named after its id
jq 'del(.instances.q2)' "$STATE/network.json" >"$TEST_TMP/n" && cat "$TEST_TMP/n" >"$STATE/network.json"
start_riklet || bail_out "riklet did not start over truncated records"
reconciled() { (($(grep -c 'network reconciled' "$LOG") >= N + 3)); }
wait_for 20 reconciled
is "$(status q1)/$(status q2)" UNKNOWN/UNKNOWN "truncated records: q1 and q2 are UNKNOWN"
is "$(runc_pid q1_c)/$(runc_pid q2_c)" "$q1_pid/$q2_pid" "their containers are kept (same pids)"
ok "has_network q1 8301" "q1 keeps its namespace, veth, address and DNAT rule"
ok "[[ -e $NETNS/q2 && -n \$(pod_ip q2) ]] && on_bridge $q2_veth" \
	"q2, whose network.json entry is gone too, keeps its namespace, address and veth"
is "$(dnat_for 8302 q2)" 1 "and its DNAT rule"
stop_riklet TERM
rm -f "$MANIFESTS"/q?.json "$STATE"/records/quarantine/q?.*
start_riklet || bail_out "riklet did not start"
q_gone() { [[ ! -e $NETNS/q1 && ! -e $NETNS/q2 && -z $(runc_pid q1_c) && -z $(runc_pid q2_c) ]]; }
ok "wait_for 20 q_gone" "once their quarantined records are removed, the next start removes their leftovers"
stop_riklet TERM

# --- a full state disk -------------------------------------------------------------------------
for k in 1 2 3; do manifest "fd$k" $((8200 + k)); done
start_riklet || bail_out "riklet did not start"
wait_status 60 fd1 RUNNING && wait_status 60 fd2 RUNNING && wait_status 60 fd3 RUNNING
is "$(status fd1)/$(status fd2)/$(status fd3)" RUNNING/RUNNING/RUNNING "three Pods are RUNNING"
declare -A PID VETH
for k in 1 2 3; do PID[$k]=$(runc_pid "fd${k}_c") VETH[$k]=$(veth_of "fd$k"); done
# (the veth named before: while the disk is full, network.json lacks fd3's entry)
has_network_v() { [[ -e $NETNS/$1 && -n $(pod_ip "$1") ]] && on_bridge "$3" && (($(dnat_for "$2" "$1") == 1)); }

fill() {
	dd if=/dev/zero of="$STATE/fill" bs=1M >/dev/null 2>&1
	local n
	for n in $(seq 1 200); do head -c 512 /dev/zero >"$STATE/fill.$n" 2>/dev/null || break; done
	! head -c 4096 /dev/zero >"$STATE/fill.probe" 2>/dev/null
}
for how in TERM KILL; do
	stop_riklet "$how"
	# (a restart with nothing changed writes nothing: fd3's entry is dropped from network.json, so
	# the restarted riklet rebuilds it from fd3's record and has something to write)
	jq 'del(.instances.fd3)' "$STATE/network.json" >"$STATE/network.json.edit" && mv "$STATE/network.json.edit" "$STATE/network.json"
	ok fill "SIG$how: riklet stopped, fd3's network.json entry dropped, the state disk is full"
	writes_before=$(grep -c 'saving the network state' "$LOG")
	again_before=$(grep -c 'the network state is written again' "$LOG")
	start_riklet || { diag_file "$LOG" 30; bail_out "riklet did not start on a full disk"; }
	cannot_write() { (($(grep -c 'saving the network state' "$LOG") > writes_before)); }
	ok "wait_for 30 cannot_write" "SIG$how: the restarted riklet cannot write network.json, and says so"
	sleep 2
	for k in 1 2 3; do
		is "$(status "fd$k")" RUNNING "SIG$how: fd$k stays RUNNING on a full disk"
		is "$(runc_pid "fd${k}_c")" "${PID[$k]}" "SIG$how: fd$k keeps its container pid"
		ok "has_network_v fd$k $((8200 + k)) ${VETH[$k]}" "SIG$how: fd$k keeps its network"
	done
	nok "grep -q 'lost while riklet was not running' '$LOG'" "SIG$how: no Pod is declared lost"
	rm -f "$STATE"/fill*
	written_again() { (($(grep -c 'the network state is written again' "$LOG") > again_before)); }
	ok "wait_for 20 written_again" "SIG$how: once space is freed, network.json is written again"
	is "$(veth_of fd3)" "${VETH[3]}" "SIG$how: with fd3's entry, rebuilt from its record"
done

# the Pods still go cleanly
rm -f "$MANIFESTS"/fd*.json
for k in 1 2 3; do wait_status 30 "fd$k" TERMINATED; done
is "$(status fd1)/$(status fd2)/$(status fd3)" TERMINATED/TERMINATED/TERMINATED "removing their manifests destroys them"
ok "[[ -z \$(ls $NETNS 2>/dev/null) ]]" "no network namespace is left"
stop_riklet TERM
done_testing
