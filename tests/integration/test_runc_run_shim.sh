#!/usr/bin/env bash
# test_runc_run_shim.sh — riklet-runc-run, the runtime riklet hands conmon for a one-container
# Pod: conmon's `create` becomes `runc create` (its pid file under another name) + `runc start`,
# the pid file renamed into place once the container runs; a failed start is followed by `runc
# delete --force`; --create keeps create alone; any other command passes unchanged, a global
# option's value is never taken for the command, a runtime that cannot be executed is said in
# runc's --log (JSON, where riklet reads runc's errors) with exit 127. The start through exec.fifo
# against a fake runc leaving what runc 1.1 leaves (state.json, a FIFO): the init's byte read, the
# fifo removed, no `runc start`; an init that ends before writing ends the wait (its pidfd) with
# the start failed and the container deleted; SIGTERM during the wait ends the shim by it, the
# container deleted; state.json parsed whole (its fields after 5 KiB found; a pid that is a
# string: `runc start`, and why); what a hostile review named: a symlinked state.json, a recycled
# init pid, a state.json over 4 MiB (never read: the shim's memory stays small) or not JSON, an
# exec.fifo that is a file, a directory or a symlink to a FIFO elsewhere (`runc start`, and why;
# nothing opened or removed), an init stopped during the wait (the shim waits on; conmon's SIGTERM
# ends it, the container deleted, nothing left). Then the real thing: conmon
# + the shim + runc on a bundle whose process prints and exits 3 at once: conmon's pid file, CRI
# log line and exit file (3) are all there, and runc knows the container (stopped) — what riklet
# reads after a create; the start went through runc's exec.fifo (no `runc start` process, said in
# runc's --log), and with no exec.fifo where the shim looks it is `runc start`; and the same with a runtime writing 200 KiB on stdout and on stderr
# during its create (a wrapper around the real runc) and a container writing 1.9 MB on stdout and
# 17 KB on stderr at once: no hang, and every byte of the container's is in its log, in order.
source "$(dirname "$0")/../lib/common.sh"
SHIM=$(dirname "$RIKLET")/riklet-runc-run
[[ -x $SHIM ]] || bail_out "no riklet-runc-run beside $RIKLET"

# a fake runc printing its arguments, one a line (and in one line to $TEST_TMP/calls), writing its
# --pid-file; `start` exits with the number in $TEST_TMP/start-code when there is one
FAKE=$TEST_TMP/fake-runc
cat >"$FAKE" <<FAKE_END
#!/bin/sh
printf "%s\\n" "\$@"
echo "\$*" >>"$TEST_TMP/calls"
prev=
for a; do
	case \$prev:\$a in --pid-file:* | -pid-file:*) echo 1 >"\$a" ;; *:--pid-file=*) echo 1 >"\${a#--pid-file=}" ;; esac
	prev=\$a
done
case " \$* " in *" start "*) exit \$(cat "$TEST_TMP/start-code" 2>/dev/null || echo 0) ;; esac
FAKE_END
chmod +x "$FAKE"
# (into a file: a pipe read meanwhile would race with the shim reading it while create runs, which
# conmon's pipes never do: conmon reads them only after)
shim_out() { "$SHIM" "$@" >"$TEST_TMP/o" 2>&1; tr '\n' ' ' <"$TEST_TMP/o"; }
args() { shim_out "$FAKE" "$@"; }
P=$TEST_TMP/p/init.pid
mkdir -p "$TEST_TMP/p"

L=$TEST_TMP/l.log
is "$(args --root /r --log "$L" --log-format json create --bundle /b --pid-file "$P" -- id)" \
	"--root /r --log $L --log-format json create --bundle /b --pid-file $TEST_TMP/p/.riklet-create.init.pid -- id --root /r --log $L --log-format json start -- id " \
	"create becomes create (its pid file under another name) + start, global options and create's options kept in place"
like "$(jq -r 'select(.level == "info") | .msg' "$L")" \
	"^riklet-runc-run: id: runc start [(]not through exec.fifo: no state directory /r/id: No such file or directory[)]$" \
	"no exec.fifo (no state directory: a runc unlike 1.1, or this fake): runc start, and why, in runc's --log"
