# test_interlink.sh — riklet as an interLink plugin, driven as interLink drives it (JSON bodies on
# GET, the session header, both /create forms, TCP and a unix socket, a bearer token) with pod JSON
# as Kubernetes writes it, against real images in a local registry: the ping with the node's CPU
# count; a hello-world pod whose log (stdout and stderr) matches; command/args override; env
# literals, ConfigMap/Secret refs, envFrom and fieldRef; a repeated create starts nothing; exit 42
# -> terminated 42; a command that does not exist; one container failing while the other runs on;
# logs with Tail, Bytes, Timestamps and Follow (chunks before the end); unknown pods and
# containers; bad bodies refused with a reason and nothing created; riklet killed with -9 and
# restarted answers with the same PodJID; delete leaves nothing.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc
rk_init

rk_registry_image '["sh","-c","echo image-default-cmd; sleep 3600 & wait $!"]'
PORT=$(free_port) || bail_out "no free port"
SOCK=$TEST_TMP/il.sock
TOKEN=$TEST_TMP/token
echo "s3cret-token" >"$TOKEN"
U=http://127.0.0.1:$PORT

# api METHOD PATH [BODY-FILE] [curl args...]: the status code on the first line, the body after
# (RESP: the file the body goes to)
api() {
	local m=$1 p=$2 body=${3:--} c
	shift 3 2>/dev/null || shift $#
	local resp=${RESP:-$TEST_TMP/resp}
	c=$(curl -s -X "$m" -H 'Content-Type: application/json' -H "InterLink-Http-Session: Test#$RANDOM" \
		-H "Authorization: Bearer s3cret-token" --data-binary "@$body" -o "$resp" -w '%{http_code}' "$@" "$U$p")
	printf '%s\n' "$c"
	cat "$resp"
}
code() { head -n1 <<<"$1"; }
body() { tail -n +2 <<<"$1"; }

# pod UID NAME CONTAINERS-JSON [SPEC-EXTRA-JSON]: a v1.Pod as the API server writes it
pod() {
	jq -n --arg uid "$1" --arg name "$2" --argjson cs "$3" --argjson extra "${4:-{\}}" '{
		apiVersion: "v1", kind: "Pod",
		metadata: {name: $name, namespace: "default", uid: $uid, labels: {app: $name},
		           annotations: {"interlink.eu/pod-vk": "vk"}, creationTimestamp: "2026-11-29T10:00:00Z"},
		spec: ({containers: $cs, restartPolicy: "Never", terminationGracePeriodSeconds: 2,
		       dnsPolicy: "ClusterFirst", serviceAccountName: "default", nodeName: "vk-node",
		       volumes: [{name: "kube-api-access-x", projected: {sources: [{serviceAccountToken: {path: "token"}}]}}]} + $extra),
		status: {phase: "Pending"}}'
}
ctr() { # ctr NAME SHELL-CMD: a container running sh -c CMD, with the SA token mount Kubernetes adds
	jq -n --arg n "$1" --arg img "$IMAGE" --arg c "$2" '{name: $n, image: $img, imagePullPolicy: "IfNotPresent",
		command: ["sh", "-c"], args: [$c], resources: {},
		volumeMounts: [{name: "kube-api-access-x", readOnly: true, mountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}],
		terminationMessagePath: "/dev/termination-log"}'
}
# create_body POD-JSON [RETRIEVED-CONTAINERS-JSON]: RetrievedPodData
create_body() { jq -n --argjson p "$1" --argjson rc "${2:-[]}" '{pod: $p, container: $rc, jobConfig: {}}'; }
put() { printf '%s' "$2" >"$TEST_TMP/$1"; echo "$TEST_TMP/$1"; }
status_of() { # status_of POD-JSON -> the PodStatus array
	body "$(api GET /status "$(put st.json "[$1]")")"
}
cstate() { # cstate POD-JSON INDEX -> running | waiting | terminated
	status_of "$1" | jq -r ".[0].containers[$2].state | keys[0]"
}
is_state() { [[ $(cstate "$1" "$2") == "$3" ]]; }
nlines() { rk_ps_json | jq '.instances | length'; }
on_fail_diag() { (($1)) || { diag "ps: $(rk_ps_json)"; diag_file "$RK_LOG" 40; }; }

rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" --interlink "unix:$SOCK" \
	--interlink-token-file "$TOKEN" --interlink-body-max 1048576 || bail_out "riklet did not start"
