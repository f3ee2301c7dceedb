-- riklet.store — one record per instance, <state>/records/<id>.json, written atomically.
-- A record holds what the agent needs to re-adopt or clean up an instance after a restart: its
-- status and reason, and the resources it created (containers, mounts, network). The workload
-- definition is stored as it arrived, in <id>.definition beside the record (written first; the
-- record keeps its size, checked on reading), never re-encoded inside the record.
--
-- Records are input too: each one read is validated (types, id = file name, paths inside the
-- instance's directory, runc ids derived from the id, link names in riklet's namespace). A record
-- that cannot be read or fails validation is moved to records/quarantine/ by the agent at boot,
-- and its id stays held: everything named after it is kept, since removing it would need positive
-- evidence that it is riklet's and no longer wanted. Nothing is written that could not be read back.
--
--   store.open(records_dir[, {write = true}]) -> true | nil, err
--       read-only by default: `riklet ps`, top, logs, images read the records while an agent may
--       be writing them, and change nothing (no directory made, no file removed or rewritten).
--       write (the agent only): the directory is created, and the temp files of writes a killed
--       riklet left are removed; save, remove and quarantine refuse a store opened read-only.
--   store.save(rec[, durable]) -> true | nil, err (also writes rec.definition the first time;
--       durable false: both left in the page cache, made durable later by store.sync)
--   store.sync(rec) -> true | nil, err          fsync of its definition, its record, their directory
--   store.load(id[, {definition=bool}]) -> rec | nil, err
--   store.list([{quarantine=bool, definitions=bool}]) -> recs (oldest first), bad
--       bad: array of { id=, reason=, path= } records that cannot be used (those in quarantine
--       too). With quarantine (the agent at boot), bad records are moved aside and their ids held,
--       and definitions that no record names are removed.
--   store.held(id) -> reason | nil               store.held_ids() -> array of ids
--   store.dir() -> the records directory (for messages)
--   store.same_definition(rec, definition) -> boolean   (also once the definition is forgotten)
--   store.forget_definition(rec[, saved_only])  drop the definition from memory (instance ended, or
--                                                running: saved_only, once it is on disk)
--   store.check(rec, id) -> true | nil, reason   store.remove(id) -> true | nil, err
--   store.runc_id(id, container_name) -> the runc container id of a Pod container
local fs = require "riklet.fs"
local json = require "riklet.json"
local core = require "riklet.core"
local fault = require "riklet.fault"
local proc = require "riklet.proc"
local limits = require "riklet.limits"

local M = {}
M.RECORD_MAX = 4 * 1024 * 1024
M.DEFINITION_MAX = limits.workload.manifest_bytes -- the one definition cap (1 MiB)
M.REASON_MAX = 8192

local dir, qdir, instances_dir
local writable = false -- store.open{write = true}: the agent's store, not a reader's
local held = {} -- id -> why its record cannot be used
local def_saved = setmetatable({}, { __mode = "k" }) -- rec -> true once its definition is on disk

local function log(level, fmt, ...) core.log(level, "store", fmt:format(...)) end

-- Ids, names: 1..max of [A-Za-z0-9._-], not . or .. (fs.safe_name refuses an embedded NUL too).
local safe = fs.safe_name

