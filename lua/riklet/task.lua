-- riklet.task — cooperative tasks on the event loop: spawn, sleep, queues, events.
-- Every wait yields the calling task; the loop resumes it. Errors in a task are logged with a
-- traceback and never stop the agent.
local core = require "riklet.task_core"

local task = {}

-- Accounts of the time tasks spent waiting for a semaphore slot (the --runtime-parallel queue), so
-- that a lifecycle step's deadline counts its work, not its turn: a task charges its waits to the
-- account it was given (task.charge_to), and so do the tasks it spawns.
local accounts = setmetatable({}, { __mode = "k" })
local now = require("riklet.core").now

-- task.spawn(fn, ...) — run fn(...) as a new task (now, until it first waits).
function task.spawn(fn, ...)
  local a = accounts[coroutine.running() or 0]
  if not a then return core.spawn(fn, ...) end
  return core.spawn(function(...)
    accounts[coroutine.running()] = a
    return fn(...)
  end, ...)
end

-- task.charge_to(acct) — charge the slot waits of the calling task (and of the tasks it spawns
-- from now on) to acct, a table; task.waited(acct) -> seconds waited so far (a wait in progress
-- included; overlapping waits of several tasks count once).
function task.charge_to(acct)
  acct.waited, acct.waiting = acct.waited or 0, acct.waiting or 0
  local co = coroutine.running()
  if co then accounts[co] = acct end
end

function task.waited(acct)
  if not acct or not acct.waited then return 0 end
  return acct.waited + ((acct.waiting or 0) > 0 and now() - acct.since or 0)
end

-- task.in_task() -> boolean
task.in_task = core.in_task

-- task.sleep(seconds)
function task.sleep(s)
  local tok = core.prepare()
  core.wake_after(tok, (s or 0) * 1000)
  core.suspend(tok)
end

-- task.yield() — let other ready work run first.
function task.yield()
  task.sleep(0)
end

-- task.set_first(on) -> what it was. While on, the calling task's resumes (an fd, a process's
-- exit, a wake, a timeout) go ahead of the task resumes a loop turn's budget paces
-- (task_core.set_first; raises outside a task). For a task that answers an outside event others
-- wait on: a container's exit monitor.
task.set_first = core.set_first

-- task.pace() — for a long loop in a task (a scan of 1,000 manifests, a full collection in
-- steps): once the current loop turn has used its budget (20 ms, core/loop.h RK_LOOP_BUDGET_MS),
-- yield, so that fds, timers and the other ready tasks are served before the loop goes on. Outside
-- a task (nothing can wait there) it does nothing. -> true when it yielded.
function task.pace()
  if core.over_budget() and core.in_task() then
    task.yield()
    return true
  end
  return false
end

