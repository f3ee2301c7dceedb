# test_conmon.sh — containers under conmon, end to end with a real registry, runc and conmon:
# the CRI log on disk and `riklet logs` (plain lines, partial lines joined, --timestamps, --tail,
# --since, --follow, CONTAINER, --previous after a restart), the --log-size-max cap; real exit
# codes (exit 3, a signal, an exit while riklet is stopped, a later exit seen by a new riklet);
# containers and their conmon outliving riklet (kill -9 and SIGTERM, same pids); a failing runc
# and an fd limit at restart never taking a healthy Pod for lost; a destroy whose runc fails is
# not TERMINATED; no conmon, pid file or exit file left after destroy and `riklet cleanup`.
# The workload's command, args, workingDir, env, tmpfs mount and cpu/memory limits reach the container
# (its output through riklet logs, config.json and the kernel's cgroup files).
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc conmon unshare pgrep
rk_init

# The image runs app.sh: counts its runs in /runs (the container's overlay survives a restart),
# prints to stdout and stderr, a line in two parts, $SPAM lines, then exits $EXIT_CODE (after
# $EXIT_AFTER s, or once the file $EXIT_ON exists) or ticks twice a second; SIGTERM: exit 0,
# SIGUSR1: exit 42.
cat >"$TEST_TMP/app.sh" <<'EOF'
#!/bin/sh
trap 'exit 0' TERM INT
trap 'exit 42' USR1
n=$(cat /runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n >/runs
echo "start $NAME run $n"
echo "err line $NAME" >&2
printf 'partial-'; sleep 0.3; echo 'joined'
i=0; while [ $i -lt "${SPAM:-0}" ]; do echo "spam line $i abcdefghijklmnopqrstuvwxyz0123456789"; i=$((i + 1)); done
[ -n "$SPAM" ] && echo "spam done"
[ -n "$EXIT_AFTER" ] && { sleep "$EXIT_AFTER" & wait $!; }
[ -n "$EXIT_ON" ] && while [ ! -e "$EXIT_ON" ]; do sleep 0.1 & wait $!; done
[ -n "$EXIT_CODE" ] && exit "$EXIT_CODE"
i=0; while :; do i=$((i + 1)); echo "tick $i"; sleep 0.5 & wait $!; done
EOF
chmod +x "$TEST_TMP/app.sh"
registry_start || bail_out "docker-registry did not start"
mkimage --cmd '["/app.sh"]' --add "$TEST_TMP/app.sh:/app.sh" "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/app:latest" || bail_out "push failed"
IMAGE=$REGISTRY/app:latest

# manifest NAME [K=V...] — a one-container (c) Pod in MANIFESTS/NAME.json; NAME is in its env
manifest() {
	local name=$1 env
	shift
	env=$(jq -nc --arg n "$name" '[{name: "NAME", value: $n}] + ($ARGS.positional | map(split("=") | {name: .[0], value: (.[1:] | join("="))}))' --args "$@")
	jq -n --arg name "$name" --arg img "$IMAGE" --argjson env "$env" \
		'{apiVersion: "v1", kind: "Pod", name: $name, spec: {containers: [{name: "c", image: $img, env: $env}]}}' \
		>"$MANIFESTS/$name.json"
}
logs() { "$RIKLET" logs "$@" --state-dir "$STATE"; }
conmon_pid() { cat "$STATE/instances/$1/c/conmon.pid" 2>/dev/null; }
# conmons of this test's runc root still running, one pid a line
our_conmons() { pgrep -f -- "conmon .*--runtime-arg=$RUNC_ROOT( |$)" || true; }
alive() { [[ -r /proc/$1/stat && $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
on_fail_diag() { (($1)) || { diag "ps: $(rk_ps_json)"; diag_file "$RK_LOG" 30; }; }
POLICY=$TEST_TMP/policy
mkdir -p "$POLICY"
cat >"$POLICY/restart.lua" <<'EOF'
-- restart the Pod "rs" twice at once, never anything else
local R = {}
function R.decide(w, exit)
  if w.name == "rs" and (exit.restart_count or 0) < 2 then return { action = "restart", delay = 0 } end
  return { action = "stop" }
end
return R
EOF
START=(--insecure-registries "$REGISTRY" --log-size-max 20000 --policy-dir "$POLICY")

# --- the CRI log and riklet logs --------------------------------------------------------------
manifest lg
manifest spam SPAM=2000 EXIT_AFTER=3600 # sleeps after its lines: no ticks to rotate "spam done" out of the capped log
rk_start_standalone "${START[@]}" || bail_out "riklet did not start"
rk_wait_status 60 lg RUNNING
is "$(rk_status lg)" RUNNING "lg reaches RUNNING" || on_fail_diag 0
LOG=$STATE/instances/lg/c/logs/0.log
ok "wait_for 10 grep -q 'tick 2' '$LOG'" "the container's output is in $LOG"
cri='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}(Z|[+-][0-9]{2}:[0-9]{2}) (stdout|stderr) [PF] '
is "$(grep -cvE "$cri" "$LOG")" 0 "every line on disk is CRI: RFC 3339 nano timestamp, stream, P/F, text"
ok "grep -qE ' stderr F err line lg\$' '$LOG'" "stderr is there as stream stderr"
ok "grep -qE ' stdout P partial-\$' '$LOG' && grep -qE ' stdout F joined\$' '$LOG'" "a line written in two parts is P then F on disk"
out=$(logs lg)
like "$out" $'(^|\n)start lg run 1\n' "riklet logs prints plain lines"
like "$out" $'\nerr line lg\n' "stdout and stderr interleaved"
like "$out" $'\npartial-joined\n' "a partial line is joined with its end"
unlike "$out" 'stdout [PF] ' "no CRI prefix by default"
ts=$(logs lg --timestamps | head -n 1)
like "$ts" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+) start lg run 1$' "--timestamps prefixes the RFC 3339 time"
is "$(logs lg --tail 2 | wc -l)" 2 "--tail 2 prints two lines"
like "$(logs lg --tail 2 | head -n 1)" '^tick [0-9]+$' "the last ones"
is "$(logs lg --tail 0 | wc -l)" 0 "--tail 0 prints nothing"
is "$(logs lg --since 1h | head -n 1)" "start lg run 1" "--since 1h: everything"
future=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
is "$(logs lg --since "$future" | wc -l)" 0 "--since a time to come: nothing"
sleep 1.2
recent=$(logs lg --since 1s)
unlike "$recent" 'start lg' "--since 1s leaves out the first lines"
like "$recent" 'tick' "and keeps the recent ones"
out=$(logs lg --since yesterday 2>&1)
isnt "$?" 0 "--since with a bad value fails"
like "$out" 'RFC 3339' "and says what it takes"
is "$(logs lg c --tail 1 | wc -l)" 1 "riklet logs ID CONTAINER"
out=$(logs lg nope 2>&1)
like "$out" 'no container "nope"' "an unknown container is refused by name"
# --follow: the lines as they come, until the instance ends
logs lg --follow >"$TEST_TMP/follow.out" 2>&1 &
fpid=$!
followed_ticks() { grep -c tick "$TEST_TMP/follow.out"; }
more_ticks() { (($(followed_ticks) > $1 + 2)); }
sleep 0.5
ok "wait_for 10 more_ticks $(followed_ticks)" "--follow keeps printing new lines"
rm -- "$MANIFESTS/lg.json"
ok "wait_for 20 bash -c '! kill -0 $fpid 2>/dev/null'" "--follow ends when the instance is destroyed"
wait "$fpid" 2>/dev/null
is "$(grep -c 'start lg run 1' "$TEST_TMP/follow.out")" 1 "--follow printed the first line once"
rk_wait_status 30 lg TERMINATED
ok "rk_nothing_left lg" "lg leaves nothing behind"

# --- the size cap ------------------------------------------------------------------------------
rk_wait_status 30 spam RUNNING
ok "wait_for 20 grep -q 'spam done' '$STATE/instances/spam/c/logs/0.log'" "spam printed its 2000 lines (120 kB)"
size=$(stat -c %s "$STATE/instances/spam/c/logs/0.log")
ok "test $size -le 20000" "its log file stays within --log-size-max 20000 ($size bytes)"
like "$(logs spam | grep spam | tail -n 1)" '^spam done$' "riklet logs shows the last lines"

# --- one runtime invocation for a one-container Pod (conmon's runtime riklet-runc-run: runc run
# --detach, no runc start); a Pod of two keeps runc create for both, then runc start (after the
# size cap)
cm_args() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }
like "$(cm_args "$(conmon_pid spam)")" "--runtime=[^ ]*/riklet-runc-run .*--runtime-arg=$(command -v runc) --runtime-arg=--root " \
	"spam (one container): conmon's runtime is riklet-runc-run, given the real runc first"
like "$(grep -F '] instance spam: created in' "$RK_LOG")" 'conmon \+ runc run [0-9.]+' "spam: created by conmon + runc run"
unlike "$(grep -F '] instance spam: created in' "$RK_LOG")" 'runc start|runc create' "with no runc create, no runc start"
jq -n --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: "duo", spec: {containers: [
	{name: "a", image: $img, env: [{name: "NAME", value: "duo-a"}]},
	{name: "b", image: $img, env: [{name: "NAME", value: "duo-b"}]}]}}' >"$MANIFESTS/duo.json"
rk_wait_status 60 duo RUNNING
is "$(rk_status duo)" RUNNING "duo (two containers) reaches RUNNING" || on_fail_diag 0
for c in a b; do
	like "$(cm_args "$(cat "$STATE/instances/duo/$c/conmon.pid" 2>/dev/null)")" \
		"--runtime=[^ ]*/riklet-runc-run .*--runtime-arg=--create --runtime-arg=$(command -v runc) --runtime-arg=--root " \
		"duo/$c: conmon's runtime is riklet-runc-run --create: runc create (both containers exist before either starts)"
	ok "wait_for 10 grep -q 'start duo-$c run 1' '$STATE/instances/duo/$c/logs/0.log'" "duo/$c runs, its output logged"
done
like "$(grep -F '] instance duo: created in' "$RK_LOG")" 'conmon \+ runc create [0-9.]+, runc start [0-9.]+' \
	"duo: created by conmon + runc create, then runc start"
rm -f -- "$MANIFESTS/duo.json"
ok "wait_for 60 rk_nothing_left duo" "duo removed, nothing left"

# --- exit codes --------------------------------------------------------------------------------
manifest e3 EXIT_CODE=3
rk_wait_status 60 e3 FAILED TERMINATED
is "$(rk_status e3)" FAILED "exit 3: FAILED"
like "$(rk_reason e3)" 'exited with code 3$' "with the exit code ($(rk_reason e3))"
like "$(logs e3)" 'start e3 run 1' "its logs are kept after it FAILED"
manifest e0 EXIT_CODE=0
rk_wait_status 60 e0 FAILED TERMINATED
is "$(rk_status e0)" TERMINATED "exit 0: TERMINATED"
like "$(logs e0)" 'start e0 run 1' "its logs are kept after it ended"
manifest sig
rk_wait_status 60 sig RUNNING
runc --root "$RUNC_ROOT" kill sig_c KILL
rk_wait_status 20 sig FAILED TERMINATED
like "$(rk_reason sig)" 'killed by signal 9' "killed with SIGKILL: the signal ($(rk_reason sig))"
manifest usr1
rk_wait_status 60 usr1 RUNNING
runc --root "$RUNC_ROOT" kill usr1_c USR1
rk_wait_status 20 usr1 FAILED TERMINATED
like "$(rk_reason usr1)" 'exited with code 42$' "exit 42 on SIGUSR1: code 42 ($(rk_reason usr1))"
rm -f -- "$MANIFESTS"/{e3,e0,sig,usr1,spam}.json

# --- the workload's command, args, working dir, env, tmpfs mount and limits reach the container --
jq -n --arg img "$IMAGE" '{apiVersion: "v1", kind: "Pod", name: "wl", spec: {containers: [{name: "c", image: $img,
	command: ["/bin/sh", "-c"],
	args: ["echo cmd-ok; echo cwd=$(pwd); echo FOO=$FOO; grep \" /scratch tmpfs \" /proc/mounts; echo x >/scratch/f && echo scratch-writable; cat /proc/self/cgroup; exec sleep 1000"],
	workingDir: "/etc", env: [{name: "FOO", value: "bar baz"}],
	volumeMounts: [{mountPath: "/scratch", type: "tmpfs"}],
	resources: {limits: {memory: "64Mi", cpu: "500m"}}}]}}' >"$MANIFESTS/wl.json"
