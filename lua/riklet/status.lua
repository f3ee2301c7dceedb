-- riklet.status — STATE/agent.json: what a running riklet says about itself (pid, version, start
-- time, loop lag, worker pool, instance count). The daemon rewrites it every few seconds, replaced
-- by rename without fsync (NOSYNC): it describes a live process, so after a crash of the machine
-- it names a riklet that no longer runs whatever it holds, and an idle node does no fsync and
-- wakes no worker thread every 5 s for it (the page cache writes it back); `riklet ps` reads it. A file whose pid is not that
-- riklet any more (killed, stopped, pid reused) reads as "no riklet runs".
local core = require "riklet.core"
local fs = require "riklet.fs"
local json = require "riklet.json"
local task = require "riklet.task"

local M = {}

local NOSYNC = { sync = false }

M.INTERVAL = 5 -- seconds between two rewrites

function M.path(state_dir) return state_dir .. "/agent.json" end

-- The start time of a live process (clock ticks since boot, /proc/PID/stat field 22): with the
-- pid it names one process, so a reused pid is not mistaken for the riklet that wrote the file.
-- nil for a process that is gone or a zombie (exited, not yet reaped).
local function start_ticks(pid)
  local s = fs.read("/proc/" .. pid .. "/stat", 4096)
  local after = s and s:match("^.*%) (.*)$") -- after the LAST ") ": the command name may hold ") " too
  if not after then return nil end
  local i = 0
  for f in after:gmatch("%S+") do
    i = i + 1
    if i == 1 and (f == "Z" or f == "X") then return nil end -- field 3: the state
    if i == 20 then return tonumber(f) end -- field 22 is the 20th after "pid (comm)"
  end
  return nil
end

M.start_ticks = start_ticks

-- What /proc/PID/status says of a process (pid: a number, or "self"): {rss_kib = VmRSS,
-- hwm_kib = VmHWM, threads = Threads}, each nil when absent (a kernel thread has no Vm lines);
-- nil when the process is gone or unreadable.
function M.proc_status(pid)
  local s = fs.read("/proc/" .. pid .. "/status", 65536)
  if not s then return nil end
  return {
    rss_kib = tonumber(s:match("\nVmRSS:%s*(%d+) kB")),
    hwm_kib = tonumber(s:match("\nVmHWM:%s*(%d+) kB")),
    threads = tonumber(s:match("\nThreads:%s*(%d+)")),
  }
end

-- The soft limit on a process's open files ("Max open files" of /proc/PID/limits; pid: a number,
-- or "self"): nil when unlimited, or the process is gone or unreadable.
function M.max_open_files(pid)
  local s = fs.read("/proc/" .. pid .. "/limits", 65536)
  return s and tonumber(s:match("\nMax open files%s+(%d+)"))
end

local started_at, my_ticks

