-- riklet.pod — the Pod driver: one runc container per spec container, each under its own conmon
-- (riklet.conmon: stdio, CRI-format log, exit file) and on its own writable overlay over the
-- image's unpacked rootfs (shared, read-only, unpacked once per digest), all containers of one Pod
-- in one network namespace when Pod networking is on.
--
-- A container's files, in INSTANCE_DIR/NAME/: config.json + rootfs (the bundle), logs/RUN.log (the
-- CRI log of run RUN: 0, then one more per restart; the current and the previous run are kept),
-- init.pid and conmon.pid, exit/exit (conmon's exit status), runc.log (runc's own messages).
--
-- Driver interface (used by riklet.agent):
--   init(cfg, agent) -> true | nil, err
--   create(inst, workload) -> true | nil, err   records every resource in inst.rec as it goes, so
--                                                a failure (or a crash) can always be rolled back
--   adopt(inst) -> true | nil, err, gone         after a riklet restart: watch what still runs; gone
--                                                only on positive evidence (runc: no such container)
--   release(inst) -> true | nil, err             the workload ended: free runtime resources, keep logs
--   destroy(inst) -> true | nil, err             remove everything, idempotent
--   restart(inst, container_name) -> true | nil, err
--   on_exit(inst, msg) -> "running" | "TERMINATED" | "FAILED", reason, container record
-- P.driver is what riklet.lifecycle registers (restart there also counts restarts).
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local oci = require "riklet.oci"
local image = require "riklet.image"
local runc = require "riklet.runc"
local conmon = require "riklet.conmon"
local store = require "riklet.store"
local fault = require "riklet.fault"
local lifecycle = require "riklet.lifecycle"
local probe = require "riklet.probe"

local P = {}
local cfg, agent, netctl

local function log(level, fmt, ...) core.log(level, "pod", fmt:format(...)) end

-- The runc id of container `name` of instance `id` (collision-free; the one derivation, which
-- record validation in riklet.store checks against).
P.runc_id = store.runc_id

function P.init(config, ag)
  cfg, agent = config, ag
  local ok, err = image.init(config)
  if not ok then return nil, err end
  -- runc or conmon unusable now is no reason to drop the driver: containers already running are
  -- watched through conmon's files and processes, and each create says what is missing
  ok, err = runc.init(config)
  if not ok then log("error", "%s: Pods cannot be created or stopped until this is fixed", err) end
  local max = config.log_size_max
  if max ~= nil and not (type(max) == "number" and max >= 4096 and max < 0x1p53) then
    return nil, ("--log-size-max (or --container-log-max-size) %s: give a number of bytes, at least 4096"):format(tostring(max))
  end
  ok, err = conmon.init(config)
  if not ok then log("error", "%s: Pods cannot be created until this is fixed", err) end
  if config.network ~= "none" then
    local found, mod = pcall(require, "riklet.netctl")
    if found then
      local iok, ierr = mod.init(config)
      if iok then netctl = mod
      elseif config.network == "bridge" then return nil, "pod networking (--network bridge): " .. tostring(ierr), true
      else log("warn", "pod networking is off: %s", tostring(ierr)) end
    elseif config.network == "bridge" then
      return nil, "pod networking was asked for (--network bridge) but riklet.netctl is not available: " .. tostring(mod)
    end
  end
  return fs.mkdir_p(config.paths.instances, "0700")
end

-- Runtime state that is not persisted: per container, an event set when its process exits.
local function rt(inst, name)
  inst.rt = inst.rt or {}
  inst.rt[name] = inst.rt[name] or { exited = task.event() }
  return inst.rt[name]
end

