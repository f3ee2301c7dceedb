-- riklet.rootfs — the Function root filesystem cache: one file per URL under the cache dir,
-- streamed to disk (never whole in memory), size-capped, revalidated with ETag / Last-Modified.
-- Contract with the Function driver: /work/wt/VMM.md (README "Firecracker backend and rootfs cache").
--
--   rootfs.configure{ cache_dir =, max_bytes =, timeout =, low_speed_bytes =, low_speed_time = }
--   rootfs.fetch(url, { cancel = function() return bool end }) -> path | nil, err    (yields)
--       path: the cached, complete file for url, never written again by riklet (a newer version
--       replaces it by rename, so a process holding the old one open keeps the old bytes).
--       Concurrent fetches of one URL share one download; a fetch whose cancel() turns true
--       stops waiting at once (checked every 0.2 s), and the download is abandoned when nobody
--       else waits for it. A partial download never becomes the cache: it goes to a temporary
--       file renamed over the cache only once its length is verified.
--   rootfs.check_ext4(path) -> true | nil, err       (superblock magic)
--   rootfs.stats: {downloads=, not_modified=, hits=, abandoned=} for tests and metrics
--
-- URLs: http:// and https:// (through riklet.http; redirects followed), file:///abs/path (copied
-- with cp --reflink=auto --sparse=always in a child process, revalidated by size, mtime and inode:
-- libcurl's file:// reads a whole file in one blocking call, which would stall the loop).
-- Cache files: url_<sha256 of the URL>.img and beside it url_<sha256>.json {url, etag,
-- last_modified, size, mtime, ino}; temporary files .url_<sha256>.<pid>.<n>.part.
local core = require "riklet.core"
local fs = require "riklet.fs"
local http = require "riklet.http"
local json = require "riklet.json"
local proc = require "riklet.proc"
local task = require "riklet.task"

local M = {}

local GiB = 1024 * 1024 * 1024
local cfg = {
  cache_dir = nil, max_bytes = 4 * GiB, timeout = 3600, low_speed_bytes = 1024, low_speed_time = 60,
  connect_timeout = 30,
}
M.stats = { downloads = 0, not_modified = 0, hits = 0, abandoned = 0 }

local function log(level, fmt, ...) core.log(level, "rootfs", fmt:format(...)) end

function M.configure(t)
  for k, v in pairs(t or {}) do
    if cfg[k] == nil and k ~= "cache_dir" then error("rootfs.configure: unknown option " .. tostring(k), 2) end
    cfg[k] = v
  end
end

-- The URL without its user:password@ (messages and logs reach operators and the scheduler).
local function shown(url) return (url:gsub("^(%a[%w+.-]*://)[^/?#@]*@", "%1***@")) end
M.shown = shown

local function human(n)
  if n >= GiB then return ("%.1f GiB"):format(n / GiB) end
  if n >= 1024 * 1024 then return ("%.1f MiB"):format(n / 1048576) end
  return ("%d bytes"):format(n)
end

-- Control characters and overlong text out of what a server said, for one log line.
local function excerpt(s)
  s = (s or ""):gsub("[%c]+", " "):gsub("^%s+", ""):gsub("%s+$", "")
  if #s > 200 then s = s:sub(1, 200) .. "..." end
  return s
end

local function read_meta(p)
  local data = fs.read(p, 65536)
  if not data then return nil end
  local m = json.decode(data)
  if type(m) ~= "table" then return nil end
  return m
end

-- Is the cache file there, complete as recorded?
local function cached(job)
  local m = read_meta(job.meta)
  if not m or m.url ~= job.url then return nil end
  local st = fs.stat(job.path)
  if not st or st.type ~= "file" or st.size ~= m.size then return nil end
  return m
end

local seq = 0
local function tmp_name(job)
  seq = seq + 1
  return ("%s/.%s.%d.%d.part"):format(cfg.cache_dir, job.name, core.getpid(), seq)
end

-- Put tmp (verified) in place and record where it came from.
local function install(job, tmp, meta)
  local ok, err = fs.rename(tmp, job.path)
  if not ok then
    fs.unlink(tmp)
    return nil, err
  end
  meta.url = job.url
  ok, err = fs.write_atomic(job.meta, json.encode(meta), "0600")
  if not ok then return nil, "cannot record the cache entry: " .. err end
  return job.path
