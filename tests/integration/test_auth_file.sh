# test_auth_file.sh — --auth-file: Pods pull from a registry that asks for a password (Debian's
# docker-registry with htpasswd auth), with the credentials of a containers-auth.json file. A
# wrong password makes the Pod FAILED with a reason that says the credentials were refused (and
# names the file); no auth file: FAILED, authentication required; the password is in no log and
# no reason; `riklet check` fails on an auth file that is missing or not containers-auth.json.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_cmd docker-registry umoci skopeo jq htpasswd base64
rk_init
SECRET=s3cret-$RANDOM$RANDOM
htpasswd -Bbn alice "$SECRET" >"$TEST_TMP/htpasswd" 2>/dev/null || bail_out "htpasswd failed"
REGISTRY_HTPASSWD=$TEST_TMP/htpasswd registry_start || bail_out "docker-registry with htpasswd did not start"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY/v2/")" 401 "the registry asks for credentials"
mkimage --cmd '["sh","-c","sleep 3600"]' "$TEST_TMP/layout:latest" >&2 || bail_out "mkimage failed"
for tag in v1 v2 v3; do
	skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds "alice:$SECRET" \
		"oci:$TEST_TMP/layout:latest" "docker://$REGISTRY/private:$tag" || bail_out "push of $tag failed"
done
authjson() { jq -n --arg r "$REGISTRY" --arg a "$(printf '%s' "$1" | base64 -w0)" '{auths: {($r): {auth: $a}}}'; }
authjson "alice:$SECRET" >"$TEST_TMP/auth.json"
authjson "alice:wrong-password" >"$TEST_TMP/bad.json"
chmod 600 "$TEST_TMP"/*.json

pod() { jq -n --arg n "$1" --arg img "$2" '{apiVersion: "v1", kind: "Pod", name: $n,
	spec: {containers: [{name: "c", image: $img}]}}' >"$MANIFESTS/$1.json"; }

rk_start_standalone --insecure-registries "$REGISTRY" --auth-file "$TEST_TMP/auth.json" || bail_out "riklet did not start"
pod good "$REGISTRY/private:v1"
rk_wait_status 120 good RUNNING FAILED
is "$(rk_status good)" RUNNING "with the right password in --auth-file: the Pod pulls and runs" || diag "$(rk_reason good)"
rk_stop TERM

rk_start_standalone --insecure-registries "$REGISTRY" --auth-file "$TEST_TMP/bad.json" || bail_out "riklet did not start"
pod denied "$REGISTRY/private:v2"
rk_wait_status 120 denied FAILED RUNNING
is "$(rk_status denied)" FAILED "a wrong password: FAILED"
like "$(rk_reason denied)" "refused access to .*private:v2 with the credentials of --auth-file $TEST_TMP/bad.json \\(wrong user name or password" \
	"the reason says the credentials were refused and names the file: $(rk_reason denied)"
is "$(rk_status good)" RUNNING "the Pod pulled before keeps running"
rk_stop TERM

rk_start_standalone --insecure-registries "$REGISTRY" || bail_out "riklet did not start"
pod anon "$REGISTRY/private:v3"
rk_wait_status 120 anon FAILED RUNNING
is "$(rk_status anon)" FAILED "no --auth-file: FAILED"
like "$(rk_reason anon)" "authentication required" "saying authentication is required: $(rk_reason anon)"
rk_stop TERM

nok "grep -qF '$SECRET' '$RK_LOG'" "the password is in no log line"
nok "rk_ps_json | grep -qF '$SECRET'" "nor in any instance's reason"
nok "grep -qF '$(printf 'alice:%s' "$SECRET" | base64 -w0)' '$RK_LOG'" "nor its base64 form"

out=$("$RIKLET" check --state-dir "$STATE" --auth-file "$TEST_TMP/no-such.json" 2>&1)
isnt "$?" 0 "riklet check with a missing --auth-file: non-zero"
like "$out" "auth file +FAIL +required +$TEST_TMP/no-such.json" "the auth file line says FAIL"
echo '{"user": "alice"}' >"$TEST_TMP/notauth.json"
like "$("$RIKLET" check --state-dir "$STATE" --auth-file "$TEST_TMP/notauth.json" 2>&1)" \
	"auth file +FAIL .*not a containers-auth.json document" "a JSON file without auths: FAIL, says why"
like "$("$RIKLET" check --state-dir "$STATE" --auth-file "$TEST_TMP/auth.json" 2>&1)" \
	"auth file +ok +required .*credentials for 1 registry" "the good file: ok, 1 registry"

done_testing
