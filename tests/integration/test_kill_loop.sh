#!/usr/bin/env bash
# test_kill_loop.sh — riklet killed with -9 at random moments, RK_KILLS times (default 20), while
# 5 Pods are created, replaced and destroyed in a loop (their manifests added, edited and removed
# by this test), and restarted each time. After every restart, each Pod that was RUNNING with its
# current manifest just before the kill is still RUNNING with the same container pids (re-adopted,
# not restarted). At the end every Pod is in the state its manifest asks for (RUNNING with the
# manifest's definition, or gone), owning exactly one of each of its resources, and once every
# manifest is removed nothing is left: no container, process, mount, netns, veth, address, rule,
# instance directory or record (tests/lib/leaks.sh).
# Runs in a private network + mount namespace with `--network bridge` and a loopback registry.
# The seed is printed; RK_SEED=N replays a run (same actions and kill delays; riklet's own timing
# still varies). RK_SLOW_RUNC=1 runs runc through a wrapper that waits up to 1 s before each
# `runc create` (a slow node), so kills land while a create is in flight far more often.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/riklet.sh"
source "$(dirname "$0")/../lib/leaks.sh"
need_cmd unshare iptables-legacy ip umoci skopeo
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
rk_init
ip link set lo up
NETNS=$TEST_TMP/netns
SEED=${RK_SEED:-$((SRANDOM % 1000000))}
RANDOM=$SEED
KILLS=${RK_KILLS:-20}
diag "seed $SEED (replay with RK_SEED=$SEED), $KILLS kills"
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 3
	--keep-records 0 --insecure-registries "$REGISTRY" --log-level debug)
if [[ -n ${RK_SLOW_RUNC:-} ]]; then
	printf '%s\n' '#!/bin/bash' 'for a in "$@"; do [[ $a == create ]] && { sleep "0.$((RANDOM % 10))"; break; }; done' \
		'exec runc "$@"' >"$TEST_TMP/slow-runc" && chmod +x "$TEST_TMP/slow-runc"
	RK_OPTS+=(--runc "$TEST_TMP/slow-runc")
	diag "RK_SLOW_RUNC: runc create waits up to 1 s"
fi
PODS=(k0 k1 k2 k3 k4)
declare -A NC=([k0]=2 [k1]=1 [k2]=2 [k3]=1 [k4]=1) PORT=([k0]=18080 [k1]=18081 [k2]=18082 [k3]=18083 [k4]=18084)
declare -A GEN # per Pod: the manifest's generation (0: none)