end

local function fetch_http(job)
  local m = cached(job)
  local tmp = tmp_name(job)
  local req, err = http.start({
    url = job.url, out = tmp, max_bytes = cfg.max_bytes, timeout = cfg.timeout, follow = true,
    connect_timeout = cfg.connect_timeout, low_speed_bytes = cfg.low_speed_bytes,
    low_speed_time = cfg.low_speed_time,
    if_none_match = m and m.etag or nil,
    if_modified_since = m and not m.etag and m.last_modified or nil,
  })
  if not req then return nil, err end
  job.req = req
  local res, kind
  res, err, kind = req:wait()
  job.req = nil
  if not res then
    fs.unlink(tmp)
    if kind == "too_big" then
      return nil, ("%s (the rootfs size cap, --rootfs-max-size, is %s)"):format(err, human(cfg.max_bytes))
    end
    return nil, err
  end
  if res.status == 304 and m then
    fs.unlink(tmp)
    M.stats.not_modified = M.stats.not_modified + 1
    log("debug", "%s: not modified, cached copy kept", shown(job.url))
    return job.path
  end
  if res.status ~= 200 then
    fs.unlink(tmp)
    local said = excerpt(res.body)
    return nil, ("GET %s: the server answered HTTP %d%s"):format(shown(job.url), res.status,
      said ~= "" and (" (" .. said .. ")") or "")
  end
  local st = fs.stat(tmp)
  local want = res.content_length or res.bytes
  if not st or st.size ~= res.bytes or st.size ~= want then
    fs.unlink(tmp)
    return nil, ("GET %s: %s bytes on disk, %s received, %s announced: the download is incomplete"):format(
      shown(job.url), st and st.size or "no", res.bytes, tostring(res.content_length))
  end
  if res.bytes == 0 then
    fs.unlink(tmp)
    return nil, ("GET %s: the server sent an empty file"):format(shown(job.url))
  end
  M.stats.downloads = M.stats.downloads + 1
  log("info", "downloaded %s (%s) in %.1fs", shown(job.url), human(res.bytes), core.now() - job.t0)
  return install(job, tmp, { etag = res.etag, last_modified = res.last_modified, size = res.bytes })
end

local function fetch_file(job)
  local src = job.url:sub(8)
  if src:sub(1, 1) ~= "/" or src:find("%%") or src:find("?", 1, true) then
    return nil, ("%s: a file URL must be file:///absolute/path (no host, no %%-escapes, no query)"):format(shown(job.url))
  end
  local st, err = fs.stat(src)
  if st and st.type == "link" then
    -- follow it, and say so if it points nowhere
    local r = proc.run({ "readlink", "-e", src })
    if not r or r.code ~= 0 then return nil, ("%s: %s is a dangling symbolic link"):format(job.url, src) end
    st, err = fs.stat((r.stdout:gsub("%s+$", "")))
  end
  if not st then return nil, ("%s: %s"):format(job.url, err) end
  if st.type ~= "file" then return nil, ("%s: %s is not a regular file (%s)"):format(job.url, src, st.type) end
  if st.size > cfg.max_bytes then
    return nil, ("%s: %s is %s, over the rootfs size cap of %s (--rootfs-max-size)"):format(
      job.url, src, human(st.size), human(cfg.max_bytes))
  end
  local m = cached(job)
  -- the mtime is kept as text: as a JSON number it came back a few hundred ns off now and then
  -- (cJSON prints 15 digits when they read back within its tolerance), and every such file was
  -- copied again
  local mtime = ("%.9f"):format(st.mtime)
  if m and m.size == st.size and m.mtime == mtime and m.ino == st.ino then
    M.stats.not_modified = M.stats.not_modified + 1
    return job.path
  end
  local tmp = tmp_name(job)
  local p, perr = proc.spawn({ "cp", "--reflink=auto", "--sparse=always", "--", src, tmp },
    { stderr = tmp .. ".err" })
  if not p then return nil, perr end
  job.proc = p
  local code = p:wait()
  job.proc = nil
  local cerr = excerpt(fs.read(tmp .. ".err", 4096))
  fs.unlink(tmp .. ".err")
  if job.abandoned then fs.unlink(tmp) return nil, "abandoned" end
  local got = fs.stat(tmp)
  if code ~= 0 or not got or got.size ~= st.size then
    fs.unlink(tmp)
    return nil, ("%s: copying %s failed: %s"):format(job.url, src, cerr ~= "" and cerr or "short copy")
  end
  M.stats.downloads = M.stats.downloads + 1
  return install(job, tmp, { size = st.size, mtime = mtime, ino = st.ino })
