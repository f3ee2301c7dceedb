#!/usr/bin/env bash
# test_sched_peers.sh — one real riklet in scheduler mode against peers that fail in every way a
# scheduler can, swapped on the same port, with short timeouts: nothing listening; a peer that
# accepts and never answers (handshake timeout, a bounded number of attempts); one that accepts and
# closes; one that answers HTTP/1.1 (the log quotes it); one that sends bytes that are not HTTP/2
# (the log gives them in hex); a 5 MiB HTTP/2 frame; a gRPC message announcing 4 GiB; then a grpcio scheduler that sends its
# Register headers only with the first instruction (riklet registers, metrics arrive, a CREATE
# runs); and finally that scheduler's packets dropped after a long idle period: the idle stream
# was not cut, the dead one is (TCP keepalive + TCP_USER_TIMEOUT), and the next connect times out.

# In private namespaces, so the iptables DROP touches nothing of the host's.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc protoc ip iptables
need_py grpc google.protobuf
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
ip link set lo up
rk_init

source "$(dirname "$0")/../lib/sched.sh"
touch "$EVENTS"
accepts() { jq -r 'select(.kind == "accept") | .mode' "$EVENTS" | grep -cx "$1" || true; }
ev_count() { jq -r --arg k "$1" 'select(.kind == $k) | .kind' "$EVENTS" | grep -c . || true; }
count_ge() { (($(ev_count "$1") >= $2)); }
# log lines written since mark $1 (a line count of RK_LOG)
log_since() { tail -n +"$(($1 + 1))" "$RK_LOG"; }
log_has() { log_since "$1" | grep -qF -- "$2"; }
mark() { wc -l <"$RK_LOG"; }
riklet_alive() { kill -0 "$RK_PID" 2>/dev/null; }

registry_start || bail_out "docker-registry did not start"
CMD='["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
mkimage --cmd "$CMD" "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/busybox:latest" || bail_out "push failed"

# --- nothing listening --------------------------------------------------------------------------
: >"$RK_LOG"
"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname peers-1 --metrics-interval 60 \
	--scheduler-connect-timeout 1 --scheduler-handshake-timeout 1 \
	--scheduler-keepalive 1 --scheduler-keepalive-timeout 2 \
	--reconnect-initial 0.5 --reconnect-max 1 --reconnect-healthy 600 \
	"${RK_OPTS[@]}" --insecure-registries "$REGISTRY" >>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
ok "wait_for 10 log_has 0 'Connection refused (nothing listens there'" "nothing listening: the refused connection is logged"
like "$(grep -m1 "Connection refused" "$RK_LOG")" "scheduler http://127.0.0.1:$SCHED_PORT: cannot connect to 127.0.0.1:$SCHED_PORT: .*reconnecting in [0-9.]+ s" \
	"... in one line naming the scheduler, the address tried and the next attempt"
# gRPC over h2c runs on libnghttp2: libcurl (and its ~35 libraries) is not in the process
nok "grep -q libcurl /proc/$RK_PID/maps" "scheduler mode over http:// has not loaded libcurl"
# (libnghttp2 is linked in from its static archive by default: RIKLET_STATIC_DEPS)
ok "grep -q libnghttp2 /proc/$RK_PID/maps || ! grep -q libnghttp2 <(ldd '$RIKLET')" \
	"... it speaks HTTP/2 with libnghttp2 (mapped, or linked into riklet)"

# --- accepts, never answers -----------------------------------------------------------------------
m=$(mark)
sched_start --raw silent || bail_out "silent peer did not start"
t0=$SECONDS
sleep 6
n=$(accepts silent)
ok "log_has $m 'connected, but no HTTP/2 SETTINGS from the server within 1 s'" "a silent peer: the handshake timeout is logged"
ok "log_since $m | grep -q 'within 1 s.*reconnecting in'" "... with the reconnect delay on the same line"
ok "((n >= 2 && n <= 5))" "... and riklet reconnects, boundedly: $n connections in $((SECONDS - t0)) s (1 s timeout + 0.4-1.2 s backoff)"
sched_kill

# --- accepts and closes ---------------------------------------------------------------------------
m=$(mark)
sched_start --raw close || bail_out "closing peer did not start"
sleep 3
n=$(accepts close)
ok "log_has $m 'accepted the TCP connection and closed it without sending anything'" "a peer that closes at once: said so"
ok "((n >= 2 && n <= 8))" "... retried with backoff, not in a busy loop: $n connections in 3 s"
sched_kill

# --- answers HTTP/1.1 ---------------------------------------------------------------------------
m=$(mark)
sched_start --raw http1 || bail_out "HTTP/1 peer did not start"
ok "wait_for 5 log_has $m 'the server does not speak HTTP/2: it sent \"HTTP/1.1 400 Bad Request\"'" \
	"an HTTP/1.1 server: the log quotes what it answered"
nok "log_since $m | grep -q 'Empty reply from server'" "... not 'Empty reply from server'"
sched_kill

