# test_standalone_bad.sh — one `riklet --standalone` serving a good manifest while bad ones are
# dropped in: invalid JSON, an empty file, an oversized file, an unknown kind, names with "../",
# 10 KB of characters or shell syntax, a container name with "../", an image reference with shell
# syntax, an image missing from the registry, a registry that is down, and hostile file names.
# Each bad one is FAILED with a reason naming the problem and leaves nothing behind; the good
# instance stays RUNNING (same process) and riklet goes on serving: a good manifest added last
# still runs. Nothing is created outside the state dir, and no shell ever runs the input.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc
rk_init

CMD='["sh","-c","trap '"'exit 0'"' TERM INT; echo \"hello from busybox greeting=$GREETING\"; sleep 3600 & wait $!"]'
rk_registry_image "$CMD"
DEAD=127.0.0.1:$(free_port) # a registry address where nothing listens

# Canaries: what a shell running our input would create.
PWNED=/tmp/pwned
pwned_before=no
[[ -e $PWNED ]] && pwned_before=yes
CANARY=$TEST_TMP/canary

# pod NAME [IMAGE [CONTAINER_NAME [GREETING]]] — a Pod manifest on stdout
pod() {
	jq -n --arg name "$1" --arg img "${2:-$IMAGE}" --arg c "${3:-c}" --arg g "${4:-}" \
		'{apiVersion: "v1", kind: "Pod", name: $name, replicas: null,
		  spec: {containers: [{name: $c, image: $img, ports: null,
		         env: (if $g == "" then null else [{name: "GREETING", value: $g}] end)}], function: null}}'
}
logs() { "$RIKLET" logs "$1" --state-dir "$STATE" 2>&1; }
runc_has() { rk_runc_ids | grep -qx -- "$1"; }
ids() { rk_ps_json | jq -r '.instances[].id'; }

# --- the good instance ----------------------------------------------------------------------
# Its env value is shell syntax: it must reach the container as bytes, never be run.
pod good "$IMAGE" c "\$(touch $CANARY);\`touch $CANARY\`" >"$MANIFESTS/good.json"
rk_start_standalone --insecure-registries "$REGISTRY,$DEAD" --pull-timeout 60 || bail_out "riklet did not start"
rk_wait_status 60 good RUNNING
is "$(rk_status good)" RUNNING "the good manifest reaches RUNNING" || diag_file "$RK_LOG" 30
good_pid=$(rk_runc_pid good_c)
like "$good_pid" '^[1-9][0-9]*$' "runc lists good_c with a pid"
ok "wait_for 10 grep -qF 'greeting=\$(touch $CANARY);\`touch $CANARY\`' '$STATE/instances/good/c/logs/0.log'" \
	"the env value with shell syntax reaches the container verbatim"

# --- the bad ones, dropped in while it runs --------------------------------------------------
# Each: FILE (in MANIFESTS), then the words its FAILED reason must contain.
declare -A REASON
bad() { # bad FILE REGEX... < CONTENT
	local f=$1
	shift
	cat >"$MANIFESTS/$f"
	REASON[$f]=$(printf '%s\n' "$@")
}
long=$(printf 'x%.0s' {1..10240})