manifest() { # manifest POD: (re)write the Pod's manifest with a new generation
	local p=$1
	GEN[$p]=$((${GEN[$p]:-0} + 1))
	jq -n --arg img "$IMAGE" --arg name "$p" --arg gen "${GEN[$p]}" --argjson n "${NC[$p]}" --argjson port "${PORT[$p]}" \
		'{apiVersion: "v1", kind: "Pod", name: $name, spec: {containers: [range(0; $n) as $i |
		  {name: "c\($i)", image: $img, env: [{name: "GEN", value: $gen}],
		   ports: (if $i == 0 then {port: $port, target_port: 80, protocol: "TCP"} else null end)}]}}' \
		>"$MANIFESTS/.$p.tmp" && mv "$MANIFESTS/.$p.tmp" "$MANIFESTS/$p.json"
}
unmanifest() { rm -f "$MANIFESTS/$1.json"; GEN[$1]=0; }
have() { [[ -e $MANIFESTS/$1.json ]]; }
start() { rk_start_standalone || { diag_file "$RK_LOG" 40; bail_out "riklet did not start"; }; }
# load_state: from the records, each Pod's status and the generation of the definition it holds;
# from runc's state files, each container's live init process as PID:START_TIME
declare -A REC_STATUS REC_GEN CPID
load_state() {
	local id st gen pid start f
	REC_STATUS=() REC_GEN=() CPID=()
	# one jq per record: jq reads its files as one stream, and stops at the first bad one
	for f in "$STATE"/records/*.json; do
		[[ -e $f ]] || continue
		id=${f##*/} id=${id%.json}
		st=$(jq -r '.status' "$f" 2>/dev/null) || st=UNREADABLE
		[[ $st == UNREADABLE && ! -e $f ]] && continue # removed meanwhile
		# the definition as it arrived, beside the record (records/<id>.definition)
		gen=$(jq -r '.spec.containers[0].env[0].value' "${f%.json}.definition" 2>/dev/null) || gen=
		REC_STATUS[$id]=$st REC_GEN[$id]=$gen
	done
	while read -r id pid start; do
		[[ -e /proc/$pid ]] && CPID[$id]=$pid:$start
	done < <(jq -r '"\(.id) \(.init_process_pid) \(.init_process_start)"' "$RUNC_ROOT"/*/state.json 2>/dev/null)
}
# current POD: RUNNING with the definition its manifest has now (no replace or destroy pending)
current() { have "$1" && [[ ${REC_STATUS[$1]:-} == RUNNING && ${REC_GEN[$1]:-} == "${GEN[$1]}" ]]; }
pids() { # pids POD: "c0=PID:START c1=PID:START "
	local i out=
	for ((i = 0; i < ${NC[$1]}; i++)); do out+="c$i=${CPID[$1_c$i]:-} "; done
	printf '%s' "$out"
}
owned() { rk_owned "$RK_PID"; }
report() { diag "ps: $(rk_ps_json)" "owned: $(owned | tr '\n' ';')"; diag_file "$RK_LOG" 30; }

# resources OWNED POD: what POD owns, "a<addresses> c<containers> d<dirs> m<mounts> n<netns>
# r<records> u<has rules>"
resources() {
	awk -v p="$2" '
		$1 == "address" && $3 == p { a++ }
		$1 == "container" && index($2, p "_c") == 1 { c++ }
		$1 == "dir" && $2 == p { d++ }
		$1 == "mount" && index($2, "/instances/" p "/") { m++ }
		$1 == "netns" && $2 == p { n++ }
		$1 == "record" && $2 == p ".json" { r++ }
		$1 == "rule" && index($0, "riklet:" p "\"") { u = 1 }
		END { printf "a%d c%d d%d m%d n%d r%d u%d", a, c, d, m, n, r, u }' <<<"$1"
}
# converged: every Pod as its manifest asks, owning one of each resource (one per container for
# containers and overlay mounts) or nothing; one veth per Pod; no stray process or half-done pull
converged() {
	local p o present=0
	load_state
	o=$(owned)
	for p in "${PODS[@]}"; do
		if have "$p"; then
			present=$((present + 1))
			current "$p" || return 1
			[[ $(resources "$o" "$p") == "a1 c${NC[$p]} d1 m${NC[$p]} n1 r1 u1" ]] || return 1
		else
			[[ $(resources "$o" "$p") == "a0 c0 d0 m0 n0 r0 u0" ]] || return 1
		fi
	done
	# (conmon, once it monitors the containers, is the one process a running Pod may have)
	[[ $(awk '$1 == "veth"' <<<"$o" | wc -l) == "$present" && -z $(awk '$1 == "tmp" || ($1 == "process" && !/conmon/)' <<<"$o") ]]
}
reconciled() { (($(grep -c -e 'network reconciled' -e 'network reconcile:' "$RK_LOG") > $1)); }

# --- the 5 Pods RUNNING (the image pulled once) -----------------------------------------------
start
for p in "${PODS[@]}"; do manifest "$p"; done
ok "wait_for 90 converged" "5 Pods RUNNING, each owning one of each of its resources" || report

# --- the loop: churn, a random delay, kill -9, restart ------------------------------------------
SURVIVED=0 KEPT=0 LOST=0 ACTIONS=0 IN_CREATE=0 IN_DESTROY=0 IN_BOOT=0
t0=$SECONDS
for ((k = 1; k <= KILLS; k++)); do
	for ((a = RANDOM % 3 + 1; a > 0; a--)); do
		p=${PODS[RANDOM % 5]}
		if ! have "$p"; then manifest "$p"
		elif ((RANDOM % 10 < 4)); then unmanifest "$p"
		else manifest "$p"; fi
		ACTIONS=$((ACTIONS + 1))
		sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
	done
	sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
	# just before the kill: the Pods RUNNING with their current manifest, and their pids
	declare -A BEFORE=()
	load_state
	for p in "${PODS[@]}"; do current "$p" && BEFORE[$p]=$(pids "$p"); done
	for p in "${PODS[@]}"; do
		case ${REC_STATUS[$p]:-} in CREATING) IN_CREATE=$((IN_CREATE + 1)) ;; DESTROYING) IN_DESTROY=$((IN_DESTROY + 1)) ;; esac
	done
	nrec=$(grep -c -e 'network reconciled' -e 'network reconcile:' "$RK_LOG")
	kill -KILL "$RK_PID"
	wait "$RK_PID" 2>/dev/null
	[[ $? == 137 ]] || { fail "kill $k: riklet had died before the kill"; report; }
	start
	SURVIVED=$((SURVIVED + 1))
	# now and then, killed again while it starts (re-adopting, reconciling, rolling back)
	while ((k < KILLS && RANDOM % 4 == 0)); do
		sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
		nrec=$(grep -c -e 'network reconciled' -e 'network reconcile:' "$RK_LOG")
		kill -KILL "$RK_PID"
		wait "$RK_PID" 2>/dev/null
		start
		k=$((k + 1)) SURVIVED=$((SURVIVED + 1)) IN_BOOT=$((IN_BOOT + 1))
	done
	# after re-adoption, the Pods RUNNING before the kill run the same processes
	wait_for 20 reconciled "$nrec" || { fail "kill $k: the restarted riklet did not reconcile within 20 s"; report; }
	load_state
	for p in "${!BEFORE[@]}"; do
		[[ ${BEFORE[$p]} == *"= "* ]] && continue # a container had no live process: not comparable
		now=$(pids "$p")
		if [[ $now == "${BEFORE[$p]}" && ${REC_STATUS[$p]:-} == RUNNING ]]; then
			KEPT=$((KEPT + 1))
		else
			LOST=$((LOST + 1))
			fail "kill $k: $p was RUNNING with ${BEFORE[$p]}before the kill; now ${REC_STATUS[$p]:-gone} with $now"
			diag "records: $(ls "$STATE/records")" "$(jq -c '{id, status}' "$STATE"/records/*.json 2>&1)"
			report
		fi
	done
	unset BEFORE
done
is "$SURVIVED" "$KILLS" "riklet was killed with -9 and restarted $KILLS times ($ACTIONS manifest changes meanwhile)"
is "$LOST" 0 "every Pod RUNNING before a kill kept its container pids ($KEPT Pod re-adoptions checked)"
ok "((KEPT >= KILLS))" "the pid check ran on enough Pods ($KEPT for $KILLS kills)"

# --- convergence, then nothing left ------------------------------------------------------------
ok "wait_for 90 converged" "every Pod ends in the state its manifest asks for: $(for p in "${PODS[@]}"; do printf '%s=%s ' "$p" "$(rk_status "$p")"; done)" ||
	report
for p in "${PODS[@]}"; do unmanifest "$p"; done
wait_for 60 bash -c "[[ -z \$(ls '$STATE/records') ]]"
left=$(owned)
LEAKS=$(sed '/^$/d' <<<"$left" | wc -l)
is "$left" "" "all manifests removed: nothing is left" || report
ok "kill -0 $RK_PID" "riklet is still running"
nok "grep -q 'stack traceback' '$RK_LOG'" "no Lua error in the logs" || grep -B5 -A25 'stack traceback' "$RK_LOG" | head -80 | sed 's/^/# /' >&2
diag "kill loop: seed $SEED, $SURVIVED kills survived ($IN_CREATE Pods were CREATING, $IN_DESTROY DESTROYING at a kill;" \
	"$IN_BOOT kills while riklet was starting), $ACTIONS manifest changes, $KEPT re-adoptions kept their pids, $LOST lost," \
	"$LEAKS leaks found, $((SECONDS - t0)) s"
done_testing