rk_wait_status 60 wl RUNNING
is "$(rk_status wl)" RUNNING "a Pod with command, args, workingDir, env, a tmpfs and limits: RUNNING" || diag "$(rk_reason wl)"
wl_printed() { logs wl | grep -q '^0::'; }
ok "wait_for 10 wl_printed" "it printed its cgroup"
out=$(logs wl)
like "$out" '(^|'$'\n'')cmd-ok'$'\n' "command + args are what runs (riklet logs: $(echo "$out" | head -n 1))"
like "$out" $'\ncwd=/etc\n' "workingDir is its working directory"
like "$out" $'\nFOO=bar baz\n' "env reaches it"
like "$out" $'\n[^\n]* /scratch tmpfs [^\n]*rw[^\n]*\n' "/scratch is a tmpfs mount"
like "$out" $'\nscratch-writable\n' "and writable"
cfgjson=$STATE/instances/wl/c/config.json
is "$(jq -c '.process.args' "$cfgjson")" "$(jq -c '.spec.containers[0].command + .spec.containers[0].args' "$MANIFESTS/wl.json")" \
	"config.json: process.args = command + args"
is "$(jq -r '.linux.resources.memory.limit' "$cfgjson")" 67108864 "config.json: memory limit 64Mi"
is "$(jq -r '[.linux.resources.cpu.quota, .linux.resources.cpu.period] | join(" ")' "$cfgjson")" "50000 100000" \
	"config.json: cpu 500m = 50000 us per 100000 us"
