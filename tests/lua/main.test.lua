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
