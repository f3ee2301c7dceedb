# riklet.sh — run the real riklet in an integration test, in a private corner of the machine:
# its own --state-dir and --runc-root under TEST_TMP, --network none (no host network changes).
#
#   rk_init                 set STATE, RUNC_ROOT, MANIFESTS (created) and RK_OPTS (the common
#                           flags); register rk_teardown on the cleanup stack.
#   rk_image                build the test's image in $TEST_TMP/layout:latest (mkimage.sh sourced):
#                           busybox idling, exits 0 at once on SIGTERM; bails out when it cannot
#   rk_pod NAME [PORT [VERSION]]    a one-container Pod manifest (container c, image
#                           oci:$TEST_TMP/layout:latest) renamed into $MANIFESTS as NAME.json; with
#                           PORT: node port PORT mapped to the container's 80/TCP, and env V=VERSION
#                           (default 0: a new VERSION is a new spec)
#   rk_start_standalone [FLAG...]   riklet --standalone $MANIFESTS "${RK_OPTS[@]}" FLAG... in the
#                           background, output appended to $RK_LOG; sets RK_PID; waits for
#                           "started" in the log (returns 1 with the log on stderr when it dies).
#   rk_stop [SIGNAL]        signal RK_PID (TERM by default) and wait; prints nothing, returns its
#                           exit status (128+N when killed by signal N).
#   rk_ps_json              riklet ps --json for STATE: {"agent": {...} or null, "instances": [...]}
#   rk_status ID / rk_reason ID     the instance's status / reason ("" when unknown)
#   rk_wait_status T ID STATUS...   wait up to T s until ID has one of STATUS (0) or not (1)
#   rk_runc_ids             ids of the containers in RUNC_ROOT, one a line
#   rk_conmons CID_ERE      how many conmons of this test (their runc root is RUNC_ROOT) run a
#                           container whose id matches CID_ERE as a whole (e.g. 'b[0-9]_c'): other
#                           tests running beside this one may use the same names
#   rk_runc_pid RUNC_ID / rk_runc_created RUNC_ID   from `runc --root RUNC_ROOT list`
#   rk_mounts_under DIR     mount points at or below DIR (decoded), one a line
#   rk_nothing_left ID      succeeds when the instance ID has no runc container, no mount and no
#                           directory left (and says what is left on stderr otherwise)
#   rk_teardown             kill every riklet this test started, delete every container in
#                           RUNC_ROOT (the mounts under TEST_TMP are detached by common.sh)

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RK_PIDS=()

rk_init() {
	need_root
	need_cmd runc jq
	[[ -x $RIKLET ]] || bail_out "riklet binary not found at '$RIKLET'"
	STATE=$TEST_TMP/state
	RUNC_ROOT=$TEST_TMP/runc
	MANIFESTS=$TEST_TMP/manifests
	RK_LOG=$TEST_TMP/riklet.log
	mkdir -p "$MANIFESTS"
	RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --network none --stop-grace 3 --log-level debug)
	on_exit rk_teardown
}

# rk_registry_image CMD_JSON: start a loopback registry, build a busybox image running CMD_JSON,
# push it, and set IMAGE=$REGISTRY/busybox:latest. Needs registry.sh and mkimage.sh sourced.
rk_registry_image() {
	registry_start || bail_out "docker-registry did not start"
	mkimage --cmd "$1" "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
	mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/busybox:latest" || bail_out "push failed"
	IMAGE=$REGISTRY/busybox:latest
}

rk_image() {
	mkimage --cmd '["sh","-c","trap \"exit 0\" TERM; sleep 3600 & wait $!"]' "$TEST_TMP/layout:latest" >&2 ||
		bail_out "mkimage failed"
}

