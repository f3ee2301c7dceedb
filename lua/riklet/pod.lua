-- riklet.pod — the Pod driver: one runc container per spec container, each on its own writable
-- overlay over the image's unpacked rootfs (shared, read-only, unpacked once per digest), all
-- containers of one Pod in one network namespace when Pod networking is on.
--
-- Driver interface (used by riklet.agent):
--   init(cfg, agent) -> true | nil, err
--   create(inst, workload) -> true | nil, err   records every resource in inst.rec as it goes, so
--                                                a failure (or a crash) can always be rolled back
--   adopt(inst) -> true | nil, err               after a riklet restart: watch what still runs
--   release(inst) -> true | nil, err             the workload ended: free runtime resources, keep logs
--   destroy(inst) -> true | nil, err             remove everything, idempotent
--   restart(inst, container_name) -> true | nil, err
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local oci = require "riklet.oci"
local image = require "riklet.image"
local runc = require "riklet.runc"
local store = require "riklet.store"
local fault = require "riklet.fault"

local P = {}
local cfg, agent, netctl

local function log(level, fmt, ...) core.log(level, "pod", fmt:format(...)) end

function P.init(config, ag)
  cfg, agent = config, ag
  local ok, err = image.init(config)
  if not ok then return nil, err end
  ok, err = runc.init(config)
  if not ok then return nil, err end
  if config.network ~= "none" then
    local found, mod = pcall(require, "riklet.netctl")
    if found then
      local iok, ierr = mod.init(config)
      if iok then netctl = mod
      elseif config.network == "bridge" then return nil, "pod networking: " .. tostring(ierr)
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

local function save(inst)
  local ok, err = store.save(inst.rec)
  if not ok then log("error", "instance %s: %s", inst.id, err) end
  return ok, err
end

-- Watch a container's init process; report its exit to the instance's mailbox.
local function watch(inst, c)
  local r = rt(inst, c.name)
  r.exited, r.watching = task.event(), true
  local pid = c.pid
  task.spawn(function()
    local code, signal = proc.watch(pid)
    local describe = proc.describe(code, signal)
    if code == nil and signal == nil then
      describe = "exited (exit code unknown: it was started by an earlier riklet)"
    end
    r.exited:set({ code = code, signal = signal })
    if r.expected then return end -- we stopped it
    if code == nil and signal == nil then code = -1 end
    agent.post(inst.id, { type = "exit", container = c.name, code = code, signal = signal, describe = describe })
  end)
end

