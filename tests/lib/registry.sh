# registry.sh — a real OCI registry (Debian's docker-registry, distribution 2.8) on loopback for
# the tests: plain HTTP, no auth, filesystem storage in a temporary directory.
#
#   registry_start    start it on 127.0.0.1:<free port>; wait until GET /v2/ answers 200;
#                     export REGISTRY=127.0.0.1:PORT (plus REGISTRY_PID, REGISTRY_DIR, REGISTRY_LOG).
#                     Registers registry_stop on the cleanup stack. Returns 1 (with a message and
#                     the registry's log on stderr) if it does not come up; skip_all if
#                     docker-registry is not installed.
#                     With REGISTRY_HTPASSWD=FILE (htpasswd -Bbn USER PASS), it asks for basic auth.
#   registry_stop     stop it (SIGTERM, then SIGKILL after 5 s) and remove its storage; idempotent.
#
# Debian's binary is /usr/bin/docker-registry and takes `serve CONFIG` (a bare CONFIG argument is
# refused as an unknown command). Its packaged /etc/docker/registry/config.yml listens on :5000
# with htpasswd auth, so the tests always generate their own config.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

registry_start() {
	need_cmd docker-registry curl
	local try port dir
	[[ -n ${REGISTRY_PID:-} ]] && { echo "registry_start: already running as $REGISTRY" >&2; return 1; }
	dir=$(mktemp -d "$TEST_TMP/registry.XXXXXX") || return 1
	for try in 1 2 3; do
		port=$(free_port) || return 1
		cat >"$dir/config.yml" <<-EOF
			version: 0.1
			log:
			  level: warn
			  accesslog:
			    disabled: true
			storage:
			  filesystem:
			    rootdirectory: $dir/data
			  delete:
			    enabled: true
			http:
			  addr: 127.0.0.1:$port
			  secret: riklet-test-only
		EOF
		if [[ -n ${REGISTRY_HTPASSWD:-} ]]; then
			printf 'auth:\n  htpasswd:\n    realm: riklet-test\n    path: %s\n' "$REGISTRY_HTPASSWD" >>"$dir/config.yml"
		fi
		REGISTRY_LOG=$dir/registry.log
		docker-registry serve "$dir/config.yml" >"$REGISTRY_LOG" 2>&1 </dev/null &
		REGISTRY_PID=$!
		REGISTRY_DIR=$dir
		REGISTRY=127.0.0.1:$port
		export REGISTRY REGISTRY_PID REGISTRY_DIR REGISTRY_LOG
		((try > 1)) || on_exit registry_stop
		# up, or dead (port taken: try another), or 15 s without an answer
		if wait_for 15 rk__registry_up_or_dead && rk__registry_up; then
			return 0
		fi
		# Lost a race for the port, or a real failure: show why, then try another port.
		echo "registry_start: docker-registry did not answer on $REGISTRY (try $try):" >&2
		sed 's/^/  /' "$REGISTRY_LOG" >&2
		registry_stop keep-dir
	done
	return 1
}

rk__registry_up_or_dead() { ! kill -0 "$REGISTRY_PID" 2>/dev/null || rk__registry_up; }
rk__registry_up() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$REGISTRY/v2/")
	[[ $code == 200 || ($code == 401 && -n ${REGISTRY_HTPASSWD:-}) ]]
}

registry_stop() {
	[[ -n ${REGISTRY_PID:-} ]] || return 0
	local pid=$REGISTRY_PID i
	if kill -TERM "$pid" 2>/dev/null; then
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	[[ ${1:-} == keep-dir ]] || rm -rf -- "${REGISTRY_DIR:?}"
	unset REGISTRY REGISTRY_PID
	return 0
}