ok "wait_for 10 test -S $SOCK" "riklet listens on the unix socket too"

# --- auth and ping ---------------------------------------------------------------------------
is "$(curl -s -o /dev/null -w '%{http_code}' -X GET --data-binary '[]' "$U/status")" 401 "no bearer token: 401"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' -X GET --data-binary '[]' "$U/status")" 401 \
	"a wrong bearer token: 401"
r=$(api GET /status "$(put ping.json '[]')")
is "$(code "$r")" 200 "the ping ([] on GET /status) answers 200"
is "$(body "$r" | jq -r .resources.cpu)" "$(nproc)" "the ping reports the node's real CPU count"
like "$(body "$r" | jq -r .resources.memory)" '^[1-9][0-9]*Mi$' "... its memory"
is "$(body "$r" | jq -r .resources.pods)" 1000 "... and its pod capacity (--max-instances)"

# --- hello world, object form, over the unix socket -----------------------------------------
HELLO=$(pod 11111111-aaaa-4bbb-8ccc-000000000001 hello "[$(jq -c '.imagePullPolicy = "Always"' <<<"$(ctr main 'echo hello-world; echo to-stderr >&2')")]")
r=$(curl -s --unix-socket "$SOCK" -H "Authorization: Bearer s3cret-token" -X POST \
	--data-binary "$(create_body "$HELLO")" -w '\n%{http_code}' http://riklet/create)
is "$(tail -n1 <<<"$r")" 200 "POST /create over the unix socket: 200"
is "$(head -n1 <<<"$r" | jq -r .PodUID)" 11111111-aaaa-4bbb-8ccc-000000000001 "... PodUID is the pod's UID"
JID=$(head -n1 <<<"$r" | jq -r .PodJID)
is "$JID" k8s-11111111-aaaa-4bbb-8ccc-000000000001 "... PodJID is derived from the UID, not the name"
wait_for 60 is_state "$HELLO" 0 terminated
ok=$?
st=$(status_of "$HELLO")
is "$(jq -r '.[0].containers[0].state.terminated.exitCode' <<<"$st")" 0 "hello: terminated with exit code 0"
on_fail_diag $((ok == 0))
is "$(jq -r '.[0].containers[0].state.terminated.reason' <<<"$st")" Completed "... reason Completed"
is "$(jq -r '.[0] | .name + " " + .namespace + " " + .JID' <<<"$st")" "hello default $JID" "... name, namespace, JID"
is "$(jq -r '.[0].containers[0].image' <<<"$st")" "$IMAGE" "... image"
lg=$(put lg.json '{"Namespace":"default","PodUID":"11111111-aaaa-4bbb-8ccc-000000000001","PodName":"hello","ContainerName":"main","Opts":{"Tail":0,"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,"SinceTime":"0001-01-01T00:00:00Z"}}')
r=$(api GET /getLogs "$lg")
is "$(body "$r")" $'hello-world\nto-stderr' "getLogs: stdout and stderr, in order (the command override ran, not the image's cmd)"

# --- a repeated create starts nothing -------------------------------------------------------
n=$(nlines)
r=$(api POST /create "$(put c.json "[$(create_body "$HELLO")]")")
is "$(code "$r")" 200 "a repeated create (array form) answers 200"
is "$(body "$r" | jq -r .PodJID)" "$JID" "... with the same PodJID"
is "$(nlines)" "$n" "... and creates no instance"

# --- env: literals, ConfigMap / Secret refs, envFrom, fieldRef ------------------------------
ENVC=$(jq -c '. + {env: [{name: "LIT", value: "literal value"},
		{name: "FROM_CM", valueFrom: {configMapKeyRef: {name: "cfg", key: "color"}}},
		{name: "FROM_SECRET", valueFrom: {secretKeyRef: {name: "sec", key: "pw"}}},
		{name: "POD_NAME", valueFrom: {fieldRef: {fieldPath: "metadata.name"}}}],
	envFrom: [{configMapRef: {name: "cfg"}, prefix: "CFG_"}], securityContext: {runAsUser: 1234, runAsGroup: 5678}}' \
	<<<"$(ctr main 'echo "LIT=$LIT CM=$FROM_CM SEC=$FROM_SECRET POD=$POD_NAME SIZE=$CFG_size ID=$(id -u):$(id -g)"')")
