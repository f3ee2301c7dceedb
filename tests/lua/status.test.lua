-- status.test.lua — status.start_ticks, which tells a reused pid (VMMs, conmon, riklet itself):
-- the start time is field 22 of /proc/PID/stat, counted after the command name, and a process can
-- name itself anything, ") " and spaces included.
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
T.done()
