#!/usr/bin/env bash
# test_log_json.sh — `--log-format json`: every line riklet writes to stderr is one JSON object
# {time, level, area, msg} (strict UTF-8, checked with jq and with Python's json), through a short
# standalone run at --log-level debug: a Pod (local OCI layout) created, RUNNING, destroyed, and
# hostile manifests whose bytes reach the log (a NUL, invalid UTF-8, quotes, newlines, terminal
# escapes, a 20 kB name). The daemon's own fatal errors (a bad flag, the state dir held by another
# riklet) are JSON lines too.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci jq busybox runc
rk_init
mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
IMG="oci:$TEST_TMP/layout:latest"

# every line of file $1 is one JSON object with the four fields, and the bytes are strict UTF-8
all_json() {
	local lines objs
	lines=$(grep -c '' "$1")
	objs=$(jq -c 'select(type == "object" and (.time | type) == "string" and (.level | IN("error", "warn", "info", "debug"))
		and (.area | type) == "string" and (.msg | type) == "string")' "$1" | grep -c '^{')
	((lines > 0 && lines == objs)) || { diag "$lines lines, $objs JSON log objects"; return 1; }
	/usr/bin/python3 -c '
import json, sys
for i, raw in enumerate(open(sys.argv[1], "rb"), 1):
    try:
        o = json.loads(raw.decode("utf-8"))
        assert set(o) <= {"time", "level", "area", "msg", "cut"}, sorted(o)
    except Exception as e:
        sys.exit("line %d: %r: %s" % (i, raw[:200], e))
' "$1"
}

pod() { jq -n --arg n "$1" --arg img "$IMG" '{apiVersion: "v1", kind: "Pod", name: $n,
	spec: {containers: [{name: "c", image: $img}]}}'; }
pod web >"$MANIFESTS/web.json"
# hostile: a NUL (escaped in the JSON text), invalid UTF-8 and control bytes in the name (FAILED:
# the reason quotes it), a broken manifest with raw invalid bytes, a file name that is not UTF-8
printf '{"apiVersion":"v1","kind":"Pod","name":"a\\u0000b\\"c\\n\x1b[31mred","spec":{"containers":[{"name":"c","image":"%s"}]}}' \
	"$IMG" >"$MANIFESTS/nul.json"
printf '{"apiVersion":"v1","kind":"Pod","name":"bad\xff\xfe\x01\x7f\xc3","spec":{}}' >"$MANIFESTS/badutf.json"
printf '{not json \xff\x00\x1b]0;title\x07' >"$MANIFESTS/broken.json"
printf '{}' >"$MANIFESTS/$(printf 'name-\xff\xfe\x1b[2J.json')"
jq -n --arg n "$(head -c 20000 /dev/zero | tr '\0' x)" --arg img "$IMG" '{apiVersion: "v1", kind: "Pod", name: $n,
	spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/long.json"

rk_start_standalone --log-format json || bail_out "riklet did not start"
ok "rk_wait_status 120 web RUNNING" "the Pod runs"
rm -f "$MANIFESTS/web.json"
ok "rk_wait_status 60 web TERMINATED" "and is destroyed when its manifest goes"
sleep 1
kill -HUP "$RK_PID" # the reload's lines too
sleep 1
rk_stop
cp "$RK_LOG" "$TEST_TMP/run.log"
n=$(grep -c '' "$TEST_TMP/run.log")
ok "((n > 20))" "the run logged ($n lines at debug)"
ok "all_json '$TEST_TMP/run.log'" "every line is one JSON object {time, level, area, msg}, strict UTF-8"
ok "jq -se 'any(.[]; .msg | test(\"riklet .* started\"))' '$TEST_TMP/run.log' >/dev/null" "the start line is among them"
ok "jq -se 'any(.[]; .msg | contains(\"\\ufffd\"))' '$TEST_TMP/run.log' >/dev/null" \
	"invalid UTF-8 that reached a message is shown as U+FFFD"
ok "! grep -qP '[\\x00-\\x09\\x0b-\\x1f\\x7f]' '$TEST_TMP/run.log'" "no raw control byte (NUL, ESC, BEL, DEL) in the log"
like "$(jq -r '.time' "$TEST_TMP/run.log" | head -1)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$' "time is RFC 3339 UTC"

# messages built to break a line: a NUL, invalid UTF-8, surrogates, quotes, newlines, and ones far
# longer than a line (cut on a UTF-8 sequence, after an escape)
cat >"$TEST_TMP/hostile.lua" <<'LUA'
local core = require "riklet.core"
core.log_setup("debug", true)
core.log("info", "t", "a NUL\0b, bad \255\254, cut \195, surrogate \237\160\128, \"q\" \\ nl\n cr\r esc\27[2J del\127 é€😀")
core.log("warn", "t\"\n\255", "area with a quote, a newline and a bad byte")
core.log("error", "t", string.rep("é", 5000))
core.log("error", "t", string.rep("\0", 3000))
core.log("error", "t", string.rep("x", 8100) .. string.rep("😀", 30))
core.log("error", "t", string.rep("\255", 9000))
core.log("info", "t", "after")
LUA
"$RIKLET" test "$TEST_TMP/hostile.lua" 2>"$TEST_TMP/hostile.log" >/dev/null
is "$(grep -c '' "$TEST_TMP/hostile.log")" 7 "seven messages: seven lines"
ok "all_json '$TEST_TMP/hostile.log'" "each a JSON object, strict UTF-8"
# what the first two lines must decode to, as JSON (a shell variable cannot hold a NUL)
cat >"$TEST_TMP/want.json" <<'JSON'
"a NUL\u0000b, bad \ufffd\ufffd, cut \ufffd, surrogate \ufffd\ufffd\ufffd, \"q\" \\ nl\n cr\r esc\u001b[2J del\u007f é€😀"
"t\"\n\ufffd"
JSON
decoded() { jq -se --slurpfile w "$TEST_TMP/want.json" "$1" "$TEST_TMP/hostile.log" >/dev/null; }
ok "decoded 'map(select(.msg | startswith(\"a NUL\"))) | .[0].msg == \$w[0]'" \
	"NUL, quotes, backslash and controls round-trip; each bad byte (a cut sequence, a surrogate) is U+FFFD"
ok "decoded 'map(select(.level == \"warn\")) | .[0].area == \$w[1]'" "the area is escaped the same way"
cuts=$(jq -c 'select(.cut) | [.level, (.msg | length)]' "$TEST_TMP/hostile.log" | paste -sd' ')
diag "cut: $cuts"
is "$(jq -c 'select(.cut) | .level' "$TEST_TMP/hostile.log" | grep -c error)" 4 \
	"the four messages longer than a line are cut and marked \"cut\": true"
ok "jq -se 'map(select(.cut) | .msg | length) | (.[0] > 4000 and .[1] > 1300 and .[2] > 8000 and .[3] > 1300)' '$TEST_TMP/hostile.log' >/dev/null" \
	"each keeps most of a line"
is "$(jq -r 'select(.msg == "after") | .level' "$TEST_TMP/hostile.log")" info "the line after them is intact"

# fatal errors of the daemon are JSON lines too
: >"$RK_LOG"
"$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" --log-format json --no-such-flag >>"$RK_LOG" 2>&1 </dev/null
isnt "$?" 0 "an unknown flag: riklet exits non-zero"
rk_start_standalone --log-format json || bail_out "riklet did not start again"
"$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" --log-format json >>"$RK_LOG" 2>&1 </dev/null
isnt "$?" 0 "a second riklet on the same state dir exits non-zero"
rk_stop
cp "$RK_LOG" "$TEST_TMP/fatal.log"
ok "all_json '$TEST_TMP/fatal.log'" "their error lines are JSON objects"
ok "jq -se 'any(.[]; .level == \"error\" and (.msg | test(\"no-such-flag\")))' '$TEST_TMP/fatal.log' >/dev/null" \
	"the unknown flag's error names it"
ok "jq -se 'any(.[]; .level == \"error\" and (.msg | test(\"One riklet per state directory\")))' '$TEST_TMP/fatal.log' >/dev/null" \
	"the held state dir's error says what to do"
done_testing
