-- task.semaphore: at most n holders at once, waiters served in arrival order (with_first ones
-- first), a slot released
-- when the function raises, more slots (sem.n raised) used at the next release; and runc.throttled
-- (the --runtime-parallel slots every runc command takes) the same.
local T = require "riklet.testlib"
local task = require "riklet.task"

local sem = task.semaphore(3)
local inside, most, order = 0, 0, {}
for i = 1, 12 do
  task.spawn(function()
    sem:with(function()
      inside = inside + 1
      most = math.max(most, inside)
      order[#order + 1] = i
      task.sleep(0.01 * (i % 4))
      inside = inside - 1
      if i == 5 then error("boom " .. i) end
    end)
  end)
end
-- task 5 raises: its error goes to its task (logged), its slot must come back
T.wait_for(10, function() return #order == 12 and inside == 0 end)
T.is(#order, 12, "all 12 ran (one raised inside, its slot came back)")
T.is(most, 3, "never more than 3 at once")
T.is(table.concat(order, ",", 1, 3), "1,2,3", "the first 3 went in at once")
local ok, err = pcall(sem.with, sem, function() error("inside") end)
T.ok(not ok and tostring(err):find("inside"), "an error in fn is raised to the caller: " .. tostring(err))
T.is(sem.held, 0, "and the slot is free again")
local a, b = sem:with(function(x, y) return x + 1, y end, 1, "two")
T.ok(a == 2 and b == "two", "fn's arguments in, results out")

-- arrival order with one slot
local one = task.semaphore(1)
local seq = {}
for i = 1, 6 do task.spawn(function() one:with(function() task.sleep(0.005) seq[#seq + 1] = i end) end) end
T.wait_for(10, function() return #seq == 6 end)
T.is(table.concat(seq, ","), "1,2,3,4,5,6", "waiters are served in arrival order")

-- with_first waiters go before with waiters (a start before the next create)
local pr = task.semaphore(1)
local got = {}
task.spawn(function() pr:with(function() task.sleep(0.05) got[#got + 1] = "holder" end) end)
for i = 1, 3 do task.spawn(function() pr:with(function() got[#got + 1] = "new" .. i end) end) end
task.spawn(function() pr:with_first(function() got[#got + 1] = "first" end) end)
T.wait_for(10, function() return #got == 5 end)
T.is(table.concat(got, ","), "holder,first,new1,new2,new3", "with_first is served before earlier with waiters")

-- raising n lets more in at the next release
local grow = task.semaphore(1)
local cur, peak, n = 0, 0, 0
for _ = 1, 6 do
  task.spawn(function()
    grow:with(function()
      cur = cur + 1 peak = math.max(peak, cur)
      task.sleep(0.05)
      cur = cur - 1 n = n + 1
    end)
  end)
end
grow.n = 3
T.wait_for(10, function() return n == 6 end)
T.is(peak, 3, "sem.n raised to 3: 3 at once after the first release")

-- runc.throttled shares the slots of every runc command
local runc = require "riklet.runc"
local fs = require "riklet.fs"
local rroot = os.tmpname()
fs.unlink(rroot)
local iok, ierr = runc.init({ runc_root = rroot, runtime_parallel = 2 })
T.ok(iok, "runc.init: " .. tostring(ierr))
local rin, rmost, rdone = 0, 0, 0
for _ = 1, 5 do
  task.spawn(function()
    runc.throttled(function() rin = rin + 1 rmost = math.max(rmost, rin) task.sleep(0.02) rin = rin - 1 end)
    rdone = rdone + 1
  end)
end
T.wait_for(10, function() return rdone == 5 end)
T.is(rmost, 2, "--runtime-parallel 2: at most 2 throttled runs at once")
fs.rm_rf(rroot)
