# test_lifecycle.sh — restart policy, per-container state and grace periods with real Pods
# (registry, skopeo, umoci, overlayfs, runc) through `riklet --standalone`:
# - OnFailure with a container that exits 1: restart_count grows in `ps --json`, the restarts
#   back off (1 s, 2 s, 4 s), the instance stays RUNNING; Always restarts a container that exits 0;
#   Never (RIK's default) goes FAILED with the exit code;
# - per-container exit code and state in `ps --json` for a two-container Pod;
# - a Pod whose container traps SIGTERM and needs 4 s gets them with a grace period of 8 s (above
#   --stop-grace 3), one with a grace period of 1 s is killed after 1 s; a destroy in progress
#   when riklet is killed -9 is finished by the next riklet; a destroy whose clean-up failed (a
#   mount in the Pod's directory) is tried again while riklet runs once the mount is gone.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq busybox runc
rk_init

# One image: exits with $EXIT_CODE when set, else idles; on SIGTERM it says "got TERM", takes
# $TERM_DELAY seconds (default 0), waits until the file $TERM_UNTIL exists (when set), says "bye"
# and exits 0. The test checks times on riklet's clock (its log, ms) and the container's (conmon's
# timestamps): under load (a busy CI machine) only the steps measured stretch, not the measure.
SCRIPT='trap '"'"'echo got TERM; sleep ${TERM_DELAY:-0}; while [ -n "$TERM_UNTIL" ] && [ ! -e "$TERM_UNTIL" ]; do sleep 0.1; done; echo bye; exit 0'"'"' TERM
echo started; [ -z "$EXIT_CODE" ] || exit "$EXIT_CODE"; sleep 3600 & wait $!; sleep 3600 & wait $!'
rk_registry_image "$(jq -nc --arg s "$SCRIPT" '["sh", "-c", $s]')"

# manifest FILE NAME SPEC_JSON CONTAINER[:K=V[,K=V...]]... — SPEC_JSON is merged into spec
manifest() {
	local file=$1 name=$2 spec=$3 cs='[]' c cname envs
	shift 3
	for c in "$@"; do
		cname=${c%%:*}
		envs=
		[[ $c == *:* ]] && envs=${c#*:}
		cs=$(jq -c --arg n "$cname" --arg img "$IMAGE" --arg envs "$envs" \
			'. + [{name: $n, image: $img, ports: null,
			       env: ($envs | if . == "" then null else split(",") | map(split("=") | {name: .[0], value: .[1]}) end)}]' <<<"$cs")
	done
	jq -n --arg name "$name" --argjson cs "$cs" --argjson spec "$spec" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null, spec: ({containers: $cs, function: null} + $spec)}' \
		>"$MANIFESTS/$file.tmp" && mv "$MANIFESTS/$file.tmp" "$MANIFESTS/$file"
}
ctr() { rk_ps_json | jq -r --arg id "$1" --arg c "$2" ".instances[] | select(.id == \$id) | .containers[] | select(.name == \$c) | $3"; }
restarts() { ctr "$1" main .restart_count; }
restarts_at_least() { local n; n=$(restarts "$1"); [[ $n =~ ^[0-9]+$ ]] && ((n >= $2)); }
now() { printf '%s\n' "${EPOCHREALTIME}"; }
# log_t TEXT: the time (epoch s) of riklet's first log line holding TEXT; cri_t FILE TEXT: of the
# first CRI log line (conmon's timestamp) whose text is TEXT
log_t() { local l; l=$(grep -m1 -F -- "$1" "$RK_LOG") && date -d "${l%% *}" +%s.%N; }
cri_t() { local l; l=$(grep -m1 -E -- " std(out|err) F $2\$" "$1") && date -d "${l%% *}" +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
within() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v != "" && v >= lo && v < hi) }'; }

# An operator restart policy over the default: crashloop restarts 4 s after each exit.
POLICIES=$TEST_TMP/policies
mkdir -p "$POLICIES"
cat >"$POLICIES/restart.lua" <<'EOF'
return { decide = function(w, exit)
  local d = base.decide(w, exit)
  if w.name == "crashloop" and d.action == "restart" then d.delay = 4 end
  return d
end }
EOF
RK_OPTS+=(--policy-dir "$POLICIES")

rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not start"

# --- restart policies ------------------------------------------------------------------------
manifest onfail.json onfail '{"restartPolicy": "OnFailure"}' main:EXIT_CODE=1
manifest always.json always '{"restartPolicy": "Always"}' main:EXIT_CODE=0
manifest never.json never '{}' main:EXIT_CODE=1
manifest pair.json pair '{}' idle b:EXIT_CODE=3

# onfail: note when restart_count changes, up to 3 restarts
declare -a seen_at=()
last=0
deadline=$(($(date +%s) + 60))
while ((${#seen_at[@]} < 3 && $(date +%s) < deadline)); do
	n=$(restarts onfail)
	if [[ $n =~ ^[0-9]+$ ]] && ((n > last)); then
		for ((k = last; k < n; k++)); do seen_at+=("$(now)"); done
		last=$n
	fi
	sleep 0.1
done
is "${#seen_at[@]}" 3 "OnFailure, a container exiting 1: restart_count reaches 3" ||
	diag "ps: $(rk_ps_json | jq -c '.instances[] | select(.id == "onfail")')"
# the back-off doubles: riklet schedules 1, 2, 4 s, and waits each out (from the exit it saw to
# the restart, on its own clock: late by at most its slowest loop turn and 1 s, whatever the load)
lag=$(rk_ps_json | jq -r '.agent.loop.lag_max_ms // 0')
late_max=$(awk -v l="$lag" 'BEGIN { printf "%.2f", 1 + l / 1000 }')
for k in 1 2 3; do
	d=$((1 << (k - 1)))
	t_exit=$(log_t "instance onfail: container main exited with code 1: restarting it in $d s (restart $k)")
	t_wake=$(log_t "instance onfail: container main: its $d s back-off is over: restarting it (restart $k)")
	waited=$( [[ -n $t_exit && -n $t_wake ]] && secs "$t_exit" "$t_wake")
	ok "within '$waited' $d $(awk -v d=$d -v m="$late_max" 'BEGIN { print d + m }')" \
		"restart $k comes after a back-off of $d s (waited ${waited:-?} s; at most $late_max s late)"
done
is "$(rk_status onfail)" RUNNING "OnFailure: the instance stays RUNNING while it restarts"
like "$(rk_reason onfail)" 'container main (exited with code 1; restart [0-9]+ in [0-9.]+ s|restarted)' \
	"its reported message says what happened: $(rk_reason onfail)"
like "$(ctr onfail main .state)" '^(running|waiting)$' "ps --json: main is running or waiting to restart"
like "$("$RIKLET" ps --state-dir "$STATE" | awk '$1 == "onfail" { print $5 }')" '^[1-9][0-9]*$' "riklet ps shows the restarts"

ok "wait_for 20 restarts_at_least always 2" "Always, a container exiting 0: restarted (restart_count >= 2)"
is "$(rk_status always)" RUNNING "Always: the instance stays RUNNING"

rk_wait_status 60 never FAILED
is "$(rk_status never)" FAILED "Never (the default): a container exiting 1 makes the instance FAILED"
is "$(rk_reason never)" "container main exited with code 1" "with the exit code in the reason"
is "$(restarts never)" 0 "and no restart"
is "$(ctr never main '[.state, .exit_code] | join(" ")')" "exited 1" "ps --json: main exited with code 1"
like "$(ctr never main .finished_at)" '^[0-9]+' "ps --json: main has a finished_at"

rk_wait_status 60 pair FAILED
is "$(rk_reason pair)" "container b exited with code 3" "two containers, b exits 3: FAILED naming b"
is "$(ctr pair b '[.state, .exit_code] | join(" ")')" "exited 3" "ps --json: b exited with code 3"
is "$(ctr pair idle .exit_code)" null "ps --json: idle, stopped by riklet, has no exit code of its own"
like "$(ctr pair idle .started_at)" '^[0-9]+' "ps --json: idle has a started_at"

rm -f -- "$MANIFESTS"/{onfail,always,never,pair}.json
for id in onfail always never pair; do
	rk_wait_status 30 "$id" TERMINATED
	ok "rk_nothing_left $id" "$id removed: TERMINATED, nothing left"
done

# --- grace periods ---------------------------------------------------------------------------
# RK_OPTS has --stop-grace 3. patient needs 4 s after SIGTERM and has 8; hasty needs 30 and has 1.
manifest patient.json patient '{"terminationGracePeriodSeconds": 8}' main:TERM_DELAY=4
manifest hasty.json hasty '{"terminationGracePeriodSeconds": 1}' main:TERM_DELAY=30
rk_wait_status 60 patient RUNNING
rk_wait_status 60 hasty RUNNING
# Their logs are held open: they are removed with the instance, read after.
exec {patient_log}<"$STATE/instances/patient/main/logs/0.log" {hasty_log}<"$STATE/instances/hasty/main/logs/0.log"
rm -- "$MANIFESTS/patient.json"
rk_wait_status 30 patient TERMINATED
cp "/proc/$$/fd/$patient_log" "$TEST_TMP/patient.log"
t_term=$(cri_t "$TEST_TMP/patient.log" "got TERM") t_bye=$(cri_t "$TEST_TMP/patient.log" bye)
t_done=$(log_t "instance patient (Pod patient): DESTROYING -> TERMINATED")
ok "within '$( [[ -n $t_term && -n $t_bye ]] && secs "$t_term" "$t_bye")' 3.9 8" \
	"a grace period of 8 s (above --stop-grace 3): the container gets the 4 s it needs (SIGTERM to its last line: $(secs "$t_term" "$t_bye") s)"
nok "grep -q 'container patient_main did not stop within' '$RK_LOG'" "and is not killed"
ok "within '$( [[ -n $t_term && -n $t_done ]] && secs "$t_term" "$t_done")' 3.9 8" \
	"riklet saw it end and finished the destroy before its 8 s were up ($(secs "$t_term" "$t_done") s after SIGTERM)"
rm -- "$MANIFESTS/hasty.json"
rk_wait_status 30 hasty TERMINATED
cp "/proc/$$/fd/$hasty_log" "$TEST_TMP/hasty.log"
exec {patient_log}<&- {hasty_log}<&-
t_term=$(cri_t "$TEST_TMP/hasty.log" "got TERM")
t_kill=$(log_t "container hasty_main did not stop within 1s of SIGTERM: sending SIGKILL")
ok "[[ -n '$t_kill' ]]" "a grace period of 1 s: the log says it was killed after 1 s"
ok "within '$( [[ -n $t_term && -n $t_kill ]] && secs "$t_term" "$t_kill")' 0.95 3" \
	"... killed 1 s after its SIGTERM, before --stop-grace 3 ($(secs "$t_term" "$t_kill") s)"
nok "grep -qE ' F bye$' '$TEST_TMP/hasty.log'" "... in its TERM handler (no bye)"
ok "rk_nothing_left patient && rk_nothing_left hasty" "nothing left of either"

# A destroy in progress (waiting for the container's grace period) and a restart waiting for its
# back-off when riklet is killed -9: the next riklet finishes the one and does the other.
manifest crashloop.json crashloop '{"restartPolicy": "OnFailure"}' main:EXIT_CODE=1
ok "wait_for 30 restarts_at_least crashloop 1" "crashloop (OnFailure, an operator policy: 4 s between restarts) restarts"
manifest slow.json slow '{"terminationGracePeriodSeconds": 60}' main:TERM_UNTIL=/slow-may-stop
rk_wait_status 60 slow RUNNING
rm -- "$MANIFESTS/slow.json"
rk_wait_status 10 slow DESTROYING
is "$(rk_status slow)" DESTROYING "slow is DESTROYING (its container stops once the test lets it)"
waiting() { [[ $(ctr crashloop main .state) == waiting ]]; }
ok "wait_for 10 waiting" "crashloop is waiting to be restarted"
before=$(restarts crashloop)
rk_stop KILL
is "$(rk_status slow)" DESTROYING "riklet killed -9 during the stop: the record says DESTROYING"
rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not restart"
# the records of a DESTROYING Pod and of one waiting for its back-off are ones store.check accepts
nok "test -e '$STATE/records/quarantine'" "no record is quarantined at the restart (DESTROYING, waiting to restart)"
touch "$STATE/instances/slow/main/rootfs/slow-may-stop"
rk_wait_status 60 slow TERMINATED
is "$(rk_status slow)" TERMINATED "the next riklet finishes the destroy"
ok "rk_nothing_left slow" "and nothing of it is left"
ok "wait_for 15 restarts_at_least crashloop $((before + 1))" \
	"the restart crashloop was waiting for when riklet was killed is done by the next riklet (restart_count was $before)"
is "$(rk_status crashloop)" RUNNING "crashloop is RUNNING"
rm -- "$MANIFESTS/crashloop.json"
rk_wait_status 30 crashloop TERMINATED
ok "rk_nothing_left crashloop" "crashloop removed: nothing left"

# A destroy whose clean-up fails is tried again while riklet runs (1 s, 2 s ...): a filesystem
# mounted inside the Pod's directory (not riklet's: never crossed) makes its removal fail; once it
# is unmounted, the retry finishes the destroy, with no new destroy and no restart of riklet.
manifest busy.json busy '{}' main
rk_wait_status 60 busy RUNNING
mkdir "$STATE/instances/busy/held" && mount -t tmpfs -o size=1m riklet-test-held "$STATE/instances/busy/held" &&
	echo kept >"$STATE/instances/busy/held/file"
rm -- "$MANIFESTS/busy.json"
rk_wait_status 30 busy FAILED
like "$(rk_reason busy)" "could not clean up: .*a filesystem is mounted there" "busy: a mount in its directory: FAILED, could not clean up"
is "$(cat "$STATE/instances/busy/held/file" 2>&1)" kept "busy: what is in that mount is not touched"
umount "$STATE/instances/busy/held"
t_umount=$(now)
rk_wait_status 20 busy TERMINATED
is "$(rk_status busy)" TERMINATED "busy: once it is unmounted the clean-up, tried again, succeeds ($(secs "$t_umount" "$(now)") s after)"
ok "grep -q 'instance busy: its destroy done at last' '$RK_LOG'" "busy: the log says the retry succeeded"
ok "rk_nothing_left busy" "busy: nothing left of it"

is "$(rk_runc_ids)" "" "no runc container is left in riklet's runc root"

# --- the overlay mount is off the loop: each takes 2 s more (RIKLET_TEST_SLOW_IMAGE_MS), the loop
# lag (agent.json, written every 5 s) stays far below it while two Pods with 2 containers start
rk_stop TERM
RIKLET_TEST_SLOW_IMAGE_MS=2000 rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not restart"
t_slow=$(date +%s)
manifest slowmnt1.json slowmnt1 '{}' a b
manifest slowmnt2.json slowmnt2 '{}' a b
rk_wait_status 90 slowmnt1 RUNNING && rk_wait_status 90 slowmnt2 RUNNING
is "$(rk_status slowmnt1)/$(rk_status slowmnt2)" RUNNING/RUNNING "two Pods start with every overlay mount slowed by 2 s"
ok "(($(date +%s) - t_slow >= 4))" "and their mounts took the 2 s each ($(($(date +%s) - t_slow)) s for both Pods)"
# agent.json is rewritten every 5 s: wait for a write after both were RUNNING (was: sleep 6)
t_run=$(date +%s)
agent_rewritten() { (($(stat -c %Y "$STATE/agent.json" 2>/dev/null || echo 0) > t_run)); }
wait_for 30 agent_rewritten
lag=$(rk_ps_json | jq -r '.agent.loop.lag_max_ms')
ok "[[ $lag =~ ^[0-9.]+$ ]] && ((${lag%.*} < 1500))" "the longest loop turn ($lag ms) held no 2 s mount: they ran on the worker pool"
rm -- "$MANIFESTS/slowmnt1.json" "$MANIFESTS/slowmnt2.json"
rk_wait_status 30 slowmnt1 TERMINATED && rk_wait_status 30 slowmnt2 TERMINATED
ok "rk_nothing_left slowmnt1 && rk_nothing_left slowmnt2" "both removed: nothing left"
rk_stop TERM
nok "grep -E 'stack traceback|attempt to|BUG:' '$RK_LOG'" "no Lua error and no refused transition in riklet's log"

done_testing
