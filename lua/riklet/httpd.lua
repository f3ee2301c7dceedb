-- riklet.httpd — the HTTP server on the loop (core/httpd.c, libmicrohttpd) with routes, for the
-- front-ends that serve HTTP (interLink, Prometheus /metrics).
--
--   httpd.serve(addr, opts, routes) -> server | nil, err
--     addr: "HOST:PORT" or "unix:/path"
--     opts: body_max (bytes, default 8 MiB), conn_max (256), header_timeout (s, 30),
--           idle_timeout (s, 60), unix_mode (0660), name (for logs),
--           auth = fn(info) -> true | nil, status, message     (asked before any route)
--     routes: { ["POST /create"] = fn, ["/metrics"] = fn (any method), ... }
--     fn(info, req) runs as a task (it may wait): info = {method, path, body, headers (lowercased
--       names), query}; it returns status, body[, headers] (a table body is sent as JSON), or
--       streams through req:stream(status, headers), req:write(data[, high]) (waits while the client is
--       slow), req:finish(), req:gone() and returns nothing.
--   httpd.shown(s): a client's string made safe for a log line (JSON-quoted unless printable ASCII).
--   A server listens until server:close() (the binding holds it meanwhile, referenced or not).
--   An error raised in a route is logged and answered 500; an unknown path 404, a known path with
--   another method 405.
local core = require "riklet.core"
local hc = require "riklet.httpd_core"
local json = require "riklet.json"

local H = {}

local function log(level, name, fmt, ...) core.log(level, name, fmt:format(...)) end

local function send(req, status, body, headers)
  headers = headers or {}
  if type(body) == "table" then
    local text, err = json.encode(body)
    if not text then
      status, text = 500, "riklet: internal error: cannot encode the answer as JSON: " .. tostring(err) .. "\n"
      headers = {}
    else
      headers["Content-Type"] = headers["Content-Type"] or "application/json"
    end
    body = text
  else
    body = body ~= nil and tostring(body) or ""
    headers["Content-Type"] = headers["Content-Type"] or "text/plain; charset=utf-8"
  end
  return req:respond(status, headers, body)
end

H.send = send

-- A client's string (path, method, header) for a log line: as it is when printable ASCII, else
-- JSON-quoted, so a newline or a terminal escape sequence cannot forge a line.
function H.shown(v)
  v = tostring(v)
  if #v <= 200 and v:match("^[\33-\126]*$") then return v end
  return json.quote(v, 200)
end

function H.serve(addr, opts, routes)
  opts = opts or {}
  local name = opts.name or "httpd"
  local paths = {}
  for key in pairs(routes) do
    local p = key:match("^%u+ (/.*)$")
    p = p or key
    paths[p] = true
  end
  local function handle(req, info)
    local ok, err = xpcall(function()
      if opts.auth then
        local allowed, status, msg = opts.auth(info)
        if not allowed then
          send(req, status or 401, msg or "unauthorized\n", { ["WWW-Authenticate"] = "Bearer" })
          return
        end
      end
      local fn = routes[info.method .. " " .. info.path] or routes[info.path]
      if not fn then
        if paths[info.path] then
          send(req, 405, ("riklet: %s is not served for method %s\n"):format(info.path, info.method))
        else
          send(req, 404, ("riklet: no such path %s\n"):format(info.path))
        end
        return
      end
      local status, body, headers = fn(info, req)
      if status then send(req, status, body, headers) end
    end, debug.traceback)
    if not ok then
      log("error", name, "%s %s: internal error: %s", H.shown(info.method), H.shown(info.path), tostring(err))
      if not req:gone() then
        send(req, 500, "riklet: internal error while serving " .. info.path .. " (see riklet's log)\n")
      end
    end
  end
  local srv, err = hc.listen(addr, {
    body_max = opts.body_max, conn_max = opts.conn_max, header_timeout = opts.header_timeout,
    idle_timeout = opts.idle_timeout, unix_mode = opts.unix_mode,
  }, handle)
  if not srv then return nil, err end
  return srv
end

return H
