#!/usr/bin/env bash
# bench_interlink.sh — riklet as an interLink plugin (a benchmark, not a test: it prints numbers
# and fails only when it cannot measure).
#
#   sudo tests/bench/bench_interlink.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: RUNS (default 10) start measurements each way; PODS (default 100) pods for the
# /status and RSS measures; SECS (default 10) seconds of /status polling.
#
#  1. create -> first `running`: POST /create, then GET /status every 10 ms until the container is
#     running (what the virtual kubelet would see, at best), and riklet's own "-> RUNNING" log time
#     for the same pod; beside it the same pod as a standalone manifest renamed into the directory
#     (riklet's log time again). Cached image (a warm-up pod pulled it); one pod at a time.
#  2. /status with PODS pods running: one pod per request as the VK polls, keep-alive, from one
#     connection and from 4 at once: requests/s, p50 and p99 latency.
#  3. riklet's VmRSS idle, and with PODS pods running.
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
: "${RIKLET_BUILD_DIR:=$SRC_DIR/build}"
export RIKLET_BUILD_DIR RIKLET_SRC_DIR=$SRC_DIR
source "$SRC_DIR/tests/lib/registry.sh" "${1:-${RIKLET:-$RIKLET_BUILD_DIR/riklet}}"
source "$SRC_DIR/tests/lib/mkimage.sh"
source "$SRC_DIR/tests/lib/riklet.sh"
RUNS=${RUNS:-10}
PODS=${PODS:-100}
SECS=${SECS:-10}
PY=/usr/bin/python3
[[ -x $PY ]] || { echo "bench_interlink: needs /usr/bin/python3" >&2; exit 1; }
rk_init
rk_registry_image '["sh","-c","trap '"'exit 0'"' TERM; sleep 3600 & wait $!"]'
PORT=$(free_port) || exit 1
rk_start_standalone --insecure-registries "$REGISTRY" --interlink "127.0.0.1:$PORT" --log-level info \
	--max-instances 1000 || exit 1
rss() { awk '/^VmRSS/ { print $2 / 1024 " MiB" }' "/proc/$RK_PID/status"; }
echo "riklet idle: VmRSS $(rss)"

"$PY" - "$PORT" "$IMAGE" "$MANIFESTS" "$RK_LOG" "$RUNS" "$PODS" "$SECS" "$RK_PID" <<'EOF'
import http.client, json, os, sys, time, threading, statistics, re, datetime
port, image, mdir, logf, runs, pods, secs, pid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]

def conn():
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
C = conn()
def call(method, path, body, c=None):
    c = c or C
    data = json.dumps(body).encode()
    c.request(method, path, body=data, headers={"Content-Type": "application/json", "InterLink-Http-Session": "bench"})
    r = c.getresponse()
    return r.status, r.read()

def pod(uid, name):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bench", "uid": uid},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": image, "command": ["sleep"], "args": ["3600"]}]}}

def state(p):
    s, b = call("GET", "/status", [p])
    return list(json.loads(b)[0]["containers"][0]["state"].keys())[0]

def log_running(iid, after):
    pat = re.compile(r"^(\S+) .*instance %s .*-> RUNNING" % re.escape(iid))
    for _ in range(500):
        with open(logf) as f:
            for line in f:
                m = pat.match(line)
                if m:
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
                    if t >= after - 0.01:
                        return t
        time.sleep(0.02)
    return None

def wait_gone(iid):
    pat = "instance %s (Pod" % iid
    for _ in range(1000):
        with open(logf) as f:
            if any(pat in l and "-> TERMINATED" in l for l in f):
                return
        time.sleep(0.05)

# warm-up: the image is pulled and unpacked once
w = pod("bench-warm", "warm")
call("POST", "/create", {"pod": w, "container": []})
while state(w) != "running":
    time.sleep(0.05)
call("POST", "/delete", w)

il_poll, il_log, sa_log = [], [], []
for i in range(runs):
    p = pod("bench-il-%d" % i, "il%d" % i)
    t0 = time.time()
    call("POST", "/create", {"pod": p, "container": []})
    while state(p) != "running":
        time.sleep(0.01)
    il_poll.append(time.time() - t0)
    t = log_running("k8s-bench-il-%d" % i, t0)
    if t:
        il_log.append(t - t0)
    call("POST", "/delete", p)
    # the same pod as a standalone manifest
    name = "sa%d" % i
    man = {"apiVersion": "v1", "kind": "Pod", "name": name,
           "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep"], "args": ["3600"]}]}}
    tmp = os.path.join(mdir, "..", name + ".json")
    with open(tmp, "w") as f:
        json.dump(man, f)
    t0 = time.time()
    os.rename(tmp, os.path.join(mdir, name + ".json"))
    t = log_running(name, t0)
    if t:
        sa_log.append(t - t0)
    os.unlink(os.path.join(mdir, name + ".json"))
    wait_gone(name)

def ms(v):
    return "%.0f ms" % (v * 1000)
print("create -> running, median of %d (p90):" % runs)
for label, v in (("interLink, seen by polling /status every 10 ms", il_poll), ("interLink, riklet's log", il_log),
                 ("standalone manifest, riklet's log", sa_log)):
    if v:
        v = sorted(v)
        print("  %-48s %s (p90 %s)" % (label, ms(statistics.median(v)), ms(v[int(0.9 * (len(v) - 1))])))

# PODS pods running
t0 = time.time()
ps = [pod("bench-n-%d" % i, "n%d" % i) for i in range(pods)]
for p in ps:
    call("POST", "/create", {"pod": p, "container": []})
for p in ps:
    while state(p) != "running":
        time.sleep(0.1)
print("%d pods created through /create and running in %.1f s" % (pods, time.time() - t0))
with open("/proc/%s/status" % pid) as f:
    rss = [l.split()[1] for l in f if l.startswith("VmRSS")][0]
print("riklet VmRSS with %d pods running: %.1f MiB" % (pods, int(rss) / 1024))

def poll(n_threads):
    lat, stop = [], time.time() + secs
    lock = threading.Lock()
    def worker(k):
        c, mine, i = conn(), [], k
        while time.time() < stop:
            p = ps[i % len(ps)]
            i += 1
            a = time.perf_counter()
            s, b = call("GET", "/status", [p], c)
            mine.append(time.perf_counter() - a)
            assert s == 200
        with lock:
            lat.extend(mine)
    th = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    a = time.time()
    for t in th: t.start()
    for t in th: t.join()
    el = time.time() - a
    lat.sort()
    print("/status, one pod per request, %d connection(s): %.0f req/s, p50 %.2f ms, p99 %.2f ms (%d requests)" % (
        n_threads, len(lat) / el, lat[len(lat) // 2] * 1000, lat[int(0.99 * (len(lat) - 1))] * 1000, len(lat)))
poll(1)
poll(4)
s, b = call("GET", "/status", [])
print("ping: %s" % b.decode())
def deleter(chunk):
    c = conn()
    for p in chunk:
        call("POST", "/delete", p, c)
th = [threading.Thread(target=deleter, args=(ps[k::8],)) for k in range(8)]
for t in th: t.start()
for t in th: t.join()
EOF
echo "riklet after deleting them: VmRSS $(rss)"
rk_stop TERM
