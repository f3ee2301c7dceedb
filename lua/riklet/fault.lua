-- riklet.fault — fault points: named places in the create and destroy paths where a test makes
-- riklet die or fail on purpose, to prove that the next start rolls the instance forward or back
-- and leaks nothing. Compiled in always, armed only by the environment:
--
--   RIKLET_FAULT=<point>[:abort|:error]      (default mode: abort)
--     abort  the process kills itself with SIGKILL when it reaches the point (no cleanup runs,
--            as with `kill -9`)
--     error  the step fails with "fault injected at <point>" every time it is reached, as if its
--            real operation had failed
--
--   fault.point(name) -> true | nil, "fault injected at <name>"     (one line at each step:
--       `ok, err = fault.point("pod.runc_create") if not ok then return nil, err end`)
--   fault.check() -> true | nil, err     RIKLET_FAULT names a known point and mode (riklet refuses
--       to start otherwise: a typo would make a test test nothing)
--   fault.points -> { {name=, phase="create"|"destroy", step=}, ... }   in the order of the steps
--   fault.print_points()                 `riklet fault-points`: "name<TAB>phase<TAB>step" lines
local core = require "riklet.core"
local proc = require "riklet.proc"

local M = {}

local function P(name, phase, step) return { name = name, phase = phase, step = step } end

M.points = {
  P("record.save", "create", "write an instance record (abort: the first write, CREATING; error: every write)"),
  P("record.sync", "create", "make the CREATING record durable (fsync, beside admission and the Pod's preparation)"),
  P("image.pull", "create", "skopeo copy of an image that is not in the cache"),
  P("image.unpack", "create", "umoci unpack of an image that is not unpacked yet"),
  P("pod.mkdir", "create", "create the instance directory"),
  P("net.alloc", "create", "store the address allocation (network.json)"),
  P("net.netns", "create", "create the Pod's network namespace"),
  P("net.veth", "create", "create the veth pair into the namespace"),
  P("net.address", "create", "give the Pod's eth0 its address"),
  P("net.route", "create", "add the Pod's default route"),
  P("net.rules", "create", "commit the Pod's iptables rules"),
  P("image.overlay", "create", "mount a container's overlay rootfs"),
  P("pod.config", "create", "write a container's OCI config.json"),
  P("pod.runc_create", "create", "runc create"),
  P("pod.conmon_held", "create", "a one-container Pod's conmon started and held on its start pipe, its bundle, network and "
    .. "durable record ready: just before it is let go"),
  P("pod.runc_start", "create", "runc start (a one-container Pod: just after conmon's runc run started it)"),
  P("pod.stop", "destroy", "signal a running container (SIGTERM)"),
  P("pod.delete", "destroy", "runc delete"),
  P("image.umount", "destroy", "unmount a container's overlay rootfs"),
  P("net.rules_del", "destroy", "remove the instance's iptables rules"),
  P("net.veth_del", "destroy", "delete the instance's veth"),
  P("net.netns_del", "destroy", "delete the instance's network namespace"),
  P("net.release", "destroy", "store the freed address allocation (network.json)"),
  P("pod.rmdir", "destroy", "remove the instance directory"),
  P("record.remove", "destroy", "remove the instance record"),
}

local known = {}
for _, p in ipairs(M.points) do known[p.name] = p end

local armed, mode, bad
do
  local spec = os.getenv("RIKLET_FAULT")
  if spec and spec ~= "" then
    local name, m = spec:match("^([%w._-]+):?(%a*)$")
    m = m ~= "" and m or "abort"
    if not name or not known[name] or (m ~= "abort" and m ~= "error") then
      bad = ("RIKLET_FAULT=%s: expected <point>[:abort|:error] with a point from `riklet fault-points`"):format(spec)
    else
      armed, mode = name, m
    end
  end
end

function M.check()
  if bad then return nil, bad end
  if armed then
    core.log("warn", "fault", ("RIKLET_FAULT: fault point %s is armed (%s): this riklet is under test"):format(armed, mode))
  end
  return true
end

function M.point(name)
  if armed ~= name then
    -- a call site naming no registered point is a bug, caught by the first run of that path
    if not known[name] then error("fault.point: unknown fault point " .. tostring(name), 2) end
    return true
  end
  if mode == "abort" then
    core.log("warn", "fault", ("fault injected at %s: aborting (SIGKILL to myself)"):format(name))
    proc.kill(core.getpid(), 9)
    -- not reached; a SIGKILL is delivered before kill() returns to a single-threaded process
  end
  core.log("warn", "fault", ("fault injected at %s: the step fails"):format(name))
  return nil, "fault injected at " .. name
end

function M.print_points()
  for _, p in ipairs(M.points) do io.stdout:write(p.name, "\t", p.phase, "\t", p.step, "\n") end
  return 0
end

return M
