#!/usr/bin/env bash
# bench_sched.sh [RIKLET] — scheduler front-end numbers against tests/sched/scheduler.py:
#   latency from an instruction sent to CREATING received (riklet --scheduler, N instructions),
#   status updates per second over one connection, CPU time per node metrics sample, and the
#   status resend: riklet holding BENCH_RESEND_N (default 1000) instances when the scheduler ends
#   its stream: time from the new registration to the last status re-sent, statuses per second
#   on the one stream (as the scheduler receives them).
#   BENCH_RESEND_VARIANTS="LABEL [VAR=VALUE...]|...": then BENCH_RESEND_ROUNDS (default 2) rounds of
#   one restart of riklet per variant with that environment (e.g. "default|jit56
#   RIKLET_LUA_JIT=hotloop=56,hotexit=10"), each followed by the same resend, timed the same way
#   (interleaved: the ratios at one load), with riklet's CPU time from its start to the resend's end.
# Prints a table. Needs root (riklet's agent), jq, curl, /usr/bin/python3 with grpcio, protoc.
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd jq curl protoc
need_py grpc google.protobuf
rk_init
N=${BENCH_CREATE_N:-50}

port=$(free_port)
"$PYTHON" "$RIKLET_SRC_DIR/tests/sched/scheduler.py" --port "$port" --port-file "$TEST_TMP/p.json" \
	--events "$TEST_TMP/ev.jsonl" >"$TEST_TMP/sched.log" 2>&1 &
spid=$!
on_exit "kill -9 $spid"
wait_for 20 test -s "$TEST_TMP/p.json" || bail_out "scheduler.py did not start"
control=http://127.0.0.1:$(jq -r .control "$TEST_TMP/p.json")

