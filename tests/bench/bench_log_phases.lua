-- bench_log_phases.lua — what a create's phase line costs when the log level is above debug:
-- formatted and handed to core.log, which drops it (before), against the log-level check alone
-- (now: riklet.lifecycle formats it only when it will be logged). Rounds interleaved, load printed.
--   build/riklet test tests/bench/bench_log_phases.lua      (N=20000 ROUNDS=5 in the environment)
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local L = require "riklet.lifecycle"

local N, ROUNDS = tonumber(os.getenv("N")) or 20000, tonumber(os.getenv("ROUNDS")) or 5
core.log_setup("info", false)
local t = core.time()
local inst = { id = "bench-0123456789", synced_at = t + 0.004 }
local ph = { seen = t, creating = t + 0.001, booted = t + 0.0001, decoded = t + 0.0012, policy = t + 0.003,
  admitted = t + 0.003, driver = t + 0.0031, created = t + 0.05 }

local function before()
  for _ = 1, N do core.log("debug", "lifecycle", L.phases_line(inst, ph, core.time())) end
end
local function now()
  for _ = 1, N do
    if core.log_enabled("debug") then core.log("debug", "lifecycle", L.phases_line(inst, ph, core.time())) end
  end
end
local function timed(fn)
  collectgarbage()
  local c0 = core.now()
  fn()
  return (core.now() - c0) / N * 1e6
end

local a, b = {}, {}
for r = 1, ROUNDS do
  a[r], b[r] = timed(before), timed(now)
end
table.sort(a) table.sort(b)
local mid = math.floor((ROUNDS + 1) / 2)
local load = (fs.read("/proc/loadavg", 64) or "?"):match("^(%S+ %S+ %S+)")
T.diag(("phase line per create at log level info, median of %d rounds of %d: formatted and dropped %.2f us, "
  .. "level check only %.3f us: %.2f us saved per create (load %s)"):format(ROUNDS, N, a[mid],
  b[mid], a[mid] - b[mid], load))
T.ok(b[mid] < a[mid], "the level check costs less than the formatting it saves")
