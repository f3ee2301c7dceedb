-- riklet.imagegc — the image cache as an operator sees it (`riklet images`), and its garbage
-- collection: by the state dir's usage (--image-gc-high / --image-gc-low percent, as kubelet), by
-- age (--image-gc-age), or all unused at once (`riklet prune`, SIGUSR1 to a running agent).
--
-- An image is the unpacked root filesystem STATE/rootfs/sha256_<hex> and the pulled layout in
-- STATE/images/ holding that digest. It is in use while a record that is not ended-and-released
-- names its digest; in-use images are never removed, nor one under a mounted overlay or being
-- pulled or unpacked (riklet.image.prune checks those too). Its last use is the latest
-- created/ended time of the records naming it (now while in use), else when it was unpacked.
--
--   imagegc.list(records) -> { {digest=, rootfs=dir|nil, layouts={dir...}, refs={...}, in_use={ids},
--       last_use=} }, sorted by last use (oldest first)
--   imagegc.sizes(images) -> fills .size (bytes, du) of each
--   imagegc.collect(cfg, records, {all=bool}) -> {removed = {dirs}, freed_to = percent used} | nil, err
--       removes nothing while an instance id is held (riklet.store: its record cannot be read, so it
--       may name any image); M.stats.last_error says which
--   imagegc.start(cfg, records_fn)   the daemon's periodic pass (--image-gc-interval)
local core = require "riklet.core"
local fs = require "riklet.fs"
local imagec = require "riklet.image.c"
local metrics = require "riklet.metrics"
local proc = require "riklet.proc"
local task = require "riklet.task"

local M = {}
M.stats = { runs = 0, removed = 0, last_run = nil, last_error = nil }

local ENDED = { FAILED = true, TERMINATED = true }

local function log(level, fmt, ...) core.log(level, "imagegc", fmt:format(...)) end

local function paths_of(cfg)
  local s = cfg.state_dir
  return (cfg.paths and cfg.paths.images) or s .. "/images", (cfg.paths and cfg.paths.rootfs) or s .. "/rootfs"
end

function M.in_use(rec)
  return not (ENDED[rec.status] and (rec.released or rec.destroyed))
end

