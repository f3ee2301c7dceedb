-- riklet.main — the entry point run as the first task: parse the command line and dispatch.
local core = require "riklet.core"

local M = {}

local function run_test(file)
  local T = require "riklet.testlib"
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("riklet test: cannot load ", file, ": ", err, "\n")
    return 1
  end
  local ok, e = xpcall(chunk, function(m)
    if type(m) == "table" and m.skip_all then return m end
    return debug.traceback(tostring(m), 2)
  end)
  if not ok then
    if type(e) == "table" and e.skip_all then return 77 end
    io.stdout:write("not ok - test script died: ", tostring(e):gsub("\n", "\n# "), "\n")
    T.done()
    return 1
  end
  return T.done() and 0 or 1
end

-- LuaJIT's collector: a new cycle starts as soon as one ends (pause 100; LuaJIT's default 200 lets
-- the heap reach twice what is live first, and the pages it touched then stay resident). Measured
-- with tests/bench/bench_mem.sh, idle scheduler mode: anonymous memory -250 KiB; see the README's
-- Benchmarks for the CPU it costs. RIKLET_LUA_GC="PAUSE,STEPMUL" overrides it, for measurements.
local function tune_gc()
  local p, s = (os.getenv("RIKLET_LUA_GC") or ""):match("^(%d+),(%d+)$")
  collectgarbage("setpause", tonumber(p) or 100)
  collectgarbage("setstepmul", tonumber(s) or 200)
end

-- LuaJIT's trace compiler: a loop or function is compiled once it ran 1,000 times (LuaJIT's
-- default: 56), a side trace after 100 exits (10). riklet's code runs once per Pod create, a few
-- times per transition: with the defaults each of the first few dozen Pod starts compiled ~14
-- traces on its path (jit.v), 2-5 ms of the start (admission 2-5 ms, 0.1 once interpreted;
-- tests/bench/bench_pods.sh's phase line); loops that run thousands of times (1,000 Pods) are still
-- compiled. RIKLET_LUA_JIT="off" or "hotloop=N,..." (jit.opt.start's) overrides it, for measurements;
-- RIKLET_LUA_JIT_BOOT=SPEC is the setting until the boot's re-adoptions are over (M.jit_booted).
local JIT_DEFAULT = "hotloop=1000,hotexit=100"

local function set_jit(spec)
  if spec == "off" then jit.off() return end
  jit.on()
  local opts = {}
  for o in spec:gmatch("[^,%s]+") do opts[#opts + 1] = o end
  local ok, err = pcall(jit.opt.start, unpack(opts))
  if not ok then io.stderr:write("riklet: LuaJIT setting ", spec, " ignored: ", tostring(err), "\n") end
end

local function tune_jit() set_jit(os.getenv("RIKLET_LUA_JIT_BOOT") or os.getenv("RIKLET_LUA_JIT") or JIT_DEFAULT) end

-- the agent's boot is over (riklet.agent): the boot's own setting, when there is one, gives way
function M.jit_booted()
  if os.getenv("RIKLET_LUA_JIT_BOOT") then set_jit(os.getenv("RIKLET_LUA_JIT") or JIT_DEFAULT) end
end

function M.main()
  tune_gc()
  tune_jit()
  local args = core.args()
  local code
  if args[1] == "test" then
    if not args[2] then
      io.stderr:write("usage: riklet test FILE.lua\n")
      code = 2
    else
      code = run_test(args[2])
    end
  else
    -- an error raised here (a damaged installation, a bug) ends riklet with the traceback: the
    -- loop would otherwise idle on, serving nothing (a `riklet ps` hanging for ever)
    local ok, res = xpcall(function() return require("riklet.cli").main(args) end, debug.traceback)
    if not ok then
      io.stderr:write("riklet: internal error (exit 70): ", tostring(res), "\n")
      res = 70
    end
    code = res
  end
  if code ~= nil then core.exit(code) end
end

return M
