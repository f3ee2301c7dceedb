#!/usr/bin/env bash
# mkimage.sh — build a tiny OCI image offline (no docker, no network) from Debian's busybox-static
# with umoci, and push it to a registry with skopeo. About 1 MB compressed, every busybox applet.
#
# As a library (source it):
#   mkimage [OPTIONS] LAYOUT[:TAG]        build (or rebuild) TAG (default latest) in the OCI layout
#                                         directory LAYOUT (created if missing). Options:
#       --cmd JSON          image cmd, a JSON array of strings
#                           (default ["sh","-c","trap 'exit 0' TERM INT; echo hello from busybox;
#                           sleep 3600 & wait $!"]: prints a line, then idles, and exits 0 at once on
#                           SIGTERM; a shell as a container's pid 1 ignores SIGTERM without a trap)
#       --entrypoint JSON   image entrypoint (default: none)
#       --env K=V           an image env entry, repeatable (PATH is always set)
#       --workdir DIR       working directory (default /)
#       --add SRC:DEST      copy host file SRC into the image at DEST, repeatable
#       --force             rebuild even if LAYOUT:TAG was already built with the same inputs
#     A layout tag built with the same inputs (options, busybox, this script) is reused, so tests
#     may all build into one shared layout; builds into one layout are serialised with flock.
#   mkimage_push LAYOUT[:TAG] HOST:PORT/NAME:TAG   copy it to a plain-HTTP registry (skopeo)
#
# As a script:
#   tests/lib/mkimage.sh [OPTIONS] LAYOUT[:TAG]
#   tests/lib/mkimage.sh push LAYOUT[:TAG] HOST:PORT/NAME:TAG
#
# Needs umoci, skopeo (push only), jq and /bin/busybox from busybox-static; as non-root it uses
# umoci's --rootless mode.

RK_MKIMAGE_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
RK_BUSYBOX=${RK_BUSYBOX:-/bin/busybox}

