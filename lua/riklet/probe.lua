-- riklet.probe — a Pod container's probes and lifecycle hooks, run by riklet as kubelet runs them.
--
--   exec      `runc exec` in the running container (its user, env and working directory)
--   http      curl from the node inside the Pod's network namespace (nsenter --net: the Pod's
--             netns file, else the container's /proc/PID/ns/net) to HOST:PORT (default: the Pod's
--             IP with pod networking, as kubelet; else 127.0.0.1), success on a status from 200 to
--             399 (redirects are not followed: a 3xx counts as success, as kubelet counts it). The
--             connection starts inside the Pod's namespace: a probe reaches what the Pod reaches.
--   tcp       a TCP connect from the same place (riklet's own non-blocking socket, made inside the
--             Pod's namespace: riklet.usock.connect_tcp with netns), connected = success
--   sleep     (hooks only) wait that long
--
--   probe.run_handler(h, target, timeout) -> ok, detail   target = {runc_id, netns, host}
--   probe.start(inst, c, spec, mon, ctx)   one task per probe of container record c (spec: its model
--       container) while monitor mon runs; ctx = {save = fn(), kill = fn(why)}. Startup first (the
--       others wait for it); readiness sets c.ready; a startup or liveness failure (failureThreshold
--       in a row) calls ctx.kill (the restart policy then decides, as for any exit).
--   probe.hook(inst, c, spec, which, timeout) -> ok, detail | nil (no such hook)
local core = require "riklet.core"
local task = require "riklet.task"
local proc = require "riklet.proc"
local runc = require "riklet.runc"
local usock = require "riklet.usock"

local M = {}

local function log(level, fmt, ...) core.log(level, "probe", fmt:format(...)) end

local function out_of(r)
  local s = ((r.stderr or "") ~= "" and r.stderr or r.stdout or ""):gsub("%s+$", "")
  if #s > 200 then s = s:sub(1, 200) .. "..." end
  return s
end

-- Where a container's probes and hooks connect from and to: {runc_id, netns = the Pod's namespace
-- (else its process's), host = the Pod's IP (nil without pod networking: 127.0.0.1)}.
function M.target(inst, c)
  local net = inst.rec.network
  local t = { runc_id = c.runc_id }
  if type(net) == "table" and type(net.netns) == "string" and net.netns:match("^/[%w/._-]+$") then
    t.netns = net.netns
    t.host = type(net.ip) == "string" and net.ip:match("^%d+%.%d+%.%d+%.%d+$") and net.ip or nil
  elseif type(c.pid) == "number" and c.pid > 1 then
    t.netns = ("/proc/%d/ns/net"):format(c.pid)
  end
  return t
end

function M.run_handler(h, t, timeout)
  if h.type == "exec" then
    local r, err = runc.exec(t.runc_id, h.command, timeout)
    if not r then return false, err end
    if r.timed_out then return false, ("%s did not finish within %g s"):format(h.command[1], timeout) end
    if r.code ~= 0 then
      local o = out_of(r)
      return false, ("%s %s%s"):format(h.command[1], proc.describe(r.code, r.signal), o ~= "" and (": " .. o) or "")
    end
    return true
  elseif h.type == "sleep" then
    task.sleep(math.min(h.seconds, timeout))
    return true
  end
  if not t.netns then return false, "the container has no network namespace to connect from (not running)" end
  local host = h.host or t.host or "127.0.0.1"
  local hostport = (host:find(":", 1, true) and ("[%s]"):format(host) or host) .. ":" .. h.port
  if h.type == "tcp" then
    local what = ("tcp %s"):format(hostport)
    local s, err = usock.connect_tcp(host, h.port, { netns = t.netns })
    if not s then return false, ("%s: %s"):format(what, tostring(err)) end
    local q = task.queue()
    task.spawn(function() q:put(s:wait_writable() and true or false) end)
    local got = q:get(timeout)
    local serr = got and s:so_error()
    s:close()
    if not got then return false, ("%s: not connected within %g s"):format(what, timeout) end
    if serr then return false, ("%s: %s"):format(what, tostring(serr)) end
    return true
  end
  local argv = { "nsenter", "--net=" .. t.netns, "--", "curl", "-sS", "--max-time", tostring(timeout), "-o", "/dev/null" }
  -- -g: no URL globbing ({} and [] of a path are sent as they are); -k: no certificate check (kubelet's)
  for _, a in ipairs({ "-g", "-k", "-w", "%{http_code}", "-H", "User-Agent: kube-probe/riklet", "-H", "Accept: */*" }) do
    argv[#argv + 1] = a
  end
  for _, hd in ipairs(h.headers or {}) do
    argv[#argv + 1] = "-H"
    argv[#argv + 1] = hd.name .. ": " .. hd.value
  end
  argv[#argv + 1] = "--"
  argv[#argv + 1] = ("%s://%s%s"):format(h.scheme or "http", hostport, h.path or "/")
  local r, err = proc.run(argv, { timeout = timeout + 5, input = "" }) -- (stdin: an empty pipe, never riklet's own)
  if not r then return false, "nsenter + curl could not be started: " .. tostring(err) end
  local what = ("GET %s://%s%s"):format(h.scheme or "http", hostport, h.path or "/")
  if r.timed_out or r.code == 28 then return false, ("%s: no answer within %g s"):format(what, timeout) end
  if r.code ~= 0 then return false, ("%s: %s"):format(what, out_of(r) ~= "" and out_of(r) or proc.describe(r.code, r.signal)) end
  local code = tonumber(r.stdout)
  if not code or code < 200 or code >= 400 then return false, ("%s: HTTP status %s"):format(what, tostring(r.stdout)) end
  return true
end

local function spec_of(w, name)
  for _, c in ipairs(w and w.containers or {}) do
    if c.name == name then return c end
  end
end
M.spec_of = spec_of

local HOOKS = { post_start = "postStart", pre_stop = "preStop" }

function M.hook(inst, c, which, timeout)
  local spec = spec_of(inst.workload, c.name)
  local h = spec and spec.hooks and spec.hooks[which]
  if not h then return nil end
  local t0 = core.time()
  local ok, detail = M.run_handler(h, M.target(inst, c), timeout)
  log(ok and "info" or "warn", "instance %s: container %s: %s hook %s in %.1f s%s", inst.id, c.name, HOOKS[which],
    ok and "ran" or "failed", core.time() - t0, detail and (": " .. detail) or "")
  return ok, detail
end

local NAMES = { startup = "startup", readiness = "readiness", liveness = "liveness" }

function M.start(inst, c, mon, ctx)
  local spec = spec_of(inst.workload, c.name)
  local probes = spec and spec.probes
  if not probes or not next(probes) then
    c.ready, c.started = nil, nil
    return
  end
  local alive = function() return not mon.ended.is_set and not ctx.stopped() and not inst.destroy_requested end
  local started = task.event()
  -- before its probes succeed a container is neither started nor ready (as kubelet reports it)
  c.started = probes.startup == nil and true or false
  c.ready = probes.readiness == nil and true or false
  if probes.startup == nil then started:set(true) end
  task.spawn(function() mon.ended:wait() started:set(false) end)
  local t0 = c.started_at or core.time()
  local target = function() return M.target(inst, c) end
  for kind, p in pairs(probes) do
    task.spawn(function()
      if kind ~= "startup" and not started:wait() then return end
      local delay = t0 + p.initial_delay_seconds - core.time()
      if delay > 0 and mon.ended:wait(delay) then return end
      local ok_n, fail_n = 0, 0
      while alive() do
        local ok, detail = M.run_handler(p.handler, target(), p.timeout_seconds)
        if not alive() then return end
        if ok then ok_n, fail_n = ok_n + 1, 0 else ok_n, fail_n = 0, fail_n + 1 end
        if not ok then
          -- the first failure and the one that reaches the threshold; the others at debug level
          local lvl = (fail_n == 1 or fail_n == p.failure_threshold) and "info" or "debug"
          log(lvl, "instance %s: container %s: %s probe failed (%d of %d): %s", inst.id, c.name, NAMES[kind], fail_n,
            p.failure_threshold, tostring(detail))
        end
        if kind == "startup" then
          if ok then
            log("info", "instance %s: container %s: started (startup probe succeeded)", inst.id, c.name)
            c.started = true
            ctx.save()
            started:set(true)
            return
          elseif fail_n >= p.failure_threshold then
            return ctx.kill(("startup probe failed %d times: %s"):format(fail_n, tostring(detail)))
          end
        elseif kind == "readiness" then
          if ok and ok_n >= p.success_threshold and c.ready ~= true then
            log("info", "instance %s: container %s is ready (readiness probe succeeded)", inst.id, c.name)
            c.ready = true
            ctx.save()
          elseif not ok and fail_n >= p.failure_threshold and c.ready ~= false then
            log("warn", "instance %s: container %s is not ready: %s", inst.id, c.name, tostring(detail))
            c.ready = false
            ctx.save()
          end
        elseif not ok and fail_n >= p.failure_threshold then
          return ctx.kill(("liveness probe failed %d times: %s"):format(fail_n, tostring(detail)))
        end
        if mon.ended:wait(p.period_seconds) then return end
      end
    end)
  end
end

return M