local function env_list(w_env)
  local out = {}
  for _, e in ipairs(w_env or {}) do out[#out + 1] = e.name .. "=" .. e.value end
  return out
end

local function check_cancel(inst)
  if inst.destroy_requested then return nil, "destroyed while it was being created" end
  return true
end

-- fn(...) -> value | nil, err, run in its own task; returns its result, or nil, "destroyed..." as
-- soon as the instance is destroyed (the work itself goes on: an image pull is shared and cached).
local function unless_destroyed(inst, fn, ...)
  local q = task.queue()
  local args = { n = select("#", ...), ... }
  task.spawn(function()
    local ok, v, err = pcall(fn, unpack(args, 1, args.n))
    q:put({ ok and v or nil, ok and err or v })
  end)
  inst.on_cancel = function() q:put({ nil, "destroyed while it was being created" }) end
  local r = q:get()
  inst.on_cancel = nil
  return r[1], r[2]
end

function P.create(inst, w)
  local rec = inst.rec
  local dir = cfg.paths.instances .. "/" .. inst.id
  rec.dir = dir
  rec.containers = {}
  local fok, ferr = fault.point("pod.mkdir") if not fok then return nil, ferr end
  local ok, err = fs.mkdir_p(dir, "0700")
  if not ok then return nil, err end
  -- without a record, a crash would leave resources nothing names: do not create them
  ok, err = save(inst) if not ok then return nil, "cannot store its record: " .. err end

  -- 1. images (the slow part; other instances go on meanwhile)
  local imgs = {}
  for i, c in ipairs(w.containers) do
    ok, err = check_cancel(inst)
    if not ok then return nil, err end
    local img, ierr = unless_destroyed(inst, image.ensure, c.image, { timeout = cfg.pull_timeout })
    if not img then return nil, ("container %s: %s"):format(c.name, ierr) end
    imgs[i] = img
  end
  ok, err = check_cancel(inst)
  if not ok then return nil, err end

  -- 2. network: one namespace for the whole Pod
  local netns
  if netctl then
    local net, nerr = netctl.setup(inst.id, w)
    rec.network = { enabled = true }
    save(inst)
    if not net then return nil, nerr end
    rec.network = net
    rec.network.enabled = true
    netns = net.netns
    save(inst)
  end

  -- 3. bundles and runc containers
  for i, c in ipairs(w.containers) do
    local cdir = dir .. "/" .. c.name
    local crec = {
      name = c.name, runc_id = inst.id .. "_" .. c.name, dir = cdir, image = c.image,
      digest = imgs[i].digest, log = cdir .. "/output.log", state = "preparing",
    }
    rec.containers[i] = crec
    save(inst)
    ok, err = fs.mkdir_p(cdir, "0700")
    if not ok then return nil, err end
    ok, err = image.mount_rootfs(cdir, imgs[i])
    if not ok then return nil, ("container %s: %s"):format(c.name, err) end
    -- not stored on its own: a rollback unmounts whatever rootfs it finds in the container's dir
    crec.mounted = true
    if runc.exists(crec.runc_id) then
      -- never ours to delete on rollback: another riklet shares this runc root, or a leftover
      crec.state = "foreign"
      return nil, ("container %s: runc already has a container %s (in %s); is another riklet using the same "
        .. "--runc-root? Remove it with `runc --root %s delete -f %s` if it is a leftover")
        :format(c.name, crec.runc_id, runc.root(), runc.root(), crec.runc_id)
    end
    ok, err = fault.point("pod.config") if not ok then return nil, ("container %s: %s"):format(c.name, err) end
    ok, err = oci.edit_config(imgs[i].config, cdir .. "/config.json", {
      env = env_list(c.env), hostname = w.name, root_path = cdir .. "/rootfs", netns_path = netns,
    })
    if not ok then return nil, ("container %s: cannot write its OCI config: %s"):format(c.name, err) end
    ok, err = fault.point("pod.runc_create") if not ok then return nil, ("container %s: %s"):format(c.name, err) end
    ok, err = runc.create(crec.runc_id, cdir, { pid_file = cdir .. "/init.pid", log = crec.log })
    crec.state = "created"
    if ok then crec.pid = tonumber((fs.read(cdir .. "/init.pid") or ""):match("%d+")) end
    save(inst)
    if not ok then return nil, ("container %s: %s"):format(c.name, err) end
    if not crec.pid then return nil, ("container %s: runc did not write its pid file"):format(c.name) end
  end
  for _, crec in ipairs(rec.containers) do
    ok, err = check_cancel(inst)
    if not ok then return nil, err end
    watch(inst, crec)
    ok, err = fault.point("pod.runc_start") if not ok then return nil, ("container %s: %s"):format(crec.name, err) end
    ok, err = runc.start(crec.runc_id)
    if not ok then return nil, ("container %s: %s"):format(crec.name, err) end
    crec.state = "running"
    crec.started_at = core.time()
  end
  -- not stored here: the agent stores the record with RUNNING as soon as this returns (a crash
  -- before that leaves CREATING, which a restarted riklet rolls back and creates again)
  return true
end

-- Stop one container: SIGTERM, grace period, SIGKILL; then delete it from runc.
local function stop_container(inst, c)
  local r = rt(inst, c.name)
  r.expected = true
  local st = runc.state(c.runc_id)
  if st and (st.status == "running" or st.status == "created" or st.status == "paused") then
    if not r.watching and st.pid and st.pid > 0 and not r.exited.is_set then
      -- adopted or never watched: watch now so we know when it is gone
      c.pid = st.pid
      watch(inst, c)
      r = rt(inst, c.name)
      r.expected = true
    end
    if st.status == "running" then
      local fok, ferr = fault.point("pod.stop") if not fok then return nil, ("cannot stop container %s: %s"):format(c.runc_id, ferr) end
      runc.kill(c.runc_id, "TERM")
      if not r.exited:wait(cfg.stop_grace) then
        log("warn", "container %s did not stop within %gs of SIGTERM: sending SIGKILL", c.runc_id, cfg.stop_grace)
        runc.kill(c.runc_id, "KILL")
        r.exited:wait(10)
      end
    end
  end
  local fok, ferr = fault.point("pod.delete") if not fok then return nil, ("cannot delete container %s: %s"):format(c.runc_id, ferr) end
  local ok, err = runc.delete(c.runc_id, { force = true })
  if not ok and runc.state(c.runc_id) then
    return nil, ("cannot delete container %s: %s"):format(c.runc_id, err)
  end
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
        local ok, err = stop_container(inst, c)
        done:put({ ok = ok, err = err })
      end)
    end
  end
  for _ = 1, n do
    local r = done:get()
    if not r.ok then errs[#errs + 1] = r.err end
  end
  for _, c in ipairs(rec.containers or {}) do
    if c.mounted or (c.dir and fs.exists(c.dir .. "/rootfs")) then
      local ok, err = image.umount_rootfs(c.dir)
      if ok then c.mounted = false else errs[#errs + 1] = err end
    end
    if keep_logs and c.dir and not c.mounted then
      for _, f in ipairs({ "upper", "work", "rootfs", "config.json", "init.pid" }) do
        fs.rm_rf(c.dir .. "/" .. f)
      end
    end
  end
  if rec.network and netctl then
    local ok, err = netctl.teardown(inst.id)
    if ok then rec.network = nil else errs[#errs + 1] = err end
  end
  if not keep_logs and rec.dir and #errs == 0 then local fok, ferr = fault.point("pod.rmdir") if not fok then errs[#errs + 1] = ferr end end
  if not keep_logs and rec.dir and #errs == 0 then
    local ok, err = fs.rm_rf(rec.dir)
    if not ok then errs[#errs + 1] = err end
  end
  save(inst)
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

function P.release(inst)
  return free_resources(inst, true)
end

function P.destroy(inst)
  return free_resources(inst, false)
end

function P.adopt(inst)
  local running = 0
  for _, c in ipairs(inst.rec.containers or {}) do
    local st = runc.state(c.runc_id)
    if not st then
      return nil, ("container %s is gone from runc"):format(c.runc_id)
    end
    if st.status == "running" and st.pid and st.pid > 0 then
      c.pid = st.pid
      watch(inst, c)
      running = running + 1
    elseif c.state == "exited" then
      rt(inst, c.name).exited:set({ code = c.exit_code })
    else
      return nil, ("container %s is %s"):format(c.runc_id, st.status)
    end
  end
  if inst.rec.network and netctl and netctl.adopt then
    local ok, err = netctl.adopt(inst.id, inst.workload, inst.rec.network)
    -- its containers run: a network that cannot be repaired now is no evidence that the Pod is gone
    if not ok then log("error", "instance %s: re-adopted, but its network could not be repaired: %s", inst.id, tostring(err)) end
  end
  return ("%d container(s) running"):format(running)
end

function P.restart(inst, name)
  for _, c in ipairs(inst.rec.containers) do
    if c.name == name then
      runc.delete(c.runc_id, { force = true })
      local ok, err = runc.create(c.runc_id, c.dir, { pid_file = c.dir .. "/init.pid", log = c.log })
      if not ok then return nil, err end
      c.pid = tonumber((fs.read(c.dir .. "/init.pid") or ""):match("%d+"))
      watch(inst, c)
      ok, err = runc.start(c.runc_id)
      if not ok then return nil, err end
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
  for _, c in ipairs(runc.list() or {}) do
    local id = type(c.bundle) == "string" and c.bundle:sub(1, #root) == root and c.bundle:sub(#root + 1):match("^([^/]+)/")
    if id and not is_live(id) then
      log("info", "removing leftover container %s of instance %s (no record)", c.id, id)
      runc.delete(c.id, { force = true })
      removed = removed + 1
    end
  end
  for _, id in ipairs(fs.list(cfg.paths.instances) or {}) do
    if fs.safe_name(id, 64) and not is_live(id) then
      local dir = root .. id
      for _, cname in ipairs(fs.list(dir) or {}) do
        if fs.exists(dir .. "/" .. cname .. "/rootfs") then image.umount_rootfs(dir .. "/" .. cname) end
      end
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

-- Paths of the logs of an instance (for `riklet logs`), from its record.
function P.logs(rec)
  local out = {}
  for _, c in ipairs(rec.containers or {}) do out[#out + 1] = { name = c.name, path = c.log } end
  return out
end

return P
