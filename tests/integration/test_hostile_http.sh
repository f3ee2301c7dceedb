#!/usr/bin/env bash
# test_hostile_http.sh — hostile HTTP clients against a real riklet's HTTP server (--interlink,
# core/httpd.c), from the review of the interLink/metrics front-ends: slow clients that hold
# connections (slowloris, headers or body a byte at a time) must be closed by the request deadline
# (--interlink-request-timeout, 30 s by default, 15 s here to keep the test short) so that /status
# answers again; past the cap of 256 connections (300, then 400 of them)
# every new connection is answered 503, none is dropped silently; each case asserts what riklet
# does, not only that it lives.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd curl jq
[[ -x /usr/bin/python3 ]] || skip_all "/usr/bin/python3 is missing"
rk_init

PORT=$(free_port) || bail_out "no free port"
U=http://127.0.0.1:$PORT
ping() { curl -s -m 10 -o /dev/null -w '%{http_code}' -X GET --data-binary '[]' "$U/status"; }
DEADLINE=15 # --interlink-request-timeout: every wait below is this plus a margin of 10-15 s
rk_start_standalone --interlink "127.0.0.1:$PORT" --interlink-request-timeout "$DEADLINE" || bail_out "riklet did not start"
is "$(ping)" 200 "the ping answers before the slow clients"

# --- conflicting Content-Length headers: refused (RFC 9112 6.3: a proxy in front could take the
# other one and the rest of the body would be read as a second, smuggled request)
raw() { # raw HEADERS BODY -> the status line of riklet's first answer
	/usr/bin/python3 - "$PORT" "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(("GET /status HTTP/1.1\r\nHost: x\r\n" + sys.argv[2].replace("|", "\r\n") + "\r\n\r\n" + sys.argv[3]).encode())
print(s.recv(4096).split(b"\r\n")[0].decode())
PY
}
is "$(raw 'Content-Length: 2' '[]')" "HTTP/1.1 200 OK" "one Content-Length: answered"
like "$(raw 'Content-Length: 2|Content-Length: 5' '[]   ')" "^HTTP/1.1 400" "two different Content-Length headers: 400"
like "$(raw 'Content-Length: 5|Content-Length: 2' '[]   ')" "^HTTP/1.1 400" "... in either order"

# --- slowloris: 150 clients dripping headers and 150 dripping a body, for DEADLINE + 15 s -------
# riklet counts connections at accept: the first 256 are served, every later one is answered 503
# at once (it used to count at the end of each request's headers, connections it was already
# refusing included, so the refused ones closing left 255 open and the cap let the next one in).
capped() { (($(grep -c 'connections open, the cap: new connections are answered 503' "$RK_LOG") >= $1)); }
/usr/bin/python3 "$(dirname "$0")/hostile_http_conns.py" 127.0.0.1 "$PORT" headers 150 $((DEADLINE + 15)) >"$TEST_TMP/h.out" &
hp=$!
/usr/bin/python3 "$(dirname "$0")/hostile_http_conns.py" 127.0.0.1 "$PORT" body 150 $((DEADLINE + 15)) >"$TEST_TMP/b.out" &
bp=$!
ok "wait_for 60 capped 1" "riklet reaches its cap of 256 connections (and logs it)"
out=$(curl -s -m 10 -w ' %{http_code}' -X GET --data-binary '[]' "$U/status")
is "${out##* }" 503 "with 300 slow connections opened, past the 256 cap: a new request gets 503 (the cap holds)"
like "$out" "too many connections \(256 open, at most 256\)" "... saying why"
wait "$hp" "$bp"
read -r ho hc ha <"$TEST_TMP/h.out"
read -r bo bc ba <"$TEST_TMP/b.out"
is "$ho $hc $bo $bc" "open=0 closed=150 open=0 closed=150" \
	"every slow client was closed: answered 503 at once past the cap, the others by the ${DEADLINE} s deadline"
is "$((${ha#*=} + ${ba#*=}))" 44 "exactly 300 - 256 = 44 of them were answered 503"
ok "wait_for 10 grep -q 'back under the cap of 256 connections (45 new connections were answered 503)' '$RK_LOG'" \
	"riklet logs when it is back under the cap (44 clients and the ping answered 503)"
is "$(ping)" 200 "the ping answers again"
ok "kill -0 $RK_PID" "riklet is up"

