-- riklet.testlib — TAP helpers for Lua tests run inside the real binary (`riklet test FILE.lua`).
-- A test file is a chunk run as a task; it may wait (sleep, run processes) like the agent does.
local T = { n = 0, failed = 0, skipped = 0 }

local function out(s) io.stdout:write(s, "\n") io.stdout:flush() end

function T.ok(cond, msg)
  T.n = T.n + 1
  if cond then out(("ok %d - %s"):format(T.n, msg or ""))
  else
    T.failed = T.failed + 1
    out(("not ok %d - %s"):format(T.n, msg or ""))
    out("#   " .. debug.traceback("", 2):gsub("\n", "\n#   "))
  end
  return cond
end

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

function T.is(got, want, msg)
  local good = got == want
  T.ok(good, msg)
  if not good then out("#   got " .. show(got) .. ", expected " .. show(want)) end
  return good
end

function T.like(got, pattern, msg)
  local good = type(got) == "string" and got:find(pattern) ~= nil
  T.ok(good, msg)
  if not good then out("#   " .. show(got) .. " does not match " .. show(pattern)) end
  return good
end

function T.diag(msg) out("# " .. tostring(msg)) end

-- Skip the whole file: counted as skipped (exit 77).
function T.skip_all(reason)
  out("1..0 # SKIP " .. reason)
  error({ skip_all = true }, 0)
end

function T.skip(reason, n)
  for _ = 1, n or 1 do
    T.n = T.n + 1
    T.skipped = T.skipped + 1
    out(("ok %d # SKIP %s"):format(T.n, reason))
  end
end

-- Wait until fn() is truthy, polling every `step` seconds up to `timeout`. Returns fn's value.
function T.wait_for(timeout, fn, step)
  local task = require "riklet.task"
  local core = require "riklet.core"
  local deadline = core.now() + timeout
  repeat
    local v = fn()
    if v then return v end
    task.sleep(step or 0.1)
  until core.now() > deadline
  return fn()
end

-- Skip the whole file unless every command is on PATH: need_cmds({ cmd = "debian-package", ... }).
function T.need_cmds(cmds)
  local fs = require "riklet.fs"
  local path = os.getenv("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"
  for cmd, pkg in pairs(cmds) do
    local found = false
    for dir in path:gmatch("[^:]+") do
      if fs.exists(dir .. "/" .. cmd) then found = true break end
    end
    if not found then T.skip_all(("needs %s (apt-get install %s)"):format(cmd, pkg)) end
  end
end

-- Run fn() while a task counts 10 ms sleeps: -> fn's two results, seconds fn took, ticks, the
-- longest gap between two ticks, or between the last tick and fn's end (s). A call that blocks the
-- loop thread shows as one long gap (the whole call, when it blocks all along).
function T.ticking(fn)
  local task = require "riklet.task"
  local core = require "riklet.core"
  local on, ticks, gap = true, 0, 0
  local last = core.now()
  task.spawn(function()
    while on do
      task.sleep(0.01)
      if not on then return end
      ticks, gap = ticks + 1, math.max(gap, core.now() - last)
      last = core.now()
    end
  end)
  local t0 = core.now()
  local a, b = fn()
  on = false
  return a, b, core.now() - t0, ticks, math.max(gap, core.now() - last)
end

-- T.busy_tasks(n) -> state: n tasks ready at once, each yielding 4 times and working 3 ms after
-- each yield, so that a loop turn's budget paces them (~n * 3 ms a pass); state.left is how many
-- have not ended yet.
function T.busy_tasks(n)
  local task = require "riklet.task"
  local core = require "riklet.core"
  local state = { left = n }
  for _ = 1, n do
    task.spawn(function()
      for _ = 1, 4 do
        task.yield()
        local t = core.now()
        while core.now() - t < 0.003 do end
      end
      state.left = state.left - 1
    end)
  end
  return state
end

-- Run this test file again under argv_prefix (e.g. { "env", "X=1" } or { "unshare", "-n", ... })
-- and report its results as ours; `what` names the nested run in the last line.
function T.run_nested(argv_prefix, what, timeout)
  local proc = require "riklet.proc"
  local core = require "riklet.core"
  local me = debug.getinfo(2, "S").source:sub(2)
  local argv = {}
  for _, a in ipairs(argv_prefix) do argv[#argv + 1] = a end
  for _, a in ipairs({ core.paths().exe, "test", me }) do argv[#argv + 1] = a end
  local r = assert(proc.run(argv, { timeout = timeout or 60, stderr_to_stdout = true }))
  for line in r.stdout:gmatch("[^\n]+") do
    local okw, msg = line:match("^(n?o?t? ?ok) %d+ %- (.*)$")
    if okw then T.ok(okw == "ok", msg)
    elseif line:match("^1%.%.0 # SKIP") then T.skip_all(line:match("SKIP (.*)"))
    elseif not line:match("^1%.%.%d+$") then T.diag(line) end
  end
  T.ok(r.code == 0, ("the run %s passed (exit %s)"):format(what, tostring(r.code)))
  return r
end

function T.done()
  out(("1..%d"):format(T.n))
  return T.failed == 0
end

return T
