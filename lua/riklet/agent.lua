-- riklet.agent — the instances of this node, as the front-ends see them.
--
-- The state machine, the driver registry and the task of each instance are riklet.lifecycle;
-- this module keeps the instances by id and is the front-end interface:
--   agent.create(id, definition_json, source) -> true | nil, err   (returns at once)
--   agent.replace(id, definition_json, source)                     (destroy, then create; while one
--                            is in flight, later creates/replaces only change what it creates and
--                            a destroy cancels it)
--   agent.destroy(id)                                              (returns at once)
--   agent.wait_gone(id[, timeout]) -> true | nil, err              (waits for a destroy to end;
--                            always bounded: default the driver's destroy deadline + 30 s)
--   agent.subscribe(fn)      fn(id, status, message) on every transition and restart
--   agent.list() -> { {id=, name=, status=, message=, source=, definition=, containers=}, ... }
--   agent.get(id) -> the same for one instance, or nil
--   agent.count(), agent.records()   instances not gone; every record (see below)
--   agent.post(id, msg)      drivers: {type="exit", container=, code=, signal=, describe=}
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local json = require "riklet.json"
local store = require "riklet.store"
local policy = require "riklet.policy"
local lifecycle = require "riklet.lifecycle"
local limits = require "riklet.limits"
local drivers = require "riklet.drivers"

local agent = {}
local cfg
local instances = {}
-- set once the boot clean-up is over; every create waits for it (riklet.lifecycle), since the
-- clean-up removes what no record names and would take a Pod created meanwhile for a leftover
local booted = task.event()

local ID_MAX = 64
local ENDED = lifecycle.ENDED

local function log(level, fmt, ...) core.log(level, "agent", fmt:format(...)) end

function agent.valid_id(id)
  return type(id) == "string" and fs.safe_name(id, ID_MAX)
end

-- Keep at most cfg.keep_records ended records; forget the oldest.
local function prune()
  local ended = {}
  for _, inst in pairs(instances) do
    -- a destroy that failed keeps its record: it names what is left to remove
    if ENDED[inst.rec.status] and inst.gone.is_set and inst.rec.destroyed then ended[#ended + 1] = inst end
  end
  if #ended <= cfg.keep_records then return end
  table.sort(ended, function(a, b) return (a.rec.ended_at or 0) < (b.rec.ended_at or 0) end)
  for i = 1, #ended - cfg.keep_records do
    instances[ended[i].id] = nil
    ended[i].dropped = true -- (a retry of its record's write stops: lifecycle.retry_save)
    local ok, err = store.remove(ended[i].id)
    if not ok then log("error", "cannot remove the record of destroyed instance %s: %s", ended[i].id, err) end
  end
end

local function new_instance(id, definition, source, rec)
  rec = rec or {
    id = id, definition = definition, source = source, created_at = core.time(),
    containers = {}, status = nil, reason = "",
  }
  -- (adopted: only for the boot's re-adoptions, which the boot waits for; let go once it is over)
  return {
    id = id, rec = rec, mailbox = task.queue(), gone = task.event(),
  }
end

-- Whether this node holds anything a driver adopts or cleans up at start: records, instance
-- directories, runc containers, or a Pod network to reconcile. When it holds nothing, each driver
-- is loaded at the first create of its kind (riklet.drivers: its code was checked at start).
local function holds_anything(config)
  if config.network ~= "none" then return true end
  for _, dir in ipairs({ config.paths.records, config.paths.instances, config.runc_root }) do
    local names = dir and fs.list(dir)
    if names == nil and dir and fs.exists(dir) then return true end -- unreadable: take it as not empty
    if names and #names > 0 then return true end
  end
  return false
end

local function load_drivers(config)
  local eager = holds_anything(config)
  if not eager then
    -- what admission needs before any driver is loaded (--local-image-dirs, the image cache)
    -- (riklet.imagecfg: riklet.image's code waits for its first use, like the drivers')
    local iok, ierr = require("riklet.imagecfg").init(config)
    if not iok then log("warn", "Pods cannot be created until this is fixed: %s", tostring(ierr)) end
    drivers.hold()
  end
  for _, k in ipairs(drivers.KINDS) do
    local kind, mod = k.kind, k.module
    if lifecycle.driver(kind) then
      log("debug", "%s driver already registered", kind)
    elseif not eager then
      lifecycle.register_lazy(kind, function()
        local drv = require(mod)
        local iok, ierr = drv.init(config, agent)
        if not iok then return nil, ierr end
        return drv.driver or drv
      end)
    else
      local found, drv = pcall(require, mod)
      if found then
        local iok, ierr, fatal = drv.init(config, agent)
        if iok then lifecycle.register(kind, drv.driver or drv)
        elseif fatal then return nil, ("the %s driver cannot start: %s"):format(kind, tostring(ierr))
        else log("warn", "%s driver disabled: %s", kind, tostring(ierr)) end
      elseif not tostring(drv):find("module '" .. mod .. "' not found", 1, true) then
        log("error", "cannot load the %s driver: %s", kind, tostring(drv))
      end
    end
  end
  return true
end

-- agent.init(cfg) — open the store, load drivers, re-adopt what the records say.
function agent.init(config)
  cfg = config
  cfg.max_instances = cfg.max_instances or 1000
  local ok, err = store.open(config.paths.records, { write = true })
  if not ok then return nil, err end
  if config.policy_dir then policy.set_dir(config.policy_dir) end
  lifecycle.configure(config, { on_gone = prune, booted = booted })
  -- what the operator asked for explicitly (--network bridge) and cannot have stops the start
  local lok, lerr0 = load_drivers(config)
  if not lok then return nil, lerr0 end
  -- unusable records are moved aside and their ids held (store logs each); no list, no start:
  -- the clean-up below would take every instance for a leftover
  local t0, c0 = core.now(), os.clock()
  local p0, pc0 = policy.calls, policy.cpu
  -- RIKLET_BOOT_PROFILE=FILE: LuaJIT's sampling profiler (jit.p) over the boot, for
  -- tests/bench/bench_scale.sh (where the CPU of a re-adoption goes)
  local prof = os.getenv("RIKLET_BOOT_PROFILE")
  if prof then
    package.path = package.path .. ";/usr/share/luajit-2.1.0-beta3/?.lua;/usr/share/luajit-2.1/?.lua"
    local pok, p = pcall(require, "jit.p")
    if pok then p.start(os.getenv("RIKLET_BOOT_PROFILE_MODE") or "F", prof) else prof = nil end
    if not pok then log("warn", "RIKLET_BOOT_PROFILE: no LuaJIT profiler (jit.p): %s", tostring(p)) end
  end
  local recs, lerr = store.list({ quarantine = true, definitions = true })
  local t_read, c_read = core.now(), os.clock()
  if not recs then return nil, "cannot list the instance records: " .. tostring(lerr) end
  local adopting, unmanaged = {}, {}
  for _, rec in ipairs(recs) do
    if agent.valid_id(rec.id) then
      local inst = new_instance(rec.id, rec.definition, rec.source, rec)
      inst.adopted = task.event()
      rec.containers = type(rec.containers) == "table" and rec.containers or {}
      instances[rec.id] = inst
      adopting[#adopting + 1] = inst
      task.spawn(lifecycle.run, inst, "adopt")
    else
      -- (store accepts longer ids than the agent) what it names is kept, like a held id's
      log("error", "the record of %s has an instance id longer than %d characters: not managed, and what it names "
        .. "is kept; remove %s/%s.json to have it cleaned up at the next start", tostring(rec.id), ID_MAX,
        config.paths.records, tostring(rec.id))
      unmanaged[#unmanaged + 1] = rec.id
    end
  end
  local t_spawned, c_spawned = core.now(), os.clock()
  -- once every record is adopted, drivers remove what dead instances left behind (links, rules)
  -- Creates wait for booted, so the instances here are the ones records name.
  task.spawn(function()
    local t_adopted, c_adopted
    local bok, berr = xpcall(function()
      for _, inst in ipairs(adopting) do
        if not inst.adopted:wait(600) then
          log("error", "instance %s: still not re-adopted after 10 minutes; leftovers are reconciled without waiting for it "
            .. "(what its record names is kept)", inst.id)
        end
      end
      t_adopted, c_adopted = core.now(), os.clock()
      for _, inst in ipairs(adopting) do inst.adopted = nil end
      -- live: what the records name, readable or not (an instance created since owns nothing yet,
      -- and what its id names is a leftover too)
      local live, is_live = store.held_ids(), {}
      for _, inst in ipairs(adopting) do
        if not inst.gone.is_set then live[#live + 1] = inst.id end
      end
      for _, id in ipairs(unmanaged) do live[#live + 1] = id end
      for _, id in ipairs(live) do is_live[id] = true end
      -- (the drivers look for their processes in one listing of /proc: riklet.procscan; with the
      -- drivers loaded on demand, none is loaded here and neither is it)
      local reconciling = {}
      for kind, drv in pairs(lifecycle.drivers()) do
        if drv.reconcile then reconciling[#reconciling + 1] = { kind = kind, drv = drv } end
      end
      if #reconciling > 0 then
        require("riklet.procscan").shared(function()
          for _, r in ipairs(reconciling) do
            local rok, rerr = pcall(r.drv.reconcile, live, function(id) return is_live[id] == true end)
            if not rok then log("error", "%s driver: reconciling leftovers failed: %s", r.kind, tostring(rerr)) end
          end
        end)
      end
    end, debug.traceback)
    if not bok then log("error", "riklet internal error while cleaning up leftovers at start: %s", tostring(berr)) end
    -- records of destroyed instances beyond --keep-records (a riklet killed before it removed one)
    local pok, perr = pcall(prune)
    if not pok then log("error", "forgetting old destroyed records at start failed: %s", tostring(perr)) end
    booted:set(true)
    require("riklet.main").jit_booted()
    -- per phase, for tests/bench/bench_scale.sh (wall times stretch with the node's load; CPU less)
    local t_end, c_end = core.now(), os.clock()
    if prof then require("jit.p").stop() end
    local function ms(t, c) return ("%.0f ms (CPU %.0f)"):format((t - t0) * 1000, (c - c0) * 1000) end
    log("info", "boot: %d record(s) re-adopted and leftovers reconciled in %s: records read after %s, adoptions up to "
      .. "their first wait after %s, all adopted after %s; %d policy call(s), CPU %.0f ms in them", #adopting,
      ms(t_end, c_end), ms(t_read, c_read), ms(t_spawned, c_spawned), ms(t_adopted or t_end, c_adopted or c_end),
      policy.calls - p0, (policy.cpu - pc0) * 1000)
  end)
  return true
end

agent.subscribe = lifecycle.subscribe

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

local function shown(id)
  if agent.valid_id(id) then return id end
  return type(id) == "string" and json.quote(id, 60) or tostring(id)
end

local function refuse(id, msg)
  log("error", "%s", msg)
  lifecycle.notify(tostring(id), "FAILED", msg)
  return nil, msg
end

-- Instances this node has, for --max-instances: the ones not ended, and the held ids (records in
-- quarantine: what they name is kept, so each still holds a container, a directory, an address).
local function instance_count()
  local n = 0
  for _, inst in pairs(instances) do
    if not inst.gone.is_set and not ENDED[inst.rec.status] then n = n + 1 end
  end
  local held = #store.held_ids()
  return n + held, held
end

function agent.create(id, definition, source, preset_error)
  if replacing[id] ~= nil then
    replacing[id] = { definition = definition, source = source, preset_error = preset_error }
    return true
  end
  if not agent.valid_id(id) then
    return refuse(id, ("instance id %s is not valid: use 1 to %d characters of letters, digits, '.', '_' and '-'")
      :format(shown(id), ID_MAX))
  end
  if store.held(id) then
    local msg = ("instance %s cannot be created or replaced: %s"):format(id, store.held(id))
    log("error", "%s", msg)
    return nil, msg
  end
  local inst = instances[id]
  if inst and not inst.gone.is_set then
    if not ENDED[inst.rec.status] or store.same_definition(inst.rec, definition) then
      log("info", "instance %s already exists (%s): CREATE ignored", id, inst.rec.status or "?")
      lifecycle.notify(id, inst.rec.status, inst.rec.reason)
      return true
    end
    -- an ended instance created again with a new definition: replace it
    return agent.replace(id, definition, source, preset_error)
  end
  local count, held = instance_count()
  if count >= cfg.max_instances then
    return refuse(id, ("instance %s refused: this node already has %d instances, its maximum (--max-instances %d)%s; "
      .. "destroy some or raise the limit"):format(id, count, cfg.max_instances, held > 0
        and (", %d of them held (records in quarantine: UNKNOWN in `riklet ps`)"):format(held) or ""))
  end
  -- what is stored is bounded and encodable: an oversized, NUL-holding or non-UTF-8 definition is not kept
  if type(definition) ~= "string" then
    preset_error = preset_error or "the workload definition is not a string"
    definition = ""
  elseif #definition > limits.workload.manifest_bytes then
    preset_error = preset_error or ("the workload definition is %d bytes, larger than the %d bytes (1 MiB) allowed")
      :format(#definition, limits.workload.manifest_bytes)
    definition = ""
  elseif definition:find("%z") then
    preset_error = preset_error or "the workload definition is not valid JSON: it holds a NUL byte"
    definition = ""
  elseif not json.utf8(definition) then
    local _, bad = json.utf8(definition)
    preset_error = preset_error or ("the workload definition is not valid JSON: invalid JSON: not valid UTF-8 at byte %d (byte 0x%02x)")
      :format(bad, definition:byte(bad + 1))
    definition = ""
  end
  inst = new_instance(id, definition, source)
  inst.preset_error, inst.handed_over = preset_error, core.time()
  instances[id] = inst
  task.spawn(lifecycle.run, inst, "create")
  return true
end

-- Queue the destroy; a creation waiting on something slow (an image pull) stops waiting at once.
local function request_destroy(inst)
  if inst.destroy_requested then return end
  inst.destroy_requested = true
  inst.destroy_done = task.event()
  inst.mailbox:put({ type = "destroy" })
  if inst.on_cancel then inst.on_cancel() end
end

-- Is a replacement of id in flight (old instance going, new one not created yet)?
function agent.replacing(id)
  return replacing[id] ~= nil and replacing[id] ~= false
end

function agent.destroy(id)
  if not agent.valid_id(id) then -- no instance can have it: never looked up, nor cut at a NUL
    return refuse(id, ("DESTROY refused: instance id %s is not valid (1 to %d characters of letters, digits, '.', "
      .. "'_' and '-'); no instance has it"):format(shown(id), ID_MAX))
  end
  local cancelled = agent.replacing(id)
  if replacing[id] then replacing[id] = false end
  local inst = instances[id]
  if cancelled and (not inst or inst.gone.is_set) then
    log("info", "instance %s: the pending replacement is cancelled by a destroy", id)
    return true
  end
  if (not inst or inst.gone.is_set) and store.held(id) then
    local msg = ("instance %s is not destroyed: %s"):format(id, store.held(id))
    log("error", "%s", msg)
    return nil, msg
  end
  if not inst or inst.gone.is_set then
    log("info", "DESTROY for unknown instance %s: nothing to do, reporting TERMINATED", shown(id))
    lifecycle.notify(tostring(id), "TERMINATED", "unknown instance")
    return true
  end
  request_destroy(inst)
  return true
end

-- Wait for the destroy of id to end. -> true (gone) | nil, err (the destroy failed, or timeout).
function agent.wait_gone(id, timeout)
  local inst = instances[id]
  if not inst or inst.gone.is_set then return true end
  timeout = timeout or lifecycle.deadline(inst, "destroy") + 30
  -- (waits of the instance's steps for a runc slot are not counted, as the step's own deadline)
  local deadline, w0 = core.now() + timeout, task.waited(inst.slot_waits)
  while not inst.gone.is_set do
    local left = deadline + (task.waited(inst.slot_waits) - w0) - core.now()
    if left <= 0 then break end
    local ev = inst.destroy_done or inst.gone
    local r = ev:wait(left)
    if type(r) == "table" and not r[1] then return nil, r[2] end
  end
  if inst.gone.is_set then return true end
  log("warn", "instance %s: gave up waiting for its destroy after %g s (it is %s)", id, timeout, tostring(inst.rec.status))
  return nil, ("the destroy of %s did not finish within %g s"):format(id, timeout)
end

function agent.replace(id, definition, source, preset_error)
  local inflight = replacing[id] ~= nil
  replacing[id] = { definition = definition, source = source, preset_error = preset_error }
  if inflight then return true end
  task.spawn(function()
    local inst = instances[id]
    if inst and not inst.gone.is_set then request_destroy(inst) end
    local ok, err = agent.wait_gone(id)
    local want = replacing[id]
    replacing[id] = nil
    if not ok then
      log("error", "instance %s: not replaced, since the old instance could not be destroyed: %s. "
        .. "Its new definition is dropped; destroy it again (or touch its manifest) to retry", id, tostring(err))
      return
    end
    if instances[id] and instances[id].gone.is_set then
      instances[id].dropped = true
      instances[id] = nil
    end
    if want then agent.create(id, want.definition, want.source, want.preset_error) end
  end)
  return true
end

local function view(inst)
  local r = inst.rec
  return {
    id = inst.id, name = r.name, kind = r.kind, status = r.status, message = r.reason,
    source = r.source, definition = r.definition, created_at = r.created_at, gone = inst.gone.is_set,
    containers = r.containers,
  }
end

function agent.get(id)
  local inst = instances[id]
  return inst and view(inst)
end

-- agent.count() -> the instances not gone (what `riklet ps` counts: ended ones whose record is kept
-- included), without agent.list's copies: agent.json's writer asks every 5 s, and at 1,000 Pods
-- each list made 1,000 tables and sorted them (garbage the collector then had to walk)
function agent.count()
  local n = 0
  for _, inst in pairs(instances) do
    if not inst.gone.is_set then n = n + 1 end
  end
  return n
end

function agent.list()
  local out = {}
  for _, inst in pairs(instances) do out[#out + 1] = view(inst) end
  table.sort(out, function(a, b) return (a.created_at or 0) < (b.created_at or 0) end)
  return out
end

-- agent.records() -> the records of the instances and of the ended ones kept, oldest first: what
-- agent.list() says, without a view of each (the image collector's pass: 1,000 views and their
-- garbage per call at 1,000 Pods).
function agent.records()
  local out = {}
  for _, inst in pairs(instances) do out[#out + 1] = inst.rec end
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

-- agent.wait_booted([timeout]) -> true | nil, "timeout": once the boot's re-adoptions and its clean-up
-- of leftovers are over (at once on a node that held nothing). Work that can wait for it (the full
-- collection after the start, the standalone directory's first scan) waits, rather than take the
-- CPU from 1,000 re-adoptions.
function agent.wait_booted(timeout) return booted:wait(timeout) end

function agent.instance(id) return instances[id] end
function agent.config() return cfg end

return agent
