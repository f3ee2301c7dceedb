#!/usr/bin/env bash
# test_hostile_input.sh — one table of hostile workload definitions (hostile_cases.py) through
# each front-end of a real riklet (--network bridge, in private namespaces): the standalone
# manifest directory, then the scheduler (the grpcio peer, each definition sent as the exact
# bytes of an InstanceScheduling). Each case: FAILED with the reason the table expects, the
# agent still up, nothing created (no instance directory, no runc container, no iptables rule),
# records and `ps --json` valid UTF-8; RSS back near its level after the whole table. Then what
# is specific to each front-end: manifest file names, oci: references (any from a manifest; from
# the scheduler only inside --local-image-dirs), hostile instance ids from the scheduler (a NUL
# that used to cut "advgood\0zzz" to "advgood", ../, invalid UTF-8), the scheduler's own port.
# The transport cases (garbage, silence, HTTP/1.1, 5 MB frames) are test_sched_peers.sh's.
source "$(dirname "$0")/../lib/private_ns.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd runc conmon umoci jq iptables-legacy-save ip iconv curl
need_py grpc google.protobuf
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "cannot create a private network + mount namespace (unshare -n -m)"
ip link set lo up
rk_init
NETNS=$TEST_TMP/netns
set_opts() { RK_OPTS=(--state-dir "$STATE" --runc-root "$RUNC_ROOT" --netns-dir "$NETNS" --network bridge
	--stop-grace 2 --log-level debug "$@"); }
set_opts