ENVP=$(pod 11111111-aaaa-4bbb-8ccc-000000000002 envpod "[$ENVC]")
RC='[{"name":"main","configMaps":[{"metadata":{"name":"cfg","namespace":"default"},"data":{"color":"blue","size":"L"}}],
	"secrets":[{"metadata":{"name":"sec"},"data":{"pw":"aHVudGVyMg=="},"type":"Opaque"}],"projectedvolumemaps":[],"emptyDirs":null}]'
r=$(api POST /create "$(put c.json "[$(create_body "$ENVP" "$RC")]")")
is "$(code "$r")" 200 "create (one-element array form) with env refs: 200"
wait_for 60 is_state "$ENVP" 0 terminated
lg2=$(put lg2.json "$(jq -c '.PodUID = "11111111-aaaa-4bbb-8ccc-000000000002"' "$lg")")
is "$(body "$(api GET /getLogs "$lg2")")" "LIT=literal value CM=blue SEC=hunter2 POD=envpod SIZE=L ID=1234:5678" \
	"env literal, configMapKeyRef, secretKeyRef (base64), fieldRef and envFrom with prefix resolved; runAsUser/runAsGroup"

# --- exit 42, a missing command, one container failing while the other runs on ----------------
P42=$(pod 11111111-aaaa-4bbb-8ccc-000000000003 exit42 "[$(ctr main 'exit 42')]")
api POST /create "$(put c.json "$(create_body "$P42")")" >/dev/null
NOCMD=$(pod 11111111-aaaa-4bbb-8ccc-000000000004 nocmd "[$(jq -c '.command = ["/no/such/binary"] | .args = []' <<<"$(ctr main x)")]")
api POST /create "$(put c.json "$(create_body "$NOCMD")")" >/dev/null
TWO=$(pod 11111111-aaaa-4bbb-8ccc-000000000005 two "[$(ctr bad 'exit 3'),$(ctr good 'sleep 3600')]")
api POST /create "$(put c.json "$(create_body "$TWO")")" >/dev/null
wait_for 60 is_state "$P42" 0 terminated
st=$(status_of "$P42")
is "$(jq -r '.[0].containers[0].state.terminated | "\(.exitCode) \(.reason)"' <<<"$st")" "42 Error" "exit 42: terminated, exitCode 42, reason Error"
wait_for 60 is_state "$NOCMD" 0 terminated
st=$(status_of "$NOCMD")
is "$(jq -r '.[0].containers[0].state.terminated.exitCode' <<<"$st")" 128 "a command that does not exist: terminated, exitCode 128"
like "$(jq -r '.[0].containers[0].state.terminated.message' <<<"$st")" 'no/such/binary' "... the message names the command"
wait_for 60 is_state "$TWO" 0 terminated
wait_for 20 is_state "$TWO" 1 running
st=$(status_of "$TWO")
is "$(jq -r '[.[0].containers[] | (.state | keys[0])] | join(",")' <<<"$st")" "terminated,running" \
	"one container exits 3, the other keeps running (Kubernetes semantics)"
is "$(jq -r '.[0].containers[0].state.terminated.exitCode' <<<"$st")" 3 "... exitCode 3 reported"
like "$(jq -r '.[0].containers[1].containerID' <<<"$st")" '^riklet://' "... containerID given"

# --- volumes: a shared emptyDir (read-only for the reader), ConfigMap, Secret, projected -------
VOLS='[{"name":"shared","emptyDir":{}},{"name":"cfgvol","configMap":{"name":"cfg","items":[{"key":"color","path":"sub/colour.txt"}],"defaultMode":384}},
	{"name":"secvol","secret":{"secretName":"sec"}},{"name":"proj","projected":{"sources":[{"downwardAPI":{}}]}},
	{"name":"kube-api-access-x","projected":{"sources":[{"serviceAccountToken":{"path":"token"}}]}}]'
WRITER=$(jq -c '.volumeMounts += [{name: "shared", mountPath: "/data"}]' <<<"$(ctr writer 'echo from-writer > /data/f; sleep 3600')")
READER=$(jq -c '.volumeMounts += [{name: "shared", mountPath: "/in", readOnly: true}, {name: "cfgvol", mountPath: "/cfg"},
	{name: "secvol", mountPath: "/sec", readOnly: true}, {name: "proj", mountPath: "/proj"}]' <<<"$(ctr reader \
	'while [ ! -s /in/f ]; do sleep 0.2; done; echo "read=$(cat /in/f)"; rm -f /in/f 2>/dev/null || echo cannot-delete;
	 echo "cfg=$(cat /cfg/sub/colour.txt) mode=$(stat -c %a /cfg/sub/colour.txt) sec=$(cat /sec/pw)"; od -c /proj/labels | head -2; sleep 3600')")
