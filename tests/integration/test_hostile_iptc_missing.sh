#!/usr/bin/env bash
# test_hostile_iptc_missing.sh (hostile) — libip4tc is loaded with dlopen at the first iptables use
# (core/iptc_lazy.c), not linked: a node where it is missing, or where another library stands in
# its place (no iptc_* symbols), must get a clear error naming the library and what to install, not
# a crash. In a private mount namespace the library file is hidden (an empty file bound over it),
# then replaced by libip6tc. riklet's start-up check refuses to start on a node with no Pods, and
# `riklet check` fails its iptables line, naming the library and the package (not the iptables
# command's backend: iptables-legacy fails without the library too); on a node running Pods riklet
# starts anyway (README Operate). There, riklet (--network bridge) must keep the running Pod (same pid),
# fail a new Pod exposing a port with the loader's reason, serve on, and once the library is back
# create it and leave nothing when removed.
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
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 3
	--keep-records 0 --log-level debug)
lib=$(readlink -f "$(ldconfig -p | awk '$1 == "libip4tc.so.2" && /x86-64/ { print $NF; exit }')")
lib6=$(readlink -f "$(ldconfig -p | awk '$1 == "libip6tc.so.2" && /x86-64/ { print $NF; exit }')")
[[ -f $lib && -f $lib6 ]] || skip_all "libip4tc.so.2 / libip6tc.so.2 not found (apt-get install libip4tc2 libip6tc2)"

rk_image
report() { diag "ps: $(rk_ps_json | jq -c '[.instances[] | {id, status, reason}]')"; diag_file "$RK_LOG" 25; }

# no Pod yet: the start-up check refuses, saying why
: >"$TEST_TMP/empty.so"
mount --bind "$TEST_TMP/empty.so" "$lib" || bail_out "cannot hide $lib"
"$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" >"$TEST_TMP/refused.log" 2>&1 </dev/null
rc=$?
ok "((rc != 0)) && grep -q 'cannot start, a required check failed: iptables: cannot load libip4tc.so.2: .*(apt-get install libip4tc2: ' '$TEST_TMP/refused.log'" \
	"no Pod on the node and libip4tc hidden: riklet refuses to start, the iptables check names the library and the package" ||
	diag_file "$TEST_TMP/refused.log" 5
umount "$lib"
rk_start_standalone || bail_out "riklet did not start"
rk_pod warm 18090
rk_wait_status 90 warm RUNNING
is "$(rk_status warm)" RUNNING "a Pod runs (the library there)" || report
warm=$(rk_runc_pid warm_c)
rk_stop

for how in missing wrong; do
	if [[ $how == missing ]]; then
		: >"$TEST_TMP/empty.so"
		mount --bind "$TEST_TMP/empty.so" "$lib" || bail_out "cannot hide $lib"
		want="cannot load libip4tc.so.2.*apt-get install libip4tc2" said="cannot load libip4tc.so.2: "
	else
		mount --bind "$lib6" "$lib" || bail_out "cannot bind $lib6 over $lib"
		want="libip4tc.so.2 has no iptc_.*apt-get install libip4tc2" said="libip4tc.so.2 has no iptc_"
	fi
	out=$("$RIKLET" check --network bridge 2>&1)
	like "$out" "iptables +FAIL +required +$said.*-> apt-get install libip4tc2: riklet writes its rules" \
		"$how libip4tc: riklet check's iptables line names the library and the package to install"
	rk_start_standalone || { report; bail_out "$how: riklet did not start"; }
	rk_wait_status 30 warm RUNNING
	is "$(rk_status warm)/$(rk_runc_pid warm_c)" "RUNNING/$warm" "$how libip4tc: riklet starts (a Pod runs), the Pod kept" || report
	rk_pod "p$how" 18080
	rk_wait_status 60 "p$how" FAILED RUNNING
	is "$(rk_status "p$how")" FAILED "$how libip4tc: a Pod exposing a port is FAILED" || report
	like "$(rk_reason "p$how")" "$want" "$how libip4tc: the reason names the library and the fix" || report
	diag "$how: $(rk_reason "p$how")"
	ok "kill -0 $RK_PID" "$how libip4tc: riklet serves on"
	ok "grep -q '$want' '$RK_LOG'" "$how libip4tc: said in the log"
	is "$(rk_runc_ids | grep -c "^p$how")" 0 "$how libip4tc: no container of it left"
	rk_stop
	umount "$lib"
done
ok "! grep -qi 'segmentation\|sanitizer\|core dumped' '$RK_LOG'" "no crash"

rk_start_standalone || bail_out "riklet did not start with the library back"
rk_pod pmissing 18080 1
rk_pod pwrong 18081 1
both() { [[ $(rk_status pmissing) == RUNNING && $(rk_status pwrong) == RUNNING ]]; }
ok "wait_for 90 both" "the library back, both Pods (manifests edited) RUNNING" || report
is "$(rk_status warm)/$(rk_runc_pid warm_c)" "RUNNING/$warm" "the first Pod kept its container throughout"
rm -f "$MANIFESTS"/*.json
gone() { [[ -z $(rk_owned "$RK_PID") ]]; }
ok "wait_for 60 gone" "removed: nothing left" || diag "$(rk_owned "$RK_PID")"
rk_stop
done_testing
