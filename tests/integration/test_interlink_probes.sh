# test_interlink_probes.sh — probes and lifecycle hooks of pods created through the interLink
# endpoint, run by riklet as kubelet runs them, against real images in a local registry: a
# readiness probe (exec) that turns ready once a file appears, behind a startup probe; a liveness
# probe that fails and restarts the container (restartCount, lastState); httpGet and tcpSocket
# probes against a busybox httpd / nc in the pod (and against a path and a port that fail: never
# ready); a postStart hook writing a file the container reads; a preStop hook that runs before the
# container gets SIGTERM on a delete, and one that hangs, bounded by the grace period; a failing
# postStart hook; imagePullPolicy Never (ErrImageNeverPull for an image not on the node, the cached
# one runs); an emptyDir of medium Memory: a tmpfs of sizeLimit shared by two containers, unmounted
# by the delete; riklet killed with -9 and restarted runs the probes of the pods it re-adopts.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc nsenter
rk_init

rk_registry_image '["sh","-c","sleep 3600 & wait $!"]'
PORT=$(free_port) || bail_out "no free port"
U=http://127.0.0.1:$PORT

# api METHOD PATH BODY-FILE: the status code on the first line, the body after
api() {
	local c
	c=$(curl -s -X "$1" -H 'Content-Type: application/json' -H "InterLink-Http-Session: Probes#$RANDOM" \
		--data-binary "@$3" -o "$TEST_TMP/resp" -w '%{http_code}' "$U$2")
	printf '%s\n' "$c"
	cat "$TEST_TMP/resp"
}
body() { tail -n +2 <<<"$1"; }
put() { printf '%s' "$2" >"$TEST_TMP/$1"; echo "$TEST_TMP/$1"; }
# pod UID NAME CONTAINERS-JSON [SPEC-EXTRA-JSON]: a v1.Pod as the API server writes it
pod() {
	jq -n --arg uid "$1" --arg name "$2" --argjson cs "$3" --argjson extra "${4:-{\}}" '{
		apiVersion: "v1", kind: "Pod", metadata: {name: $name, namespace: "default", uid: $uid},
		spec: ({containers: $cs, restartPolicy: "Never", terminationGracePeriodSeconds: 10} + $extra),
		status: {phase: "Pending"}}'
}
# ctr NAME SHELL-CMD [EXTRA-JSON]: a container running sh -c CMD
ctr() {
	jq -nc --arg n "$1" --arg img "$IMAGE" --arg c "$2" --argjson x "${3:-{\}}" \
		'{name: $n, image: $img, imagePullPolicy: "IfNotPresent", command: ["sh", "-c"], args: [$c]} + $x'
}
create() { # create POD-JSON: POST /create, answers 200
	local r
	r=$(api POST /create "$(put c.json "$(jq -n --argjson p "$1" '{pod: $p, container: []}')")")
	[[ $(head -n1 <<<"$r") == 200 ]] || diag "create: $r"
}
status_of() { body "$(api GET /status "$(put st.json "[$1]")")"; }
# cfield POD-JSON INDEX JQ-PATH: a field of container INDEX's status
cfield() { status_of "$1" | jq -r ".[0].containers[$2]$3"; }
is_field() { [[ $(cfield "$1" "$2" "$3") == "$4" ]]; }
on_fail_diag() { (($1)) || { diag "status: $(status_of "$2")"; diag_file "$RK_LOG" 40; }; }
period1='{"periodSeconds": 1, "timeoutSeconds": 5}'
probe() { jq -c --argjson p "$period1" '. + $p' <<<"$1"; } # a probe every second

rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" || bail_out "riklet did not start"

# --- readiness (exec) behind a startup probe -------------------------------------------------
# (the file is put by the test into the pod's emptyDir, through the node's side of the volume)
READY=$(jq -c '.spec.volumes = [{name: "flag", emptyDir: {}}]' <<<"$(pod 22222222-aaaa-4bbb-8ccc-000000000001 ready \
	"[$(ctr main 'sleep 3600 & wait $!' "{\"volumeMounts\": [{\"name\": \"flag\", \"mountPath\": \"/flag\"}],
	  \"startupProbe\": $(probe '{"exec": {"command": ["true"]}}'),
	  \"readinessProbe\": $(probe '{"exec": {"command": ["cat", "/flag/ready"]}}')}")]")")