VPOD=$(jq -c --argjson v "$VOLS" '.spec.volumes = $v' <<<"$(pod 11111111-aaaa-4bbb-8ccc-000000000008 vols "[$WRITER,$READER]")")
RCV=$(jq -c '. + [{"name":"reader","configMaps":[],"secrets":[],"projectedvolumemaps":[{"metadata":{"name":"proj"},"data":{"labels":"a=1\nb=2\n"}}]}]' <<<"$RC")
r=$(api POST /create "$(put c.json "$(create_body "$VPOD" "$RCV")")")
is "$(code "$r")" 200 "create a pod with volumes: 200"
lgv=$(put lgv.json "$(jq -c '.PodUID = "11111111-aaaa-4bbb-8ccc-000000000008" | .ContainerName = "reader"' "$lg")")
vlog() { body "$(api GET /getLogs "$lgv")"; }
vlog_done() { vlog | grep -q 'a   =   1'; }
wait_for 60 vlog_done
v=$(vlog)
like "$v" 'read=from-writer' "emptyDir shared: the reader reads what the writer wrote"
like "$v" 'cannot-delete' "... and cannot delete it through its readOnly mount"
like "$v" 'cfg=blue mode=600 sec=hunter2' "configMap volume (items key->path, defaultMode) and secret volume (base64 decoded)"
like "$v" 'a   =   1  \\n   b   =   2  \\n' "projected volume content keeps its newlines"
ok "grep -q 'volume \"kube-api-access-x\" at /var/run/secrets/kubernetes.io/serviceaccount is not mounted' $RK_LOG" \
	"a projected volume that was not delivered is named in the log"

# --- init containers: in order, handing a file to the main container; a failing one fails the pod
I1=$(jq -c '.volumeMounts += [{name: "work", mountPath: "/work"}]' <<<"$(ctr i1 'echo one > /work/f')")
I2=$(jq -c '.volumeMounts += [{name: "work", mountPath: "/work"}]' <<<"$(ctr i2 'echo two >> /work/f')")
MAIN=$(jq -c '.volumeMounts += [{name: "work", mountPath: "/work"}]' <<<"$(ctr main 'echo got $(cat /work/f)')")
IPOD=$(jq -c --argjson i "[$I1,$I2]" '.spec.initContainers = $i | .spec.volumes += [{name: "work", emptyDir: {}}]' \
	<<<"$(pod 11111111-aaaa-4bbb-8ccc-00000000000a inits "[$MAIN]")")
api POST /create "$(put c.json "$(create_body "$IPOD")")" >/dev/null
wait_for 60 is_state "$IPOD" 0 terminated
st=$(status_of "$IPOD")
is "$(jq -r '[.[0].initContainers[] | .state.terminated | "\(.exitCode) \(.reason)"] | join(",")' <<<"$st")" "0 Completed,0 Completed" \
	"init containers: both terminated Completed"
lgi=$(put lgi.json "$(jq -c '.PodUID = "11111111-aaaa-4bbb-8ccc-00000000000a"' "$lg")")
is "$(body "$(api GET /getLogs "$lgi")")" "got one two" "they ran in order and handed their file to the main container"
IBAD=$(jq -c --argjson i "[$(ctr i1 'exit 5')]" '.spec.initContainers = $i' <<<"$(pod 11111111-aaaa-4bbb-8ccc-00000000000b initfail "[$(ctr main 'echo never')]")")
api POST /create "$(put c.json "$(create_body "$IBAD")")" >/dev/null
wait_for 60 is_state "$IBAD" 0 terminated
st=$(status_of "$IBAD")
is "$(jq -r '.[0].initContainers[0].state.terminated.exitCode' <<<"$st")" 5 "a failing init container: terminated, exitCode 5"
is "$(jq -r '.[0].containers[0].state.terminated.reason' <<<"$st")" "Init:Error" "... the main container is terminated Init:Error, never left waiting"

# --- a memory limit that ends in OOMKilled ----------------------------------------------------------
OOM=$(pod 11111111-aaaa-4bbb-8ccc-00000000000c oom "[$(jq -c '.resources = {limits: {memory: "16Mi"}}' <<<"$(ctr main \
	'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived ${#x}')")]")
