#!/usr/bin/env bash
# test_hostile_conmon_held.sh (hostile) — a one-container Pod's conmon is started first and held on
# its start pipe while riklet prepares the Pod (README How Pods run). The hold is stretched to ~3 s
# by holding the xtables lock (XTABLES_LOCKFILE, a file of the test's own): the Pod's network setup
# waits for it up to 3 s, then fails. Tried, with `--network bridge` in a private network + mount
# namespace and --runtime-parallel 2:
#   - the network failing while conmon is held: FAILED with the reason, no conmon, no container,
#     only the record left (and the directory, when the rollback met the held lock too);
#   - a refusal of the network policy (a reserved node port): the same;
#   - riklet killed with -9, and stopped with SIGTERM, while conmon is held: the held conmon ends
#     by itself, no container ever runs; the next riklet creates the Pod (one container, one conmon);
#   - the held conmon killed from outside, then the network ready: FAILED naming conmon's end, no
#     SIGPIPE, nothing left; the Pod's manifest removed while its conmon is held (the network
#     then failing, or ready): gone, nothing left;
#   - 6 Pods created at once while every hold lasts 3 s: never more than --runtime-parallel held
#     conmons, each Pod FAILED with the reason, nothing left; then all 6 RUNNING once the lock is free;
#   - every manifest removed: nothing left at all (tests/lib/leaks.sh).
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/leaks.sh"
need_root
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "needs a private network + mount namespace (unshare -n -m)"
need_cmd umoci skopeo jq busybox runc conmon ip iptables-legacy flock
rk_init
ip link set lo up
NETNS=$TEST_TMP/netns
XT=$TEST_TMP/xtables.lock
export XTABLES_LOCKFILE=$XT
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 3
	--keep-records 0 --runtime-parallel 2 --log-level debug)

rk_image
conmons_of() { rk_conmons "$1_c"; }
containers_of() { rk_runc_ids | grep -cx -- "$1_c"; }
held_pid() { sed -n "s/.*container $1_c: conmon (pid \([0-9]*\)) started, held on its start pipe.*/\1/p" "$RK_LOG" | tail -n 1; }
held_logged() { [[ -n $(held_pid "$1") ]]; }
owned() { rk_owned "$RK_PID"; }
report() { diag "ps: $(rk_ps_json)" "owned: $(owned | tr '\n' ';')"; diag_file "$RK_LOG" 25; }
LOCKER=
lock_xt() { # hold the xtables lock until unlock_xt
	flock "$XT" sleep 300 &
	LOCKER=$!
	wait_for 5 bash -c "! flock -n '$XT' true" || bail_out "cannot hold $XT"
}
unlock_xt() {
	[[ -n $LOCKER ]] && { pkill -P "$LOCKER" sleep; kill "$LOCKER" 2>/dev/null; wait "$LOCKER" 2>/dev/null; }
	LOCKER=
}
on_exit unlock_xt
touch "$XT"

rk_start_standalone || bail_out "riklet did not start"
rk_pod warm 18080
rk_wait_status 90 warm RUNNING
is "$(rk_status warm)" RUNNING "a first Pod (exposing a port) runs" || report

# --- the network failing while conmon is held ---------------------------------------------------
before=$(owned | sort)
lock_xt
rk_pod netfail 18081
ok "wait_for 30 held_logged netfail" "netfail: its conmon was started and held on its start pipe" || report
rk_wait_status 60 netfail FAILED RUNNING
is "$(rk_status netfail)" FAILED "netfail: the xtables lock held past 3 s: FAILED" || report
like "$(rk_reason netfail)" "xtables lock" "netfail: the reason names the xtables lock"
is "$(conmons_of netfail)/$(containers_of netfail)" 0/0 "netfail: no conmon and no container left" || report
# (its directory stays when the rollback's rule removal met the held lock too: said in the reason)
is "$(owned | grep -v '^record netfail\|^dir netfail$' | sort)" "$before" "netfail: nothing of its own left but its record (and directory)" ||
	report
unlock_xt

# --- a refusal of the network policy ------------------------------------------------------------
rk_pod reserved 22
rk_wait_status 60 reserved FAILED RUNNING
is "$(rk_status reserved)" FAILED "reserved: a Pod exposing node port 22 is FAILED" || report
like "$(rk_reason reserved)" "reserved" "reserved: the reason says the port is reserved"
is "$(conmons_of reserved)/$(containers_of reserved)" 0/0 "reserved: no conmon and no container" || report
is "$(owned | grep -v '^record \(netfail\|reserved\)\|^dir netfail$' | sort)" "$before" "reserved: nothing of its own left but its record" || report
ok "kill -0 $RK_PID" "riklet serves on"

# --- riklet killed (-9) and stopped (TERM) while conmon is held ---------------------------------
for sig in KILL TERM; do
	id=k$(tr 'A-Z' 'a-z' <<<"$sig")
	lock_xt
	rk_pod "$id" 18090
	if ok "wait_for 30 held_logged $id" "$id: conmon held on its start pipe"; then
		held=$(held_pid "$id")
		rk_stop "$sig"
		rc=$?
		diag "riklet ended with $rc; held conmon was pid $held"
		ok "wait_for 10 bash -c '! kill -0 $held 2>/dev/null'" "$id: riklet gone ($sig) while conmon was held: the held conmon ended" ||
			{ ps -o pid,ppid,stat,args -p "$held" | diag "$(cat)"; report; }
		is "$(containers_of "$id")/$(conmons_of "$id")" 0/0 "$id: no container was started, no conmon is left" || report
		nok "test -e '$STATE/instances/$id/c/conmon.pid'" "$id: the held conmon never forked its daemon (no conmon.pid)"
	else
		report
		rk_stop KILL
	fi
	unlock_xt
	rk_start_standalone || bail_out "riklet did not restart"
	rk_wait_status 90 "$id" RUNNING
	is "$(rk_status "$id")" RUNNING "$id: the next riklet creates it" || report
	is "$(containers_of "$id")/$(conmons_of "$id")" 1/1 "$id: with one container and one conmon" || report
	rm -f "$MANIFESTS/$id.json"
	rk_wait_status 60 "$id" TERMINATED ""