ok "test -s '$P' && ! test -e '$TEST_TMP/p/.riklet-create.init.pid'" "the pid file is renamed into place once start succeeded"
is "$(args --root create create -- create)" "--root create create -- create --root create start -- create " \
	"a global option's value or an id named create is not the command"
is "$(args --root /r exec -d --pid-file /p -- id sh)" "--root /r exec -d --pid-file /p -- id sh " \
	"exec (conmon's exec sessions) passes unchanged"
is "$(args --debug --root=/r create "--pid-file=$P.2" id)" \
	"--debug --root=/r create --pid-file=$TEST_TMP/p/.riklet-create.init.pid.2 id --debug --root=/r start -- id " \
	"flags and --opt=value forms"
is "$(shim_out --create "$FAKE" --root /r create --pid-file "$P.3" -- id)" "--root /r create --pid-file $P.3 -- id " \
	"--create: create alone, unchanged"
echo 4 >"$TEST_TMP/start-code"
rm -f "$P"
rm -f "$TEST_TMP/calls"
is "$(args --root /r create --pid-file "$P" -- id)" \
	"--root /r create --pid-file $TEST_TMP/p/.riklet-create.init.pid -- id --root /r start -- id " \
	"a failed start: its output on stderr"
is "$(tail -n 1 "$TEST_TMP/calls")" "--root /r delete --force -- id" "and the container is deleted"
rm -f "$TEST_TMP/start-code"
is "$(args --root /r create -- --help_c)" "--root /r create -- --help_c --root /r start -- --help_c " \
	"an id starting with '-' follows start's \"--\" (--help.json's Pod: runc start took it for a flag)"
echo 4 >"$TEST_TMP/start-code"
"$SHIM" "$FAKE" --root /r create --pid-file "$P" -- id >/dev/null 2>&1
is "$?" 4 "with start's exit code"
ok "! test -e '$P' && ! test -e '$TEST_TMP/p/.riklet-create.init.pid'" "and no pid file (renamed or not)"
rm -f "$TEST_TMP/start-code"
"$SHIM" >/dev/null 2>&1
is "$?" 2 "no runtime path: usage, exit 2"
"$SHIM" relative/runc create x >/dev/null 2>&1
is "$?" 2 "a relative runtime path is refused (conmon passes an absolute one)"
"$SHIM" "$TEST_TMP/absent" --log "$TEST_TMP/runc.log" --log-format json create x 2>"$TEST_TMP/err"
is "$?" 127 "a runtime that cannot be executed: exit 127"
like "$(jq -r 'select(.level == "error") | .msg' "$TEST_TMP/runc.log")" \
	"riklet-runc-run: cannot execute the runtime $TEST_TMP/absent: No such file or directory" \
	"and why, as a JSON error line in runc's --log"
like "$(cat "$TEST_TMP/err")" "cannot execute the runtime" "and on stderr"