-- task.collect([max_seconds]) -> steps: a full collection (the cycle under way ended, then a whole
-- one: what collectgarbage("collect") does) in steps of 64 KiB between which the loop serves others
-- (task.pace): after a burst of 1,000 Pods one collect held the loop for 7.0 s at load 8-16. A
-- cycle's end is seen wherever it happens: the finalizer of a proxy unreachable from the start runs
-- at the end of the first cycle that finds it unmarked, also one that ended in another task's
-- allocation between two steps (a step returns true only when the cycle ended in that call: going
-- by that, while other tasks allocate, the steps could start cycle after cycle until max_seconds,
-- 60 by default, every turn's leftover budget spent in the collector: tests/lua/core.test.lua).
local GC_STEP_KB = 64
function task.collect(max_seconds)
  local deadline, steps = now() + (max_seconds or 60), 0
  for _ = 1, 2 do
    local cycle = { ended = false }
    getmetatable(newproxy(true)).__gc = function() cycle.ended = true end
    repeat
      collectgarbage("step", GC_STEP_KB)
      steps = steps + 1
      if not cycle.ended then task.pace() end
    until cycle.ended or now() > deadline
  end
  return steps
end

-- Wait in a list of waiters until woken (-> the value) or timeout seconds pass (-> nil, "timeout").
local function wait_in(waiters, timeout)
  local tok = core.prepare()
  waiters[#waiters + 1] = tok
  if timeout then core.wake_after(tok, timeout * 1000, nil, "timeout") end
  local v, err = core.suspend(tok)
  for i, t in ipairs(waiters) do
    if t == tok then table.remove(waiters, i) break end
  end
  return v, err
end

-- A FIFO queue between tasks. q:put(v) never waits; q:get([timeout]) waits for an item and
-- returns it, or nil, "timeout".
local Queue = {}
Queue.__index = Queue

function task.queue()
  return setmetatable({ items = {}, head = 1, tail = 0, waiters = {} }, Queue)
end

function Queue:put(v)
  assert(v ~= nil, "queue: cannot put nil")
  while #self.waiters > 0 do
    local tok = table.remove(self.waiters, 1)
    if core.wake(tok, v) then return end
  end
  self.tail = self.tail + 1
  self.items[self.tail] = v
end

function Queue:len()
  return self.tail - self.head + 1
end

function Queue:get(timeout)
  if self.head <= self.tail then
    local v = self.items[self.head]
    self.items[self.head] = nil
    self.head = self.head + 1
    return v
  end
  return wait_in(self.waiters, timeout)
end

-- An event: set once, waited for by any number of tasks. ev:wait([timeout]) -> value | nil, "timeout"
local Event = {}
Event.__index = Event

function task.event()
  return setmetatable({ waiters = {}, is_set = false }, Event)
end

-- (ev.first = true: its waiters resume ahead of the task resumes a loop turn's budget paces:
-- task_core.wake_first)
function Event:set(v)
  if self.is_set then return end
  self.is_set, self.value = true, (v == nil and true or v)
  local waiters = self.waiters
  local wake = self.first and core.wake_first or core.wake
  self.waiters = {}
  for _, tok in ipairs(waiters) do wake(tok, self.value) end
  -- emptied: each woken waiter looks for its token in this list (wait_in) and finds none; left
  -- full, each found its own first and table.remove shifted the rest: O(n^2) at one set (the
  -- 1,000 adoptions waiting for their batch's commit)
  for i = #waiters, 1, -1 do waiters[i] = nil end
  local cbs = self.callbacks
  if cbs then
    self.callbacks = nil
    local err
    for _, fn in ipairs(cbs) do
      local ok, e = xpcall(fn, debug.traceback, self.value)
      if not ok and not err then err = e end
    end
    if err then error(err, 0) end
  end
end

function Event:wait(timeout)
  if self.is_set then return self.value end
  return wait_in(self.waiters, timeout)
end

-- ev:on_set(fn) — fn(value) once the event is set (at once if it is): in the task that sets it,
-- after its waiters are woken, instead of a task spawned only to wait for it (one per container
-- of 1,000 Pods, each with its own stack). fn must not wait; an error in it is raised to the
-- setter after every fn ran.
function Event:on_set(fn)
  if self.is_set then return fn(self.value) end
  local cbs = self.callbacks
  if not cbs then cbs = {} self.callbacks = cbs end
  cbs[#cbs + 1] = fn
end

-- A mutex keyed by name: task.with_lock(key, fn, ...) runs fn while holding the lock, so that
-- concurrent work on the same key (an image digest, an instance id) is serialised.
local locks = {}
local function pack(...) return { n = select("#", ...), ... } end
function task.with_lock(key, fn, ...)
  while locks[key] do locks[key]:wait() end
  local ev = task.event()
  locks[key] = ev
  local res = pack(pcall(fn, ...))
  locks[key] = nil
  ev:set()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

-- task.ticket() -> a number larger than every one given before (the order in which operations
-- began, for a semaphore's with_first queue)
local tickets = 0
function task.ticket()
  tickets = tickets + 1
  return tickets
end

-- A queue of waiters served lowest key first (equal keys: arrival order), a binary heap.
local Heap = {}
Heap.__index = Heap
local function heap() return setmetatable({ n = 0, seq = 0 }, Heap) end
local function before(a, b) return a.key < b.key or (a.key == b.key and a.seq < b.seq) end
function Heap:len() return self.n end
function Heap:put(v, key)
  self.seq = self.seq + 1
  local e, i = { v = v, key = key, seq = self.seq }, self.n + 1
  self.n = i
  while i > 1 do
    local p = math.floor(i / 2)
    if not before(e, self[p]) then break end
    self[i], i = self[p], p
  end
  self[i] = e
end
function Heap:get()
  local top, last = self[1], self[self.n]
  self[self.n] = nil
  self.n = self.n - 1
  local i, n = 1, self.n
  if n > 0 then
    while true do
      local c = 2 * i
      if c > n then break end
      if c < n and before(self[c + 1], self[c]) then c = c + 1 end
      if not before(self[c], last) then break end
      self[i], i = self[c], c
    end
    self[i] = last
  end
  return top.v
end

-- A counting semaphore: at most n holders at once. task.semaphore(n) -> sem; sem:with(fn, ...)
-- runs fn(...) holding one slot (released when fn returns or raises) and returns its results;
-- sem:with_first(fn, ...) the same, served before sem:with waiters (work already under way goes
-- ahead of new work). with waiters are served in arrival order. with_first ones: the calls of an
-- operation already under way first, oldest operation first, then the others in arrival order.
-- An operation is an account (task.charge_to: a lifecycle step, the tasks it spawns included); it
-- is under way from the moment one of its calls got a slot (acct.rank, a task.ticket(); the
-- lifecycle clears it when a step begins): with 1,000 Pods removed at once, the destroy that got
-- its first runc call in gets its kill, then its delete, before the next destroys begin, instead
-- of every Pod's kill going before any Pod's delete. So that new work is not starved by a long
-- stream of with_first work, a with waiter is served after at most sem.share (default 4)
-- with_first ones in a row. sem.n may be changed later (more slots are used at the next release).
local Sem = {}
Sem.__index = Sem

function task.semaphore(n)
  return setmetatable({ n = n, held = 0, share = 4, streak = 0, first = heap(), waiting = task.queue() }, Sem)
end

-- the queue whose waiter gets the next free slot
local function next_queue(self)
  if self.first:len() == 0 then return self.waiting end
  if self.waiting:len() > 0 and self.streak >= self.share then
    self.streak = 0
    return self.waiting
  end
  if self.waiting:len() > 0 then self.streak = self.streak + 1 end
  return self.first
end

-- with_first keys: a call of an operation under way, its rank; any other call, NOT_BEGUN plus a
-- ticket (after every rank)
local NOT_BEGUN = 0x1p48

local function sem_run(self, q, fn, ...)
  local a = accounts[coroutine.running() or 0]
  if self.held >= self.n or self.first:len() > 0 or (q == self.waiting and q:len() > 0) then
    local ev = task.event()
    -- the slot handed over is held from the release on: its next holder resumes ahead of the
    -- paced task resumes (1,000 creates ready at once would leave it idle meanwhile)
    ev.first = true
    q:put(ev, q == self.first and (a and a.rank or NOT_BEGUN + task.ticket()) or nil)
    if a then
      if a.waiting == 0 then a.since = now() end
      a.waiting = a.waiting + 1
    end
    ev:wait() -- the slot is handed over by the releasing task (held stays counted)
    if a then
      a.waiting = a.waiting - 1
      if a.waiting == 0 then a.waited = a.waited + (now() - a.since) end
    end
  else
    self.held = self.held + 1
  end
  if a and not a.rank then a.rank = task.ticket() end
  -- while it holds the slot, the task's resumes go ahead of the paced ones (its runc process
  -- ended: the slot is not held idle while 1,000 ready tasks go first)
  local was_first = core.in_task() and core.set_first(true)
  local res = pack(pcall(fn, ...))
  if core.in_task() then core.set_first(was_first) end
  self.held = self.held - 1
  while self.held < self.n and (self.first:len() > 0 or self.waiting:len() > 0) do
    self.held = self.held + 1
    next_queue(self):get():set(true)
  end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

function Sem:with(fn, ...) return sem_run(self, self.waiting, fn, ...) end
function Sem:with_first(fn, ...) return sem_run(self, self.first, fn, ...) end

return task
