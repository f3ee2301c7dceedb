# test_hostile_fulldisk_create.sh (hostile) — the durable CREATING record against a full state disk
# (a 48 MB tmpfs, in a private mount namespace, --network none): a Pod created while the disk is
# full, and one whose 600 KB definition does not fit in what is left, must never get a container
# without a record: each is FAILED saying its record cannot be stored, with no runc container,
# conmon, mount or bundle left, and riklet serves on; once space is freed the same manifests run.
# A riklet killed (-9) right after such a failure leaves nothing for the next one to adopt.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "needs a private mount namespace (unshare -n -m)"
need_cmd umoci skopeo jq busybox runc conmon
rk_init
mkdir -p "$STATE"
mount -t tmpfs -o size=48m,mode=0700 riklet-test-state "$STATE" || bail_out "cannot mount a tmpfs on $STATE"

rk_image
# pod NAME [big]: a one-container Pod manifest (big: with 20 env values of 30,000 bytes), renamed in
pod() {
	local big=""
	[[ -n ${2:-} ]] && big=$(head -c 30000 /dev/zero | tr '\0' x) # (an argument is at most 128 KiB)
	jq -n --arg n "$1" --arg img "oci:$TEST_TMP/layout:latest" --arg big "$big" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [{name: "c", image: $img,
		  env: (if $big == "" then null else [range(0; 20) | {name: "BIG\(.)", value: $big}] end)}]}}' \
		>"$TEST_TMP/.$1"
	mv "$TEST_TMP/.$1" "$MANIFESTS/$1.json"
}
conmons_of() { rk_conmons "$1_c"; }
no_container() { # no runc container, conmon, mount or bundle of NAME
	! rk_runc_ids | grep -qx -- "$1_c" && (($(conmons_of "$1") == 0)) && [[ -z $(rk_mounts_under "$STATE/instances/$1") ]] &&
		[[ ! -e $STATE/instances/$1/c/config.json ]]
}
fill() { # fill the state disk but FREE bytes
	rm -f "$STATE"/fill*
	dd if=/dev/zero of="$STATE/fill" bs=1M >/dev/null 2>&1
	for n in $(seq 1 400); do head -c 512 /dev/zero >"$STATE/fill.$n" 2>/dev/null || break; done
	[[ -n ${1:-} ]] && rm -f "$STATE"/fill.{1..400} && {
		local free
		free=$(($(stat -f -c '%a * %S' "$STATE")))
		((free > $1)) && head -c $((free - $1)) /dev/zero >>"$STATE/fill.pad" 2>/dev/null
	}
	return 0
}

rk_start_standalone || bail_out "riklet did not start"
pod warm # unpacks the image into the cache while there is room
rk_wait_status 90 warm RUNNING
is "$(rk_status warm)" RUNNING "a first Pod runs (the image is cached)" || diag_file "$RK_LOG" 30

# --- the disk full: a new Pod ---------------------------------------------------------------------
fill
ok "! head -c 4096 /dev/zero >'$STATE/fill.probe' 2>/dev/null" "the state disk is full"
pod full
# (riklet ps reads the state dir: the FAILED record cannot be written either, the log says it)
failed_unstored() { grep -q "instance $1 (Pod $1): CREATING -> FAILED: cannot store its record: .*No space left on device" "$RK_LOG"; }
ok "wait_for 60 failed_unstored full" "a Pod created on a full state disk is FAILED: its record cannot be stored" ||
	diag_file "$RK_LOG" 20
ok "no_container full" "no container, conmon, mount or bundle of it"
is "$(rk_status warm)" RUNNING "the running Pod is untouched"

# --- room for a small record, not for a 600 KB definition -------------------------------------------
rm -f "$STATE"/fill*
fill 65536
pod big big
ok "wait_for 60 failed_unstored big" "a Pod whose 600 KB definition does not fit in what is left is FAILED, saying so" ||
	diag_file "$RK_LOG" 20
ok "no_container big" "no container, conmon, mount or bundle of it"

# --- riklet killed after those failures: nothing to adopt, nothing left ---------------------------
rk_stop KILL
rm -f "$STATE"/fill*
rk_start_standalone || bail_out "riklet did not restart"
rk_wait_status 90 full RUNNING
rk_wait_status 90 big RUNNING
is "$(rk_status full)/$(rk_status big)" RUNNING/RUNNING \
	"with space freed, the next riklet creates both from their manifests" || diag_file "$RK_LOG" 30
is "$(rk_status warm)" RUNNING "and the first Pod runs on"
rm -f "$MANIFESTS"/*.json
for p in warm full big; do rk_wait_status 60 "$p" TERMINATED; done
rk_stop
ok "rk_nothing_left warm && rk_nothing_left full && rk_nothing_left big" "nothing is left once the manifests are gone"
done_testing
