# test_deb.sh — the Debian package: `cpack -G DEB` builds riklet_<version>_amd64.deb with the
# right Depends/Recommends and conffiles; `dpkg -i` installs it; the INSTALLED riklet, with the
# source and build trees hidden (a tmpfs over them in a private mount namespace), finds its Lua
# scripts and policies under /usr/share/riklet, passes `riklet check`, runs the installed example
# (with the shipped /etc/riklet config and policy dir, as the unit does), says READY=1 on
# NOTIFY_SOCKET and writes journal-format lines when stderr is the journal; `systemd-analyze
# verify` accepts the unit (and rejects a broken copy, so the verification is real); `dpkg --purge`
# leaves no file of the package, no /etc/riklet, no /var/lib/riklet behind.
#
# The machine's own /var/lib/riklet and /run/riklet (if any) are moved aside for the test and put
# back at exit; a riklet holding /var/lib/riklet's lock, or an installed riklet package, skips.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
need_root
need_cmd cpack dpkg dpkg-deb unshare umoci jq runc conmon skopeo
[[ -x $RIKLET ]] || bail_out "riklet binary not found at '$RIKLET'"
[[ -f $RIKLET_BUILD_DIR/CPackConfig.cmake ]] || bail_out "no CPackConfig.cmake in $RIKLET_BUILD_DIR (configure with cmake)"
if dpkg-query -W -f='${db:Status-Status}' riklet 2>/dev/null | grep -qx installed; then
	skip_all "a riklet package is installed on this machine already; this test installs and purges its own"
fi
if [[ -e /var/lib/riklet/riklet.lock ]] && ! flock -n /var/lib/riklet/riklet.lock true; then
	skip_all "a riklet runs on /var/lib/riklet; purging the package would remove its state"
fi
VERSION=$("$RIKLET" version | awk '{ print $2 }')

# dpkg has no lock timeout: wait while another dpkg/apt run holds the lock
dpkg_retry() {
	local out i
	for ((i = 0; i < 300; i++)); do
		out=$(dpkg "$@" 2>&1) && { printf '%s\n' "$out" >&2; return 0; }
		grep -q 'lock' <<<"$out" || { printf '%s\n' "$out" >&2; return 1; }
		sleep 1
	done
	printf '%s\n' "$out" >&2
	return 1
}

for d in /var/lib/riklet /run/riklet; do
	if [[ -e $d ]]; then
		mv -- "$d" "$d.test-deb-aside.$$"
		on_exit "rm -rf -- '$d'; mv -- '$d.test-deb-aside.$$' '$d'"
	fi
done
on_exit "dpkg_retry --purge riklet >/dev/null 2>&1"

# --- build ---------------------------------------------------------------------------------------
PKGDIR=$TEST_TMP/pkg
ok "cpack -G DEB --config '$RIKLET_BUILD_DIR/CPackConfig.cmake' -B '$PKGDIR' >&2" "cpack -G DEB builds the package"
DEB=$PKGDIR/riklet_${VERSION}_amd64.deb
ok "test -f '$DEB'" "named riklet_${VERSION}_amd64.deb"
field() { dpkg-deb -f "$DEB" "$1"; }
is "$(field Package)/$(field Version)/$(field Architecture)" "riklet/$VERSION/amd64" "control: package, version, architecture"
deps=$(field Depends)
for d in runc conmon skopeo umoci libnl-3-200 libip4tc2 libsystemd0 libcjson1; do
	like "$deps" "(^|, )$d( |,|$)" "Depends on $d"
done
# LuaJIT, libnghttp2 and libprotobuf-c are linked statically (RIKLET_STATIC_DEPS, issue 12 memory)
if grep -q '^RIKLET_STATIC_DEPS:BOOL=ON' "$RIKLET_BUILD_DIR/CMakeCache.txt"; then
	for d in libluajit-5.1-2 libnghttp2-14 libprotobuf-c1; do
		unlike "$deps" "(^|, )$d( |,|$)" "no Depends on $d (linked statically)"
	done
fi
like "$(field Recommends)" "qemu-system-x86" "Recommends qemu-system-x86"
like "$(field Recommends)" "curl" "Recommends curl (interLink httpGet probes)"
is "$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | sort | tr '\n' ' ')" \
	"/etc/default/riklet /etc/riklet/config.lua /etc/riklet/policies/README " "conffiles: the files under /etc"
files=$(dpkg-deb -c "$DEB" | awk '{ print $6 }')
for f in ./usr/bin/riklet ./usr/share/riklet/lua/riklet/cli.lua ./usr/share/riklet/policies/admission.lua \
	./usr/share/riklet/examples/busybox.json ./usr/lib/systemd/system/riklet.service; do
	ok "grep -qxF '$f' <<<\"\$files\"" "the package holds $f"
done
unlike "$files" "tests/|\\.test\\.lua|build/" "and nothing from the tests or the build tree"

# --- install -------------------------------------------------------------------------------------
ok "dpkg_retry -i '$DEB'" "dpkg -i installs it (its Depends are installed)"
for f in /usr/bin/riklet /usr/share/riklet/lua/riklet/main.lua /usr/share/riklet/policies/restart.lua \
	/etc/riklet/config.lua /etc/default/riklet /usr/lib/systemd/system/riklet.service; do
	ok "test -f $f" "installed: $f"
done

# The image of the installed example, built here (its path in the example is machine-specific)
mkimage --cmd '["sh","-c","echo $GREETING from the installed riklet"]' "$TEST_TMP/layout:latest" >&2 ||
	bail_out "mkimage failed"