end

local inflight = {} -- [cache name] = job

-- Temporary files of an earlier riklet (a crash mid-download) are never finished: remove them once.
-- One riklet runs per state dir (its lock), so a .part of another pid is nobody's.
local swept = {}
local function sweep(dir)
  if swept[dir] then return end
  swept[dir] = true
  local me = tostring(core.getpid())
  for _, f in ipairs(fs.list(dir) or {}) do
    local pid = f:match("^%.url_%x+%.(%d+)%.%d+%.part$") or f:match("^%.url_%x+%.(%d+)%.%d+%.part%.err$")
    if pid and pid ~= me then
      fs.unlink(dir .. "/" .. f)
      log("info", "removed %s/%s, left by an interrupted download", dir, f)
    end
  end
end

local function run_job(job)
  local ok, path, err = pcall(job.url:sub(1, 7) == "file://" and fetch_file or fetch_http, job)
  if not ok then path, err = nil, tostring(path) end
  if inflight[job.name] == job then inflight[job.name] = nil end
  job.done:set({ path, err })
end

local function check_url(url)
  if type(url) ~= "string" or url == "" then return nil, "the rootfs URL is missing" end
  if #url > 4096 or url:find("[%c ]") then return nil, "the rootfs URL holds spaces or control characters" end
  local scheme = url:match("^(%a[%w+.-]*)://")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" and scheme ~= "file" then
    return nil, ("rootfs URL %q: only http://, https:// and file:// are supported"):format(shown(url))
  end
  return true
end

function M.fetch(url, opts)
  opts = opts or {}
  local ok, err = check_url(url)
  if not ok then return nil, err end
  if not cfg.cache_dir then return nil, "riklet.rootfs is not configured (rootfs.configure{cache_dir=})" end
  ok, err = fs.mkdir_p(cfg.cache_dir, "0700")
  if not ok then return nil, err end
  sweep(cfg.cache_dir)
  local name = "url_" .. http.sha256(url)
  local job = inflight[name]
  if not job then
    job = {
      url = url, name = name, path = cfg.cache_dir .. "/" .. name .. ".img",
      meta = cfg.cache_dir .. "/" .. name .. ".json", done = task.event(), waiters = 0, t0 = core.now(),
    }
    inflight[name] = job
    task.spawn(run_job, job)
  else
    M.stats.hits = M.stats.hits + 1
  end
  job.waiters = job.waiters + 1
  while true do
    local r = job.done:wait(opts.cancel and 0.2 or nil)
    if r then
      job.waiters = job.waiters - 1
      return r[1], r[2]
    end
    if opts.cancel and opts.cancel() then
      job.waiters = job.waiters - 1
      if job.waiters == 0 and not job.done.is_set then
        -- nobody wants it any more: stop the transfer; a later fetch starts afresh
        job.abandoned = true
        if inflight[name] == job then inflight[name] = nil end
        if job.req then job.req:cancel() end
        if job.proc then job.proc:kill(9) end
        M.stats.abandoned = M.stats.abandoned + 1
        log("info", "download of %s abandoned: nobody waits for it any more", shown(url))
      end
      return nil, ("the rootfs download of %s was cancelled"):format(shown(url))
    end
  end
end

-- ext2/3/4 superblock: 1024 bytes in, magic 0xEF53 (little endian) at offset 56.
function M.check_ext4(path)
  local data, err = fs.read_from(path, 1024 + 56, 2)
  if not data then return nil, err end
  if data ~= "\083\239" then
    local st = fs.stat(path)
    return nil, ("%s is not an ext4 image (no ext4 superblock magic at byte 1080; %s): the Function's rootfs "
      .. "must be an ext4 filesystem image (mkfs.ext4 -d DIR FILE)"):format(path, st and human(st.size) or "unreadable")
  end
  return true
end

return M
