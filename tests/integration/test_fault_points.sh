#!/usr/bin/env bash
# test_fault_points.sh — every fault point (`riklet fault-points`), in both modes: riklet started
# with RIKLET_FAULT=<point>:abort dies there as with kill -9, with <point>:error the step fails as
# if its real operation had. Create points: a Pod manifest is dropped; destroy points: the manifest
# of a RUNNING Pod is removed. Then riklet is started again without the fault, and the Pod must
# end as its manifest asks (RUNNING when it is there, gone when it is not), owning exactly what a
# RUNNING Pod owns, and nothing at all once its manifest is removed: no container, process, mount,
# netns, veth, address, rule, instance directory, record or half-done pull (tests/lib/leaks.sh).
# Runs in a private network + mount namespace with `--network bridge` and a loopback registry.
# RK_FAULT_POINTS=REGEX runs only the points whose name matches (to replay one).
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/leaks.sh"
need_cmd unshare iptables-legacy ip umoci skopeo
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
rk_init
ip link set lo up
NETNS=$TEST_TMP/netns
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 3
	--keep-records 0 --insecure-registries "$REGISTRY" --log-level debug)
ID=fp
RUNNING_OWNS="address container dir mount netns record rule veth"

mapfile -t POINTS < <("$RIKLET" fault-points | awk -F'\t' -v re="${RK_FAULT_POINTS:-.}" '$1 ~ re { print $1 " " $2 }')
((${#POINTS[@]} > 0)) || bail_out "riklet fault-points lists no point"
diag "${#POINTS[@]} fault points: $(printf '%s ' "${POINTS[@]%% *}")"

manifest() { # manifest VERSION: the Pod fp, exposing 18080; VERSION changes its definition
	jq -n --arg img "$IMAGE" --arg v "$1" '{apiVersion: "v1", kind: "Pod", name: "fp", spec: {containers: [
	  {name: "main", image: $img, env: [{name: "VERSION", value: $v}],
	   ports: {port: 18080, target_port: 80, protocol: "TCP"}}]}}' >"$MANIFESTS/.fp.tmp" &&
		mv "$MANIFESTS/.fp.tmp" "$MANIFESTS/$ID.json"
}
start() { # start [FAULT]
	RIKLET_FAULT=${1:-} rk_start_standalone || { diag_file "$RK_LOG" 30; bail_out "riklet did not start (fault ${1:-none})"; }
}
dead() { [[ ! -e /proc/$RK_PID || $(awk '{ print $3 }' "/proc/$RK_PID/stat" 2>/dev/null) == Z ]]; }
gone() { [[ -z $(rk_status "$ID") && ! -e $STATE/records/$ID.json ]]; }
owned() { rk_owned "$RK_PID"; }
kinds() { rk_owned_kinds "$RK_PID"; }
cpid() { rk_runc_pid "${ID}_main"; }
held_conmon_gone() { ! pgrep -f -- "--cid=${ID}_main .*--bundle=$STATE/" >/dev/null; }
# the Pod's resources once RUNNING: each kind once (one veth, one netns...), and it serves a pid
running_ok() {
	local o
	[[ $(rk_status "$ID") == RUNNING && -n $(cpid) ]] || return 1
	o=$(owned | grep -v '^process .*conmon') # a running container's monitor, once conmon is in the path
	[[ $(awk '{ print $1 }' <<<"$o" | sort -u | tr '\n' ' ') == "$RUNNING_OWNS " ]] &&
		[[ $(awk '$1 != "rule" && $1 != "mount" && $1 != "record" { print $1 }' <<<"$o" | sort | uniq -d) == "" ]]
}
report() { diag "ps: $(rk_ps_json)" "owned: $(owned | tr '\n' ';')"; diag_file "$RK_LOG" 25; }
aborted() { # aborted P: riklet died by its own SIGKILL at P
	local rc
	wait_for 30 dead
	wait "$RK_PID" 2>/dev/null
	rc=$?
	is "$rc/$(grep -c "fault injected at $1: aborting" "$RK_LOG")" "137/1" "$1:abort: riklet killed itself at the point" ||
		report
}

# --- the leak check sees each kind of resource ------------------------------------------------
start
manifest 0
rk_wait_status 60 "$ID" RUNNING
ok running_ok "a RUNNING Pod owns one of each: $(kinds)" || report
rm "$MANIFESTS/$ID.json"
wait_for 30 gone
is "$(owned)" "" "removed: it owns nothing" || report
rk_stop

ABORTS=0 ERRORS=0 LEAKS=0
leak_check() { # leak_check MSG: after the manifest is removed, nothing is left
	local left
	wait_for 30 gone
	left=$(owned)
	is "$left" "" "$1" || { LEAKS=$((LEAKS + $(wc -l <<<"$left"))); report; }
}