# rk__split_ref REF -> prints "path<TAB>tag"; a last ":tag" with no "/" in it is the tag.
rk__split_ref() {
	local ref=$1 path tag=latest
	path=$ref
	if [[ $ref == *:* && ${ref##*:} != */* ]]; then
		path=${ref%:*}
		tag=${ref##*:}
	fi
	printf '%s\t%s\n' "$path" "$tag"
}

mkimage() (
	set -euo pipefail
	local cmd='["sh","-c","trap '"'exit 0'"' TERM INT; echo hello from busybox; sleep 3600 & wait $!"]' entrypoint= workdir=/ force=
	local -a envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin) adds=()
	while (($#)); do
		case $1 in
		--cmd) cmd=$2; shift 2 ;;
		--entrypoint) entrypoint=$2; shift 2 ;;
		--env) envs+=("$2"); shift 2 ;;
		--workdir) workdir=$2; shift 2 ;;
		--add) adds+=("$2"); shift 2 ;;
		--force) force=1; shift ;;
		--) shift; break ;;
		-*) echo "mkimage: unknown option $1" >&2; return 2 ;;
		*) break ;;
		esac
	done
	(($# == 1)) || { echo "usage: mkimage [OPTIONS] LAYOUT[:TAG]" >&2; return 2; }
	local layout tag
	IFS=$'\t' read -r layout tag < <(rk__split_ref "$1")
	[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || { echo "mkimage: bad tag '$tag'" >&2; return 2; }
	local c
	for c in umoci jq flock sha256sum; do
		command -v "$c" >/dev/null || { echo "mkimage: needs $c" >&2; return 1; }
	done
	[[ -x $RK_BUSYBOX ]] || { echo "mkimage: needs $RK_BUSYBOX (apt-get install busybox-static)" >&2; return 1; }
	# A dynamically linked busybox (package busybox) would not run in the image.
	if [[ $(LC_ALL=C ldd "$RK_BUSYBOX" 2>&1 || true) != *"not a dynamic executable"* ]]; then
		echo "mkimage: $RK_BUSYBOX is not static (apt-get install busybox-static)" >&2; return 1
	fi
	jq -e 'type == "array" and all(type == "string")' <<<"$cmd" >/dev/null ||
		{ echo "mkimage: --cmd must be a JSON array of strings: $cmd" >&2; return 2; }
	[[ -z $entrypoint ]] || jq -e 'type == "array" and all(type == "string")' <<<"$entrypoint" >/dev/null ||
		{ echo "mkimage: --entrypoint must be a JSON array of strings: $entrypoint" >&2; return 2; }

	# umoci init wants to create the layout directory itself: lock beside it, not inside.
	mkdir -p -- "$(dirname -- "$layout")"
	layout=$(cd "$(dirname -- "$layout")" && pwd)/$(basename -- "$layout")
	exec 9>"$(dirname -- "$layout")/.$(basename -- "$layout").mkimage.lock"
	flock 9

	# Everything the image depends on, hashed: same inputs, same image, no rebuild.
	local a stamp
	stamp=$({
		sha256sum "$RK_MKIMAGE_SH" "$RK_BUSYBOX" | cut -d' ' -f1
		printf 'cmd=%s\nentrypoint=%s\nworkdir=%s\n' "$cmd" "$entrypoint" "$workdir"
		printf 'env=%s\n' "${envs[@]}"
		for a in ${adds[@]+"${adds[@]}"}; do printf 'add=%s ' "$a"; sha256sum "${a%%:*}" | cut -d' ' -f1; done
	} | sha256sum | cut -d' ' -f1)
	if [[ -z $force && -f $layout/index.json && $(cat "$layout/.mkimage-$tag" 2>/dev/null) == "$stamp" ]] &&
		umoci stat --image "$layout:$tag" >/dev/null 2>&1; then
		return 0
	fi

	local rootless=
	[[ $(id -u) == 0 ]] || rootless=--rootless
	[[ -f $layout/index.json ]] || umoci init --layout "$layout"
	umoci rm --image "$layout:$tag" >/dev/null 2>&1 || true
	rm -f -- "$layout/.mkimage-$tag"
	umoci new --image "$layout:$tag"

	local work
	work=$(mktemp -d "${TMPDIR:-/tmp}/mkimage.XXXXXX")
	trap 'rm -rf -- "$work"' EXIT
	umoci unpack $rootless --image "$layout:$tag" "$work/bundle" >/dev/null
	local r=$work/bundle/rootfs
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,run,var/www}
	install -d -m 1777 "$r/tmp"
	install -m 0755 "$RK_BUSYBOX" "$r/bin/busybox"
	# Every applet, as a relative symlink to /bin/busybox at its usual place. In one perl process
	# (Essential in Debian): an `ln -s` each, 270 forks, took 20 s of a CI run's loaded 2 cores.
	"$RK_BUSYBOX" --list-full | perl -e 'my $r = shift;
		while (my $app = <STDIN>) {
			chomp $app;
			next if $app eq "" || $app eq "bin/busybox" || -e "$r/$app" || -l "$r/$app";
			my $rel = $app =~ m{^s?bin/} ? "../bin/busybox" : $app =~ m{^usr/s?bin/} ? "../../bin/busybox" : next;
			symlink($rel, "$r/$app") or die "mkimage: symlink $r/$app: $!\n";
		}' "$r"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$r/etc/hosts"
	printf 'riklet test image: busybox-static %s\n' \
		"$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)" >"$r/etc/riklet-image"
	local src dst
	for a in ${adds[@]+"${adds[@]}"}; do
		src=${a%%:*} dst=${a#*:}
		mkdir -p "$r/$(dirname "$dst")"
		cp -- "$src" "$r/$dst"
	done
	umoci repack --image "$layout:$tag" "$work/bundle" >/dev/null

	local -a cfg=(--config.workingdir "$workdir" --no-history)
	for a in "${envs[@]}"; do cfg+=(--config.env "$a"); done
	while IFS= read -r -d '' a; do cfg+=(--config.cmd "$a"); done < <(jq -j '.[] | ., "\u0000"' <<<"$cmd")
	if [[ -n $entrypoint ]]; then
		while IFS= read -r -d '' a; do cfg+=(--config.entrypoint "$a"); done < <(jq -j '.[] | ., "\u0000"' <<<"$entrypoint")
	fi
	umoci config --image "$layout:$tag" "${cfg[@]}"
	umoci gc --layout "$layout"
	printf '%s\n' "$stamp" >"$layout/.mkimage-$tag"
)

# mkimage_push LAYOUT[:TAG] HOST:PORT/NAME:TAG — plain HTTP, no signature policy needed.
mkimage_push() {
	(($# == 2)) || { echo "usage: mkimage_push LAYOUT[:TAG] HOST:PORT/NAME:TAG" >&2; return 2; }
	command -v skopeo >/dev/null || { echo "mkimage_push: needs skopeo" >&2; return 1; }
	local layout tag
	IFS=$'\t' read -r layout tag < <(rk__split_ref "$1")
	skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://$2"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	push) shift; mkimage_push "$@" ;;
	build) shift; mkimage "$@" ;;
	"" | -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) mkimage "$@" ;;
	esac
fi
