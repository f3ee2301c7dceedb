# test_check.sh — `riklet check` (preflight): one line per thing this node needs, with the real
# versions of the real tools; exit 0 only when what the configured front-ends need is there. With
# runc (or iptables, with --network bridge) removed from PATH, a broken runc, a guest kernel that
# does not exist or a state dir on a 1 MiB tmpfs, it exits non-zero naming the line, and the agent
# refuses to start with that reason (creating nothing).
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd runc conmon skopeo umoci jq iptables timeout
rk_init

help=$(timeout 30 "$RIKLET" --help 2>&1)
is "$?" 0 "riklet --help exits 0"
for sub in check top metrics; do like "$help" "riklet $sub " "--help shows riklet $sub"; done

ALL=(runc conmon skopeo umoci cgroups overlayfs iptables "ip forwarding" qemu firecracker /dev/kvm
	"guest kernel" "guest initrd" "probe tools" "state dir space")
line() { grep -E "^$(printf '%s' "$2" | sed 's/[/.]/\\&/g') +" <<<"$1" | head -n1; }

out=$("$RIKLET" check --state-dir "$STATE" 2>&1)
rc=$?
is "$rc" 0 "riklet check exits 0 on this node (everything Pods need is installed)" || diag "$out"
for n in "${ALL[@]}"; do
	like "$(line "$out" "$n")" "^$n +(ok|WARN|FAIL|-) +(required|optional) " "a line for '$n'"
done
like "$(line "$out" runc)" " ok +required +runc $(runc --version | sed -n 's/^runc version //p' | sed 's/[+.]/\\&/g')$" \
	"the runc line has runc's own version"
