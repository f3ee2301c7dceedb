#!/usr/bin/env bash
# test_hostile_held_burst.sh (hostile) — 40 one-container Pods dropped at once (--network bridge,
# --runtime-parallel 2, a port each) so that conmons are held on their start pipes one after
# another (the xtables lock taken 1.5 s of every 2 s by the test, so each network setup, and the
# conmon held meanwhile, waits up to 1.5 s), and riklet killed with -9 in the middle of the burst, at whatever moment it is at: a
# conmon held, being let go, runc running, a record being written. Checked: never more than
# --runtime-parallel conmons held at once (sampled), every conmon held when riklet died ends by
# itself without a container, the next riklet brings all 40 to RUNNING with one container and one
# conmon each (the ones RUNNING before the kill keep their pid), and nothing is left once removed.
# Pods arrive one every 0.2 s. RK_SEED=N replays the kill's moment.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/leaks.sh"
need_root
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "needs a private network + mount namespace (unshare -n -m)"
need_cmd umoci skopeo jq busybox runc conmon ip iptables-legacy
rk_init
ip link set lo up
NETNS=$TEST_TMP/netns
N=40
SEED=${RK_SEED:-$RANDOM}
RANDOM=$SEED
diag "seed $SEED (RK_SEED=$SEED replays)"
XT=$TEST_TMP/xtables.lock
export XTABLES_LOCKFILE=$XT
touch "$XT"
PULSER=
pulse_start() {
	(while :; do flock "$XT" sleep 1.5; sleep 0.5; done) </dev/null >/dev/null 2>&1 &
	PULSER=$!
}
pulse_stop() {
	[[ -n $PULSER ]] || return 0
	kill "$PULSER" 2>/dev/null
	wait "$PULSER" 2>/dev/null
	PULSER=
	wait_for 5 flock -n "$XT" true
}
on_exit pulse_stop
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 2
	--keep-records 0 --runtime-parallel 2 --log-level debug)

rk_image
mkdir -p "$TEST_TMP/staged"
stage() { # stage NAME PORT: the manifest, written aside (moved in by drop)
	jq -n --arg n "$1" --arg img "oci:$TEST_TMP/layout:latest" --argjson port "$2" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [{name: "c", image: $img,
		  ports: {port: $port, target_port: 80, protocol: "TCP"}}]}}' >"$TEST_TMP/staged/$1.json"
}
pod() { stage "$@" && mv "$TEST_TMP/staged/$1.json" "$MANIFESTS/$1.json"; }
owned() { rk_owned "$RK_PID"; }
report() { diag "ps: $(rk_ps_json | jq -c '[.instances[] | select(.status != "RUNNING") | {id, status, reason}]')"; diag_file "$RK_LOG" 25; }
# "CID PID" of each conmon started held (debug log lines)
held_pids() { sed -n 's/.*container \(p[0-9]*_c\): conmon (pid \([0-9]*\)) started, held on its start pipe.*/\1 \2/p' "$RK_LOG"; }
# the first conmon process of a create lives until it is let go (then it forks its daemon and
# exits at once): those alive now, still that container's conmon (not a recycled pid), are held
held_list() {
	local cid p
	held_pids | while read -r cid p; do
		[[ -e /proc/$p ]] && tr "\\0" " " <"/proc/$p/cmdline" 2>/dev/null | grep -q "^conmon .*--cid=$cid " && echo "$p"
	done
	return 0
}
held_now() { held_list | wc -l; }
running() { rk_ps_json | jq '[.instances[] | select(.status == "RUNNING")] | length'; }

rk_start_standalone || bail_out "riklet did not start"
pod warm 18000
rk_wait_status 90 warm RUNNING || { report; bail_out "the first Pod did not run"; }
for i in $(seq 1 "$N"); do stage "p$i" $((18000 + i)); done
pulse_start
# one every 0.2 s: a conmon is held when a slot is free as its Pod arrives, else the Pod is
# prepared first (README How Pods run); both kinds are in flight when riklet is killed
(for i in $(seq 1 "$N"); do mv "$TEST_TMP/staged/p$i.json" "$MANIFESTS/"; sleep 0.2; done) &
DROPPER=$!
kill_at=$((N / 4 + RANDOM % (N / 2))) # somewhere between a quarter and three quarters RUNNING
max=0 t0=$SECONDS samples=0
logged_running() { grep -c 'instance p[0-9]* (Pod p[0-9]*): CREATING -> RUNNING' "$RK_LOG"; }
while (($(logged_running) < kill_at && SECONDS - t0 < 120)); do
	h=$(held_now)
	samples=$((samples + 1))
	((h > max)) && max=$h
	sleep 0.05
done
before=$(rk_ps_json | jq -r '.instances[] | select(.status == "RUNNING") | .id' | sort)
declare -A pid_of
for id in $before; do pid_of[$id]=$(rk_runc_pid "${id}_c"); done
held_then=$(held_list)
rk_stop KILL
pulse_stop
wait "$DROPPER"
diag "held on the start pipe: $(held_pids | wc -l), prepared first: $(grep -c 'container p[0-9]*_c: every --runtime-parallel slot is busy' "$RK_LOG"), sampled $samples times in $((SECONDS - t0)) s"
diag "killed at $kill_at RUNNING (ps: $(($(wc -l <<<"$before") - 1)) of $N); conmons held at the kill: $(echo $held_then); most held at once before: $max"
ok "((max >= 1 && max <= 2))" "conmons were held, never more than --runtime-parallel (2) at once ($max)"
gone_all() { local p; for p in $held_then; do [[ -e /proc/$p ]] && ! grep -q '^Z' <(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null) && return 1; done; return 0; }
ok "wait_for 15 gone_all" "each conmon held when riklet died ended by itself" ||
	for p in $held_then; do ps -o pid,stat,args -p "$p" | tail -n +2 | diag "$(cat)"; done

rk_start_standalone || bail_out "riklet did not restart"
all_running() { (($(running) == N + 1)); }
ok "wait_for 150 all_running" "the next riklet: all $N Pods RUNNING" || report
bad=0
for i in $(seq 1 "$N"); do
	c=$(rk_runc_ids | grep -cx "p${i}_c")
	m=$(rk_conmons "p${i}_c")
	[[ $c/$m == 1/1 ]] || { bad=$((bad + 1)); diag "p$i: $c container(s), $m conmon(s)"; }
done
is "$bad" 0 "one container and one conmon each"
kept=0 lost=0
for id in $before; do
	if [[ $(rk_runc_pid "${id}_c") == "${pid_of[$id]}" ]]; then kept=$((kept + 1)); else lost=$((lost + 1)); diag "$id: pid ${pid_of[$id]} -> $(rk_runc_pid "${id}_c")"; fi
done
is "$lost" 0 "the $kept Pods RUNNING before the kill kept their container pid"
rm -f "$MANIFESTS"/*.json
gone() { [[ -z $(owned) ]]; }
ok "wait_for 150 gone" "every manifest removed: nothing left" || diag "$(owned | head -20)"
rk_stop
done_testing
