-- task.semaphore: at most n holders at once, waiters served in arrival order (with_first ones
-- first, an operation under way before the others, new work not starved), a slot released
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

-- with_first: the calls of an operation under way (an account with a call that got a slot) go
-- before those of operations not begun, oldest first; the others in arrival order. Three
-- operations of two calls each, behind one slot: A's second call goes before C's first.
local ops = task.semaphore(1)
local trace = {}
task.spawn(function() ops:with_first(function() task.sleep(0.05) end) end)
for _, name in ipairs({ "A", "B", "C" }) do
  task.spawn(function()
    task.charge_to({})
    for k = 1, 2 do ops:with_first(function() trace[#trace + 1] = name .. k task.sleep(0.005) end) end
  end)
end
T.wait_for(10, function() return #trace == 6 end)
-- (each second call is queued only once its first returned: B1 had the slot handed over by then)
T.is(table.concat(trace, ","), "A1,B1,A2,B2,C1,C2", "an operation under way goes before one not begun (FIFO: A1,B1,C1,A2,B2,C2)")
-- an account whose rank is cleared (a new lifecycle step) is a new operation, behind the others
local acct_old = {}
local late = {}
local ready = task.event()
task.spawn(function() ops:with_first(function() ready:wait(5) task.sleep(0.02) end) end)
task.spawn(function() task.charge_to({}) ops:with_first(function() late[#late + 1] = "other" end) end)
task.spawn(function()
  task.charge_to(acct_old)
  acct_old.rank = 1 -- an old operation still under way
  ops:with_first(function() late[#late + 1] = "old" end)
end)
ready:set()
T.wait_for(10, function() return #late == 2 end)
T.is(table.concat(late, ","), "old,other", "a rank given earlier goes before a call not begun queued before it")

-- new work (with) is not starved by a stream of with_first work: served after at most sem.share
local fair = task.semaphore(1)
local fo = {}
task.spawn(function() fair:with(function() task.sleep(0.05) end) end)
task.spawn(function() fair:with(function() fo[#fo + 1] = "create" end) end)
for i = 1, 6 do task.spawn(function() fair:with_first(function() fo[#fo + 1] = "f" .. i task.sleep(0.002) end) end) end
T.wait_for(10, function() return #fo == 7 end)
T.is(table.concat(fo, ","), "f1,f2,f3,f4,create,f5,f6", "a create waiting gets the slot after 4 with_first calls in a row")

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

-- a slot handed over while many tasks are ready (the loop's budget paces them: 150 tasks of
-- 3 ms steps, ~0.45 s per pass) goes to its next holder in the next turn, ahead of them: the slot
-- of an external resource (a runc process) is not left idle meanwhile (before: the next holder
-- waited for a whole pass), nor are the holder's own waits (task_core.set_first)
do
  local core = require "riklet.core"
  local s1, hold = task.semaphore(1), task.event()
  local released_at, got_at
  task.spawn(function() s1:with(function() hold:wait() released_at = core.now() end) end)
  local slept
  task.spawn(function() s1:with(function()
    got_at = core.now()
    task.sleep(0.01) -- (a holder's wait: e.g. its runc process)
    slept = core.now() - got_at
  end) end)
  local busy = T.busy_tasks(150)
  task.sleep(0.05)
  hold:set()
  T.wait_for(30, function() return slept ~= nil and busy.left == 0 end)
  T.ok(got_at and released_at and got_at - released_at < 0.15,
    ("a slot handed over while 150 tasks were ready: its next holder ran %.1f ms after the release (load %s)")
    :format(((got_at or 0) - (released_at or 0)) * 1000, (require("riklet.fs").read("/proc/loadavg", 64) or "?"):match("^(%S+)")))
  T.ok(slept and slept < 0.15, ("and its 10 ms sleep, holding the slot, took %.1f ms"):format((slept or 0) * 1000))
end
