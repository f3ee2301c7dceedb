-- riklet.agent — the instances of this node and their lifecycle state machine.
--
--   CREATING -> RUNNING -> (FAILED | TERMINATED), with DESTROYING on the way down.
-- Every transition is stored first, then reported to subscribers (front-ends).
-- One task per instance runs its lifecycle and reads its mailbox (exit and destroy messages);
-- an error inside it fails that instance, never the agent.
--
-- Front-end interface:
--   agent.create(id, definition_json, source) -> true | nil, err   (returns at once)
--   agent.replace(id, definition_json, source)                     (destroy, then create; while one
--                            is in flight, later creates/replaces only change what it creates and
--                            a destroy cancels it)
--   agent.destroy(id)                                              (returns at once)
--   agent.wait_gone(id[, timeout])                                 (waits for a destroy to finish)
--   agent.subscribe(fn)      fn(id, status, message) on every transition
--   agent.list() -> { {id=, name=, status=, message=, source=, definition=}, ... }
--   agent.get(id) -> the same for one instance, or nil
local core = require "riklet.core"
local task = require "riklet.task"
local json = require "riklet.json"
local fs = require "riklet.fs"
local store = require "riklet.store"
local policy = require "riklet.policy"

local agent = {}
local cfg
local instances = {}
local subscribers = {}
local drivers = {}
local booted = task.event() -- set once boot reconciliation is over: no create runs before

local ID_MAX = 64
local ENDED = { FAILED = true, TERMINATED = true }

local function log(level, fmt, ...) core.log(level, "agent", fmt:format(...)) end

local function traceback(m) return debug.traceback(tostring(m), 2) end

function agent.valid_id(id)
  return type(id) == "string" and fs.safe_name(id, ID_MAX)
end

local function notify(id, status, message)
  for _, fn in ipairs(subscribers) do
    local ok, err = xpcall(fn, traceback, id, status, message or "")
    if not ok then log("error", "a status subscriber failed on %s %s: %s", id, status, err) end
  end
end

local function set_status(inst, status, reason)
  local rec = inst.rec
  local from = rec.status
  rec.status, rec.reason = status, reason or ""
  if ENDED[status] then rec.ended_at = core.time() end
  local ok, err = store.save(rec)
  if not ok then log("error", "cannot store instance %s (%s): %s", inst.id, status, err) end
  local lvl = status == "FAILED" and "warn" or "info"
  log(lvl, "instance %s (%s %s): %s -> %s%s", inst.id, rec.kind or "?", rec.name or "?", from or "new",
    status, reason and reason ~= "" and (": " .. reason) or "")
  notify(inst.id, status, reason)
end