# --- liveness that fails once /flag/die exists: restarted (restartPolicy Always) -------------
LIVE=$(jq -c '.spec.volumes = [{name: "flag", emptyDir: {}}]' <<<"$(pod 22222222-aaaa-4bbb-8ccc-000000000002 live \
	"[$(ctr main 'echo run; sleep 3600 & wait $!' "{\"volumeMounts\": [{\"name\": \"flag\", \"mountPath\": \"/flag\"}],
	  \"livenessProbe\": $(probe '{"exec": {"command": ["test", "!", "-e", "/flag/die"]}, "failureThreshold": 2}')}")]" \
	'{"restartPolicy": "Always", "terminationGracePeriodSeconds": 2}')")
DIE=$STATE/instances/k8s-22222222-aaaa-4bbb-8ccc-000000000002/volumes/flag/die
# --- httpGet and tcpSocket against httpd / nc in the pod; a path and a port that fail --------------
HTTPD='mkdir -p /tmp/www; echo fine >/tmp/www/healthz; httpd -f -p 8080 -h /tmp/www'
NC='while true; do nc -l -p 9090 </dev/null >/dev/null; done'
NET=$(pod 22222222-aaaa-4bbb-8ccc-000000000003 net "[
	$(ctr web "$HTTPD" "{\"ports\": [{\"name\": \"http\", \"containerPort\": 8080}],
		\"readinessProbe\": $(probe '{"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}}')}"),
	$(ctr tcp "$NC" "{\"readinessProbe\": $(probe '{"tcpSocket": {"port": 9090}}')}"),
	$(ctr web404 "$HTTPD" "{\"readinessProbe\": $(probe '{"httpGet": {"path": "/missing", "port": 8080}}')}"),
	$(ctr tcpclosed "$NC" "{\"readinessProbe\": $(probe '{"tcpSocket": {"port": 9091}}')}")]")
# --- postStart writes a file the container reads; preStop runs before SIGTERM -----------------
HOOKS=$(pod 22222222-aaaa-4bbb-8ccc-000000000004 hooks "[$(ctr main \
	"trap 'echo got-sigterm; exit 0' TERM; until [ -e /tmp/poststart ]; do sleep 0.2; done; echo \"read \$(cat /tmp/poststart)\";
	 while true; do sleep 0.2; done" \
	'{"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo written-by-poststart >/tmp/poststart"]}},
	  "preStop": {"exec": {"command": ["sh", "-c", "echo prestop-ran >/proc/1/fd/1; sleep 1"]}}}}')]")

# --- a preStop hook that hangs (bounded by the grace period); a postStart hook that fails ------
BOUND=$(pod 22222222-aaaa-4bbb-8ccc-000000000005 bound "[$(ctr main 'sleep 3600 & wait $!' \
	'{"lifecycle": {"preStop": {"exec": {"command": ["sleep", "3600"]}}}}')]" '{"terminationGracePeriodSeconds": 3}')
PSFAIL=$(pod 22222222-aaaa-4bbb-8ccc-000000000006 psfail "[$(ctr main 'sleep 3600 & wait $!' \
	'{"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo no-way >&2; exit 3"]}}}}')]" '{"terminationGracePeriodSeconds": 2}')
# --- an emptyDir of medium Memory (1Mi) shared by two containers ----------------------------------
MEM=$(jq -c '.spec.volumes = [{name: "mem", emptyDir: {medium: "Memory", sizeLimit: "1Mi"}}]' <<<"$(pod \
	22222222-aaaa-4bbb-8ccc-000000000007 mem "[
	$(ctr writer 'echo shared >/m/f; dd if=/dev/zero of=/m/big bs=4096 count=1024 2>/dev/null; echo "size=$(wc -c </m/big)"; sleep 3600 & wait $!' \
		'{"volumeMounts": [{"name": "mem", "mountPath": "/m"}]}'),
	$(ctr reader 'until [ -e /m/f ]; do sleep 0.2; done; echo "read=$(cat /m/f)"; sleep 3600 & wait $!' \
		'{"volumeMounts": [{"name": "mem", "mountPath": "/m", "readOnly": true}]}')]")")

for p in "$READY" "$LIVE" "$NET" "$HOOKS" "$BOUND" "$PSFAIL" "$MEM"; do create "$p"; done

wait_for 60 is_field "$READY" 0 '.state | keys[0]' running
ok=$?
rfail() { grep -q 'k8s-22222222-aaaa-4bbb-8ccc-000000000001: container main: readiness probe failed (1 of 3)' "$RK_LOG"; }
wait_for 40 rfail
sleep 2
st=$(status_of "$READY")
is "$(jq -r '.[0].containers[0] | "\(.ready) \(.started)"' <<<"$st")" "false true" \
	"readiness: running, started (startup probe passed) but not ready while /flag/ready is missing"