# --- 400 connections: past the cap every one is answered 503 (libmicrohttpd used to close those
# past 320 without a word) -----------------------------------------------------------------------
/usr/bin/python3 "$(dirname "$0")/hostile_http_conns.py" 127.0.0.1 "$PORT" headers 400 $((DEADLINE - 10)) >"$TEST_TMP/400.out" &
cp=$!
ok "wait_for 60 capped 2" "400 connections: riklet reaches its cap again"
out=$(curl -s -m 10 -w ' %{http_code}' -X GET --data-binary '[]' "$U/status")
is "${out##* }" 503 "... a new request gets 503"
wait "$cp"
is "$(cat "$TEST_TMP/400.out")" "open=256 closed=144 answered503=144" \
	"after $((DEADLINE - 10)) s, 256 connections are held (their deadline is ${DEADLINE} s) and the 144 others were each answered 503"
ok "! grep -q 'did not take a new connection\|cannot accept' '$RK_LOG'" "... none was dropped without an answer"
ok "wait_for 30 grep -q 'back under the cap of 256 connections (145 new' '$RK_LOG'" \
	"the 256 held ones reach their deadline: riklet is back under the cap"
is "$(ping)" 200 "the ping answers again"

# --- /status of 60,000 pods (7.8 MB, under the 8 MiB body cap) ---------------------------------
# It used to hold the loop for the whole request (5 s here: a ping sent meanwhile waited for it)
# and to log one line per unknown pod (60,000 lines per request).
/usr/bin/python3 -c 'import json, sys
sys.stdout.write(json.dumps([{"metadata": {"name": "p%d" % i, "namespace": "default", "uid": "u-%d" % i},
	"spec": {"containers": [{"name": "c", "image": "x"}]}} for i in range(60000)]))' >"$TEST_TMP/big.json"
before=$(grep -c 'unknown pod' "$RK_LOG")
curl -s -m 120 -o "$TEST_TMP/big.out" -w '%{time_total}' -X GET --data-binary "@$TEST_TMP/big.json" "$U/status" \
	>"$TEST_TMP/big.time" &
bigp=$!
wait_for 60 grep -q 'GET /status: 60000 pods\|status of unknown pod default/p1 ' "$RK_LOG"
pt=$(curl -s -m 60 -o /dev/null -w '%{http_code} %{time_total}' -X GET --data-binary '[]' "$U/status")
wait "$bigp"
bt=$(cat "$TEST_TMP/big.time")
is "${pt% *}" 200 "a ping sent while riklet works through the 60,000 pods answers"
ok "awk 'BEGIN { exit !(${pt#* } * 4 < $bt) }'" \
	"... in less than a quarter of the big request's time (${pt#* } s vs $bt s: the loop turns meanwhile)"
is "$(jq 'length' "$TEST_TMP/big.out")" 60000 "the 60,000-pod /status answers one PodStatus per pod"
is "$(jq -r '[.[].containers[0].state.terminated.reason] | unique | join(",")' "$TEST_TMP/big.out")" \
	ContainerStatusUnknown "... each ContainerStatusUnknown"
is "$(($(grep -c 'unknown pod' "$RK_LOG") - before))" 1 "... and riklet logs one line about the unknown pods, not 60,000"

# --- a request path that would forge log lines (riklet logs a refused request's path) ------------
echo "s3cret" >"$TEST_TMP/token"
rk_stop
rk_start_standalone --interlink "127.0.0.1:$PORT" --interlink-token-file "$TEST_TMP/token" || bail_out "riklet did not restart"
is "$(curl -s -o /dev/null -w '%{http_code}' "$U/status%0a2026-11-29T20:00:00.000Z%20error%20%5Bagent%5D%20FORGED%1b%5b31m")" 401 \
	"a path holding a newline and an escape sequence, without the token: 401"
sleep 0.5
ok "! grep -q '^2026-11-29T20:00:00.000Z error \[agent\] FORGED' '$RK_LOG'" "... and it forges no log line"
ok "! grep -qP '\x1b' '$RK_LOG'" "... and puts no terminal escape sequence in the log"
like "$(grep 'refused: no bearer token' "$RK_LOG" | tail -n1)" 'GET "/status\\n2026.*FORGED\\u001b\[31m" refused' \
	"... it is logged quoted, as one line"

done_testing
