-- status.test.lua — status.start_ticks, which tells a reused pid (VMMs, conmon, riklet itself):
-- the start time is field 22 of /proc/PID/stat, counted after the command name, and a process can
-- name itself anything, ") " and spaces included; status.proc_status and status.max_open_files.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"
local status = require "riklet.status"

-- the reference: the fields after the last ')' (the kernel writes "pid (comm) state ...")
local function reference(pid)
  local s = fs.read("/proc/" .. pid .. "/stat", 4096)
  local last = 0
  for i = 1, #s do if s:sub(i, i) == ")" then last = i end end
  local i = 0
  for f in s:sub(last + 2):gmatch("%S+") do
    i = i + 1
    if i == 20 then return tonumber(f) end
  end
end

for _, name in ipairs({ "plain", "a) 1 2 3", ") ) )", "x (y) z" }) do
  local p = proc.spawn({ "sh", "-c", 'printf "%s" "$1" > /proc/self/comm; sleep 5; true', "sh", name })
  local pid = p.pid or p:pid()
  local named = T.wait_for(3, function()
    local c = fs.read("/proc/" .. pid .. "/comm", 64)
    return c and c:gsub("\n$", "") == name:sub(1, 15)
  end)
  T.ok(named, ("the process named itself %q"):format(name))
  T.is(status.start_ticks(pid), reference(pid), ("start_ticks of a process named %q"):format(name))
  p:kill(9)
end
task.sleep(0.05)

-- agent.json's memory split: the Lua heap inside glibc's malloc (riklet's allocator: bindings/main.c)
do
  collectgarbage("collect")
  local m = status.memory()
  local on = m.lua_in_malloc
  T.ok(m.lua_kib > 0 and (not on or m.malloc_used_kib >= m.lua_kib and m.malloc_kib >= m.malloc_used_kib - m.mmap_kib),
    ("memory: Lua %d KiB within malloc's %d KiB in use, %d KiB held (Lua on malloc: %s)"):format(m.lua_kib,
      m.malloc_used_kib, m.malloc_kib, tostring(on)))
  local keep = {}
  for i = 1, 20000 do keep[i] = { i } end
  local m2 = status.memory()
  T.ok(m2.lua_kib - m.lua_kib > 800 and (not on or m2.malloc_used_kib - m.malloc_used_kib > 800),
    ("20,000 tables show in both (Lua %+d KiB, malloc %+d KiB)"):format(m2.lua_kib - m.lua_kib, m2.malloc_used_kib - m.malloc_used_kib))
  T.ok(#keep == 20000, "(kept alive until measured)")
  T.ok(type(status.snapshot(3).memory) == "table", "the snapshot written to agent.json carries it")
end

-- proc_status / max_open_files: the one reading of /proc/PID/status and /proc/PID/limits (agent's
-- trims, riklet_process_* metrics, a VMM's numbers, the start's open-files check)
do
  local st = status.proc_status("self")
  local st2 = status.proc_status(require("riklet.core").getpid())
  T.ok(st and st.rss_kib and st.rss_kib > 0 and st.hwm_kib >= st.rss_kib and st.threads >= 1,
    ("proc_status(\"self\"): VmRSS %s KiB, VmHWM %s KiB, %s threads"):format(st and st.rss_kib, st and st.hwm_kib, st and st.threads))
  T.ok(st2 and st2.threads == st.threads and math.abs(st2.rss_kib - st.rss_kib) < 1024,
    ("... the same process by its pid: VmRSS %s KiB, %s threads"):format(st2 and st2.rss_kib, st2 and st2.threads))
  local p = proc.spawn({ "sh", "-c", "ulimit -n 77 && exec sleep 5" })
  local pid = p.pid or p:pid()
  T.ok(T.wait_for(3, function() return status.max_open_files(pid) == 77 end), "max_open_files of a process run with ulimit -n 77")
  p:kill(9)
  T.wait_for(3, function() return status.proc_status(pid) == nil end)
  T.is(status.proc_status(pid), nil, "proc_status of a process that is gone: nil")
  T.is(status.max_open_files(pid), nil, "max_open_files of a process that is gone: nil")
end
T.done()
