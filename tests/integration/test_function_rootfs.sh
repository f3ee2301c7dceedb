#!/usr/bin/env bash
# test_function_rootfs.sh — a Function's rootfs served over HTTP by a real server
# (tests/lib/httpserver.py), through `riklet --standalone` with the QEMU backend (-accel tcg), in a
# private network + mount namespace:
#   - a rootfs URL answering 404, a download cut short, a rootfs over --rootfs-max-size: each
#     FAILED with the reason, and nothing left (no QEMU, TAP, rule, disk, cache or partial file);
#   - two concurrent creates of one URL: one GET;
#   - the URL's content changes while a VM runs from it, and a second instance is created from the
#     new version: the first VM's backing file keeps its bytes (checksum), the second boots the new
#     version, and the old version's bytes are freed once the first VM is destroyed;
#   - the cache on another filesystem than the instance: its backing file is a copy.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/guest.sh"
source "$(dirname "$0")/../lib/fntest.sh"
need_root
need_cmd qemu-system-x86_64 qemu-img mkfs.ext4 debugfs busybox curl jq iptables-legacy ip cpio modinfo sha256sum
[[ -x $PYTHON ]] || skip_all "needs $PYTHON (apt-get install python3)"
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
guest_kernel >/dev/null 2>&1 || skip_all "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
mount --make-rprivate / || bail_out "cannot make / private in the test mount namespace"
rk_init
ip link set lo up

G=$TEST_TMP/guest
W=$TEST_TMP/www
guest_build "$G" serve >&2 || bail_out "cannot build the test guest"
mkdir -p "$W"
cp "$G/rootfs-serve.ext4" "$W/fn.img"
# version 2 of the same guest: another page
cp "$G/rootfs-serve.ext4" "$G/v2.img"
echo "hello from version 2" >"$G/index2.html"
debugfs -w -R "rm /www/index.html" "$G/v2.img" >/dev/null 2>&1
debugfs -w -R "write $G/index2.html /www/index.html" "$G/v2.img" >/dev/null 2>&1
sum1=$(sha256sum <"$W/fn.img")
sum2=$(sha256sum <"$G/v2.img")
[[ $sum1 != "$sum2" ]] || bail_out "debugfs did not change the second version"
cp "$G/rootfs-serve.ext4" "$W/cut.img"
truncate -s 24M "$W/big.img"
echo '{"/cut.img": {"cut": 100000}}' >"$W/.modes.json"

http_serve "$W"
BASE=$HTTP_BASE

on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'

# 20 MB cap: the 16 MiB guest fits, the 24 MiB file does not
FN_OPTS=(--network bridge --kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel tcg --vm-machine pc
	--stop-grace 5 --rootfs-max-size 20000000)

fn_manifest() { # fn_manifest ID URL [PORT]
	local exposure=null
	[[ -n ${3:-} ]] && exposure="{\"port\": $3, \"targetPort\": 8080, \"type\": \"NodePort\"}"
	cat >"$MANIFESTS/$1.json" <<EOF
{"apiVersion": "v1", "kind": "Function", "name": "$1", "replicas": null,
 "spec": {"containers": [], "function": {"execution": {"rootfs": "$2"}, "exposure": $exposure}}}
EOF
}
gets200() { grep -c "^GET $1 200" "$TEST_TMP/http.log" || true; }
page_is() { [[ $(client "$1") == "$2" ]]; }
cache_img() { ls "$STATE"/rootfs/url_*.img 2>/dev/null; }

fn_client_ns

# --- bad downloads: FAILED, nothing left ---------------------------------------------------------
fn_manifest missing "$BASE/missing.img"
fn_manifest cut "$BASE/cut.img"
fn_manifest big "$BASE/big.img"
rk_start_standalone "${FN_OPTS[@]}" || bail_out "riklet did not start"
ok "rk_wait_status 60 missing FAILED" "a rootfs URL answering 404: FAILED"
like "$(rk_reason missing)" "HTTP 404.*missing\.img|missing\.img.*HTTP 404" "  the reason gives the status and the URL ($(rk_reason missing | cut -c1-140))"
ok "rk_wait_status 60 cut FAILED" "a download cut short: FAILED"
like "$(rk_reason cut)" "cut\.img.*([Pp]artial|incomplete|bytes|closed|transfer)" "  the reason says it is incomplete ($(rk_reason cut | cut -c1-160))"
ok "rk_wait_status 60 big FAILED" "a rootfs over --rootfs-max-size: FAILED"
like "$(rk_reason big)" "rootfs-max-size" "  the reason names the flag ($(rk_reason big | cut -c1-160))"
for id in missing cut big; do is "$(vm_left $id)" "" "$id: no QEMU, rule, disk or socket left"; done
is "$(taps)" 0 "no TAP left"
is "$(ls -A "$STATE/rootfs" 2>/dev/null | tr '\n' ' ')" "" "nothing in the rootfs cache (no partial or cached file)"
ok "kill -0 $RK_PID" "riklet keeps serving"
for id in missing cut big; do rm "$MANIFESTS/$id.json"; done
ok "rk_wait_status 60 big TERMINATED" "the failed Functions removed"