-- {lua_kib, lua_live_kib, malloc_kib, malloc_used_kib, malloc_free_kib, malloc_top_kib, mmap_kib,
-- lua_in_malloc} (core.heap; KiB, rounded). lua_kib counts the garbage not collected yet; lua_live_kib
-- is what the last full collection left (after the boot, then after each burst), nil before it.
local live_kib -- the Lua heap right after the last full collection (riklet.cli's trims)
function M.note_live(kib) live_kib = kib end

function M.memory()
  local m = core.heap()
  m.lua_kib = collectgarbage("count")
  m.lua_live_kib = live_kib
  for k, v in pairs(m) do if type(v) == "number" then m[k] = math.floor(v + 0.5) end end
  return m
end

-- The status of this process as a plain table.
function M.snapshot(instances)
  local st = core.loop_stats()
  return {
    pid = core.getpid(),
    version = core.version,
    started_at = started_at,
    start_ticks = my_ticks, -- (nil when /proc could not be read at start: see M.start)
    updated_at = core.time(),
    instances = instances,
    loop = {
      lag_max_ms = st.lag_max_ms, lag_recent_ms = st.lag_recent_ms, lag_last_ms = st.lag_last_ms,
      slow_turns = st.slow_turns, turns = st.turns, slowest = st.slowest ~= "" and st.slowest or nil,
      timers = st.timers, tasks = st.tasks,
    },
    pool = { threads = st.pool_threads, max_threads = st.pool_max_threads, pending = st.pool_pending, done = st.pool_done },
    -- where the RSS goes: the Lua heap (live + garbage not yet collected) inside glibc's malloc
    memory = M.memory(),
    -- for `riklet metrics` (riklet.prom): the daemon's counters, the scheduler's, policy errors
    prom = require("riklet.prom").snapshot(),
    scheduler = package.loaded["riklet.scheduler"] and package.loaded["riklet.scheduler"].stats() or nil,
    policy_errors = package.loaded["riklet.policy"] and package.loaded["riklet.policy"].errors or nil,
    image_gc = package.loaded["riklet.imagegc"] and package.loaded["riklet.imagegc"].stats or nil,
  }
end

local current -- {path=, count=} once started

-- Rewrite STATE/agent.json now (after something `riklet` commands wait for, e.g. a prune).
function M.write_now()
  if not current then return end
  local okc, n = pcall(current.count)
  return fs.write_atomic(current.path, json.encode(M.snapshot(okc and n or nil)) .. "\n", "0644", NOSYNC)
end

-- Start rewriting STATE/agent.json every M.INTERVAL seconds. count() -> number of instances.
function M.start(state_dir, count)
  started_at = started_at or core.time()
  my_ticks = my_ticks or start_ticks(core.getpid())
  local path = M.path(state_dir)
  current = { path = path, count = count }
  -- a riklet killed while writing it left agent.json.<n>.tmp.<pid> (found by the kill loop under ASan)
  require("riklet.store").remove_stale_tmp(state_dir, "agent.json")
  task.spawn(function()
    local warned = false
    while true do
      -- (read again until it could be: a file without it names no riklet to its readers)
      my_ticks = my_ticks or start_ticks(core.getpid())
      local okc, n = pcall(count)
      local ok, err = fs.write_atomic(path, json.encode(M.snapshot(okc and n or nil)) .. "\n", "0644", NOSYNC)
      if not ok and not warned then
        core.log("warn", "status", ("cannot write %s (riklet ps will not show this agent): %s"):format(path, err))
      end
      warned = not ok
      task.sleep(M.INTERVAL)
    end
  end)
end

-- The fields readers compute with, by type: one of another type (a file edited, or written by
-- another version) is dropped, so `riklet ps` and `riklet metrics` print what is left instead of
-- raising on arithmetic with a string.
local SHAPE = {
  pid = "number", start_ticks = "number", started_at = "number", updated_at = "number", instances = "number",
  version = "string", prom = "table", scheduler = "table", policy_errors = "table", image_gc = "table",
  loop = { lag_max_ms = "number", lag_recent_ms = "number", lag_last_ms = "number", slow_turns = "number",
    turns = "number", slowest = "string", timers = "number", tasks = "number" },
  pool = { threads = "number", max_threads = "number", pending = "number", done = "number" },
  memory = { lua_kib = "number", lua_live_kib = "number", malloc_kib = "number", malloc_used_kib = "number", malloc_free_kib = "number",
    malloc_top_kib = "number", mmap_kib = "number", lua_in_malloc = "boolean" },
}
local function shaped(t, shape)
  for k, want in pairs(shape) do
    local v = t[k]
    if type(want) == "table" then
      if type(v) == "table" then shaped(v, want) else t[k] = nil end
    elseif v ~= nil and type(v) ~= want then
      t[k] = nil
    end
  end
  return t
end

-- The status of the riklet running on state_dir, or nil (and why) when none runs.
function M.read(state_dir)
  -- (4 MiB, as records: a prune's list of what it removed can pass 64 KiB)
  local s, err = fs.read(M.path(state_dir), 4 * 1024 * 1024)
  if not s then return nil, fs.exists(M.path(state_dir)) and tostring(err) or "no agent.json" end
  local st = json.decode(s)
  if type(st) ~= "table" or type(st.pid) ~= "number" then return nil, "agent.json is damaged" end
  -- the pid alone is no evidence (pids are reused, and `riklet prune` signals it): without its
  -- start time the file cannot tell that process is the riklet that wrote it
  if type(st.start_ticks) ~= "number" then
    return nil, ("agent.json names pid %d without its start time: it cannot tell that process is a riklet"):format(st.pid)
  end
  local ticks = start_ticks(math.floor(st.pid))
  if not ticks or ticks ~= st.start_ticks then
    return nil, ("the riklet that wrote agent.json (pid %d) is not running"):format(st.pid)
  end
  return shaped(st, SHAPE)
end

return M
