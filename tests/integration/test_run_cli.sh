# test_run_cli.sh — the command line: `riklet run FILE.json` in the foreground (the container's
# output on stdout, exit 0 when the container exits 0, non-zero when it fails, SIGINT destroys the
# instance); `riklet ps` as a table and as JSON; `riklet logs` of an unknown id; `riklet --help`
# names every subcommand; unknown flags and subcommand misuse fail with a clear message.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc timeout
rk_init

# --- no registry needed ----------------------------------------------------------------------
help=$("$RIKLET" --help 2>&1)
is "$?" 0 "riklet --help exits 0"
for sub in run ps logs cleanup test version; do
	like "$help" "riklet $sub( |$)" "--help shows the subcommand '$sub'"
done
like "$help" "--standalone" "--help shows --standalone"
like "$help" "--master-ip" "--help shows --master-ip"
for f in --state-dir --runc-root --insecure-registries --json --follow; do
	like "$help" "$f " "--help describes $f"
done
is "$("$RIKLET" run --help 2>&1)" "$help" "riklet run --help prints the same help"

out=$("$RIKLET" --no-such-flag 2>&1)
rc=$?
isnt "$rc" 0 "an unknown flag fails"
like "$out" "unknown option --no-such-flag" "and says which option is unknown: $out"
like "$out" "riklet --help" "and points to riklet --help"
out=$("$RIKLET" ps --bogus --state-dir "$STATE" 2>&1)
isnt "$?" 0 "an unknown flag after a subcommand fails"
like "$out" "unknown option --bogus" "and names it"
out=$("$RIKLET" ps --state-dir 2>&1)
isnt "$?" 0 "a flag without its value fails"
like "$out" "--state-dir needs a value" "and says so: $out"
out=$("$RIKLET" frobnicate --state-dir "$STATE" 2>&1)
isnt "$?" 0 "an unknown subcommand fails"
like "$out" "frobnicate" "and names it: $out"
out=$("$RIKLET" run 2>&1)
isnt "$?" 0 "riklet run without a file fails"
like "$out" "usage: riklet run FILE.json" "with its usage"
out=$("$RIKLET" run "${RK_OPTS[@]}" "$TEST_TMP/no-such.json" 2>&1)
isnt "$?" 0 "riklet run of a missing file fails"
like "$out" "no-such.json" "and names the file: $out"
like "$("$RIKLET" version)" '^riklet [0-9]' "riklet version prints the version"

# ps and logs on an empty state dir
out=$("$RIKLET" ps --json --state-dir "$STATE" 2>&1)
is "$?/$(jq -c .instances <<<"$out")" "0/[]" "ps --json with no instances lists none"
out=$("$RIKLET" logs no-such-id --state-dir "$STATE" 2>&1)
rc=$?
isnt "$rc" 0 "riklet logs of an unknown id fails"
like "$out" "no instance no-such-id" "and says there is no such instance: $out"
like "$out" "riklet ps" "and points to riklet ps"
out=$("$RIKLET" logs '../../etc/passwd' --state-dir "$STATE" 2>&1)
isnt "$?" 0 "riklet logs of a path fails"
like "$out" "not an instance id" "and says it is not an instance id"
unlike "$out" "root:" "without printing the file"
out=$("$RIKLET" logs --state-dir "$STATE" 2>&1)
isnt "$?" 0 "riklet logs without an id fails"
like "$out" "usage: riklet logs ID" "with its usage"

# --- riklet run ------------------------------------------------------------------------------
registry_start || bail_out "docker-registry did not start"
CMD='["sh","-c","trap '"'echo got TERM; exit 0'"' TERM INT; echo \"hello from busybox greeting=$GREETING\"; i=0; while [ $i -lt ${LINES_N:-0} ]; do echo line $i; i=$((i+1)); done; [ -z \"$EXIT_CODE\" ] || exit \"$EXIT_CODE\"; sleep 3600 & wait $!"]'
mkimage --cmd "$CMD" "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/busybox:latest" || bail_out "push failed"
IMAGE=$REGISTRY/busybox:latest
RUN_OPTS=("${RK_OPTS[@]}" --insecure-registries "$REGISTRY")

