-- riklet.usock + the QMP client of riklet.vmm.qemu against a fake QMP peer (Debian's python3 on a
-- unix socket) that behaves, then misbehaves: no greeting, garbage, an event before the reply, a
-- reply that never comes, a line over 1 MiB, a peer closing mid-command. Each ends in an error that
-- says what happened, within its timeout, and never blocks the loop. Also: usock's errors for a
-- socket nobody listens on, and connect_tcp's outcome for a refused port.
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"
local usock = require "riklet.usock"

local py = "/usr/bin/python3"
if not fs.exists(py) then T.skip_all("needs Debian's /usr/bin/python3") end
local qemu = require "riklet.vmm.qemu"
local qmp = qemu._qmp

local tmp = ("/tmp/riklet-qmp-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

-- the fake peer: MODE decides how it behaves after accepting one connection
local server = [[
import socket, sys, time, json
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(1)
c, _ = s.accept(); f = c.makefile("rwb")
def send(o): f.write((json.dumps(o) + "\r\n").encode()); f.flush()
def cmd(): return json.loads(f.readline())
if mode == "silent": time.sleep(30); sys.exit(0)
if mode == "garbage": f.write(b"\x00\xffnot json at all\r\n{]\r\n"); f.flush(); time.sleep(30); sys.exit(0)
send({"QMP": {"version": {}, "capabilities": []}})
r = cmd(); send({"return": {}, "id": r.get("id")})
r = cmd()
if mode == "good":
    send({"event": "POWERDOWN", "timestamp": {}})
    send({"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}, "timestamp": {}})
    send({"return": {"status": "running", "running": True}, "id": r.get("id")})
    time.sleep(2)
elif mode == "noreply": time.sleep(30)
elif mode == "huge": f.write(b"x" * (2 * 1024 * 1024)); f.flush(); time.sleep(30)
elif mode == "close": c.close()
elif mode == "error": send({"error": {"class": "GenericError", "desc": "no such thing"}, "id": r.get("id")})
]]
assert(fs.write_atomic(tmp .. "/peer.py", server))

local function peer(mode)
  local path = tmp .. "/" .. mode .. ".sock"
  local p = assert(proc.spawn({ py, tmp .. "/peer.py", path, mode }))
  T.wait_for(10, function() return fs.exists(path) end)
  return path, p
end

local function timed(fn)
  local t0 = core.now()
  local a, b = fn()
  return a, b, core.now() - t0
end

-- a clock task: the loop must keep turning while the client waits
local ticks = 0
local ticking = true
task.spawn(function() while ticking do ticks = ticks + 1 task.sleep(0.05) end end)

do
  -- a start: capabilities and query-status sent together, before the greeting is read
  local path, p = peer("good")
  local conn, st = qmp.connect(path, 5, true)
  T.is(type(st) == "table" and st.status, "running", "connect with status: query-status answered with the capabilities")
  if conn then qmp.close(conn) end
  p:kill(9) p:wait()
  fs.unlink(path)
end

do
  local path, p = peer("good")
  local conn, err = qmp.connect(path, 5)
  T.ok(conn ~= nil, "a well-behaved peer: connected, capabilities negotiated " .. tostring(err or ""))
  local events = {}
  if conn then
    conn.on_event = function(ev) events[#events + 1] = ev.event end
    local st = qmp.cmd(conn, "query-status")
    T.is(st and st.status, "running", "query-status answered after two events")
    T.is(table.concat(events, ","), "POWERDOWN,SHUTDOWN", "the events before the reply were dispatched in order")
    T.is(conn.shutdown_reason, "guest-shutdown", "the SHUTDOWN reason is kept")
    qmp.close(conn)
  end
  p:kill(9) p:wait()
end

do
  local path, p = peer("silent")
  local conn, err, secs = timed(function() return qmp.connect(path, 1) end)
  T.ok(conn == nil, "a peer that never greets: no connection")
  T.like(err, "no greeting within 1 s", "  the error says so (" .. tostring(err) .. ")")
  T.ok(secs < 3, ("  within the timeout (%.1f s)"):format(secs))
  p:kill(9) p:wait()
end

do
  local path, p = peer("garbage")
  local conn, err = qmp.connect(path, 1)
  T.ok(conn == nil and err ~= nil, "a peer sending garbage instead of a greeting: refused (" .. tostring(err) .. ")")
  p:kill(9) p:wait()
end

do
  local path, p = peer("noreply")
  local conn = qmp.connect(path, 5)
  local st, err, secs = timed(function() return qmp.cmd(conn, "query-status", nil, 1) end)
  T.ok(st == nil, "a command the peer never answers: no result")
  T.like(err, "query%-status: no answer within 1 s", "  the error names the command (" .. tostring(err) .. ")")
  T.ok(secs < 3, ("  within the timeout (%.1f s)"):format(secs))
  qmp.close(conn)
  p:kill(9) p:wait()
end

do
  local path, p = peer("huge")
  local conn = qmp.connect(path, 5)
  local st, err, secs = timed(function() return qmp.cmd(conn, "query-status", nil, 10) end)
  T.ok(st == nil, "a peer sending 2 MiB without a line end: the command fails (" .. tostring(err) .. ")")
  T.ok(secs < 5, ("  once the line passes 1 MiB, not at the timeout (%.1f s)"):format(secs))
  T.ok(conn.closed.is_set, "  and the connection is closed (" .. tostring(conn.closed.value) .. ")")
  p:kill(9) p:wait()
end

do
  local path, p = peer("close")
  local conn = qmp.connect(path, 5)
  local st, err, secs = timed(function() return qmp.cmd(conn, "query-status", nil, 10) end)
  T.ok(st == nil, "a peer closing mid-command: the command fails at once")
  T.like(err, "closed", "  saying the connection closed (" .. tostring(err) .. ")")
  T.ok(secs < 3, ("  without waiting for the timeout (%.1f s)"):format(secs))
  p:kill(9) p:wait()
end

do
  local path, p = peer("error")
  local conn = qmp.connect(path, 5)
  local st, err = qmp.cmd(conn, "query-status")
  T.ok(st == nil, "a QMP error reply fails the command")
  T.like(err, "no such thing", "  with QEMU's description (" .. tostring(err) .. ")")
  qmp.close(conn)
  p:kill(9) p:wait()
end

local s, err = usock.connect(tmp .. "/nobody.sock")
T.ok(s == nil and err:find("nobody.sock", 1, true) ~= nil, "usock.connect to a missing socket: an error naming it (" .. tostring(err) .. ")")
s, err = usock.connect(("x"):rep(200))
T.ok(s == nil and err:find("longer than", 1, true) ~= nil, "a path too long for a unix socket: refused (" .. tostring(err) .. ")")
s = usock.connect_tcp("127.0.0.1", 1)
if s then
  local w = s:wait_writable()
  local e = s:so_error()
  T.ok(w and e ~= nil, "connect_tcp to a closed port: so_error says " .. tostring(e))
  s:close()
else
  T.ok(true, "connect_tcp to a closed port: refused at once")
end
s, err = usock.connect_tcp("not an ip", 80)
T.ok(s == nil and err ~= nil, "connect_tcp with a bad address: refused (" .. tostring(err) .. ")")

ticking = false
T.ok(ticks > 20, ("the loop kept turning meanwhile (%d ticks)"):format(ticks))
fs.rm_rf(tmp)
T.done()
