# test_image_gc.sh — the image cache and its garbage collection, on a 64 MiB tmpfs state dir:
# `riklet images` lists each image with its size, last use and users; `riklet prune` (through a
# running agent, and with none) removes every unused image and never the one a running Pod uses
# (its container keeps running); --image-gc-high/--image-gc-low remove the least recently used
# unused image first and stop at the low mark; --image-gc-age removes what was unused too long.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd docker-registry umoci skopeo jq du df
rk_init
mkdir -p "$STATE"
mount -t tmpfs -o size=64m,mode=0700 riklet-test-gc "$STATE" || skip_all "cannot mount a tmpfs"
registry_start || bail_out "docker-registry did not start"
for t in a b c; do
	mkimage --cmd "[\"sh\",\"-c\",\"echo image $t; sleep 3600\"]" "$TEST_TMP/layout:$t" >&2 || bail_out "mkimage $t failed"
	mkimage_push "$TEST_TMP/layout:$t" "$REGISTRY/img:$t" || bail_out "push $t failed"
done
GC=(--insecure-registries "$REGISTRY" --image-gc-interval 0)
pod() { jq -n --arg n "$1" --arg img "$REGISTRY/img:$2" '{apiVersion: "v1", kind: "Pod", name: $n,
	spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/$1.json"; }
digest_of() { jq -r '.containers[0].digest' "$STATE/records/$1.json"; }
images_json() { "$RIKLET" images --json --state-dir "$STATE"; }
has_rootfs() { [[ -d $STATE/rootfs/sha256_${1#sha256:} ]]; }
layouts_of() { images_json | jq -r --arg d "$1" '.images[] | select(.digest == $d) | .layouts[]'; }
use() { # use POD TAG: run it until RUNNING, then destroy it (the image stays cached, unused)
	pod "$1" "$2"
	rk_wait_status 120 "$1" RUNNING || bail_out "$1 did not run: $(rk_reason "$1")"
	if [[ ${3:-} != keep ]]; then rm -f "$MANIFESTS/$1.json"; rk_wait_status 60 "$1" TERMINATED; fi
}

rk_start_standalone "${GC[@]}" || bail_out "riklet did not start"
use pa a keep
use pb b
sleep 1.2 # b's last use is older than c's
use pc c
DA=$(digest_of pa) DB=$(digest_of pb) DC=$(digest_of pc)
isnt "$DA" "$DB" "the three tags are three images"

out=$("$RIKLET" images --state-dir "$STATE")
diag "$out"
like "$out" "^DIGEST +REFERENCES +SIZE +LAST USE +USED BY" "riklet images: a header"
like "$out" "${DA:0:19} +$REGISTRY/img:a +[0-9.]+M +now +pa" "image a: its reference, a size, in use now by pa"
like "$out" "${DB:0:19} +$REGISTRY/img:b +[0-9.]+M +[0-9]+s ago +-" "image b: unused, last used seconds ago"
j=$(images_json)
sz=$(jq -r --arg d "$DB" '.images[] | select(.digest == $d) | .size' <<<"$j")
du_sz=$(du -s -B1 "$STATE/rootfs/sha256_${DB#sha256:}" $(layouts_of "$DB") | awk '{ s += $1 } END { print s }')
is "$sz" "$du_sz" "the size of b is what du says of its rootfs and layout ($sz)"
is "$(jq -r '[.images[].digest] | join(" ")' <<<"$j")" "$DB $DC $DA" "sorted by last use, oldest first"

# --- the high / low water marks: b (oldest use) goes, c stays once below the low mark ------------
rk_stop TERM
read -r total used < <(df -B1 --output=size,used "$STATE" | tail -n1)
sb=$(jq -r --arg d "$DB" '.images[] | select(.digest == $d) | .size' <<<"$j")
high=$((100 * used / total))
low=$(((100 * (used - sb) + total - 1) / total + 1))
diag "state dir: $used of $total bytes used ($high%), b is $sb bytes: --image-gc-high $high --image-gc-low $low"
if ((low >= high)); then
	skip "image b is too small against the tmpfs to test the water marks" 3
else
	rk_start_standalone --insecure-registries "$REGISTRY" --image-gc-interval 2 --image-gc-high "$high" \
		--image-gc-low "$low" || bail_out "riklet did not start"
	b_gone() { ! has_rootfs "$DB"; }
	ok "wait_for 60 b_gone" "above --image-gc-high: the least recently used unused image (b) is removed"
	sleep 3 # another pass
	ok "has_rootfs $DC" "c stays: the state dir is below --image-gc-low after b went"
	ok "has_rootfs $DA" "a (in use) stays"
	ok "grep -q 'removed image $DB .*above --image-gc-high' '$RK_LOG'" "the log says which image went and why"
	rk_stop TERM
fi

# --- prune through the running agent ---------------------------------------------------------------
rk_start_standalone "${GC[@]}" || bail_out "riklet did not start"
use pb2 b
pid_a=$(rk_runc_pid "$(runc --root "$RUNC_ROOT" list -q | grep '^pa')")
out=$("$RIKLET" prune --state-dir "$STATE" 2>&1)
is "$?" 0 "riklet prune with a running agent exits 0"
like "$out" "removed $STATE/rootfs/sha256_${DB#sha256:}" "it removed b's rootfs"
like "$out" "removed $STATE/rootfs/sha256_${DC#sha256:}" "and c's"
like "$out" "the agent \\(pid $RK_PID\\) removed" "through the agent (pid $RK_PID)"
nok "has_rootfs $DB || has_rootfs $DC" "b and c are gone from the disk"
is "$(ls "$STATE/images" | wc -l)" 1 "one pulled layout is left (a's)"
ok "has_rootfs $DA" "a, used by the running pa, is kept"
is "$(rk_status pa)" RUNNING "pa is RUNNING"
ok "kill -0 $pid_a" "with its container's process ($pid_a)"
like "$("$RIKLET" images --state-dir "$STATE")" "${DA:0:19} .*pa" "riklet images shows a only"

# --- --image-gc-age ----------------------------------------------------------------------------------
use pc2 c
rk_stop TERM
sleep 2
rk_start_standalone --insecure-registries "$REGISTRY" --image-gc-interval 1 --image-gc-high 0 --image-gc-age 1 ||
	bail_out "riklet did not start"
c_gone() { ! has_rootfs "$DC"; }
ok "wait_for 30 c_gone" "--image-gc-age 1: c, unused for longer, is removed"
ok "has_rootfs $DA" "a (in use) is kept"
# the rootfs goes first, the log line once the whole image is removed (its layouts too)
ok "wait_for 10 grep -q 'removed image $DC .*--image-gc-age' '$RK_LOG'" "the log says it was its age"

# --- prune with no agent: the record of the running pa still protects a ------------------------------
rk_stop TERM
out=$("$RIKLET" prune --state-dir "$STATE" 2>&1)
is "$?" 0 "riklet prune with no agent exits 0"
ok "has_rootfs $DA" "a is kept (pa's record says it is in use, its overlay is mounted)"
ok "kill -0 $pid_a" "pa's container still runs"
nok "\"\$RIKLET\" ps --image-gc-high 50 --image-gc-low 60 --state-dir '$STATE' >/dev/null 2>&1" \
	"--image-gc-low above --image-gc-high is refused"

done_testing