jq --arg img "oci:$TEST_TMP/layout:latest" '.spec.containers[0].image = $img' \
	/usr/share/riklet/examples/busybox.json >"$TEST_TMP/example.json"
printf '%s\n' 'local core = require "riklet.core"' 'local p = core.paths()' \
	'io.stdout:write(p.lua, " ", p.policies, " ", p.exe, "\n")' >"$TEST_TMP/paths.lua"
mkdir -p "$TEST_TMP/manifests"
cat >"$TEST_TMP/notify.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
print(s.recv(4096).decode(), flush=True)
EOF
# everything the installed riklet does, with the source and build trees hidden
cat >"$TEST_TMP/installed.sh" <<EOF
set -u
mount -t tmpfs -o size=1m hidden '$RIKLET_SRC_DIR' || exit 99
mount -t tmpfs -o size=1m hidden '$RIKLET_BUILD_DIR' 2>/dev/null
cd /
O=(--state-dir '$TEST_TMP/state' --runc-root '$TEST_TMP/runc' --network none)
echo "== paths"; /usr/bin/riklet test '$TEST_TMP/paths.lua'
echo "== check"; /usr/bin/riklet check "\${O[@]}"; echo "check-rc=\$?"
echo "== run"; timeout 120 /usr/bin/riklet run '$TEST_TMP/example.json' --config /etc/riklet/config.lua \
	--policy-dir /etc/riklet/policies "\${O[@]}" 2>'$TEST_TMP/run.err'; echo "run-rc=\$?"
echo "== notify"
/usr/bin/python3 '$TEST_TMP/notify.py' '$TEST_TMP/notify.sock' >'$TEST_TMP/notify.out' &
py=\$!
for i in \$(seq 50); do [ -S '$TEST_TMP/notify.sock' ] && break; sleep 0.1; done
: >'$TEST_TMP/journal.log'
JOURNAL_STREAM=\$(stat -c '%d:%i' '$TEST_TMP/journal.log') NOTIFY_SOCKET='$TEST_TMP/notify.sock' \
	/usr/bin/riklet --standalone '$TEST_TMP/manifests' "\${O[@]}" 2>>'$TEST_TMP/journal.log' &
rk=\$!
wait \$py
kill -TERM \$rk; wait \$rk
echo "daemon-rc=\$?"
EOF
out=$(unshare -m --propagation private bash "$TEST_TMP/installed.sh" 2>&1)
diag "$out"
like "$out" $'== paths\n/usr/share/riklet/lua /usr/share/riklet/policies /usr/bin/riklet\n' \
	"the installed riklet (source tree hidden) uses /usr/share/riklet/lua and /usr/share/riklet/policies"
like "$out" "check-rc=0" "riklet check passes with the installed riklet"
like "$out" $'\nhello from the installed riklet\n' "the installed example ran: its container's output, with the example's env"
like "$out" "run-rc=0" "riklet run exits 0 (the container exited 0) with the shipped config and policy dir" || diag_file "$TEST_TMP/run.err"
like "$(cat "$TEST_TMP/notify.out")" "^READY=1" "the daemon said READY=1 on NOTIFY_SOCKET (sd_notify)"
like "$(cat "$TEST_TMP/notify.out")" "STATUS=standalone $TEST_TMP/manifests" "with a STATUS line"
like "$(cat "$TEST_TMP/journal.log")" $'(^|\n)<6>info \\[riklet\\] riklet [^\n]* started' \
	"stderr being the journal (JOURNAL_STREAM), lines carry <N> priorities and no time stamp" || diag_file "$TEST_TMP/journal.log"
like "$out" "daemon-rc=0" "and it stopped cleanly on SIGTERM"

# --- the unit ------------------------------------------------------------------------------------
UNIT=/usr/lib/systemd/system/riklet.service
if command -v systemd-analyze >/dev/null; then
	ok "systemd-analyze verify $UNIT" "systemd-analyze verify accepts the installed unit"
	sed 's/^KillMode=process/KillMode=bogus/; s|^ExecStart=/usr/bin/riklet|ExecStart=/usr/bin/no-such-riklet|' "$UNIT" \
		>"$TEST_TMP/broken.service"
	nok "systemd-analyze verify '$TEST_TMP/broken.service'" "and rejects a copy with a bad KillMode and a missing binary"
else
	skip "systemd-analyze is not installed"
fi
for kv in Type=notify KillMode=process Restart=on-failure Delegate=yes LimitNOFILE=1048576 \
	EnvironmentFile=-/etc/default/riklet; do
	ok "grep -qx '$kv' $UNIT" "the unit has $kv"
done
if [[ -d /run/systemd/system ]]; then
	skip "systemd is PID 1 here but this test does not start the unit (it would touch the host's network)"
else
	skip "systemd is not PID 1 here: the unit cannot be started (verified only)"
fi

# --- purge ---------------------------------------------------------------------------------------
mkdir -p /var/lib/riklet/images /run/riklet/runc # what a run of the service leaves
ok "dpkg_retry --purge riklet" "dpkg --purge removes it"
for f in /usr/bin/riklet /usr/share/riklet /usr/share/doc/riklet /etc/riklet /etc/default/riklet \
	/usr/lib/systemd/system/riklet.service /var/lib/riklet /run/riklet; do
	nok "test -e $f" "nothing left: $f"
done
nok "dpkg-query -W riklet 2>/dev/null | grep -q ." "dpkg no longer knows the package"

done_testing
