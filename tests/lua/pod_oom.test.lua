-- riklet.pod's OOM verdict for a container that ended before riklet read its process's cgroup:
-- killed at its memory limit within milliseconds of its start, before conmon watched the cgroup
-- (no "oom" file). runc names a container's memory cgroup after its id, below the cgroup of the
-- process that ran it (conmon: riklet's child, in riklet's cgroup): pod.oom_killed finds the
-- kernel's count there without the process. Seen in CI: test_interlink's 16Mi Pod reported
-- "Error" instead of "OOMKilled" once.
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local runc = require "riklet.runc"
local pod = require "riklet.pod"

if core.getuid() ~= 0 then T.skip_all("needs root (a memory cgroup of its own)") end
local own = pod.memcg_of("self")
if not own then T.skip_all("no memory cgroup for this process") end
local v1 = own:match("^memory/") ~= nil
local id = ("oomtest-%d_c"):format(core.getpid())
T.ok(runc.valid_id(id), "the test's container id is one runc takes")
local parent = "/sys/fs/cgroup/" .. own:gsub("^/", ""):gsub("/$", "")
local cg = parent .. "/" .. id
local tmp = ("/tmp/riklet-pod-oom-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

if not fs.mkdir_p(cg, "0755") then T.skip_all("cannot make a memory cgroup below " .. parent) end
local limited = v1 and fs.append(cg .. "/memory.limit_in_bytes", "8388608") or (not v1 and fs.append(cg .. "/memory.max", "8388608"))
if v1 and fs.exists(cg .. "/memory.memsw.limit_in_bytes") then fs.append(cg .. "/memory.memsw.limit_in_bytes", "8388608") end
if not v1 then fs.append(cg .. "/memory.swap.max", "0") end
if not limited then
  proc.run({ "rmdir", cg })
  T.skip_all("cannot set a memory limit on " .. cg)
end

-- a "container" that joins the cgroup and grows past 8 MiB at once (one endless line of zeros)
local p = assert(proc.spawn({ "sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec tail /dev/zero', cg }))
local code, sig = p:wait()
T.is(sig, 9, ("the process was killed at its 8 MiB limit (code %s, signal %s)"):format(tostring(code), tostring(sig)))

local c = { name = "c", runc_id = id, dir = tmp .. "/c" } -- no memcg recorded, no "oom" file
T.is(pod.memcg_by_id(c), own:gsub("/$", "") .. "/" .. id, "memcg_by_id: below riklet's own memory cgroup, named after the id")
T.is(pod.oom_killed(c), true, "oom_killed: yes, from the cgroup's count, with neither the process nor conmon's file")
T.is(pod.oom_killed({ name = "c", runc_id = "oomtest-none_c", dir = tmp .. "/none" }), false,
  "a container of another id (no such cgroup): not OOM-killed")
T.is(pod.oom_killed({ name = "c", runc_id = "../" .. id, dir = tmp .. "/x" }), false, "an id runc refuses ('../'): not looked up")
T.is(pod.memcg_by_id({ runc_id = "a/../../b" }), nil, "... memcg_by_id gives nothing for it")

proc.run({ "rmdir", cg })
fs.rm_rf(tmp)
T.done()
