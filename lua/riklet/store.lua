-- riklet.store — one record per instance, <state>/records/<id>.json, written atomically.
-- A record holds what the agent needs to re-adopt or clean up an instance after a restart:
-- its definition, status and reason, and the resources it created (containers, mounts, network).
local fs = require "riklet.fs"
local json = require "riklet.json"
local core = require "riklet.core"
local fault = require "riklet.fault"
local proc = require "riklet.proc"

local M = {}
local dir

-- Temporary files of writes a killed riklet did not finish: fs.write_atomic writes <path>.tmp.<pid>,
-- so one whose pid is not alive is nobody's (`riklet ps` opens the store too, while riklet writes).
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

function M.open(records_dir)
  local ok, err = fs.mkdir_p(records_dir, "0700")
  if not ok then return nil, err end
  dir = records_dir
  M.remove_stale_tmp(dir, "")
  return true
end

local function path(id)
  assert(fs.safe_name(id, 128), "store: unsafe instance id")
  return dir .. "/" .. id .. ".json"
end

function M.save(rec)
  local fok, ferr = fault.point("record.save") if not fok then return nil, ferr end
  rec.updated_at = core.time()
  local s, err = json.encode(rec, true)
  if not s then return nil, "cannot encode the record of " .. rec.id .. ": " .. err end
  return fs.write_atomic(path(rec.id), s .. "\n", "0600")
end

function M.load(id)
  local s, err = fs.read(path(id), 4194304)
  if not s then return nil, err end
  local rec, jerr = json.decode(s)
  if type(rec) ~= "table" then return nil, ("record %s is damaged: %s"):format(path(id), tostring(jerr)) end
  return rec
end

function M.remove(id)
  local fok, ferr = fault.point("record.remove") if not fok then return nil, ferr end
  return fs.unlink(path(id))
end

-- All records, oldest first. Damaged ones are reported in the second result.
function M.list()
  local names, err = fs.list(dir)
  if not names then return nil, err end
  local recs, bad = {}, {}
  for _, n in ipairs(names) do
    local id = n:match("^(.+)%.json$")
    if id and fs.safe_name(id, 128) then
      local rec, rerr = M.load(id)
      if rec then recs[#recs + 1] = rec else bad[#bad + 1] = rerr end
    end
  end
  table.sort(recs, function(a, b) return (a.created_at or 0) < (b.created_at or 0) end)
  return recs, bad
end

return M