rk_pod() {
	jq -n --arg n "$1" --arg img "oci:$TEST_TMP/layout:latest" --argjson port "${2:-null}" --arg v "${3:-0}" \
		'{apiVersion: "v1", kind: "Pod", name: $n, spec: {containers: [{name: "c", image: $img}
		  + (if $port == null then {} else {env: [{name: "V", value: $v}],
		    ports: {port: $port, target_port: 80, protocol: "TCP"}} end)]}}' >"$TEST_TMP/.$1" &&
		mv "$TEST_TMP/.$1" "$MANIFESTS/$1.json"
}

rk_start_standalone() {
	local before=0
	[[ -f $RK_LOG ]] && before=$(grep -c 'riklet .* started' "$RK_LOG")
	"$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" "$@" >>"$RK_LOG" 2>&1 </dev/null &
	RK_PID=$!
	RK_PIDS+=("$RK_PID")
	if ! wait_for 20 rk__started_or_dead "$before" || ! kill -0 "$RK_PID" 2>/dev/null; then
		echo "riklet did not start:" >&2
		tail -n 30 "$RK_LOG" | sed 's/^/  /' >&2
		return 1
	fi
}
rk__started_or_dead() {
	! kill -0 "$RK_PID" 2>/dev/null || (($(grep -c 'riklet .* started' "$RK_LOG") > $1))
}

rk_stop() {
	local sig=${1:-TERM} rc
	kill -"$sig" "$RK_PID" 2>/dev/null
	wait "$RK_PID" 2>/dev/null
	rc=$?
	return "$rc"
}

rk_ps_json() { "$RIKLET" ps --json --state-dir "$STATE" 2>/dev/null; }
rk_status() { rk_ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .status'; }
rk_reason() { rk_ps_json | jq -r --arg id "$1" '.instances[] | select(.id == $id) | .reason'; }

rk__has_status() {
	local id=$1 s cur
	shift
	cur=$(rk_status "$id")
	for s in "$@"; do [[ $cur == "$s" ]] && return 0; done
	return 1
}
rk_wait_status() {
	local t=$1
	shift
	wait_for "$t" rk__has_status "$@"
}

rk_runc_ids() { runc --root "$RUNC_ROOT" list -q 2>/dev/null; }
rk_conmons() { pgrep -f -- "conmon .*--cid=($1) .*--runtime-arg=$RUNC_ROOT( |\$)" | grep -c . || true; }
rk_runc_pid() { runc --root "$RUNC_ROOT" list --format json 2>/dev/null | jq -r --arg id "$1" '.[]? | select(.id == $id) | .pid'; }
rk_runc_created() { runc --root "$RUNC_ROOT" list --format json 2>/dev/null | jq -r --arg id "$1" '.[]? | select(.id == $id) | .created'; }

rk_mounts_under() {
	local d=$1 mp
	awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r mp; do
		printf -v mp '%b' "$mp" # (no $(...): a fork per mount, polled every 0.1 s)
		[[ $mp == "$d" || $mp == "$d"/* ]] && printf '%s\n' "$mp"
	done
	return 0
}

rk_nothing_left() {
	local id=$1 left=0 c m
	while IFS= read -r c; do
		[[ $c == "${id}_"* ]] && { echo "left: runc container $c" >&2; left=1; }
	done < <(rk_runc_ids)
	while IFS= read -r m; do
		[[ -n $m ]] && { echo "left: mount $m" >&2; left=1; }
	done < <(rk_mounts_under "$STATE/instances/$id")
	[[ -e $STATE/instances/$id ]] && { echo "left: directory $STATE/instances/$id" >&2; left=1; }
	return "$left"
}

rk_teardown() {
	local p c
	kill_ours KILL "${RK_PIDS[@]}" # (only those still riklets of this test: pids are reused)
	for p in "${RK_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [[ -n ${RUNC_ROOT:-} && -d $RUNC_ROOT ]]; then
		while IFS= read -r c; do
			[[ -n $c ]] && runc --root "$RUNC_ROOT" delete --force "$c" >/dev/null 2>&1
		done < <(rk_runc_ids)
	fi
	if [[ -n ${KEEP_TMP:-} && -f ${RK_LOG:-} ]]; then echo "# riklet log: $RK_LOG" >&2; fi
	return 0
}
