-- riklet.cgstats — per-instance resource usage from the cgroups of its processes (v1, v2 and
-- hybrid): CPU seconds, memory current / peak / limit, OOM kills, pids.
--
--   cgstats.of_pid(pid, name) -> {cpu_seconds=, memory_bytes=, memory_peak_bytes=, memory_limit_bytes=,
--       oom_kills=, pids=} | nil, err
--       the cgroup of process pid (a container's init, a VMM); name: the cgroup's last path
--       component must be it (runc names a container's cgroup after its id), so a reused pid is
--       never measured as the container. Fields the kernel does not give are absent (memory peak
--       on v2 before Linux 5.19, no limit = absent). A cgroup removed while it is read (its
--       container ended at that moment) gives nil, "... is gone", never partial numbers.
--   cgstats.of_instance(rec) -> {cpu_seconds=, ..., containers = {name -> metrics}} | nil
--       the sum over the running containers of a stored Pod record (nil: nothing running); for a
--       Function, its VMM process (cgstats.of_vmm).
--   cgstats.of_vmm(handle) -> {cpu_seconds=, memory_bytes= (RSS), memory_peak_bytes= (VmHWM),
--       pids= (threads), vmm_pid=} | nil, err      from /proc/PID of the VMM (QEMU, firecracker)
--       named by a Function record's vm.handle, only while that pid still has the start time the
--       handle recorded (a reused pid is not measured).
--   cgstats.cpu_percent(prev, cur, dt) -> percent of one CPU between two samples
--   cgstats.mounts() -> {v1 = {controller -> mount point}, v2 = cgroup2 mount point or nil}
--   cgstats.read: fs.read, through which every cgroup file is read (tests end a cgroup mid-read)
local fs = require "riklet.fs"
local store = require "riklet.store"

local M = {}
M.read = fs.read

local function num(path)
  local s = M.read(path, 4096)
  if not s then return nil end
  s = s:match("^%s*(%S+)")
  if s == "max" then return nil end
  return tonumber(s)
end

-- "key value" lines -> table
local function kv(path)
  local s = M.read(path, 65536)
  if not s then return nil end
  local t = {}
  for k, v in s:gmatch("(%S+)%s+(%d+)") do t[k] = tonumber(v) end
  return t
end

local mounts_cache
-- controller -> mount point of its v1 hierarchy; v2 = the cgroup2 mount
function M.mounts()
  if mounts_cache then return mounts_cache end
  local s = fs.read("/proc/self/mountinfo", 4 * 1024 * 1024) or ""
  local m = { v1 = {} }
  -- (only the lines that name a cgroup are parsed: a node with 1,000 Pods has ~3,000 mounts)
  for line in s:gmatch("[^\n]+") do
    if line:find("cgroup", 1, true) then
      local mnt = line:match("^%S+ %S+ %S+ %S+ (%S+)")
      local fstype, opts = line:match(" %- (%S+) %S+ (%S+)$")
      if fstype == "cgroup2" then m.v2 = m.v2 or mnt
      elseif fstype == "cgroup" then
        for c in opts:gmatch("[^,]+") do m.v1[c] = m.v1[c] or mnt end
      end
    end
  end
  mounts_cache = m
  return m
end

-- v1 memory limits above this are "no limit" (the kernel's PAGE_COUNTER_MAX rounded)
local UNLIMITED = 0x1p62

function M.of_pid(pid, name)
  pid = math.floor(tonumber(pid) or 0)
  if pid <= 0 then return nil, "no process" end
  local s = fs.read("/proc/" .. pid .. "/cgroup", 65536)
  if not s then return nil, ("process %d is gone"):format(pid) end
  local v1, v2 = {}, nil
  for _, ctl, path in s:gmatch("(%d+):([^:\n]*):([^\n]*)") do
    if ctl == "" then v2 = path
    else
      for c in ctl:gmatch("[^,]+") do v1[c] = path end
    end
  end
  local mt = M.mounts()
  local out = {}
  local function owned(path)
    return path and (not name or path:match("([^/]+)$") == name)
  end
  -- read: its directories all still there after the reads (a file missing then is one the kernel
  -- does not have); one gone means the container ended meanwhile, and what was read may be partial
  local function still(...)
    for _, d in ipairs({ ... }) do
      if not fs.exists(d) then return nil, ("the cgroup of process %d is gone (its container ended)"):format(pid) end
    end
    return out
  end
  if v1.memory and mt.v1.memory then
    if not owned(v1.memory) then return nil, ("process %d is not in the cgroup of %s"):format(pid, tostring(name)) end
    local d = mt.v1.memory .. v1.memory
    out.memory_bytes = num(d .. "/memory.usage_in_bytes")
    out.memory_peak_bytes = num(d .. "/memory.max_usage_in_bytes")
    local lim = num(d .. "/memory.limit_in_bytes")
    if lim and lim < UNLIMITED then out.memory_limit_bytes = lim end
    local oc = kv(d .. "/memory.oom_control")
    out.oom_kills = oc and oc.oom_kill
    local cd, pd = d, d
    if v1.cpuacct and mt.v1.cpuacct then
      cd = mt.v1.cpuacct .. v1.cpuacct
      local ns = num(cd .. "/cpuacct.usage")
      out.cpu_seconds = ns and ns / 1e9
    end
    if v1.pids and mt.v1.pids then
      pd = mt.v1.pids .. v1.pids
      out.pids = num(pd .. "/pids.current")
    end
    return still(d, cd, pd)
  end
  if v2 and mt.v2 then
    if not owned(v2) then return nil, ("process %d is not in the cgroup of %s"):format(pid, tostring(name)) end
    local d = mt.v2 .. (v2 == "/" and "" or v2)
    local cs = kv(d .. "/cpu.stat")
    out.cpu_seconds = cs and cs.usage_usec and cs.usage_usec / 1e6
    out.memory_bytes = num(d .. "/memory.current")
    out.memory_peak_bytes = num(d .. "/memory.peak")
    out.memory_limit_bytes = num(d .. "/memory.max")
    local ev = kv(d .. "/memory.events")
    out.oom_kills = ev and ev.oom_kill
    out.pids = num(d .. "/pids.current")
    return still(d)
  end
  return nil, ("no memory cgroup for process %d"):format(pid)
end

local FIELDS = { "cpu_seconds", "memory_bytes", "memory_peak_bytes", "memory_limit_bytes", "oom_kills", "pids" }
M.FIELDS = FIELDS

-- USER_HZ: clock ticks of /proc/PID/stat's utime and stime (100 on every Linux riklet runs on)
local USER_HZ = 100

function M.of_vmm(handle)
  local pid = type(handle) == "table" and math.floor(tonumber(handle.pid) or 0) or 0
  if pid <= 0 then return nil, "no VMM pid in the record" end
  local stat = fs.read("/proc/" .. pid .. "/stat", 4096)
  local after = stat and stat:match("%) (.*)$")
  if not after then return nil, ("VMM process %d is gone"):format(pid) end
  local f = {}
  for x in after:gmatch("%S+") do f[#f + 1] = x end
  -- fields 3, 14, 15 and 22 of proc(5) are the 1st, 12th, 13th and 20th after "pid (comm)"
  if f[1] == "Z" or f[1] == "X" then return nil, ("VMM process %d has ended"):format(pid) end
  if handle.starttime and tonumber(f[20]) ~= handle.starttime then
    return nil, ("pid %d is not the VMM any more (another start time)"):format(pid)
  end
  local st = require("riklet.status").proc_status(pid) or {}
  return {
    cpu_seconds = ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / USER_HZ,
    memory_bytes = st.rss_kib and st.rss_kib * 1024, memory_peak_bytes = st.hwm_kib and st.hwm_kib * 1024,
    pids = st.threads, vmm_pid = pid,
  }
end

function M.of_instance(rec)
  if rec.kind == "Function" then
    local m = type(rec.vm) == "table" and M.of_vmm(rec.vm.handle)
    if not m then return nil end
    m.containers = {}
    return m
  end
  local total, any, unlimited = { containers = {} }, false, false
  for _, c in ipairs(type(rec.containers) == "table" and rec.containers or {}) do
    if type(c) == "table" and c.state == "running" and c.pid then
      local m = M.of_pid(c.pid, c.runc_id or store.runc_id(rec.id, c.name))
      if m then
        any = true
        total.containers[c.name] = m
        for _, f in ipairs(FIELDS) do
          if m[f] then total[f] = (total[f] or 0) + m[f] end
        end
        unlimited = unlimited or not m.memory_limit_bytes
      end
    end
  end
  if unlimited then total.memory_limit_bytes = nil end -- one container without a limit: the Pod has none
  return any and total or nil
end

function M.cpu_percent(prev, cur, dt)
  if not (prev and cur and prev.cpu_seconds and cur.cpu_seconds and dt and dt > 0) then return nil end
  return math.max(0, 100 * (cur.cpu_seconds - prev.cpu_seconds) / dt)
end

return M
