-- riklet.image — container images: pull with skopeo into an OCI layout under <state>/images/,
-- unpack once per manifest digest with umoci under <state>/rootfs/, and give each container
-- instance its own writable overlayfs on top of the shared read-only rootfs.
--
--   image.init(cfg) -> true | nil, err
--       cfg: the agent config (paths.images, paths.rootfs, skopeo, umoci, insecure_registries,
--       pull_timeout), or a plain {state_dir=} for tests.
--   image.ensure(ref, opts) -> {digest=, rootfs=, config=, bundle=, ref=} | nil, err
--       ref: "name[:tag]", "host:port/path/name[:tag]", "name@sha256:<hex>", "oci:/abs/layout[:tag]"
--       opts: timeout (seconds), insecure_registries (list of host[:port]), pull = "missing"
--       (default: use the local copy of a tag when there is one) | "always" | "never" (only the
--       local copy: an image not on this node fails with ErrImageNeverPull in the reason).
--       rootfs = the unpacked root filesystem (shared, never written), config = the config.json
--       umoci generated (a template for riklet.oci.edit_config), bundle = their directory.
--       Concurrent ensures of one image coalesce: the later callers wait for the first.
--   image.mount_rootfs(instance_dir, img) -> rootfs_path | nil, err
--       img: a table from ensure, or the unpacked rootfs path. Mounts <dir>/rootfs as an overlay
--       (upper <dir>/upper, work <dir>/work). Already mounted is success.
--   image.umount_rootfs(instance_dir) -> true | nil, err     (not mounted is success)
--   image.prune(keep_digests_set, {layouts=bool}) -> removed dirs | nil, err
--       remove unpacked images neither kept nor under a mounted overlay (and unused layouts)
--   image.local_ref(ref, source) -> ref | nil, reason
--       an oci:/path reference is taken from standalone manifests and `riklet run` (source
--       "standalone:..." / "run:..."); from any other front-end (the scheduler) only when its
--       layout resolves (symbolic links followed) inside one of --local-image-dirs. Returns the
--       reference to use (oci: with the resolved path), or the reason it is refused.
--   image.local_file(url, source) -> url | nil, reason
--       the same rule for a Function's file:///path rootfs (resolved: file://REALPATH).
--   image.parse_ref, image.layout_lookup, image.digest_key, image.is_mountpoint: from riklet.image.c
local c = require "riklet.image.c"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"
local fault = require "riklet.fault"
local imagecfg = require "riklet.imagecfg"

local M = {}
M.parse_ref = c.parse_ref
M.layout_lookup = c.layout_lookup
M.digest_key = c.digest_key
M.digest_valid = c.digest_valid
M.is_mountpoint = c.is_mountpoint
M.tmpfs_mount, M.umount = c.tmpfs_mount, c.overlay_umount -- (Pod emptyDir volumes of medium Memory)

local LAYOUT_REF = "image" -- the ref name of the one image in each of our layouts

