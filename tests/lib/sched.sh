# sched.sh — the test scheduler peer (tests/sched/scheduler.py, run with Debian's python3) for the
# integration tests. Source it after common.sh; it sets, unless the test already has:
#   SCHED_PORT (a free loopback port), EVENTS (the peer's JSON-lines event log), SCHED_LOG.
#   sched_start [scheduler.py FLAG...]   start a peer on SCHED_PORT (each start its own port file);
#                                        sets SCHED_PID and CONTROL (its HTTP control URL); killed at exit
#   sched_kill                           kill -9 the peer started last and reap it
: "${SCHED_PORT:=$(free_port)}"
: "${EVENTS:=$TEST_TMP/events.jsonl}"
: "${SCHED_LOG:=$TEST_TMP/scheduler.log}"
SCHED_N=0
sched_start() {
	SCHED_N=$((SCHED_N + 1))
	local pf=$TEST_TMP/sched.$SCHED_N.json
	"$PYTHON" "$RIKLET_SRC_DIR/tests/sched/scheduler.py" --port "$SCHED_PORT" --port-file "$pf" \
		--events "$EVENTS" "$@" >>"$SCHED_LOG" 2>&1 </dev/null &
	SCHED_PID=$!
	on_exit "kill -9 $SCHED_PID"
	wait_for 20 test -s "$pf" || { diag_file "$SCHED_LOG"; return 1; }
	CONTROL=http://127.0.0.1:$(jq -r .control "$pf")
}
sched_kill() { kill -9 "$SCHED_PID" 2>/dev/null; wait "$SCHED_PID" 2>/dev/null; }
