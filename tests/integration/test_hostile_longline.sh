# test_hostile_longline.sh (hostile) — a container writing one 10 MB line (no newline until its
# end) under real conmon, which cuts it into 8 KiB parts: `riklet logs --follow` and `riklet logs`
# give the line whole and in order, while the follower's peak RSS stays far below the line's
# size (it held the whole line before: crilog's joiner). --network none.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init

N=10000000
mkimage "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
jq -n --arg img "oci:$TEST_TMP/layout:latest" --arg n "$N" \
	'{apiVersion: "v1", kind: "Pod", name: "long", spec: {containers: [{name: "c", image: $img,
	  command: ["sh", "-c", ("echo before; head -c " + $n + " /dev/zero | tr \"\\\\0\" a; echo; echo after; sleep 3600")]}]}}' \
	>"$TEST_TMP/long.json"
rk_start_standalone --log-size-max 104857600 || bail_out "riklet did not start"
mv "$TEST_TMP/long.json" "$MANIFESTS/long.json"
rk_wait_status 60 long RUNNING
is "$(rk_status long)" RUNNING "the Pod writing a 10 MB line runs" || diag_file "$RK_LOG" 20
# the follower starts as the line is being written (what is there, then what comes)
"$RIKLET" logs long --follow --state-dir "$STATE" >"$TEST_TMP/followed" 2>"$TEST_TMP/follow.err" &
FPID=$!
written() { grep -q ' stdout F after$' "$STATE"/instances/long/c/logs/0.log 2>/dev/null; }
ok "wait_for 90 written" "conmon wrote the line (in $(grep -c ' P ' "$STATE"/instances/long/c/logs/0.log 2>/dev/null) parts) and the next"
got_all() { [[ $(tail -c 6 "$TEST_TMP/followed" 2>/dev/null) == after ]]; }
ok "wait_for 60 got_all" "riklet logs --follow printed up to the line after it" || { diag_file "$TEST_TMP/follow.err"; diag "followed: $(wc -c <"$TEST_TMP/followed") bytes, ends with: $(tail -c 20 "$TEST_TMP/followed" | od -c | head -3)"; }
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$FPID/status" 2>/dev/null)
kill "$FPID" 2>/dev/null
wait "$FPID" 2>/dev/null
expect=$(printf 'before\n%s\nafter\n' "$(head -c $N /dev/zero | tr '\0' a)" | md5sum)
is "$(md5sum <"$TEST_TMP/followed")" "$expect" "--follow: before, the 10 MB line whole and in order, after"
ok "((${hwm:-999999} < 24 * 1024))" \
	"the follower's peak RSS stays far below the line: ${hwm:-?} KiB (< 24 MiB; it held the line whole before)"
is "$("$RIKLET" logs long --state-dir "$STATE" | md5sum)" "$expect" "riklet logs (not followed) gives the same bytes"
rm -f "$MANIFESTS/long.json"
rk_wait_status 60 long TERMINATED
rk_stop
done_testing
