# test_stop_evidence.sh — a destroy asks `runc state` only when riklet has no evidence that the
# container was started (pod.lua stop_container), and both paths still stop it properly. Every
# runc call riklet (and conmon) makes is logged by a wrapper; per container, after the destroy:
#  - started by this riklet (one-container Pod: conmon's `runc run`; two containers: runc create
#    then runc start), and adopted after a kill -9 with its conmon alive and a record saying
#    "running": no `runc state`, SIGTERM (`runc kill ... TERM`) first, no SIGKILL (the container
#    exits at SIGTERM, the grace period is long), then `runc delete --force`; TERMINATED;
#  - created but never started, in the same riklet (the create fails at pod.runc_start:error,
#    rolled back) and by a riklet killed there (pod.runc_start:abort, rolled back by the next
#    one): `runc state` asked, no kill at all, `runc delete --force`;
#  - adopted from a record whose container state is unreadable ("bogus": checked as if running,
#    no evidence): `runc state` asked first, then SIGTERM and delete;
#  - started, but gone from runc when its SIGTERM is sent (deleted behind riklet's back, the kill
#    fails): runc's word that it does not exist ends it, TERMINATED, not FAILED;
#  - nothing left of any of them (runc containers, mounts, directories, conmons).
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci jq busybox runc conmon pgrep
rk_init

rk_image
pod() { # pod NAME CONTAINER... — a Pod of those containers (all the same image)
	local n=$1
	shift
	jq -n --arg n "$n" --arg img "oci:$TEST_TMP/layout:latest" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: ($ARGS.positional | map({name: ., image: $img}))}}' \
		--args "$@" >"$MANIFESTS/.$n"
	mv "$MANIFESTS/.$n" "$MANIFESTS/$n.json"
}

# a runc that logs its arguments after --root DIR, one call a line, then runs the real one; while
# $TEST_TMP/vanish exists, its kill of container vanish_c stops that container's conmon (SIGSTOP:
# riklet is not told of the exit before it asks runc), deletes the container (with the real runc)
# and fails as a kill of a container runc does not have does
REAL=$(command -v runc)
CALLS=$TEST_TMP/calls
cat >"$TEST_TMP/lrunc" <<EOF
#!/bin/bash
[[ \$1 == --root ]] && a=("\${@:3}") || a=("\$@")
echo "\${a[*]}" >>"$CALLS"
if [[ -e "$TEST_TMP/vanish" && \${a[0]} == kill && " \${a[*]} " == *" vanish_c "* ]]; then
	kill -STOP "\$(cat "$STATE/instances/vanish/c/conmon.pid")"
	"$REAL" --root "\$2" delete --force vanish_c
	echo 'time="2026-01-01T00:00:00Z" level=error msg="container does not exist"' >&2
	exit 1
fi
exec "$REAL" "\$@"
EOF
chmod +x "$TEST_TMP/lrunc"
: >"$CALLS"
# the state, kill and delete calls naming runc container ID ("kill -- ID TERM", ...) made after
# line L of the call log (not conmon's create, not start)
calls_for() {
	tail -n +"$(($2 + 1))" "$CALLS" | awk -v id="$1" '$1 ~ /^(state|kill|delete)$/ { for (i = 2; i <= NF; i++) if ($i == id) { print; break } }'
}
has_line() { grep -qE -- "$2" <<<"$1"; } # has_line TEXT REGEX
ncalls() { wc -l <"$CALLS"; }
our_conmons() { pgrep -f -- "conmon .*--runtime-arg=$RUNC_ROOT( |$)" | grep -c . || true; }
GRACE=120
start() { rk_start_standalone --runc "$TEST_TMP/lrunc" --stop-grace "$GRACE" "$@" || bail_out "riklet did not start"; }

# check_started ID CONTAINER... — after ID's destroy (calls after line L): SIGTERM without runc state
check_started() {
	local id=$1 c cl
	shift
	for c in "$@"; do
		cl=$(calls_for "${id}_$c" "$L")
		nok 'has_line "$cl" "^state "' "$id/$c: started, evidence known: no runc state before its stop"
		like "$(head -1 <<<"$cl")" '^kill -- [^ ]+ TERM$' "$id/$c: SIGTERM is its first runc call"
		unlike "$cl" 'KILL' "$id/$c: no SIGKILL (it exited at SIGTERM, within the ${GRACE}s grace)"
		ok 'has_line "$cl" "^delete --force -- "' "$id/$c: runc delete --force after it exited"
	done
}
# check_created ID CONTAINER... — created, never started: runc state asked, no kill, delete --force
check_created() {
	local id=$1 c cl
	shift
	for c in "$@"; do
		cl=$(calls_for "${id}_$c" "$L")
		like "$(head -1 <<<"$cl")" '^state -- ' "$id/$c: no evidence it was started: runc state asked first"
		nok 'has_line "$cl" "^kill "' "$id/$c: created, never started: not signalled"
		ok 'has_line "$cl" "^delete --force -- "' "$id/$c: deleted with runc delete --force"
	done
}
diag_calls() { diag "runc calls: $(tail -n +"$((L + 1))" "$CALLS" | tr '\n' ',')"; }