local cfg = imagecfg.cfg -- (set up by image.init, riklet.imagecfg's)
M.stats = { pulls = 0, unpacks = 0 } -- counters, for tests and metrics

local function log(level, fmt, ...) core.log(level, "image", fmt:format(...)) end

M.init = imagecfg.init

-- ---- helpers ------------------------------------------------------------------------------

-- The useful part of a tool's stderr: logrus lines (`time=… level=fatal msg="…"`) reduced to msg.
local function last_lines(s, max)
  local msgs = {}
  for line in (s or ""):gmatch("[^\n]+") do
    local m = line:match('level=%a+ msg="(.*)"%s*$')
    msgs[#msgs + 1] = m and m:gsub('\\"', '"') or line
  end
  s = table.concat(msgs, "; "):gsub("%s+$", "")
  if #s > (max or 600) then s = "..." .. s:sub(-(max or 600)) end
  return s
end

local function is_insecure(registry, opts)
  for _, r in ipairs(opts.insecure_registries or cfg.insecure) do
    if r == registry then return true end
  end
  return false
end

local tmp_seq = 0
local function tmp_name(dir, what)
  tmp_seq = tmp_seq + 1
  return ("%s/.tmp-%s-%d-%d"):format(dir, what, core.getpid(), tmp_seq)
end

local function tool_missing(r, tool, pkg)
  if r == nil then return ("%s could not be started; install it (apt-get install %s) or set --%s"):format(tool, pkg, pkg) end
end

-- Turn skopeo's stderr into what an operator needs to read.
local function explain_pull(ref, registry, res, timeout, layout_dir)
  local e = res.stderr or ""
  local low = e:lower()
  local tail = last_lines(e, 400)
  if res.timed_out then
    return ("pulling %s timed out after %gs (registry %s slow or unreachable; raise --pull-timeout)"):format(ref, timeout, registry)
  end
  if low:find("manifest unknown", 1, true) or low:find("name unknown", 1, true)
      or low:find("not found", 1, true) or low:find("does not exist", 1, true) then
    return ("image %s not found in registry %s (check the repository name and tag): %s"):format(ref, registry, tail)
  end
  if low:find("server gave http response to https client", 1, true) then
    return ("registry %s speaks plain HTTP: add it to --insecure-registries to pull %s"):format(registry, ref)
  end
  if low:find("x509", 1, true) or low:find("certificate", 1, true) or low:find("tls:", 1, true) then
    return ("TLS verification of registry %s failed while pulling %s (install its CA, or list it in --insecure-registries): %s"):format(registry, ref, tail)
  end
  if low:find("unauthorized", 1, true) or low:find("authentication required", 1, true)
      or low:find("denied", 1, true) or low:find("401", 1, true) or low:find("403", 1, true) then
    if cfg.authfile then
      return ("registry %s refused access to %s with the credentials of --auth-file %s (wrong user name or password, "
        .. "no entry for %s in it, or the repository does not exist): %s"):format(registry, ref, cfg.authfile, registry, tail)
    end
    return ("registry %s refused access to %s (authentication required, or the repository does not exist): %s"):format(registry, ref, tail)
  end
  if low:find("rejected", 1, true) and low:find("polic", 1, true) then
    return ("the signature policy (/etc/containers/policy.json) rejected %s: %s"):format(ref, tail)
  end
  if low:find("no space left", 1, true) or low:find("quota", 1, true) then
    return ("no space left on the disk holding %s while pulling %s: free space or move --state-dir"):format(layout_dir, ref)
  end
  if low:find("connection refused", 1, true) or low:find("no such host", 1, true) or low:find("i/o timeout", 1, true)
      or low:find("network is unreachable", 1, true) or low:find("dial tcp", 1, true)
      or low:find("connection reset", 1, true) or low:find("eof", 1, true) then
    return ("registry %s is unreachable while pulling %s (check that it runs and that this node can reach it): %s"):format(registry, ref, tail)
  end
  return ("pulling %s failed (%s): %s"):format(ref, proc.describe(res.code, res.signal), tail)
end

-- Run fn once per key at a time; later callers for the same key wait and share its result.
local inflight = {}
local function coalesce(key, fn, ...)
  local w = inflight[key]
  if w then
    w.waiters = w.waiters + 1
    local res = w.done:wait()
    return res[1], res[2]
  end
  w = { done = task.event(), waiters = 0 }
  inflight[key] = w
  local ok, a, b = pcall(fn, ...)
  inflight[key] = nil
  if not ok then a, b = nil, "internal error: " .. tostring(a) end
  w.done:set({ a, b })
  if not ok then error(b, 0) end
  return a, b
end

-- ---- pull ----------------------------------------------------------------------------------

-- skopeo copy REF → <images>/<key> (a layout holding the one image, ref name "image").
local function pull(r, opts)
  local layout = cfg.images .. "/" .. r.key
  if not fs.safe_name(r.key, 255) then return nil, "internal error: unsafe image key " .. r.key end
  local fresh = not fs.exists(layout .. "/index.json")
  local old_digest
  if not fresh then
    old_digest = c.layout_lookup(layout, LAYOUT_REF)
    if old_digest and opts.pull ~= "always" then return layout, old_digest end
  end
  if opts.pull == "never" then
    return nil, ("image %s is not on this node and its pull policy is Never (ErrImageNeverPull): put it in the "
      .. "image cache first (or use pull policy IfNotPresent)"):format(r.canonical)
  end
  local fok, ferr = fault.point("image.pull") if not fok then return nil, ferr end
  local target = layout
  if fresh then
    -- first pull: into a temporary layout renamed at the end, so a failure leaves nothing behind
    fs.rm_rf(layout)
    target = tmp_name(cfg.images, r.key:sub(1, 64))
  end
  local argv = { cfg.skopeo }
  if not fs.exists("/etc/containers/policy.json") then argv[#argv + 1] = "--insecure-policy" end
  argv[#argv + 1] = "copy"
  argv[#argv + 1] = "--quiet"
  if is_insecure(r.registry, opts) then argv[#argv + 1] = "--src-tls-verify=false" end
  if cfg.authfile then argv[#argv + 1] = "--src-authfile=" .. cfg.authfile end
  argv[#argv + 1] = r.transport
  argv[#argv + 1] = "oci:" .. target .. ":" .. LAYOUT_REF
  local timeout = opts.timeout or cfg.pull_timeout
  log("info", "pulling %s", r.canonical)
  local t0 = core.now()
  local res, err = proc.run(argv, { timeout = timeout })
  -- imagecfg.on_pull(ok, seconds): set by the metrics (riklet_image_pulls_total, pull duration)
  if imagecfg.on_pull then pcall(imagecfg.on_pull, res ~= nil and res.code == 0, core.now() - t0) end
  local msg = tool_missing(res, "skopeo", "skopeo")
  if msg then
    if fresh then fs.rm_rf(target) end
    return nil, msg .. ": " .. tostring(err)
  end
  if res.code ~= 0 then
    if fresh then fs.rm_rf(target) end
    return nil, explain_pull(r.canonical, r.registry, res, timeout, cfg.images)
  end
  M.stats.pulls = M.stats.pulls + 1
  if fresh then
    local ok, rerr = fs.rename(target, layout)
    if not ok then
      fs.rm_rf(target)
      return nil, ("cannot move the pulled image into place: %s"):format(rerr)
    end
  end
  local d, lerr = c.layout_lookup(layout, LAYOUT_REF)
  if not d then return nil, ("pulled %s but cannot read it back: %s"):format(r.canonical, lerr) end
  if not fresh and d ~= old_digest then
    -- the tag moved: drop the blobs only the old image used (best effort)
    local dropped, derr = c.layout_drop_untagged(layout)
    if not dropped then log("warn", "cannot tidy %s: %s", layout, derr) end
    local g = proc.run({ cfg.umoci, "gc", "--layout", layout }, { timeout = 120 })
    if not (g and g.code == 0) then
      log("warn", "umoci gc of %s failed: %s", layout, g and last_lines(g.stderr, 300) or "umoci did not start")
    end
  end
  log("info", "pulled %s (%s) in %.1fs", r.canonical, d, core.now() - t0)
  return layout, d
end

-- ---- unpack --------------------------------------------------------------------------------

local function cached(dest, digest, canonical)
  if fs.exists(dest .. "/rootfs") and fs.exists(dest .. "/config.json") then
    return { digest = digest, rootfs = dest .. "/rootfs", config = dest .. "/config.json", bundle = dest, ref = canonical }
  end
end

-- umoci unpack LAYOUT:REF → <rootfs>/sha256_<hex>, via a temporary directory and a rename.
local function unpack(layout, refname, digest, canonical, opts)
  local dkey, kerr = c.digest_key(digest)
  if not dkey then return nil, kerr end
  local dest = cfg.rootfs .. "/" .. dkey
  local hit = cached(dest, digest, canonical)
  if hit then return hit end
  if fs.exists(dest) then
    log("warn", "%s is incomplete (no rootfs or config.json): unpacking it again", dest)
    local ok, err = fs.rm_rf(dest)
    if not ok then return nil, "cannot remove the damaged unpacked image: " .. err end
  end
  local fok, ferr = fault.point("image.unpack") if not fok then return nil, ferr end
  local tmp = tmp_name(cfg.rootfs, dkey)
  local argv = { cfg.umoci, "unpack" }
  if core.getuid() ~= 0 then argv[#argv + 1] = "--rootless" end
  argv[#argv + 1] = "--image"
  argv[#argv + 1] = layout .. ":" .. refname
  argv[#argv + 1] = tmp
  log("info", "unpacking %s (%s)", canonical, digest)
  local t0 = core.now()
  local res, err = proc.run(argv, { timeout = opts.unpack_timeout or cfg.unpack_timeout })
  local msg = tool_missing(res, "umoci", "umoci")
  if msg then return nil, msg .. ": " .. tostring(err) end
  if res.code ~= 0 then
    fs.rm_rf(tmp)
    local e = res.stderr or ""
    if res.timed_out then
      return nil, ("unpacking %s timed out (disk too slow or image too large)"):format(canonical)
    end
    if e:lower():find("no space left", 1, true) then
      return nil, ("no space left on the disk holding %s while unpacking %s: free space or move --state-dir"):format(cfg.rootfs, canonical)
    end
    return nil, ("unpacking %s with umoci failed (%s): %s"):format(canonical, proc.describe(res.code, res.signal), last_lines(e, 400))
  end
  if not fs.exists(tmp .. "/rootfs") or not fs.exists(tmp .. "/config.json") then
    fs.rm_rf(tmp)
    return nil, ("umoci unpacked %s without a rootfs or config.json"):format(canonical)
  end
  local ok, rerr = fs.rename(tmp, dest)
  if not ok then
    fs.rm_rf(tmp)
    hit = cached(dest, digest, canonical) -- another ref with the same digest got there first
    if hit then return hit end
    return nil, ("cannot move the unpacked image into %s: %s"):format(dest, rerr)
  end
  M.stats.unpacks = M.stats.unpacks + 1
  log("info", "unpacked %s in %.1fs", canonical, core.now() - t0)
  return cached(dest, digest, canonical)
end

local function ensure(r, opts)
  local layout, refname, digest
  if r.layout ~= "" then
    layout, refname = r.layout, r.tag
    local d, err, missing = c.layout_lookup(layout, refname)
    if not d then
      if not fs.exists(layout .. "/index.json") then
        return nil, ("image %s: there is no OCI layout at %s (no index.json)"):format(r.canonical, layout)
      end
      if missing then return nil, ("image %s: %s"):format(r.canonical, err) end
      return nil, err
    end
    digest = d
  else
    local d
    layout, d = pull(r, opts)
    if not layout then return nil, d end
    refname, digest = LAYOUT_REF, d
  end
  return coalesce("unpack " .. digest, unpack, layout, refname, digest, r.canonical, opts)
end

function M.ensure(ref, opts)
  opts = opts or {}
  if not cfg.ready then return nil, "riklet.image is not initialised (image.init)" end
  if type(ref) ~= "string" then return nil, "image reference must be a string" end
  if opts.pull ~= nil and opts.pull ~= "missing" and opts.pull ~= "always" and opts.pull ~= "never" then
    return nil, ("image pull policy %q is not one of: missing, always, never"):format(tostring(opts.pull))
  end
  local r, err = c.parse_ref(ref)
  if not r then return nil, "invalid image reference: " .. err end
  return coalesce("ensure " .. r.canonical, ensure, r, opts)
end

-- path (an oci: layout, a file:// rootfs) from `source`: real path | false (standalone or run: any
-- path) | nil, reason. kind: what is refused ("oci: references"); shown: the reference as given;
-- what: "the layout" / "the file"; unresolved: what could not be resolved.
local function in_local_dirs(path, source, kind, shown, what, unresolved)
  source = tostring(source or "")
  if source:match("^standalone:") or source:match("^run:") then return false end
  local front = source:match("^[%w-]+") or "network"
  local dirs = cfg.local_dirs or {}
  if #dirs == 0 then
    return nil, ("%s from the %s are refused; list the directory with --local-image-dirs"):format(kind, front)
  end
  local real, err = c.realpath(path)
  if not real then return nil, ("%s: cannot resolve %s: %s"):format(shown, unresolved, err) end
  local function inside(rd) return rd and (real == rd or real:sub(1, #rd + 1) == (rd == "/" and "/" or rd .. "/")) end
  for _, d in ipairs(dirs) do
    if inside(c.realpath(d)) then
      -- whatever the list says (a listed dir that holds the state dir, or a link to it): another
      -- tenant's pulled image or Function disk there is never served to a network front-end
      for _, sd in ipairs({ cfg.state, cfg.images, cfg.rootfs }) do
        if inside(c.realpath(sd)) then
          return nil, ("%s: %s %s is inside riklet's state directory (%s): %s from the %s are never taken from there, "
            .. "whatever --local-image-dirs lists"):format(shown, what, real, sd, kind, front)
        end
      end
      return real
    end
  end
  return nil, ("%s: %s %s is not inside --local-image-dirs (%s); %s from the %s are refused elsewhere"):format(
    shown, what, real, table.concat(dirs, ","), kind, front)
end

function M.local_ref(ref, source)
  local r = type(ref) == "string" and c.parse_ref(ref)
  if not r or r.layout == "" then return ref end
  local real, err = in_local_dirs(r.layout, source, "oci: references", "image " .. ref, "the layout",
    "its layout directory")
  if real == false then return ref end
  if not real then return nil, err end
  return ("oci:%s:%s"):format(real, r.tag)
end

-- A file:///path (a Function's rootfs) from a front-end other than standalone/run: only when the
-- path resolves inside --local-image-dirs (as oci: layouts; else any file riklet, root, can read
-- would reach the guest: another Function's disk under STATE/instances). -> url | nil, reason
function M.local_file(url, source)
  if type(url) ~= "string" or url:sub(1, 7) ~= "file://" then return url end
  local real, err = in_local_dirs(url:sub(8), source, "file:// root filesystems", url, "the file", "the file")
  if real == false then return url end
  if not real then return nil, err end
  return "file://" .. real
end

-- ---- cache pruning -------------------------------------------------------------------------

-- Lower directories of the overlays mounted now (an unpacked rootfs in use by any instance).
local function mounted_lowers()
  local set = {}
  local text = fs.read("/proc/self/mountinfo", 64 * 1024 * 1024) or ""
  for opts in text:gmatch(" %- overlay %S+ (%S+)") do
    for lower in (opts:match("lowerdir=([^,]+)") or ""):gmatch("[^:]+") do
      set[(lower:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end))] = true
    end
  end
  return set
end

-- image.prune(keep) -> array of removed directories | nil, err
--   keep: {[digest]=true} for images that must stay (those of known instances). An unpacked
--   rootfs is removed when it is neither kept nor the lower layer of a mounted overlay. With
--   opts.layouts, pulled layouts whose image is not kept go as well (they are only a pull cache).
--   opts.only: {[dir]=true}, the directories that may go (riklet.imagegc removes one image at a time).
function M.prune(keep, opts)
  if not cfg.ready then return nil, "riklet.image is not initialised (image.init)" end
  keep, opts = keep or {}, opts or {}
  local lowers, removed, errs = mounted_lowers(), {}, {}
  local keep_keys = {}
  for d in pairs(keep) do
    local k = c.digest_key(d)
    if k then keep_keys[k] = true end
  end
  for _, name in ipairs(fs.list(cfg.rootfs) or {}) do
    local dir = cfg.rootfs .. "/" .. name
    if name:match("^sha256_%x+$") and not keep_keys[name] and not lowers[dir .. "/rootfs"] and (not opts.only or opts.only[dir])
        and not inflight["unpack sha256:" .. name:sub(8)] then
      local ok, err = fs.rm_rf(dir)
      if ok then removed[#removed + 1] = dir else errs[#errs + 1] = err end
    end
  end
  if opts.layouts then
    for _, name in ipairs(fs.list(cfg.images) or {}) do
      local dir = cfg.images .. "/" .. name
      local d = name:sub(1, 1) ~= "." and c.layout_lookup(dir, LAYOUT_REF)
      if d and not keep[d] and (not opts.only or opts.only[dir]) then
        local busy = false
        for k in pairs(inflight) do busy = busy or k:sub(1, 7) == "ensure " end
        if not busy then
          local ok, err = fs.rm_rf(dir)
          if ok then removed[#removed + 1] = dir else errs[#errs + 1] = err end
        end
      end
    end
  end
  for _, dir in ipairs(removed) do log("info", "pruned %s", dir) end
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return removed
end

-- ---- per-instance rootfs -------------------------------------------------------------------

local function check_dir(dir)
  if type(dir) ~= "string" or dir:sub(1, 1) ~= "/" or dir:find("[,:\\]") or dir:find("/%.%.?/") or dir:find("/%.%.?$") then
    return nil, ("instance directory %q must be an absolute path without ',' ':' '\\' or '..'"):format(tostring(dir))
  end
  return true
end

function M.mount_rootfs(dir, img)
  local ok, err = check_dir(dir)
  if not ok then return nil, err end
  local lower = type(img) == "table" and img.rootfs or img
  if type(lower) ~= "string" then return nil, "mount_rootfs: no unpacked rootfs given" end
  local target = dir .. "/rootfs"
  if c.is_mountpoint(target) then return target end
  ok, err = fault.point("image.overlay") if not ok then return nil, err end
  ok, err = c.overlay_mount(lower, dir .. "/upper", dir .. "/work", target)
  if not ok then return nil, err end
  return target
end

function M.umount_rootfs(dir)
  local ok, err = check_dir(dir)
  if not ok then return nil, err end
  ok, err = fault.point("image.umount") if not ok then return nil, err end
  return c.overlay_umount(dir .. "/rootfs")
end

return M
