#!/usr/bin/env bash
# test_readopt_many.sh — riklet killed with -9 while it holds RK_PODS (default 12) Pods with a port
# each, the node's network damaged while it is down, then started again: every Pod is re-adopted
# with the same container pids (none restarted), the damage is repaired (a DNAT rule deleted, a
# veth down and off the bridge, a Pod's address and default route removed inside its namespace),
# a leftover rule of an instance that does not exist is removed, the rules of all the Pods are
# written in one libiptc commit (not one per Pod), also while another program takes the xtables
# lock again and again during the adoptions, and the rules end as they were.
# Runs in a private network + mount namespace with `--network bridge` and a loopback registry.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd unshare iptables-legacy iptables-legacy-save ip nsenter umoci skopeo
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
rk_init
ip link set lo up
NETNS=$TEST_TMP/netns
N=${RK_PODS:-12}
# the xtables lock is the test's own (riklet and iptables-legacy take it; see the first restart)
XT=$TEST_TMP/xtables.lock
export XTABLES_LOCKFILE=$XT
touch "$XT"
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM INT; sleep 3600 & wait $!"]'
# operator policies over the defaults (same verdicts until the last restart, where both change)
PD=$TEST_TMP/policies
mkdir -p "$PD"
policies() { # policies REFUSE DROP: the admission policy refuses Pod REFUSE, the network policy gives DROP no rules
	cat >"$PD/admission.lua" <<EOF
local A = setmetatable({}, { __index = base })
function A.admit(w, ctx)
  if w.name == "$1" then return nil, "refused by the changed policy" end
  return base.admit(w, ctx)
end
return A
EOF
	cat >"$PD/network.lua" <<EOF
local N = setmetatable({}, { __index = base })
function N.rules(w, ctx)
  if ctx.instance_id == "$2" then return {} end
  return base.rules(w, ctx)
end
return N
EOF
}
policies none none
RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge --stop-grace 3
	--insecure-registries "$REGISTRY" --log-level debug --policy-dir "$PD")

pod() { printf 'm%02d' "$1"; }
for ((i = 1; i <= N; i++)); do
	jq -n --arg img "$IMAGE" --arg name "$(pod "$i")" --argjson port $((19000 + i)) \
		'{apiVersion: "v1", kind: "Pod", name: $name,
		  spec: {containers: [{name: "main", image: $img, ports: {port: $port, target_port: 80, protocol: "TCP"}}]}}' \
		>"$TEST_TMP/$(pod "$i").json"
done
rk_start_standalone || bail_out "riklet did not start"
mv "$TEST_TMP"/m*.json "$MANIFESTS/"
running() { (($(rk_ps_json | jq '[.instances[] | select(.status == "RUNNING")] | length') == N)); }
wait_for 240 running || { diag_file "$RK_LOG"; bail_out "the $N Pods did not all reach RUNNING"; }
pass "$N Pods RUNNING"

# what must survive the restart unchanged: container pids, riklet's rules (counters left out)
pids() { runc --root "$RUNC_ROOT" list --format json | jq -r '.[] | "\(.id) \(.pid) \(.status)"' | sort; }
rules() { { iptables-legacy-save -t nat; iptables-legacy-save -t filter; } | grep -F -- '-A RIKLET' | sort; }
pids >"$TEST_TMP/pids.before"
rules >"$TEST_TMP/rules.before"
is "$(grep -c -- '-j DNAT' "$TEST_TMP/rules.before")" "$N" "one DNAT rule per Pod before the kill"
netrec() { jq -r --arg id "$1" ".instances[\$id].$2" "$STATE/network.json"; }

rk_stop KILL
# the damage, done while riklet is down
P1=$(pod 1) P2=$(pod 2) P3=$(pod 3) P4=$(pod 4)
dnat1=$(grep -F "riklet:$P1" "$TEST_TMP/rules.before" | grep DNAT | head -n 1)
ok "iptables-legacy -t nat ${dnat1/-A/-D}" "deleted the DNAT rule of $P1"
V2=$(netrec "$P2" host_if)
ok "ip link set $V2 nomaster && ip link set $V2 down" "took the veth of $P2 ($V2) down and off the bridge"
ok "nsenter --net=$NETNS/$P3 ip addr flush dev eth0" "removed the address of $P3 inside its namespace"
ok "nsenter --net=$NETNS/$P4 ip route del default" "removed the default route of $P4"
ok "iptables-legacy -t nat -A RIKLET -p tcp --dport 19999 -m comment --comment riklet:ghost -j DNAT --to-destination 10.89.9.9:80" \
	"a leftover rule of an instance that does not exist"

