-- riklet.cgstats: the usage of a process's cgroup, never of a process that is not in the cgroup
-- named (a reused pid), and nothing for a process that is gone.
local T = require "riklet.testlib"
local core = require "riklet.core"
local cgstats = require "riklet.cgstats"
local fs = require "riklet.fs"

local me = core.getpid()
local m, err = cgstats.of_pid(me)
T.ok(m, "of_pid(riklet's own pid): measured (" .. tostring(err) .. ")")
T.ok(m and m.memory_bytes and m.memory_bytes > 0, "memory_bytes > 0")
T.ok(m and m.cpu_seconds and m.cpu_seconds > 0, "cpu_seconds > 0")
-- the name of riklet's own memory (or v2) cgroup: measuring under it works, under another does not
local cg = fs.read("/proc/" .. me .. "/cgroup", 65536)
local path = cg:match("%d+:[^:\n]*memory[^:\n]*:([^\n]*)") or cg:match("0::([^\n]*)")
local name = path:match("([^/]+)$")
if name then
  T.ok(cgstats.of_pid(me, name), "of_pid with the cgroup's own name: measured")
else
  T.skip("riklet runs in the root cgroup: no name to match")
end
local none, nerr = cgstats.of_pid(me, "some_other_container")
T.is(none, nil, "of_pid with another container's name: refused (a reused pid is not that container)")
T.like(nerr or "", "not in the cgroup of some_other_container", "saying so")
local gone, gerr = cgstats.of_pid(2 ^ 22 + 1)
T.is(gone, nil, "a pid that does not exist: nil")
T.like(gerr or "", "gone", "saying it is gone")
T.is(cgstats.of_instance({ id = "x", containers = { { name = "c", state = "exited", pid = me } } }), nil,
  "of_instance: an exited container is not measured")
T.is(cgstats.cpu_percent({ cpu_seconds = 1 }, { cpu_seconds = 1.5 }, 1), 50, "cpu_percent: 0.5 s in 1 s = 50 %")

-- a Function's VMM process (QEMU, firecracker): /proc of the pid its record names, only while that
-- pid has the start time the handle recorded
local status = require "riklet.status"
local ticks = status.start_ticks(me)
local v, verr = cgstats.of_vmm({ pid = me, starttime = ticks })
T.ok(v, "of_vmm(riklet's own pid and start time): measured (" .. tostring(verr) .. ")")
T.is(v and v.vmm_pid, me, "vmm_pid is the pid")
T.ok(v and v.memory_bytes and v.memory_bytes > 0 and v.memory_peak_bytes >= v.memory_bytes, "RSS > 0, peak (VmHWM) >= RSS")
T.ok(v and v.cpu_seconds and v.cpu_seconds >= 0 and v.pids and v.pids >= 1, "cpu_seconds, threads")
local rss = tonumber(fs.read("/proc/self/status", 65536):match("VmRSS:%s*(%d+) kB")) * 1024
T.ok(v and math.abs(v.memory_bytes - rss) < 16 * 1048576, ("RSS %s close to /proc/self/status's %d"):format(v and v.memory_bytes, rss))
local reused, rerr = cgstats.of_vmm({ pid = me, starttime = ticks + 1 })
T.is(reused, nil, "of_vmm: same pid, another start time (a reused pid): not measured")
T.like(rerr or "", "not the VMM any more", "saying so")
T.is(cgstats.of_vmm({ pid = 2 ^ 22 + 1, starttime = 1 }), nil, "of_vmm: a VMM that is gone: nil")
T.is(cgstats.of_vmm({}), nil, "of_vmm: a handle without a pid: nil")
local fm = cgstats.of_instance({ id = "f", kind = "Function", vm = { handle = { pid = me, starttime = ticks } } })
T.ok(fm and fm.vmm_pid == me and fm.memory_bytes > 0, "of_instance(Function record): its VMM process")
T.is(cgstats.of_instance({ id = "f", kind = "Function", vm = { handle = { pid = me, starttime = ticks + 1 } } }), nil,
  "of_instance(Function record) with a reused pid: nil")

