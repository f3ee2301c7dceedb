-- riklet's entry point: an error raised by a command (a damaged installation: a module that does
-- not load) ends riklet with exit 70 and the traceback, instead of leaving it idle in its loop.
local T = require "riklet.testlib"
local core = require "riklet.core"
local proc = require "riklet.proc"
local fs = require "riklet.fs"

local src = debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]+$") or "."
local tmp = ("/tmp/riklet-main-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(proc.run({ "cp", "-r", src .. "/lua", tmp }, { timeout = 30 }))
assert(fs.write_atomic(tmp .. "/riklet/store.lua", "local x = = 1\n"))
local t0 = core.now()
local r = assert(proc.run({ "env", "RIKLET_LUA_DIR=" .. tmp, core.paths().exe, "ps", "--state-dir", tmp .. "/state" },
  { timeout = 30 }))
T.is(r.code, 70, "riklet ps with a module that does not load exits 70 (it does not hang)")
T.ok(core.now() - t0 < 20, ("and at once (%.1f s)"):format(core.now() - t0))
T.like(r.stderr, "internal error .*riklet/store%.lua", "saying what failed, with the traceback")
fs.rm_rf(tmp)

-- the daemon's full collection + malloc_trim (riklet.cli trim_after_bursts): due when the heap moved
-- by a fifth since the last one, or once a period without transitions follows one with some (the
-- end of a burst: 1,000 Pods' start left a 13.2 MiB heap untouched, its base taken mid-burst)
do
  local trim_due = require("riklet.cli").trim_due
  local st = { base = 10000, seen = 0, busy = false }
  T.ok(not trim_due(st, 10500, 0), "trim: idle, heap within a fifth: not due")
  T.ok(not trim_due(st, 11000, 1000), "trim: instances changing state (a burst): not due while it goes on")
  T.ok(not trim_due(st, 11900, 2000), "trim: still going on")
  T.ok(trim_due(st, 11900, 2000), "trim: the first quiet period after it: due (heap within a fifth of the base)")
  T.ok(not trim_due(st, 11900, 2000), "trim: then not again while nothing changes")
  T.ok(trim_due(st, 12100, 2000), "trim: the heap a fifth over its base: due")
  T.ok(trim_due(st, 7900, 2000), "trim: a fifth under: due")
end