done

# --- the held conmon killed from outside (an OOM kill, an operator), then the network ready ------
lock_xt
rk_pod ck 18095
if ok "wait_for 30 held_logged ck" "ck: conmon held on its start pipe"; then
	kill -9 "$(held_pid ck)"
	unlock_xt # the network setup goes on: riklet lets a conmon go that is not there any more
	rk_wait_status 60 ck FAILED RUNNING
	is "$(rk_status ck)" FAILED "ck: its held conmon killed: FAILED" || report
	like "$(rk_reason ck)" "conmon for ck_c failed .*signal 9" "ck: the reason says conmon was killed"
	diag "ck: $(rk_reason ck)"
	is "$(conmons_of ck)/$(containers_of ck)" 0/0 "ck: no conmon and no container left" || report
	is "$(owned | grep -v '^record \(netfail\|reserved\|ck\)\|^dir netfail$' | sort)" "$before" "ck: nothing of its own left but its record" ||
		report
	ok "kill -0 $RK_PID" "riklet serves on (no SIGPIPE from the start pipe)"
else
	report
fi
unlock_xt
rm -f "$MANIFESTS/ck.json"

# --- the Pod destroyed while its conmon is held -------------------------------------------------
for late in fail ok; do
	id=d$late
	lock_xt
	rk_pod "$id" 18096
	if ok "wait_for 30 held_logged $id" "$id: conmon held on its start pipe"; then
		rm -f "$MANIFESTS/$id.json"
		# fail: the lock stays held past 3 s (the network fails), let go once the create has
		# failed (else the destroy's own rule removal fails too: FAILED "could not clean up", kept
		# until the next start); ok: let go at once (the network is set up and conmon let go, then
		# the destroy stops what it started)
		if [[ $late == ok ]]; then
			unlock_xt
		else
			ok "wait_for 30 grep -q 'instance $id: create failed' '$RK_LOG'" "$id: the create fails (network)"
			unlock_xt
		fi
		rk_wait_status 60 "$id" TERMINATED ""
		ok "[[ -z \$(rk_status $id) || \$(rk_status $id) == TERMINATED ]]" "$id: its manifest removed while conmon was held: gone" ||
			report
		unlock_xt
		gone_id() { [[ -z $(owned | grep -- "$id") && $(conmons_of "$id")/$(containers_of "$id") == 0/0 ]]; }
		ok "wait_for 30 gone_id" "$id: no conmon, container or anything else of it left" ||
			{ diag "$(owned | grep -- "$id")"; report; }
	else
		report
	fi
	unlock_xt
done

# --- more creates at once than --runtime-parallel, every hold 3 s ------------------------------
lock_xt
max=0
for i in 1 2 3 4 5 6; do rk_pod "b$i" $((18100 + i)); done
sample() {
	local n
	n=$(rk_conmons 'b[0-9]_c')
	((n > max)) && max=$n
	for i in 1 2 3 4 5 6; do [[ $(rk_status "b$i") == FAILED ]] || return 1; done
}
ok "wait_for 90 sample" "6 Pods created while the xtables lock is held: all FAILED" || report
diag "most conmons of the 6 seen at once: $max; held on the start pipe: $(grep -c 'container b[0-9]_c: conmon (pid [0-9]*) started, held' "$RK_LOG"), prepared first: $(grep -c 'container b[0-9]_c: every --runtime-parallel slot is busy' "$RK_LOG")"
ok "((max <= 2))" "never more than --runtime-parallel (2) of their conmons at once ($max)"
ok "(($(grep -c 'container b[0-9]_c: conmon (pid [0-9]*) started, held' "$RK_LOG") >= 1))" "at least one of them was held"
bad=0
for i in 1 2 3 4 5 6; do
	[[ $(rk_reason "b$i") == *"xtables lock"* ]] || { bad=1; diag "b$i: $(rk_reason "b$i")"; }
done
is "$bad" 0 "each names the xtables lock"
is "$(rk_conmons 'b[0-9]_c')/$(rk_runc_ids | grep -c '^b[0-9]_c$')" 0/0 "no conmon and no container of theirs left" ||
	report
unlock_xt
for i in 1 2 3 4 5 6; do rk_pod "b$i" $((18100 + i)) 1; done
all_running() { for i in 1 2 3 4 5 6; do [[ $(rk_status "b$i") == RUNNING ]] || return 1; done; }
ok "wait_for 120 all_running" "the lock free, the edited manifests get 6 RUNNING Pods" || report
is "$(rk_conmons 'b[0-9]_c')/$(rk_runc_ids | grep -c '^b[0-9]_c$')" 6/6 "one conmon and one container each"
ok "kill -0 $RK_PID" "riklet serves on"

rm -f "$MANIFESTS"/*.json
gone() { [[ -z $(owned) ]]; }
ok "wait_for 90 gone" "every manifest removed: nothing left" || report
rk_stop
done_testing