# --- sends bytes that are not HTTP/2 ------------------------------------------------------------------
m=$(mark)
t0=$SECONDS
sched_start --raw garbage || bail_out "garbage peer did not start"
ok "wait_for 5 log_has $m 'it sent 5 bytes that are not HTTP/2: 68 65 6c 6c 6f'" \
	"a peer sending 'hello': the log gives the bytes received, in hex"
sleep 2
n=$(accepts garbage) dt=$((SECONDS - t0))
ok "((n >= 2 && n <= dt + 2))" "... and riklet reconnects with backoff: $n connections in $dt s (0.4-1.2 s apart)"
sched_kill

# --- a 5 MiB HTTP/2 frame, then a gRPC message announcing 4 GiB -----------------------------------------
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$RK_PID/status"; }
m=$(mark)
sched_start --raw bigframe || bail_out "bigframe peer did not start"
ok "wait_for 5 log_has $m 'the server sent a DATA frame of 5242880 bytes, more than the 16384 this client allows'" \
	"a 5 MiB HTTP/2 frame: the log says so, with its size"
sched_kill
m=$(mark)
sched_start --raw bigmsg || bail_out "bigmsg peer did not start"
ok "wait_for 5 log_has $m 'received message larger than max (4294967280 vs. 4194304 bytes)'" \
	"a gRPC message announcing 4 GiB: refused from its 5-byte prefix, the log gives both sizes"
sleep 2
rss=$(rss_kib)
ok "((rss < 65536))" "... nothing of it is buffered: riklet's RSS is $((rss / 1024)) MiB"
ok "riklet_alive" "riklet keeps serving after garbage, a 5 MiB frame and a 4 GiB message"
sched_kill

# --- grpcio holding its headers until the first instruction ---------------------------------------
m=$(mark)
sched_start --lazy-headers || bail_out "scheduler.py did not start"
ok "wait_for 15 count_ge register 1" "grpcio scheduler (headers held back): riklet registers"
ok "wait_for 10 count_ge worker 1" "... and its node metrics arrive before any instruction"
ok "log_has $m 'as \"peers-1\", registration sent'" "... and riklet logs that it is connected and registering"
def=$(jq -cn --arg img "$REGISTRY/busybox:latest" '{apiVersion: "v1", kind: "Pod", name: "lazy", replicas: null,
	spec: {containers: [{name: "c1", image: $img, env: null, ports: null}], function: null}}')
curl -sf -X POST -d "$(jq -cn --arg d "$def" '{instance_id: "lazy-1", definition: $d, action: "CREATE"}')" \
	"$CONTROL/instruct" >/dev/null
running() { jq -r 'select(.kind == "instance" and .instance_id == "lazy-1") | .status' "$EVENTS" | grep -qx RUNNING; }
ok "wait_for 60 running" "... a CREATE then runs: RUNNING reported"
ok "rk_runc_ids | grep -qx lazy-1_c1" "... and runc runs lazy-1_c1"
regs=$(ev_count register)

# --- an idle stream is not a dead one; a dead one is found ------------------------------------------
m=$(mark)
sleep 5 # > keepalive 1 s + keepalive-timeout 2 s, with nothing to send (metrics every 60 s)
nok "log_has $m 'lost the scheduler'" "an idle registration (5 s, keepalive 1 s + 2 s) is kept"
is "$(ev_count register)" "$regs" "... no re-registration"
iptables -I INPUT -p tcp --dport "$SCHED_PORT" -j DROP
iptables -I INPUT -p tcp --sport "$SCHED_PORT" -j DROP
t0=$SECONDS
ok "wait_for 10 log_has $m 'stopped acknowledging'" "scheduler unreachable (packets dropped): the dead stream is given up on, said so"
dt=$((SECONDS - t0))
ok "((dt <= 6))" "... within $dt s (keepalive 1 s + keepalive-timeout 2 s, not TCP's 15 minutes)"
diag "$(log_since "$m" | grep -m1 'lost the scheduler')"
ok "wait_for 10 log_has $m 'no connection within 1 s (connect timeout)'" "... then each connect times out after 1 s, said so"
iptables -D INPUT -p tcp --dport "$SCHED_PORT" -j DROP
iptables -D INPUT -p tcp --sport "$SCHED_PORT" -j DROP
reached() { (($(ev_count register) > regs)) || log_has "$m" 'still holds an open registration'; }
ok "wait_for 15 reached" "packets flow again: riklet reaches the scheduler again"
ok "riklet_alive" "riklet is still running"
is "$(rk_runc_pid lazy-1_c1 | grep -c .)" 1 "lazy-1's container kept running throughout"

nok "grep -E 'task failed|stack traceback|panic' '$RK_LOG'" "no task failure or panic in riklet's log"
(( RK_TAP_FAILED == 0 )) || { diag_file "$RK_LOG" 60; diag_file "$SCHED_LOG" 20; }
done_testing