-- ---- a container that ends while it is measured (a Pod ending as `riklet top` reads it) ----------
-- a real cgroup, named like a container, holding a real process; the cgroup is removed (the process
-- moved out and killed, the directories removed, as runc does) between reading /proc/PID/cgroup and
-- reading the cgroup's files: nothing measured, no partial numbers, no error raised
local proc = require "riklet.proc"
local mt = cgstats.mounts()
local cgname = "riklet-cgstats-test-" .. me
local dirs, parents = {}, {}
local own = fs.read("/proc/self/cgroup", 65536)
if mt.v1.memory then
  for _, c in ipairs({ "memory", "cpuacct", "pids" }) do
    local p = mt.v1[c] and own:match("%d+:[^:\n]*%f[%w]" .. c .. "%f[^%w][^:\n]*:([^\n]*)")
    if p then
      local parent = mt.v1[c] .. (p == "/" and "" or p)
      if not parents[parent] then
        parents[parent] = true
        dirs[#dirs + 1] = { parent = parent, dir = parent .. "/" .. cgname }
      end
    end
  end
elseif mt.v2 then
  dirs[1] = { parent = mt.v2, dir = mt.v2 .. "/" .. cgname }
end
local made = #dirs > 0 and core.getuid() == 0
for _, d in ipairs(dirs) do made = made and fs.mkdir_p(d.dir, "0755") end
if not made then
  T.skip("cannot make a cgroup here (needs root and a writable cgroup hierarchy)", 5)
else
  local sleeper = proc.spawn({ "sleep", "60" })
  local pid = sleeper.pid
  for _, d in ipairs(dirs) do assert(fs.append(d.dir .. "/cgroup.procs", tostring(pid))) end
  local live = cgstats.of_pid(pid, cgname)
  T.ok(live and live.memory_bytes and live.pids == 1, ("a process in its own cgroup %s: measured (pids %s)"):format(cgname,
    tostring(live and live.pids)))
  local rec = { id = "r", containers = { { name = "c", state = "running", pid = pid, runc_id = cgname } } }
  T.ok(cgstats.of_instance(rec), "of_instance of a record naming it: measured")
  -- the end, at the worst moment: after /proc/PID/cgroup, before the cgroup's first file
  local read, ended = cgstats.read, false
  local function end_it()
    ended = true
    for _, d in ipairs(dirs) do fs.append(d.parent .. "/cgroup.procs", tostring(pid)) end
    proc.kill(pid, 9)
    sleeper:wait()
    for _, d in ipairs(dirs) do proc.run({ "rmdir", d.dir }) end
  end
  cgstats.read = function(p, n)
    if not ended and p:find(cgname, 1, true) then end_it() end
    return read(p, n)
  end
  local ok, m2, err2 = pcall(cgstats.of_pid, pid, cgname)
  T.ok(ended and ok and m2 == nil, "the cgroup removed mid-read: nothing measured, no error raised (" .. tostring(m2) .. ")")
  T.like(tostring(err2), "cgroup of process %d+ is gone", "saying the cgroup is gone: " .. tostring(err2))
  -- the same race when of_instance measures it (ps --json, top): the instance has no metrics
  ended = false
  sleeper = proc.spawn({ "sleep", "60" })
  pid = sleeper.pid
  rec.containers[1].pid = pid
  for _, d in ipairs(dirs) do
    assert(fs.mkdir_p(d.dir, "0755"))
    assert(fs.append(d.dir .. "/cgroup.procs", tostring(pid)))
  end
  local iok, im = pcall(cgstats.of_instance, rec)
  T.ok(ended and iok and im == nil, "of_instance of a Pod ending mid-read: no metrics, no error (" .. tostring(im) .. ")")
  cgstats.read = read
  if not ended then end_it() end
end
