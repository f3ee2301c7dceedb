-- http.test.lua — the riklet.http binding against a real HTTP server (tests/lib/httpserver.py):
-- a request yields its task, a JSON request over a unix socket, cancellation from another task,
-- a result collected after the transfer ended, a request dropped by the garbage collector, misuse.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local json = require "riklet.json"
local proc = require "riklet.proc"
local task = require "riklet.task"
local http = require "riklet.http"
local core = require "riklet.core"

T.is(http.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 of abc")

local py = "/usr/bin/python3"
if not fs.exists(py) then T.skip_all("needs /usr/bin/python3 (apt-get install python3)") end
local src = os.getenv("RIKLET_SRC_DIR") or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/") or "."
local tmp = assert(proc.run({ "mktemp", "-d", "/tmp/riklet-http-test.XXXXXX" })).stdout:gsub("%s+$", "")
assert(fs.mkdir_p(tmp .. "/www"))
assert(proc.run({ "sh", "-c", "head -c 500000 /dev/urandom > " .. tmp .. "/www/f.bin" }))
local sock = tmp .. "/api.sock"
local srv = proc.spawn({ py, src .. "/tests/lib/httpserver.py", "--dir", tmp .. "/www", "--port-file",
  tmp .. "/port", "--log", tmp .. "/log", "--unix", sock }, { stderr = tmp .. "/err" })
local port = T.wait_for(15, function() local p = fs.read(tmp .. "/port", 64) return p and tonumber(p) end)
if not port then srv:kill(9) T.skip_all("the test HTTP server did not start within 15 s") end -- (it was left running)
local base = "http://127.0.0.1:" .. port

-- a download to a file
local res, err = http.request({ url = base .. "/f.bin", out = tmp .. "/o.bin", timeout = 30 })
T.ok(res and res.status == 200 and res.bytes == 500000 and res.content_length == 500000,
  "GET to a file: status, bytes, length (" .. tostring(err) .. ")")
T.ok(res and res.etag and res.last_modified, "GET: ETag and Last-Modified")
T.is(fs.stat(tmp .. "/o.bin").size, 500000, "GET: the file holds the body")
local r304 = http.request({ url = base .. "/f.bin", out = tmp .. "/o2.bin", if_none_match = res.etag })
T.is(r304 and r304.status, 304, "if_none_match: 304")

-- JSON over a unix socket
local r = http.request({ url = "http://localhost/machine-config", method = "PUT", unix_socket = sock,
  json = json.encode({ vcpu_count = 2 }) })
local echo = r and json.decode(r.body)
T.ok(echo and echo.method == "PUT" and echo.path == "/machine-config" and echo.content_type == "application/json"
  and json.decode(echo.body).vcpu_count == 2, "unix socket PUT with a JSON body")
local _, e2, k2 = http.request({ url = "http://localhost/", unix_socket = tmp .. "/none.sock" })
T.ok(e2 and e2:find("none.sock", 1, true) and k2 == "transport", "missing socket: a transport failure naming it")

-- cancel from another task: the waiter resumes at once with nil, "cancelled", "cancelled"
fs.write_atomic(tmp .. "/www/.modes.json", json.encode({ ["/f.bin"] = { rate = 10000 } }))
local req = assert(http.start({ url = base .. "/f.bin", out = tmp .. "/o3.bin" }))
task.spawn(function() task.sleep(0.3) req:cancel() end)
local t0 = core.now()
local cr, ce, ck = req:wait()
T.ok(cr == nil and ce == "cancelled" and ck == "cancelled", "cancel: the waiter gets nil, cancelled, cancelled")
T.ok(core.now() - t0 < 3, "cancel: at once, not at the end of the transfer")
T.ok(req:bytes() < 500000, "cancel: the transfer stopped early")
req:cancel()
T.ok(true, "cancel again: no error")
local _, we = req:wait()
T.is(we, "cancelled", "wait after the end: the same result")

-- a result collected after the transfer ended
fs.write_atomic(tmp .. "/www/.modes.json", "{}")
req = assert(http.start({ url = base .. "/missing" }))
task.sleep(1)
local late = req:wait()
T.is(late and late.status, 404, "wait after the transfer ended: its result")

-- a request nobody holds is cancelled by the garbage collector; the client goes on working
http.start({ url = base .. "/f.bin", out = tmp .. "/o4.bin" })
collectgarbage()
collectgarbage()
res = http.request({ url = base .. "/f.bin", out = tmp .. "/o5.bin" })
T.ok(res and res.status == 200, "after a collected request: requests still work")

-- the garbage collector runs while http.request waits: the request must survive it (nothing but
-- the binding holds its handle once the C call yielded)
fs.write_atomic(tmp .. "/www/.modes.json", json.encode({ ["/f.bin"] = { rate = 500000 } }))
local collecting = true
task.spawn(function()
  while collecting do
    collectgarbage()
    task.sleep(0.05)
  end
end)
local gq = task.queue()
task.spawn(function() gq:put({ http.request({ url = base .. "/f.bin", out = tmp .. "/o6.bin", timeout = 30 }) }) end)
local got = gq:get(40) or { nil, "never resumed: the request was collected while its task waited" }
local gres, gerr = got[1], got[2]
collecting = false
T.ok(gres and gres.status == 200 and gres.bytes == 500000, "a request survives garbage collections while it waits ("
  .. tostring(gerr) .. ")")
fs.write_atomic(tmp .. "/www/.modes.json", "{}")

-- misuse raises; expected failures return nil, err
T.ok(not pcall(http.start, {}), "no url: raises")
T.ok(not pcall(http.start, { url = base, timeout = "1" }), "a string timeout: raises")
T.ok(not pcall(http.start, { url = base, headers = { X = 1 } }), "a number header value: raises")
local nr, ne = http.start({ url = "gopher://x/" })
T.ok(nr == nil and ne:find("http://"), "a gopher URL: nil, err")
nr, ne = http.start({ url = base, headers = { ["X-A"] = "1\r\nX-B: 2" } })
T.ok(nr == nil and ne:find("one line"), "a header with CR LF: nil, err")
local co = coroutine.create(function() return http.request({ url = base .. "/f.bin" }) end)
local cok, cerr = coroutine.resume(co)
T.ok(not cok and tostring(cerr):find("riklet task"), "request outside a task: raises")

srv:kill(9)
srv:wait()
proc.run({ "rm", "-rf", tmp })