bad invalid-json.json 'not valid JSON' < <(printf '{"apiVersion": "v1", "kind": "Pod", "name": "broken", "spec": {')
bad empty.json 'not valid JSON' </dev/null
bad huge.json '(larger|too large|too big|exceeds)' < <(printf '{"apiVersion":"v1","kind":"Pod","name":"big","pad":"'
	head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' a; printf '"}')
bad unknown-kind.json 'kind' 'Deployment' < <(pod deploy | jq '.kind = "Deployment"')
bad dotdot-name.json '^name' '\.\./\.\./' < <(pod '../../../etc/riklet-escape')
bad long-name.json '^name' '\(10240 bytes\)' < <(pod "$long")
bad semicolon-name.json '^name' 'a;rm -rf /' < <(pod 'a;rm -rf /')
bad subst-name.json '^name' 'touch /tmp/pwned' < <(pod "\$(touch $PWNED)")
bad dotdot-container.json 'spec\.containers\[1\]\.name' '\.\./' < <(pod okname "$IMAGE" '../../escape')
bad shell-image.json 'spec\.containers\[1\]\.image' 'touch' < <(pod okname2 "$IMAGE;touch $PWNED")
bad missing-image.json 'not found' 'no-such-image' < <(pod okname3 "$REGISTRY/no-such-image:latest")
bad registry-down.json 'unreachable' "$DEAD" < <(pod okname4 "$DEAD/busybox:latest")
# File names: spaces and shell syntax. The instance id is made safe from them.
# (A file name cannot hold '/': these would touch ./pwned, in riklet's working directory.)
bad "my pod; \$(touch pwned) \`touch pwned\` & | > <.json" '^name' 'x;y' < <(pod 'x;y')
bad "-rf ~ *.json" '^name' 'dash star' < <(pod 'dash star')

# badid FILE: the instance id riklet derived from FILE (the one ps shows with source .../FILE)
badid() { rk_ps_json | jq -r --arg src "standalone:$MANIFESTS/$1" '.instances[] | select(.source == $src) | .id'; }
all_ended() {
	local f id
	for f in "${!REASON[@]}"; do
		id=$(badid "$f")
		[[ -n $id ]] && rk__has_status "$id" FAILED TERMINATED || return 1
	done
}
ok "wait_for 90 all_ended" "every bad manifest has reached an end state" || {
	diag "ps: $(rk_ps_json | jq -c '[.instances[] | {id, status, reason: (.reason // "" | .[0:80])}]')"
	diag_file "$RK_LOG" 40
}

for f in "${!REASON[@]}"; do
	id=$(badid "$f")
	shown=${f:0:40}
	if [[ -z $id ]]; then
		fail "$shown: riklet made an instance of it"
		continue
	fi
	like "$id" '^[A-Za-z0-9._-]{1,64}$' "$shown: its instance id '$id' is a safe name"
	unlike "$id" '^\.\.?$' "$shown: its instance id is not . or .."
	is "$(rk_status "$id")" FAILED "$shown: FAILED"
	reason=$(rk_reason "$id")
	while IFS= read -r want; do
		like "$reason" "$want" "$shown: the reason names the problem (/$want/)"
	done <<<"${REASON[$f]}"
	ok "rk_nothing_left '$id'" "$shown: no runc container, mount or instance dir left"
done

# --- the good one is untouched, riklet keeps serving -----------------------------------------
is "$(rk_status good)" RUNNING "the good instance is still RUNNING"
is "$(rk_runc_pid good_c)" "$good_pid" "the good container is the same process"
ok "kill -0 $RK_PID" "riklet is still running"
pod late "$IMAGE" c late-greeting >"$MANIFESTS/late.json"
rk_wait_status 60 late RUNNING
is "$(rk_status late)" RUNNING "a good manifest added after the bad ones reaches RUNNING"
late_logged() { [[ $(logs late) == *greeting=late-greeting* ]]; }
ok "wait_for 10 late_logged" "and its output shows in riklet logs"
is "$(rk_runc_ids | sort | tr '\n' ' ')" "good_c late_c " "runc lists only the two good containers"

# A hostile file name with a good manifest runs under a safe id and is destroyed with its file.
weird="sp ace;\$(touch pwned)&\`touch pwned\`.json"
pod weird "$IMAGE" c weird-greeting >"$MANIFESTS/$weird"
weird_running() { local id; id=$(badid "$weird"); [[ -n $id ]] && rk__has_status "$id" RUNNING; }
ok "wait_for 60 weird_running" \
	"a good manifest with spaces and shell syntax in its file name reaches RUNNING"
wid=$(badid "$weird")
like "$wid" '^[A-Za-z0-9._-]{1,64}$' "its instance id '$wid' is a safe name"
rm -- "$MANIFESTS/$weird"
rk_wait_status 30 "$wid" TERMINATED
is "$(rk_status "$wid")" TERMINATED "removing it gives TERMINATED"
ok "rk_nothing_left '$wid'" "and leaves nothing behind"

# A file name that starts like an option: its id must never be taken for one by runc.
pod dash "$IMAGE" c dash-greeting >"$MANIFESTS/--help.json"
dash_running() { local id; id=$(badid --help.json); [[ -n $id ]] && rk__has_status "$id" RUNNING; }
ok "wait_for 60 dash_running" "a good manifest named --help.json reaches RUNNING" ||
	diag "$(rk_ps_json | jq -c '.instances[] | select(.name == "dash")')"
did=$(badid --help.json)
ok "rk_runc_ids | grep -q -- '^${did}_c\$'" "runc lists its container ${did}_c"
rm -- "$MANIFESTS/--help.json"
rk_wait_status 30 "$did" TERMINATED
is "$(rk_status "$did")" TERMINATED "removing --help.json gives TERMINATED"
ok "rk_nothing_left '$did'" "and leaves nothing behind"

# Hidden files are not manifests (editors' temporary files): no instance, nothing done.
pod hidden >"$MANIFESTS/.hidden.json"
pod hidden2 >"$MANIFESTS/..json"
sleep 1
is "$(rk_ps_json | jq -r '[.instances[] | select(.source | test("/\\.[^/]*$"))] | length')" 0 "hidden .json files are ignored"
rm -f -- "$MANIFESTS/.hidden.json" "$MANIFESTS/..json"

# Removing the bad manifests forgets nothing that was not there and breaks nothing.
for f in "${!REASON[@]}"; do rm -f -- "$MANIFESTS/$f"; done
sleep 1
for f in "${!REASON[@]}"; do
	id=$(badid "$f")
	[[ -n $id ]] && ok "rk_nothing_left '$id' && rk__has_status '$id' FAILED TERMINATED" "${f:0:40}: removed, still nothing left"
done
is "$(rk_status good)" RUNNING "the good instance is still RUNNING after the bad manifests are removed"
ok "kill -0 $RK_PID" "riklet is still running"

# --- nothing outside the state dir ----------------------------------------------------------
is "$( [[ -e $PWNED ]] && echo yes || echo no)" "$pwned_before" "$PWNED was not created"
nok "test -e pwned || test -e '$MANIFESTS/pwned' || test -e '$STATE/pwned'" "no file 'pwned' was created by a hostile file name"
nok "test -e '$CANARY'" "the shell syntax in the env value was never run"
nok "test -e /etc/riklet-escape || test -e '$STATE/../etc' || test -e '$TEST_TMP/escape'" \
	"no path was built from a '../' name"
is "$(cd "$TEST_TMP" && ls -A | grep -v -e '^registry\.' -e '^\.ports-given$' -e '^\.layout\.mkimage\.lock$' | sort | tr '\n' ' ')" \
	"layout manifests riklet.log runc state " "nothing new beside the state dir in the test's temp dir"
is "$(ls -A "$STATE/instances" | sort | tr '\n' ' ')" "good late " "only the good instances have directories"
like "$(ls -A "$STATE/images")" '^[^ ]+$' "one image layout in the cache (no leftovers of failed pulls)"
nok "grep -E 'attempt to|stack traceback' '$RK_LOG'" "no Lua error in riklet's log"

rk_stop TERM
is "$?" 0 "riklet stops cleanly"
done_testing