on_fail_diag $((ok == 0)) "$READY"
touch "$STATE/instances/k8s-22222222-aaaa-4bbb-8ccc-000000000001/volumes/flag/ready"
ok 'wait_for 40 is_field "$READY" 0 .ready true' "... ready once the file appears"
like "$(grep 'container main is ready' "$RK_LOG")" 'readiness probe succeeded' "... riklet logs the change"

wait_for 60 is_field "$LIVE" 0 '.state | keys[0]' running
sleep 3
is "$(cfield "$LIVE" 0 .restartCount)" 0 "liveness: no restart while the probe passes"
touch "$DIE"
restarted() { (($(cfield "$LIVE" 0 .restartCount) >= 1)); }
ok 'wait_for 60 restarted' "... once it fails, the container is restarted (restartCount 1+)"
rm -f "$DIE"
like "$(grep -o 'container main: liveness probe failed [0-9]* times: test exited with code 1' "$RK_LOG" | head -1)" \
	'liveness probe failed 2 times' "... after failureThreshold (2) failures in a row, logged with the reason"
like "$(grep 'instance k8s-22222222-aaaa-4bbb-8ccc-000000000002: container main .*restarting it' "$RK_LOG" | head -1)" \
	'liveness probe failed 2 times' "... and the exit it caused is reported with that reason"
wait_for 30 is_field "$LIVE" 0 '.state | keys[0]' running
is "$(cfield "$LIVE" 0 '.state | keys[0]')" running "... and it runs again (restartPolicy Always)"

ok 'wait_for 40 is_field "$NET" 0 .ready true' "httpGet (named port, header) on httpd's /healthz: ready"
ok 'wait_for 20 is_field "$NET" 1 .ready true' "tcpSocket on nc's port: ready"
st=$(status_of "$NET")
is "$(jq -r '[.[0].containers[2,3] | "\(.state | keys[0]) \(.ready)"] | join(",")' <<<"$st")" "running false,running false" \
	"httpGet of a 404 path and tcpSocket of a closed port: running, never ready"
like "$(grep 'web404: readiness probe failed' "$RK_LOG" | head -1)" 'HTTP status 404' "... the 404 is the reason logged"
is "$(jq -r '.[0].containers[0].restartCount' <<<"$st")" 0 "... readiness failures restart nothing"

LG=$(put lg.json '{"Namespace":"default","PodUID":"22222222-aaaa-4bbb-8ccc-000000000004","PodName":"hooks","ContainerName":"main","Opts":{}}')
hooklog() { body "$(api GET /getLogs "$LG")"; }
ok "wait_for 30 eval 'hooklog | grep -q \"read written-by-poststart\"'" "postStart: the hook wrote the file the container reads"
# preStop: the container's log is copied as it grows (tail -f keeps reading after the delete removes it)
LOGF=$STATE/instances/k8s-22222222-aaaa-4bbb-8ccc-000000000004/main/logs/0.log
tail -n +1 -f "$LOGF" >"$TEST_TMP/hooks.log" 2>/dev/null &
TAILPID=$!
r=$(api POST /delete "$(put d.json "$HOOKS")")
is "$(head -n1 <<<"$r")" 200 "delete of the pod with a preStop hook: 200"
sleep 1
kill "$TAILPID" 2>/dev/null
wait "$TAILPID" 2>/dev/null
order=$(grep -o -e 'prestop-ran' -e 'got-sigterm' "$TEST_TMP/hooks.log" | tr '\n' ' ')
is "$order" "prestop-ran got-sigterm " "preStop: the hook ran before the container got SIGTERM"
ok "rk_nothing_left k8s-22222222-aaaa-4bbb-8ccc-000000000004" "... and the delete left nothing"

# --- the preStop hook that hangs: cut at the grace period (3 s), then SIGTERM, SIGKILL -----------
wait_for 60 is_field "$BOUND" 0 '.state | keys[0]' running
t0=$(date +%s)
r=$(api POST /delete "$(put d.json "$BOUND")")
dt=$(($(date +%s) - t0))
is "$(head -n1 <<<"$r")" 200 "delete of a pod whose preStop hook hangs: 200"
ok "((dt >= 3 && dt < 40))" "... after the grace period given to the hook (${dt} s), not the hook's hour"
like "$(grep 'container main: preStop hook failed' "$RK_LOG" | head -1)" 'did not finish within 3 s' "... the cut hook is logged"

