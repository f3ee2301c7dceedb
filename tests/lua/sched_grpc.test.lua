-- riklet.pb and riklet.grpc inside the real binary: descriptor-driven tables, then real calls
-- against tests/sched/scheduler.py (Debian's grpcio).
local T = require "riklet.testlib"
local task = require "riklet.task"
local proc = require "riklet.proc"
local core = require "riklet.core"
local pb = require "riklet.pb"
local grpc = require "riklet.grpc"
local json = require "riklet.json"
local fs = require "riklet.fs"

-- ---- riklet.pb ----
local bytes = pb.encode("common.WorkerStatus", { identifier = "n1",
  instance = { instance_id = "i1", status = "RUNNING", metrics = "ok" } })
local t = pb.decode("common.WorkerStatus", bytes)
T.is(t.identifier, "n1", "pb: string round trip")
T.is(t.instance.status, "RUNNING", "pb: enum as name")
T.is(t.instance.instance_id, "i1", "pb: nested message")
T.is(t.worker, nil, "pb: the other oneof member is absent")
T.is(t.host_address, nil, "pb: unset optional host_address is absent")
local t2 = pb.decode("common.WorkerStatus", pb.encode("common.WorkerStatus", { identifier = "n", host_address = "" }))
T.is(t2.host_address, "", "pb: host_address set to '' keeps its presence")
T.is(pb.decode("common.WorkerStatus", bytes, { enums = "number" }).instance.status, 2, "pb: enums as numbers on request")
T.is(pb.decode("worker.InstanceScheduling", pb.encode("worker.InstanceScheduling", { action = 1 })).action, "DESTROY", "pb: enum number accepted on input")
T.is(pb.decode("worker.InstanceScheduling", "").action, "CREATE", "pb: proto3 default scalar comes out (CREATE = 0)")
T.is(pb.decode("worker.InstanceScheduling", "").instance_id, "", "pb: proto3 default string is ''")
local ok, err = pcall(pb.encode, "common.WorkerStatus", { identifer = "typo" })
T.ok(not ok and err:find("no field 'identifer'"), "pb: an unknown field raises, naming it: " .. tostring(err))
ok, err = pcall(pb.encode, "common.WorkerStatus", { instance = { status = "BOGUS" } })
T.ok(not ok and err:find("not a common.ResourceStatus") and err:find("CREATING"), "pb: a bad enum name raises, listing the names")
ok, err = pcall(pb.encode, "common.WorkerStatus", { instance = {}, worker = {} })
T.ok(not ok and err:find("same oneof"), "pb: two members of a oneof raise")
ok, err = pcall(pb.encode, "common.WorkerStatus", { instance = { instance_id = {} } })
T.ok(not ok and err:find("common.WorkerStatus.instance.instance_id"), "pb: a wrong type raises with the field path")
ok, err = pcall(pb.encode, "nope.Nope", {})
T.ok(not ok and err:find("unknown protobuf message type"), "pb: unknown type raises")
local v, derr = pb.decode("common.WorkerStatus", "\255\255\255")
T.ok(v == nil and derr:find("cannot decode"), "pb: undecodable bytes give nil, err")
T.is(grpc.codes.ALREADY_EXISTS, 6, "grpc.codes")
T.is(grpc.status_name(14), "UNAVAILABLE", "grpc.status_name")

-- ---- riklet.grpc against the scheduler stand-in ----
local py = "/usr/bin/python3"
local probe = proc.run({ py, "-c", "import grpc, google.protobuf" })
if not probe or probe.code ~= 0 or not proc.run({ "sh", "-c", "command -v protoc" }) then
  T.skip("no grpcio under /usr/bin/python3 or no protoc", 1)
  return T.done()
end
local src = os.getenv("RIKLET_SRC_DIR") or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/") or "."
local tmp = os.tmpname()
os.remove(tmp)
local portfile = tmp .. ".ports"
local sched = proc.spawn({ py, src .. "/tests/sched/scheduler.py", "--port-file", portfile },
  { stderr = tmp .. ".log" })
T.ok(T.wait_for(15, function() return fs.read(portfile, 4096) end), "scheduler.py is up")
local ports = json.decode(fs.read(portfile, 4096))
local url = "http://127.0.0.1:" .. ports.grpc
local function control(path, body)
  return proc.run({ "curl", "-sf", "-X", body and "POST" or "GET", body and "-d" or "-G", body or "",
    "http://127.0.0.1:" .. ports.control .. path })
end

local ch = assert(grpc.channel(url))
T.is(ch.url, url, "channel url")
local reg = ch:server_stream("/worker.Worker/Register", "common.WorkerRegistration", { hostname = "lua-node" },
  "worker.InstanceScheduling")
T.ok(reg:headers(), "Register accepted (headers)")
control("/instruct", json.encode({ instance_id = "x1", definition = "{}", action = "CREATE" }))
local m = reg:recv()
T.ok(m and m.instance_id == "x1" and m.action == "CREATE", "recv yields until an InstanceScheduling arrives")

-- a second task waits too: ALREADY_EXISTS through the same channel
local r2 = ch:server_stream("/worker.Worker/Register", "common.WorkerRegistration", { hostname = "lua-node" },
  "worker.InstanceScheduling")
local h, herr, hcode = r2:headers()
T.ok(h == nil and hcode == grpc.codes.ALREADY_EXISTS, "duplicate Register: nil, err, ALREADY_EXISTS (" .. tostring(herr) .. ")")
local e1, _, e3 = r2:recv()
T.ok(e1 == nil and e3 == 6, "recv after the end returns the same status")

-- client streaming over time, and unary-shaped one-message call
local st = ch:client_stream("/worker.Worker/SendStatusUpdates", "common.WorkerStatus", "google.protobuf.Empty")
for i = 1, 5 do
  T.ok(st:send({ identifier = "lua-node", instance = { instance_id = "s" .. i, status = "CREATING" } }), "send " .. i)
  task.sleep(0.05)
end
local resp, ferr = st:finish()
T.ok(resp ~= nil and next(resp) == nil, "finish: Empty response as {} (" .. tostring(ferr) .. ")")
local u, uerr = ch:unary("/worker.Worker/SendStatusUpdates", "common.WorkerStatus",
  { identifier = "lua-node", worker = { status = "RUNNING", metrics = "{}" } }, "google.protobuf.Empty", { timeout = 5 })
T.ok(u ~= nil, "unary call: response (" .. tostring(uerr) .. ")")
local evs = control("/events?since=0").stdout
local n = 0
for _ in evs:gmatch('"instance_id": "s%d"') do n = n + 1 end
T.is(n, 5, "the scheduler got the 5 streamed statuses")

-- deadline
local r3 = ch:server_stream("/worker.Worker/Register", "common.WorkerRegistration", { hostname = "slow" },
  "worker.InstanceScheduling", { timeout = 0.3 })
local t0 = core.now()
local x, xerr, xcode = r3:recv()
T.ok(x == nil and xcode == grpc.codes.DEADLINE_EXCEEDED and core.now() - t0 < 2, "timeout 0.3 s: DEADLINE_EXCEEDED (" .. tostring(xerr) .. ")")

-- close from another task wakes the waiter
task.spawn(function() task.sleep(0.1) reg:close() end)
local y, yerr, ycode = reg:recv()
T.ok(y == nil and ycode == grpc.codes.CANCELLED, "close() from another task: the waiting recv gets CANCELLED (" .. tostring(yerr) .. ")")

-- a bad request table raises before anything is sent
ok, err = pcall(ch.unary, ch, "/worker.Worker/SendStatusUpdates", "common.WorkerStatus", { bogus = 1 }, "google.protobuf.Empty")
T.ok(not ok and err:find("no field 'bogus'"), "unary with a bad table raises")

-- the scheduler goes away: errors, not crashes
sched:kill(9)
sched:wait()
local z, zerr, zcode = ch:unary("/worker.Worker/SendStatusUpdates", "common.WorkerStatus",
  { identifier = "n" }, "google.protobuf.Empty", { timeout = 5 })
T.ok(z == nil and zcode == grpc.codes.UNAVAILABLE, "scheduler gone: UNAVAILABLE (" .. tostring(zerr) .. ")")
ch:close()
ch:close()
T.ok(not pcall(ch.unary, ch, "/x/y", "common.WorkerStatus", {}, "google.protobuf.Empty"), "a closed channel raises on use")
os.remove(portfile)

-- ---- peers that are no (working) gRPC server: each failure says what happened, within bounds ----
local nstart = 0
local function start(args)
  nstart = nstart + 1
  local pf = ("%s.%d.ports"):format(tmp, nstart)
  local argv = { py, src .. "/tests/sched/scheduler.py", "--port-file", pf }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = proc.spawn(argv, { stderr = tmp .. ".log" })
  T.wait_for(15, function() return fs.read(pf, 4096) end)
  local pt = json.decode(fs.read(pf, 4096) or "{}")
  os.remove(pf)
  return p, pt and pt.grpc
end
local function register(port, copts, opts)
  local c = assert(grpc.channel("http://127.0.0.1:" .. port, copts))
  return c, c:server_stream("/worker.Worker/Register", "common.WorkerRegistration", { hostname = "n" },
    "worker.InstanceScheduling", opts)
end
local cases = {
  { "silent", "no HTTP/2 SETTINGS from the server within 0.5 s", 0.5, 1.5 },
  { "close", "closed it without sending anything", 0, 1 },
  { "http1", 'does not speak HTTP/2: it sent "HTTP/1.1 400 Bad Request"', 0, 1 },
}
for _, c in ipairs(cases) do
  local mode, needle, tmin, tmax = c[1], c[2], c[3], c[4]
  local p, port = start({ "--raw", mode })
  local c2, s = register(port, { handshake_timeout = 0.5 })
  local t1 = core.now()
  local r, rerr, rcode = s:ready()
  local dt = core.now() - t1
  T.ok(r == nil and rcode == grpc.codes.UNAVAILABLE and tostring(rerr):find(needle, 1, true) and dt >= tmin and dt < tmax,
    ("%s peer: ready() -> UNAVAILABLE in %.2f s saying %q (%s)"):format(mode, dt, needle, tostring(rerr)))
  local _, e2 = s:recv()
  T.is(e2, rerr, mode .. " peer: recv() returns the same error")
  c2:close()
  p:kill(9)
  p:wait()
end

-- HTTP/2 answers (SETTINGS, PING acks) but never a response: ready, then the header timeout
local p, port = start({ "--raw", "noheaders" })
local c3, s3 = register(port, { handshake_timeout = 0.5 }, { header_timeout = 1 })
t0 = core.now()
T.ok(s3:ready(), "HTTP/2 peer that never answers the stream: ready() (its SETTINGS came)")
T.ok(core.now() - t0 < 0.5, "... at once")
local _, nherr, nhcode = s3:recv()
local dt = core.now() - t0
T.ok(nhcode == grpc.codes.UNAVAILABLE and tostring(nherr):find("no HTTP/2 response headers within 1 s", 1, true) and dt >= 1 and dt < 2,
  ("... header_timeout 1: UNAVAILABLE after %.2f s (%s)"):format(dt, tostring(nherr)))
-- without a header timeout the same stream stays open: an idle stream is not a dead one
local c4, s4 = register(port, { handshake_timeout = 0.5 })
T.ok(s4:ready(), "without header_timeout: ready")
task.sleep(1.5)
T.ok(not s4:status(), "... and still open after 1.5 s (3x the handshake timeout)")
-- HTTP/2 PING keepalive: PINGs acked keep an idle stream; a server that stops answering them (a
-- hung process: its kernel still acknowledges TCP) is given up on after keepalive_timeout
local ka = { handshake_timeout = 0.5, keepalive_idle = 1, keepalive_timeout = 1 }
local c5, s5k = register(port, ka)
task.sleep(3.5)
T.ok(s5k:ready() and not s5k:status(), "keepalive 1 s + 1 s, PINGs acked: the idle stream is kept 3.5 s")
c3:close()
c4:close()
c5:close()
p:kill(9)
p:wait()
p, port = start({ "--raw", "noping" })
local c7, s7 = register(port, ka)
t0 = core.now()
T.ok(s7:ready(), "a server that answers SETTINGS but no PING: ready")
local _, perr, pcode = s7:recv()
dt = core.now() - t0
T.ok(pcode == grpc.codes.UNAVAILABLE and tostring(perr):find("no answer to an HTTP/2 PING within 1 s", 1, true)
  and dt >= 1.5 and dt < 4, ("... UNAVAILABLE after %.2f s (1 s silence + 1 s): %s"):format(dt, tostring(perr)))
c7:close()
p:kill(9)
p:wait()

-- nothing listening
local _, s5 = register(1) -- port 1: nothing listens there
local r5, e5, k5 = s5:ready()
T.ok(r5 == nil and k5 == grpc.codes.UNAVAILABLE and tostring(e5):find("connect", 1, true), "nothing listening: UNAVAILABLE (" .. tostring(e5) .. ")")

-- grpcio's default: Register's headers come with the first instruction only; ready() does not wait
p, port = start({ "--lazy-headers" })
local c6, s6 = register(port)
t0 = core.now()
T.ok(s6:ready() and core.now() - t0 < 2, ("grpcio holding the headers: ready() after %.2f s"):format(core.now() - t0))
local got
task.spawn(function() got = { s6:headers() } end)
task.sleep(1)
T.ok(got == nil, "... while headers() still waits (the server has sent none)")
c6:close()
p:kill(9)
p:wait()
os.remove(tmp .. ".log")
T.done()