api POST /create "$(put c.json "$(create_body "$OOM")")" >/dev/null
wait_for 60 is_state "$OOM" 0 terminated
st=$(status_of "$OOM")
is "$(jq -r '.[0].containers[0].state.terminated.reason' <<<"$st")" OOMKilled "a 16Mi memory limit exceeded: terminated, reason OOMKilled"
on_fail_diag $(($? == 0))
ok "! test -e oom" "conmon's oom file is not left in riklet's working directory"

# --- restartPolicy OnFailure: restarts counted, the previous run's log ---------------------------
RPOD=$(jq -c '.spec.restartPolicy = "OnFailure"' <<<"$(pod 11111111-aaaa-4bbb-8ccc-000000000009 crash "[$(ctr main 'echo run-at-$(date +%s); exit 1')]")")
api POST /create "$(put c.json "$(create_body "$RPOD")")" >/dev/null
restarts() { status_of "$RPOD" | jq -r '.[0].containers[0].restartCount'; }
restarted_twice() { (($(restarts) >= 2)); }
wait_for 60 restarted_twice
ok restarted_twice "OnFailure: a container exiting 1 is restarted, restartCount counts ($(restarts))"
lgr=$(jq -c '.PodUID = "11111111-aaaa-4bbb-8ccc-000000000009" | .Opts.Previous = true' "$lg")
like "$(body "$(api GET /getLogs "$(put lgr.json "$lgr")")")" '^run-at-[0-9]+$' "Previous: the log of the run before the restart"

# --- logs: Tail, Bytes, Timestamps, Follow ----------------------------------------------------
LOGP=$(pod 11111111-aaaa-4bbb-8ccc-000000000006 logs "[$(ctr main 'for i in 1 2 3 4 5; do echo line$i; done; i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo tick$i; sleep 0.5; done')]")
api POST /create "$(put c.json "$(create_body "$LOGP")")" >/dev/null
wait_for 60 is_state "$LOGP" 0 running
lq() { put lq.json "$(jq -c --argjson o "$1" '.PodUID = "11111111-aaaa-4bbb-8ccc-000000000006" | .Opts += $o' "$lg")"; }
RESP=$TEST_TMP/follow.out api GET /getLogs "$(lq '{"Follow":true}')" --no-buffer >/dev/null &
fpid=$!
wait_for 10 grep -q tick2 "$TEST_TMP/follow.out"
ok "grep -q line1 $TEST_TMP/follow.out && ! grep -q tick20 $TEST_TMP/follow.out" "Follow: lines arrive before the container ends"
is "$(body "$(api GET /getLogs "$(lq '{"Tail":2}')")" | wc -l)" 2 "Tail 2: two lines"
is "$(body "$(api GET /getLogs "$(lq '{"Bytes":8}')")")" $'line1\nli' "Bytes 8: the first 8 bytes"
like "$(body "$(api GET /getLogs "$(lq '{"Timestamps":true,"Tail":1}')")")" '^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:.]+Z tick' \
	"Timestamps: each line starts with its RFC 3339 time"
wait_for 40 bash -c "! kill -0 $fpid 2>/dev/null"
ok "! kill -0 $fpid 2>/dev/null" "Follow ends when the container ends"
is "$(grep -c '^tick' "$TEST_TMP/follow.out")" 20 "Follow got every line"

# --- unknown pods and containers --------------------------------------------------------------
UNK=$(pod 11111111-aaaa-4bbb-8ccc-0000000000ff ghost "[$(ctr main true)]")
st=$(status_of "$UNK")
is "$(jq -r '.[0].containers[0].state.terminated.reason' <<<"$st")" ContainerStatusUnknown "an unknown pod is reported terminated (the VK fails it)"
isnt "$(jq -r '.[0].containers[0].state.terminated.exitCode' <<<"$st")" 0 "... with a non-zero exit code"
is "$(code "$(api GET /getLogs "$(put u.json "$(jq -c '.PodUID = "11111111-aaaa-4bbb-8ccc-0000000000ff"' "$lg")")")")" 404 "getLogs of an unknown pod: 404"
r=$(api GET /getLogs "$(put u.json "$(jq -c '.ContainerName = "nope"' "$lg")")")
is "$(code "$r")" 404 "getLogs of an unknown container: 404"
like "$(body "$r")" 'no container nope' "... saying which"
is "$(code "$(api POST /delete "$(put d.json "$UNK")")")" 200 "delete of an unknown pod: 200"

