-- riklet.probe's httpGet and tcpSocket handlers against real servers (busybox httpd, a raw nc that
-- records what it receives), run as riklet runs them: nsenter into a network namespace, then curl.
-- 2xx and 3xx succeed, 404 / refused / silence fail with the reason; the path and the headers reach
-- the server exactly as given (no URL globbing, one request); a closed port fails a tcp probe.
local T = require "riklet.testlib"
local proc = require "riklet.proc"
local fs = require "riklet.fs"
local core = require "riklet.core"
local task = require "riklet.task"
local probe = require "riklet.probe"

if core.getuid() ~= 0 then T.skip_all("needs root (nsenter into a network namespace)") end
T.need_cmds({ busybox = "busybox-static", curl = "curl", nsenter = "util-linux" })

local tmp = ("/tmp/riklet-probe-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp .. "/www/sub", "0755"))
assert(fs.write_atomic(tmp .. "/www/healthz", "fine\n", "0644"))

local function port()
  return 20000 + (core.getpid() * 7 + math.floor(core.time() * 1000)) % 20000
end
local hp, np, closed = port(), port() + 1, port() + 2
local httpd = assert(proc.spawn({ "busybox", "httpd", "-f", "-p", "127.0.0.1:" .. hp, "-h", tmp .. "/www" }, {}))
-- (its stdin open and silent for 10 s: it answers nothing and keeps the connection)
local nc = assert(proc.spawn({ "sh", "-c", "sleep 10 | exec busybox nc -l -p " .. np }, { stdout = tmp .. "/req", new_pgroup = true }))
task.sleep(0.5)
local t = { netns = ("/proc/%d/ns/net"):format(core.getpid()) }
local function http(path, p, headers)
  return probe.run_handler({ type = "http", port = p or hp, path = path, scheme = "http", headers = headers or {} }, t, 2)
end

local ok, detail = http("/healthz")
T.ok(ok, "httpGet of an existing path: success " .. tostring(detail))
ok, detail = http("/missing")
T.ok(not ok, "httpGet of a missing path fails")
T.like(detail, "HTTP status 404", "... with the status as the reason")
ok, detail = http("/sub")
T.ok(ok, "a redirect (3xx) counts as success, as kubelet counts it: " .. tostring(detail))
ok, detail = http("/", closed)
T.ok(not ok, "httpGet of a closed port fails")
T.like(detail, "127.0.0.1:" .. closed, "... the reason names where it connected")
ok, detail = probe.run_handler({ type = "tcp", port = hp }, t, 2)
T.ok(ok, "tcpSocket of a listening port: success " .. tostring(detail))
ok = probe.run_handler({ type = "tcp", port = closed }, t, 2)
T.ok(not ok, "tcpSocket of a closed port fails")

-- a server that reads the request and never answers: a timeout; what it received is exactly the probe
local t0 = core.time()
ok, detail = probe.run_handler({ type = "http", port = np, path = "/a{b,c}[1]?x=1", scheme = "http",
  headers = { { name = "X-Probe", value = "v {1}" } } }, t, 1)
T.ok(not ok and core.time() - t0 < 6, "a server that never answers fails the probe at its timeout")
T.like(detail, "no answer within 1 s", "... and says so")
task.sleep(0.2)
local req = fs.read(tmp .. "/req", 65536) or ""
T.like(req, "^GET /a{b,c}%[1%]%?x=1 HTTP/1%.1\r\n", "the path reaches the server as given (no curl URL globbing)")
T.like(req, "\r\nX%-Probe: v {1}\r\n", "... with the probe's header")
T.like(req, "\r\nUser%-Agent: kube%-probe/", "... and a kube-probe User-Agent")
local _, n = req:gsub("GET ", "")
T.is(n, 1, "... in one request")

-- inside another network namespace: what listens there is reached, the node's own ports are not
local ns = ("rkprobe%d"):format(core.getpid())
local nsr = proc.run({ "ip", "netns", "add", ns }, { timeout = 10 })
if nsr and nsr.code == 0 then
  local nsp = "/run/netns/" .. ns
  proc.run({ "ip", "-n", ns, "link", "set", "lo", "up" }, { timeout = 10 })
  local inner = assert(proc.spawn({ "nsenter", "--net=" .. nsp, "--", "busybox", "httpd", "-f", "-p", "127.0.0.1:" .. closed,
    "-h", tmp .. "/www" }, {}))
  task.sleep(0.5)
  local tn = { netns = nsp }
  T.ok(probe.run_handler({ type = "tcp", port = closed }, tn, 2), "tcpSocket in the pod's namespace reaches its listener")
  T.ok(not probe.run_handler({ type = "tcp", port = closed }, t, 2), "... which the node's namespace does not have")
  T.ok(probe.run_handler({ type = "http", port = closed, path = "/healthz", scheme = "http", headers = {} }, tn, 2),
    "httpGet in the pod's namespace reaches its server")
  T.ok(not probe.run_handler({ type = "tcp", port = hp }, tn, 2), "... and not the node's (a probe reaches what the pod reaches)")
  inner:kill(9)
  inner:wait()
  proc.run({ "ip", "netns", "del", ns }, { timeout = 10 })
else
  T.skip("ip netns add failed: " .. tostring(nsr and nsr.stderr), 4)
end
-- a listener that accepts and never closes: connected is enough
local held = assert(proc.spawn({ "sh", "-c", "sleep 10 | exec busybox nc -l -p " .. (np + 3) }, { new_pgroup = true }))
task.sleep(0.3)
t0 = core.time()
ok, detail = probe.run_handler({ type = "tcp", port = np + 3 }, t, 3)
T.ok(ok and core.time() - t0 < 2, "tcpSocket to a listener that keeps the connection: success at once " .. tostring(detail))
proc.run({ "pkill", "-9", "-g", tostring(held.pid) }, { timeout = 5 })
held:wait()

ok, detail = probe.run_handler({ type = "http", port = hp, path = "/" }, {}, 1)
T.ok(not ok and detail:find("no network namespace", 1, true), "no namespace to connect from: fails with the reason")

httpd:kill(9)
httpd:wait()
proc.run({ "pkill", "-9", "-g", tostring(nc.pid) }, { timeout = 5 })
nc:wait()
fs.rm_rf(tmp)
T.done()