# pod FILE NAME K=V... — a one-container Pod manifest with env K=V
pod() {
	local file=$1 name=$2 env='[]' kv
	shift 2
	for kv in "$@"; do env=$(jq -c --arg n "${kv%%=*}" --arg v "${kv#*=}" '. + [{name: $n, value: $v}]' <<<"$env"); done
	jq -n --arg name "$name" --arg img "$IMAGE" --argjson env "$env" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null,
		  spec: {containers: [{name: "main", image: $img, env: $env, ports: null}], function: null}}' >"$file"
}

# A container that exits 0: its output on stdout, exit 0, nothing left.
pod "$TEST_TMP/once.json" once GREETING=run-once EXIT_CODE=0 LINES_N=200
timeout 90 "$RIKLET" run "$TEST_TMP/once.json" "${RUN_OPTS[@]}" >"$TEST_TMP/once.out" 2>"$TEST_TMP/once.err"
rc=$?
is "$rc" 0 "riklet run exits 0 when the container exits 0" || diag_file "$TEST_TMP/once.err" 20
like "$(head -n 1 "$TEST_TMP/once.out")" '^hello from busybox greeting=run-once$' "the container's output is on stdout, env applied"
is "$(grep -c '^line ' "$TEST_TMP/once.out")" 200 "all 200 lines of output reached stdout"
is "$(tail -n 1 "$TEST_TMP/once.out")" "line 199" "in order, up to the last one"
unlike "$(cat "$TEST_TMP/once.out")" 'RUNNING|TERMINATED|riklet:' "stdout carries only the container's output"
like "$(cat "$TEST_TMP/once.err")" 'RUNNING' "stderr tells the state changes"
is "$(rk_runc_ids)" "" "no runc container left after riklet run"
is "$(rk_mounts_under "$STATE")" "" "no mount left under the state dir"
is "$(ls -A "$STATE/instances")" "" "no instance directory left"

# ps after it: the record, as JSON and as a table.
json=$("$RIKLET" ps --json --state-dir "$STATE")
is "$(jq -r '.instances | length' <<<"$json")" 1 "ps --json lists the instance"
is "$(jq -r '.instances[0] | [.id, .name, .kind, .status] | join(" ")' <<<"$json")" "run-once once Pod TERMINATED" \
	"ps --json: id run-once, name, kind, status"
ok "jq -e '.instances[0].created_at | type == \"number\"' <<<'$json' >/dev/null" "ps --json has created_at"
table=$("$RIKLET" ps --state-dir "$STATE")
like "$(head -n 1 <<<"$table")" '^ID +NAME +KIND +STATUS +RESTARTS +AGE +REASON' "ps prints a table header"
like "$(sed -n 2p <<<"$table")" '^run-once +once +Pod +TERMINATED +0 +[0-9]+s ' "ps prints one row per instance"
is "$(jq -r '.instances[0].containers[0] | [.name, .state, .exit_code, .restart_count] | join(" ")' <<<"$json")" "main exited 0 0" \
	"ps --json: the container's name, state, exit code and restart count"

# A container that fails: riklet run exits non-zero and says why.
pod "$TEST_TMP/fails.json" fails GREETING=run-fails EXIT_CODE=3
timeout 90 "$RIKLET" run "$TEST_TMP/fails.json" "${RUN_OPTS[@]}" >"$TEST_TMP/fails.out" 2>"$TEST_TMP/fails.err"
rc=$?
is "$rc" 1 "riklet run exits 1 when the container exits 3"
like "$(cat "$TEST_TMP/fails.out")" 'greeting=run-fails' "its output is on stdout"
like "$(cat "$TEST_TMP/fails.err")" 'FAILED: .*code 3' "stderr says FAILED with code 3"
is "$(rk_runc_ids)" "" "no runc container left"

