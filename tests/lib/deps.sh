# deps.sh — the Debian 12 packages riklet's build, tests and "try it" command need, and how to
# install them. Sourced by tests/run.sh and scripts/try.sh; safe to source more than once.

# Build: compiler, cmake, and the -dev packages CMakeLists.txt finds with pkg-config.
RK_DEPS_BUILD=(
	cmake make gcc libc6-dev pkg-config
	libluajit-5.1-dev luajit
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
	libcurl4-openssl-dev libcjson-dev
	libnghttp2-dev
	libnl-3-dev libnl-route-3-dev libiptc-dev libsystemd-dev
	libmicrohttpd-dev
)
# Run time and tests: the tools riklet drives and the real peers the tests start.
RK_DEPS_RUN=(
	iptables iproute2 runc conmon skopeo umoci
	docker-registry busybox-static
	python3 python3-grpcio python3-protobuf protobuf-compiler python3-grpc-tools
	jq curl ca-certificates
	python3-jsonschema python3-yaml e2fsprogs
	lua-check clang-format
	nftables # start-up check for host rules in nftables (netctl.check_nftables)
	apache2-utils prometheus dpkg-dev systemd # htpasswd, promtool, dpkg-shlibdeps (cpack), systemd-analyze
	qemu-system-x86 qemu-utils linux-image-cloud-amd64 e2fsprogs cpio kmod
)

# deps_missing [PKG...]: print the packages (default: all of riklet's) that are not installed.
deps_missing() {
	local p st
	(($#)) || set -- "${RK_DEPS_BUILD[@]}" "${RK_DEPS_RUN[@]}"
	for p in "$@"; do
		st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) || st=
		[[ $st == installed ]] || printf '%s\n' "$p"
	done
}

# Another apt run (an admin, unattended-upgrades, cloud-init) holding the dpkg or apt locks is
# waited for, up to DEPS_LOCK_TIMEOUT seconds (default 600), instead of failing the whole run:
# `-o DPkg::Lock::Timeout` makes apt-get install wait for the dpkg frontend lock, and apt-get update
# (whose package-lists lock that option does not cover in apt 2.6) is retried while a lock is held.
# DEPS_APT_OPTS (an array) adds apt-get options (the self-test points the package lists elsewhere).
DEPS_LOCK_TIMEOUT=${DEPS_LOCK_TIMEOUT:-600}
DEPS_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)

# deps_lock_holders: "LOCKFILE pid N (COMMAND)" for each apt/dpkg lock a process holds now (from
# /proc/locks: apt and dpkg take POSIX fcntl locks, which flock(1) neither takes nor sees).
deps_lock_holders() {
	local f ino pid comm
	for f in "${DEPS_LOCKS[@]}"; do
		[[ -e $f ]] || continue
		ino=$(stat -c %i "$f") || continue
		while read -r pid; do
			comm=$(cat "/proc/$pid/comm" 2>/dev/null) || comm=?
			printf '%s pid %s (%s)\n' "$f" "$pid" "$comm"
		done < <(awk -v ino="$ino" '{ split($6, d, ":"); if (d[3] == ino) print $5 }' /proc/locks | sort -u)
	done
}

# deps__apt ARGS...: apt-get ARGS, waiting for the locks as described above.
deps__apt() {
	local start=$SECONDS errf rc held said=
	errf=$(mktemp) || return 1
	while :; do
		held=$(deps_lock_holders)
		if [[ -n $held && -z $said ]]; then
			echo "deps: waiting up to ${DEPS_LOCK_TIMEOUT} s for another apt/dpkg run to release its lock: ${held//$'\n'/; }"
			said=1
		fi
		apt-get -o "DPkg::Lock::Timeout=$DEPS_LOCK_TIMEOUT" ${DEPS_APT_OPTS[@]+"${DEPS_APT_OPTS[@]}"} "$@" </dev/null 2>"$errf"
		rc=$?
		if ((rc != 0)) && grep -q 'Could not get lock' "$errf" && ((SECONDS - start < DEPS_LOCK_TIMEOUT)); then
			[[ -n $said ]] || echo "deps: waiting up to ${DEPS_LOCK_TIMEOUT} s for another apt/dpkg run to release its lock ($(grep -m1 'Could not get lock' "$errf"))"
			said=1
			sleep 2
			continue
		fi
		cat "$errf" >&2
		rm -f "$errf"
		return "$rc"
	done
}

# deps_install [PKG...]: install what is missing (default: all of riklet's). Runs `apt-get update`
# only when something is missing, so a prepared machine needs no network (and no lock). Needs root.
deps_install() {
	local missing
	mapfile -t missing < <(deps_missing "$@")
	((${#missing[@]})) || { echo "deps: all packages present"; return 0; }
	if [[ $(id -u) != 0 ]]; then
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
		return 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	local fast=()
	# On a CI machine (CI set, as CI services do; .ci/run sets it), thrown away after the run: dpkg
	# without an fsync per file (what Debian's container images do) and no man-db index rebuild,
	# minutes of apt time on a fresh VM's disk. Never on another machine: a crash mid-install there
	# could leave truncated files.
	if [[ -n ${CI:-} ]]; then
		fast=(-o Dpkg::Options::=--force-unsafe-io)
		echo 'man-db man-db/auto-update boolean false' | debconf-set-selections 2>/dev/null || true
		rm -f /var/lib/man-db/auto-update
	fi
	deps__apt update -q || return 1
	deps__apt install -y -q --no-install-recommends ${fast[@]+"${fast[@]}"} "${missing[@]}" || return 1
}
