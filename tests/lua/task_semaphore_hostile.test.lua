-- task_semaphore_hostile.test.lua (hostile) — the --runtime-parallel slot queue (riklet.task
-- semaphore, a heap keyed by the operation's rank) under what tries to break its promises:
--   1. 600 with_first calls of random ranks (ties, and operations not begun) arriving while the
--      queue drains: every slot goes to the lowest (rank, arrival) queued at that moment;
--   2. creates (with) against an endless stream of calls of operations under way: each create
--      waits for at most sem.share (4) of them, none starves;
--   3. a destroy's call (with_first) against a stream of creates: it goes next;
--   4. calls that raise (strings, tables, nil) while holding a slot, under contention: every slot
--      comes back, nothing is left queued, every waiter ran.
local T = require "riklet.testlib"
local task = require "riklet.task"

math.randomseed(tonumber(os.getenv("RK_SEED") or "") or os.time())
local NOT_BEGUN = 0x1p48

-- 1. heap order, with arrivals while it drains
do
  local sem = task.semaphore(1)
  local queued, seq, bad, granted, first_bad, expected = {}, 0, 0, 0, nil, nil
  local release = task.event()
  local function lowest(except)
    local m
    for o in pairs(queued) do
      if o ~= except and (not m or o.key < m.key or (o.key == m.key and o.seq < m.seq)) then m = o end
    end
    return m
  end
  task.spawn(function() sem:with_first(function() release:wait(10) expected = lowest() end) end)
  local function waiter(rank)
    seq = seq + 1
    local me = { key = rank or (NOT_BEGUN + seq), seq = seq }
    queued[me] = true
    task.spawn(function()
      task.charge_to({ rank = rank })
      sem:with_first(function()
        -- the slot was handed over as the last holder returned: to the lowest (key, arrival)
        -- queued at that moment (later arrivals may have come before this runs)
        if expected and expected ~= me then
          bad = bad + 1
          first_bad = first_bad or ("granted key %s #%d, the lowest queued was key %s #%d"):format(me.key, me.seq,
            expected.key, expected.seq)
        end
        queued[me] = nil
        granted = granted + 1
        if math.random() < 0.3 then task.yield() end
        expected = lowest(me)
      end)
    end)
  end
  local function some(n)
    for _ = 1, n do waiter(math.random() < 0.25 and nil or math.random(1, 40)) end
  end
  some(300)
  release:set()
  for _ = 1, 30 do -- 300 more, 10 at a time, while the queue drains
    task.yield()
    some(10)
  end
  T.wait_for(20, function() return granted == 600 end)
  T.is(granted, 600, "600 with_first calls of random ranks: all served")
  T.is(bad, 0, "each slot went to the lowest (rank, arrival) queued then" .. (first_bad and (": " .. first_bad) or ""))
  T.ok(T.wait_for(5, function() return sem.held == 0 end), "no slot held after")
end

-- 2. creates against an endless stream of calls of operations under way
do
  local sem = task.semaphore(1)
  local log, stop, creates_done = {}, false, 0
  task.charge_to({}) -- (the main task's own account: unused)
  -- 8 operations under way, each making call after call until told to stop
  for i = 1, 8 do
    task.spawn(function()
      task.charge_to({ rank = i })
      while not stop do sem:with_first(function() log[#log + 1] = "d" task.yield() end) end
    end)
  end
  task.yield()
  log[#log + 1] = "|" -- the creates arrive
  for i = 1, 10 do
    task.spawn(function()
      sem:with(function() log[#log + 1] = "c" .. i creates_done = creates_done + 1 end)
    end)
  end
  T.wait_for(20, function() return creates_done == 10 end)
  stop = true
  T.is(creates_done, 10, "10 creates against an endless stream of calls under way: all served")
  -- (the first run may hold one more: the slot handed over before the creates came)
  local run, worst, first, seen = 0, 0, nil, false
  for _, e in ipairs(log) do
    if e == "|" then seen = true
    elseif seen and e == "d" then run = run + 1
    elseif seen then
      if first then worst = math.max(worst, run) else first = run end
      run = 0
    end
  end
  T.ok(first and first <= 5 and worst <= 4,
    ("never more than 4 calls under way in a row while a create waited (first %s, then at most %d)"):format(first, worst))
  local order = {}
  for _, e in ipairs(log) do if e ~= "d" and e ~= "|" then order[#order + 1] = e end end
  T.is(table.concat(order, ","), "c1,c2,c3,c4,c5,c6,c7,c8,c9,c10", "creates in arrival order")
  T.wait_for(10, function() return sem.held == 0 and sem.first:len() == 0 end)
end

-- 3. a destroy's call against a stream of creates: it goes next
do
  local sem = task.semaphore(1)
  local log = {}
  local release = task.event()
  task.spawn(function() sem:with(function() release:wait(10) end) end)
  for i = 1, 100 do task.spawn(function() sem:with(function() log[#log + 1] = "c" .. i end) end) end
  task.spawn(function() task.charge_to({}) sem:with_first(function() log[#log + 1] = "destroy" end) end)
  release:set()
  T.wait_for(10, function() return #log == 101 end)
  T.is(log[1], "destroy", "a destroy's first call queued behind 100 creates goes next")
end

-- 4. calls that raise while holding a slot, under contention
do
  local sem = task.semaphore(2)
  local ran, raised, caught = 0, 0, 0
  local errs = { "boom", { code = 1 }, false }
  for i = 1, 200 do
    task.spawn(function()
      if i % 3 == 0 then task.charge_to({ rank = i % 7 == 0 and nil or i }) end
      local call = i % 2 == 0 and sem.with or sem.with_first
      local ok, e = pcall(call, sem, function()
        ran = ran + 1
        if i % 4 == 0 then task.yield() end
        if i % 5 == 0 then
          raised = raised + 1
          error(errs[i % 3 + 1], 0)
        end
      end)
      if not ok then
        caught = caught + 1
        if e ~= errs[i % 3 + 1] then T.diag(("call %d raised %s, got back %s"):format(i, tostring(errs[i % 3 + 1]), tostring(e))) end
      end
    end)
  end
  T.wait_for(20, function() return ran == 200 end)
  T.is(ran, 200, "200 calls (40 raising) on 2 slots: all ran")
  T.is(caught, raised, "each raise came back to its caller")
  T.is(sem.held .. "/" .. sem.first:len() .. "/" .. sem.waiting:len(), "0/0/0", "every slot back, nothing queued")
  local after = false
  sem:with(function() after = true end)
  T.ok(after, "the semaphore serves on")
end

T.done()