gone() { [[ -z $(rk_status "$1") || $(rk_status "$1") == TERMINATED ]]; }

# 0. two Pods that the riklets below adopt: one (its record says running, its conmon alive:
# evidence) and bogus (its record's container state made unreadable while riklet is down)
start
pod one c
pod bogus c
rk_wait_status 120 one RUNNING || diag_file "$RK_LOG" 30
rk_wait_status 120 bogus RUNNING || diag_file "$RK_LOG" 30
rk_stop KILL

# 1. created, never started, in this riklet: the create fails at runc start and is rolled back
start_fault() { RIKLET_FAULT=$1 rk_start_standalone --runc "$TEST_TMP/lrunc" --stop-grace "$GRACE" || bail_out "riklet did not start ($1)"; }
start_fault pod.runc_start:error
L=$(ncalls)
pod cr a b
rk_wait_status 120 cr FAILED || diag_file "$RK_LOG" 30
like "$(rk_reason cr)" 'fault injected at pod.runc_start' "cr: its create failed at runc start"
check_created cr a b
ok "rk_nothing_left cr" "cr: nothing left after its rollback" || diag_calls
rm -f "$MANIFESTS/cr.json"
wait_for 60 gone cr || diag "cr: $(rk_status cr)"
rk_stop KILL

# 2. created, never started, by a riklet killed there: the next riklet rolls it back
start_fault pod.runc_start:abort
pod ab a b
wait_for 120 eval '! kill -0 $RK_PID 2>/dev/null' || bail_out "riklet did not die at pod.runc_start"
wait "$RK_PID" 2>/dev/null
is "$(rk_runc_ids | grep -c '^ab_')" 2 "ab: riklet died with both containers created"
rm -f "$MANIFESTS/ab.json"
rec=$STATE/records/bogus.json
jq -c '.containers[0].state = "bogus"' "$rec" >"$rec.tmp" && mv "$rec.tmp" "$rec"
L=$(ncalls)
start
wait_for 60 gone ab || diag_file "$RK_LOG" 30
check_created ab a b
ok "rk_nothing_left ab" "ab: nothing left after the next riklet rolled it back" || diag_calls
ok "grep -q 'instance bogus: its record has an invalid state' '$RK_LOG'" "bogus: its record's state was found invalid"

# 3. started by this riklet: conmon's runc run (one container), runc create + start (two); one
# and bogus adopted (above)
pod run c
pod duo a b
pod vanish c
rk_wait_status 120 run RUNNING || diag_file "$RK_LOG" 30
rk_wait_status 120 duo RUNNING || diag_file "$RK_LOG" 30
rk_wait_status 120 vanish RUNNING || diag_file "$RK_LOG" 30
is "$(rk_status one) $(rk_status bogus)" "RUNNING RUNNING" "one and bogus were adopted RUNNING"
L=$(ncalls)
touch "$TEST_TMP/vanish"
rm -f "$MANIFESTS/run.json" "$MANIFESTS/duo.json" "$MANIFESTS/one.json" "$MANIFESTS/bogus.json" "$MANIFESTS/vanish.json"
for p in run duo one bogus vanish; do
	rk_wait_status 60 "$p" TERMINATED || { diag "$p: $(rk_status "$p") $(rk_reason "$p")"; diag_file "$RK_LOG" 30; }
done
is "$(for p in run duo one bogus vanish; do rk_status "$p"; done | tr '\n' ' ')" \
	"TERMINATED TERMINATED TERMINATED TERMINATED TERMINATED " "run, duo, one, bogus and vanish are TERMINATED"
check_started run c
check_started duo a b
check_started one c
cl=$(calls_for bogus_c "$L")
like "$(head -1 <<<"$cl")" '^state -- ' "bogus/c: adopted with an unreadable state: runc state asked first"
like "$(sed -n 2p <<<"$cl")" '^kill -- [^ ]+ TERM$' "bogus/c: runc says it runs: then SIGTERM"
ok 'has_line "$cl" "^delete --force -- "' "bogus/c: then runc delete --force"
cl=$(calls_for vanish_c "$L")
like "$(head -1 <<<"$cl")" '^kill -- [^ ]+ TERM$' "vanish/c: SIGTERM first (it failed: runc had no such container any more)"
like "$(sed -n 2p <<<"$cl")" '^state -- ' "vanish/c: then runc state, which says it does not exist"
ok 'has_line "$cl" "^delete --force -- "' "vanish/c: then runc delete --force (absent)"
ok "grep -q 'conmon [0-9]* of container vanish_c is still there after its container is gone' '$RK_LOG'" \
	"vanish/c: its conmon, still there, was stopped"
diag_calls
rk_stop
ok "for p in run duo one bogus vanish cr ab; do rk_nothing_left \$p || exit 1; done" "nothing is left of the 7 Pods"
is "$(our_conmons)" 0 "no conmon left"
done_testing
