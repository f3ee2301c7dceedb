-- riklet.fault: the registry of fault points matches the call sites, an unarmed point lets the step
-- run, RIKLET_FAULT is checked (a riklet given an unknown point refuses to start, an armed point
-- fails its step or kills riklet), and store.remove_stale_tmp removes only writes nobody finishes.
-- The points on the real create/destroy paths run in tests/integration/test_fault_points.sh.
local T = require "riklet.testlib"
local fault = require "riklet.fault"
local fs = require "riklet.fs"
local core = require "riklet.core"
local proc = require "riklet.proc"

-- registry <-> call sites: each point is reached from exactly one line of the agent's code
local src = debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]+$") or "."
local calls = {}
for _, f in ipairs(fs.list(src .. "/lua/riklet") or {}) do
  local text = f:match("%.lua$") and f ~= "fault.lua" and fs.read(src .. "/lua/riklet/" .. f) or ""
  for name in text:gmatch('fault%.point%("([^"]+)"%)') do calls[name] = (calls[name] or 0) + 1 end
end
local seen, phases = {}, { create = 0, destroy = 0 }
for _, p in ipairs(fault.points) do
  T.ok(not seen[p.name], "fault point " .. p.name .. " is registered once")
  seen[p.name] = true
  T.is(calls[p.name], 1, "fault point " .. p.name .. " is called from one place")
  phases[p.phase] = (phases[p.phase] or 0) + 1
end
for name in pairs(calls) do T.ok(seen[name], "the call site of " .. name .. " names a registered point") end
T.ok(phases.create >= 10 and phases.destroy >= 6, ("points on both paths (%d create, %d destroy)"):format(phases.create, phases.destroy))

-- not armed here (the test runner sets no RIKLET_FAULT): every point lets its step run
T.ok(fault.check(), "fault.check() passes with no RIKLET_FAULT")
T.is(fault.point("record.save"), true, "an unarmed point returns true")
local ok, err = pcall(fault.point, "no.such.point")
T.ok(not ok and tostring(err):find("unknown fault point no.such.point", 1, true), "a call naming no registered point raises")

-- RIKLET_FAULT in a real riklet: a typo refuses to start; an armed point fails or kills
local exe = core.paths().exe
local tmp = ("/tmp/riklet-fault-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp .. "/m", "0700"))
local r = proc.run({ "env", "RIKLET_FAULT=record.sav:error", exe, "--standalone", tmp .. "/m", "--state-dir", tmp .. "/s",
  "--network", "none" }, { timeout = 30 })
T.ok(r and r.code ~= 0 and (r.stderr or ""):find("RIKLET_FAULT=record.sav:error: expected <point>", 1, true),
  "riklet refuses an unknown fault point")
r = proc.run({ "env", "RIKLET_FAULT=record.save:sometimes", exe, "--standalone", tmp .. "/m", "--state-dir", tmp .. "/s",
  "--network", "none" }, { timeout = 30 })
T.ok(r and r.code ~= 0 and (r.stderr or ""):find("expected <point>[:abort|:error]", 1, true), "and an unknown mode")
local lua_prog = tmp .. "/armed.lua"
fs.write_atomic(lua_prog, [[
local T = require "riklet.testlib"
local f = require "riklet.fault"
local ok, err = f.point("pod.mkdir")
T.is(err, "fault injected at pod.mkdir", "error mode: the step fails with the point's name")
T.ok(ok == nil, "and no success")
T.is(f.point("pod.rmdir"), true, "other points are not armed")
]])
r = proc.run({ "env", "RIKLET_FAULT=pod.mkdir:error", exe, "test", lua_prog }, { timeout = 30 })
if not T.ok(r and r.code == 0, "RIKLET_FAULT=pod.mkdir:error fails that step only") then T.diag(r and r.stdout) end
fs.write_atomic(lua_prog, 'require("riklet.fault").point("pod.mkdir") io.stdout:write("survived\\n")')
r = proc.run({ "env", "RIKLET_FAULT=pod.mkdir", exe, "test", lua_prog }, { timeout = 30 })
T.ok(r and r.signal == 9 and not (r.stdout or ""):find("survived", 1, true),
  "RIKLET_FAULT=pod.mkdir (abort by default) kills riklet with SIGKILL at the point: " .. proc.describe(r.code, r.signal))

-- stale temporary files of interrupted writes: only those of dead processes go
local store = require "riklet.store"
local dead = proc.spawn({ "true" })
local dead_pid = dead.pid
dead:wait()
local recs = tmp .. "/records"
assert(fs.mkdir_p(recs, "0700"))
for _, n in ipairs({ "a.json.tmp." .. dead_pid, "b.json.tmp." .. core.getpid(), "c.json", "d.json.tmp.x" }) do
  fs.write_atomic(recs .. "/" .. n, "{}")
end
store.remove_stale_tmp(recs, "")
local left = fs.list(recs)
table.sort(left)
T.is(table.concat(left, " "), "b.json.tmp." .. core.getpid() .. " c.json d.json.tmp.x",
  "remove_stale_tmp removes the write of a dead process, keeps a live one's and everything else")
fs.rm_rf(tmp)
