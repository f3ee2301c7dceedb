# test_instance_metrics.sh — per-instance usage from each Pod's cgroups in `riklet ps --json` and
# `riklet top --once`: a Pod that burns CPU, holds 24 MB in a tmpfs, runs 3 processes in one
# container and gets OOM-killed in the other (whose limit is 16 MiB) shows CPU seconds, memory
# (at least the tmpfs), its peak, the sum of both limits, pids and the OOM kills, each checked
# against what the kernel's own cgroup files say; an ended Pod has no metrics. The CLI readers
# (ps, top, logs, images, metrics) change nothing in the state dir, not even a temp file that looks
# left by a killed riklet, while the agent runs.
#
# The hog's memory eaters run with oom_score_adj 1000, its sh (the container's init) with 0: the
# kernel's OOM killer then takes an eater, never the init. Without it, the kernel sometimes killed
# the init (after the killed tail, the next OOM of head's pipe write found sh the biggest task
# left), the hog container ended, and the Pod (restart policy Never) was rightly FAILED.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd docker-registry umoci skopeo jq
rk_init
rk_registry_image '["sh","-c","sleep 3600"]'
# --keep-records 1: the records of ended Pods are removed soon (the churn at the end reads them going)
rk_start_standalone --insecure-registries "$REGISTRY" --keep-records 1 || bail_out "riklet did not start"

jq -n --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: "busy", spec: {containers: [
	{name: "main", image: $img, command: ["/bin/sh", "-c"],
	 args: ["head -c 24000000 /dev/zero >/scratch/f; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo burnt; sleep 3600 & sleep 3600 & wait"],
	 volumeMounts: [{mountPath: "/scratch", type: "tmpfs"}],
	 resources: {limits: {memory: "64Mi"}}},
	{name: "hog", image: $img, command: ["/bin/sh", "-c"],
	 args: ["while true; do (echo 1000 >/proc/self/oom_score_adj && head -c 60000000 /dev/zero | tail >/dev/null); sleep 1; done 2>/dev/null"],
	 resources: {limits: {memory: "16Mi"}}}]}}' >"$MANIFESTS/busy.json"

# On a failure, riklet's own view: the next failure explains itself.
finished=
explain() {
	((RK_TAP_FAILED)) || [[ -z $finished ]] || return 0
	echo "# --- riklet's view after the failure"
	"$RIKLET" ps --state-dir "$STATE" 2>&1 | sed 's/^/#   /'
	rk_ps_json | jq -c '.instances[] | {id, status, reason, containers: [.containers[] | {name, state, exit_code, signal, restart_count, reason}]}' 2>&1 | sed 's/^/#   /'
	echo "# --- riklet's log (info and above, last 30 lines)"
	grep -v ' debug ' "$RK_LOG" | tail -n 30 | sed 's/^/#   /'
	echo "# --- the kernel's OOM kills in busy's cgroups"
	dmesg 2>/dev/null | grep -E 'Killed process|oom-kill:' | grep -F busy_ | tail -n 10 | sed 's/^/#   /'
}
on_exit explain

rk_wait_status 120 busy RUNNING || bail_out "busy is not RUNNING: $(rk_reason busy)"
m() { rk_ps_json | jq -r --arg id busy ".instances[] | select(.id == \$id) | $1"; }
burnt() { "$RIKLET" logs busy main --state-dir "$STATE" 2>/dev/null | grep -q burnt; }
ok "wait_for 120 burnt" "the main container has burnt its CPU"
oomed() { (($(m '.containers[] | select(.name == "hog") | .metrics.oom_kills // 0') >= 1)); }
ok "wait_for 60 oomed" "ps --json: the hog container's oom_kills counts its OOM kill ($(m '.containers[1].metrics.oom_kills'))"
is "$(m '.status') $(m '.containers[] | select(.name == "hog") | "\(.state) \(.restart_count)"')" "RUNNING running 0" \
	"the OOM killer took an eater, not the hog's init: busy is still RUNNING, hog running, never restarted"

