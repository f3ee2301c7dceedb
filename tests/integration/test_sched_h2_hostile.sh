#!/usr/bin/env bash
# test_sched_h2_hostile.sh — riklet in scheduler mode against HTTP/2 peers that misbehave inside a
# valid connection (test_sched_peers.sh has the peers that are not HTTP/2 at all): a GOAWAY with
# debug data holding an escape and a newline; RST_STREAM on every call; a header block that never
# ends (a 64 MiB header value in CONTINUATION frames); a flood of tiny CONTINUATION frames; a
# grpc-message whose percent-escapes decode to a newline, an ESC and a NUL. For each: the log says
# what the server did, with no byte of the server's that could forge a line or drive a terminal,
# riklet reconnects with backoff (a bounded number of connections), its RSS and CPU stay low, and
# it keeps running.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd jq
need_py grpc google.protobuf
rk_init
source "$(dirname "$0")/../lib/sched.sh"
touch "$EVENTS"
mark() { wc -l <"$RK_LOG"; }
log_since() { tail -n +"$(($1 + 1))" "$RK_LOG"; }
log_has() { log_since "$1" | grep -qF -- "$2"; }
accepts() { jq -r 'select(.kind == "accept") | .mode' "$EVENTS" | grep -cx "$1" || true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$RK_PID/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$RK_PID/status"; }

: >"$RK_LOG"
"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname h2-1 --metrics-interval 60 \
	--scheduler-connect-timeout 1 --scheduler-handshake-timeout 1 \
	--reconnect-initial 0.5 --reconnect-max 1 --reconnect-healthy 600 \
	"${RK_OPTS[@]}" >>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
wait_for 20 grep -q 'riklet .* started' "$RK_LOG" || bail_out "riklet did not start"

hz=$(getconf CLK_TCK)
peer() { # peer MODE LOG_TEXT WHAT: run the peer for 6 s, check what riklet logged and did
	local m t0 c0 n cpu rss
	m=$(mark)
	sched_start --raw "$1" || bail_out "$1 peer did not start"
	t0=$SECONDS c0=$(cpu_ticks)
	ok "wait_for 15 log_has $m '$2'" "$3: the log says what the server did"
	sleep 4
	n=$(accepts "$1") cpu=$(($(cpu_ticks) - c0)) rss=$(rss_kib)
	ok "((n >= 1 && n <= (SECONDS - t0) * 3 + 2))" "... riklet reconnects with backoff: $n connections in $((SECONDS - t0)) s"
	ok "((cpu * 2 < (SECONDS - t0) * hz))" "... using under half a CPU: $((cpu * 1000 / hz)) ms of CPU in $((SECONDS - t0)) s"
	ok "((rss < 65536))" "... RSS stays low: $((rss / 1024)) MiB"
	ok "kill -0 $RK_PID" "... riklet keeps running"
	sched_kill
}
peer goaway 'the server sent GOAWAY ENHANCE_YOUR_CALM: "calm down.[31m.forged"' "a GOAWAY with an escape and a newline in its debug data"
peer rst 'the server reset the stream (RST_STREAM REFUSED_STREAM)' "RST_STREAM on every call"
peer hugeheaders 'the server broke the HTTP/2 protocol (COMPRESSION_ERROR)' "a 64 MiB header value in CONTINUATION frames"
peer manyheaders 'Too many CONTINUATION frames following a HEADER frame' "100,000 CONTINUATION frames of tiny headers"
peer evilmsg 'no%0a2099-01-01 forged%1b[31m%00cut' "a grpc-message with an escaped newline, ESC and NUL"

nok "grep -q \$'\\x1b' '$RK_LOG'" "no escape byte of a server's reached the log"
nok "grep -qE '^(forged|2099-01-01)' '$RK_LOG'" "no server's bytes started a log line"
nok "grep -E 'task failed|stack traceback|panic' '$RK_LOG'" "no task failure or panic in riklet's log"
rk_stop
is "$?" 0 "riklet stops with status 0 on SIGTERM"
((RK_TAP_FAILED == 0)) || { diag_file "$RK_LOG" 40; diag_file "$SCHED_LOG" 20; }
done_testing
