# deps.sh — the Debian 12 packages riklet's build, tests and "try it" command need, and how to
# install them. Sourced by tests/run.sh and scripts/try.sh; safe to source more than once.

# Build: compiler, cmake, and the -dev packages CMakeLists.txt finds with pkg-config.
RK_DEPS_BUILD=(
	cmake make gcc libc6-dev pkg-config
	libluajit-5.1-dev luajit
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
	libcurl4-openssl-dev libcjson-dev
	libnl-3-dev libnl-route-3-dev libiptc-dev
)
# Run time and tests: the tools riklet drives and the real peers the tests start.
RK_DEPS_RUN=(
	iptables iproute2 runc conmon skopeo umoci
	docker-registry busybox-static
	python3 python3-grpcio python3-protobuf protobuf-compiler python3-grpc-tools
	jq curl ca-certificates
	lua-check clang-format
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

# deps_install [PKG...]: install what is missing (default: all of riklet's). Runs `apt-get update`
# only when something is missing, so a prepared machine needs no network. Needs root.
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
	apt-get update -q || return 1
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || return 1
}
