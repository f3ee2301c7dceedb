# fntest.sh — helpers shared by the Function integration tests (source after riklet.sh; they use
# STATE, TEST_TMP and PYTHON):
#   qemu_pids [ID/]    pids of the QEMUs this test's riklet started (their -pidfile names STATE)
#   rules_of ID        how many of riklet's iptables rules name the instance
#   taps               how many riklet TAPs exist
#   vm_left ID         what the instance still holds besides its directory: "qemu rules disk socket"
#   fn_client_ns       a client host in netns rkclient reaching the node on 192.168.77.1
#   client PORT        GET http://192.168.77.1:PORT/ from that client
#   http_serve DIR     tests/lib/httpserver.py serving DIR (log TEST_TMP/http.log); sets HTTP_BASE
#   gets PATH          how many GETs of PATH that server logged
qemu_pids() { pgrep -f -- "-pidfile $STATE/instances/${1:-}" || true; }
rules_of() { iptables-legacy-save 2>/dev/null | grep -c -- "riklet:$1\"" || true; }
taps() { ip -o link show | grep -c ': rkt[0-9a-f]\{8\}' || true; }
vm_left() {
	local left=""
	[[ -n $(qemu_pids "$1/") ]] && left+=" qemu"
	(($(rules_of "$1") > 0)) && left+=" rules"
	[[ -e $STATE/instances/$1/disk.qcow2 || -e $STATE/instances/$1/base.img ]] && left+=" disk"
	[[ -e $STATE/instances/$1/qmp.sock ]] && left+=" socket"
	echo "${left# }"
}
fn_client_ns() {
	mkdir -p /run/netns && mount -t tmpfs -o size=1m tmpfs /run/netns
	ip netns add rkclient
	ip link add rkcl0 type veth peer name eth0 netns rkclient
	ip addr add 192.168.77.1/24 dev rkcl0 && ip link set rkcl0 up
	ip -n rkclient addr add 192.168.77.2/24 dev eth0 && ip -n rkclient link set eth0 up
	ip -n rkclient route add default via 192.168.77.1
}
client() { ip netns exec rkclient curl -sS -m 5 "http://192.168.77.1:$1/" 2>&1; }
http_serve() {
	"$PYTHON" "$RIKLET_SRC_DIR/tests/lib/httpserver.py" --dir "$1" --port-file "$TEST_TMP/port" \
		--log "$TEST_TMP/http.log" 2>"$TEST_TMP/http.err" &
	HTTP_PID=$!
	disown "$HTTP_PID"
	on_exit "kill -9 $HTTP_PID"
	wait_for 15 test -s "$TEST_TMP/port" || bail_out "the HTTP server did not start"
	HTTP_BASE=http://127.0.0.1:$(cat "$TEST_TMP/port")
}
gets() { grep -c "^GET $1 " "$TEST_TMP/http.log" || true; }
