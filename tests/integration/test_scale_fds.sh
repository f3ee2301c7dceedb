#!/usr/bin/env bash
# test_scale_fds.sh — riklet runs with its soft open-files limit raised to the hard one: after a
# kill -9, every re-adopted conmon is watched through a pidfd (they are no longer riklet's
# children), so at 1,000 Pods the usual soft limit of 1024 runs out. Here the same with a soft
# limit of 12 and 10 Pods (with the soft limit kept, 2 or more re-adopted conmons cannot be watched): all re-adopted and watched, none lost.
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl runc conmon
rk_init
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM; sleep 3600 & wait $!"]'
RK_OPTS+=(--insecure-registries "$REGISTRY")
N=10
pod() { printf 'p%d' "$1"; }
for ((i = 1; i <= N; i++)); do
	printf '{"apiVersion":"v1","kind":"Pod","name":"%s","spec":{"containers":[{"name":"c","image":"%s"}]}}\n' \
		"$(pod "$i")" "$IMAGE" >"$MANIFESTS/$(pod "$i").json"
done
rk_start_standalone || bail_out "riklet did not start"
all_running() {
	local i
	for ((i = 1; i <= N; i++)); do [[ $(rk_status "$(pod "$i")") == RUNNING ]] || return 1; done
}
ok "wait_for 120 all_running" "$N Pods RUNNING" || { diag_file "$RK_LOG"; bail_out "Pods did not start"; }
before=$(runc --root "$RUNC_ROOT" list --format json | jq -r '.[] | "\(.id) \(.pid)"' | sort)
rk_stop KILL

# soft limit 12, hard 4096: riklet raises the soft one itself
L0=$(wc -l <"$RK_LOG")
/bin/bash -c 'ulimit -Sn 12 && ulimit -Hn 4096 && exec "$@"' _ "$RIKLET" --standalone "$MANIFESTS" "${RK_OPTS[@]}" \
	>>"$RK_LOG" 2>&1 </dev/null &
RK_PID=$!
RK_PIDS+=("$RK_PID")
readopted() { (($(tail -n +"$((L0 + 1))" "$RK_LOG" | grep -c ' re-adopted: ') >= N)); }
ok "wait_for 60 readopted" "restarted with a soft limit of 12 open files: all $N Pods re-adopted" || diag_file "$RK_LOG"
like "$(awk '/^Max open files/ { print $4, $5 }' "/proc/$RK_PID/limits")" '^4096 4096$' \
	"riklet runs with its soft open-files limit raised to the hard one"
sleep 1
after_log=$(tail -n +"$((L0 + 1))" "$RK_LOG")
unlike "$after_log" 'cannot watch process|Too many open files|cannot ask runc' "every re-adopted conmon is watched (no fd shortage)"
is "$(runc --root "$RUNC_ROOT" list --format json | jq -r '.[] | "\(.id) \(.pid)"' | sort)" "$before" \
	"the same containers, same pids: none restarted"
ok "all_running" "all RUNNING in riklet ps"
done_testing