-- Keep at most cfg.keep_records ended records; forget the oldest. A destroy that failed keeps
-- its record: it names what is left to remove.
local function prune()
  local ended = {}
  for id, inst in pairs(instances) do
    if ENDED[inst.rec.status] and inst.gone.is_set and inst.rec.destroyed then ended[#ended + 1] = inst end
  end
  if #ended <= cfg.keep_records then return end
  table.sort(ended, function(a, b) return (a.rec.ended_at or 0) < (b.rec.ended_at or 0) end)
  for i = 1, #ended - cfg.keep_records do
    instances[ended[i].id] = nil
    local ok, err = store.remove(ended[i].id)
    if not ok then log("error", "cannot remove the record of destroyed instance %s: %s", ended[i].id, err) end
  end
end

local function decode_and_admit(definition)
  if type(definition) ~= "string" then return nil, "the workload definition is not a string" end
  if #definition > 1024 * 1024 then return nil, "the workload definition is larger than 1 MiB" end
  local w, err = json.decode(definition)
  if w == nil then return nil, "the workload definition is not valid JSON: " .. err end
  local image = require "riklet.image"
  local ctx = {
    null = json.null,
    parse_image = function(ref)
      local r, perr = image.parse_ref(ref)
      if not r then return nil, perr end
      return r
    end,
  }
  local admitted, reason = policy.call("admission", "admit", w, ctx)
  if not admitted then return nil, reason or "rejected by the admission policy" end
  return admitted
end

-- Release everything and report. keep_logs: after the workload ended on its own.
local function teardown(inst, how)
  local driver = inst.driver
  if not driver then return true end
  local ok, res, err = xpcall(driver[how], traceback, inst)
  if not ok then return nil, res end
  if not res then return nil, err end
  return true
end

local function on_exit(inst, msg)
  local rec = inst.rec
  local exited_all, failure = true, nil
  for _, c in ipairs(rec.containers or {}) do
    if c.name == msg.container then
      c.state, c.exit_code, c.exit_signal = "exited", msg.code, msg.signal
    end
    if c.state ~= "exited" then exited_all = false end
  end
  local ok_exit = msg.code == 0
  local decision = policy.call("restart", "decide", inst.workload,
    { container = msg.container, code = msg.code, signal = msg.signal }, inst.restarts or 0)
  if type(decision) == "table" and decision.action == "restart" and inst.driver.restart then
    inst.restarts = (inst.restarts or 0) + 1
    log("info", "instance %s: restarting container %s (attempt %d) after it %s", inst.id, msg.container,
      inst.restarts, msg.describe)
    task.sleep(tonumber(decision.delay) or 1)
    local rok, rerr = inst.driver.restart(inst, msg.container)
    if rok then store.save(rec) return end
    failure = ("container %s could not be restarted: %s"):format(msg.container, rerr)
  end
  if not ok_exit and not failure then
    failure = ("container %s %s"):format(msg.container, msg.describe)
  end
  if failure then
    set_status(inst, "FAILED", failure)
    local tok, terr = teardown(inst, "release")
    if not tok then log("error", "instance %s: cleaning up after the failure: %s", inst.id, terr) end
  elseif exited_all then
    set_status(inst, "TERMINATED", "all containers exited with code 0")
    local tok, terr = teardown(inst, "release")
    if not tok then log("error", "instance %s: cleaning up after it ended: %s", inst.id, terr) end
  else
    store.save(rec)
  end
end

local function do_destroy(inst)
  if inst.rec.status ~= "TERMINATED" or not inst.released then
    set_status(inst, "DESTROYING")
  end
  local ok, err = teardown(inst, "destroy")
  if not ok then
    set_status(inst, "FAILED", "could not clean up: " .. tostring(err))
  else
    inst.rec.destroyed = true
    set_status(inst, "TERMINATED", inst.rec.status == "DESTROYING" and "destroyed" or inst.rec.reason)
  end
  inst.gone:set(true)
  prune()
end

-- The instance's task: bring it up (unless adopted), then serve its mailbox.
local function lifecycle(inst, mode)
  if mode == "create" then
    set_status(inst, "CREATING")
    local w, err
    if inst.preset_error then err = inst.preset_error
    else w, err = decode_and_admit(inst.rec.definition) end
    local driver = w and drivers[w.kind]
    if w and not driver then
      err = ("kind %s is not supported by this node (no %s driver is loaded)"):format(w.kind, w.kind)
      w = nil
    end
    if w then
      inst.workload, inst.driver = w, driver
      inst.rec.kind, inst.rec.name = w.kind, w.name
      booted:wait()
      local ok, res, cerr = xpcall(driver.create, traceback, inst, w)
      if not ok or not res then
        err = ok and cerr or res
        local rok, rerr = teardown(inst, "destroy")
        if not rok then err = err .. " (and the rollback failed: " .. tostring(rerr) .. ")" end
        w = nil
      end
    end
    if inst.destroy_requested then
      -- a DESTROY arrived while creating: no RUNNING nor FAILED, the destroy in the mailbox
      -- (served below) reports DESTROYING then TERMINATED
      inst.released = not w
    elseif not w then
      set_status(inst, "FAILED", err)
      inst.released = true
    else
      set_status(inst, "RUNNING")
    end
  elseif mode == "adopt" then
    local w, aerr = decode_and_admit(inst.rec.definition)
    inst.workload = w
    -- the record lists the resources, so the driver can free them even without a workload
    inst.driver = drivers[w and w.kind or inst.rec.kind or "Pod"]
    if (not w or not inst.driver) and not ENDED[inst.rec.status] then
      -- cannot drive it any more (definition refused by a changed policy, driver gone)
      if inst.rec.status == "RUNNING" then
        set_status(inst, "FAILED", "cannot be re-adopted: " .. tostring(aerr or ("no " .. tostring(inst.rec.kind) .. " driver")))
        teardown(inst, "release")
        inst.released = true
      end
    end
    local st = inst.rec.status
    if st == "CREATING" then
      -- interrupted half-way: roll back and create again from the stored definition
      log("info", "instance %s was being created when riklet stopped: rolling back and creating it again", inst.id)
      teardown(inst, "destroy")
      inst.rec.containers, inst.rec.network = {}, nil
      inst.adopted:set(true)
      return lifecycle(inst, "create")
    elseif st == "RUNNING" then
      local ok, res, adopt_err = xpcall(inst.driver.adopt, traceback, inst)
      if ok and res then
        log("info", "instance %s re-adopted: %s", inst.id, res == true and "running" or tostring(res))
        notify(inst.id, "RUNNING", "")
      else
        local reason = ok and adopt_err or res
        set_status(inst, "FAILED", "lost while riklet was not running: " .. tostring(reason))
        teardown(inst, "release")
        inst.released = true
      end
    elseif st == "DESTROYING" then
      inst.mailbox:put({ type = "destroy" })
    elseif inst.rec.destroyed then
      inst.released = true
      inst.gone:set(true)
      inst.adopted:set(true)
      return
    else
      inst.released = true
    end
    inst.adopted:set(true)
  end
  while true do
    local msg = inst.mailbox:get()
    if msg.type == "destroy" then
      do_destroy(inst)
      return
    elseif msg.type == "exit" and inst.rec.status == "RUNNING" then
      on_exit(inst, msg)
      if ENDED[inst.rec.status] then inst.released = true end
    end
  end
end

local function new_instance(id, definition, source, rec)
  rec = rec or {
    id = id, definition = definition, source = source, created_at = core.time(),
    containers = {}, status = nil, reason = "",
  }
  return {
    id = id, rec = rec, mailbox = task.queue(), gone = task.event(), adopted = task.event(),
  }
end

-- agent.init(cfg, opts) — open the store, load drivers, re-adopt what the records say.
function agent.init(config)
  cfg = config
  local ok, err = store.open(config.paths.records)
  if not ok then return nil, err end
  if config.policy_dir then policy.set_dir(config.policy_dir) end
  for _, kind in ipairs({ "Pod", "Function" }) do
    local mod = kind == "Pod" and "riklet.pod" or "riklet.function"
    local found, drv = pcall(require, mod)
    if found then
      local iok, ierr = drv.init(config, agent)
      if iok then drivers[kind] = drv
      else log("warn", "%s driver disabled: %s", kind, tostring(ierr)) end
    elseif not tostring(drv):find("module '" .. mod .. "' not found", 1, true) then
      log("error", "cannot load the %s driver: %s", kind, tostring(drv))
    end
  end
  local recs, bad = store.list()
  for _, b in ipairs(bad or {}) do log("error", "%s (ignored)", b) end
  local adopting = {}
  for _, rec in ipairs(recs or {}) do
    local inst = new_instance(rec.id, rec.definition, rec.source, rec)
    rec.containers = rec.containers or {}
    instances[rec.id] = inst
    adopting[#adopting + 1] = inst
    task.spawn(lifecycle, inst, "adopt")
  end
  -- once every record is adopted, drivers remove what dead instances left behind (links, rules).
  -- Creates wait for this (booted): what a record names is live, anything else is a leftover, even
  -- when a new instance with the same id is waiting to be created.
  task.spawn(function()
    for _, inst in ipairs(adopting) do inst.adopted:wait() end
    local live, live_set = {}, {}
    for _, inst in ipairs(adopting) do
      if not inst.gone.is_set then live[#live + 1], live_set[inst.id] = inst.id, true end
    end
    local function is_live(id) return live_set[id] and agent.is_live(id) end
    for kind, drv in pairs(drivers) do
      if drv.reconcile then
        local rok, rerr = pcall(drv.reconcile, live, is_live)
        if not rok then log("error", "%s driver: reconciling leftovers failed: %s", kind, tostring(rerr)) end
      end
    end
    prune()
    booted:set(true)
  end)
  return true
end

function agent.subscribe(fn)
  subscribers[#subscribers + 1] = fn
end

-- Called by drivers when a container of an instance exits.
function agent.post(id, msg)
  local inst = instances[id]
  if inst then inst.mailbox:put(msg) end
end

-- Replacements in flight, by id: the latest definition wanted once the old instance is gone
-- ({definition=, source=, preset_error=}), or false when a destroy cancelled it. One replacer task
-- per id; creates and replaces that arrive meanwhile only update what it will create, so quick
-- successive edits end with the last one and a destroy is never undone by a late create.
local replacing = {}

function agent.create(id, definition, source, preset_error)
  if replacing[id] ~= nil then
    replacing[id] = { definition = definition, source = source, preset_error = preset_error }
    return true
  end
  if not agent.valid_id(id) then
    local shown = type(id) == "string" and (#id > 60 and (id:sub(1, 40) .. "...") or id) or tostring(id)
    local msg = ("instance id %q is not valid: use 1 to %d characters of letters, digits, '.', '_' and '-'"):format(shown, ID_MAX)
    log("error", "%s", msg)
    notify(tostring(id), "FAILED", msg)
    return nil, msg
  end
  local inst = instances[id]
  if inst and not inst.gone.is_set then
    if not ENDED[inst.rec.status] or inst.rec.definition == definition then
      log("info", "instance %s already exists (%s): CREATE ignored", id, inst.rec.status or "?")
      notify(id, inst.rec.status, inst.rec.reason)
      return true
    end
    -- an ended instance created again with a new definition: replace it
    return agent.replace(id, definition, source, preset_error)
  end
  inst = new_instance(id, definition, source)
  inst.preset_error = preset_error
  instances[id] = inst
  task.spawn(lifecycle, inst, "create")
  return true
end

-- Queue the destroy; a creation waiting on something slow (an image pull) stops waiting at once.
local function request_destroy(inst)
  if inst.destroy_requested then return end
  inst.destroy_requested = true
  inst.mailbox:put({ type = "destroy" })
  if inst.on_cancel then inst.on_cancel() end
end

-- Is a replacement of id in flight (old instance going, new one not created yet)?
function agent.replacing(id)
  return replacing[id] ~= nil and replacing[id] ~= false
end

function agent.destroy(id)
  local cancelled = agent.replacing(id)
  if replacing[id] then replacing[id] = false end
  local inst = instances[id]
  if cancelled and (not inst or inst.gone.is_set) then
    log("info", "instance %s: the pending replacement is cancelled by a destroy", id)
    return true
  end
  if not inst or inst.gone.is_set then
    log("info", "DESTROY for unknown instance %s: nothing to do, reporting TERMINATED", tostring(id))
    notify(tostring(id), "TERMINATED", "unknown instance")
    return true
  end
  request_destroy(inst)
  return true
end

function agent.wait_gone(id, timeout)
  local inst = instances[id]
  if not inst then return true end
  return inst.gone:wait(timeout)
end

function agent.replace(id, definition, source, preset_error)
  local inflight = replacing[id] ~= nil
  replacing[id] = { definition = definition, source = source, preset_error = preset_error }
  if inflight then return true end
  task.spawn(function()
    local inst = instances[id]
    if inst and not inst.gone.is_set then request_destroy(inst) end
    agent.wait_gone(id)
    if instances[id] and instances[id].gone.is_set then instances[id] = nil end
    local want = replacing[id]
    replacing[id] = nil
    if want then agent.create(id, want.definition, want.source, want.preset_error) end
  end)
  return true
end

local function view(inst)
  local r = inst.rec
  return {
    id = inst.id, name = r.name, kind = r.kind, status = r.status, message = r.reason,
    source = r.source, definition = r.definition, created_at = r.created_at, gone = inst.gone.is_set,
  }
end

-- Is id an instance riklet still owns (running or ended, not yet destroyed)?
function agent.is_live(id)
  local inst = instances[id]
  return inst ~= nil and not inst.gone.is_set
end

function agent.get(id)
  local inst = instances[id]
  return inst and view(inst)
end

function agent.list()
  local out = {}
  for _, inst in pairs(instances) do out[#out + 1] = view(inst) end
  table.sort(out, function(a, b) return (a.created_at or 0) < (b.created_at or 0) end)
  return out
end

-- Destroy every instance and wait (riklet cleanup).
function agent.destroy_all(timeout)
  local ids = {}
  for id, inst in pairs(instances) do
    if not inst.gone.is_set then ids[#ids + 1] = id agent.destroy(id) end
  end
  for _, id in ipairs(ids) do agent.wait_gone(id, timeout) end
  return #ids
end

function agent.instance(id) return instances[id] end
function agent.config() return cfg end

return agent