# --- bad bodies: refused with a reason, nothing created ---------------------------------------
n=$(nlines)
r=$(api POST /create "$(put bad.json 'this is not json')")
is "$(code "$r")" 400 "not JSON: 400"
like "$(body "$r")" 'not valid JSON' "... saying so"
r=$(api POST /create "$(put bad.json "$(create_body "$(jq -c 'del(.metadata.uid)' <<<"$HELLO")")")")
is "$(code "$r")" 400 "no uid: 400"
like "$(body "$r")" 'uid' "... naming the uid"
r=$(api POST /create "$(put bad.json "$(create_body "$(jq -c '.metadata.uid = "u-bad-1" | .spec.containers = "x"' <<<"$HELLO")")")")
is "$(code "$r")" 422 "containers of the wrong type: 422"
like "$(body "$r")" 'containers' "... naming the field"
r=$(api POST /create "$(put bad.json "$(create_body "$(jq -c '.metadata.uid = "u-bad-2" | .spec.containers[0].command = [1,2]' <<<"$HELLO")")")")
is "$(code "$r")" 422 "a command of numbers: 422"
r=$(api POST /create "$(put bad.json "$(create_body "$(jq -c '.metadata.uid = "u-bad-3" | .spec.initContainers = [.spec.containers[0]]' <<<"$HELLO")")")")
is "$(code "$r")" 422 "an init container named like a container: 422"
like "$(body "$r")" 'used twice' "... saying so"
r=$(api POST /create "$(put bad.json "$(create_body "$(jq -c '.metadata.uid = "u-bad-4" | .metadata.name = "a\nb"' <<<"$HELLO")")")")
is "$(code "$r")" 400 "a pod name holding a newline: 400"
head -c 100000000 /dev/zero >"$TEST_TMP/big.json"
is "$(code "$(api POST /create "$TEST_TMP/big.json")")" 413 "a 100 MB body: 413"
rm -f "$TEST_TMP/big.json"
is "$(nlines)" "$n" "no bad body created an instance"

# --- kill -9 and restart: same PodJID, delete still removes it -------------------------------
LONG=$(pod 11111111-aaaa-4bbb-8ccc-000000000007 long "[$(ctr main 'echo up; sleep 3600')]")
api POST /create "$(put c.json "$(create_body "$LONG")")" >/dev/null
wait_for 60 is_state "$LONG" 0 running
rk_stop KILL
rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" --interlink "unix:$SOCK" \
	--interlink-token-file "$TOKEN" || bail_out "riklet did not restart"
wait_for 30 is_state "$LONG" 0 running
st=$(status_of "$LONG")
is "$(jq -r '.[0].JID + " " + (.[0].containers[0].state | keys[0])' <<<"$st")" "k8s-11111111-aaaa-4bbb-8ccc-000000000007 running" \
	"after kill -9 and restart: same PodJID, still running"
is "$(cstate "$P42" 0)" terminated "... an ended pod is still reported"
RESP=$TEST_TMP/del.resp api POST /delete "$(put d.json "$LONG")" >"$TEST_TMP/del.out" &
delp=$!
wait_for 20 rk__has_status k8s-11111111-aaaa-4bbb-8ccc-000000000007 DESTROYING
# a create of the UID while its delete runs used to answer 200 "already created" and start nothing
r=$(api POST /create "$(put c.json "$(create_body "$LONG")")")
is "$(code "$r")" 409 "a create while the pod's delete runs: 409 (not 200 for a pod that is going away)"
like "$(body "$r")" "being deleted" "... saying why"
wait "$delp"
is "$(head -n1 "$TEST_TMP/del.out")" 200 "delete: 200"
ok "rk_nothing_left k8s-11111111-aaaa-4bbb-8ccc-000000000007" "delete leaves no container, mount or directory"
for p in "$TWO" "$HELLO" "$ENVP" "$P42" "$NOCMD" "$LOGP" "$VPOD" "$RPOD" "$IPOD" "$IBAD" "$OOM"; do api POST /delete "$(put d.json "$p")" >/dev/null; done
ok "! rk_runc_ids | grep -q ." "every pod deleted: no runc container left"
rk_stop TERM
ok "! test -e $SOCK" "the unix socket is removed when riklet stops"
done_testing