wlpid=$(cat "$STATE/instances/wl/c/init.pid" 2>/dev/null)
# the kernel's view: the cgroup files of the container's init (cgroup v2, or v1 controllers)
cg_of() { awk -F: -v c="$1" '$2 == c { print $3 }' "/proc/$wlpid/cgroup" 2>/dev/null; }
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
	mem_file=/sys/fs/cgroup$(cg_of "")/memory.max cpu_val=$(cat "/sys/fs/cgroup$(cg_of "")/cpu.max" 2>/dev/null)
else
	mem_file=/sys/fs/cgroup/memory$(cg_of memory)/memory.limit_in_bytes
	cpu_val="$(cat "/sys/fs/cgroup/cpu$(cg_of cpu)/cpu.cfs_quota_us" 2>/dev/null) $(cat "/sys/fs/cgroup/cpu$(cg_of cpu)/cpu.cfs_period_us" 2>/dev/null)"
fi
is "$(cat "$mem_file" 2>/dev/null)" 67108864 "the kernel applies the memory limit ($mem_file)"
is "$cpu_val" "50000 100000" "and the cpu limit (quota and period)"
rm -f -- "$MANIFESTS/wl.json"
rk_wait_status 30 wl TERMINATED
ok "rk_nothing_left wl" "wl leaves nothing behind"