function M.list(cfg, records)
  local images_dir, rootfs_dir = paths_of(cfg)
  local by = {}
  local function get(d)
    by[d] = by[d] or { digest = d, layouts = {}, refs = {}, in_use = {}, last_use = 0 }
    return by[d]
  end
  for _, name in ipairs(fs.list(rootfs_dir) or {}) do
    local hex = name:match("^sha256_(%x+)$")
    if hex then
      local e = get("sha256:" .. hex)
      e.rootfs = rootfs_dir .. "/" .. name
      local st = fs.stat(e.rootfs)
      e.last_use = math.max(e.last_use, st and st.mtime or 0)
    end
  end
  for _, name in ipairs(fs.list(images_dir) or {}) do
    local dir = images_dir .. "/" .. name
    local d = name:sub(1, 1) ~= "." and imagec.layout_lookup(dir, "image")
    if d then
      local e = get(d)
      e.layouts[#e.layouts + 1] = dir
      local st = fs.stat(dir .. "/index.json")
      e.last_use = math.max(e.last_use, st and st.mtime or 0)
    end
  end
  local now = core.time()
  for _, r in ipairs(records or {}) do
    for _, c in ipairs(type(r.containers) == "table" and r.containers or {}) do
      local e = type(c) == "table" and type(c.digest) == "string" and by[c.digest]
      if e then
        local seen = false
        for _, x in ipairs(e.refs) do seen = seen or x == c.image end
        if not seen and c.image then e.refs[#e.refs + 1] = c.image end
        if M.in_use(r) then
          e.in_use[#e.in_use + 1] = r.id
          e.last_use = now
        else
          e.last_use = math.max(e.last_use, tonumber(r.ended_at) or tonumber(r.created_at) or 0)
        end
      end
    end
  end
  local out = {}
  for _, e in pairs(by) do out[#out + 1] = e end
  table.sort(out, function(a, b)
    if a.last_use ~= b.last_use then return a.last_use < b.last_use end
    return a.digest < b.digest
  end)
  return out
end

-- du -s -B1 over every directory of every image, in one process
function M.sizes(images)
  local argv, owner = { "du", "-s", "-B1", "--" }, {}
  for _, e in ipairs(images) do
    e.size = 0
    for _, d in ipairs(e.rootfs and { e.rootfs, unpack(e.layouts) } or e.layouts) do
      argv[#argv + 1] = d
      owner[d] = e
    end
  end
  if #argv == 4 then return end
  local r = proc.run(argv, { timeout = 120 })
  for n, d in ((r and r.stdout) or ""):gmatch("(%d+)\t([^\n]+)") do
    if owner[d] then owner[d].size = owner[d].size + tonumber(n) end
  end
end

local function used_pct(dir)
  local u = metrics.fs(dir)
  if not u or u.total == 0 then return nil end
  return 100 * (u.total - u.free) / u.total
end

-- Remove one unused image (its rootfs and layouts) through image.prune's checks.
local function remove(e, keep)
  local only = {}
  if e.rootfs then only[e.rootfs] = true end
  for _, d in ipairs(e.layouts) do only[d] = true end
  -- (riklet.image is loaded here, by the first removal: a node without images never needs its code)
  local removed, err = require("riklet.image").prune(keep, { layouts = true, only = only })
  return removed or {}, err
end

-- One pass. opts.all: every unused image; else the oldest unused ones while the state dir is above
-- --image-gc-high (down to --image-gc-low), and those unused for longer than --image-gc-age.
function M.collect(cfg, records, opts)
  opts = opts or {}
  local held = require("riklet.store").held_ids()
  if #held > 0 then
    local why = ("no image removed: the record%s of %s cannot be read (kept in quarantine) and may name any image; "
      .. "deal with %s (see the log at start, `riklet ps`), then restart riklet"):format(#held == 1 and "" or "s",
      table.concat(held, ", "), #held == 1 and "it" or "them")
    log("warn", "%s", why)
    M.stats.runs = M.stats.runs + 1
    M.stats.last_run = core.time()
    M.stats.last_removed = {}
    M.stats.last_error = why
    return { removed = {}, held = held }
  end
  local keep = {}
  for _, r in ipairs(records or {}) do
    -- a create in progress may hold an image its record does not name yet: wait for it
    if r.status == "CREATING" and not opts.offline then
      log("debug", "instance %s is being created: image garbage collection waits for the next pass", tostring(r.id))
      return { removed = {}, postponed = true }
    end
    if M.in_use(r) then
      for _, c in ipairs(type(r.containers) == "table" and r.containers or {}) do
        if type(c) == "table" and type(c.digest) == "string" then keep[c.digest] = true end
      end
    end
  end
  local imgs = M.list(cfg, records)
  local removed, errs = {}, {}
  local function drop(e, why)
    local r, err = remove(e, keep)
    for _, d in ipairs(r) do removed[#removed + 1] = d end
    if err then errs[#errs + 1] = err end
    if #r > 0 then log("info", "removed image %s (%s; last used %s): %s", e.digest, why,
      e.last_use > 0 and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(e.last_use)) or "never", table.concat(r, ", ")) end
  end
  local now = core.time()
  local high, low, age = tonumber(cfg.image_gc_high) or 0, tonumber(cfg.image_gc_low) or 0, tonumber(cfg.image_gc_age) or 0
  local dir = cfg.state_dir
  local before = used_pct(dir)
  for _, e in ipairs(imgs) do
    if not keep[e.digest] then
      if opts.all then drop(e, "prune")
      elseif age > 0 and e.last_use < now - age then drop(e, ("unused for more than %ds, --image-gc-age"):format(age)) end
    end
  end
  if not opts.all and high > 0 and before and before >= high then
    for _, e in ipairs(imgs) do
      local pct = used_pct(dir)
      if not pct or pct <= low then break end
      if not keep[e.digest] and (e.rootfs and fs.exists(e.rootfs) or (e.layouts[1] and fs.exists(e.layouts[1]))) then
        drop(e, ("state dir %.0f%% used, above --image-gc-high %g%%"):format(pct, high))
      end
    end
    local after = used_pct(dir)
    if after and after > low then
      log("warn", "the state dir %s is still %.0f%% used after removing every unused image (--image-gc-low %g%%): "
        .. "images of running instances and other files fill it; free space or move --state-dir", dir, after, low)
    end
  end
  M.stats.runs = M.stats.runs + 1
  M.stats.removed = M.stats.removed + #removed
  M.stats.last_run = now
  M.stats.last_removed = removed
  M.stats.last_error = #errs > 0 and table.concat(errs, "; ") or nil
  if #errs > 0 then log("warn", "image garbage collection: %s", M.stats.last_error) end
  return { removed = removed, used_before = before, used_after = used_pct(dir) }
end

-- The daemon: a pass every --image-gc-interval seconds (first one after a minute); records_fn()
-- -> the instance records.
function M.start(cfg, records_fn)
  local interval = tonumber(cfg.image_gc_interval) or 300
  if interval <= 0 then return end
  task.spawn(function()
    task.sleep(math.min(60, interval))
    while true do
      local ok, err = pcall(M.collect, cfg, records_fn())
      if not ok then log("error", "image garbage collection failed: %s", tostring(err)) end
      task.sleep(interval)
    end
  end)
end

return M