json=$(rk_ps_json)
diag "$(jq -c '.instances[] | select(.id == "busy") | .metrics' <<<"$json")"
get() { jq -r --arg id busy ".instances[] | select(.id == \$id) | $1" <<<"$json"; }
ok "(( $(get '.metrics.cpu_seconds * 1000 | floor') >= 100 ))" "cpu_seconds counts the busy loop ($(get .metrics.cpu_seconds) s)"
ok "(( $(get '.metrics.memory_bytes') >= 24000000 ))" "memory_bytes holds at least the 24 MB tmpfs file ($(get .metrics.memory_bytes))"
ok "(( $(get '.metrics.memory_peak_bytes') >= $(get '.metrics.memory_bytes') ))" "memory_peak_bytes >= memory_bytes"
is "$(get '.metrics.memory_limit_bytes')" $((64 * 1048576 + 16 * 1048576)) "memory_limit_bytes: the two limits summed"
is "$(get '.containers[0].metrics.memory_limit_bytes')" $((64 * 1048576)) "per container: main's limit"
ok "(( $(get '.containers[0].metrics.pids') == 3 ))" "main runs 3 processes (sh and two sleeps): pids $(get '.containers[0].metrics.pids')"
ok "(( $(get '.metrics.oom_kills') >= 1 ))" "the Pod's oom_kills sums its containers'"

# the kernel's own numbers for main (v1 controllers, or v2)
pid=$(cat "$STATE/instances/busy/main/init.pid")
cg_of() { awk -F: -v c="$1" '$2 == c { print $3 }' "/proc/$pid/cgroup"; }
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
	lim=$(cat "/sys/fs/cgroup$(cg_of "")/memory.max") pids=$(cat "/sys/fs/cgroup$(cg_of "")/pids.current")
else
	lim=$(cat "/sys/fs/cgroup/memory$(cg_of memory)/memory.limit_in_bytes")
	pids=$(cat "/sys/fs/cgroup/pids$(cg_of pids)/pids.current")
fi
is "$lim" $((64 * 1048576)) "the kernel's memory limit for main is the one reported"
is "$pids" "$(get '.containers[0].metrics.pids')" "the kernel's pids.current for main is the one reported"
cgname=$(basename "$(cg_of memory)$( [[ -z $(cg_of memory) ]] && cg_of "")")
ok "rk_runc_ids | grep -qxF '$cgname'" "the cgroup measured ($cgname) is named after a runc container of this riklet"

# riklet top --once
out=$("$RIKLET" top --once --state-dir "$STATE" 2>&1)
diag "$out"
like "$out" $'\nbusy +busy +[0-9.]+ +[0-9.]+[KMG] +[0-9.]+[KMG] +80\\.0M +[0-9]+ +[1-9][0-9]* +0 +[0-9]+[smhd]' \
	"riklet top --once: busy with CPU %, memory, peak, limit 80.0M, pids, OOM kills, restarts, age"
like "$(head -n1 <<<"$out")" "^ID +NAME +CPU% +MEM +PEAK +LIMIT +PIDS +OOM +RESTARTS +AGE$" "with a header"

# The CLI readers change nothing in the state dir while the agent runs, not even a temp file that
# looks left by a killed riklet (only the agent removes those, at its start: a reader in another pid
# namespace would take a live agent's write for a dead one). The agent is stopped (SIGSTOP: alive,
# writing nothing) and the workloads are silent, so any change is a reader's.
dead=$(sh -c 'echo $$')
echo '{"partial": ' >"$STATE/records/busy.json.7.tmp.$dead"
echo '{"partial": ' >"$STATE/agent.json.7.tmp.$dead"
snapshot() {
	find "$STATE" -xdev -printf '%P %y %i %s %m %T@\n' | LC_ALL=C sort
	find "$STATE" -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
}
kill -STOP "$RK_PID"
on_exit "kill -CONT $RK_PID"
before=$(snapshot)
readers=("ps" "ps --json" "top --once" "logs busy main" "logs busy hog" "logs nosuch main" "images" "images --json" "metrics")
for r in "${readers[@]}"; do
	# shellcheck disable=SC2086 # each reader is a command line
	timeout 30 "$RIKLET" $r --state-dir "$STATE" >"$TEST_TMP/reader.out" 2>&1
	rc=$?
	((rc != 124)) || diag "riklet $r did not finish in 30 s"