inproc=$(SCHED_URL=http://127.0.0.1:$port "$RIKLET" test "$RIKLET_SRC_DIR/tests/bench/bench_sched_inproc.lua" 2>>"$TEST_TMP/bench.err")

# (--keep-records: a restart keeps every FAILED instance of the resend part, BENCH_RESEND_VARIANTS)
start_sched_riklet() { # [VAR=VALUE...]
	env "$@" "$RIKLET" --scheduler "http://127.0.0.1:$port" --hostname bench-node "${RK_OPTS[@]}" --log-level warn \
		--keep-records $((${BENCH_RESEND_N:-1000} + N + 100)) >>"$RK_LOG" 2>&1 </dev/null &
	RK_PID=$!
	RK_PIDS+=("$RK_PID")
}
start_sched_riklet
wait_for 20 bash -c "curl -sf '$control/state' | jq -e '.workers[\"bench-node\"].open' >/dev/null" || bail_out "riklet did not register"
# kind Bench fails admission at once: the path measured is gRPC in -> agent -> CREATING out
lat_load=$(cut -d' ' -f1 /proc/loadavg)
def='{"apiVersion":"v1","kind":"Bench","name":"b","replicas":null,"spec":{"containers":[],"function":null}}'
for i in $(seq 1 "$N"); do
	curl -sf -X POST -d "$(jq -cn --arg id "b-$i" --arg d "$def" '{instance_id: $id, definition: $d, action: "CREATE"}')" "$control/instruct" >/dev/null
	wait_for 5 grep -q "\"instance_id\": \"b-$i\", \"status\": \"CREATING\"" "$TEST_TMP/ev.jsonl" || echo "b-$i: no CREATING" >&2
done
# both times are the scheduler's: when it handed the instruction to the stream, when CREATING arrived
lat=($(jq -s -r '(map(select(.kind == "sent")) | map({key: .instance_id, value: .t}) | from_entries) as $sent
	| map(select(.kind == "instance" and .status == "CREATING" and $sent[.instance_id] != null))
	| group_by(.instance_id) | map(.[0]) | .[] | ((.t - $sent[.instance_id]) * 1000)' "$TEST_TMP/ev.jsonl"))
if ((${#lat[@]} == 0)); then
	echo "no CREATING arrived; scheduler events and riklet log follow" >&2
	grep -v '"identifier": "bench"' "$TEST_TMP/ev.jsonl" | tail -n 5 >&2
	tail -n 20 "$RK_LOG" >&2
	exit 1
fi
lat_load="$lat_load-$(cut -d' ' -f1 /proc/loadavg)"
# the status resend: RESEND_N more instances (kind Bench: FAILED at once, each with its record),
# then the scheduler ends the Register stream; riklet registers again and re-sends every status
RESEND_N=${BENCH_RESEND_N:-1000}
for ((i = 1; i <= RESEND_N; i += 200)); do
	jq -cn --arg d "$def" --argjson a "$i" --argjson b "$((i + 199 < RESEND_N ? i + 199 : RESEND_N))" \
		'{batch: [range($a; $b + 1) | {instance_id: "r-\(.)", definition: $d, action: "CREATE"}]}' |
		curl -sf -X POST --data-binary @- "$control/instruct" >/dev/null || bail_out "instruct failed"
done
failed_n() { grep -c '"instance_id": "r-[0-9]*", "status": "FAILED"' "$TEST_TMP/ev.jsonl"; }
wait_for 600 bash -c "(( \$(grep -c '\"instance_id\": \"r-[0-9]*\", \"status\": \"FAILED\"' '$TEST_TMP/ev.jsonl') >= $RESEND_N ))" ||
	bail_out "only $(failed_n) of $RESEND_N instances FAILED"
# resend_once: the scheduler ends the stream; prints "MS<TAB>PER_S<TAB>COUNT" of the resend
resend_once() {
	local seq0
	seq0=$(jq -s 'map(.seq) | max' "$TEST_TMP/ev.jsonl")
	curl -sf -X POST -d '{"mode": "end"}' "$control/misbehave" >/dev/null || bail_out "misbehave failed"
	# (re-sent: every instance riklet holds, the N of the latency part too)
	wait_for 120 bash -c "(( \$(jq -s --argjson s $seq0 '[.[] | select(.seq > \$s and .kind == \"instance\")] | length' '$TEST_TMP/ev.jsonl') >= $((RESEND_N + N)) ))" ||
		bail_out "only $(jq -s --argjson s "$seq0" '[.[] | select(.seq > $s and .kind == "instance")] | length' "$TEST_TMP/ev.jsonl") statuses re-sent of $((RESEND_N + N))"
	jq -s -r --argjson s "$seq0" '[.[] | select(.seq > $s)] as $e
		| ($e | map(select(.kind == "register")) | .[0].t) as $reg
		| ($e | map(select(.kind == "instance"))) as $st
		| [($st | last | .t) - $reg, ($st | length) / (($st | last | .t) - ($st | first | .t)), ($st | length)]
		| "\(.[0] * 1000)\t\(.[1])\t\(.[2])"' "$TEST_TMP/ev.jsonl"
}
resend_load=$(cut -d' ' -f1 /proc/loadavg)
resend=$(resend_once)
resend_load="$resend_load-$(cut -d' ' -f1 /proc/loadavg)"
VROWS=()
if [[ -n ${BENCH_RESEND_VARIANTS:-} ]]; then
	IFS='|' read -r -a variants <<<"$BENCH_RESEND_VARIANTS"
	for ((round = 1; round <= ${BENCH_RESEND_ROUNDS:-2}; round++)); do
		for v in "${variants[@]}"; do
			read -r -a words <<<"$v"
			kill -TERM "$RK_PID" && wait "$RK_PID" 2>/dev/null
			reg0=$(jq -s '[.[] | select(.kind == "register")] | length' "$TEST_TMP/ev.jsonl")
			start_sched_riklet "${words[@]:1}"
			# registered again, and every status of its start sent, then the resend as above
			wait_for 60 bash -c "(( \$(jq -s '[.[] | select(.kind == \"register\")] | length' '$TEST_TMP/ev.jsonl') > $reg0 ))" ||
				bail_out "riklet (${words[0]}) did not register again"
			sleep 3
			r=$(resend_once)
			cpu=$(awk '{ printf "%.0f", ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"' }' "/proc/$RK_PID/stat")
			VROWS+=("$(printf '%s\t%s\t%s\t%s\t%s' "${words[0]}" "$round" "$r" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)")")
		done
	done
fi

stats=$(printf '%s\n' "${lat[@]}" | sort -g | awk '{a[NR]=$1; s+=$1} END {printf "%.2f\t%.2f\t%.2f", a[int((NR+1)/2)], a[int(NR*0.95+0.5)], s/NR}')

printf '%s, %s UTC, load %s\n' "$("$RIKLET" version 2>/dev/null | head -n 1)" "$(date -u +%Y-%m-%dT%H:%M)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %14s %s\n' "benchmark" "value" "unit"
printf '%-44s %14s %s\n' "instruction -> CREATING, median (n=$N)" "$(cut -f1 <<<"$stats")" ms
printf '%-44s %14s %s\n' "instruction -> CREATING, p95" "$(cut -f2 <<<"$stats")" ms
printf '%-44s %14s %s\n' "instruction -> CREATING, mean" "$(cut -f3 <<<"$stats")" "ms (load $lat_load)"
printf '%-44s %14.1f %s\n' "resend: registered -> last of $(cut -f3 <<<"$resend") statuses" "$(cut -f1 <<<"$resend")" ms
printf '%-44s %14.0f %s\n' "resend: statuses/s on the one stream" "$(cut -f2 <<<"$resend")" "msg/s (load $resend_load)"
while IFS=$'\t' read -r name v unit; do
	[[ -n $name ]] && printf '%-44s %14s %s\n' "$name" "$v" "$unit"
done <<<"$inproc"
if ((${#VROWS[@]})); then
	printf '\nresend per variant (a restart each, then the stream ended; %s rounds):\n' "${BENCH_RESEND_ROUNDS:-2}"
	printf '%-10s %5s %12s %12s %8s %14s %6s\n' variant round "resend ms" "statuses/s" count "CPU since ms" load
	for row in "${VROWS[@]}"; do
		IFS=$'\t' read -r v rd ms_ ps n cpu ld <<<"$row"
		printf '%-10s %5s %12.1f %12.0f %8s %14s %6s\n' "$v" "$rd" "$ms_" "$ps" "$n" "$cpu" "$ld"
	done
fi
printf '# latency: scheduler hands InstanceScheduling to its stream -> scheduler receives CREATING (includes grpcio'"'"'s own overhead)\n'