create_point() { # create_point P MODE
	local p=$1 mode=$2
	dead || rk_stop
	case $p in
	image.pull) rm -rf "$STATE/images" ;;
	image.unpack) rm -rf "$STATE/rootfs" ;;
	esac
	start "$p:$mode"
	manifest "$p:$mode"
	if [[ $mode == abort ]]; then
		aborted "$p" && ABORTS=$((ABORTS + 1))
		if [[ $p == pod.conmon_held ]]; then
			# riklet died while the Pod's conmon waited on its start pipe: conmon must end without
			# starting anything (its read fails once riklet's end is gone), never run the container
			ok "wait_for 10 held_conmon_gone" "$p:abort: the held conmon ended by itself" || report
			is "$(runc --root "$RUNC_ROOT" list -q 2>/dev/null)" "" "$p:abort: it started no container" || report
		fi
		start
		ok "rk_wait_status 60 $ID RUNNING && wait_for 10 running_ok" "$p:abort: the next riklet rolls it forward to RUNNING" ||
			report
	else
		if [[ $p == record.save ]]; then
			# no record can be written: the create fails before anything is made, and says so
			wait_for 30 grep -q "instance $ID (Pod fp): CREATING -> FAILED: cannot store its record" "$RK_LOG"
			ok "grep -q 'instance $ID (Pod fp): CREATING -> FAILED: cannot store its record: fault injected at $p' '$RK_LOG'" \
				"$p:error: the Pod is FAILED: its record cannot be stored" || report
			is "$(kinds)" "" "$p:error: the rollback left nothing" || report
		else
			rk_wait_status 60 "$ID" FAILED RUNNING
			like "$(rk_reason "$ID")" "fault injected at $p" "$p:error: the Pod is FAILED with the injected fault as reason" ||
				report
			is "$(kinds)" record "$p:error: the rollback left only the record" || report
		fi
		ok "kill -0 $RK_PID" "$p:error: riklet goes on" && ERRORS=$((ERRORS + 1))
		rk_stop
		start
		manifest "$p:$mode again"
		ok "rk_wait_status 60 $ID RUNNING && wait_for 10 running_ok" "$p:error: without the fault, the changed manifest gets a RUNNING Pod" ||
			report
	fi
	rm "$MANIFESTS/$ID.json"
	leak_check "$p:$mode: manifest removed, nothing left"
	rk_stop
}

destroy_point() { # destroy_point P MODE
	local p=$1 mode=$2 pid
	dead && start # (the riklet that finished the previous destroy point goes on)
	manifest "$p:$mode"
	rk_wait_status 60 "$ID" RUNNING
	pid=$(cpid)
	rk_stop
	start "$p:$mode"
	is "$(rk_status "$ID")/$(cpid)" "RUNNING/$pid" "$p:$mode: re-adopted RUNNING, same container pid" || report
	rm "$MANIFESTS/$ID.json"
	if [[ $mode == abort ]]; then
		aborted "$p" && ABORTS=$((ABORTS + 1))
	else
		rk_wait_status 30 "$ID" FAILED TERMINATED ""
		if [[ $p == record.remove ]]; then
			is "$(rk_status "$ID")" TERMINATED "$p:error: the Pod is TERMINATED, its record could not be removed" || report
			ok "grep -q 'cannot remove the record of destroyed instance $ID: fault injected at $p' '$RK_LOG'" \
				"$p:error: the log says why the record stays" || report
		else
			like "$(rk_status "$ID"): $(rk_reason "$ID")" "^FAILED: could not clean up: .*fault injected at $p" \
				"$p:error: the destroy fails with the injected fault as reason, the record stays" || report
		fi
		ok "kill -0 $RK_PID" "$p:error: riklet goes on" && ERRORS=$((ERRORS + 1))
		rk_stop
	fi
	start
	leak_check "$p:$mode: the next riklet finishes the destroy, nothing left"
}

t0=$SECONDS
for pm in "${POINTS[@]}"; do
	for mode in abort error; do
		t1=$SECONDS
		if [[ ${pm#* } == create ]]; then create_point "${pm%% *}" "$mode"; else destroy_point "${pm%% *}" "$mode"; fi
		diag "${pm%% *}:$mode: $((SECONDS - t1)) s"
	done
done

# --- a fault while re-adopting a RUNNING Pod's network is no evidence that the Pod is gone ---------
# (network.json unwritable, a netlink call failing: the containers still run)
for p in net.veth net.address; do
	dead && start
	manifest "adopt $p"
	rk_wait_status 60 "$ID" RUNNING
	pid=$(cpid)
	rk_stop
	start "$p:error"
	ok "wait_for 10 grep -q 'cannot re-adopt it yet (its network: fault injected at $p).*no evidence that it is gone: it stays RUNNING' '$RK_LOG'" \
		"$p:error while re-adopting: the log says the network could not be repaired, and that it stays RUNNING" || report
	is "$(rk_status "$ID")/$(cpid)" "RUNNING/$pid" "$p:error while re-adopting: the Pod stays RUNNING, same container pid" ||
		report
	rk_stop
	start
	ok "wait_for 10 running_ok" "$p: the next riklet repairs its network" || report
	is "$(cpid)" "$pid" "$p: still the same container" || report
	rm "$MANIFESTS/$ID.json"
	leak_check "$p: manifest removed, nothing left"
done
dead || rk_stop
diag "fault points: ${#POINTS[@]} x 2 modes, $ABORTS aborts and $ERRORS errors survived, $LEAKS leaks found, $((SECONDS - t0)) s"
nok "grep -q 'stack traceback' '$RK_LOG'" "no Lua error in the logs" ||
	grep -B3 -A12 'stack traceback' "$RK_LOG" | head -n 60 | sed 's/^/# /'
done_testing