# --- the start through exec.fifo, its wait: a fake runc whose create leaves what runc 1.1 leaves (a
# state.json naming the init, a FIFO exec.fifo), the "init" a sleep of the test's
FF=$TEST_TMP/fifo-runc R=$TEST_TMP/fr
cat >"$FF" <<FF_END
#!/bin/bash
echo "\$*" >>"$TEST_TMP/fcalls"
root= pf=/dev/null prev=
for a; do case \$prev in --root) root=\$a ;; --pid-file) pf=\$a ;; esac; prev=\$a; done
case " \$* " in *" create "*)
	# (FFIFO: exec.fifo a regular file holding the init's byte, a directory, or a symlink to FFIFO)
	mkdir -p "\$root/\${!#}" && case \${FFIFO:-fifo} in
		fifo) mkfifo "\$root/\${!#}/exec.fifo" ;; file) printf 0 >"\$root/\${!#}/exec.fifo" ;;
		dir) mkdir "\$root/\${!#}/exec.fifo" ;; *) ln -s "\$FFIFO" "\$root/\${!#}/exec.fifo" ;;
	esac
	(exec -a "$TEST_TMP/fake-init" sleep 30) </dev/null >/dev/null 2>&1 &
	echo \$! >"$TEST_TMP/finit.pid"
	echo \$! >"\$pf"
	# (FPAD: a member of that size before the fields; FSTR: the pid a string)
	printf '{"pad":"%s","id":"%s","init_process_pid":%s,"init_process_start":%s,"created":"","config":{}}' \
		"\$(head -c "\${FPAD:-0}" /dev/zero | tr '\\0' x)" "\${!#}" "\${FSTR:+\"}\$!\${FSTR:+\"}" \
		"\${FSTART:-\$(awk '{ sub(/.*\\) /, ""); print \$20 }' /proc/\$!/stat)}" >"\$root/\${!#}/state.json"
	# (FLINK: state.json a symlink to the same text elsewhere)
	if [[ -n \$FLINK ]]; then mv "\$root/\${!#}/state.json" "\$root/s.json"; ln -s ../s.json "\$root/\${!#}/state.json"; fi
	# (FBIG: state.json made that long, sparse: zeros after its JSON; FTORN: cut before its end)
	if [[ -n \$FBIG ]]; then truncate -s "\$FBIG" "\$root/\${!#}/state.json"; fi
	if [[ -n \$FTORN ]]; then truncate -s -12 "\$root/\${!#}/state.json"; fi ;;
*" delete "*)
	# (as runc delete --force: the init killed (when it is this test's), the state directory gone)
	p=\$(cat "$TEST_TMP/finit.pid" 2>/dev/null)
	[[ -n \$p ]] && tr '\\0' '\\n' </proc/\$p/cmdline 2>/dev/null | grep -qxF "$TEST_TMP/fake-init" && kill -9 \$p
	rm -rf "\$root/\${!#}" ;;