# --- restart: a new run, a new log, the previous one kept ----------------------------------------
manifest rs EXIT_CODE=1
rk_wait_status 60 rs FAILED
is "$(rk_status rs)" FAILED "rs exits 1 three times (two restarts), then FAILED"
like "$(logs rs)" 'start rs run 3' "riklet logs shows the third run"
is "$(rk_ps_json | jq -r '.instances[] | select(.id == "rs") | .containers[0].restart_count')" 2 \
	"the restarts went through the lifecycle: restart_count 2 in ps --json"
like "$(rk_reason rs)" 'after 2 restarts' "and the FAILED reason counts them ($(rk_reason rs))"
unlike "$(logs rs)" 'run 2' "and only it"
like "$(logs rs --previous)" 'start rs run 2' "--previous shows the run before"
ok "test ! -e '$STATE/instances/rs/c/logs/0.log'" "the first run's log is removed (current + previous kept)"
rm -- "$MANIFESTS/rs.json"

# --- riklet stopped: containers and their conmon run on, exits are seen later --------------------
# (late exits once the test drops /late-exit into its rootfs, after riklet is killed: no timing to guess)
manifest keep
manifest late EXIT_ON=/late-exit EXIT_CODE=7
manifest gone
manifest tp
rk_wait_status 60 keep RUNNING && rk_wait_status 60 late RUNNING && rk_wait_status 60 gone RUNNING
rk_wait_status 60 tp RUNNING
is "$(rk_status keep)$(rk_status late)$(rk_status gone)" RUNNINGRUNNINGRUNNING "keep, late and gone are RUNNING"
kpid=$(rk_runc_pid keep_c)
kcon=$(conmon_pid keep)
like "$kcon" '^[0-9]+$' "keep's conmon has a pid file"
rk_stop KILL
ok "alive $kpid && alive $kcon" "riklet killed with -9: keep's container and its conmon run on"
# tp's record is tampered with meanwhile: its conmon pid names another process, its log a file
# that is not a log, its run and pid are garbage
sleep 1000 &
decoy=$!
echo "SECRET-NOT-A-LOG" >"$TEST_TMP/secret"
jq --argjson d "$decoy" --arg s "$TEST_TMP/secret" \
	'.containers[0] |= (.conmon_pid = $d | .log = $s | .run = "../../x" | .pid = -5)' \
	"$STATE/records/tp.json" >"$TEST_TMP/tp.json" && mv -- "$TEST_TMP/tp.json" "$STATE/records/tp.json"
