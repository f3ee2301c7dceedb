#!/usr/bin/env bash
# test_net_pod.sh — Pod and Function networking through netctl, inside a network + mount namespace
# this test creates: rules read with iptables-legacy, links with ip -j, real HTTP traffic from a
# second namespace acting as a client host, a kill -9 style restart with leftovers, and a cleanup
# that leaves nothing.
# Run the whole test in private namespaces: the host's links and tables are never touched. Enter
# them before common.sh makes its temp dir, so that dir and its cleanup belong to the inner shell.
if [[ -z ${RK_NET_INNER:-} && $(id -u) == 0 ]] && command -v unshare >/dev/null &&
	unshare -n -m true 2>/dev/null; then
	exec env RK_NET_INNER=1 unshare -n -m bash "$0" "$@"
fi
source "$(dirname "$0")/../lib/common.sh"
need_root
need_cmd iptables-legacy ip unshare nsenter busybox curl
[[ -n ${RK_NET_INNER:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
mount --make-rprivate / || bail_out "cannot make / private in the test mount namespace"

LUA=$RIKLET_SRC_DIR/tests/integration/net_pod.lua
export NET_TMP=$TEST_TMP
step() { NET_STEP=$1 timeout 120 "$RIKLET" test "$LUA" >"$TEST_TMP/$1.tap" 2>&1; }
tap_ok() { # report a Lua step's TAP as one result, with its lines on failure
	if step "$1"; then pass "netctl step '$1' (riklet test): $(grep -c '^ok' "$TEST_TMP/$1.tap") checks passed"
	else fail "netctl step '$1'"; diag_file "$TEST_TMP/$1.tap" 80; fi
}
ip link set lo up
mkdir -p /run/netns && mount -t tmpfs -o size=1m tmpfs /run/netns # `ip netns` files stay in here

# --- setup: pods a (tcp 8080->80), b (tcp 9090->8000), d (udp 8080->80), function fn-1 ---------------
tap_ok setup
nat=$(iptables-legacy -t nat -S)
like "$nat" $'\n-A PREROUTING -m addrtype --dst-type LOCAL -j RIKLET' "PREROUTING jumps to RIKLET for local destinations"
like "$nat" $'\n-A OUTPUT -m addrtype --dst-type LOCAL -j RIKLET' "OUTPUT jumps to RIKLET for local destinations"
is "$(iptables-legacy -t nat -S RIKLET)" "-N RIKLET
-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment \"riklet:pod-a\" -j DNAT --to-destination 10.89.0.2:80
-A RIKLET -p tcp -m tcp --dport 9090 -m comment --comment \"riklet:pod-b\" -j DNAT --to-destination 10.89.0.3:8000
-A RIKLET -p udp -m udp --dport 8080 -m comment --comment \"riklet:pod-d\" -j DNAT --to-destination 10.89.0.4:80
-A RIKLET -p tcp -m tcp --dport 45000 -m comment --comment \"riklet:fn-1\" -j DNAT --to-destination 10.90.0.1:8080" \
	"RIKLET holds exactly one DNAT per exposed port"
like "$(iptables-legacy -t nat -S RIKLET-POSTROUTING)" '-s 10.89.0.0/16 ! -d 10.89.0.0/16 -m comment --comment "riklet:infra" -j MASQUERADE' \
	"masquerade for the pod CIDR only"
like "$(iptables-legacy -S RIKLET-FORWARD)" '-A RIKLET-FORWARD -o rkt[0-9a-f]{8} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "riklet:fn-1" -j ACCEPT' \
	"forward accepts for the function's TAP"
links=$(ip -j -d link show)
like "$links" '"ifname":"riklet0"[^}]*' "bridge riklet0 exists"
is "$(ip -j link show master riklet0 | grep -o '"ifname":"rkv[0-9a-f]*"' | wc -l)" 3 "three veths on the bridge (pods a, b, d)"
like "$links" '"ifname":"rkt[0-9a-f]{8}"' "the function's TAP exists"
like "$(ip -j addr show riklet0)" '"local":"10.89.0.1","prefixlen":16' "bridge address 10.89.0.1/16"
NSA=$TEST_TMP/netns/pod-a
like "$(nsenter --net="$NSA" ip -j addr show eth0)" '"local":"10.89.0.2","prefixlen":16' "pod-a has 10.89.0.2/16 on eth0"
like "$(nsenter --net="$NSA" ip -j route)" '"dst":"default","gateway":"10.89.0.1"' "pod-a's default route is the bridge"
like "$(cat "$TEST_TMP/state/network.json")" '"pod-a"' "allocations persisted in network.json"

# --- real traffic: busybox httpd in pod-a, fetched from a client host namespace --------------------
mkdir -p "$TEST_TMP/www" && echo "hello from pod-a" >"$TEST_TMP/www/index.html"
nsenter --net="$NSA" busybox httpd -f -p 80 -h "$TEST_TMP/www" &
HTTPD=$!
on_exit "kill $HTTPD 2>/dev/null"
ip netns add rkclient
on_exit "ip netns del rkclient"
ip link add rkcl0 type veth peer name eth0 netns rkclient
ip addr add 192.168.77.1/24 dev rkcl0 && ip link set rkcl0 up
ip -n rkclient addr add 192.168.77.2/24 dev eth0 && ip -n rkclient link set eth0 up && ip -n rkclient link set lo up
ip -n rkclient route add default via 192.168.77.1
wait_for 5 nsenter --net="$NSA" sh -c 'busybox netstat -ltn | grep -q ":80 "'
is "$(ip netns exec rkclient curl -sS -m 5 http://192.168.77.1:8080/ 2>&1)" "hello from pod-a" \
	"a client host fetches the page through node:8080 (DNAT to pod-a)"
is "$(curl -sS -m 5 http://127.0.0.1:8080/ 2>&1)" "hello from pod-a" \
	"the node itself reaches 127.0.0.1:8080 (route_localnet + masquerade)"
nok "ip netns exec rkclient curl -sS -m 2 http://192.168.77.1:9090/" "port 9090 (pod-b, nothing listening) does not serve the page"

# --- riklet killed -9, pod-b died meanwhile, and strangers left behind -----------------------------
iptables-legacy -t nat -A RIKLET -p tcp --dport 7777 -m comment --comment riklet:ghost -j DNAT --to-destination 10.89.0.99:1
ip link add rkvdeadbeef type veth peer name rkvdeadbeep
touch "$TEST_TMP/netns/ghost" && unshare -n mount --bind /proc/self/ns/net "$TEST_TMP/netns/ghost" # a stray namespace
ip link add rkvstray0 type bridge # not riklet's name pattern: must survive
tap_ok reconcile
rik=$(iptables-legacy -t nat -S RIKLET)
unlike "$rik" 'pod-b|ghost' "pod-b's and the ghost's rules are gone"
like "$rik" 'riklet:pod-a' "pod-a's rule stayed"
nok "ip link show rkvdeadbeef" "the stray veth is gone"
ok "ip link show rkvstray0" "a link outside riklet's naming survived"
nok "test -e $TEST_TMP/netns/pod-b" "pod-b's namespace is gone"
ok "test -e $TEST_TMP/netns/pod-a" "pod-a's namespace stayed"
is "$(iptables-legacy -t nat -S | grep -c -- '-j RIKLET$')" 2 "jumps not duplicated after the restart"
is "$(ip netns exec rkclient curl -sS -m 5 http://192.168.77.1:8080/ 2>&1)" "hello from pod-a" \
	"pod-a still serves after the restart"

# --- teardown and cleanup leave nothing ---------------------------------------------------------------
kill $HTTPD 2>/dev/null; wait $HTTPD 2>/dev/null
tap_ok teardown
all=$(iptables-legacy -t nat -S; iptables-legacy -S)
unlike "$all" 'RIKLET' "no RIKLET chain, rule or jump left"
unlike "$(ip -j link)" '"ifname":"(rkv[0-9a-f]{8}|rkt[0-9a-f]{8}|riklet0)"' "no riklet link left"
is "$(ls "$TEST_TMP/netns" | wc -l)" 0 "no namespace left"
like "$(cat "$TEST_TMP/state/network.json")" '"instances":[[:space:]]*\{[[:space:]]*\}' "no allocation left"
ip link del rkvstray0
done_testing