-- Positive evidence that the container watched by mon was started (r.started = mon), so that its
-- stop sends SIGTERM without a `runc state` first (stop_container): this riklet started it (runc
-- start, or conmon's `runc run`), or it was adopted with its conmon alive and a record saying
-- "running" (written only after its start), or runc said "running". Never from a record whose
-- state was unreadable (r.unsure), nor for a monitor a restart replaced (r.mon ~= r.started).
local function was_started(inst, c, mon)
  local r = rt(inst, c.name)
  if not r.unsure then r.started = mon end
end

-- Time spent per step of a create (inst.steps, milliseconds), logged in one line when it ends
-- (tests/bench/bench_pods.sh prints the breakdown). mark(inst, name, t0) adds now - t0 to name.
local function mark(inst, name, t0)
  local s = inst.steps
  if s then s[name] = (s[name] or 0) + (core.time() - t0) * 1000 end
  return core.time()
end
local STEPS = { "record", "durable", "image", "network", "mount", "config", "create", "run", "start", "netsetup" }
local STEP_NAMES = { record = "record writes", durable = "record sync wait", image = "image", network = "network",
  mount = "overlay mount",
  config = "bundle config", create = "conmon + runc create", run = "conmon + runc run", start = "runc start",
  netsetup = "beside them: network setup" }

-- While CREATING the record is a progress note (no fsync): the lifecycle's CREATING record is
-- durable before any container exists (lifecycle.wait_durable), and a machine crash stops the containers too (the next start rolls the instance back
-- from the CREATING record); a riklet crash finds the note all the same (page cache, replaced by
-- rename).
local function save(inst)
  local t0 = core.time()
  local ok, err = store.save(inst.rec, inst.rec.status ~= "CREATING")
  mark(inst, "record", t0)
  if not ok then log("error", "instance %s: %s", inst.id, err) end
  return ok, err
end

-- Report the end of a container's run to the instance's mailbox, once its monitor is sure it
-- ended (conmon's exit file, or runc positively saying so): a failed watch is never an exit.
local function watch(inst, c, mon, suffix)
  local r = rt(inst, c.name)
  r.exited, r.watching, r.mon = task.event(), true, mon
  local exited = r.exited
  exited.first = true -- (a stop's wait for the exit: ahead of the paced resumes)
  -- (a callback of the monitor's end, not a task waiting for it: a stack less per container; it
  -- runs inside the monitor's set, so the exit reaches the instance with no resume in between)
  mon.ended:on_set(function(st)
    exited:set(st)
    if r.expected or r.mon ~= mon then return end -- we stopped it, or a restart replaced it
    local describe = st.describe .. (suffix or "") .. (r.killed_for and ("; " .. r.killed_for) or "")
    r.killed_for = nil
    local code = st.code
    if code == nil and st.signal == nil then code = -1 end
    agent.post(inst.id, { type = "exit", container = c.name, code = code, signal = st.signal, describe = describe })
  end)
end

-- The log of run n of the container in directory cdir: the one place its path is made.
local function run_log(cdir, n) return ("%s/logs/%d.log"):format(cdir, n) end

-- The log of run n of a container; the run before the previous one is removed.
local function log_for_run(c, n)
  fs.mkdir_p(c.dir .. "/logs", "0700")
  if n >= 2 then fs.unlink(run_log(c.dir, n - 2)) end
  return run_log(c.dir, n)
end

-- Start run c.run of container c under conmon (runc create); records its pids. run: create and
-- start in conmon's one runtime invocation instead (riklet-runc-run, conmon.can_run()): the
-- container runs when it returns (mon.started).
local function conmon_create(inst, c, run, prepare)
  local mon, err, _, own = conmon.create(c.runc_id, c.dir, {
    log = c.log, name = inst.id .. "/" .. c.name, run = run, prepare = prepare,
    on_conmon = function(pid)
      c.conmon_pid = pid
      if inst.net_start then inst.net_start() end -- runc create runs now: the network beside it
      save(inst)
    end,
  })
  if not mon then return nil, err, own end
  c.pid, c.conmon_pid = mon.pid, mon.conmon_pid
  return mon
end

-- Stop a running container that its probes or its postStart hook failed (kubelet: preStop hook,
-- SIGTERM, the grace period, SIGKILL); its exit is then reported as any other, with why, and the
-- restart policy decides.
local function probe_kill(inst, c, mon, why)
  local r = rt(inst, c.name)
  if r.expected or r.mon ~= mon or mon.ended.is_set then return end
  log("warn", "instance %s: container %s: %s: stopping it (the restart policy decides what follows)", inst.id, c.name, why)
  r.killed_for = why
  local grace = inst.grace or cfg.stop_grace
  local t0 = core.time()
  probe.hook(inst, c, "pre_stop", math.max(1, grace))
  if r.expected or r.mon ~= mon or mon.ended.is_set then return end
  runc.kill(c.runc_id, "TERM")
  if not mon.ended:wait(math.max(2, grace - (core.time() - t0))) and r.mon == mon and not r.expected then
    runc.kill(c.runc_id, "KILL", { all = true })
  end
end

-- After container c started (create, restart): its postStart hook (a failure stops the container)
-- and its probes, each in its own task, until this run ends. hooks = false after an adoption.
local POST_START_TIMEOUT = 120
local function start_probes(inst, c, hooks)
  local r = rt(inst, c.name)
  local mon = r.mon
  if not mon then return end
  local ctx = {
    save = function() save(inst) end,
    kill = function(why) probe_kill(inst, c, mon, why) end,
    stopped = function() return r.expected or r.mon ~= mon end,
  }
  if hooks ~= false then
    task.spawn(function()
      local ok, detail = probe.hook(inst, c, "post_start", POST_START_TIMEOUT)
      if ok == false then ctx.kill("postStart hook failed: " .. tostring(detail)) end
    end)
  end
  probe.start(inst, c, mon, ctx)
end

local function env_list(w_env)
  local out = {}
  for _, e in ipairs(w_env or {}) do out[#out + 1] = e.name .. "=" .. e.value end
  return out
end

-- The validated container's command, args, working dir, tmpfs mounts and limits as
-- oci.edit_config options (added to opts). command + args replace the image's entrypoint + cmd.
-- Known limit: the unpacked bundle keeps entrypoint and cmd as one list, so args without a command
-- replace both (Kubernetes keeps the entrypoint; the same for images without one, like busybox).
local function bundle_opts(c, opts, voldir)
  if c.command or c.args then
    local argv = {}
    for _, a in ipairs(c.command or {}) do argv[#argv + 1] = a end
    for _, a in ipairs(c.args or {}) do argv[#argv + 1] = a end
    if #argv > 0 then opts.args = argv end
  end
  opts.cwd = c.working_dir
  if c.mounts and #c.mounts > 0 then
    opts.mounts = {}
    for i, m in ipairs(c.mounts) do
      if m.type == "volume" then -- a bind mount of the Pod's volume directory (P.make_volumes)
        opts.mounts[i] = { source = voldir .. "/" .. m.volume .. (m.sub_path and ("/" .. m.sub_path) or ""),
          destination = m.destination, readonly = m.read_only and true or false }
      else
        opts.mounts[i] = { type = "tmpfs", destination = m.destination, readonly = m.read_only and true or false }
      end
    end
  end
  if c.user then opts.uid, opts.gid = c.user.uid, c.user.gid end
  local l = c.limits or {}
  opts.memory_limit = l.memory
  if l.cpu then opts.cpu_quota, opts.cpu_period = l.cpu * 100, 100000 end -- millicores: 1000 = one CPU
  return opts
end

-- The memory cgroup of a running container's process (cgroup v1 "N:...memory...:/path" or v2
-- "0::/path"), remembered to tell an OOM kill once it ended (runc keeps the cgroup until delete).
function P.memcg_of(pid)
  local text = (type(pid) == "number" or pid == "self") and fs.read("/proc/" .. pid .. "/cgroup", 65536)
  if not text then return nil end
  local v2
  for line in text:gmatch("[^\n]+") do
    local ctrls, path = line:match("^%d+:([^:]*):(/.*)$")
    if ctrls and (","  .. ctrls .. ","):find(",memory,", 1, true) then return "memory" .. path end
    if ctrls == "" then v2 = path end
  end
  return v2 and ("" .. v2:gsub("^/", "")) or nil
end

-- The memory cgroup runc made for container c without asking its process: runc names it after the
-- container's id, below the cgroup of the process that ran it (conmon, riklet's child, in riklet's
-- own). For a container that ended before its process's cgroup was read: one killed at its memory
-- limit within milliseconds, before conmon watched the cgroup too (no "oom" file either).
function P.memcg_by_id(c)
  if type(c.runc_id) ~= "string" or not runc.valid_id(c.runc_id) then return nil end
  local parent = P.memcg_of(c.conmon_pid) or P.memcg_of("self")
  return parent and (parent:gsub("/$", "") .. "/" .. c.runc_id) or nil
end

-- Did the kernel's OOM killer end container c? conmon's "oom" file, else its memory cgroup's count.
function P.oom_killed(c)
  if c.dir and (fs.exists(c.dir .. "/oom") or fs.exists(c.dir .. "/exit/oom")) then return true end
  local cg = c.memcg or P.memcg_by_id(c)
  if type(cg) ~= "string" or #cg > 4096 or cg:find("..", 1, true) then return false end
  for _, f in ipairs({ "/memory.oom_control", "/memory.events" }) do
    local t = fs.read("/sys/fs/cgroup/" .. cg:gsub("^/", "") .. f, 65536)
    local n = t and tonumber(t:match("oom_kill (%d+)"))
    if n then return n > 0 end
  end
  return false
end

local check_cancel, unless_destroyed = lifecycle.check_cancel, lifecycle.unless_destroyed

-- The Pod's volumes, in DIR/volumes/NAME (removed with the instance directory): emptyDir an empty
-- directory every container may write (mode 0777, as Kubernetes makes it; medium Memory: a tmpfs
-- of at most size_limit bytes, unmounted by P.umount_volumes), files (ConfigMap, Secret,
-- projected) written with their mode. A subPath that does not exist is made a directory.
function P.make_volumes(dir, w)
  local workload = require "riklet.workload"
  local voldir = dir .. "/volumes"
  for _, v in ipairs(w.volumes or {}) do
    local vd = voldir .. "/" .. v.name
    local ok, err = fs.mkdir_p(vd, v.type == "emptyDir" and "0777" or "0755")
    if ok and v.medium == "Memory" then
      ok, err = image.tmpfs_mount(vd, v.size_limit)
      if ok then log("info", "volume %s: a tmpfs of %s at %s", v.name, v.size_limit and (v.size_limit .. " bytes") or "the kernel's default size", vd) end
    end
    if not ok then return nil, ("volume %s: %s"):format(v.name, err) end
    for _, f in ipairs(v.files or {}) do
      local path = vd .. "/" .. f.path
      local parent = path:match("^(.*)/[^/]+$")
      ok, err = fs.mkdir_p(parent, "0755")
      if ok then ok, err = fs.write_atomic(path, workload.base64_decode(f.base64) or "", ("0%o"):format(f.mode or 420)) end
      if not ok then return nil, ("volume %s, file %s: %s"):format(v.name, f.path, err) end
    end
  end
  for _, c in ipairs(w.containers) do
    for _, m in ipairs(c.mounts or {}) do
      if m.type == "volume" and m.sub_path and not fs.exists(voldir .. "/" .. m.volume .. "/" .. m.sub_path) then
        local ok, err = fs.mkdir_p(voldir .. "/" .. m.volume .. "/" .. m.sub_path, "0777")
        if not ok then return nil, ("container %s: subPath %s: %s"):format(c.name, m.sub_path, err) end
      end
    end
  end
  return voldir
end

-- Run init container crec (created under conmon as mon) to its end; a failure is retried (restart
-- policy OnFailure or Always: up to 3 more runs after 1, 2 and 4 s, each with its own log), then
-- fails the create. Its runc container is deleted once it ended (the exit stays in the record).
function P.run_init(inst, w, crec, mon)
  local tries = w.restart_policy == "Never" and 1 or 4
  for attempt = 1, tries do
    local ok, err = runc.start(crec.runc_id)
    if not ok then return nil, ("init container %s: %s"):format(crec.name, err) end
    crec.state, crec.started_at, crec.finished_at = "running", core.time(), nil
    save(inst)
    local q = task.queue()
    task.spawn(function() q:put({ mon.ended:wait() }) end)
    inst.on_cancel = function() q:put({ false }) end
    local st = q:get()[1]
    inst.on_cancel = nil
    if not st then return nil, "destroyed while its init containers ran" end
    crec.exit_code, crec.exit_signal, crec.finished_at = st.code, st.signal, core.time()
    crec.reason, crec.state = st.describe, "exited"
    save(inst)
    if st.code == 0 and not st.signal then
      log("info", "instance %s: init container %s completed", inst.id, crec.name)
      local r = rt(inst, crec.name)
      r.expected = true
      runc.delete(crec.runc_id, { force = true })
      if crec.conmon_pid then conmon.stop(crec.conmon_pid, crec.runc_id) end
      return true
    end
    if attempt == tries then break end
    local delay = 2 ^ (attempt - 1)
    log("info", "instance %s: init container %s %s: running it again in %d s", inst.id, crec.name, tostring(st.describe), delay)
    crec.state, crec.reason = "waiting", ("%s; running it again in %d s"):format(tostring(st.describe), delay)
    save(inst)
    task.sleep(delay)
    if inst.destroy_requested then return nil, "destroyed while its init containers ran" end
    runc.delete(crec.runc_id, { force = true })
    if crec.conmon_pid then conmon.stop(crec.conmon_pid, crec.runc_id) end
    conmon.clean(crec.dir)
    crec.run = (crec.run or 0) + 1
    crec.restart_count = (crec.restart_count or 0) + 1
    crec.log = log_for_run(crec, crec.run)
    crec.state, crec.exit_code, crec.exit_signal = "created", nil, nil
    mon, err = conmon_create(inst, crec)
    save(inst)
    if not mon then return nil, ("init container %s: %s"):format(crec.name, err) end
  end
  return nil, ("init container %s %s"):format(crec.name, tostring(crec.reason))
end

-- Unmount what is mounted on the Pod's volume directories (the tmpfs of emptyDir volumes of medium
-- Memory): before the directory is removed (fs.rm_rf never crosses a mount), and to free the
-- memory once the Pod ended. -> true | nil, err
function P.umount_volumes(dir)
  local errs = {}
  for _, name in ipairs(fs.list(dir .. "/volumes") or {}) do
    local vd = dir .. "/volumes/" .. name
    if fs.safe_name(name, 255) and image.is_mountpoint(vd) then
      local ok, err = image.umount(vd)
      if not ok then errs[#errs + 1] = ("volume %s: %s"):format(name, err) end
    end
  end
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

local create

-- The Pod's network, made beside its containers: the namespace now (runc creates the containers
-- in it), the rest (veth, address, routes, rules: netctl.setup) in a task of its own started once
-- the first container's conmon runs (conmon_create: inst.net_start), so that runc create and the
-- setup run at the same time; network_ready waits for it before anything starts. Returns the
-- namespace's path.
local function start_network(inst, w)
  local t0 = core.time()
  local path, err = netctl.netns(inst.id)
  mark(inst, "network", t0)
  if not path then return nil, err end
  inst.net_start = function()
    inst.net_start = nil
    local done = task.event()
    inst.net_pending = done
    task.spawn(function()
      local t1 = core.time()
      local ok, net, nerr = pcall(netctl.setup, inst.id, w)
      if not ok then net, nerr = nil, "the network setup failed: " .. tostring(net) end
      if net then
        inst.rec.network = net
        net.enabled = true
      end
      mark(inst, "netsetup", t1)
      done:set({ net ~= nil, nerr })
    end)
  end
  return path
end

-- Wait for the network setup started by start_network (bounded: netctl's own waits are, the
-- xtables lock at most a few seconds). -> true | nil, err
local NET_WAIT = 120
local function network_ready(inst)
  local done = inst.net_pending
  if not done then return true end
  local t0 = core.time()
  local r = done:wait(NET_WAIT)
  mark(inst, "network", t0)
  if not r then return nil, ("its network was not set up within %d s"):format(NET_WAIT) end
  inst.net_pending = nil
  if not r[1] then return nil, r[2] end
  return true
end

function P.create(inst, w)
  inst.steps = {}
  local t0 = core.time()
  local ok, err = create(inst, w)
  inst.net_start = nil
  if inst.net_pending then
    -- a create that failed before its network was ready: the rollback must not race the setup.
    -- A failed network setup is the reason even then (a runc create that failed meanwhile did
    -- because the setup's own rollback removed the namespace)
    local nok, nerr = network_ready(inst)
    if not nok then ok, err = nil, nerr end
  end
  local s, parts = inst.steps, {}
  inst.steps = nil
  for _, k in ipairs(STEPS) do
    if s[k] then parts[#parts + 1] = ("%s %.1f"):format(STEP_NAMES[k], s[k]) end
  end
  log("info", "instance %s: %s in %.1f ms (%s ms)", inst.id, ok and "created" or "create failed",
    (core.time() - t0) * 1000, table.concat(parts, ", "))
  return ok, err
end

create = function(inst, w)
  local rec = inst.rec
  local dir = cfg.paths.instances .. "/" .. inst.id
  rec.dir = dir
  rec.containers = {}
  -- stored with the first container's record, before the namespace is made: a rollback (after a
  -- crash too) then tears down whatever the network setup made, even what it did not report yet
  if netctl then rec.network = { enabled = true } end
  local fok, ferr = fault.point("pod.mkdir") if not fok then return nil, ferr end
  local ok, err = fs.mkdir_p(dir, "0700")
  if not ok then return nil, err end
  -- the record is not written before the first container's: until then nothing is made that a
  -- rollback would not find from the instance id alone (its directory, the volumes in it)

  -- 1. images (the slow part; other instances go on meanwhile); init containers first
  local imgs, all = {}, {}
  for _, c in ipairs(w.init_containers or {}) do all[#all + 1] = c end
  for _, c in ipairs(w.containers) do all[#all + 1] = c end
  for i, c in ipairs(all) do
    ok, err = check_cancel(inst)
    if not ok then return nil, err end
    local t0 = core.time()
    local img, ierr = unless_destroyed(inst, image.ensure, c.image, { timeout = cfg.pull_timeout, pull = c.pull })
    mark(inst, "image", t0)
    if not img then return nil, ("container %s: %s"):format(c.name, ierr) end
    imgs[i] = img
  end
  ok, err = check_cancel(inst)
  if not ok then return nil, err end

  local voldir
  voldir, err = P.make_volumes(dir, w)
  if not voldir then return nil, err end

  -- 2. bundles and runc containers, the network (one namespace for the whole Pod) made beside the
  -- first one's runc create; init containers run to completion one after another first.
  -- A Pod of one container (no init container) needs no other container created before it starts:
  -- one runtime invocation, conmon running `runc create` + its start (riklet-runc-run: through
  -- runc's exec.fifo, or `runc start`), no `runc start` of riklet's;
  -- its network is then set up beside the overlay mount and the config, and ready before conmon
  -- runs (a container never runs without it). Several containers: each created, then all started.
  local one_run = #all == 1 and #(w.init_containers or {}) == 0 and conmon.can_run()
  local netns
  for i, c in ipairs(all) do
    local cdir = dir .. "/" .. c.name
    local crec = {
      name = c.name, runc_id = store.runc_id(inst.id, c.name), dir = cdir, image = c.image,
      digest = imgs[i].digest, run = 0, log = run_log(cdir, 0), state = "preparing",
      init = i <= #(w.init_containers or {}) or nil,
    }
    rec.containers[i] = crec
    if runc.exists(crec.runc_id) then
      -- never ours to delete on rollback: another riklet shares this runc root, or a leftover
      crec.state = "foreign"
      return nil, ("container %s: runc already has a container %s (in %s); is another riklet using the same "
        .. "--runc-root? Remove it with `runc --root %s delete -f %s` if it is a leftover")
        :format(c.name, crec.runc_id, runc.root(), runc.root(), crec.runc_id)
    end
    -- without a record, a crash would leave resources nothing names: do not create them
    ok, err = save(inst) if not ok then return nil, "cannot store its record: " .. err end
    if netctl and not netns then
      netns, err = start_network(inst, w)
      if not netns then return nil, err end
      if one_run then inst.net_start() end
    end
    ok, err = fs.mkdir_p(cdir, "0700")
    if not ok then return nil, err end
    log_for_run(crec, 0) -- (conmon opens it as it starts)
    -- the bundle, the network and the durable CREATING record, all before a container exists;
    -- a one-container Pod's conmon (one_run) starts first and waits on its start pipe meanwhile
    local t_prep = 0
    local function prepare()
      local t_start = core.time()
      local t0 = t_start
      local pok, perr = image.mount_rootfs(cdir, imgs[i])
      mark(inst, "mount", t0)
      if not pok then return nil, ("container %s: %s"):format(c.name, perr) end
      -- not stored on its own: a rollback unmounts whatever rootfs it finds in the container's dir
      crec.mounted = true
      pok, perr = fault.point("pod.config") if not pok then return nil, ("container %s: %s"):format(c.name, perr) end
      t0 = core.time()
      pok, perr = oci.edit_config(imgs[i].config, cdir .. "/config.json", bundle_opts(c, {
        env = env_list(c.env), hostname = w.name, root_path = cdir .. "/rootfs", netns_path = netns,
      }, voldir))
      mark(inst, "config", t0)
      if not pok then return nil, ("container %s: cannot write its OCI config: %s"):format(c.name, perr) end
      crec.state = "created"
      pok, perr = fault.point("pod.runc_create") if not pok then return nil, ("container %s: %s"):format(c.name, perr) end
      if one_run then
        pok, perr = network_ready(inst)
        if not pok then return nil, perr end
      end
      -- the CREATING record, made durable beside all of the above, is on disk before a container
      -- exists (the lifecycle reports CREATING then too)
      t0 = core.time()
      pok, perr = lifecycle.wait_durable(inst)
      mark(inst, "durable", t0)
      if not pok then return nil, perr end
      if one_run then
        pok, perr = fault.point("pod.conmon_held") if not pok then return nil, ("container %s: %s"):format(c.name, perr) end
      end
      t_prep = core.time() - t_start
      return true
    end
    local mon, own
    if not one_run then
      ok, err = prepare()
      if not ok then return nil, err end
    end
    local t0 = core.time()
    mon, err, own = conmon_create(inst, crec, one_run, one_run and prepare or nil)
    -- (the preparation's steps are counted on their own: inside conmon_create when conmon was held
    -- meanwhile, before t0 otherwise)
    mark(inst, one_run and "run" or "create", t0 + (one_run and t_prep or 0))
    -- its conmon's pid is stored already (on_conmon); the rest goes with the next write
    if not mon then save(inst) return nil, own and err or ("container %s: %s"):format(c.name, err) end
    if crec.init then
      ok, err = network_ready(inst)
      if not ok then return nil, err end
      ok, err = P.run_init(inst, w, crec, mon)
      if not ok then return nil, err end
    else
      watch(inst, crec, mon)
    end
  end
  ok, err = network_ready(inst)
  if not ok then return nil, err end
  for _, crec in ipairs(rec.containers) do
    if crec.init then goto next end
    ok, err = check_cancel(inst)
    if not ok then return nil, err end
    ok, err = fault.point("pod.runc_start") if not ok then return nil, ("container %s: %s"):format(crec.name, err) end
    if not rt(inst, crec.name).mon.started then -- else `runc run` under conmon started it
      local t0 = core.time()
      ok, err = runc.start(crec.runc_id)
      mark(inst, "start", t0)
      if not ok then return nil, ("container %s: %s"):format(crec.name, err) end
    end
    was_started(inst, crec, rt(inst, crec.name).mon)
    crec.state = "running"
    crec.started_at = core.time()
    crec.memcg = P.memcg_of(crec.pid) or P.memcg_by_id(crec)
    start_probes(inst, crec)
    ::next::
  end
  -- not stored here: the agent stores the record with RUNNING as soon as this returns (a crash
  -- before that leaves CREATING, which a restarted riklet rolls back and creates again)
  return true
end

-- A monitor for a container that may still run and has none (adopted without one, or never
-- watched): its conmon when that is alive, else its init process (runc's word).
local function ensure_monitor(inst, c)
  local r = rt(inst, c.name)
  if r.mon then return r.mon end
  if c.conmon_pid and conmon.alive(c.conmon_pid, c.runc_id) then
    watch(inst, c, conmon.monitor({ id = c.runc_id, dir = c.dir, conmon_pid = c.conmon_pid, pid = c.pid }))
    if c.state == "running" then was_started(inst, c, r.mon) end
    return r.mon
  end
  local st = conmon.exit_status(c.dir)
  if st then
    watch(inst, c, conmon.ended(st))
    return r.mon
  end
  local rs = runc.state(c.runc_id)
  if rs and rs.pid and rs.pid > 0 and rs.status ~= "stopped" then
    watch(inst, c, conmon.monitor({ id = c.runc_id, dir = c.dir, pid = rs.pid }))
    if rs.status == "running" then was_started(inst, c, r.mon) end
    return r.mon
  end
  return nil
end

-- Has container c (watched by mon, not ended) a process to stop? runc's word: not when it is
-- only "created" (never started: deleted with --force), nor when runc has no such container: its
-- conmon, when alive, is still in `runc create` (a riklet killed mid-create) or about to end (the
-- container went away meanwhile), and is stopped here; without a conmon alive, runc having no such
-- container is what its monitor takes for "ended" too (riklet.conmon). A runc that cannot answer
-- is no evidence: the container is stopped as if it ran.
local function runc_says_started(c, mon)
  local st, _, missing = runc.state(c.runc_id)
  if missing then
    if c.conmon_pid and conmon.alive(c.conmon_pid, c.runc_id) then
      conmon.stop(c.conmon_pid, c.runc_id)
      mon.ended:wait(5)
    end
    return false
  end
  return not (st and st.status == "created")
end

-- Stop one container: SIGTERM, grace period, SIGKILL; then delete it from runc. Done (true) only
-- when runc deleted it or says it does not exist: a runc that fails is never taken for "gone".
-- runc is asked whether it was started at all only without riklet's own evidence (was_started):
-- one runc process less per Pod in a mass teardown.
local function stop_container(inst, c)
  local r = rt(inst, c.name)
  r.expected = true
  local mon = c.state ~= "preparing" and ensure_monitor(inst, c)
  r = rt(inst, c.name)
  local known = mon and r.started == mon
  if mon and not mon.ended.is_set and (known or runc_says_started(c, mon)) then
    local fok, ferr = fault.point("pod.stop") if not fok then return nil, ("cannot stop container %s: %s"):format(c.runc_id, ferr) end
    local grace = inst.grace or cfg.stop_grace
    -- the preStop hook first, within the grace period (SIGTERM then gets what is left, 2 s at least)
    local t0 = core.time()
    if not c.init and probe.hook(inst, c, "pre_stop", math.max(1, grace)) ~= nil then
      grace = math.max(2, grace - (core.time() - t0))
    end
    local ok, err = runc.kill(c.runc_id, "TERM")
    -- taken as started without asking runc, and the kill failed: runc's word now (gone meanwhile?)
    local stop = true
    if not ok and known and not mon.ended.is_set and not runc_says_started(c, mon) then ok, stop = true, false end
    if not ok and not mon.ended.is_set then return nil, ("cannot stop container %s: %s"):format(c.runc_id, err) end
    if stop and not r.exited:wait(grace) then
      log("warn", "container %s did not stop within %gs of SIGTERM: sending SIGKILL", c.runc_id, grace)
      ok, err = runc.kill(c.runc_id, "KILL", { all = true })
      if not ok and not mon.ended.is_set then return nil, ("cannot kill container %s: %s"):format(c.runc_id, err) end
      if not r.exited:wait(10) then
        return nil, ("container %s is still running 10 s after SIGKILL"):format(c.runc_id)
      end
    end
  end
  local fok, ferr = fault.point("pod.delete") if not fok then return nil, ("cannot delete container %s: %s"):format(c.runc_id, ferr) end
  local ok, err = runc.delete(c.runc_id, { force = true })
  if not ok then
    -- gone only on runc's word, or when runc has no state directory for it (never created)
    local _, serr, absent = runc.state(c.runc_id)
    if not absent and runc.exists(c.runc_id) then
      return nil, ("cannot delete container %s: %s%s"):format(c.runc_id, err,
        serr and serr ~= err and ("; " .. serr) or "")
    end
  end
  if c.conmon_pid then
    -- (conmon.stop checks the pid again: asked here only while the monitor has not seen the end)
    if r.mon and not r.mon.ended.is_set and conmon.alive(c.conmon_pid, c.runc_id) then r.mon.ended:wait(5) end
    conmon.stop(c.conmon_pid, c.runc_id)
  end
  if c.dir then conmon.clean(c.dir) end
  c.state = "deleted"
  return true
end

local function free_resources(inst, keep_logs)
  local rec, errs = inst.rec, {}
  -- stop all containers in parallel, each with its own grace period
  local done = task.queue()
  local n = 0
  for _, c in ipairs(rec.containers or {}) do
    if c.state ~= "deleted" and c.state ~= "foreign" then
      n = n + 1
      task.spawn(function()
        local ok, res, err = pcall(stop_container, inst, c)
        if not ok then res, err = nil, res end
        done:put({ ok = res, err = err })
      end)
    end
  end
  for _ = 1, n do
    local r = done:get()
    if not r.ok then errs[#errs + 1] = r.err end
  end
  -- a container that may still run keeps its rootfs, its network and its directory
  local stopped_all = #errs == 0
  for _, c in ipairs(rec.containers or {}) do
    if (c.state == "deleted" or c.state == "foreign" or c.state == "preparing")
      and (c.mounted or (c.dir and fs.exists(c.dir .. "/rootfs"))) then
      local ok, err = image.umount_rootfs(c.dir)
      if ok then c.mounted = false else errs[#errs + 1] = err end
    end
    if keep_logs and c.dir and not c.mounted and c.state == "deleted" then
      -- (.riklet-create.init.pid: riklet-runc-run's pid file before its start, left by a shim killed then)
      for _, f in ipairs({ "upper", "work", "rootfs", "config.json", "init.pid", ".riklet-create.init.pid", "conmon.pid" }) do
        fs.rm_rf(c.dir .. "/" .. f)
      end
    end
  end
  if rec.dir and stopped_all then
    local ok, err = P.umount_volumes(rec.dir)
    if not ok then errs[#errs + 1] = err end
  end
  if rec.network and netctl and stopped_all then
    local ok, err = netctl.teardown(inst.id)
    if ok then rec.network = nil else errs[#errs + 1] = err end
  end
  if not keep_logs and rec.dir and #errs == 0 then local fok, ferr = fault.point("pod.rmdir") if not fok then errs[#errs + 1] = ferr end end
  if not keep_logs and rec.dir and #errs == 0 then
    local ok, err = fs.rm_rf(rec.dir)
    if not ok then errs[#errs + 1] = err end
  end
  -- the lifecycle stores the record after this step
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

function P.release(inst)
  return free_resources(inst, true)
end

function P.destroy(inst)
  return free_resources(inst, false)
end

local restarted

-- A restart in flight when riklet stopped (its record: created) that its runtime finished after
-- the adoption with its conmon alive (mon.start_done): the record says what restart_counted would
-- have written (running, the restart counted, its postStart hook and probes started). Nothing when
-- a stop or a newer run came meanwhile.
local function start_adopted(inst, c, mon)
  if mon.start_done:wait() ~= true then return end
  local r = rt(inst, c.name)
  if r.mon ~= mon or r.expected or mon.ended.is_set or inst.rec.status ~= "RUNNING" then return end
  log("info", "instance %s: container %s: its restart, in flight when riklet stopped, ended with the container "
    .. "running: running", inst.id, c.runc_id)
  was_started(inst, c, mon)
  restarted(inst, c)
  lifecycle.report(inst, ("container %s restarted"):format(c.name))
end

-- Watch again what still runs after a riklet restart. -> description | nil, err, gone
-- gone (the third result) is positive evidence that the workload no longer runs, and makes the
-- instance FAILED "lost" and released; without it the instance stays RUNNING and adoption is
-- tried again later (P.adopt is safe to call again: it watches only what is not watched yet).
-- Evidence, in order: conmon's exit file (the container ended: reported now with its real exit
-- code), conmon alive (running: watched), then runc.
--   gone:     runc says the container does not exist; netctl says its namespace is gone.
--   not gone: runc failing to answer (missing from PATH, an fd limit, a timeout), a paused
--             container, netctl failing to restore or write network.json (a full disk).
function P.adopt(inst)
  local running, ended = 0, 0
  for _, c in ipairs(inst.rec.containers or {}) do
    if c.state == "exited" or c.state == "deleted" or c.state == "waiting" then
      -- not running (waiting: for its restart back-off, scheduled by adopt_with_restarts)
      rt(inst, c.name).exited:set({ code = c.exit_code })
    elseif rt(inst, c.name).watching then
      running = running + 1 -- adoption tried again: this one is watched already
    else
      local st = c.dir and conmon.exit_status(c.dir)
      local alive = not st and c.conmon_pid and conmon.alive(c.conmon_pid, c.runc_id)
      -- a restart in flight when riklet stopped (the record says created: P.restart's, between its
      -- conmon's start and the next write of the record); runc is asked once, and only for such a
      -- container or one without its conmon. Its runtime is looked for first: seen gone before
      -- runc's answer, that answer is final (nothing else starts the container)
      local start = not st and c.state == "created" and c.conmon_pid
      local runtime = start and alive and conmon.runtime(c.conmon_pid, conmon.init_pid(c.dir))
      local rs, err, missing
      if start or (not st and not alive) then rs, err, missing = runc.state(c.runc_id) end
      if start and rs and rs.pid and rs.pid > 0 then c.pid = rs.pid end -- (the record's: the last run's)
      if st then
        watch(inst, c, conmon.ended(st), " while riklet was not running")
        ended = ended + 1
      elseif alive and not start then
        watch(inst, c, conmon.monitor({ id = c.runc_id, dir = c.dir, conmon_pid = c.conmon_pid, pid = c.pid }))
        if c.state == "running" then was_started(inst, c, rt(inst, c.name).mon) end
        if not c.init then start_probes(inst, c, false) end
        running = running + 1
      elseif alive and not (rs and rs.status == "created" and runtime == false) then
        -- IN FLIGHT (its runtime still runs, or runc cannot tell yet), or started with its conmon
        -- alive: followed to its end (conmon.adopt_start), the record written when it runs
        local mon = conmon.adopt_start({ id = c.runc_id, dir = c.dir, conmon_pid = c.conmon_pid, pid = rs and rs.pid,
          state = runtime == false and rs or nil })
        log("info", "instance %s: container %s was being restarted when riklet stopped (runc: %s): following its start",
          inst.id, c.runc_id, rs and tostring(rs.status) or missing and "no such container yet" or tostring(err))
        watch(inst, c, mon)
        task.spawn(start_adopted, inst, c, mon)
        running = running + 1
      else
        if rs and rs.status == "created" and c.conmon_pid then
          -- ENDED: a start in flight when riklet stopped (its record: created), the container only
          -- created, and nothing left to start it: its conmon gone or without its runtime
          -- (riklet-runc-run killed between runc create and runc start; riklet's own runc start
          -- stopped with riklet). Adopted as running, it stayed created for ever; the restart
          -- policy or the destroy deletes it (--force: it never ran).
          log("warn", "instance %s: container %s was never started (riklet stopped meanwhile): taken as ended",
            inst.id, c.runc_id)
          watch(inst, c, conmon.ended({ code = -1, describe = conmon.NEVER_STARTED }), " while riklet was not running")
          ended = ended + 1
        elseif start and rs and rs.status == "running" then
          -- ENDED: started after riklet stopped, and its conmon ended at its report of that start
          -- (CONMON_LOST): the restart policy or the destroy deletes it (--force)
          log("warn", "instance %s: container %s was started after riklet stopped, without its conmon: taken as ended",
            inst.id, c.runc_id)
          watch(inst, c, conmon.ended({ code = -1, describe = conmon.CONMON_LOST }), " while riklet was not running")
          ended = ended + 1
        elseif missing then
          -- GONE: positive evidence (no exit file, no conmon of this container, and runc says it
          -- has no such container)
          return nil, ("container %s is gone: runc has no such container%s"):format(c.runc_id,
            c.conmon_pid and " and its conmon left no exit file" or ""), true
        elseif not rs then
          -- COULD NOT CHECK (runc missing, failing, out of fds): never evidence; adopted and
          -- checked again by its monitor
          log("error", "instance %s: cannot ask runc about container %s (%s): adopting it and checking again",
            inst.id, c.runc_id, tostring(err))
          watch(inst, c, conmon.monitor({ id = c.runc_id, dir = c.dir, pid = c.pid }), " while riklet was not running")
          running = running + 1
        elseif rs.status == "stopped" then
          watch(inst, c, conmon.ended({ code = -1, describe = "exited (exit code unknown: no exit file)" }),
            " while riklet was not running")
          ended = ended + 1
        elseif rs.status == "paused" then
          -- not gone, not ours to resume: adoption is tried again later
          return nil, ("container %s is paused (by someone else than riklet); resume it with `runc --root %s resume %s`")
            :format(c.runc_id, runc.root(), c.runc_id)
        elseif rs.pid and rs.pid > 0 then
          -- running without its conmon (killed, or started by a riklet before conmon)
          c.pid = rs.pid
          watch(inst, c, conmon.monitor({ id = c.runc_id, dir = c.dir, pid = rs.pid }))
          if rs.status == "running" then was_started(inst, c, rt(inst, c.name).mon) end
          running = running + 1
        else
          -- a state we cannot act on (creating with no pid): not evidence that it is gone
          return nil, ("container %s is %s"):format(c.runc_id, tostring(rs.status))
        end
      end
    end
  end
  if inst.rec.network and netctl and netctl.adopt then
    -- gone only when netctl says the namespace is gone; failing to restore or write is no evidence
    local ok, err, gone = netctl.adopt(inst.id, inst.workload, inst.rec.network)
    if not ok then return nil, "its network: " .. tostring(err), gone end
  end
  return ("%d container(s) running%s"):format(running, ended > 0 and (", %d ended while riklet was down"):format(ended) or "")
end

-- Run a container again (restart policy): a new conmon and runc container, its output in a new
-- log file (logs/RUN.log), the previous run's log kept.
function P.restart(inst, name)
  for _, c in ipairs(inst.rec.containers) do
    if c.name == name then
      local r = rt(inst, c.name)
      if r.mon and not r.mon.ended.is_set then return nil, ("container %s is still running"):format(c.runc_id) end
      local ok, err = runc.delete(c.runc_id, { force = true })
      if not ok then return nil, err end
      if c.conmon_pid then conmon.stop(c.conmon_pid, c.runc_id) end
      conmon.clean(c.dir)
      c.run = (c.run or 0) + 1
      c.log = log_for_run(c, c.run)
      c.state, c.exit_code, c.exit_signal = "created", nil, nil
      local mon
      -- alone: one `runc run` (conmon.can_run()) where riklet-runc-run is there
      mon, err = conmon_create(inst, c, conmon.can_run())
      save(inst)
      if not mon then return nil, err end
      watch(inst, c, mon)
      if not mon.started then
        ok, err = runc.start(c.runc_id)
        if not ok then return nil, err end
      end
      was_started(inst, c, mon)
      c.state = "running"
      return true
    end
  end
  return nil, "no container " .. name
end

-- Boot: remove what instances that no longer exist left in the kernel (links, rules, netns).
-- Boot: remove what instances that no longer exist left behind: runc containers whose bundle
-- is under our instances dir, instance directories (overlays unmounted first), and their network.
-- is_live(id) is asked at each decision, since instances may be created meanwhile.
function P.reconcile(live_ids, is_live)
  local root = cfg.paths.instances .. "/"
  local removed = 0
  -- runc's containers: the names in its root directory; runc is asked (a process each) only about
  -- those no live instance's record names (`runc list` reads every container's state: seconds at
  -- 1,000 Pods on a busy node)
  local known, others = {}, {}
  for _, id in ipairs(live_ids) do
    local inst = agent.instance(id)
    for _, c in ipairs(inst and inst.rec and inst.rec.containers or {}) do
      if c.runc_id then known[c.runc_id] = true end
    end
  end
  for _, name in ipairs(fs.list(runc.root()) or {}) do
    if runc.valid_id(name) and not known[name] then
      local st = runc.state(name)
      if st then others[#others + 1] = { id = name, bundle = st.bundle } end
    end
  end
  for _, c in ipairs(others) do
    local id = type(c.bundle) == "string" and c.bundle:sub(1, #root) == root and c.bundle:sub(#root + 1):match("^([^/]+)/")
    if id and not is_live(id) then
      log("info", "removing leftover container %s of instance %s (no record)", c.id, id)
      runc.delete(c.id, { force = true })
      removed = removed + 1
    end
  end
  -- a conmon of such an instance that runc does not list: stuck in `runc create` when riklet died
  -- (the boot's listing of processes may be older than this: the conmon is looked at again)
  for _, cm in ipairs(conmon.list()) do
    local id = type(cm.bundle) == "string" and cm.bundle:sub(1, #root) == root and cm.bundle:sub(#root + 1):match("^([^/]+)/")
    if id and not is_live(id) and conmon.alive(cm.pid, cm.cid) then
      log("info", "stopping leftover conmon %d of container %s (instance %s has no record)", cm.pid, cm.cid, id)
      conmon.stop(cm.pid, cm.cid)
      removed = removed + 1
    end
  end
  for _, id in ipairs(fs.list(cfg.paths.instances) or {}) do
    if fs.safe_name(id, 64) and not is_live(id) then
      local dir = root .. id
      for _, cname in ipairs(fs.list(dir) or {}) do
        if fs.exists(dir .. "/" .. cname .. "/rootfs") then image.umount_rootfs(dir .. "/" .. cname) end
      end
      P.umount_volumes(dir)
      local ok, err = fs.rm_rf(dir)
      if ok then
        log("info", "removed leftover directory of instance %s (no record)", id)
        removed = removed + 1
      else
        log("error", "cannot remove the leftover directory of instance %s: %s", id, err)
      end
    end
  end
  if removed > 0 then log("info", "reconciled: %d leftover container(s) and directories removed", removed) end
  if not netctl then return true end
  local summary, err = netctl.reconcile(live_ids)
  if not summary then log("error", "network reconcile: %s", tostring(err)) return nil, err end
  return true
end

local STATES = { preparing = true, created = true, running = true, exited = true, deleted = true, foreign = true, waiting = true }

local function whole(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- The fields conmon's runs add to a container record (c.dir already checked): a bad one is
-- replaced by what riklet would have written, or dropped, never used. The pids are only hints:
-- conmon_pid is signalled only once /proc/PID/cmdline shows the conmon of this very container
-- (conmon.stop), pid is only watched, never signalled.
local function check_conmon_fields(inst, c)
  local function bad(field, fix)
    log("error", "instance %s: its record has an invalid %s for container %s (%s): %s", inst.id, field, c.name,
      tostring(c[field]), fix)
  end
  if c.run ~= nil and not whole(c.run, 0, 0x1p31) then
    bad("run", "using run 0")
    c.run = 0
  end
  local want = run_log(c.dir, c.run or 0)
  if c.log ~= nil and c.log ~= want and not (c.run == nil and c.log == c.dir .. "/output.log") then
    bad("log", "using " .. want)
    c.log = want
  end
  for _, f in ipairs({ "conmon_pid", "pid" }) do
    if c[f] ~= nil and not whole(c[f], 2, 0x1p22) then
      bad(f, "ignored")
      c[f] = nil
    end
  end
  if c.state ~= nil and not STATES[c.state] then
    bad("state", "checking the container as if it were running")
    c.state = "running"
    rt(inst, c.name).unsure = true -- (no evidence that it was started: runc is asked before its stop)
  end
  for _, f in ipairs({ "exit_code", "exit_signal", "restart_count" }) do
    if c[f] ~= nil and not whole(c[f], -1, 0x1p31) then
      bad(f, "ignored")
      c[f] = nil
    end
  end
  for _, f in ipairs({ "started_at", "finished_at", "restart_at" }) do
    if c[f] ~= nil and not (type(c[f]) == "number" and c[f] >= 0 and c[f] < 0x1p40) then
      bad(f, "ignored")
      c[f] = nil
    end
  end
  -- (mounted, reason, image and digest have their types checked by store.check already)
end

-- What a record names is validated when it is read (riklet.store.check: names, directories, runc
-- ids derived from the instance id; an invalid record is quarantined, never used). Two things are
-- left here: a container whose record has the runc id an older riklet gave ("<id>_<name>", which
-- can collide) keeps it only when runc shows that container's bundle is this container's
-- directory (otherwise it gets store.runc_id's), and conmon's fields (check_conmon_fields).
function P.load(inst)
  for _, c in ipairs(inst.rec.containers or {}) do
    local want = store.runc_id(inst.id, c.name)
    local dir = cfg.paths.instances .. "/" .. inst.id .. "/" .. c.name
    if c.runc_id ~= want then
      local st = c.runc_id == store.legacy_runc_id(inst.id, c.name) and runc.state(c.runc_id)
      if not (st and st.bundle == dir) then
        log("error", "instance %s: its record names runc container %s for container %s, which runc does not show "
          .. "as this container's; using %s", inst.id, tostring(c.runc_id), c.name, want)
        c.runc_id = want
      end
    end
    c.dir = c.dir or dir
    check_conmon_fields(inst, c)
  end
  inst.rec.dir = inst.rec.dir or (cfg.paths.instances .. "/" .. inst.id)
end

-- What an exit means for a Pod: FAILED as soon as one container fails (non-zero code, a signal,
-- or an unknown code), TERMINATED once every container exited 0, else it keeps running. The
-- container's record gets its exit; the lifecycle asks the restart policy before it acts.
function P.on_exit(inst, msg)
  local unit
  for _, c in ipairs(inst.rec.containers or {}) do
    if c.name == msg.container then unit = c end
  end
  if not unit then
    log("warn", "instance %s: exit of unknown container %s ignored", inst.id, tostring(msg.container))
    return "running"
  end
  if unit.init then return "running" end -- ran to its end during the create
  unit.state, unit.exit_code, unit.exit_signal = "exited", msg.code, msg.signal
  unit.finished_at = core.time()
  unit.oom = P.oom_killed(unit) or nil
  if unit.oom then msg.describe = tostring(msg.describe) .. " (out of memory: killed by the kernel's OOM killer at its memory limit)" end
  unit.reason = msg.describe
  -- independent (Kubernetes pods): a failed container does not end the others
  local independent = inst.workload and inst.workload.independent
  if (msg.code ~= 0 or msg.signal) and not independent then
    local n = unit.restart_count or 0
    return "FAILED", ("container %s %s%s"):format(unit.name, tostring(msg.describe),
      n > 0 and (" (after %d restart%s)"):format(n, n > 1 and "s" or "") or ""), unit
  end
  local failed = {}
  for _, c in ipairs(inst.rec.containers) do
    if c.init then goto next end
    if c.state ~= "exited" then return "running", nil, unit end
    if c.exit_code ~= 0 or c.exit_signal then failed[#failed + 1] = ("%s %s"):format(c.name, tostring(c.reason)) end
    ::next::
  end
  if #failed > 0 then return "FAILED", "container " .. table.concat(failed, "; container "), unit end
  return "TERMINATED", "all containers exited with code 0", unit
end

-- Container c runs again (restart_counted, or a restart in flight when riklet stopped that its
-- runtime finished): counted, its record says so, its postStart hook and probes start.
restarted = function(inst, c)
  c.restart_count = (c.restart_count or 0) + 1
  c.state, c.started_at, c.finished_at, c.reason = "running", core.time(), nil, ""
  c.exit_code, c.exit_signal, c.restart_at, c.oom = nil, nil, nil, nil
  fs.unlink(c.dir .. "/oom")
  c.memcg = P.memcg_of(c.pid) or P.memcg_by_id(c)
  start_probes(inst, c)
end

-- Restart one container and count it.
local function restart_counted(inst, name)
  local ok, err = P.restart(inst, name)
  if not ok then return nil, err end
  for _, c in ipairs(inst.rec.containers) do
    if c.name == name then restarted(inst, c) end
  end
  return true -- the lifecycle stores the record (L.report)
end

-- Adopt, and give containers that were waiting to be restarted when riklet stopped their restart
-- (when it was due; at once if overdue).
local function adopt_with_restarts(inst)
  local waiting = {}
  for _, c in ipairs(inst.rec.containers or {}) do
    if c.state == "waiting" then waiting[#waiting + 1] = c end
  end
  local res, err, gone = P.adopt(inst)
  if not res then return nil, err, gone end
  for _, c in ipairs(waiting) do
    local delay = math.max(0, (tonumber(c.restart_at) or 0) - core.time())
    log("info", "instance %s: container %s was waiting to be restarted: restarting it in %.1f s", inst.id, c.name, delay)
    task.spawn(function()
      task.sleep(delay)
      agent.post(inst.id, { type = "restart", unit = c.name })
    end)
  end
  return res
end

-- Seconds a lifecycle step may take: pulls are sequential, stops run in parallel.
function P.timeout(step, inst)
  local grace = inst.grace or cfg.stop_grace
  if step == "create" then
    local n = inst.workload and inst.workload.containers and #inst.workload.containers or 1
    return (cfg.pull_timeout or 600) * n + 120
  elseif step == "destroy" or step == "release" then
    return grace + 180
  end
  return 120
end

P.driver = {
  -- the lifecycle's CREATING record is made durable beside the create's preparation: the create
  -- waits for it (lifecycle.wait_durable) only before the first container exists
  create_waits_durable = true,
  create = function(...) return P.create(...) end,
  destroy = function(...) return P.destroy(...) end,
  release = function(...) return P.release(...) end,
  adopt = adopt_with_restarts,
  restart = restart_counted,
  on_exit = function(...) return P.on_exit(...) end,
  load = function(...) return P.load(...) end,
  timeout = function(...) return P.timeout(...) end,
  reconcile = function(...) return P.reconcile(...) end,
}

-- Paths of the logs of an instance (for `riklet logs`), from its record: per container its name,
-- the current run's log and the previous run's (nil before a restart). Read by the CLI without
-- P.load, so built here from the instances dir, the id and the checked name and run only (an
-- older riklet's output.log when the record has no run).
function P.logs(rec, instances_dir)
  local out = {}
  if type(rec.id) ~= "string" or not fs.safe_name(rec.id, 64) or type(rec.containers) ~= "table" then return out end
  for _, c in ipairs(rec.containers) do
    if type(c) == "table" and type(c.name) == "string" and fs.safe_name(c.name, 63) then
      local dir = instances_dir .. "/" .. rec.id .. "/" .. c.name
      -- no run at all: an older riklet's output.log; an invalid one: run 0 (as P.load reads it)
      local run = whole(c.run, 0, 0x1p31) and c.run or (c.run ~= nil and 0) or nil
      out[#out + 1] = {
        name = c.name,
        path = run and run_log(dir, run) or dir .. "/output.log",
        previous = run and run > 0 and run_log(dir, run - 1) or nil,
      }
    end
  end
  return out
end

return P
