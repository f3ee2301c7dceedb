-- riklet.standalone — no cluster: the *.json manifests in a directory are the desired workloads.
-- A new file creates, a removed file destroys, a changed file replaces. The instance id is the
-- file name without .json (made safe when it is not: unsafe characters become '_', and a short
-- hash of the real name keeps ids distinct).
local core = require "riklet.core"
local fs = require "riklet.fs"
local agent = require "riklet.agent"
local store = require "riklet.store"
local task = require "riklet.task"
local bit = require "bit"

local S = {}
local MANIFEST_MAX = require("riklet.limits").workload.manifest_bytes -- (not riklet.workload: its first use loads it)

local function log(level, fmt, ...) core.log(level, "standalone", fmt:format(...)) end

local function fnv1a(s)
  local h = 0x811c9dc5
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(h * 0x01000193)
  end
  return bit.tohex(h)
end

function S.id_for(file)
  local base = file:gsub("%.json$", "")
  if fs.safe_name(base, 64) then return base end
  local safe = base:gsub("[^A-Za-z0-9._-]", "_"):sub(1, 48):gsub("^%.+", "_")
  return safe .. "-" .. fnv1a(file)
end

local function source_of(dir, file) return "standalone:" .. dir .. "/" .. file end

local function read_manifest(dir, file)
  local data, err = fs.read(dir .. "/" .. file, MANIFEST_MAX)
  if not data then return "", "cannot read the manifest: " .. tostring(err) end
  return data
end

-- Bring the agent in line with the directory.
local function converge(dir, file)
  local id = S.id_for(file)
  local path = dir .. "/" .. file
  if not fs.exists(path) then
    local cur = agent.get(id)
    -- also when the old instance is gone but its replacement is not created yet
    if cur and cur.source == source_of(dir, file) and (not cur.gone or agent.replacing(id)) then
      log("info", "%s was removed: destroying instance %s", path, id)
      agent.destroy(id)
    end
    return
  end
  local def, rerr = read_manifest(dir, file)
  if rerr then log("error", "cannot read %s: %s", path, rerr) end
  local cur = agent.get(id)
  if agent.replacing(id) then
    -- a replacement is in flight: it will create this version instead
    agent.replace(id, def, source_of(dir, file), rerr)
  elseif not cur or cur.gone then
    log("info", "%s: creating instance %s", path, id)
    agent.create(id, def, source_of(dir, file), rerr)
  elseif not store.same_definition(agent.instance(id).rec, def) then
    log("info", "%s changed: replacing instance %s", path, id)
    agent.replace(id, def, source_of(dir, file), rerr)
  end
end

local function scan(dir)
  local names, err = fs.list(dir)
  if not names then return nil, err end
  local present = {}
  for _, n in ipairs(names) do
    if n:match("%.json$") and not n:match("^%.") then
      present[S.id_for(n)] = true
      converge(dir, n)
      -- 1,000 manifests at once: each create runs up to its first wait here; the loop serves
      -- others between slices (a rescan meanwhile reads the directory again)
      task.pace()
    end
  end
  -- instances from this directory whose manifest is gone
  local prefix = "standalone:" .. dir .. "/"
  for _, inst in ipairs(agent.list()) do
    if not inst.gone and inst.source and inst.source:sub(1, #prefix) == prefix and not present[inst.id] then
      log("info", "%s is gone: destroying instance %s", inst.source:sub(12), inst.id)
      agent.destroy(inst.id)
    end
  end
  return true
end

-- S.run(dir): scan, then follow the directory until riklet stops.
function S.run(dir)
  dir = dir:gsub("/+$", "")
  local st = fs.stat(dir)
  if not st or st.type ~= "dir" then
    return nil, ("standalone directory %s does not exist or is not a directory: create it and put workload manifests (*.json) in it"):format(dir)
  end
  -- out of file descriptors (every watched container holds one): the workloads riklet runs are
  -- still watched, so keep the agent and try again rather than end it. Both the watch and the
  -- first listing of the directory need one.
  local function out_of_fds(err)
    if not tostring(err):match("[Tt]oo many open files") then return false end
    log("error", "cannot watch %s: %s; the running workloads are still watched, manifests are not read until this works"
      .. " (raise ulimit -n / LimitNOFILE); trying again in 5 s", dir, err)
    require("riklet.task").sleep(5)
    return true
  end
  local w, err, ok
  local booted = false
  repeat
    w, err = fs.watch_dir(dir)
    if w and not booted then
      -- the first scan (every manifest read and compared with its record: 1,000 at a restart) once
      -- the boot's re-adoptions are over: a create or a replace waits for that anyway, and the
      -- scan ran beside them, taking their CPU; the watch is set first, so nothing is missed
      agent.wait_booted()
      booted = true
    end
    if w then
      ok, err = scan(dir)
      if not ok then
        w:close()
        w = nil
      end
    end
  until w or not out_of_fds(err)
  if not w then return nil, err end
  log("info", "watching %s for workload manifests (*.json)", dir)
  while true do
    local events = w:read()
    local rescan = false
    local touched = {}
    for _, ev in ipairs(events) do
      if ev.kind == "overflow" then rescan = true
      elseif ev.kind == "gone" then
        log("error", "standalone directory %s was removed: running workloads are kept; riklet stops following it", dir)
        w:close()
        return nil, "standalone directory removed"
      elseif ev.name:match("%.json$") and not ev.name:match("^%.") then
        touched[ev.name] = true
      end
    end
    if rescan then scan(dir)
    else
      for name in pairs(touched) do
        converge(dir, name)
        task.pace()
      end
    end
  end
end

return S