# --- the failing postStart hook: the container is stopped (restartPolicy Never: terminated) -----
wait_for 60 is_field "$PSFAIL" 0 '.state | keys[0]' terminated
st=$(status_of "$PSFAIL")
like "$(jq -r '.[0].containers[0].state.terminated.message' <<<"$st")" 'postStart hook failed: sh exited with code 3: no-way' \
	"a failing postStart hook stops the container, the reason in its terminated message"

# --- imagePullPolicy Never ------------------------------------------------------------------
mkimage_push "$TEST_TMP/layout:latest" "$REGISTRY/busybox:second" || bail_out "push failed"
NEVER=$(pod 22222222-aaaa-4bbb-8ccc-000000000008 never "[$(ctr main 'echo ran' \
	"{\"imagePullPolicy\": \"Never\", \"image\": \"$REGISTRY/busybox:second\"}")]")
NEVERC=$(pod 22222222-aaaa-4bbb-8ccc-000000000009 neverc "[$(ctr main 'echo cached-ran' '{"imagePullPolicy": "Never"}')]")
create "$NEVER"
create "$NEVERC"
wait_for 60 is_field "$NEVER" 0 '.state | keys[0]' terminated
st=$(status_of "$NEVER")
is "$(jq -r '.[0].containers[0].state.terminated.reason' <<<"$st")" ErrImageNeverPull \
	"imagePullPolicy Never, image not on the node (though the registry has it): ErrImageNeverPull"
like "$(jq -r '.[0].containers[0].state.terminated.message' <<<"$st")" 'busybox:second is not on this node' "... the message names the image"
ok "! grep -q 'pulling .*busybox:second' '$RK_LOG'" "... and nothing was pulled"
wait_for 60 is_field "$NEVERC" 0 '.state | keys[0]' terminated
is "$(cfield "$NEVERC" 0 '.state.terminated.reason')" Completed "imagePullPolicy Never with the image cached: it runs"

# --- emptyDir medium Memory ---------------------------------------------------------------
MEMDIR=$STATE/instances/k8s-22222222-aaaa-4bbb-8ccc-000000000007/volumes/mem
LGM=$(put lgm.json '{"Namespace":"default","PodUID":"22222222-aaaa-4bbb-8ccc-000000000007","PodName":"mem","ContainerName":"reader","Opts":{}}')
ok "wait_for 30 eval 'body \"\$(api GET /getLogs \"\$LGM\")\" | grep -q read=shared'" "emptyDir medium Memory: shared by the pod's containers"
like "$(grep " $MEMDIR " /proc/self/mountinfo)" ' - tmpfs tmpfs .*size=1024k' "... it is a tmpfs of sizeLimit (1Mi) on the node"
sed -i 's/"reader"/"writer"/' "$LGM"
sz=$(body "$(api GET /getLogs "$LGM")" | sed -n 's/^size=//p')
ok "((${sz:-0} > 0 && ${sz:-0} <= 1048576))" "... at most 1 MiB of the 4 MiB it tried (${sz:-none} bytes)"
api POST /delete "$(put d.json "$MEM")" >/dev/null
ok "! grep -q ' $MEMDIR ' /proc/self/mountinfo" "... its tmpfs is unmounted by the delete"
ok "rk_nothing_left k8s-22222222-aaaa-4bbb-8ccc-000000000007" "... which leaves nothing"

# --- riklet killed with -9 and restarted: the probes of the pods it re-adopts run again ---------
n0=$(cfield "$LIVE" 0 .restartCount)
rk_stop KILL
rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" || bail_out "riklet did not restart"
ok 'wait_for 40 is_field "$READY" 0 .ready true' "after kill -9 and restart: the readiness probe runs again (ready)"
rm -f "$STATE/instances/k8s-22222222-aaaa-4bbb-8ccc-000000000001/volumes/flag/ready"
ok 'wait_for 40 is_field "$READY" 0 .ready false' "... and follows the container (the file removed: not ready)"
touch "$DIE"
more_restarts() { (($(cfield "$LIVE" 0 .restartCount) > n0)); }
ok 'wait_for 60 more_restarts' "... and the liveness probe restarts its container again (restartCount beyond $n0)"

for p in "$READY" "$LIVE" "$NET" "$PSFAIL" "$NEVER" "$NEVERC"; do api POST /delete "$(put d.json "$p")" >/dev/null; done
ok "! rk_runc_ids | grep -q k8s-22222222" "every pod deleted: no container left"
ok "! pgrep -f 'nsenter --net=.*curl' >/dev/null" "no probe helper left running"
done_testing