like "$(line "$out" skopeo)" "skopeo $(skopeo --version | awk '{ print $3 }' | sed 's/[+.]/\\&/g')" "the skopeo line has its version"
case $(stat -fc %T /sys/fs/cgroup) in
cgroup2fs) mode=v2 ;;
tmpfs) mode=v1; [[ $(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]] && mode=hybrid ;;
esac
like "$(line "$out" cgroups)" " ok +required +$mode" "cgroups: $mode, as stat -f says"
backend=legacy
iptables -V | grep -q nf_tables && backend=nft
like "$(line "$out" iptables)" "uses $backend" "iptables: the backend in use is $backend, as iptables -V says"
[[ -e /dev/kvm ]] || like "$(line "$out" /dev/kvm)" "absent" "/dev/kvm: absent here, and the line says so"
like "$(line "$out" "guest kernel")" "not configured" "no --kernel-path: the guest kernel is 'not configured'"
like "$out" "riklet can run the configured workloads" "the last line says the node is usable"

json=$("$RIKLET" check --json --state-dir "$STATE")
is "$(jq -r '.ok' <<<"$json")" true "check --json: ok is true"
is "$(jq -r '[.checks[] | select(.name == "runc")][0].status' <<<"$json")" ok "check --json: runc ok"

# --- runc missing from PATH --------------------------------------------------------------------
NOBIN=$TEST_TMP/bin-norunc
mkdir -p "$NOBIN"
for t in conmon skopeo umoci iptables iptables-legacy-save iptables-nft-save qemu-system-x86_64; do
	p=$(command -v "$t") && ln -s "$p" "$NOBIN/$t"
done
out=$(env PATH="$NOBIN" "$RIKLET" check --state-dir "$STATE" 2>&1)
rc=$?
isnt "$rc" 0 "without runc on PATH: riklet check exits non-zero"
like "$(line "$out" runc)" "^runc +FAIL +required +runc: not found" "the runc line says FAIL, not found"
like "$out" "apt-get install runc" "and what to do: apt-get install runc"
like "$(line "$out" conmon)" " ok " "conmon is still ok"
like "$out" "1 required check failed" "exactly one required check failed"
like "$(line "$out" "probe tools")" "^probe tools +- +optional +curl: not found" "no curl on that PATH: the probe tools line says so, optional"
is "$(env PATH="$NOBIN" "$RIKLET" check --json --state-dir "$STATE" | jq -r '.ok')" false "check --json: ok is false"

# the agent refuses to start, says why, and creates nothing
ST2=$TEST_TMP/state-norunc
out=$(timeout 60 env PATH="$NOBIN" "$RIKLET" --standalone "$MANIFESTS" --state-dir "$ST2" --runc-root "$TEST_TMP/runc2" \
	--network none 2>&1)
rc=$?
ok "((rc != 0 && rc != 124))" "the agent without runc exits non-zero at once (rc $rc)"
like "$out" "cannot start, a required check failed: runc: " "and says it cannot start because of runc: $out"
nok "test -e '$ST2'" "and created no state dir"

# --runc naming a file that is not there, and a runc that fails
out=$("$RIKLET" check --state-dir "$STATE" --runc "$TEST_TMP/no-such-runc" 2>&1)
isnt "$?" 0 "--runc naming a missing file: non-zero"
like "$(line "$out" runc)" "FAIL .*no-such-runc" "the runc line names the file"
printf '#!/bin/sh\necho "runc: cannot load libseccomp" >&2\nexit 1\n' >"$TEST_TMP/badrunc"
chmod +x "$TEST_TMP/badrunc"
out=$("$RIKLET" check --state-dir "$STATE" --runc "$TEST_TMP/badrunc" 2>&1)
isnt "$?" 0 "a runc whose --version fails: non-zero"
like "$(line "$out" runc)" "FAIL .*cannot load libseccomp" "the runc line quotes what it said"

# --- the firewall: required with --network bridge only ------------------------------------------
NOIPT=$TEST_TMP/bin-noipt
mkdir -p "$NOIPT"
for t in runc conmon skopeo umoci qemu-system-x86_64; do ln -s "$(command -v "$t")" "$NOIPT/$t"; done
out=$(env PATH="$NOIPT" "$RIKLET" check --state-dir "$STATE" --network bridge 2>&1)
isnt "$?" 0 "no iptables with --network bridge: non-zero"
like "$(line "$out" iptables)" "FAIL +required" "the iptables line fails"
out=$(env PATH="$NOIPT" "$RIKLET" check --state-dir "$STATE" --network auto 2>&1)
is "$?" 0 "no iptables with --network auto: exit 0 (Pods run without a network)"
like "$(line "$out" iptables)" "WARN +optional" "the iptables line warns"

# --- Functions: configured once --kernel-path is set ----------------------------------------------
out=$("$RIKLET" check --state-dir "$STATE" --kernel-path "$TEST_TMP/no-vmlinuz" 2>&1)
isnt "$?" 0 "--kernel-path naming a missing file: non-zero"
like "$(line "$out" "guest kernel")" "FAIL .*no-vmlinuz: not a readable file" "the guest kernel line names the file"
# ... but the agent starts (Pods run; each Function goes FAILED naming --kernel-path)
out=$(timeout 6 "$RIKLET" --standalone "$MANIFESTS" --state-dir "$TEST_TMP/state-fn" --runc-root "$TEST_TMP/runc-fn" \
	--network none --kernel-path "$TEST_TMP/no-vmlinuz" 2>&1)
is "$?" 124 "a missing guest kernel does not stop the agent from starting (it ran until the timeout)"
like "$out" "guest kernel.*no-vmlinuz" "and it warns about the kernel at start"
head -c 4096 /dev/urandom >"$TEST_TMP/vmlinuz"
out=$(KERNEL_LOCATION=$TEST_TMP/vmlinuz "$RIKLET" check --state-dir "$STATE" 2>&1)
like "$(line "$out" "guest kernel")" "ok +required +$TEST_TMP/vmlinuz" "KERNEL_LOCATION is read too"
like "$(line "$out" qemu)" "required" "with Functions configured, QEMU is required"

# --- the state dir on a 1 MiB file system ------------------------------------------------------
TINY=$TEST_TMP/tiny
mkdir -p "$TINY"
if mount -t tmpfs -o size=1m tmpfs "$TINY"; then
	out=$("$RIKLET" check --state-dir "$TINY/state" 2>&1)
	isnt "$?" 0 "a state dir with 1 MiB free: non-zero"
	like "$(line "$out" "state dir space")" "FAIL .*$TINY/state: 1 MiB free" "the space line says how much is free"
	out=$(timeout 60 "$RIKLET" --standalone "$MANIFESTS" --state-dir "$TINY/state" --runc-root "$TEST_TMP/runc3" \
		--network none 2>&1)
	isnt "$?" 0 "and the agent refuses to start there"
	like "$out" "state dir space" "saying why: $out"
else
	skip "cannot mount a tmpfs"
fi

done_testing