# An invalid workload: riklet run fails at once with the reason.
echo '{"apiVersion":"v1","kind":"Pod","name":"bad name","spec":{"containers":[]}}' >"$TEST_TMP/bad.json"
out=$(timeout 30 "$RIKLET" run "$TEST_TMP/bad.json" "${RUN_OPTS[@]}" 2>&1)
isnt "$?" 0 "riklet run of an invalid workload fails"
like "$out" 'name is "bad name"' "and says what is wrong"

# A long-running container, then SIGINT: the instance is destroyed.
pod "$TEST_TMP/long.json" long GREETING=run-long
"$RIKLET" run "$TEST_TMP/long.json" "${RUN_OPTS[@]}" >"$TEST_TMP/long.out" 2>"$TEST_TMP/long.err" &
RUN_PID=$!
RK_PIDS+=("$RUN_PID")
ok "wait_for 60 grep -q 'greeting=run-long' '$TEST_TMP/long.out'" "a long-running container's output streams to stdout" ||
	diag_file "$TEST_TMP/long.err" 20
ok "rk_runc_ids | grep -qx run-long_main" "runc lists its container while riklet run runs"
cpid=$(rk_runc_pid run-long_main)
kill -INT "$RUN_PID"
wait_for 30 bash -c "! kill -0 $RUN_PID 2>/dev/null"
ok "! kill -0 $RUN_PID 2>/dev/null" "riklet run ends after SIGINT"
wait "$RUN_PID"
rc=$?
is "$rc" 130 "riklet run exits 130 after SIGINT"
like "$(cat "$TEST_TMP/long.err")" 'interrupted: destroying' "stderr says it destroys the instance"
ok "grep -q 'got TERM' '$TEST_TMP/long.out'" "the container got SIGTERM (a graceful stop)"
is "$(rk_runc_ids)" "" "no runc container left after SIGINT"
nok "test -d /proc/$cpid && ! grep -q '^State:.*Z' /proc/$cpid/status" "the container's process is gone"
is "$(rk_mounts_under "$STATE")" "" "no mount left under the state dir"
is "$(ls -A "$STATE/instances")" "" "no instance directory left"
is "$("$RIKLET" ps --json --state-dir "$STATE" | jq -r '.instances[] | select(.id == "run-long") | .status')" TERMINATED \
	"ps says run-long is TERMINATED"

# logs of an ended instance whose directory is gone: a clear message, not a crash.
out=$("$RIKLET" logs run-long --state-dir "$STATE" 2>&1)
isnt "$?" 0 "riklet logs of a destroyed instance fails"
like "$out" "run-long was destroyed" "and says the instance was destroyed"
unlike "$out" 'stack traceback|attempt to' "riklet logs of a destroyed instance does not crash"

# One riklet per state dir: a second one is refused with a clear message.
"$RIKLET" run "$TEST_TMP/long.json" "${RUN_OPTS[@]}" >/dev/null 2>"$TEST_TMP/lock.err" &
RUN_PID=$!
RK_PIDS+=("$RUN_PID")
if wait_for 60 grep -q 'RUNNING' "$TEST_TMP/lock.err"; then
	out=$(timeout 30 "$RIKLET" run "$TEST_TMP/once.json" "${RUN_OPTS[@]}" 2>&1)
	isnt "$?" 0 "a second riklet on the same state dir fails"
	like "$out" "One riklet per state directory" "and says why"
else
	fail "riklet run did not reach RUNNING"
	diag_file "$TEST_TMP/lock.err"
fi
kill -TERM "$RUN_PID"
wait "$RUN_PID"
is "$?" 130 "riklet run stopped by SIGTERM exits 130 too"
is "$(rk_runc_ids)" "" "and destroys its instance"

done_testing
