# private_ns.sh — re-run the sourcing test inside a private network + mount namespace, so what it
# does to links, rules and mounts never touches the host's. Source it first, before common.sh, so
# the temp dir and its cleanup belong to the inner shell. Inside, RK_PRIVATE_NS=1; when the
# namespaces cannot be made (not root, no unshare) it stays unset and the test should skip_all.
if [[ -z ${RK_PRIVATE_NS:-} && $(id -u) == 0 ]] && command -v unshare >/dev/null &&
	unshare -n -m --propagation private true 2>/dev/null; then
	exec env RK_PRIVATE_NS=1 unshare -n -m --propagation private bash "$0" "$@"
fi
