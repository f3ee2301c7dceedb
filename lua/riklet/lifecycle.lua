-- riklet.lifecycle — the per-instance state machine, the driver registry, and the protected task
-- that runs one instance.
--
--   new -> CREATING -> RUNNING -> FAILED | TERMINATED, with DESTROYING on the way down
--   (L.TRANSITIONS is the whole table). Every transition goes through L.transition, which refuses
-- (and logs as a bug) one the table does not hold; an allowed one is stored, logged, then reported
-- to subscribers.
--
-- Drivers register by kind (L.register("Pod", driver)). A driver is a table of functions, each
-- given the instance (inst.id, inst.rec = the stored record, inst.workload = the validated model):
--   create(inst, w) -> true | nil, err     records what it makes in inst.rec as it goes
--   destroy(inst) -> true | nil, err       remove everything, idempotent
--   release(inst) -> true | nil, err       the workload ended: free runtime resources, keep logs
--   adopt(inst) -> true | description | nil, err, gone   after a riklet restart; gone only on
--                       positive evidence that the workload no longer runs (the instance goes
--                       FAILED "lost"); any other failure keeps it RUNNING and adoption is retried
--   restart(inst, unit) -> true | nil, err
--   on_exit(inst, msg) -> "running" | "TERMINATED" | "FAILED", reason, unit
--                       what an exit means for this kind (msg = {container=, code=, signal=,
--                       describe=}); unit = the exited unit's record (restart_count, attempt,
--                       started_at, finished_at, restart_at, state, reason), for the restart
--                       policy; a unit waiting to restart has state "waiting" and restart_at
--   optional: load(inst) (check what the record names before anything uses it),
--             timeout(step, inst) -> seconds (bound of a step), reconcile(live_ids, is_live)
-- The lifecycle knows no kind and looks inside no unit list. It stores the record once after every
-- step (the outcome, or what a failed step got done); a driver saves only progress within a step.
--
-- One task per instance (L.run): it brings the instance up (or adopts it), then serves its
-- mailbox ({type="destroy"}, {type="exit", ...} from drivers, {type="restart", unit=},
-- {type="readopt"}, {type="cleanup"}). Creates (an interrupted one redone at boot too) wait for
-- hooks.booted. Whatever raises inside it (driver, policy, restart) fails that instance with the
-- traceback, and the mailbox is still served. Every driver step runs with a deadline.
-- A clean-up that failed (a release, a destroy, a create's rollback) and a record of an ended
-- instance that could not be written are tried again while riklet runs, after 1 s, 2 s, 4 s ...
-- up to 5 min (L.RETRY_FIRST, L.RETRY_MAX), each failure and the final success logged; the
-- clean-up is the driver's own step again, with the checks it makes before removing anything.
local core = require "riklet.core"
local task = require "riklet.task"
local store = require "riklet.store"
local policy = require "riklet.policy"
-- riklet.workload on first use (a create, an adoption): an idle agent does not keep the validator's
-- code (riklet.drivers checks it at start and holds its file)
local workload = setmetatable({}, { __index = function(_, k) return require("riklet.workload")[k] end })

local L = {}

-- Retries of a failed clean-up or record write: the first after RETRY_FIRST s, then doubling, at
-- most RETRY_MAX s apart.
L.RETRY_FIRST, L.RETRY_MAX = 1, 300

L.TRANSITIONS = {
  new = { CREATING = true },
  -- CREATING -> CREATING: an interrupted creation rolled back and done again after a restart
  CREATING = { CREATING = true, RUNNING = true, FAILED = true, DESTROYING = true },
  RUNNING = { FAILED = true, TERMINATED = true, DESTROYING = true },
  FAILED = { DESTROYING = true },
  -- TERMINATED -> TERMINATED: an instance that ended on its own, now destroyed
  TERMINATED = { TERMINATED = true, DESTROYING = true },
  DESTROYING = { TERMINATED = true, FAILED = true },
}
L.ENDED = { FAILED = true, TERMINATED = true }

-- Restarts: a unit that ran this long starts its back-off over; no delay is longer than this.
L.RESTART_RESET_AFTER = 600
L.RESTART_DELAY_MAX = 3600

local drivers = {}
local subscribers = {}
local cfg = { stop_grace = 10, pull_timeout = 600 }
local hooks = {}

local function log(level, fmt, ...) core.log(level, "lifecycle", fmt:format(...)) end

local function traceback(m) return debug.traceback(tostring(m), 2) end

local function pack(...) return { n = select("#", ...), ... } end

-- L.configure(cfg, {on_gone = fn(inst), booted = event set once boot reconciliation is over})
function L.configure(config, h)
  cfg, hooks = config, h or {}
end

function L.register(kind, d)
  assert(type(kind) == "string" and type(d) == "table", "lifecycle.register(kind, driver)")
  for _, f in ipairs({ "create", "destroy", "release", "adopt", "restart", "on_exit" }) do
    assert(type(d[f]) == "function", ("driver %s has no function %s"):format(kind, f))
  end
  drivers[kind] = d
end

function L.driver(kind) return drivers[kind] end
function L.drivers() return drivers end

-- A driver loaded at the first instance of its kind (riklet.drivers): load() -> driver | nil, err,
-- run once by the first create that needs it (the others wait for it); a failure fails that
-- create with the reason, and the next one tries again.
local lazy = {}
function L.register_lazy(kind, load) lazy[kind] = { load = load } end

local function driver_for(kind)
  local l = kind and not drivers[kind] and lazy[kind]
  if not l then return drivers[kind] end
  if l.loading then
    l.loading:wait()
    return drivers[kind], l.err
  end
  l.loading = task.event()
  local ok, d, err = xpcall(l.load, traceback)
  if ok and d then
    L.register(kind, d)
    lazy[kind] = nil
    log("info", "%s driver loaded (first %s)", kind, kind)
  else
    l.err = ("the %s driver cannot start: %s"):format(kind, tostring(ok and err or d))
    log("error", "%s", l.err)
  end
  local ev = l.loading
  l.loading = nil
  ev:set(true)
  return drivers[kind], l.err
end

function L.subscribe(fn) subscribers[#subscribers + 1] = fn end

function L.notify(id, status, message)
  for _, fn in ipairs(subscribers) do
    local ok, err = xpcall(fn, traceback, id, status, message or "")
    if not ok then log("error", "a status subscriber failed on %s %s: %s", id, status, err) end
  end
end

local function retry_delay(attempt)
  return math.min(L.RETRY_MAX, L.RETRY_FIRST * 2 ^ math.min(attempt - 1, 30))
end

-- The record of an ended instance that could not be written (a full disk, a read-only or broken
-- records directory) is written again in the background until it is on disk: without it, the next
-- start would take the last one stored (RUNNING, DESTROYING) and act on that. One task per
-- instance; it writes the record as it is then. It stops once any save succeeds, or once the agent
-- dropped the instance (inst.dropped: its record pruned, or the instance replaced).
-- (the lifecycle's writes of a record and its retries one at a time, so that a retry that was
-- writing when a transition stored a newer record cannot land after it: store.save yields)
local function write(inst, durable)
  return task.with_lock("record " .. inst.id, store.save, inst.rec, durable)
end

local function retry_save(inst)
  if inst.save_retry then return end
  local r = { since = core.time(), attempt = 0 }
  inst.save_retry = r
  task.spawn(function()
    while inst.save_retry == r and not inst.dropped do
      r.attempt = r.attempt + 1
      local delay = retry_delay(r.attempt)
      log("error", "instance %s: its record (%s) is not on disk; writing it again in %g s (retry %d). Until then "
        .. "a restarted riklet would act on the last record stored: make %s writable (free space, permissions)",
        inst.id, tostring(inst.rec.status), delay, r.attempt, store.dir() or "the records directory")
      task.sleep(delay)
      if inst.save_retry ~= r or inst.dropped then return end
      local ok, err = write(inst, true)
      if ok then
        inst.save_retry = nil
        log("info", "instance %s: its record (%s) is on disk again, %.0f s after the write that failed (retry %d)",
          inst.id, tostring(inst.rec.status), core.time() - r.since, r.attempt)
        return
      end
      log("error", "cannot store instance %s (%s), retry %d: %s", inst.id, tostring(inst.rec.status), r.attempt, tostring(err))
    end
  end)
end

-- durable = false: no fsync (see L.transition)
local function save(inst, durable)
  local ok, err = write(inst, durable)
  if not ok then
    log("error", "cannot store instance %s (%s): %s", inst.id, tostring(inst.rec.status), err)
    if L.ENDED[inst.rec.status] then retry_save(inst) end
  elseif inst.save_retry and durable ~= false then
    log("info", "instance %s: its record (%s) is on disk again, %.0f s after the write that failed", inst.id,
      tostring(inst.rec.status), core.time() - inst.save_retry.since)
    inst.save_retry = nil
  end
  return ok
end

-- Wait for the record stored by a deferred transition (CREATING) to be durable; its status was
-- reported once it is. -> true | nil, err (the sync failed, or did not end within 120 s)
local DURABLE_WAIT = 120
function L.wait_durable(inst)
  local ev = inst.durable
  if not ev then return true end
  local r = ev:wait(DURABLE_WAIT)
  if not r then
    -- given up: the transition that follows (FAILED) does not wait again, and the sync, when it
    -- ends, reports nothing (its CREATING would come after that FAILED)
    if inst.durable == ev then inst.durable = nil end
    return nil, ("cannot store its record: it was not on disk after %d s (fsync)"):format(DURABLE_WAIT)
  end
  if not r[1] then return nil, "cannot store its record: " .. tostring(r[2]) end
  return true
end

-- L.transition(inst, to[, reason[, deferred]]) -> true | false (refused: not in the table)
-- deferred (CREATING): the record is written at once without fsync and made durable by a task
-- beside what follows (store.sync); the status is reported once it is durable, and the next
-- transition, as the driver before anything it makes outlives a crash (L.wait_durable), waits for it.
local transitions = 0
-- L.transitions() -> how many transitions were made since the start (riklet.cli trims the heap
-- once they stop: the end of a burst of creates, adoptions or destroys)
function L.transitions() return transitions end

function L.transition(inst, to, reason, deferred)
  transitions = transitions + 1
  if inst.durable and not deferred then L.wait_durable(inst) end
  local rec = inst.rec
  local from = rec.status or "new"
  if not (L.TRANSITIONS[from] and L.TRANSITIONS[from][to]) then
    log("error", "BUG: instance %s: transition %s -> %s is not in the lifecycle table; not stored (reason given: %s)\n%s",
      inst.id, from, to, tostring(reason or ""), debug.traceback("", 2))
    return false
  end
  rec.status, rec.reason = to, reason or ""
  if L.ENDED[to] then
    rec.ended_at = core.time()
    -- not freed until said so (release, destroy, a create rolled back): a riklet stopped before
    -- the release, or a release that failed, is released at the next start
    if rec.released == nil then rec.released = false end
  end
  -- CREATING -> RUNNING is written without fsync (the Pod start's last write): a crash of riklet
  -- keeps the page cache, and after a machine crash, which ends the containers too, the durable
  -- CREATING record makes the next start roll the instance back and create it again
  local saved = save(inst, not (from == "CREATING" and to == "RUNNING") and not deferred)
  -- an ended instance keeps what ps and reports need, not its definition nor its workload (the
  -- definition stays on disk, for store.same_definition)
  if L.ENDED[to] then inst.workload = nil store.forget_definition(rec)
  -- a running one keeps its workload (restarts, probes, the stop's grace period), and its
  -- definition only until it is on disk
  elseif to == "RUNNING" then store.forget_definition(rec, true) end
  log(to == "FAILED" and "warn" or "info", "instance %s (%s %s): %s -> %s%s", inst.id, rec.kind or "?",
    rec.name or "?", from, to, reason and reason ~= "" and (": " .. reason) or "")
  if not (deferred and saved) then
    inst.durable = nil
    L.notify(inst.id, to, reason)
    return true
  end
  local ev = task.event()
  inst.durable = ev
  task.spawn(function()
    local ok, err = store.sync(rec)
    inst.synced_at = core.time()
    if not ok then log("error", "cannot store instance %s (%s) on disk: %s", inst.id, to, tostring(err)) end
    if inst.durable == ev then L.notify(inst.id, to, reason) end -- (not after a later transition's report)
    ev:set({ ok == true, err })
  end)
  return true
end

-- Report the current status again with a new message (a restart), without a transition.
function L.report(inst, message)
  inst.rec.reason = message or ""
  save(inst)
  L.notify(inst.id, inst.rec.status, message)
end

-- Seconds a driver step may take before the lifecycle gives up waiting for it.
-- L.deadline(inst, step) -> seconds
local function deadline(inst, step)
  local d = inst.driver
  if d and d.timeout then
    local ok, s = pcall(d.timeout, step, inst)
    if ok and type(s) == "number" and s > 0 then return s end
  end
  if step == "create" then return (cfg.pull_timeout or 600) + 300 end
  return (inst.grace or cfg.stop_grace or 10) + 120
end

L.deadline = deadline

-- Run driver step `step` with a deadline. -> result, extra | nil, err, raised, gone. A step that
-- raises returns nil, traceback, true; one that overruns returns nil, "did not finish" (it may still
-- finish later: a task cannot be cancelled, only abandoned, which is logged); gone is the step's own
-- third result (adopt: positive evidence that the workload is gone).
-- The deadline counts the step's work, not its waits for a --runtime-parallel slot (riklet.task
-- accounts them): 1,000 Pods removed at once queue their runc calls, and the last ones' turn
-- came after the 182 s a destroy may take (997 of 1,001 went FAILED in bench_scale.sh).
-- The step is one operation for the slot queue: once one of its runc calls got a slot, its next
-- ones go before those of the steps that had none yet (riklet.task semaphore: with 1,000 Pods
-- removed at once, each destroy's kill then delete in turn, the first TERMINATED in seconds,
-- instead of every Pod's kill before any Pod's delete: the first after 154 s of a 457 s teardown).
local function step(inst, name, ...)
  local d = inst.driver
  if not d then return nil, "no driver" end
  local q = task.queue()
  local args = pack(...)
  local fn = d[name]
  inst.slot_waits = inst.slot_waits or {}
  local acct = inst.slot_waits
  acct.rank = nil -- under way (riklet.task) once one of this step's calls gets a slot
  local t0, w0 = core.now(), task.waited(acct)
  task.spawn(function()
    task.charge_to(acct)
    q:put(pack(xpcall(fn, traceback, inst, unpack(args, 1, args.n))))
  end)
  local secs = deadline(inst, name)
  local r
  repeat
    local left = t0 + secs + (task.waited(acct) - w0) - core.now()
    if left > 0 then r = q:get(left) end
  until r or left <= 0
  if not r then
    local queued = task.waited(acct) - w0
    local msg = ("%s step did not finish within %g s%s (riklet gave up waiting for it)"):format(name, secs,
      queued >= 1 and (", not counting %.0f s waiting for a runc slot (--runtime-parallel)"):format(queued) or "")
    log("error", "instance %s: the %s", inst.id, msg)
    return nil, msg
  end
  if not r[1] then return nil, "riklet internal error in the " .. name .. " step: " .. tostring(r[2]), true end
  if not r[2] then return nil, r[3] or ("the " .. name .. " step failed"), false, r[4] end
  return r[2], r[3]
end

-- ---- clean-up retries ------------------------------------------------------------------------
-- A clean-up that failed (what = "release": free what an ended instance held, keeping its logs;
-- "destroy": remove everything) is tried again by the instance's task ({type="cleanup"}) after a
-- back-off, while riklet runs; the next start tries it too. A later destroy request supersedes a
-- pending release (one generation at a time: a stale timer finds a newer gen and does nothing).
local function cleanup_failed(inst, what, err)
  local c = inst.cleanup or { attempts = 0, since = core.time(), gen = 0 }
  inst.cleanup = c
  c.what, c.attempts, c.gen = what, c.attempts + 1, c.gen + 1
  local gen, delay = c.gen, retry_delay(c.attempts)
  log("error", "instance %s (%s %s): %s (attempt %d): %s. What it still holds is left as it is; riklet tries "
    .. "again in %g s, then at doubling intervals up to %g s while it runs%s; if this keeps failing, fix what "
    .. "the error names (a busy mount, a network namespace in use, the xtables lock held by another program, "
    .. "runc failing)", inst.id, tostring(inst.rec.kind or "?"), tostring(inst.rec.name or "?"),
    what == "destroy" and "could not be destroyed" or "could not free what it held after it ended", c.attempts,
    tostring(err), delay, L.RETRY_MAX, what == "destroy"
      and " (not after a restart of riklet: then a new destroy of it does; it stays FAILED until one succeeds)"
      or ", and at its next start")
  task.spawn(function()
    task.sleep(delay)
    if inst.cleanup == c and c.gen == gen and not inst.gone.is_set then
      inst.mailbox:put({ type = "cleanup", gen = gen })
    end
  end)
end

local function cleanup_done(inst, what)
  local c = inst.cleanup
  if not c then return end
  inst.cleanup = nil
  log("info", "instance %s: %s done at last, after %d failed attempt%s over %.0f s", inst.id,
    what == "destroy" and "its destroy" or "freeing what it held", c.attempts, c.attempts > 1 and "s" or "",
    core.time() - c.since)
end

local function release(inst)
  local ok, err = step(inst, "release")
  if ok then inst.rec.released = true end
  save(inst) -- what was freed, even when not everything was
  inst.released = true
  if ok then cleanup_done(inst, "release") else cleanup_failed(inst, "release", err) end
  return ok, err
end

-- Fail the instance (when the table allows it from where it is) and free what it holds.
local function fail(inst, reason)
  if L.transition(inst, "FAILED", reason) then release(inst) end
end

-- ---- restarts --------------------------------------------------------------------------------

-- Ask the restart policy (plain data in and out). -> {action=, delay=} | nil, err
local function restart_decision(inst, unit, msg)
  local w = inst.workload
  if not w then return { action = "stop" } end
  local now = core.time()
  local ran = math.max(0, (unit.finished_at or now) - (unit.started_at or now))
  if ran >= L.RESTART_RESET_AFTER then unit.attempt = 0 end
  local d, err = policy.call("restart", "decide",
    { kind = w.kind, name = w.name, restart_policy = w.restart_policy },
    { container = msg.container, code = msg.code, signal = msg.signal, ran = ran,
      restart_count = unit.restart_count or 0, attempt = unit.attempt or 0 })
  if d == nil then return nil, err or "policy restart.decide returned nothing" end
  if type(d) ~= "table" or (d.action ~= "stop" and d.action ~= "restart") then
    return nil, "policy restart.decide must return {action = \"stop\"} or {action = \"restart\", delay = seconds}"
  end
  if d.action == "stop" then return { action = "stop" } end
  local delay = tonumber(d.delay) or 0
  if delay ~= delay or delay < 0 then delay = 0 end
  return { action = "restart", delay = math.min(delay, L.RESTART_DELAY_MAX) }
end

local function on_exit(inst, msg)
  local outcome, reason, unit = inst.driver.on_exit(inst, msg)
  if unit then
    local d, err = restart_decision(inst, unit, msg)
    if not d then return fail(inst, "restart policy: " .. tostring(err)) end
    if d.action == "restart" then
      unit.attempt = (unit.attempt or 0) + 1
      unit.state, unit.restart_at = "waiting", core.time() + d.delay
      unit.reason = ("%s; restarting in %g s"):format(tostring(msg.describe), d.delay)
      log("info", "instance %s: container %s %s: restarting it in %g s (restart %d)", inst.id,
        tostring(msg.container), tostring(msg.describe), d.delay, (unit.restart_count or 0) + 1)
      L.report(inst, ("container %s %s; restart %d in %g s"):format(tostring(msg.container),
        tostring(msg.describe), (unit.restart_count or 0) + 1, d.delay))
      local n = (unit.restart_count or 0) + 1
      task.spawn(function()
        task.sleep(d.delay)
        log("debug", "instance %s: container %s: its %g s back-off is over: restarting it (restart %d)", inst.id,
          tostring(msg.container), d.delay, n)
        inst.mailbox:put({ type = "restart", unit = msg.container })
      end)
      return
    end
  end
  if outcome == "FAILED" or outcome == "TERMINATED" then
    if L.transition(inst, outcome, reason) then release(inst) end
  elseif outcome == "running" then
    save(inst)
  else
    error(("driver %s: on_exit returned %s (expected running, TERMINATED or FAILED)"):format(
      tostring(inst.rec.kind), tostring(outcome)))
  end
end

local function on_restart(inst, msg)
  local ok, err = step(inst, "restart", msg.unit)
  if not ok then
    return fail(inst, ("container %s could not be restarted: %s"):format(tostring(msg.unit), tostring(err)))
  end
  L.report(inst, ("container %s restarted"):format(tostring(msg.unit)))
end

-- ---- create, adopt, destroy ------------------------------------------------------------------

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- The admission policy's verdict on a workload. admitted_by (third result): the policy's
-- fingerprint when it admitted the workload unchanged, kept in the record so that a re-adoption
-- does not ask it again while it stays the same (asked with 1,000 Pods, 1,000 sandbox calls).
local function admit_workload(w)
  local admitted, err = workload.admit(w)
  if not admitted then return nil, err end
  return admitted, nil, same(w, admitted) and policy.fingerprint("admission") or nil
end

-- (ph: the create's phase times, for its debug line)
local function admit(definition, source, ph)
  local w, err = workload.from_rik(definition)
  ph.decoded = core.time()
  if not w then return nil, err end
  local by
  w, err, by = admit_workload(w)
  ph.policy = core.time()
  if not w then return nil, err end
  w, err = workload.for_source(w, source)
  return w, err, by
end

-- The phases of a create that ended RUNNING, in ms, at debug level (tests/bench/bench_pods.sh
-- prints their medians): where a Pod start goes outside the driver's create. Formatted only when
-- it is logged (11 numbers: 5.8 us per create thrown away at load 8, tests/bench/bench_log_phases.lua).
function L.phases_line(inst, ph, t_end)
  local function ms(a, b) return a and b and ("%.2f"):format((b - a) * 1000) or "-" end
  return ("instance %s: start phases (ms): handed over -> CREATING stored %s (boot wait %s), decode + validation %s, "
    .. "admission policy %s, driver %s, create %s, RUNNING stored + reported %s; total %s; beside them: CREATING "
    .. "on disk (fsync) %s; handed over at %.6f, RUNNING at %.6f"):format(inst.id, ms(ph.seen, ph.creating),
    ms(ph.seen, ph.booted), ms(ph.creating, ph.decoded), ms(ph.decoded, ph.policy), ms(ph.admitted, ph.driver),
    ms(ph.driver, ph.created), ms(ph.created, t_end), ms(ph.seen, t_end), ms(ph.creating, inst.synced_at), ph.seen, t_end)
end
local function log_phases(inst, ph)
  if core.log_enabled("debug") then core.log("debug", "lifecycle", L.phases_line(inst, ph, core.time())) end
end

local function bind(inst, w)
  inst.workload = w
  inst.grace = w and w.grace_period or inst.rec.grace_period or cfg.stop_grace
end

local function create(inst)
  local rec = inst.rec
  local ph = { seen = inst.handed_over or core.time() }
  inst.handed_over, inst.synced_at = nil, nil
  if hooks.booted and not hooks.booted.is_set then
    -- what the boot clean-up removes is decided from the records: an instance adopted at boot
    -- (being re-created now) counts as adopted for it
    if inst.adopted then inst.adopted:set(true) end
    hooks.booted:wait()
  end
  ph.booted = core.time()
  -- durable beside the admission and (a driver with create_waits_durable) its preparation: a
  -- riklet crash keeps the page cache meanwhile; nothing that outlives a machine crash is made
  -- before it is durable (the driver's L.wait_durable, or the wait below)
  L.transition(inst, "CREATING", nil, true)
  ph.creating = core.time()
  local w, err, admitted_by
  if inst.preset_error then err = inst.preset_error
  else w, err, admitted_by = admit(rec.definition, rec.source, ph) end
  ph.admitted = core.time()
  -- 1,000 creates at once: each runs up to here in the turn that handed it over; the driver's
  -- preparation waits for a turn with budget left (issue 12: one turn ran them all, 31.9 s)
  task.pace()
  local d, lerr
  if w then d, lerr = driver_for(w.kind) end
  ph.driver = core.time()
  if w and not d then
    err = lerr or ("kind %s is not supported by this node (no %s driver is loaded)"):format(w.kind, w.kind)
    w = nil
  end
  if w then
    inst.driver = d
    bind(inst, w)
    rec.kind, rec.name, rec.grace_period, rec.restart_policy = w.kind, w.name, w.grace_period, w.restart_policy
    rec.admitted_by = admitted_by
    local ok, cerr = true, nil
    if not d.create_waits_durable then ok, cerr = L.wait_durable(inst) end
    if ok then ok, cerr = step(inst, "create", w) end
    ph.created = core.time()
    if not ok then
      err = cerr
      local rok, rerr = step(inst, "destroy")
      if not rok then
        err = err .. " (and the rollback failed: " .. tostring(rerr) .. ")"
        inst.rollback_err = rerr
      end
      rec.released = rok and true or false
      w = nil
    end
  end
  if inst.destroy_requested then
    -- a destroy arrived while creating: no RUNNING nor FAILED, the destroy in the mailbox
    -- (served next) reports DESTROYING then TERMINATED
    inst.released = not w
  elseif not w then
    if rec.released == nil then rec.released = true end
    inst.released = true
    L.transition(inst, "FAILED", err)
    -- a rollback that failed: what it left is freed as an ended instance's (release), retried
    if rec.released == false then cleanup_failed(inst, "release", "its rollback failed: " .. tostring(inst.rollback_err)) end
    inst.rollback_err = nil
  else
    L.transition(inst, "RUNNING")
    log_phases(inst, ph)
  end
end

-- The admission policy's verdicts given again by re-adoptions (its sources changed since), written
-- into the records once the boot is over (one task, paced): a record is written only at a
-- transition, so without this every later restart asked the policy again for every Pod (300 Pods:
-- 30 % of a plain restart's CPU, bench_scale.sh). Not fsync'd: a crash costs one more question each.
local verdicts
local function keep_verdict(inst)
  if verdicts then verdicts[#verdicts + 1] = inst return end
  verdicts = { inst }
  task.spawn(function()
    if hooks.booted and not hooks.booted.is_set then hooks.booted:wait() end
    local list = verdicts
    verdicts = nil
    for _, i in ipairs(list) do
      -- (an instance dropped meanwhile has no record to write back; one that left RUNNING was written)
      if not i.dropped and i.rec.status == "RUNNING" then save(i, false) end
      task.pace()
    end
  end)
end

local function adopt(inst)
  local rec = inst.rec
  -- validated again (a record is input too); the admission policy is asked again only when its
  -- sources changed since it admitted this workload unchanged (admitted_by). Its verdict is the
  -- one given at create otherwise, as between two restarts (one that depends on os.time is never
  -- re-asked on a schedule either); asking again could only warn. A running workload is not
  -- stopped because the policy changed since: it keeps running as it is, with a warning.
  local w, aerr = workload.from_rik(rec.definition)
  local fp = w and rec.admitted_by ~= nil and policy.fingerprint("admission")
  local verdict_changed
  if w and not (fp and fp == rec.admitted_by) then
    local admitted, perr, by = admit_workload(w)
    if admitted then
      verdict_changed = by ~= nil and by ~= rec.admitted_by
      w, rec.admitted_by = admitted, by
    elseif not L.ENDED[rec.status] and not rec.destroyed then
      log("warn", "instance %s: the admission policy now refuses it (%s); it keeps running as it was admitted "
        .. "(destroy it to apply the policy)", inst.id, tostring(perr))
    end
  end
  inst.driver = driver_for(w and w.kind or rec.kind or "Pod")
  bind(inst, w)
  local st = rec.status
  if not inst.driver then
    local reason = ("cannot be re-adopted: no %s driver is loaded"):format(tostring(rec.kind))
    if st == "RUNNING" then
      -- a missing driver is no evidence that the workload is gone
      log("error", "instance %s: no %s driver is loaded (see above why): it is left RUNNING, unmanaged, until a "
        .. "riklet that can drive it starts; what it holds is left as it is", inst.id, tostring(rec.kind or "Pod"))
      return
    end
    if not L.ENDED[st] and not rec.destroyed then L.transition(inst, "FAILED", reason) end
    log("error", "instance %s %s; what it holds is left as it is", inst.id, reason)
    inst.released = true
    return
  end
  if inst.driver.load then inst.driver.load(inst) end
  if st == "CREATING" then
    -- interrupted half-way: roll back and create again from the stored definition
    log("info", "instance %s was being created when riklet stopped: rolling back and creating it again", inst.id)
    local ok, err = step(inst, "destroy")
    if not ok then log("error", "instance %s: rolling back the interrupted creation: %s", inst.id, tostring(err)) end
    rec.containers, rec.network = {}, nil
    return create(inst)
  elseif st == "RUNNING" then
    if not w then
      fail(inst, "cannot be re-adopted: " .. tostring(aerr))
      return
    end
    L.try_adopt(inst)
    store.forget_definition(rec, true) -- (read from disk by the boot; inst.workload is what runs)
    if verdict_changed then keep_verdict(inst) end
  elseif st == "DESTROYING" then
    -- a destroy (or a stop) was in progress when riklet stopped: finish it
    log("info", "instance %s was being destroyed when riklet stopped: finishing the destroy", inst.id)
    inst.destroy_requested = true
    inst.mailbox:put({ type = "destroy" })
  elseif rec.destroyed then
    inst.released = true
    inst.gone:set(true)
  elseif L.ENDED[st] and rec.released == false then
    log("info", "instance %s ended but riklet stopped before everything it held was freed: freeing it now", inst.id)
    release(inst)
  else
    inst.released = true
  end
end

-- Re-adopt a RUNNING instance. Only positive evidence that it is gone (the driver's adopt returns
-- nil, err, true) fails it "lost"; an error raised in the driver fails it too (with the traceback).
-- riklet failing to check or write something (a full disk, runc failing, the step overrunning)
-- keeps it RUNNING, logged, and adoption is tried again later ({type="readopt"}, with back-off).
function L.try_adopt(inst)
  local res, err, raised, gone = step(inst, "adopt")
  if res then
    log("info", "instance %s re-adopted: %s", inst.id, res == true and "running" or tostring(res))
    inst.adopt_attempts = nil
    L.notify(inst.id, "RUNNING", inst.rec.reason)
  elseif raised or gone then
    inst.adopt_attempts = nil
    fail(inst, (raised and "could not be re-adopted: " or "lost while riklet was not running: ") .. tostring(err))
  else
    inst.adopt_attempts = (inst.adopt_attempts or 0) + 1
    local delay = math.min(60, 2 ^ inst.adopt_attempts)
    log("error", "instance %s: cannot re-adopt it yet (%s). That is no evidence that it is gone: it stays RUNNING; "
      .. "trying again in %ds", inst.id, tostring(err), delay)
    task.spawn(function()
      task.sleep(delay)
      inst.mailbox:put({ type = "readopt" })
    end)
  end
end

-- A retry of a failed destroy (cleanup_failed) keeps the instance as it is (FAILED, "could not clean
-- up: ...") while it fails, without a status report each time; once it succeeds it goes through
-- DESTROYING to TERMINATED, as a destroy does.
local function destroy(inst)
  local st = inst.rec.status
  local retry = inst.cleanup and inst.cleanup.what == "destroy" and not inst.destroy_requested and L.ENDED[st]
  if not retry and st ~= "DESTROYING" and (st ~= "TERMINATED" or not inst.released) then L.transition(inst, "DESTROYING") end
  local ok, err
  -- refused before any driver ran (invalid definition, unknown kind): nothing to clean up
  if not inst.driver and inst.rec.released == true then ok = true
  else ok, err = step(inst, "destroy") end
  local done = inst.destroy_done
  inst.destroy_done = nil
  inst.destroy_requested = false
  if not ok then
    -- (stored by the transition; a TERMINATED one not yet released cannot go FAILED: stored here,
    -- as is a retry's, which stays where it is)
    if retry or not L.transition(inst, "FAILED", "could not clean up: " .. tostring(err)) then
      if retry and inst.rec.status == "FAILED" then inst.rec.reason = "could not clean up: " .. tostring(err) end
      save(inst)
    end
    inst.released = false
    if done then done:set({ nil, "could not clean up: " .. tostring(err) }) end
    cleanup_failed(inst, "destroy", err)
    return
  end
  if retry then
    L.transition(inst, "DESTROYING", ("its clean-up, tried again, succeeded (attempt %d)"):format(inst.cleanup.attempts + 1))
  end
  cleanup_done(inst, "destroy")
  inst.rec.destroyed, inst.rec.released = true, true
  L.transition(inst, "TERMINATED", inst.rec.status == "DESTROYING" and "destroyed" or inst.rec.reason)
  inst.gone:set(true)
  if done then done:set({ true }) end
  if hooks.on_gone then hooks.on_gone(inst) end
end

local HANDLERS = {
  destroy = function(inst) destroy(inst) end,
  exit = function(inst, msg) if inst.rec.status == "RUNNING" then on_exit(inst, msg) end end,
  restart = function(inst, msg) if inst.rec.status == "RUNNING" then on_restart(inst, msg) end end,
  readopt = function(inst) if inst.rec.status == "RUNNING" and inst.adopt_attempts then L.try_adopt(inst) end end,
  -- a failed clean-up's retry (cleanup_failed), unless something newer took its place
  cleanup = function(inst, msg)
    local c = inst.cleanup
    if not c or c.gen ~= msg.gen then return end
    if c.what == "destroy" then destroy(inst)
    elseif L.ENDED[inst.rec.status] and inst.rec.released == false then release(inst)
    else inst.cleanup = nil end
  end,
}

-- An error raised in the task: the instance goes FAILED with the traceback (when it can from
-- where it is), and the task goes on serving the mailbox.
local function internal_error(inst, what, err)
  log("error", "instance %s: riklet internal error while %s: %s", inst.id, what, err)
  inst.destroy_requested = false
  if (inst.rec.status or "new") == "new" then L.transition(inst, "CREATING") end
  local st = inst.rec.status
  if L.TRANSITIONS[st] and L.TRANSITIONS[st].FAILED then
    fail(inst, ("riklet internal error while %s: %s"):format(what, err))
  end
  if inst.destroy_done then
    inst.destroy_done:set({ nil, "riklet internal error: " .. tostring(err) })
    inst.destroy_done = nil
  end
end

-- L.run(inst, mode) — the instance's task; mode "create" or "adopt".
function L.run(inst, mode)
  local ok, err = xpcall(mode == "adopt" and adopt or create, traceback, inst)
  if not ok then internal_error(inst, mode == "adopt" and "re-adopting it" or "creating it", err) end
  if inst.adopted then inst.adopted:set(true) end
  while not inst.gone.is_set do
    local msg = inst.mailbox:get()
    local h = HANDLERS[msg.type]
    if h then
      ok, err = xpcall(h, traceback, inst, msg)
      if not ok then internal_error(inst, "handling " .. tostring(msg.type), err) end
    else
      log("error", "instance %s: unknown message %s in its mailbox: ignored", inst.id, tostring(msg.type))
    end
  end
end

-- For a driver's create: nil, "destroyed while it was being created" once a destroy was requested.
function L.check_cancel(inst)
  if inst.destroy_requested then return nil, "destroyed while it was being created" end
  return true
end

-- For a driver's create: fn(...) -> value | nil, err, run in its own task; returns its result, or
-- nil, "destroyed..." as soon as the instance is destroyed (the work itself goes on: an image
-- pull or a rootfs download is shared and cached).
function L.unless_destroyed(inst, fn, ...)
  local q = task.queue()
  local args = { n = select("#", ...), ... }
  task.spawn(function()
    local ok, v, err = pcall(fn, unpack(args, 1, args.n))
    q:put({ ok and v or nil, ok and err or v })
  end)
  inst.on_cancel = function() q:put({ nil, "destroyed while it was being created" }) end
  local r = q:get()
  inst.on_cancel = nil
  return r[1], r[2]
end

return L