L=$(wc -l <"$RK_LOG")
T0=$EPOCHREALTIME
# another program takes the xtables lock again and again while riklet starts (another firewall
# manager; in CI, the iptables commands of the test beside): the adoptions wait for it, each
# retrying on its own timer, and get it over several loop turns; they still share one commit
(for _ in {1..10}; do flock "$XT" sleep 0.05; done) &
HOLDER=$!
wait_for 5 bash -c "! flock -n '$XT' true" || bail_out "could not take the xtables lock"
rk_start_standalone || bail_out "riklet did not start again"
wait "$HOLDER"
booted() { tail -n +"$((L + 1))" "$RK_LOG" | grep -qF "[agent] boot: "; }
wait_for 60 booted || { diag_file "$RK_LOG"; bail_out "riklet did not finish its boot"; }
diag "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "re-adopted and reconciled within %.1f s of the start", b - a }')"
after() { tail -n +"$((L + 1))" "$RK_LOG"; }
diag "$(after | grep -F "[agent] boot: " | sed 's/.*\] //')"
is "$(after | grep -c ' re-adopted: ')" "$N" "all $N Pods re-adopted"
is "$(after | grep -c -e '-> FAILED' -e 'restarting it in')" 0 "none failed or restarted"
pids >"$TEST_TMP/pids.after"
ok "diff '$TEST_TMP/pids.before' '$TEST_TMP/pids.after' >&2" "every container has the pid it had (none restarted)"
ok "diff '$TEST_TMP/rules.before' <(rules) >&2" "riklet's rules are what they were: the deleted DNAT back, the leftover gone"
is "$(after | grep -cF '[fw] applied riklet:')" 0 "no libiptc commit for one Pod alone"
like "$(after | grep -F '[fw] applied ')" "applied $N owners: \+1 -0 " \
	"one commit for the rules of all $N Pods, adding the deleted rule and moving none"
like "$(ip -o link show "$V2")" "master riklet0 .*state (UP|LOWERLAYERDOWN)|,UP.* master riklet0" "the veth of $P2 is on the bridge again"
like "$(ip -o link show "$V2")" "<[^>]*,UP" "and up"
like "$(nsenter --net="$NETNS/$P3" ip -o -4 addr show dev eth0)" "inet $(netrec "$P3" ip)/" "$P3 has its address back"
like "$(nsenter --net="$NETNS/$P4" ip route show default)" "^default via 10\.89\.0\.1 " "$P4 has its default route back"
# one look inside each namespace; repair calls only where something drifted
like "$(after | grep -o 'instance [a-z0-9]*: repairing its network namespace .*' | sort | tr '\n' ' ')" \
	"^instance $P3: .*address .* missing.* instance $P4: .*\(no default route\) $" \
	"the namespaces of $P3 (address) and $P4 (route) repaired, and only those"

# a second restart with nothing to repair: no commit at all, network.json not written again
L=$(wc -l <"$RK_LOG")
rk_stop KILL
NJ=$(stat -c %i "$STATE/network.json")
rk_start_standalone || bail_out "riklet did not start a third time"
wait_for 60 booted || bail_out "riklet did not finish its boot"
is "$(after | grep -c ' re-adopted: ')" "$N" "restarted again: all $N re-adopted"
is "$(after | grep -cF '[fw] applied ')" 0 "with nothing to repair, nothing written to the tables"
is "$(after | grep -cF 'repairing its network namespace')" 0 "and no namespace repaired"
is "$(stat -c %i "$STATE/network.json")" "$NJ" "and network.json not rewritten (same inode: every save renames a new file)"
ok "diff '$TEST_TMP/pids.before' <(pids) >&2" "and still the same pids"

# the policies changed while riklet was down: both are asked again (a running Pod the admission
# policy now refuses keeps running, with a warning; the network policy's new rules replace the old)
P5=$(pod 5) P6=$(pod 6)
policies "$P6" "$P5"
L=$(wc -l <"$RK_LOG")
rk_stop KILL
rk_start_standalone || bail_out "riklet did not start a fourth time"
wait_for 60 booted || bail_out "riklet did not finish its boot"
is "$(after | grep -c ' re-adopted: ')" "$N" "policies changed: all $N re-adopted"
is "$(after | grep -F 'the admission policy now refuses it' | grep -o 'instance [a-z0-9]*' | tr '\n' ' ')" "instance $P6 " \
	"the changed admission policy was asked again: it refuses $P6 (which keeps running), and only it"
ok "diff <(grep -vF '"riklet:$P5"' '$TEST_TMP/rules.before') <(rules) >&2" \
	"the changed network policy was asked again: $P5's rules gone, the others' as they were"
ok "diff '$TEST_TMP/pids.before' <(pids) >&2" "and still the same pids"

rm -f "$MANIFESTS"/*.json
gone() { (($(rk_ps_json | jq '[.instances[] | select(.status == "RUNNING" or .status == "DESTROYING")] | length') == 0)); }
wait_for 120 gone || diag_file "$RK_LOG"
is "$(rk_runc_ids | grep -c .)" 0 "every Pod removed at the end"
rk_stop
done_testing
