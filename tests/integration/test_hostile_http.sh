#!/usr/bin/env bash
# test_hostile_http.sh — hostile HTTP clients against a real riklet's HTTP server (--interlink,
# core/httpd.c), from the review of the interLink/metrics front-ends: slow clients that hold
# connections (slowloris, headers or body a byte at a time) must be closed by the request deadline
# (30 s) so that /status answers again; each case asserts what riklet does, not only that it lives.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd curl jq
[[ -x /usr/bin/python3 ]] || skip_all "/usr/bin/python3 is missing"
rk_init

PORT=$(free_port) || bail_out "no free port"
U=http://127.0.0.1:$PORT
ping() { curl -s -m 10 -o /dev/null -w '%{http_code}' -X GET --data-binary '[]' "$U/status"; }
rk_start_standalone --interlink "127.0.0.1:$PORT" || bail_out "riklet did not start"
is "$(ping)" 200 "the ping answers before the slow clients"

# --- slowloris: 150 clients dripping headers and 150 dripping a body, for 45 s ----------------
/usr/bin/python3 "$(dirname "$0")/hostile_http_conns.py" 127.0.0.1 "$PORT" headers 150 45 >"$TEST_TMP/h.out" &
hp=$!
/usr/bin/python3 "$(dirname "$0")/hostile_http_conns.py" 127.0.0.1 "$PORT" body 150 45 >"$TEST_TMP/b.out" &
bp=$!
sleep 8
is "$(ping)" 503 "with 300 slow connections open, past the 256 cap: a new request gets 503 (the cap holds)"
wait "$hp" "$bp"
is "$(cat "$TEST_TMP/h.out")" "open=0 closed=150" "every client dripping headers was closed by the 30 s deadline"
is "$(cat "$TEST_TMP/b.out")" "open=0 closed=150" "every client dripping a body was closed by the 30 s deadline too"
is "$(ping)" 200 "the ping answers again"
ok "kill -0 $RK_PID" "riklet is up"

done_testing
