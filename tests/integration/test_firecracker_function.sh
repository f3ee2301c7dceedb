#!/usr/bin/env bash
# test_firecracker_function.sh — a Function through `riklet --standalone` with --vmm firecracker:
# the Function driver (function.lua), the rootfs cache over HTTP and the Firecracker backend
# together. The stand-in firecracker (tests/firecracker/fake_firecracker.py) checks every API
# request against Firecracker's Swagger description; no guest boots, so this proves the wiring:
# the rootfs downloaded once over HTTP and shared by two instances, the conversation and a
# RUNNING instance, SendCtrlAltDel on destroy with nothing left, a 400 fault_message → FAILED with
# it, a rootfs over --rootfs-max-size and a 404 → FAILED naming them, re-adoption after kill -9. In a private mount
# namespace, /dev is a copy holding a placeholder /dev/kvm (the backend requires one).
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/fntest.sh"
[[ -f $RIKLET_SRC_DIR/lua/riklet/function.lua ]] || skip_all "the Function driver (lua/riklet/function.lua) is not in this tree"
need_root
need_cmd jq mkfs.ext4 ip iptables-legacy
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private mount namespace (unshare -m)"
"$PYTHON" -c 'import jsonschema, yaml' 2>/dev/null ||
	skip_all "needs python modules jsonschema and yaml (apt-get install python3-jsonschema python3-yaml)"
rk_init
ip link set lo up

# /dev with a placeholder kvm node (a regular file: the stand-in never opens it)
mkdir "$TEST_TMP/dev" && mount -t tmpfs -o mode=755 tmpfs "$TEST_TMP/dev" || bail_out "cannot mount a tmpfs"
for n in null zero full random urandom; do
	touch "$TEST_TMP/dev/$n" && mount --bind "/dev/$n" "$TEST_TMP/dev/$n"
done
mkdir "$TEST_TMP/dev/net" && touch "$TEST_TMP/dev/net/tun" && mount --bind /dev/net/tun "$TEST_TMP/dev/net/tun"
ln -s /proc/self/fd "$TEST_TMP/dev/fd"
touch "$TEST_TMP/dev/kvm"
mount --rbind "$TEST_TMP/dev" /dev || bail_out "cannot put the /dev copy in place"

mkdir -p "$TEST_TMP/bin" "$TEST_TMP/www"
cat >"$TEST_TMP/bin/firecracker" <<EOS
#!/bin/sh
exec $PYTHON $RIKLET_SRC_DIR/tests/firecracker/fake_firecracker.py "\$@"
EOS
chmod +x "$TEST_TMP/bin/firecracker"
fc_pids() { pgrep -f "[f]ake_firecracker.py --api-sock $STATE/instances/${1:-}" || true; }
on_exit 'for p in $(fc_pids); do kill -9 "$p"; done'
mkdir -p "$TEST_TMP/tree/etc" && echo guest >"$TEST_TMP/tree/etc/hostname"
mkfs.ext4 -q -F -d "$TEST_TMP/tree" "$TEST_TMP/www/fn.img" 8M || bail_out "mkfs.ext4 failed"
printf kernel >"$TEST_TMP/vmlinuz"

http_serve "$TEST_TMP/www"
BASE=$HTTP_BASE