IMGS=$TEST_TMP/imgs
mkdir -p "$IMGS" "$TEST_TMP/other"
mkimage "$IMGS/layout:latest" >&2 || bail_out "mkimage failed"
cp -a "$IMGS/layout" "$TEST_TMP/other/layout"
IMAGE=oci:$IMGS/layout:latest
CASES=$TEST_TMP/cases
"$PYTHON" "$RIKLET_SRC_DIR/tests/integration/hostile_cases.py" "$CASES" "$IMAGE" || bail_out "hostile_cases.py failed"
truncate -s 100M "$CASES/huge100mb.json"
echo '(larger than|bytes \(1 MiB\)|1048576|too large)' >"$CASES/huge100mb.re"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$RK_PID/status"; }
alive() { kill -0 "$RK_PID" 2>/dev/null; }
rules_of() { iptables-legacy-save 2>/dev/null | grep -cF -- "\"riklet:$1\"" || true; }
nothing_created() { # ID: no dir, container, mount or rule
	rk_nothing_left "$1" && (($(rules_of "$1") == 0))
}
utf8_clean() { # records and ps --json: valid UTF-8, valid JSON
	local f
	rk_ps_json | iconv -f UTF-8 -t UTF-8 >/dev/null || return 1
	rk_ps_json | jq -e . >/dev/null || return 1
	for f in "$STATE"/records/*.json; do
		[[ -e $f ]] || continue
		iconv -f UTF-8 -t UTF-8 "$f" >/dev/null 2>&1 || { echo "not UTF-8: $f" >&2; return 1; }
	done
}
log_has_since() { tail -n +"$(($1 + 1))" "$RK_LOG" | grep -qF -- "$2"; }
no_h_left() { rk_ps_json | jq -e '[.instances[] | select(.id | startswith("h-")) | select(.status != "TERMINATED")] | length == 0' >/dev/null; }
# all_status PREFIX STATUS: every instance whose id starts with PREFIX has STATUS (ps --json)
all_failed() {
	local want=$1 got
	got=$(rk_ps_json | jq -r --arg p "$2" '[.instances[] | select(.id | startswith($p)) | select(.status == "FAILED")] | length')
	((got >= want))
}
# One look at what exists (ps, runc, rules, mounts), then the verdicts of each case against it.
snapshot() {
	SNAP_PS=$(rk_ps_json)
	SNAP_RUNC=$(rk_runc_ids)
	SNAP_RULES=$(iptables-legacy-save 2>/dev/null)
	SNAP_MOUNTS=$(rk_mounts_under "$STATE/instances")
}
snap_reason() { jq -r --arg id "$1" '.instances[] | select(.id == $id) | .reason' <<<"$SNAP_PS"; }
snap_nothing() { # ID
	local id=$1 left=
	grep -q "^${id}_" <<<"$SNAP_RUNC" && left+=" runc-container"
	grep -qF -- "\"riklet:$id\"" <<<"$SNAP_RULES" && left+=" iptables-rule"
	grep -qF -- "$STATE/instances/$id/" <<<"$SNAP_MOUNTS" && left+=" mount"
	[[ -e $STATE/instances/$id ]] && left+=" directory"
	[[ -z $left ]] || { echo "left:$left" >&2; return 1; }
}
# check_case FRONT ID NAME REASON: the verdicts for one case
check_case() {
	local front=$1 id=$2 name=$3 reason=$4 re
	re=$(<"$CASES/$name.re")
	if [[ $reason =~ $re ]]; then
		pass "$front $name: FAILED, ${reason:0:150}"
	else
		fail "$front $name: reason '${reason:0:300}' does not match /$re/"
	fi
	ok "snap_nothing '$id'" "$front $name: nothing created (directory, container, mount, rule)"
}

# ---- standalone manifests ---------------------------------------------------------------------
rk_start_standalone || bail_out "riklet did not start"
cat >"$MANIFESTS/good.json" <<EOF
{"apiVersion":"v1","kind":"Pod","name":"good","spec":{"containers":[{"name":"c","image":"$IMAGE",
 "env":null,"ports":{"port":8080,"target_port":80}}]}}
EOF
ok "rk_wait_status 60 good RUNNING" "control: a good Pod from a manifest (any oci: path) is RUNNING"
is "$(rules_of good)" 1 "control: its port 8080 has a DNAT rule"
sleep 1
rss0=$(rss_kib)
names=()
for f in "$CASES"/*.json; do
	n=$(basename "$f" .json)
	names+=("$n")
	cp "$f" "$MANIFESTS/h-$n.json"
done
wait_for 60 all_failed "${#names[@]}" h- || diag "not all FAILED in 60 s"
snapshot
for n in "${names[@]}"; do
	check_case standalone "h-$n" "$n" "$(snap_reason "h-$n")"
done
ok alive "standalone: riklet is still up after ${#names[@]} hostile manifests"
ok utf8_clean "standalone: records and ps --json are valid UTF-8 and JSON"
is "$(rk_status good)" RUNNING "standalone: the good Pod is still RUNNING"

# file names that are not ids
printf '%s' "$(<"$MANIFESTS/good.json")" | sed 's/"good"/"fname"/; s/8080/8081/' >"$MANIFESTS/;rm -rf x.json"
cp "$CASES/name_dot.json" "$MANIFESTS/...json"
ok "wait_for 30 log_has_since 0 'creating instance _rm_-rf_x-'" \
	"a manifest named ';rm -rf x.json' becomes a safe id"
safe=$(rk_ps_json | jq -r '.instances[].id | select(startswith("_rm_-rf_x-"))')
ok "rk_wait_status 60 '$safe' RUNNING" "... '$safe', RUNNING"
nok "rk_ps_json | jq -e '.instances[] | select(.id == \"..\" or .id == \".\" or .id == \"...\")'" \
	"a manifest named '...json' never gives an id '..' or '.'"

rm -f "$MANIFESTS"/h-*.json "$MANIFESTS/;rm -rf x.json" "$MANIFESTS/...json"
ok "wait_for 60 no_h_left" \
	"standalone: the FAILED instances are destroyed once their manifests are removed"
sleep 2
rss1=$(rss_kib)
ok "((rss1 < rss0 + 24 * 1024))" "standalone: RSS ${rss0} KiB before the table, ${rss1} KiB after (100 MB and 5 MB manifests read capped)"
rm -f "$MANIFESTS/good.json"
ok "rk_wait_status 60 good TERMINATED" "control: the good Pod is destroyed"
ok "wait_for 20 nothing_created good" "... leaving nothing"
rk_stop || true

# ---- the scheduler (grpcio peer) --------------------------------------------------------------
STATE=$TEST_TMP/state2
source "$(dirname "$0")/../lib/sched.sh"
touch "$EVENTS"
sched_start || bail_out "scheduler peer did not start"
set_opts --local-image-dirs "$IMGS"
mkdir -p "$STATE/images/x"
ln -s "$STATE/images" "$IMGS/cache"
"$RIKLET" --scheduler "http://127.0.0.1:$SCHED_PORT" --hostname hostile --metrics-interval 60 "${RK_OPTS[@]}" \
	>>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
registered() { curl -sf "$CONTROL/state" | jq -e '.workers.hostile.open' >/dev/null; }
ok "wait_for 30 registered" "scheduler: riklet registers" || bail_out "no registration"

# send ID FILE [ACTION]: an InstanceScheduling of exactly these bytes (any id bytes: \xNN escapes);
# send_many: the same for each "ID<TAB>FILE<TAB>ACTION" line of stdin, in one python run
send() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-0}" | send_many; }
send_many() {
	"$PYTHON" -c '
import base64, json, sys, urllib.request
control = sys.argv[1]
def ld(n, b):
    out, ln = bytes([n << 3 | 2]), len(b)
    while True:
        out += bytes([(ln & 0x7f) | (0x80 if ln > 0x7f else 0)])
        ln >>= 7
        if not ln:
            return out + b
for line in sys.stdin.read().splitlines():
    ident, path, action = line.split("\t")
    ident = ident.encode().decode("unicode_escape").encode("latin-1")
    data = open(path, "rb").read() if path else b""
    msg = ld(1, ident) + ld(2, data) + bytes([3 << 3, int(action)])
    req = urllib.request.Request(control + "/misbehave",
                                 json.dumps({"mode": "raw", "data_b64": base64.b64encode(msg).decode()}).encode(),
                                 {"content-type": "application/json"})
    urllib.request.urlopen(req).read()
' "$CONTROL"
}
ev_last() { jq -r --arg id "$1" 'select(.kind == "instance" and .instance_id == $id) | "\(.status)\t\(.metrics)"' "$EVENTS" | tail -n1; }
ev_is() { [[ $(ev_last "$1") == "$2"$'\t'* ]]; }

printf '{"apiVersion":"v1","kind":"Pod","name":"advgood","spec":{"containers":[{"name":"c","image":"%s"}]}}' "$IMAGE" >"$TEST_TMP/advgood.json"
send advgood "$TEST_TMP/advgood.json"
ok "wait_for 60 ev_is advgood RUNNING" "control: a Pod from the scheduler with an oci: image inside --local-image-dirs is RUNNING"
pid_good=$(rk_runc_pid advgood_c)
sleep 1
rss0=$(rss_kib)
n_sched=0
for n in "${names[@]}"; do
	(($(stat -c %s "$CASES/$n.json") > 3 * 1024 * 1024)) && continue # a frame over the 4 MiB gRPC cap: test_sched_peers.sh
	printf 's-%s\t%s\t0\n' "$n" "$CASES/$n.json"
	n_sched=$((n_sched + 1))
done | send_many
n_sched=0
for n in "${names[@]}"; do (($(stat -c %s "$CASES/$n.json") > 3 * 1024 * 1024)) || n_sched=$((n_sched + 1)); done
wait_for 60 all_failed "$n_sched" s- || diag "not all FAILED in 60 s"
snapshot
for n in "${names[@]}"; do
	(($(stat -c %s "$CASES/$n.json") > 3 * 1024 * 1024)) && continue
	check_case scheduler "s-$n" "$n" "$(ev_last "s-$n" | cut -f2-)"
	is "$(snap_reason "s-$n")" "$(ev_last "s-$n" | cut -f2-)" "scheduler $n: the record says the same"
done
ok alive "scheduler: riklet is still up after $n_sched hostile instructions"

# oci: from the scheduler
printf '{"apiVersion":"v1","kind":"Pod","name":"o","spec":{"containers":[{"name":"c","image":"oci:%s/other/layout:latest"}]}}' "$TEST_TMP" >"$TEST_TMP/oci_other.json"
send oci-other "$TEST_TMP/oci_other.json"
ok "wait_for 30 ev_is oci-other FAILED" "scheduler: oci: outside --local-image-dirs is FAILED"
like "$(ev_last oci-other)" "is not inside --local-image-dirs" "... saying so"
printf '{"apiVersion":"v1","kind":"Pod","name":"o","spec":{"containers":[{"name":"c","image":"oci:%s/cache/x:latest"}]}}' "$IMGS" >"$TEST_TMP/oci_cache.json"
send oci-cache "$TEST_TMP/oci_cache.json"
ok "wait_for 30 ev_is oci-cache FAILED" "scheduler: a symbolic link from a listed dir into STATE/images is FAILED"
like "$(ev_last oci-cache)" "the layout $STATE/images/x is not inside" "... naming where it really points"
ok "nothing_created oci-other && nothing_created oci-cache" "... nothing created"

# the scheduler's own port
printf '{"apiVersion":"v1","kind":"Pod","name":"sp","spec":{"containers":[{"name":"c","image":"%s","ports":{"port":%d,"target_port":80}}]}}' \
	"$IMAGE" "$SCHED_PORT" >"$TEST_TMP/schedport.json"
send sched-port "$TEST_TMP/schedport.json"
ok "wait_for 30 ev_is sched-port FAILED" "scheduler: a Pod exposing the scheduler's port $SCHED_PORT is FAILED"
like "$(ev_last sched-port)" "node port $SCHED_PORT/tcp is reserved: the scheduler's port" "... naming it"
ok "nothing_created sched-port" "... nothing created"

# hostile instance ids
m=$(wc -l <"$RK_LOG")
send 'advgood\x00zzz' "" 1
ok "wait_for 10 log_has_since $m 'DESTROY refused: instance id \"advgood\\u0000zzz\"'" \
	"scheduler: DESTROY 'advgood\\0zzz' is refused, the id quoted whole"
sleep 1
is "$(rk_status advgood)" RUNNING "... and instance advgood is untouched (RUNNING)"
is "$(rk_runc_pid advgood_c)" "$pid_good" "... same container pid"
send 'adv\x00/../../etc' "$TEST_TMP/advgood.json"
ok "wait_for 10 log_has_since $m 'instance id \"adv\\u0000/../../etc\" is not valid'" \
	"scheduler: CREATE 'adv\\0/../../etc' is refused"
ok "! rk_ps_json | jq -e '.instances[] | select(.id == \"adv\")' >/dev/null && [[ ! -e \$STATE/instances/adv ]]" "... no instance 'adv' appears"
for id in '../x' '.' '' "$(printf 'x%.0s' {1..300})" 'a;rm -rf /' 'a b' ; do
	send "$id" "$TEST_TMP/advgood.json"
	ok "wait_for 10 ev_is '$id' FAILED" "scheduler: CREATE with id '${id:0:20}' (${#id} chars) is FAILED"
	like "$(ev_last "$id")" "instance id .* is not valid" "... saying the id is not valid"
done
send 'bad\xff' "$TEST_TMP/advgood.json"
ok "wait_for 10 log_has_since $m 'instance id \"bad\\xff\" is not valid'" \
	"scheduler: an id of invalid UTF-8 is refused (quoted with \\xff)"
ok "wait_for 10 log_has_since $m 'not a valid protobuf string'" \
	"... its FAILED is not sent (it cannot be a protobuf string), and the status stream keeps working:"
send advgood2 "$TEST_TMP/advgood.json"
ok "wait_for 60 ev_is advgood2 RUNNING" "... a later good CREATE is reported RUNNING"
n_ids=$(find "$STATE/instances" -mindepth 1 -maxdepth 1 | wc -l)
is "$n_ids" 2 "scheduler: only advgood and advgood2 have instance directories"
ok alive "scheduler: riklet is still up"
ok utf8_clean "scheduler: records and ps --json are valid UTF-8 and JSON"
sleep 2
rss1=$(rss_kib)
ok "((rss1 < rss0 + 24 * 1024))" "scheduler: RSS ${rss0} KiB before the table, ${rss1} KiB after"
send advgood "" 1
send advgood2 "" 1
ok "wait_for 60 ev_is advgood TERMINATED && wait_for 60 ev_is advgood2 TERMINATED" "control: both destroyed"
ok "wait_for 20 nothing_created advgood && nothing_created advgood2" "... leaving nothing"
rk_stop || true
done_testing
