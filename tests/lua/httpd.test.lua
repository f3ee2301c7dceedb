-- httpd.test.lua — riklet.httpd as a front-end uses it: a server the caller keeps no reference to
-- still answers after full garbage collections (the binding holds it until close), and close()
-- really stops it.
local T = require "riklet.testlib"
local task = require "riklet.task"
local http = require "riklet.http"
local httpd = require "riklet.httpd"

local function get(port)
  return http.request({ url = ("http://127.0.0.1:%d/hello"):format(port), timeout = 5 })
end

local srv = assert(httpd.serve("127.0.0.1:0", { name = "test" }, {
  ["GET /hello"] = function() return 200, "hi\n" end,
}))
local port = srv:port()
T.ok(port and port > 0, "the server listens on a port of its own: " .. tostring(port))
local weak = setmetatable({ srv }, { __mode = "v" })
srv = nil -- luacheck: ignore (dropped on purpose)
for _ = 1, 3 do collectgarbage("collect") end
T.ok(weak[1] ~= nil, "a listening server is not collected while the caller holds no reference")
local answered, first_err = 0, nil
for i = 1, 50 do
  local r, err = get(port)
  if r and r.status == 200 and r.body == "hi\n" then answered = answered + 1
  else first_err = first_err or tostring(err or (r and r.status)) end
  if i % 10 == 0 then collectgarbage("collect") end
end
T.is(answered, 50, "50 requests after the collections are all answered (" .. tostring(first_err) .. ")")
weak[1]:close()
task.sleep(0.05)
local r = get(port)
T.ok(not r or r.status ~= 200, "after close() nothing answers on the port")

-- A request while the loop's paced queue is full (50 tasks that each work 1 ms, then yield) is
-- served between two paced steps (the server's fds are urgent, core/loop.c serve_urgent), not
-- behind the rest of the turn's 20 ms budget and then the next turn's (before: median 41.8 ms).
do
  local proc = require "riklet.proc"
  local core = require "riklet.core"
  local s2 = assert(httpd.serve("127.0.0.1:0", { name = "test" }, { ["GET /hello"] = function() return 200, "hi\n" end }))
  local busy, steps = true, 0
  for _ = 1, 50 do
    task.spawn(function()
      while busy do
        local t = core.now() while core.now() - t < 0.001 do end
        steps = steps + 1
        coroutine.yield()
      end
    end)
  end
  local argv = { "curl", "-s", "-w", "t=%{time_total}\n" }
  for _ = 1, 40 do argv[#argv + 1] = ("http://127.0.0.1:%d/hello"):format(s2:port()) end
  local s0 = steps
  local res = proc.run(argv, { timeout = 30 })
  busy = false
  steps = steps - s0
  local times = {}
  for t in ((res and res.stdout) or ""):gmatch("t=([%d.]+)") do times[#times + 1] = tonumber(t) * 1000 end
  table.sort(times)
  local median = times[math.max(1, math.floor(#times / 2))] or math.huge
  T.ok(#times == 40 and median < 10 and steps >= 20,
    ("40 requests while 50 tasks work 1 ms each and yield: median %.1f ms, longest %.1f (at most 10: "
    .. "less than the turn's 20 ms budget), %d paced steps during curl's run"):format(median, times[#times] or -1,
    steps))
  s2:close()
end
T.done()
