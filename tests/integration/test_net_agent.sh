#!/usr/bin/env bash
# test_net_agent.sh — Pod networking end to end through the real agent (`riklet --standalone
# --network bridge`), inside a network + mount namespace this test creates (the "node"): busybox
# httpd Pods with port mappings fetched from a second namespace acting as a client host, the rules
# (iptables-legacy) and links (ip -j) they get, a port conflict refused with a clear reason and no
# leftovers, destroy leaving nothing, riklet killed with -9 and restarted over its leftovers
# (re-adoption, convergence, no duplicates), and `riklet cleanup` removing everything riklet owns.

# The whole test runs in private namespaces: the host's links and tables are never touched. Enter
# them before common.sh makes its temp dir, so that dir and its cleanup belong to the inner shell.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
need_root
need_cmd unshare nsenter iptables-legacy ip busybox runc umoci jq
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
[[ -x $RIKLET ]] || bail_out "riklet binary not found at '$RIKLET'"
ip link set lo up

STATE=$TEST_TMP/state
RUNC_ROOT=$TEST_TMP/runc
NETNS=$TEST_TMP/netns
MANIFESTS=$TEST_TMP/manifests
LOG=$TEST_TMP/riklet.log
mkdir -p "$MANIFESTS"
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
ps_json() { "$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null; }
status() { ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .status'; }
reason() { ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .reason // .message'; }
has_status() { [[ $(status "$1") == "$2" ]]; }
wait_status() { wait_for "$1" has_status "$2" "$3"; }
runc_pid() { runc --root "$RUNC_ROOT" state "$1" 2>/dev/null | jq -r .pid; }
net_rec() { jq -r --arg id "$1" ".instances[\$id]${2:+.$2} // empty" "$STATE/network.json" 2>/dev/null; }
diag_state() { diag "ps: $(ps_json)"; diag_file "$LOG" 40; }

# The page each Pod serves is written by its container from the workload's env, then busybox httpd
# serves it; `trap` makes SIGTERM end it at once (a shell as pid 1 ignores it otherwise).
# shellcheck disable=SC2016 # $PAGE and $! are the container shell's
CMD='["sh","-c","trap '"'exit 0'"' TERM INT; mkdir -p /www; echo \"$PAGE\" >/www/index.html; httpd -f -p 80 -h /www & wait $!"]'
mkimage --cmd "$CMD" "$TEST_TMP/layout:web" >&2 || bail_out "mkimage failed"
IMAGE=oci:$TEST_TMP/layout:web
# manifest ID PORT PAGE: a Pod whose container serves PAGE on :80, exposed on the node's PORT/TCP
manifest() {
	jq -n --arg name "$1" --arg img "$IMAGE" --argjson port "$2" --arg page "$3" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null, spec: {function: null, containers: [
		  {name: "httpd", image: $img, env: [{name: "PAGE", value: $page}],
		   ports: {port: $port, target_port: 80, protocol: "TCP"}}]}}' >"$MANIFESTS/.$1.tmp" &&
		mv "$MANIFESTS/.$1.tmp" "$MANIFESTS/$1.json"
}

# The client host: its own network namespace (held by a sleeping process), joined to the node by a
# veth; the node is 192.0.2.1/24, the client 192.0.2.2/24.
unshare -n sleep 600 &
CLIENT=$!
on_exit "kill $CLIENT"
client_ready() { [[ $(readlink "/proc/$CLIENT/ns/net") != "$(readlink /proc/$$/ns/net)" ]]; }
wait_for 5 client_ready ||
	bail_out "the client namespace did not appear"
inclient() { nsenter -t "$CLIENT" -n "$@"; }
ip link add rkclient0 type veth peer name eth0 netns "$CLIENT" || bail_out "cannot create the client veth"
ip addr add 192.0.2.1/24 dev rkclient0 && ip link set rkclient0 up
if ! { inclient ip link set lo up && inclient ip addr add 192.0.2.2/24 dev eth0 && inclient ip link set eth0 up; }; then
	bail_out "cannot configure the client namespace"
fi
# (busybox-static 1.35's wget crashes with -T: bound it with timeout instead)
fetch() { inclient timeout 5 busybox wget -qO- "http://192.0.2.1:$1/" 2>&1; }
fetch_is() { [[ $(fetch "$1") == "$2" ]]; }
# A rule riklet does not own, in a table riklet writes to: it must survive everything below.
iptables-legacy -t nat -A POSTROUTING -s 198.51.100.0/24 -o rkclient0 -j MASQUERADE
FOREIGN='-A POSTROUTING -s 198.51.100.0/24 -o rkclient0 -j MASQUERADE'

# ns_inode PATH: the inode of a network namespace (a bind-mounted netns file or /proc/PID/ns/net)
ns_inode() { stat -L -c %i "$1" 2>/dev/null; }
pod_ip() { nsenter --net="$NETNS/$1" ip -j -4 addr show eth0 2>/dev/null | jq -r '.[0].addr_info[0].local // empty'; }
dnat() { echo "-A RIKLET -p tcp -m tcp --dport $1 -m comment --comment \"riklet:$2\" -j DNAT --to-destination $3:80"; }
bridge_veths() { ip -j link show master riklet0 2>/dev/null | jq -r '.[].ifname' | sort | tr '\n' ' '; }

PAGE_A="page of web-a $RANDOM$RANDOM"
PAGE_B="page of web-b $RANDOM$RANDOM"
PAGE_D="page of web-d $RANDOM$RANDOM"

# --- two Pods exposing different ports --------------------------------------------------------
manifest web-a 8080 "$PAGE_A"
manifest web-b 8081 "$PAGE_B"
start_riklet || { diag_file "$LOG" 40; bail_out "riklet did not start"; }
wait_status 60 web-a RUNNING && wait_status 30 web-b RUNNING
ok=$?
is "$(status web-a)/$(status web-b)" RUNNING/RUNNING "web-a and web-b reach RUNNING"
((ok == 0)) || diag_state

IPA=$(pod_ip web-a) IPB=$(pod_ip web-b)
like "$IPA" '^10\.89\.0\.[0-9]+$' "web-a has an address from the pod CIDR in its namespace ($IPA)"
like "$IPB" '^10\.89\.0\.[0-9]+$' "web-b has an address from the pod CIDR in its namespace ($IPB)"
isnt "$IPA" "$IPB" "the two Pods have distinct addresses"
PIDA=$(runc_pid web-a_httpd)
is "$(ns_inode "/proc/$PIDA/ns/net")" "$(ns_inode "$NETNS/web-a")" "web-a's container runs in the namespace $NETNS/web-a"
ok "wait_for 10 fetch_is 8080 '$PAGE_A'" "the client host fetches web-a's page at 192.0.2.1:8080"
ok "wait_for 10 fetch_is 8081 '$PAGE_B'" "the client host fetches web-b's page at 192.0.2.1:8081"

# The network is set up beside runc create (riklet.pod): the container's process must still find it
# complete the moment it starts. It prints its address and routes first thing, then sleeps.
# shellcheck disable=SC2016
jq -n --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: "netcheck", spec: {containers: [{name: "c",
	image: $img, command: ["sh", "-c", "ip -4 -o addr show dev eth0; ip route; exec sleep 3600"]}]}}' \
	>"$MANIFESTS/.netcheck.tmp" && mv "$MANIFESTS/.netcheck.tmp" "$MANIFESTS/netcheck.json"
wait_status 60 netcheck RUNNING || diag_state
NCLOG=$STATE/instances/netcheck/c/logs/0.log
has_routes() { grep -q 'default via' "$NCLOG" 2>/dev/null; }
wait_for 10 has_routes
IPN=$(pod_ip netcheck)
like "$(grep -F ' inet ' "$NCLOG")" " inet ${IPN//./\\.}/16 " \
	"netcheck's first command saw its address on eth0 at once ($IPN)"
like "$(grep -F 'default via' "$NCLOG")" 'default via 10\.89\.0\.1 dev eth0' "and its default route through the bridge"
rm -f -- "$MANIFESTS/netcheck.json"
wait_for 30 bash -c "! test -e '$NETNS/netcheck'"
is "$(fetch 8080)" "$PAGE_A" "exactly web-a's page, byte for byte"
is "$(timeout 5 busybox wget -qO- http://127.0.0.1:8080/ 2>&1)" "$PAGE_A" "the node itself reaches web-a at 127.0.0.1:8080"
# the client has no route to the pod CIDR: a Pod reaches it only through the masquerade
mkdir -p "$TEST_TMP/client-www" && echo "page of the client host" >"$TEST_TMP/client-www/index.html"
nsenter -t "$CLIENT" -n busybox httpd -f -p 192.0.2.2:80 -h "$TEST_TMP/client-www" &
on_exit "kill $!"
# (httpd listens a moment after it is started: "connection refused" until then, seen under load)
client_page() { [[ $(nsenter --net="$NETNS/web-a" timeout 5 busybox wget -qO- http://192.0.2.2/ 2>&1) == "page of the client host" ]]; }
wait_for 10 client_page
is "$(nsenter --net="$NETNS/web-a" timeout 5 busybox wget -qO- http://192.0.2.2/ 2>&1)" "page of the client host" \
	"from web-a's namespace, the client host is reachable (forward + masquerade)"

nat=$(iptables-legacy -t nat -S)
is "$(iptables-legacy -t nat -S RIKLET | grep -- '--dport 8080')" "$(dnat 8080 web-a "$IPA")" \
	"RIKLET holds the DNAT 8080 -> web-a:80"
is "$(iptables-legacy -t nat -S RIKLET | grep -- '--dport 8081')" "$(dnat 8081 web-b "$IPB")" \
	"RIKLET holds the DNAT 8081 -> web-b:80"
like "$nat" $'\n-A PREROUTING -m addrtype --dst-type LOCAL -j RIKLET\n' "PREROUTING jumps to RIKLET for local destinations"
like "$nat" $'\n-A OUTPUT -m addrtype --dst-type LOCAL -j RIKLET\n' "OUTPUT jumps to RIKLET for local destinations"
like "$nat" $'\n-A POSTROUTING -j RIKLET-POSTROUTING' "POSTROUTING jumps to RIKLET-POSTROUTING"
like "$(iptables-legacy -S FORWARD)" '-A FORWARD -j RIKLET-FORWARD' "FORWARD jumps to RIKLET-FORWARD"
VETHA=$(net_rec web-a host_if) VETHB=$(net_rec web-b host_if)
like "$(ip -j -d link show riklet0 | jq -r '.[0].linkinfo.info_kind')" '^bridge$' "ip -j link shows bridge riklet0"
like "$VETHA" '^rkv[0-9a-f]{8}$' "web-a's host veth is named in riklet's pattern ($VETHA)"
is "$(bridge_veths)" "$(printf '%s\n' "$VETHA" "$VETHB" | sort | tr '\n' ' ')" "the bridge holds exactly the veths of web-a and web-b"
is "$(ip -j link show "$VETHA" | jq -r '.[0].link_type + " " + (.[0].operstate)')" "ether UP" "web-a's veth is up"

# --- a third Pod asking for a port another instance exposes -----------------------------------
manifest web-c 8080 "page of web-c"
wait_status 60 web-c FAILED
is "$(status web-c)" FAILED "web-c, asking for 8080 (exposed by web-a), is FAILED"
why=$(reason web-c)
like "$why" '8080' "its reason names the port: $why"
like "$why" 'web-a' "its reason names the instance exposing it"
nok "test -e '$NETNS/web-c'" "web-c left no network namespace"
unlike "$(iptables-legacy -t nat -S; iptables-legacy -S)" 'riklet:web-c' "web-c left no rule"
is "$(bridge_veths)" "$(printf '%s\n' "$VETHA" "$VETHB" | sort | tr '\n' ' ')" "web-c left no veth on the bridge"
is "$(ip -j link | jq -r '.[].ifname' | grep -c '^rkv')" 2 "web-c left no veth at all"
is "$(net_rec web-c)" "" "web-c left no address allocation"
is "$(runc --root "$RUNC_ROOT" list -q | grep -c '^web-c')" 0 "web-c left no container"
is "$(fetch 8080)" "$PAGE_A" "web-a still serves 8080"

# --- destroy: remove web-b's manifest ---------------------------------------------------------
# the node has just talked to web-b: it knows web-b's MAC for its address (see web-d below)
is "$(fetch 8081)" "$PAGE_B" "web-b serves until it is destroyed"
rm "$MANIFESTS/web-b.json"
wait_status 30 web-b TERMINATED
is "$(status web-b)" TERMINATED "web-b.json removed: web-b is TERMINATED"
unlike "$(iptables-legacy -t nat -S; iptables-legacy -S)" 'riklet:web-b' "no rule of web-b remains"
nok "ip link show '$VETHB'" "web-b's veth $VETHB is gone"
is "$(net_rec web-b)" "" "web-b's address allocation is freed"
nok "test -e '$NETNS/web-b'" "web-b's namespace file is gone"
nok "runc --root '$RUNC_ROOT' state web-b_httpd" "web-b's container is gone"
nok "inclient timeout 3 busybox wget -qO- http://192.0.2.1:8081/" "8081 serves nothing any more"
# the freed address goes to the next Pod, reachable at once (its veth has a new MAC: the node must
# not keep sending to web-b's)
manifest web-d 8082 "$PAGE_D"
wait_status 60 web-d RUNNING
is "$(status web-d)" RUNNING "web-d (8082) reaches RUNNING"
is "$(pod_ip web-d)" "$IPB" "web-d gets web-b's freed address"
MACD=$(nsenter --net="$NETNS/web-d" ip -j link show eth0 | jq -r '.[0].address')
like "$(ip neigh show dev riklet0 to "$IPB" | awk '{ print $3 }')" "^($MACD)?\$" \
	"the node maps $IPB to web-d's MAC or to nothing (not to web-b's old veth)"
ok "wait_for 10 fetch_is 8082 '$PAGE_D'" "the client host fetches web-d's page at 8082" ||
	diag "neighbours on riklet0: $(ip neigh show dev riklet0)" "web-d's eth0: $(nsenter --net="$NETNS/web-d" ip -br link show eth0)"

manifest web-e 8083 "page of web-e"
wait_status 60 web-e RUNNING
ok "wait_for 10 fetch_is 8083 'page of web-e'" "web-e (8083) is RUNNING and serves its page"

# --- riklet killed with -9; meanwhile web-d's record is lost and web-e's container dies ----------
VETHD=$(net_rec web-d host_if) VETHE=$(net_rec web-e host_if)
RULES_BEFORE=$(iptables-legacy -t nat -S | grep -v 'riklet:web-[de]'; iptables-legacy -S | grep -v 'riklet:web-[de]')
kill -KILL "$RK_PID"
wait "$RK_PID" 2>/dev/null
runc --root "$RUNC_ROOT" delete -f web-d_httpd
kill -KILL "$(runc_pid web-e_httpd)"
rm -f "$MANIFESTS/web-d.json" "$STATE/records/web-d.json"
ok "ip link show '$VETHD' && test -e '$NETNS/web-d'" "while riklet is down, web-d's veth and namespace are still there"
# drift while riklet is down: web-a's rule and veth gone, a jump gone, another one doubled
iptables-legacy -t nat -D RIKLET -p tcp -m tcp --dport 8080 -m comment --comment riklet:web-a -j DNAT --to-destination "$IPA:80"
iptables-legacy -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j RIKLET
iptables-legacy -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j RIKLET
ip link del "$VETHA"
nok "timeout 3 busybox wget -qO- http://127.0.0.1:8080/ >/dev/null" "with its rule and veth gone, web-a is unreachable while riklet is down"
start_riklet
ok "kill -0 $RK_PID" "riklet starts again over its leftovers"
wait_for 20 grep -q 'network reconciled' "$LOG"
ok "wait_for 10 fetch_is 8080 '$PAGE_A'" "web-a still serves its page after the restart"
is "$(status web-a)" RUNNING "web-a is still RUNNING"
is "$(runc_pid web-a_httpd)" "$PIDA" "web-a's container is the same process (re-adopted, not restarted)"
is "$(status web-c)" FAILED "web-c stays FAILED"
nat=$(iptables-legacy -t nat -S)
is "$(grep -c -- '-j RIKLET$' <<<"$nat")" 2 "the jumps to RIKLET appear once each (PREROUTING, OUTPUT)"
is "$(grep -c -- '-j RIKLET-POSTROUTING$' <<<"$nat")" 1 "the jump to RIKLET-POSTROUTING appears once"
is "$(iptables-legacy -S FORWARD | grep -c -- '-j RIKLET-FORWARD$')" 1 "the jump to RIKLET-FORWARD appears once"
is "$(iptables-legacy -t nat -S RIKLET | grep -v '^-N')" "$(dnat 8080 web-a "$IPA")" \
	"RIKLET holds only web-a's DNAT, once (web-d's rule was removed at boot)"
is "$(iptables-legacy -t nat -S; iptables-legacy -S)" "$RULES_BEFORE" "every other rule is as before the kill, none duplicated"
nok "ip link show '$VETHD'" "web-d's leftover veth was removed at boot"
nok "test -e '$NETNS/web-d'" "web-d's leftover namespace was removed at boot"
is "$(net_rec web-d)" "" "web-d's leftover allocation was removed at boot"
nok "test -e '$STATE/instances/web-d'" "web-d's leftover instance directory was removed at boot"
wait_status 10 web-e FAILED
is "$(status web-e)" FAILED "web-e, whose container died while riklet was down, is FAILED"
like "$(reason web-e)" 'killed by signal 9 .*while riklet was not running' \
	"its reason gives the real signal (from conmon's exit file) and says riklet was down"
nok "ip link show '$VETHE'" "web-e's veth is gone"
nok "test -e '$NETNS/web-e'" "web-e's namespace is gone"
is "$(net_rec web-e)" "" "web-e's allocation is freed"
nok "inclient timeout 3 busybox wget -qO- http://192.0.2.1:8083/" "8083 serves nothing any more"
is "$(bridge_veths)" "$VETHA " "the bridge holds only web-a's veth"
is "$(ip -j -4 addr show riklet0 | jq -r '[.[0].addr_info[].local] | join(" ")')" 10.89.0.1 "the bridge has its one address, once"
kill -0 "$RK_PID" 2>/dev/null || diag_state

# --- a changed manifest replaces web-a on the same port ---------------------------------------
manifest web-a 8080 "$PAGE_A again"
ok "wait_for 30 fetch_is 8080 '$PAGE_A again'" "web-a.json changed: the new web-a serves its new page on 8080"
is "$(status web-a)" RUNNING "the new web-a is RUNNING"
isnt "$(runc_pid web-a_httpd)" "$PIDA" "it is a new container"
is "$(iptables-legacy -t nat -S RIKLET | grep -v '^-N')" "$(dnat 8080 web-a "$(pod_ip web-a)")" "RIKLET holds web-a's one DNAT"
is "$(bridge_veths | wc -w)" 1 "the bridge holds one veth"

# --- riklet cleanup removes everything riklet owns --------------------------------------------
kill -TERM "$RK_PID"
wait "$RK_PID" 2>/dev/null
"$RIKLET" cleanup "${OPTS[@]}" >"$TEST_TMP/cleanup.out" 2>&1
rc=$?
is "$rc" 0 "riklet cleanup exits 0"
((rc == 0)) || diag_file "$TEST_TMP/cleanup.out"
all=$(iptables-legacy -t nat -S; iptables-legacy -S)
unlike "$all" 'RIKLET|riklet:' "no riklet chain, rule or jump remains"
like "$all" "$FOREIGN" "the rule riklet does not own survived"
unlike "$(ip -j link | jq -r '.[].ifname')" 'riklet0|rkv|rkt' "no riklet link remains"
ok "ip link show rkclient0" "the client's veth (not riklet's) survived"
is "$(find "$NETNS" -mindepth 1 2>/dev/null | wc -l)" 0 "no network namespace file remains"
is "$(runc --root "$RUNC_ROOT" list -q | wc -l)" 0 "no container remains"
is "$(jq -c '.instances' "$STATE/network.json")" '{}' "no address allocation remains"
nok "inclient timeout 3 busybox wget -qO- http://192.0.2.1:8080/" "8080 serves nothing any more"
is "$("$RIKLET" ps --json --state-dir "$STATE" | jq '.instances | length')" 0 "riklet ps is empty after the cleanup"
is "$(find "$STATE/instances" -mindepth 1 2>/dev/null | wc -l)" 0 "no instance directory remains"
done_testing
