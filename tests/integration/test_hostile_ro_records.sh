# test_hostile_ro_records.sh (hostile) — the records directory made read-only in the middle of a
# create (a bind mount remounted ro, in a private mount namespace; --network none): runc create
# is held 4 s, the directory turns read-only meanwhile, so the CREATING record is on disk but
# nothing after it can be written. riklet must keep serving; killed with -9 and restarted with the
# directory writable, the instance is rolled back and created again (RUNNING, one container, one
# conmon: no orphan of the first try), and once its manifest is removed nothing is left.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "needs a private mount namespace (unshare -n -m)"
need_cmd umoci skopeo jq busybox runc conmon
rk_init

rk_image
printf '#!/bin/sh\ncase " $* " in *" create "*|*" run "*) [ -e %s/slow ] && sleep 4 ;; esac\nexec %s "$@"\n' \
	"$TEST_TMP" "$(command -v runc)" >"$TEST_TMP/slowrunc"
chmod +x "$TEST_TMP/slowrunc"
conmons_of() { rk_conmons "$1_c"; }
containers_of() { rk_runc_ids | grep -cx -- "$1_c"; }

rk_start_standalone --runc "$TEST_TMP/slowrunc" || bail_out "riklet did not start"
rk_pod warm
rk_wait_status 90 warm RUNNING
is "$(rk_status warm)" RUNNING "a first Pod runs"
touch "$TEST_TMP/slow"
rk_pod ro
ok "wait_for 30 test -s '$STATE/instances/ro/c/conmon.pid'" "ro: conmon started, runc create held 4 s" || diag_file "$RK_LOG" 20
ok "grep -q '\"CREATING\"' '$STATE/records/ro.json'" "its CREATING record is on disk"
mount --bind "$STATE/records" "$STATE/records" && mount -o remount,bind,ro "$STATE/records" ||
	bail_out "cannot make the records directory read-only"
ok "! touch '$STATE/records/probe' 2>/dev/null" "the records directory is read-only"
logged_ro() { grep -q "cannot store instance ro.*Read-only file system\|instance ro.*Read-only file system" "$RK_LOG"; }
ok "wait_for 60 logged_ro" "riklet says it cannot store ro's record" || diag_file "$RK_LOG" 20
ok "kill -0 $RK_PID" "and is still up"
is "$(rk_status warm)" RUNNING "the first Pod is untouched"
first=$(rk_runc_pid ro_c)
rk_stop KILL
umount "$STATE/records"
rm -f "$TEST_TMP/slow"
rk_start_standalone --runc "$TEST_TMP/slowrunc" || bail_out "riklet did not restart"
rk_wait_status 90 ro RUNNING
is "$(rk_status ro)" RUNNING "restarted with the directory writable: ro RUNNING" || diag_file "$RK_LOG" 30
is "$(containers_of ro)/$(conmons_of ro)" 1/1 "with one container and one conmon (first try's pid ${first:-none})"
nok "[[ -n '$first' ]] && kill -0 '$first' 2>/dev/null && [[ '$first' != '$(rk_runc_pid ro_c)' ]]" \
	"the first try's container is not left running beside the new one"
is "$(rk_status warm)" RUNNING "the first Pod still runs"
rm -f "$MANIFESTS"/*.json
for p in warm ro; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop
ok "rk_nothing_left warm && rk_nothing_left ro && (($(conmons_of ro) == 0))" "nothing is left once the manifests are gone"
done_testing
