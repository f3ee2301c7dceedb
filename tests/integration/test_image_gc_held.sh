#!/usr/bin/env bash
# test_image_gc_held.sh — an instance whose record cannot be read is held (kept in quarantine, what
# it names is kept): its record may name any image, so image garbage collection removes nothing
# while it is held — not its image (rootfs nor pulled layout), not even an image nobody uses — by
# age (--image-gc-age 1 every second), by `riklet prune` through the agent, or by `riklet prune`
# with no agent; each says why. `riklet images` names the unreadable record. Once the operator
# removes the quarantined record and restarts riklet, prune removes both images (the control).
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq runc
rk_init
registry_start || bail_out "docker-registry did not start"
for t in a b; do
	mkimage --cmd "[\"sh\",\"-c\",\"echo image $t; sleep 3600\"]" "$TEST_TMP/layout:$t" >&2 || bail_out "mkimage $t failed"
	mkimage_push "$TEST_TMP/layout:$t" "$REGISTRY/img:$t" || bail_out "push $t failed"
done
pod() { jq -n --arg n "$1" --arg img "$REGISTRY/img:$2" '{apiVersion: "v1", kind: "Pod", name: $n,
	spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/$1.json"; }
digest_of() { jq -r '.containers[0].digest' "$STATE/records/$1.json"; }
has_rootfs() { [[ -d $STATE/rootfs/sha256_${1#sha256:} ]]; }
layouts_of() { "$RIKLET" images --json --state-dir "$STATE" 2>/dev/null |
	jq -r --arg d "$1" '.images[] | select(.digest == $d) | .layouts[]'; }
all_there() { # every directory of images a and b
	has_rootfs "$DA" && has_rootfs "$DB" && for d in "${LAYOUTS[@]}"; do [[ -d $d ]] || return 1; done
}

rk_start_standalone --insecure-registries "$REGISTRY" --image-gc-interval 0 || bail_out "riklet did not start"
pod ph a
pod pu b
rk_wait_status 120 ph RUNNING || bail_out "ph did not run: $(rk_reason ph)"
rk_wait_status 120 pu RUNNING || bail_out "pu did not run: $(rk_reason pu)"
rm -f "$MANIFESTS/pu.json"
rk_wait_status 60 pu TERMINATED || bail_out "pu was not destroyed"
DA=$(digest_of ph) DB=$(digest_of pu)
mapfile -t LAYOUTS < <(layouts_of "$DA"; layouts_of "$DB")
diag "a $DA, b $DB, layouts: ${LAYOUTS[*]}"
ok "((${#LAYOUTS[@]} >= 2)) && all_there" "images a (used by ph) and b (unused) are cached: rootfs and layout each"
pid_h=$(rk_runc_pid ph_c)
like "$pid_h" '^[1-9][0-9]*$' "ph's container runs (pid $pid_h)"
rk_stop TERM

# ph's record is damaged while riklet is down (a truncated write, a disk error)
printf '{"id":"ph","containers":[{"name":"c","dig' >"$STATE/records/ph.json"
rk_start_standalone --insecure-registries "$REGISTRY" --image-gc-interval 1 --image-gc-age 1 ||
	bail_out "riklet did not start"
ok "wait_for 20 test -f '$STATE/records/quarantine/ph.json'" "the damaged record is moved to quarantine (ph is held)"
ok "wait_for 30 grep -q 'no image removed: the record of ph cannot be read' '$RK_LOG'" \
	"the periodic pass (--image-gc-age 1, every second) removes nothing and says why"
sleep 3 # more passes
ok "all_there" "a's rootfs and layout, and b's, are all still there"
ok "kill -0 $pid_h" "ph's container still runs"

out=$("$RIKLET" images --state-dir "$STATE" 2>&1)
diag "$out"
like "$out" "${DA:0:19} .*${DB:0:19}|${DB:0:19} .*${DA:0:19}" "riklet images lists both images"
like "$out" "record of ph cannot be read" "and says ph's record cannot be read"
is "$("$RIKLET" images --json --state-dir "$STATE" 2>/dev/null | jq -c .unreadable_records)" '["ph"]' \
	"images --json: unreadable_records [\"ph\"]"

out=$("$RIKLET" prune --state-dir "$STATE" 2>&1)
isnt "$?" 0 "riklet prune through the agent exits non-zero"
like "$out" "no image removed: the record of ph cannot be read" "and says why"
unlike "$out" "^removed " "it removed nothing"
ok "all_there" "every directory of a and b is still there"
rk_stop TERM

out=$("$RIKLET" prune --state-dir "$STATE" 2>&1)
isnt "$?" 0 "riklet prune with no agent exits non-zero"
like "$out" "cannot be read" "and says a record cannot be read"
ok "all_there" "every directory of a and b is still there"
ok "kill -0 $pid_h" "ph's container still runs"

# --- control: the operator deals with ph (removes its quarantined record); then prune removes ------
rm -f "$STATE/records/quarantine/ph.json" "$STATE/records/quarantine/ph.definition" "$MANIFESTS/ph.json"
rk_start_standalone --insecure-registries "$REGISTRY" --image-gc-interval 0 || bail_out "riklet did not start"
ph_gone() { ! kill -0 "$pid_h" 2>/dev/null && ! rk_runc_ids | grep -q '^ph'; }
ok "wait_for 60 ph_gone" "with no record naming it, ph's container is removed as a leftover"
out=$("$RIKLET" prune --state-dir "$STATE" 2>&1)
is "$?" 0 "riklet prune exits 0"
nok "has_rootfs $DA || has_rootfs $DB" "and removes both images now"
rk_stop TERM
done_testing