runc --root "$RUNC_ROOT" kill gone_c KILL
touch "$STATE/instances/late/c/rootfs/late-exit"
ok "wait_for 60 test -s '$STATE/instances/late/c/exit/exit'" "late exits while riklet is down: conmon writes its exit file"
rk_start_standalone "${START[@]}" || bail_out "riklet did not restart"
rk_wait_status 60 late FAILED TERMINATED
like "$(rk_reason late)" 'exited with code 7 while riklet was not running' "the next riklet reports late's real exit code ($(rk_reason late))"
rk_wait_status 60 gone FAILED TERMINATED
like "$(rk_reason gone)" 'killed by signal 9 .*while riklet was not running' "and gone's signal ($(rk_reason gone))"
is "$(rk_status keep)" RUNNING "keep is re-adopted RUNNING"
# a tampered record is input riklet cannot trust: it is quarantined, its id held (nothing it names
# is used, signalled or removed), until the operator deals with it
rk_wait_status 60 tp UNKNOWN
is "$(rk_status tp)" UNKNOWN "tp, its record tampered with, is quarantined: UNKNOWN in ps"
like "$(rk_reason tp)" 'record is not valid' "... with the reason ($(rk_reason tp | cut -c1-120))"
ok "ls '$STATE'/records/quarantine/tp.json*" "... its record moved to records/quarantine/"
out=$(logs tp)
unlike "$out" 'SECRET' "riklet logs does not read the file tp's record names as its log"
tpid=$(rk_runc_pid tp_c)
ok "[[ -n '$tpid' ]] && alive '$tpid'" "tp's container is kept running (held, not a leftover)"
rm -- "$MANIFESTS/tp.json"
# riklet reads the directory's changes in order: once a manifest written after it is seen, so was
# the removal (was: sleep 2, which a busy machine could outrun and the check then proved nothing)
echo '{"apiVersion": "v1", "kind": "Pod", "name": "tpmark", "spec": {"containers": []}}' >"$TEST_TMP/tpmark.json"
mv -- "$TEST_TMP/tpmark.json" "$MANIFESTS/tpmark.json"
seen() { [[ -n $(rk_status tpmark) ]]; }
ok "wait_for 60 seen" "a manifest written after tp's removal is seen"
is "$(rk_status tp)" UNKNOWN "removing its manifest does not destroy a held instance"
ok "alive $decoy" "the process its record named as its conmon was not signalled"
kill "$decoy"
wait "$decoy" 2>/dev/null
# the operator resolves it: the quarantined record removed, the next start removes what tp left
rm -f -- "$STATE"/records/quarantine/tp.*
is "$(rk_runc_pid keep_c)" "$kpid" "with the same container pid"
is "$(conmon_pid keep)" "$kcon" "and the same conmon"
rk_stop TERM
ok "alive $kpid && alive $kcon" "riklet stopped with SIGTERM: keep and its conmon run on"
rk_start_standalone "${START[@]}" || bail_out "riklet did not restart"
ok "wait_for 15 grep -q 'instance keep re-adopted' '$RK_LOG'" "keep is re-adopted again"
ok "wait_for 20 rk_nothing_left tp" "its quarantined record removed, the next start removed what tp left (container, conmon, directory)"
runc --root "$RUNC_ROOT" kill keep_c USR1
rk_wait_status 20 keep FAILED TERMINATED
like "$(rk_reason keep)" 'exited with code 42$' "an exit after the restart has its real code ($(rk_reason keep))"
ok "wait_for 10 bash -c '! kill -0 $kcon 2>/dev/null'" "keep's conmon is gone"
rm -f -- "$MANIFESTS"/{keep,late,gone,tpmark}.json
# (one function: `wait_for 30 A && B` waits for A alone, then asks B once)
nothing_left_of() { local p; for p in "$@"; do rk_nothing_left "$p" || return 1; done; }
ok "wait_for 30 nothing_left_of keep late gone" "their manifests removed: nothing left"