# --- two creates of one URL: one GET; a running VM's backing file survives a new version -------------
echo '{"/fn.img": {"delay": 2}}' >"$W/.modes.json" # both creates wait on the same transfer
fn_manifest v1 "$BASE/fn.img" 45011
fn_manifest twin "$BASE/fn.img"
ok "rk_wait_status 120 v1 RUNNING && rk_wait_status 120 twin RUNNING" "two Functions on one URL: RUNNING"
is "$(gets /fn.img)" 1 "  one GET of the rootfs for both"
ok "wait_for 120 page_is 45011 'hello from a riklet guest'" "v1 serves version 1's page on 45011"
base1=$STATE/instances/v1/base.img
like "$(qemu-img info -U "$STATE/instances/v1/disk.qcow2")" "backing file: base\.img \(actual path: $base1\)" \
	"v1's overlay is backed by its own base.img, not the cache file"
is "$(sha256sum <"$base1")" "$sum1" "v1's base.img holds version 1"
ino1=$(stat -c %i "$base1")
rm "$MANIFESTS/twin.json"
ok "rk_wait_status 60 twin TERMINATED" "twin removed"

cp "$G/v2.img" "$W/fn.img.new" && mv "$W/fn.img.new" "$W/fn.img" # a new ETag
echo '{}' >"$W/.modes.json"
fn_manifest v2 "$BASE/fn.img" 45012
ok "rk_wait_status 120 v2 RUNNING" "v2, created after the URL's content changed: RUNNING"
is "$(gets200 /fn.img)" 2 "  the new version was downloaded (a second 200)"
is "$(sha256sum <"$(cache_img)")" "$sum2" "  the cache holds version 2"
ok "wait_for 120 page_is 45012 'hello from version 2'" "v2 boots version 2 (its page on 45012)"
backing=$(qemu-img info -U --output=json "$STATE/instances/v1/disk.qcow2" | jq -r '.["full-backing-filename"]')
is "$(sha256sum <"$backing")" "$sum1" "the backing file of v1's overlay ($backing) is unchanged (checksum)"
is "$(stat -c %i "$base1")" "$ino1" "  same file"
ok "page_is 45011 'hello from a riklet guest'" "v1 still serves version 1's page"
is "$(find "$TEST_TMP" -xdev -inum "$ino1" | tr '\n' ' ')" "$base1 " "version 1 lives on only as v1's base.img"
rm "$MANIFESTS/v1.json"
ok "rk_wait_status 60 v1 TERMINATED" "v1 destroyed"
# (the freed inode number may already be reused by a record riklet wrote since: look for its bytes)
is "$(find "$TEST_TMP" -xdev -inum "$ino1" -type f -exec sha256sum {} + 2>/dev/null | grep -c "^${sum1%% *} ")" 0 \
	"version 1 is gone with v1"
is "$(vm_left v1)" "" "  and nothing of v1 left"
is "$(sha256sum <"$STATE/instances/v2/base.img")" "$sum2" "v2's backing file holds version 2"
rm "$MANIFESTS/v2.json"
ok "rk_wait_status 60 v2 TERMINATED" "v2 destroyed"
ok "wait_for 30 test -z \"\$(qemu_pids)\"" "no QEMU left"
is "$(taps)" 0 "no TAP left"
ok "wait_for 30 test -z \"\$(ls $STATE/instances)\"" "no instance directory left"
is "$(find "$STATE/rootfs" -name '*.part*' | wc -l)" 0 "no partial download left in the cache"
rk_stop TERM

# --- the cache on another filesystem: no hard link possible, the instance gets its own copy -----------
rm -rf "$STATE/rootfs" && mkdir -m 0700 "$STATE/rootfs" && mount -t tmpfs -o size=64m,mode=0700 tmpfs "$STATE/rootfs"
rk_start_standalone "${FN_OPTS[@]}" || bail_out "riklet did not restart"
fn_manifest v3 "$BASE/fn.img"
ok "rk_wait_status 120 v3 RUNNING" "v3, its cache on a tmpfs: RUNNING"
base3=$STATE/instances/v3/base.img
isnt "$(stat -c %d "$base3")" "$(stat -c %d "$(cache_img)")" "  its base.img is on another filesystem than the cache (a copy)"
is "$(sha256sum <"$base3")" "$sum2" "  and holds the cached version"
rm "$MANIFESTS/v3.json"
ok "rk_wait_status 60 v3 TERMINATED" "v3 destroyed"
is "$(vm_left v3)" "" "  nothing of v3 left"
rk_stop TERM

done_testing