done
after=$(snapshot)
kill -CONT "$RK_PID"
is "$(diff <(echo "$before") <(echo "$after"))" "" \
	"the readers (ps, top, logs, images, metrics) changed nothing in the state dir: no file created, removed or rewritten"
ok "[[ -f '$STATE/records/busy.json.7.tmp.$dead' && -f '$STATE/agent.json.7.tmp.$dead' ]]" \
	"the stale-looking temp files are still there (no reader removes anything)"
like "$("$RIKLET" ps --state-dir "$STATE" 2>&1)" "busy +busy +Pod +RUNNING" "and ps still reads busy's record as RUNNING beside them"

# an ended Pod has no metrics (nothing runs to measure)
rm -f "$MANIFESTS/busy.json"
rk_wait_status 60 busy TERMINATED FAILED
is "$(m '.metrics // "none"')" none "once destroyed, busy has no metrics"
like "$("$RIKLET" top --once --state-dir "$STATE")" "no running instances" "and top shows no running instance"

# Churn: Pods created and destroyed one after another (their cgroups appear and vanish, their
# records are rewritten, then removed) while top and ps read in a loop. Every read succeeds, says
# nothing on stderr, and never shows an instance as UNKNOWN (a record caught mid-rewrite or
# removed between the listing and the read is no bad record).
touch "$TEST_TMP/reading"
reader() { # reader N CMD...: run CMD until the churn ends; one line per run in reads.N: rc, stderr
	local n=$1 i=0
	shift
	while [[ -e $TEST_TMP/reading ]]; do
		i=$((i + 1))
		"$RIKLET" "$@" --state-dir "$STATE" >"$TEST_TMP/out.$n" 2>"$TEST_TMP/err.$n"
		echo "rc=$? stderr=$(head -c 300 "$TEST_TMP/err.$n" | tr '\n' ' ')" >>"$TEST_TMP/reads.$n"
		if [[ $1 == ps && $2 == --json ]]; then
			jq -e '[.instances[] | select(.status == "UNKNOWN")] | length == 0' "$TEST_TMP/out.$n" >/dev/null 2>&1 ||
				echo "bad ps --json: $(head -c 600 "$TEST_TMP/out.$n")" >>"$TEST_TMP/reads.$n"
		fi
	done
}
reader 1 top --once &
r1=$!
reader 2 ps --json &
r2=$!
reader 3 ps &
r3=$!
on_exit "rm -f '$TEST_TMP/reading'; wait $r1 $r2 $r3"
cycles=0
for i in 1 2 3 4; do
	jq -n --arg img "$IMAGE" --arg n "churn$i" '{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [
		{name: "a", image: $img, command: ["/bin/sh", "-c", "trap \"exit 0\" TERM; sleep 3600 & wait"]},
		{name: "b", image: $img, command: ["/bin/sh", "-c", "trap \"exit 0\" TERM; sleep 3600 & wait"]}]}}' \
		>"$MANIFESTS/churn$i.json"
	rk_wait_status 60 "churn$i" RUNNING || break
	sleep 1
	rm -f "$MANIFESTS/churn$i.json"
	rk_wait_status 60 "churn$i" TERMINATED FAILED || break
	cycles=$i
done
rm -f "$TEST_TMP/reading"
wait "$r1" "$r2" "$r3"
is "$cycles" 4 "churn: 4 Pods created and destroyed one after another"
bad=$(cat "$TEST_TMP"/reads.* | grep -v '^rc=0 stderr=$')
is "$bad" "" "churn: every top --once, ps --json, ps ran cleanly ($(cat "$TEST_TMP"/reads.* | wc -l) reads): exit 0, nothing on stderr, no UNKNOWN"
ok "(( $(wc -l <"$TEST_TMP/reads.1") >= 3 ))" "churn: top --once read $(wc -l <"$TEST_TMP/reads.1") times meanwhile"
finished=1

done_testing
