# test_hostile_create.sh (hostile) — the create path's newer parts, attacked (--network none):
#  - lazy drivers: a clean node gets 4 Pod manifests at once, so 4 CREATEs race the first load of
#    the Pod driver: one load, all RUNNING;
#  - conmon's sync pipe: runc failing with 48 KiB on stderr (conmon passes it on as the sync
#    line's message), runc that kills conmon mid-create (the pipe ends without a line), a container that
#    exits at once (0 and 3), 6 creates in flight behind --runtime-parallel 1: each ends (FAILED
#    with a readable reason of bounded size, or RUNNING/TERMINATED with the right exit code), no
#    create hangs, nothing is left of the failed ones (runc container, conmon, directory), and
#    riklet serves a good Pod afterwards.
# Not here: a runtime writing more than a pipe's 64 KiB on stderr (conmon reads it only after the
# runtime exited; riklet-runc-run drains it): test_runtime_stderr.sh. runc itself writes its errors
# to its --log file and a line on stderr.
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd umoci skopeo jq busybox runc conmon
rk_init

rk_image
# pod NAME [CMD_JSON]: a one-container Pod manifest, renamed into place
pod() {
	jq -n --arg n "$1" --arg img "oci:$TEST_TMP/layout:latest" --argjson cmd "${2:-null}" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [{name: "c", image: $img}
		  + (if $cmd == null then {} else {command: $cmd} end)]}}' >"$MANIFESTS/.$1"
	mv "$MANIFESTS/.$1" "$MANIFESTS/$1.json"
}
ended() { local s; s=$(rk_status "$1"); [[ $s == FAILED || $s == TERMINATED ]]; }
conmons_of() { rk_conmons "$1_c"; }
leftless() { # leftless NAME: no runc container, conmon or instance directory of NAME
	! rk_runc_ids | grep -qx -- "$1_c" && (($(conmons_of "$1") == 0)) && [[ ! -e $STATE/instances/$1/c/config.json ]]
}

# --- 4 CREATEs racing the first load of the Pod driver ---------------------------------------------
rk_start_standalone || bail_out "riklet did not start"
ok "wait_for 10 grep -q 'boot: 0 record' '$RK_LOG'" "clean node: riklet booted"
nok "grep -q 'Pod driver loaded' '$RK_LOG'" "no Pod driver loaded at start"
for p in r1 r2 r3 r4; do
	jq -n --arg n "$p" --arg img "oci:$TEST_TMP/layout:latest" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/.$p"
done
for p in r1 r2 r3 r4; do mv "$MANIFESTS/.$p" "$MANIFESTS/$p.json"; done
for p in r1 r2 r3 r4; do rk_wait_status 90 "$p" RUNNING; done
is "$(for p in r1 r2 r3 r4; do rk_status "$p"; done | tr '\n' ' ')" "RUNNING RUNNING RUNNING RUNNING " \
	"4 Pods created at once on a clean node all run" || diag_file "$RK_LOG" 30
is "$(grep -c 'Pod driver loaded' "$RK_LOG")" 1 "the Pod driver was loaded once"
rm -f "$MANIFESTS"/r?.json
for p in r1 r2 r3 r4; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop

# --- conmon's sync pipe --------------------------------------------------------------------------
# a runc whose create/run misbehaves as $TEST_TMP/mode says (read at each call), else the real one
REAL=$(command -v runc)
cat >"$TEST_TMP/hrunc" <<EOF
#!/bin/bash
mode=\$(cat "$TEST_TMP/mode" 2>/dev/null)
case " \$* " in
*" create "* | *" run "*)
	case \$mode in
	bigerr) head -c 49152 /dev/zero | tr '\\0' 'E' >&2; echo " the end of runc's error" >&2; exit 1 ;;
	killconmon) # (conmon, or the shim between it and this runtime: then its parent)
		p=\$PPID; [[ \$(cat /proc/\$p/comm) == conmon ]] || p=\$(awk '/^PPid:/ { print \$2 }' /proc/\$p/status)
		kill -9 \$p; exit 1 ;;
	esac ;;
esac
exec "$REAL" "\$@"
EOF
chmod +x "$TEST_TMP/hrunc"
rk_start_standalone --runc "$TEST_TMP/hrunc" --runtime-parallel 1 || bail_out "riklet did not start"

echo bigerr >"$TEST_TMP/mode"
pod bigerr
ok "wait_for 60 ended bigerr" "runc failing with 48 KiB on stderr: the create ends" || diag_file "$RK_LOG" 20
is "$(rk_status bigerr)" FAILED "FAILED"
like "$(rk_reason bigerr)" "failed under conmon: .*EEEE" "with runc's message in the reason"
reason=$(rk_reason bigerr)
ok "((${#reason} < 8192))" "with a reason of bounded size (${#reason} bytes): ${reason:0:120}..."
ok "kill -0 $RK_PID" "riklet is still up"
ok "wait_for 30 leftless bigerr" "nothing is left of it (runc container, conmon, bundle)"

echo killconmon >"$TEST_TMP/mode"
pod killed
ok "wait_for 60 ended killed" "conmon killed mid-create (its sync pipe ends without a line): the create ends" ||
	diag_file "$RK_LOG" 20
is "$(rk_status killed)" FAILED "FAILED: $(rk_reason killed)"
ok "wait_for 30 leftless killed" "nothing is left of it"
: >"$TEST_TMP/mode"

pod quick0 '["true"]'
pod quick3 '["sh","-c","exit 3"]'
ok "wait_for 60 ended quick0" "a container that exits 0 at once: its instance ends" || diag_file "$RK_LOG" 20
ok "wait_for 60 ended quick3" "one that exits 3 at once too"
is "$(rk_status quick0)" TERMINATED "exit 0: TERMINATED ($(rk_reason quick0))"
is "$(rk_status quick3)" FAILED "exit 3: FAILED"
like "$(rk_reason quick3)" "code 3" "with its exit code: $(rk_reason quick3)"

# 6 creates in flight behind --runtime-parallel 1 (one runc at a time, each waiting its turn)
for i in 1 2 3 4 5 6; do pod "m$i"; done
for i in 1 2 3 4 5 6; do rk_wait_status 120 "m$i" RUNNING; done
is "$(for i in 1 2 3 4 5 6; do rk_status "m$i"; done | tr '\n' ' ')" "$(printf 'RUNNING %.0s' 1 2 3 4 5 6)" \
	"6 Pods created at once behind --runtime-parallel 1 all run" || diag_file "$RK_LOG" 30
pod good
rk_wait_status 60 good RUNNING
is "$(rk_status good)" RUNNING "and a good Pod runs after all of these"

rm -f "$MANIFESTS"/*.json
for p in bigerr killed quick0 quick3 m1 m2 m3 m4 m5 m6 good; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop
ok "for p in bigerr killed quick0 quick3 m1 m6 good; do rk_nothing_left \$p || exit 1; done" \
	"once the manifests are removed nothing is left"
done_testing
