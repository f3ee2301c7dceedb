# test_standalone.sh — `riklet --standalone DIR` end to end with a real registry, skopeo, umoci,
# overlayfs and runc: a manifest becomes a RUNNING container whose output (with the workload's env)
# is in `riklet logs`; two containers in one Pod; a changed manifest replaces the instance; a
# removed one is TERMINATED and leaves nothing; exit 0 -> TERMINATED, exit 3 -> FAILED "code 3";
# riklet killed with -9 and restarted re-adopts the running container (same pid) and can still
# destroy it; SIGTERM stops riklet and leaves the workloads running.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc
rk_init

# One image for every case: prints its greeting, then exits with $EXIT_CODE when set, else idles
# (and exits 0 at once on SIGTERM).
CMD='["sh","-c","trap '"'exit 0'"' TERM INT; echo \"hello from busybox greeting=$GREETING\"; [ -z \"$EXIT_CODE\" ] || exit \"$EXIT_CODE\"; sleep 3600 & wait $!"]'
rk_registry_image "$CMD"

# manifest FILE NAME CONTAINER[:K=V[,K=V...]]... — a RIK Pod manifest in MANIFESTS/FILE
manifest() {
	local file=$1 name=$2 spec cs='[]' cname envs
	shift 2
	for spec in "$@"; do
		cname=${spec%%:*}
		envs=
		[[ $spec == *:* ]] && envs=${spec#*:}
		cs=$(jq -c --arg n "$cname" --arg img "$IMAGE" --arg envs "$envs" \
			'. + [{name: $n, image: $img, ports: null,
			       env: ($envs | if . == "" then null else split(",") | map(split("=") | {name: .[0], value: (.[1:] | join("="))}) end)}]' <<<"$cs")
	done
	jq -n --arg name "$name" --argjson cs "$cs" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null, spec: {containers: $cs, function: null}}' \
		>"$MANIFESTS/$file"
}
logs() { "$RIKLET" logs "$1" --state-dir "$STATE" 2>&1; }
logs_has() { [[ $(logs "$1") == *"$2"* ]]; }
runc_has() { rk_runc_ids | grep -qx -- "$1"; }
unlisted() { ! runc_has "$1"; }
# alive PID: the process exists and is not a zombie (a container orphaned by a killed riklet is
# reaped by pid 1, which may take its time)
alive() { [[ -r /proc/$1/stat && $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
on_fail_diag() { (($1)) || { diag "ps: $(rk_ps_json)"; diag_file "$RK_LOG" 30; }; }

# --- one container --------------------------------------------------------------------------
manifest web.json web c1:GREETING=first-value
rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not start"
rk_wait_status 60 web RUNNING
ok=$?
is "$(rk_status web)" RUNNING "web.json: instance web reaches RUNNING"
on_fail_diag $((ok == 0))
ok "wait_for 10 logs_has web 'hello from busybox greeting=first-value'" \
	"riklet logs web shows the container's output with the workload's env value"
ok "runc_has web_c1" "runc lists container web_c1"
pid1=$(rk_runc_pid web_c1)
like "$pid1" '^[1-9][0-9]*$' "web_c1 has a pid"
is "$(runc --root "$RUNC_ROOT" state web_c1 | jq -r .status)" running "runc says web_c1 is running"
ok "test -n \"\$(rk_mounts_under '$STATE/instances/web')\"" "web's rootfs is an overlay mounted under its instance dir"
like "$(rk_ps_json | jq -r '.instances[] | select(.id == "web") | .name + "/" + .kind')" '^web/Pod$' "ps --json has name and kind"

# --- two containers -------------------------------------------------------------------------
manifest two.json pair a:GREETING=from-a b:GREETING=from-b
rk_wait_status 60 two RUNNING
is "$(rk_status two)" RUNNING "two.json (two containers) reaches RUNNING"
ok "runc_has two_a && runc_has two_b" "runc lists both containers two_a and two_b"
ok "wait_for 10 logs_has two '[a] hello from busybox greeting=from-a'" "logs of two show container a's output, prefixed"
ok "wait_for 10 logs_has two '[b] hello from busybox greeting=from-b'" "logs of two show container b's output, prefixed"
isnt "$(rk_runc_pid two_a)" "$(rk_runc_pid two_b)" "the two containers are two processes"
is "$(rk_status web)" RUNNING "web is still RUNNING"

# --- a changed manifest replaces the instance -----------------------------------------------
created1=$(rk_runc_created web_c1)
manifest web.json web c1:GREETING=second-value
ok "wait_for 60 logs_has web 'greeting=second-value'" "after web.json changed, the new container prints the new env value"
rk_wait_status 30 web RUNNING
is "$(rk_status web)" RUNNING "the replaced instance web is RUNNING"
pid2=$(rk_runc_pid web_c1)
like "$pid2" '^[1-9][0-9]*$' "the new web_c1 has a pid"
isnt "$pid2" "$pid1" "the new web_c1 is a new process"
isnt "$(rk_runc_created web_c1)" "$created1" "the new web_c1 has a new creation time"
nok "logs_has web 'greeting=first-value'" "the old instance's output is gone with it"
nok "alive $pid1" "the old container's process is gone"

# --- a removed manifest destroys the instance -----------------------------------------------
rm -- "$MANIFESTS/two.json"
rk_wait_status 30 two TERMINATED
is "$(rk_status two)" TERMINATED "removing two.json gives TERMINATED"
ok "rk_nothing_left two" "two leaves no runc container, no mount, no instance dir"
nok "runc_has two_a || runc_has two_b" "runc no longer lists two_a or two_b"
is "$(rk_status web)" RUNNING "web is still RUNNING"

# --- containers that exit on their own ------------------------------------------------------
manifest done0.json done0 c:GREETING=bye,EXIT_CODE=0
manifest done3.json done3 c:GREETING=bye3,EXIT_CODE=3
rk_wait_status 60 done0 TERMINATED FAILED
is "$(rk_status done0)" TERMINATED "a container that exits 0 makes its instance TERMINATED"
rk_wait_status 60 done3 TERMINATED FAILED
is "$(rk_status done3)" FAILED "a container that exits 3 makes its instance FAILED"
like "$(rk_reason done3)" 'code 3' "the FAILED reason says 'code 3' ($(rk_reason done3))"
ok "logs_has done3 'greeting=bye3'" "the output of an ended instance is kept for riklet logs"
ended_unlisted() { ! runc_has done0_c && ! runc_has done3_c; }
ok "wait_for 10 ended_unlisted" "ended instances leave no runc container"
is "$(rk_mounts_under "$STATE/instances/done0")$(rk_mounts_under "$STATE/instances/done3")" "" \
	"ended instances leave no mount"
rm -- "$MANIFESTS/done0.json" "$MANIFESTS/done3.json"
ended_gone() { rk_nothing_left done0 2>/dev/null && rk_nothing_left done3 2>/dev/null; }
ok "wait_for 20 ended_gone && rk_nothing_left done0 && rk_nothing_left done3" \
	"removing the manifests of ended instances removes their directories"

# --- a container killed behind riklet's back -------------------------------------------------
manifest killed.json killed c:GREETING=to-be-killed
rk_wait_status 60 killed RUNNING
is "$(rk_status killed)" RUNNING "killed.json reaches RUNNING"
runc --root "$RUNC_ROOT" kill killed_c KILL
rk_wait_status 20 killed FAILED TERMINATED
is "$(rk_status killed)" FAILED "a container killed with SIGKILL makes its instance FAILED"
like "$(rk_reason killed)" 'signal 9' "the reason names the signal ($(rk_reason killed))"
ok "wait_for 10 unlisted killed_c" "no runc container left for it"
is "$(rk_mounts_under "$STATE/instances/killed")" "" "no mount left for it"
rm -- "$MANIFESTS/killed.json"
ok "wait_for 20 rk_nothing_left killed" "removing its manifest removes what is left"

# --- kill -9 and restart: the running container is re-adopted, not restarted ----------------
manifest lost.json lost c:GREETING=lost
rk_wait_status 60 lost RUNNING
is "$(rk_status lost)" RUNNING "lost.json reaches RUNNING"
pid_before=$(rk_runc_pid web_c1)
rk_stop KILL
is "$?" 137 "riklet killed with SIGKILL"
is "$(rk_runc_pid web_c1)" "$pid_before" "web_c1 keeps running while riklet is gone"
# lost_c dies while no riklet watches it
runc --root "$RUNC_ROOT" kill lost_c KILL
wait_for 10 bash -c "runc --root '$RUNC_ROOT' state lost_c | grep -q '\"stopped\"'"
rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not restart"
ok "wait_for 15 grep -q 'instance web re-adopted' '$RK_LOG'" "the restarted riklet re-adopts web"
rk_wait_status 15 lost FAILED TERMINATED
is "$(rk_status lost)" FAILED "a container that died while riklet was down: FAILED after the restart"
like "$(rk_reason lost)" 'while riklet was not running' "the reason says it was lost while riklet was down"
ok "wait_for 10 unlisted lost_c" "its stopped runc container is deleted"
is "$(rk_mounts_under "$STATE/instances/lost")" "" "its overlay is unmounted"
rm -- "$MANIFESTS/lost.json"
ok "wait_for 20 rk_nothing_left lost" "removing its manifest removes what is left"
sleep 1
is "$(rk_status web)" RUNNING "web is RUNNING after the restart"
is "$(rk_runc_pid web_c1)" "$pid_before" "web_c1 has the same pid: it was not restarted"
is "$(logs web | grep -c 'greeting=second-value')" 1 "the container printed its greeting once: not restarted"
is "$(rk_runc_ids | sort | tr '\n' ' ')" "web_c1 " "runc lists only web_c1 (nothing left from the ended instances)"
rm -- "$MANIFESTS/web.json"
rk_wait_status 30 web TERMINATED
is "$(rk_status web)" TERMINATED "the re-adopted instance is destroyed when its manifest is removed"
ok "rk_nothing_left web" "the re-adopted instance leaves nothing behind"
nok "alive $pid_before" "its process is gone"

# --- SIGTERM stops riklet and leaves the workloads running -----------------------------------
manifest keep.json keep c:GREETING=kept
rk_wait_status 60 keep RUNNING
is "$(rk_status keep)" RUNNING "keep.json reaches RUNNING"
kpid=$(rk_runc_pid keep_c)
rk_stop TERM
is "$?" 0 "riklet exits 0 on SIGTERM"
ok "alive $kpid" "keep's container process still runs after riklet stopped"
is "$(rk_runc_pid keep_c)" "$kpid" "runc still lists keep_c with the same pid"
is "$(rk_status keep)" RUNNING "the record still says RUNNING"
# While riklet is down: keep.json is removed, late.json added. The next riklet converges.
rm -- "$MANIFESTS/keep.json"
manifest late.json late c:GREETING=added-while-down
rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not restart"
rk_wait_status 30 keep TERMINATED
is "$(rk_status keep)" TERMINATED "keep.json removed while riklet was down: destroyed by the next riklet"
ok "rk_nothing_left keep" "keep leaves nothing behind"
rk_wait_status 60 late RUNNING
is "$(rk_status late)" RUNNING "late.json added while riklet was down: created by the next riklet"
ok "wait_for 10 logs_has late greeting=added-while-down" "and its output shows"

# Quick successive edits (while the previous replacement is still in flight): the last one wins.
for d in 0.01 0.05; do
	for e in 1 2 3; do manifest ".edit-$e" late c:GREETING=edit-$e-$d; done # prepared: the edits are quick
	cat "$MANIFESTS/.edit-1" >"$MANIFESTS/late.json"
	sleep "$d"
	cat "$MANIFESTS/.edit-2" >"$MANIFESTS/late.json"
	sleep "$d"
	cat "$MANIFESTS/.edit-3" >"$MANIFESTS/late.json"
	ok "wait_for 60 logs_has late greeting=edit-3-$d" "three edits $d s apart: the instance runs the last one" ||
		diag "logs: $(logs late)"
	sleep 2
	ok "logs_has late greeting=edit-3-$d" "and still runs it 2 s later" || diag "logs: $(logs late)"
	is "$(rk_status late)" RUNNING "late is RUNNING"
	is "$(rk_runc_ids | tr '\n' ' ')" "late_c " "one container for it in runc"
done
# An edit, then the file removed while that replacement is in flight: it stays removed.
for d in 0 0.01; do
	manifest ".edit-rm" late c:GREETING=edit-then-rm-$d
	if [[ $d != 0 ]]; then # from a running instance
		cat "$MANIFESTS/.edit-rm" >"$MANIFESTS/late.json"
		rk_wait_status 30 late RUNNING
	fi
	manifest ".edit-rm" late c:GREETING=edit-then-rm-2-$d
	cat "$MANIFESTS/.edit-rm" >"$MANIFESTS/late.json"
	sleep "$d"
	rm -- "$MANIFESTS/late.json"
	sleep 3
	rk_wait_status 30 late TERMINATED
	is "$(rk_status late)" TERMINATED "a manifest edited then removed $d s later ends TERMINATED"
	ok "rk_nothing_left late" "late leaves nothing behind"
	nok "runc_has late_c" "no container for it in runc"
done
rm -f -- "$MANIFESTS"/.edit-*
is "$(rk_runc_ids)" "" "no runc container is left in riklet's runc root"
is "$(rk_mounts_under "$STATE")" "" "no mount is left under the state dir"
rk_stop TERM
nok "grep -E 'stack traceback|attempt to' '$RK_LOG'" "no Lua error in riklet's log"
nok "grep 'did not stop within' '$RK_LOG'" "every destroyed container stopped on SIGTERM, no SIGKILL needed"

done_testing
