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
T.done()