esac
FF_END
chmod +x "$FF"
# (ended: gone, or a zombie its new parent has not reaped yet)
ended() { ! [[ -e /proc/$1/stat ]] || [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
# (a shim waiting on what nobody writes is ended by timeout's SIGTERM: 143, a failure, not a hang)
fshim() { rm -rf "$R" "$TEST_TMP/fcalls"; $FWRAP timeout 10 "$SHIM" "$FF" --root "$R" --log "$TEST_TMP/f.log" create --pid-file "$P" -- "$@"; }
on_exit "kill_ours 9 \$(cat '$TEST_TMP/finit.pid' 2>/dev/null)"
rm -f "$P"
# (the init's side: open for writing, blocking until the shim reads, write one byte; 5 s at most)
(for i in $(seq 50); do [[ -p $R/f1/exec.fifo ]] && break; sleep 0.1; done
	timeout 5 bash -c 'printf 0 >"$1"' - "$R/f1/exec.fifo") &
writer=$!
fshim f1 2>"$TEST_TMP/err"
is "$?" 0 "exec.fifo: the init's byte read to its end: started"
wait $writer
is "$(cut -d' ' -f5 "$TEST_TMP/fcalls" | tr '\n' ' ')" "create " "no runc start"
ok "! test -e '$R/f1/exec.fifo' && test -s '$P'" "the fifo removed, the pid file renamed into place"
kill_ours 9 "$(cat "$TEST_TMP/finit.pid")"
# state.json read whole and parsed (cJSON): its fields after 5 KiB of another member found (the
# shim read its first 4 KiB), a pid that is a string not taken (runc start instead, and why)
(for i in $(seq 50); do [[ -p $R/f4/exec.fifo ]] && break; sleep 0.1; done
	timeout 5 bash -c 'printf 0 >"$1"' - "$R/f4/exec.fifo") &
writer=$!
FPAD=5000 fshim f4 2>"$TEST_TMP/err"
is "$?" 0 "state.json's fields after 5 KiB: found, started through exec.fifo"
wait $writer
is "$(cut -d' ' -f5 "$TEST_TMP/fcalls" | tr '\n' ' ')" "create " "no runc start"
kill_ours 9 "$(cat "$TEST_TMP/finit.pid")"
FSTR=1 fshim f5 2>"$TEST_TMP/err"
is "$?" 0 "state.json's init_process_pid a string: started (by runc start)"
is "$(cut -d' ' -f5 "$TEST_TMP/fcalls" | tr '\n' ' ')" "create start " "runc start"
like "$(jq -r 'select(.level == "info") | .msg' "$TEST_TMP/f.log" | tail -n 1)" \
	"^riklet-runc-run: f5: runc start [(]not through exec.fifo: .*/f5/state.json: no init_process_pid and init_process_start" \
	"and why, in runc's --log"
kill_ours 9 "$(cat "$TEST_TMP/finit.pid")"
# falls_back ID WHAT WHY: the shim on ID (the fake runc's variables as given) runs `runc start` (and
# succeeds), WHY (a regex) in runc's --log
falls_back() {
	fshim "$1" 2>"$TEST_TMP/err"
	is "$?:$(cut -d' ' -f5 "$TEST_TMP/fcalls" | tr '\n' ' ')" "0:create start " "$2: runc start"
	like "$(jq -r 'select(.level == "info") | .msg' "$TEST_TMP/f.log" | tail -n 1)" "not through exec.fifo: $3" "and why"
	kill_ours 9 "$(cat "$TEST_TMP/finit.pid")"
}
# (hostile review) a state.json that is a symlink is not followed; an init whose start time is not
# the one in state.json (its pid recycled) is not taken for it: runc start, and why
FLINK=1 falls_back f6 "state.json a symlink: not followed" "cannot read .*/f6/state.json: Too many levels of symbolic links"
FSTART=12345 falls_back f7 "the pid's process started at another time than state.json's init (a recycled pid)" \
	"the container's init [(]pid [0-9]+[)] is not running"
(sleep 0.3; kill_ours 9 "$(cat "$TEST_TMP/finit.pid")") &
killer=$!
fshim f2 2>"$TEST_TMP/err"
is "$?" 1 "the init ends before writing (its pidfd): the wait ends, the start failed"
wait $killer
like "$(cat "$TEST_TMP/err")" "cannot start f2: the container's init [(]pid [0-9]+[)] ended before it started" "and why"
like "$(jq -r 'select(.level == "error") | .msg' "$TEST_TMP/f.log")" "^riklet-runc-run: cannot start f2: the container's init" \
	"the same as an error line in runc's --log (riklet's reason for the failed create)"
is "$(tail -n 1 "$TEST_TMP/fcalls")" "--root $R --log $TEST_TMP/f.log delete --force -- f2" "and the container is deleted"
"$SHIM" "$FF" --root "$R" --log "$TEST_TMP/f.log" create -- f3 2>/dev/null &
ok "wait_for 5 test -p '$R/f3/exec.fifo'" "(waiting on f3's exec.fifo)"
sleep 0.2
kill -TERM $!
wait $!
is "$?" $((128 + 15)) "SIGTERM while the fifo is waited on (conmon's, forwarded): the shim ends by it"
is "$(tail -n 1 "$TEST_TMP/fcalls")" "--root $R --log $TEST_TMP/f.log delete --force -- f3" "and the container is deleted"
kill_ours 9 "$(cat "$TEST_TMP/finit.pid")"
# (hostile review, read then tested) state.json over 4 MiB: not read (its size, before any read),
# runc start, and why; the shim's memory stays small (64 MiB sparse: its JSON, then zeros, which
# cJSON would parse, trailing bytes ignored, were it read)
TIME=(); [[ -x /usr/bin/time ]] && TIME=(/usr/bin/time -f %M -o "$TEST_TMP/rss")
FBIG=64M FWRAP=${TIME[*]} falls_back f8 "state.json over 4 MiB" "cannot read .*/f8/state.json: larger than 4 MiB"
if ((${#TIME[@]})); then
	ok "(( \$(tail -n 1 '$TEST_TMP/rss') < 16384 ))" "its largest process stayed under 16 MiB ($(tail -n 1 "$TEST_TMP/rss") KiB)"
else skip "the shim's memory: needs /usr/bin/time (apt-get install time)"; fi
# state.json not JSON (cut short, as by a torn write, its fields whole before the cut): runc start
FTORN=1 falls_back f9 "state.json not JSON (cut short)" ".*/f9/state.json: not JSON[)]$"
# exec.fifo no FIFO (a regular file holding a byte, a directory, a symlink to a FIFO elsewhere, with
# a writer waiting on that FIFO's open): runc start, and why; nothing opened or removed
T=$TEST_TMP/elsewhere.fifo
mkfifo "$T"
bash -c 'exec 3>"$1"; : >"$2"' - "$T" "$TEST_TMP/opened" &
writer=$!
for kind in file dir "$T"; do
	FFIFO=$kind falls_back f10 "exec.fifo a ${kind/#\/*/symlink to a FIFO}" ".*/f10/exec.fifo is not a FIFO[)]$"
	case $kind in file) is "$(cat "$R/f10/exec.fifo")" 0 "(the file: there still)" ;;
	dir) ok "test -d '$R/f10/exec.fifo'" "(the directory: there still)" ;;
	*) ok "test -L '$R/f10/exec.fifo'" "(the symlink: there still)" ;; esac
done
ok "test -p '$T' && ! test -e '$TEST_TMP/opened'" "the FIFO the symlink names: still there, never opened (its writer still waits)"
kill_ours 9 $writer
wait $writer 2>/dev/null
# the init stopped (SIGSTOP) while the shim waits on exec.fifo: the shim waits on, as runc start
# would (a stopped init is alive); conmon's SIGTERM ends it, the container deleted, nothing left
rm -rf "$R" "$TEST_TMP/fcalls" "$P"
"$SHIM" "$FF" --root "$R" --log "$TEST_TMP/f.log" create --pid-file "$P" -- f11 2>/dev/null &
shim=$!
fifo_open() { local f; for f in "/proc/$1/fd/"*; do [[ $(readlink "$f") == "$R/f11/exec.fifo" ]] && return 0; done; return 1; }
ok "wait_for 5 fifo_open $shim" "(the shim waits on f11's exec.fifo)"
init=$(cat "$TEST_TMP/finit.pid")
kill -STOP "$init"
sleep 0.3
ok "[[ \$(awk '{ print \$3 }' /proc/$init/stat) == T ]] && fifo_open $shim && ! grep -q delete '$TEST_TMP/fcalls'" \
	"the init stopped: the shim still waits (0.3 s), no delete"
kill -TERM "$shim"
wait_for 3 ended "$shim" || kill_ours 9 "$shim"
wait "$shim"
is "$?" $((128 + 15)) "conmon's SIGTERM then: the shim ends by it"
is "$(tail -n 1 "$TEST_TMP/fcalls")" "--root $R --log $TEST_TMP/f.log delete --force -- f11" "the container deleted"
ok "wait_for 2 ended $init" "its init (stopped) killed by the delete"
ok "! test -e '$R/f11' && ! test -e '$P' && ! test -e '$TEST_TMP/p/.riklet-create.init.pid'" \
	"nothing left: no state directory, no pid file"

# --- the real thing: conmon + shim + runc --------------------------------------------------------
BUSYBOX=/bin/busybox
if [[ $(id -u) != 0 ]] || ! command -v conmon >/dev/null || ! command -v runc >/dev/null ||
	[[ $(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true) != *"not a dynamic executable"* ]]; then
	skip "conmon + runc through the shim: needs root, conmon, runc, a static $BUSYBOX (busybox-static)"
	done_testing
fi
# a bundle by hand (an image would take minutes on a loaded machine): static busybox + runc spec
B=$TEST_TMP/bundle ROOT=$TEST_TMP/runc D=$TEST_TMP/c
mkdir -p "$B/rootfs/bin" "$ROOT"
cp "$BUSYBOX" "$B/rootfs/bin/busybox" && ln -s busybox "$B/rootfs/bin/sh"
(cd "$B" && runc spec) || bail_out "runc spec failed"
jq '.process.terminal = false | .process.args = ["sh", "-c", "echo out-of-the-container; exit 3"]' \
	"$B/config.json" >"$B/c.json" && mv "$B/c.json" "$B/config.json"
# under_conmon ID DIR RUNTIME [ROOT]: conmon running the shim for container ID of bundle $B, its
# files in DIR, RUNTIME as the shim's runc, with --root ROOT (default $ROOT)
under_conmon() {
	mkdir -p "$2/exit"
	conmon --api-version 1 --cid="$1" --cuuid="$1" --name="$1" --runtime="$SHIM" --bundle="$B" \
		--container-pidfile="$2/init.pid" --conmon-pidfile="$2/conmon.pid" --log-path="k8s-file:$2/0.log" \
		--persist-dir="$2/exit" --full-attach --runtime-arg="$3" --runtime-arg=--root --runtime-arg="${4:-$ROOT}" \
		--runtime-arg=--log --runtime-arg="$2/runc.log" --runtime-opt=-- >"$2/out" 2>&1 </dev/null
}
# (runc, its commands recorded)
REC=$TEST_TMP/rec-runc
printf '#!/bin/sh\necho "$*" >>"%s"\nexec %s "$@"\n' "$TEST_TMP/rec-calls" "$(command -v runc)" >"$REC"
chmod +x "$REC"
on_exit "runc --root '$ROOT' delete -f shimtest >/dev/null 2>&1"
under_conmon shimtest "$D" "$REC"
is "$?" 0 "conmon with riklet-runc-run as its runtime starts"
ok "wait_for 30 test -s '$D/exit/exit'" "conmon writes the exit file of a container that ended at once" || diag_file "$D/out"
is "$(cat "$D/exit/exit" 2>/dev/null)" 3 "with its exit code, 3"
like "$(cat "$D/init.pid" 2>/dev/null)" '^[0-9]+$' "runc's pid file is there (riklet's signal that the container runs)"
like "$(cat "$D/0.log" 2>/dev/null)" '^[0-9T:.+-]+ stdout F out-of-the-container$' "its output is in the CRI log"
is "$(runc --root "$ROOT" state shimtest 2>/dev/null | jq -r .status)" stopped "runc knows the container: stopped"
ok "wait_for 10 bash -c '! kill -0 $(cat "$D/conmon.pid") 2>/dev/null'" "conmon has ended"
is "$(cut -d' ' -f5 "$TEST_TMP/rec-calls" | tr '\n' ' ')" "create " \
	"started through runc's exec.fifo (as runc start does it): runc create, and no runc start process"
is "$(jq -r .msg "$D/runc.log")" "riklet-runc-run: shimtest started through runc's exec.fifo (no runc start)" \
	"said in runc's --log" || diag_file "$D/runc.log"
ok "! test -e '$ROOT/shimtest/exec.fifo'" "and the fifo is removed, as runc start removes it"

# --- the fallback, with the real runc: no exec.fifo where the shim looks (its --root another one
# than the runc's, through a wrapper) -> runc start
ELSE=$TEST_TMP/else-runc
cat >"$ELSE" <<ELSE_END
#!/bin/bash
a=() r=
for x; do [[ -n \$r ]] && x='$ROOT'; r=; [[ \$x == --root ]] && r=1; a+=("\$x"); done
exec $(command -v runc) "\${a[@]}"
ELSE_END
chmod +x "$ELSE"
D=$TEST_TMP/else
on_exit "runc --root '$ROOT' delete -f shimelse >/dev/null 2>&1"
under_conmon shimelse "$D" "$ELSE" "$TEST_TMP/elsewhere"
ok "wait_for 30 test -s '$D/exit/exit'" "no exec.fifo where the shim looks: the container runs all the same" || diag_file "$D/out"
is "$(cat "$D/exit/exit" 2>/dev/null)" 3 "and ends (3)"
like "$(cat "$D/0.log" 2>/dev/null)" ' stdout F out-of-the-container$' "its output in the CRI log"
like "$(jq -r .msg "$D/runc.log")" "^riklet-runc-run: shimelse: runc start [(]not through exec.fifo: no state directory $TEST_TMP/elsewhere/shimelse: " \
	"started by runc start, and why, in runc's --log" || diag_file "$D/runc.log"

# --- a runtime writing 200 KiB on stdout and stderr during create, a container writing 1.9 MB at once
LOUD=$TEST_TMP/loud-runc
cat >"$LOUD" <<LOUD_END
#!/bin/bash
case " \$* " in
*" create "* | *" run "*)
	head -c 204800 /dev/zero | tr '\\0' O; echo " the runtime's stdout"
	head -c 204800 /dev/zero | tr '\\0' E >&2; echo " the runtime's stderr" >&2 ;;
esac
exec $(command -v runc) "\$@"
LOUD_END
chmod +x "$LOUD"
OUT='seq 1 40000 | sed "s/$/ the quick brown fox jumps over the lazy dog/"' ERR='seq 1 2000 | sed "s/^/err /"'
jq --arg c "$OUT; $ERR >&2; exit 3" '.process.args = ["sh", "-c", $c]' "$B/config.json" >"$B/c.json" &&
	mv "$B/c.json" "$B/config.json"
D=$TEST_TMP/loud
on_exit "runc --root '$ROOT' delete -f shimloud >/dev/null 2>&1"
# (a runtime blocked on its write, as before the shim read its output, would keep conmon and itself
# there: this conmon ends, and with the pipes' reader gone the runtime's writes fail)
on_exit "kill_ours 9 \$(cat '$D/conmon.pid' 2>/dev/null)"
t0=$EPOCHREALTIME
under_conmon shimloud "$D" "$LOUD"
ok "wait_for 20 test -s '$D/exit/exit'" "a runtime writing 200 KiB on stdout and stderr: the container runs and ends" ||
	diag_file "$D/out"
took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
is "$(cat "$D/exit/exit" 2>/dev/null)" 3 "with its exit code, 3 (${took} s, load $(cut -d' ' -f1 /proc/loadavg))"
# crilog STREAM: the stream as written, from the CRI log's F (full) and P (partial) lines
crilog() { awk -v s="$1" '$2 == s { t = $3; sub(/^[^ ]* [^ ]* [^ ]* /, ""); printf "%s%s", $0, (t == "F" ? "\n" : "") }' "$D/0.log"; }
/bin/busybox sh -c "$OUT" >"$TEST_TMP/want.out"
/bin/busybox sh -c "$ERR" >"$TEST_TMP/want.err"
crilog stdout >"$TEST_TMP/got.out"
crilog stderr >"$TEST_TMP/got.err"
ok "tail -n 40000 '$TEST_TMP/got.out' | cmp -s - '$TEST_TMP/want.out'" \
	"the container's 1,988,894 bytes of stdout are in its log, whole and in order"
ok "tail -n 2000 '$TEST_TMP/got.err' | cmp -s - '$TEST_TMP/want.err'" "and its stderr"
like "$(head -n 3 "$TEST_TMP/got.out")" "bytes of the runtime's stdout cut here.*the runtime's stdout" \
	"the runtime's stdout comes first, cut to its start and end"
like "$(head -n 3 "$TEST_TMP/got.err")" "bytes of the runtime's stderr cut here.*the runtime's stderr" "its stderr too"
# --- conmon killed (riklet's deadline: conmon.stop) while the shim's `runc create` runs: conmon
# gives its runtime PDEATHSIG SIGKILL, and the runtime the shim runs must end with the shim, as runc
# did when conmon ran it itself: no container made after riklet took conmon's end for the end
SLOW=$TEST_TMP/slow-runc
cat >"$SLOW" <<SLOW_END
#!/bin/bash
case " \$* " in *" create "*) echo \$\$ >"$TEST_TMP/slow.pid"; sleep 2 ;; esac
exec $(command -v runc) "\$@"
SLOW_END
chmod +x "$SLOW"
D=$TEST_TMP/killed
on_exit "runc --root '$ROOT' delete -f shimkilled >/dev/null 2>&1"
under_conmon shimkilled "$D" "$SLOW" &
ok "wait_for 10 test -s '$TEST_TMP/slow.pid'" "conmon runs the shim, which runs the runtime's create"
kill_ours 9 "$(cat "$D/conmon.pid" 2>/dev/null)"
slow=$(cat "$TEST_TMP/slow.pid")
ok "wait_for 1 ended $slow" "conmon killed: the runtime the shim runs ends with it (PDEATHSIG)"
wait_for 3 ended "$slow"
ok "! runc --root '$ROOT' state shimkilled >/dev/null 2>&1" "and no runc container is left for nobody"
done_testing