# --- runc failing never means a container is gone ------------------------------------------------
HS=(h1 h2 h3 h4 h5 h6 h7 h8 h9 h10)
statuses() { local p; for p in "$@"; do printf '%s ' "$(rk_status "$p")"; done; }
for p in "${HS[@]}"; do manifest "$p"; done
for p in "${HS[@]}"; do rk_wait_status 60 "$p" RUNNING; done
is "$(statuses "${HS[@]}")" "$(printf 'RUNNING %.0s' "${HS[@]}")" "h1..h10 are RUNNING"
pids=$(for p in h1 h2 h3 h4; do rk_runc_pid "${p}_c"; done | tr '\n' ' ')
rk_stop TERM
# a runc that fails every call with 127, as a missing one does
printf '#!/bin/sh\necho "runc: broken for this test" >&2\nexit 127\n' >"$TEST_TMP/badrunc"
chmod +x "$TEST_TMP/badrunc"
rk_start_standalone "${START[@]}" --runc "$TEST_TMP/badrunc" || bail_out "riklet with a failing runc did not start"
sleep 3
is "$(statuses "${HS[@]}")" "$(printf 'RUNNING %.0s' "${HS[@]}")" \
	"restarted with a runc that exits 127: every healthy Pod stays RUNNING"
rm -- "$MANIFESTS/h4.json"
rk_wait_status 30 h4 FAILED TERMINATED
is "$(rk_status h4)" FAILED "a destroy whose runc fails is not TERMINATED"
like "$(rk_reason h4)" 'runc' "the reason names runc ($(rk_reason h4))"
ok "alive $(echo "$pids" | awk '{ print $4 }')" "and h4's container still runs"
rk_stop TERM
# no runc on PATH at all, and an fd limit of 12: some Pods cannot even be watched (no fd for a
# pidfd) and riklet may not get far beyond adopting them; its own log is kept apart (14: riklet
# holds 11 fds when idle, the worker pool's included)
mkdir -p "$TEST_TMP/nopath"
ln -sf "$(command -v conmon)" "$TEST_TMP/nopath/conmon"
ULOG=$TEST_TMP/riklet-ulimit.log
env PATH="$TEST_TMP/nopath" /bin/bash -c 'ulimit -n 14; exec "$@"' _ "$RIKLET" --standalone "$MANIFESTS" \
	"${RK_OPTS[@]}" "${START[@]}" >"$ULOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