fn() { # fn ID URL
	cat >"$MANIFESTS/$1.json" <<EOM
{"apiVersion": "v1", "kind": "Function", "name": "$1", "replicas": null,
 "spec": {"containers": [], "function": {"execution": {"rootfs": "$2"}, "exposure": null}}}
EOM
}
# every stand-in logs to one file (an instance's dir goes with its destroy)
export FAKE_FC_LOG=$TEST_TMP/firecracker.log
calls() { jq -r --arg s "$STATE/instances/$1/api.sock" 'select(.sock == $s) | .method + " " + .path +
	(if .path == "/actions" then " " + .body.action_type else "" end) + " " + (.status|tostring)' "$FAKE_FC_LOG"; }

rk_start_standalone --network bridge --vmm firecracker --firecracker "$TEST_TMP/bin/firecracker" --kernel-path "$TEST_TMP/vmlinuz" \
	--rootfs-max-size 20000000 || bail_out "riklet did not start"

# 1. two instances of one URL: one download, both RUNNING, the exact conversation
fn fa "$BASE/fn.img"
fn fb "$BASE/fn.img"
ok "rk_wait_status 60 fa RUNNING" "fa: RUNNING ($(rk_reason fa))"
ok "rk_wait_status 60 fb RUNNING" "fb: RUNNING ($(rk_reason fb))"
is "$(gets /fn.img)" 1 "the rootfs was downloaded once for two instances"
is "$(calls fa)" "PUT /machine-config 204
PUT /boot-source 204
PUT /drives/rootfs 204
PUT /network-interfaces/eth0 204
PUT /actions InstanceStart 204" "fa: the conversation with firecracker"
tap=$(jq -r --arg s "$STATE/instances/fa/api.sock" 'select(.sock == $s and .path == "/network-interfaces/eth0") |
	.body.host_dev_name' "$FAKE_FC_LOG")
ok "ip link show '$tap' >&2" "fa: firecracker was given riklet's TAP ($tap), which exists"
is "$(jq -s 'map(select(.valid | not)) | length' "$FAKE_FC_LOG")" 0 \
	"every request matched firecracker's Swagger description"
like "$(jq -r --arg s "$STATE/instances/fa/api.sock" 'select(.sock == $s and .path == "/drives/rootfs") |
	.body.path_on_host' "$FAKE_FC_LOG")" \
	"^$STATE/instances/fa/" "fa boots its own copy of the rootfs, not the cache"
like "$(cat "$STATE/instances/fa/console.log")" "fake guest: booting kernel $TEST_TMP/vmlinuz" "fa: console log"
pid_fa=$(fc_pids fa/)
ok "[[ -n '$pid_fa' ]]" "fa: one firecracker runs"

# 2. destroy: SendCtrlAltDel, the VMM gone, socket and disk copy removed
rm "$MANIFESTS/fa.json"
ok "rk_wait_status 30 fa TERMINATED" "fa: TERMINATED after its manifest is removed ($(rk_status fa))"
like "$(calls fa | tail -n1)" "PUT /actions SendCtrlAltDel 204" "fa: stopped with SendCtrlAltDel"
ok "wait_for 10 bash -c '! kill -0 $pid_fa 2>/dev/null'" "fa: its firecracker is gone"
ok "[[ ! -e $STATE/instances/fa/api.sock && ! -e $STATE/instances/fa/rootfs.ext4 ]]" "fa: socket and disk copy removed"
nok "ip link show '$tap' >&2" "fa: its TAP removed"

# 3. firecracker refuses a call: FAILED with its fault_message, nothing left running
cat >"$TEST_TMP/fault.json" <<'EOJ'
{"FAKE_FC_FAIL": "PUT /drives/rootfs", "FAKE_FC_FAULT": "Unable to open the block device backing file"}
EOJ
mkdir -p "$STATE/instances/fc" && cp "$TEST_TMP/fault.json" "$STATE/instances/fc/fake-firecracker.json"
fn fc "$BASE/fn.img"
ok "rk_wait_status 60 fc FAILED" "fc: FAILED when firecracker answers 400"
like "$(rk_reason fc)" "Unable to open the block device backing file" "fc: the reason carries the fault_message"
ok "wait_for 10 bash -c '[[ -z \$(pgrep -f \"[f]ake_firecracker.py --api-sock $STATE/instances/fc/\") ]]'" \
	"fc: no firecracker left"

# 4. rootfs errors: 404, over --rootfs-max-size
fn f404 "$BASE/missing.img"
ok "rk_wait_status 60 f404 FAILED" "404: FAILED"
like "$(rk_reason f404)" "HTTP 404" "404: the reason gives the status"
head -c 30000000 /dev/zero >"$TEST_TMP/www/huge.img"
fn fbig "$BASE/huge.img"
ok "rk_wait_status 60 fbig FAILED" "over the cap: FAILED"
like "$(rk_reason fbig)" "rootfs-max-size" "over the cap: the reason names the flag"
is "$(fc_pids fbig/ | wc -l)" 0 "over the cap: no firecracker started"

# 5. kill -9 riklet: restarted, it re-adopts fb's firecracker (same pid), never restarts it
pid_fb=$(fc_pids fb/)
rk_stop KILL
rk_start_standalone --network bridge --vmm firecracker --firecracker "$TEST_TMP/bin/firecracker" \
	--kernel-path "$TEST_TMP/vmlinuz" --rootfs-max-size 20000000 || bail_out "riklet did not restart"
sleep 2
is "$(rk_status fb)" RUNNING "after kill -9 and restart: fb still RUNNING"
is "$(fc_pids fb/)" "$pid_fb" "after kill -9 and restart: the same firecracker process"
is "$(calls fb | grep -c InstanceStart)" 1 "after kill -9 and restart: the guest was not started again"

rm -f "$MANIFESTS"/*.json
ok "rk_wait_status 30 fb TERMINATED" "fb: TERMINATED"
like "$(calls fb | tail -n1)" "PUT /actions SendCtrlAltDel 204" "fb (adopted): stopped with SendCtrlAltDel"
ok "wait_for 10 bash -c '[[ -z \$(pgrep -f \"[f]ake_firecracker.py --api-sock $STATE/\") ]]'" "no firecracker left at the end"
rk_stop
done_testing
