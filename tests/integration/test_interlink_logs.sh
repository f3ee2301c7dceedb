# test_interlink_logs.sh — a non-followed GET /getLogs is streamed from the log file in chunks,
# not built in memory: 64 clients at once reading a 2 MB log (half of them slow, a fifth with
# Tail) each get every byte, in order, and riklet's peak RSS grows by less than 30 MiB (building
# each answer whole took it from 7 to 58 MiB).
source "$(dirname "$0")/../lib/registry.sh"
source "$(dirname "$0")/../lib/mkimage.sh"
source "$(dirname "$0")/../lib/riklet.sh"
need_root
need_cmd docker-registry umoci skopeo jq curl busybox runc sha256sum
rk_init

rk_registry_image '["sh","-c","true"]'
PORT=$(free_port) || bail_out "no free port"
U=http://127.0.0.1:$PORT
UID_=11111111-aaaa-4bbb-8ccc-00000000010a
rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" || bail_out "riklet did not start"

# 40,000 lines of 50 bytes: a 2 MB answer, a 3.8 MB CRI log file
GEN='seq 1 40000 | sed "s/$/ the quick brown fox jumps over the lazy dog/"'
POD=$(jq -n --arg uid "$UID_" --arg img "$IMAGE" --arg c "$GEN" '{
	metadata: {name: "biglog", namespace: "default", uid: $uid},
	spec: {restartPolicy: "Never", containers: [{name: "main", image: $img, command: ["sh", "-c"], args: [$c]}]}}')
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$(jq -c '{pod: ., container: []}' <<<"$POD")" "$U/create")" 200 \
	"POST /create of a pod writing 40,000 lines"
state() {
	curl -s -X GET --data-binary "[$POD]" "$U/status" | jq -r '.[0].containers[0].state.terminated.reason // empty'
}
completed() { [[ $(state) == Completed ]]; }
ok "wait_for 120 completed" "it completed"
/usr/bin/busybox sh -c "$GEN" >"$TEST_TMP/want"
tail -n 1000 "$TEST_TMP/want" >"$TEST_TMP/want.tail"
lq() { jq -nc --arg uid "$UID_" --argjson o "$1" '{Namespace: "default", PodUID: $uid, PodName: "biglog",
	ContainerName: "main", Opts: $o}'; }
lq '{}' >"$TEST_TMP/q.all"
lq '{"Tail":1000}' >"$TEST_TMP/q.tail"
curl -s -X GET --data-binary "@$TEST_TMP/q.all" -o "$TEST_TMP/one" "$U/getLogs"
is "$(sha256sum <"$TEST_TMP/one")" "$(sha256sum <"$TEST_TMP/want")" "one client: the whole log, byte for byte ($(wc -c <"$TEST_TMP/want") bytes)"

rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$RK_PID/status"; }
rss0=$(rss VmRSS)
echo 5 >"/proc/$RK_PID/clear_refs" # VmHWM (peak RSS) starts again from now
t0=$SECONDS
pids=()
for i in $(seq 1 64); do
	q=all rate=()
	((i % 5 == 0)) && q=tail
	((i % 2 == 0)) && rate=(--limit-rate 1M)
	curl -s -m 120 "${rate[@]}" -X GET --data-binary "@$TEST_TMP/q.$q" -o "$TEST_TMP/out.$i.$q" "$U/getLogs" &
	pids+=($!)
done
wait "${pids[@]}"
peak=$(rss VmHWM)
good=0
for f in "$TEST_TMP"/out.*; do
	w=$TEST_TMP/want
	[[ $f == *.tail ]] && w=$TEST_TMP/want.tail
	cmp -s "$f" "$w" && good=$((good + 1)) || diag "$f: $(wc -c <"$f") bytes, $(cmp "$f" "$w" 2>&1 | head -n1)"
done
is "$good" 64 "64 clients at once (32 at 1 MB/s, 12 with Tail 1000): every one got its answer byte for byte ($((SECONDS - t0)) s)"
if [[ -n ${RIKLET_SANITIZE-} ]]; then # ASan keeps freed memory in its quarantine (256 MiB) on purpose
	skip "riklet's RSS is not measured in the sanitizer build (ASan's quarantine holds freed memory): grew $(((peak - rss0) / 1024)) MiB"
else
	ok "((peak - rss0 < 30 * 1024))" "riklet's peak RSS grew by $(((peak - rss0) / 1024)) MiB (from $((rss0 / 1024)) MiB), less than 30"
fi
ok "kill -0 $RK_PID" "riklet is up"
is "$(curl -s -o /dev/null -w '%{http_code}' -X GET --data-binary '[]' "$U/status")" 200 "and answers"

done_testing
