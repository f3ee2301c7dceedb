-- riklet.pod's destroy of a container whose monitor has ended: after `runc delete`, the conmon its
-- record names is killed only when it is that container's conmon (its command line says so), and
-- that is asked once (conmon.stop's own check), not first by pod.lua and again by conmon.stop.
-- The conmons are stand-ins: a perl process whose command line is a conmon's (arg0 .../conmon,
-- --cid=ID), so that nothing real is killed by mistake; runc has no such container (delete: absent).
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"

if core.getuid() ~= 0 then T.skip_all("needs root (runc's state directory)") end
T.need_cmds({ runc = "runc", perl = "perl-base" })

local tmp = ("/tmp/riklet-pod-stop-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp .. "/bin", "0700"))
assert(proc.run({ "ln", "-s", "/usr/bin/perl", tmp .. "/bin/conmon" }))
local runc = require "riklet.runc"
assert(runc.init({ runc_root = tmp .. "/runc" }))
local conmon = require "riklet.conmon"
local pod = require "riklet.pod"

-- a process whose command line reads as argv; -> process
local function spawn(argv)
  local p = assert(proc.spawn(argv))
  T.wait_for(5, function() return (fs.read("/proc/" .. p.pid .. "/cmdline", 65536) or ""):find("sleep 600", 1, true) end, 0.01)
  return p
end
local function fake_conmon(cid) return spawn({ tmp .. "/bin/conmon", "-e", "sleep 600", "--", "--cid=" .. cid }) end

-- destroy a one-container instance whose container's monitor has ended, its record naming pid as
-- its conmon; -> destroy's results, how often /proc/PID/cmdline was read meanwhile
local function destroy(name, pid)
  local id = "pod-stop-" .. name
  local c = { name = "c", runc_id = "pod-stop-" .. name .. "-c", conmon_pid = pid, state = "running", dir = tmp .. "/" .. name }
  assert(fs.mkdir_p(c.dir, "0700"))
  local inst = { id = id, rec = { id = id, containers = { c } },
    rt = { c = { exited = task.event(), mon = conmon.ended({ code = 0, describe = "exited with code 0" }) } } }
  local reads, read = 0, fs.read
  fs.read = function(path, ...)
    if path == "/proc/" .. pid .. "/cmdline" then reads = reads + 1 end
    return read(path, ...)
  end
  local ok, a, b = pcall(pod.destroy, inst)
  fs.read = read
  if not ok then a, b = nil, a end
  return a, b, reads, c
end
local function killed(p) return T.wait_for(5, function() return p:exited() end, 0.05) end

local mine = fake_conmon("pod-stop-a-c")
local ok, err, reads, c = destroy("a", mine.pid)
T.ok(ok, "destroy: done " .. tostring(err))
T.is(c.state, "deleted", "the container is deleted (runc: absent)")
T.ok(killed(mine), "its conmon, still there after the delete, is killed")
T.is(reads, 1, "whether it is its conmon is read from /proc once")

local other = fake_conmon("pod-stop-other-c")
ok, err = destroy("b", other.pid)
T.ok(ok, "a record naming another container's conmon: destroy done " .. tostring(err))
task.sleep(0.3)
T.ok(not other:exited(), "that conmon is not signalled")

local plain = spawn({ "perl", "-e", "sleep 600", "--", "--cid=pod-stop-c-c" })
ok, err = destroy("c", plain.pid)
T.ok(ok, "a record naming a process that is no conmon: destroy done " .. tostring(err))
task.sleep(0.3)
T.ok(not plain:exited(), "that process is not signalled")

for _, p in ipairs({ other, plain }) do
  p:kill(9)
  p:wait()
end
fs.rm_rf(tmp)