adopted9() { (($(grep -c 're-adopted: 1 container' "$ULOG") == 9)); }
ok "wait_for 20 adopted9" "with no runc on PATH and ulimit -n 14, riklet re-adopts the 9 running Pods" || diag_file "$ULOG"
ok "grep -q 'cannot watch process' '$ULOG'" "some of them cannot be watched (no fd for a pidfd): a failed watch, not an exit"
# the Pod that exits meanwhile is one riklet watches through a pidfd: with its 14 fds all taken
# (the pidfds of the first few adopted), an unwatched Pod's exit file cannot even be read until an
# fd frees. Which ones got a pidfd depends on what else held an fd at adoption (h3 did on a quiet
# machine; at load 15-19 h3 was killed and stayed RUNNING with no reason, as an unwatched Pod
# does; its monitor also froze the agent then: tests/lua/conmon_monitor.test.lua): asked of the
# kernel (/proc/PID/fdinfo)
watched() { grep -qx "Pid:[[:space:]]*$(conmon_pid "$1")" /proc/"$RK_PID"/fdinfo/* 2>/dev/null; }
pick_watched() { for p in h3 h5 h6 h7 h8 h9 h10; do watched "$p" && { echo "$p"; return 0; }; done; return 1; }
wait_for 10 pick_watched
EX=$(pick_watched) || { EX=h3; diag "none of h3, h5-h10 is watched through a pidfd: h3 is killed all the same"; }
runc --root "$RUNC_ROOT" kill "${EX}_c" USR1
ex_failed() { [[ $(rk_status "$EX") == FAILED ]]; }
ok "wait_for 30 ex_failed" "$EX exits meanwhile: reported with no runc and no fd to spare"
like "$(rk_reason "$EX")" 'exited with code 42$' "with its real exit code ($(rk_reason "$EX"))"
ok "kill -0 $RK_PID" "riklet is still up: out of fds, its standalone front-end waits instead of ending the agent" || diag_file "$ULOG"
# (whether the manifest watch finds an fd depends on when the front-end starts: after the start-up
# check, which runs beside the re-adoption, the monitors' failed watches have left some free;
# test_standalone_emfile.sh makes it fail every time)
if grep -q 'cannot watch .*manifests' "$ULOG"; then
	ok "grep -q 'cannot watch .*manifests.*Too many open files.*trying again in 5 s' '$ULOG'" "and it says so, with what to do"
else
	ok "grep -q 'watching .*manifests for workload manifests' '$ULOG'" "the manifest watch found an fd this time (no failure to report): watching"
fi
rk_stop TERM
HEALTHY=()
for p in "${HS[@]}"; do [[ $p == h4 || $p == "$EX" ]] || HEALTHY+=("$p"); done
is "$(statuses "${HEALTHY[@]}")" "$(printf 'RUNNING %.0s' "${HEALTHY[@]}")" \
	"restarted with no runc on PATH and ulimit -n 14: healthy Pods stay RUNNING"
unlike "$(for p in "${HS[@]}"; do rk_reason "$p"; done)" 'lost|gone|unknown' "no Pod is called lost or gone"
rk_start_standalone "${START[@]}" || bail_out "riklet did not restart"
is "$(statuses "${HEALTHY[@]}")" "$(printf 'RUNNING %.0s' "${HEALTHY[@]}")" "they are RUNNING with a working runc"
is "$(for p in h1 h2; do rk_runc_pid "${p}_c"; done | tr '\n' ' ')" "$(echo "$pids" | awk '{ print $1 " " $2 " " }')" \
	"with the same container pids"
ok "wait_for 30 rk_nothing_left h4" "h4, whose destroy failed, is removed by a riklet with a working runc"
ok "wait_for 30 bash -c '! kill -0 $(echo "$pids" | awk '{ print $4 }') 2>/dev/null'" "and its container is gone"

# --- riklet killed while conmon is in `runc create` (`runc run`: one-container Pods) --------------
rk_stop TERM
printf '#!/bin/sh\ncase " $* " in *" create "*|*" run "*) sleep 12 ;; esac\nexec %s "$@"\n' "$(command -v runc)" >"$TEST_TMP/slowrunc"
chmod +x "$TEST_TMP/slowrunc"
rk_start_standalone "${START[@]}" --runc "$TEST_TMP/slowrunc" || bail_out "riklet with a slow runc did not start"
manifest mid
manifest ghost
ok "wait_for 30 test -s '$STATE/instances/mid/c/conmon.pid' -a -s '$STATE/instances/ghost/c/conmon.pid'" \
	"mid and ghost: conmon started, runc create in progress (12 s)"
midcon=$(conmon_pid mid)
ghostcon=$(conmon_pid ghost)
rk_stop KILL
# ghost's manifest and record are gone: nothing but its conmon and directory say it existed
rm -f -- "$MANIFESTS/ghost.json" "$STATE/records/ghost.json"
rk_start_standalone "${START[@]}" || bail_out "riklet did not restart"
ok "wait_for 20 bash -c '! kill -0 $ghostcon 2>/dev/null'" "the conmon of ghost (no record) is stopped at start (within 20 s: behind other rollbacks' runc calls on a loaded node)"
ok "wait_for 10 test ! -e '$STATE/instances/ghost'" "and its directory removed"
rk_wait_status 60 mid RUNNING
is "$(rk_status mid)" RUNNING "the next riklet rolls mid back and creates it again: RUNNING" || diag "$(rk_reason mid)"
nok "alive $midcon" "the conmon left in runc create was stopped"
sleep 12
mid_conmons() { rk_conmons mid_c; }
is "$(mid_conmons)" 1 "one conmon for mid_c, 12 s later (the old create did not come back)"
is "$(rk_runc_ids | grep -c '^mid_c$')" 1 "one runc container mid_c"
is "$(rk_runc_ids | grep -c '^ghost_c$')" 0 "and none for ghost"
is "$(rk_conmons ghost_c)" 0 "nor a conmon"
is "$(rk_status mid)" RUNNING "mid is still RUNNING"

# --- a one-container Pod's conmon starts early, held on its start pipe while the Pod is prepared;
# with --runtime-parallel 1 and that slot busy (runc run slowed by 3 s), the next Pods are
# prepared first and their conmon started after: never held while a slot is awaited. All run.
rk_stop TERM
printf '#!/bin/sh\ncase " $* " in *" create "*|*" run "*) sleep 3 ;; esac\nexec %s "$@"\n' "$(command -v runc)" >"$TEST_TMP/slowrunc3"
chmod +x "$TEST_TMP/slowrunc3"
rk_start_standalone "${START[@]}" --runc "$TEST_TMP/slowrunc3" --runtime-parallel 1 || bail_out "riklet did not restart"
QS=(q1 q2 q3)
for p in "${QS[@]}"; do manifest "$p"; done
for p in "${QS[@]}"; do rk_wait_status 90 "$p" RUNNING; done
is "$(statuses "${QS[@]}")" "RUNNING RUNNING RUNNING " "three one-container Pods, one runtime slot: all RUNNING"
ok "grep -qE 'container q[123]_c: conmon \(pid [0-9]+\) started, held on its start pipe' '$RK_LOG'" \
	"the first one's conmon was started early, held on its start pipe"
ok "grep -qE 'container q[123]_c: every --runtime-parallel slot is busy: prepared first' '$RK_LOG'" \
	"the others, the slot busy, were prepared first"
rm -f -- "$MANIFESTS"/q[123].json
ok "wait_for 60 nothing_left_of q1 q2 q3" "removed: nothing left"

# --- riklet cleanup: no conmon, no file left -----------------------------------------------------
rk_stop TERM
# in a network namespace of its own: cleanup also removes riklet's host networking, which is not
# this test's to touch
unshare --net "$RIKLET" cleanup "${RK_OPTS[@]}" >>"$RK_LOG" 2>&1
is "$?" 0 "riklet cleanup succeeds"
is "$(rk_runc_ids)" "" "no runc container left"
is "$(our_conmons)" "" "no conmon process left"
is "$(ls "$STATE/instances" 2>/dev/null)" "" "no instance directory (pid files, exit files, sockets) left"
is "$(find "$STATE" \( -name conmon.pid -o -name exit -o -name attach -o -type p \) 2>/dev/null)" "" \
	"no conmon pid file, exit file, attach socket or fifo anywhere in the state dir"
nok "grep -E 'stack traceback|attempt to' '$RK_LOG'" "no Lua error in riklet's log"

done_testing