-- Temporary files of writes a killed riklet did not finish: fs.write_atomic writes <path>.<n>.tmp.<pid>,
-- so one whose pid is not alive is nobody's. The agent's alone to call (at start): a reader could
-- take a live agent's write for a dead one (another pid namespace) and break its rename.
function M.remove_stale_tmp(in_dir, prefix)
  for _, n in ipairs(fs.list(in_dir) or {}) do
    local pid = n:sub(1, #prefix) == prefix and tonumber(n:sub(#prefix + 1):match("^.*%.tmp%.(%d+)$"))
    if pid and pid > 0 and not proc.alive(pid) then
      local ok, err = fs.unlink(in_dir .. "/" .. n)
      if ok then core.log("info", "store", ("removed %s/%s, left by an interrupted write"):format(in_dir, n))
      else core.log("warn", "store", ("cannot remove %s/%s: %s"):format(in_dir, n, err)) end
    end
  end
end

function M.open(records_dir, opts)
  writable = opts ~= nil and opts.write == true
  if writable then
    local ok, err = fs.mkdir_p(records_dir, "0700")
    if not ok then return nil, err end
  end
  dir = records_dir
  qdir = dir .. "/quarantine"
  instances_dir = (dir:match("^(.*)/[^/]+$") or ".") .. "/instances"
  if writable then M.remove_stale_tmp(dir, "") end
  return true
end

function M.dir() return dir end

-- Writing through a store a reader opened is a bug of riklet's, refused before anything changes.
local function read_only(what)
  if writable then return nil end
  return ("riklet internal error: %s in %s refused: the store was opened read-only (only the agent writes)"):format(what, tostring(dir))
end

local function path(id)
  assert(safe(id, 128), "store: unsafe instance id")
  return dir .. "/" .. id .. ".json"
end

local function def_path(id)
  assert(safe(id, 128), "store: unsafe instance id")
  return dir .. "/" .. id .. ".definition"
end

-- The runc id of container `name` of instance `id`, never the same for two (id, name) pairs.
-- Both are [A-Za-z0-9._-] and may hold '_', so "<id>_<name>" alone collides (a_b + c and a + b_c
-- are both a_b_c). It is kept when the id holds no '_' (the first '_' then splits it, and a name
-- starts with a letter or digit); otherwise each '_' of the id is doubled and "_-" separates:
-- a_b + c -> a__b_-c (its first '_' is followed by '_', which the short form never has).
function M.runc_id(id, name)
  if not id:find("_", 1, true) then return id .. "_" .. name end
  return (id:gsub("_", "__")) .. "_-" .. name
end

-- The runc id an older riklet gave ("<id>_<name>", which can collide): a record may still name
-- it; the Pod driver keeps it only when runc shows that container's bundle is this container's.
function M.legacy_runc_id(id, name) return id .. "_" .. name end

-- ---- validation -------------------------------------------------------------------------------
local STATUS = { CREATING = true, RUNNING = true, DESTROYING = true, FAILED = true, TERMINATED = true }

-- (an empty Lua table is encoded as {}: an empty object is an empty array too)
local is_array = limits.is_array

local function is_object(t) return type(t) == "table" and getmetatable(t) ~= json.array_mt and (next(t) == nil or #t == 0) end

local function count(v) return type(v) == "number" and v >= 0 and v < 0x1p53 and v == math.floor(v) end

-- A path inside base: base itself or base/ followed by safe components only.
local function inside(p, base)
  if type(p) ~= "string" or #p > 4096 then return false end
  if p == base then return true end
  if p:sub(1, #base + 1) ~= base .. "/" then return false end
  for part in (p:sub(#base + 2) .. "/"):gmatch("([^/]*)/") do
    if not safe(part, 255) then return false end
  end
  return true
end

local function ip4(s)
  if type(s) ~= "string" then return false end
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a ~= nil and tonumber(a) < 256 and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
end

-- check(fields, t, what) — each field: nil, or what its checker accepts
local function check_fields(t, spec, what)
  for k, f in pairs(spec) do
    local v = t[k]
    if v ~= nil and not f(v) then
      local shown = type(v) == "string" and (#v > 60 and ("%q..."):format(v:sub(1, 40)) or ("%q"):format(v)) or type(v)
      return nil, ("%s%s is %s, which is not valid there"):format(what, k, shown)
    end
  end
  return true
end

local function str(max) return function(v) return type(v) == "string" and #v <= max end end
local function num(v) return type(v) == "number" end
local function bool(v) return type(v) == "boolean" end

local REC_FIELDS = {
  status = function(v) return STATUS[v] ~= nil end,
  kind = function(v) return safe(v, 64) end,
  name = str(4096), reason = str(M.RECORD_MAX), source = str(8192),
  created_at = num, updated_at = num, ended_at = num, destroyed = bool,
  -- definition_error: only in records of older riklets (nothing reads it; accepted, not quarantined)
  definition = str(M.DEFINITION_MAX), definition_error = str(4096),
  definition_size = count,
  containers = is_array, network = is_object,
  -- riklet.lifecycle's: stop grace period, restart policy, what it held freed after it ended
  grace_period = function(v) return type(v) == "number" and v >= 0 and v <= 86400 end,
  restart_policy = function(v) return v == "Never" or v == "OnFailure" or v == "Always" end,
  released = bool,
}

local CONTAINER_FIELDS = {
  name = function(v) return safe(v, 128) end,
  state = function(v) return type(v) == "string" and #v <= 32 and v:match("^[a-z_]+$") ~= nil end,
  pid = function(v) return count(v) and v > 0 end,
  exit_code = num, exit_signal = function(v) return type(v) == "number" or (type(v) == "string" and #v <= 32) end,
  image = str(4096), digest = str(256), mounted = bool, started_at = num, finished_at = num,
  -- restarts (riklet.lifecycle): how many, the back-off step, when the next one is due, why
  restart_count = count, attempt = count, restart_at = num, reason = str(M.REASON_MAX),
}

local NET_FIELDS = {
  enabled = bool, kind = function(v) return v == "Pod" or v == "Function" end,
  ip = ip4, gateway = ip4, guest_ip = ip4, tap_ip = ip4, netmask = ip4,
  address = function(v) return type(v) == "string" and ip4(v:match("^(.*)/%d%d?$")) end,
  host_if = function(v) return type(v) == "string" and v:match("^rkv%x%x%x%x%x%x%x%x$") ~= nil end,
  tap = function(v) return type(v) == "string" and v:match("^rkt%x%x%x%x%x%x%x%x$") ~= nil end,
  kernel_ip = str(256),
  ports = function(v)
    if not is_array(v) then return false end
    for _, p in ipairs(v) do
      if type(p) ~= "string" or not p:match("^%a%a%a?%a?/%d%d?%d?%d?%d?$") then return false end
    end
    return true
  end,
}

-- Is rec, read from <id>.json, a record riklet can trust? Fields it does not know are left alone
-- (a newer riklet may add some); every field that names a path, a container or a link is checked.
function M.check(rec, id)
  if type(rec) ~= "table" then return nil, ("it is a JSON %s, not an object"):format(type(rec)) end
  if getmetatable(rec) == json.array_mt or (#rec > 0) then return nil, "it is a JSON array, not an object" end
  if rec.id == nil then return nil, "it has no id" end
  if rec.id ~= id then
    return nil, ("its id %s is not the instance its file names (%s)"):format(type(rec.id) == "string" and ("%q"):format(rec.id:sub(1, 80)) or ("a " .. type(rec.id)), id)
  end
  if rec.status == nil then return nil, "it has no status" end
  local ok, err = check_fields(rec, REC_FIELDS, "")
  if not ok then return nil, err end
  if type(rec.definition) == "string" and rec.definition_size ~= nil and rec.definition_size ~= #rec.definition then
    return nil, ("its definition is %d bytes, but its definition_size says %s"):format(#rec.definition,
      tostring(rec.definition_size))
  end
  local idir = instances_dir .. "/" .. id
  if rec.dir ~= nil and rec.dir ~= idir then
    return nil, ("its dir %q is not the instance's directory %s"):format(tostring(rec.dir):sub(1, 200), idir)
  end
  local seen = {}
  for i, c in ipairs(rec.containers or {}) do
    local what = ("containers[%d]."):format(i)
    if not is_object(c) then return nil, what:sub(1, -2) .. " is not an object" end
    if c.name == nil then return nil, what .. "name is missing" end
    ok, err = check_fields(c, CONTAINER_FIELDS, what)
    if not ok then return nil, err end
    if seen[c.name] then return nil, ("container %s is listed twice"):format(c.name) end
    seen[c.name] = true
    -- the runc id is derived from the id and name (an older riklet's form is resolved against
    -- runc by the Pod driver's load), the directory is the one riklet gives the container
    -- (none: a driver that runs no runc container; the Pod driver's load then derives it)
    if c.runc_id ~= nil and c.runc_id ~= M.runc_id(id, c.name) and c.runc_id ~= M.legacy_runc_id(id, c.name) then
      return nil, ("%srunc_id %s is not the runc id of container %s of instance %s (%s)"):format(what,
        type(c.runc_id) == "string" and ("%q"):format(c.runc_id:sub(1, 200)) or ("a " .. type(c.runc_id)), c.name, id, M.runc_id(id, c.name))
    end
    if c.dir ~= nil and c.dir ~= idir .. "/" .. c.name then
      return nil, ("%sdir %q is not the container's directory %s"):format(what, tostring(c.dir):sub(1, 200), idir .. "/" .. c.name)
    end
    for _, k in ipairs({ "log" }) do
      if c[k] ~= nil and not (rec.dir and inside(c[k], rec.dir)) then
        return nil, ("%s%s %q is not inside the instance's directory %s"):format(what, k, tostring(c[k]):sub(1, 200), idir)
      end
    end
  end
  if rec.network ~= nil then
    ok, err = check_fields(rec.network, NET_FIELDS, "network.")
    if not ok then return nil, err end
    local ns = rec.network.netns
    if ns ~= nil and not (type(ns) == "string" and #ns < 4096 and ns:sub(1, 1) == "/" and not ns:find("/%.%.?/")
      and not ns:find("//", 1, true) and ns:sub(-#id - 1) == "/" .. id) then
      return nil, ("network.netns %q is not a network namespace named after instance %s"):format(tostring(ns):sub(1, 200), id)
    end
  end
  return true
end

-- ---- reading ----------------------------------------------------------------------------------
-- Errors say "the record ...": the reason shown in `riklet ps`; where it is is said beside it.
local function read_record(file, id)
  local s, err = fs.read(file, M.RECORD_MAX)
  if not s then
    err = tostring(err)
    if err:sub(1, #file + 1) == file .. " " then return nil, "the record " .. err:sub(#file + 2) end
    return nil, "the record cannot be read: " .. err
  end
  local rec, jerr = json.decode(s)
  if rec == nil then return nil, ("the record is not valid JSON (%s)"):format(tostring(jerr)) end
  local ok, verr = M.check(rec, id)
  if not ok then return nil, "the record is not valid: " .. verr end
  return rec
end

-- The stored definition of rec, checked against the size its record gives.
local function read_definition(rec)
  local p = def_path(rec.id)
  local s, err = fs.read(p, M.DEFINITION_MAX)
  if not s then return nil, "its workload definition cannot be read: " .. tostring(err) end
  if #s ~= rec.definition_size then
    return nil, ("its workload definition %s is %d bytes, but the record says %d"):format(p, #s, rec.definition_size)
  end
  return s
end

-- An instance on its way up needs its definition (to be re-created or re-adopted); an ended one
-- does not, and its definition is not loaded.
local NEEDS_DEFINITION = { CREATING = true, RUNNING = true }

function M.load(id, opts)
  local rec, err = read_record(path(id), id)
  if not rec then return nil, err end
  if rec.definition ~= nil then
    def_saved[rec] = nil -- an older record with the definition inside: the next save moves it out
  elseif opts and opts.definition and NEEDS_DEFINITION[rec.status] then
    if rec.definition_size == nil then return nil, "the record names no workload definition" end
    local def, derr = read_definition(rec)
    if not def then return nil, derr end
    rec.definition = def
    def_saved[rec] = true
  end
  return rec
end

-- ---- quarantine -------------------------------------------------------------------------------
-- <id>.json, or <id>.json.N when an earlier record of the same id is already there.
local function quarantine_id(name) return name:match("^(.+)%.json$") or name:match("^(.+)%.json%.%d+$") end

local function quarantine(id, reason)
  local target
  local ok, err = fs.mkdir_p(qdir, "0700")
  if ok then
    target = qdir .. "/" .. id .. ".json"
    local n = 0
    while fs.exists(target) do
      n = n + 1
      target = qdir .. "/" .. id .. ".json." .. n
    end
    ok, err = fs.rename(path(id), target)
  end
  if not ok then
    log("error", "instance %s: %s, and it cannot be moved aside either (%s). It stays in %s; its containers, "
      .. "directory and network are kept", id, reason, err, path(id))
    return path(id), ("%s (%s; cannot be moved to %s)"):format(reason, path(id), qdir)
  end
  if fs.exists(def_path(id)) then
    local dok, derr = fs.rename(def_path(id), target:gsub("%.json(%.?%d*)$", ".definition%1"))
    if not dok then log("warn", "instance %s: %s", id, derr) end
  end
  log("error", "instance %s: %s; it is moved to %s. Its containers, directory and network are KEPT (UNKNOWN in "
    .. "`riklet ps`). Check them, then either put a valid record back in %s, or remove %s and restart riklet, "
    .. "which then removes what no record names", id, reason, target, dir, target)
  return target, ("%s (moved to %s)"):format(reason, target)
end

function M.held(id) return held[id] end

function M.held_ids()
  local out = {}
  for id in pairs(held) do out[#out + 1] = id end
  table.sort(out)
  return out
end

-- ---- listing ----------------------------------------------------------------------------------
-- A read that failed for want of an fd or of memory says nothing about the record: it is not
-- moved aside for that: the listing fails, saying why (the start then fails).
function M.transient(err)
  err = tostring(err)
  return err:find("Too many open files", 1, true) ~= nil or err:find("Cannot allocate memory", 1, true) ~= nil
end

-- All records, oldest first, and the ones that cannot be used (see the header).
function M.list(opts)
  opts = opts or {}
  if opts.quarantine and not writable then return nil, read_only("moving unusable records to quarantine") end
  local names, err = fs.list(dir)
  if not names then return nil, err end
  local recs, bad, present = {}, {}, {}
  for _, n in ipairs(names) do
    local id = n:match("^(.+)%.json$")
    if id and safe(id, 128) then
      present[id] = true
      local rec, rerr = M.load(id, { definition = opts.definitions })
      if rec then
        recs[#recs + 1] = rec
      elseif M.transient(rerr) then
        return nil, ("%s (%s; no record was moved aside)"):format(rerr, path(id))
      elseif not opts.quarantine and not fs.exists(path(id)) then
        present[id] = nil -- removed since the listing (the agent forgot an ended instance): not a bad record
      else
        local where, reason = path(id), ("%s (%s)"):format(rerr, path(id))
        if opts.quarantine then
          where, reason = quarantine(id, rerr)
          held[id] = reason
        end
        bad[#bad + 1] = { id = id, reason = reason, path = where }
      end
    elseif id then
      log("warn", "%s/%s is not named after an instance id: ignored", dir, n)
    end
  end
  if opts.quarantine then
    -- a definition is written just before its record: one with no record is from a create that
    -- stopped before anything was made
    for _, n in ipairs(names) do
      local id = n:match("^(.+)%.definition$")
      if id and safe(id, 128) and not present[id] then
        log("info", "removing %s/%s: no record names it", dir, n)
        fs.unlink(dir .. "/" .. n)
      end
    end
  end
  for _, n in ipairs(fs.exists(qdir) and fs.list(qdir) or {}) do
    local id = quarantine_id(n)
    if id and safe(id, 128) and not present[id] then
      local q = qdir .. "/" .. n
      local _, why = read_record(q, id)
      local reason = ("%s (kept in quarantine: %s; remove it once its containers, directory and network are "
        .. "dealt with)"):format(why or "the record was unusable", q)
      if opts.quarantine then held[id] = reason end
      bad[#bad + 1] = { id = id, reason = reason, path = q }
      present[id] = true
    end
  end
  table.sort(recs, function(a, b) return (a.created_at or 0) < (b.created_at or 0) end)
  return recs, bad
end

-- ---- writing ----------------------------------------------------------------------------------
-- M.save(rec[, durable]): durable false writes the record without fsync (still replaced by rename:
-- a crash of riklet finds it, a crash of the machine may not): for progress notes that a durable
-- save follows (the Pod driver's steps during a create; the lifecycle's transitions are durable).
function M.save(rec, durable)
  local fok, ferr = fault.point("record.save") if not fok then return nil, ferr end
  local ro = read_only("saving the record of " .. tostring(rec.id)) if ro then return nil, ro end
  rec.updated_at = core.time()
  if type(rec.reason) == "string" and #rec.reason > M.REASON_MAX then
    rec.reason = rec.reason:sub(1, M.REASON_MAX - 20) .. " ... (cut)"
  end
  local def = rec.definition
  if type(def) == "string" and not def_saved[rec] then
    -- agent.create stores an oversized definition as "" (the instance FAILED saying why): one over
    -- the cap here is a bug, refused rather than written where the next start could not read it
    if #def > M.DEFINITION_MAX then
      return nil, ("riklet internal error: the workload definition of %s is %d bytes, over the %d allowed: not stored")
        :format(rec.id, #def, M.DEFINITION_MAX)
    end
    local ok, err = fs.write_atomic(def_path(rec.id), def, "0600", durable == false and { sync = false } or nil)
    if not ok then return nil, ("cannot store the workload definition of %s: %s"):format(rec.id, err) end
    rec.definition_size = #def
    def_saved[rec] = true
  end
  rec.definition = nil
  local s, err = json.encode(rec, true)
  rec.definition = def
  if not s then return nil, "cannot encode the record of " .. rec.id .. ": " .. err end
  if #s + 1 > M.RECORD_MAX then
    return nil, ("the record of %s would be %d bytes, more than the %d riklet reads back: not written"):format(rec.id, #s + 1, M.RECORD_MAX)
  end
  return fs.write_atomic(path(rec.id), s .. "\n", "0600", durable == false and { sync = false } or nil)
end

-- What store.save(rec, false) left in the page cache made durable, in one job on the worker pool:
-- the definition and the record (each fsync'd), then the directory that holds their renames (one
-- fsync for both: the lifecycle's CREATING write, 3 fsyncs instead of the 4 of two durable writes).
-- Until it returns, a riklet crash loses nothing (the page cache stays), a machine crash may.
function M.sync(rec)
  local ro = read_only("syncing the record of " .. tostring(rec.id)) if ro then return nil, ro end
  local fok, ferr = fault.point("record.sync") if not fok then return nil, ferr end
  -- (the record first: fs.sync orders the first path's later writes behind it)
  if def_saved[rec] then return fs.sync(path(rec.id), def_path(rec.id), dir) end
  return fs.sync(path(rec.id), dir)
end

function M.same_definition(rec, def)
  if rec.definition ~= nil then return rec.definition == def end
  if type(def) ~= "string" or rec.definition_size ~= #def then return false end
  return fs.read(def_path(rec.id), M.DEFINITION_MAX) == def
end

-- saved_only: only when it is on disk (a running instance's: nothing reads it in memory again, and
-- store.same_definition reads the file; 1,000 Pods kept 1,000 copies of what they were created
-- from). One whose write failed stays, for the next save to write it.
function M.forget_definition(rec, saved_only)
  if saved_only and not def_saved[rec] then return end
  rec.definition = nil
end

function M.remove(id)
  local fok, ferr = fault.point("record.remove") if not fok then return nil, ferr end
  local ro = read_only("removing the record of " .. tostring(id)) if ro then return nil, ro end
  local ok, err = fs.unlink(path(id))
  if not ok then return nil, err end
  return fs.unlink(def_path(id))
end

return M
