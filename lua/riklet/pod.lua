-- riklet.pod — the Pod driver: one runc container per spec container, each on its own writable
-- overlay over the image's unpacked rootfs (shared, read-only, unpacked once per digest), all
-- containers of one Pod in one network namespace when Pod networking is on.
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
local proc = require "riklet.proc"
local oci = require "riklet.oci"
local image = require "riklet.image"
local runc = require "riklet.runc"
local store = require "riklet.store"

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
  local ok, err = fs.mkdir_p(dir, "0700")
  if not ok then return nil, err end
  save(inst)

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
      name = c.name, runc_id = store.runc_id(inst.id, c.name), dir = cdir, image = c.image,
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
    ok, err = oci.edit_config(imgs[i].config, cdir .. "/config.json", {
      env = env_list(c.env), hostname = w.name, root_path = cdir .. "/rootfs", netns_path = netns,
    })
    if not ok then return nil, ("container %s: cannot write its OCI config: %s"):format(c.name, err) end
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
      runc.kill(c.runc_id, "TERM")
      local grace = inst.grace or cfg.stop_grace
      if not r.exited:wait(grace) then
        log("warn", "container %s did not stop within %gs of SIGTERM: sending SIGKILL", c.runc_id, grace)
        runc.kill(c.runc_id, "KILL")
        r.exited:wait(10)
      end
    end
  end
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

-- Watch again what still runs after a riklet restart. -> description | nil, err, gone
-- gone (the third result) is positive evidence that the workload no longer runs, and makes the
-- instance FAILED "lost" and released; without it the instance stays RUNNING and adoption is
-- tried again later (P.adopt is safe to call again: it watches only what is not watched yet).
--   gone:     runc says the container does not exist; runc shows it stopped (its process ended:
--             a zombie too) or created (never started); netctl says its namespace is gone.
--   not gone: runc failing to answer (missing from PATH, an fd limit, a timeout), a paused
--             container, netctl failing to write network.json (a full disk).
-- (Under conmon, "stopped" becomes "ended, with the exit code conmon wrote"; the rest stays.)
function P.adopt(inst)
  local running = 0
  for _, c in ipairs(inst.rec.containers or {}) do
    local st, serr, missing = runc.state(c.runc_id)
    if not st then
      if missing then return nil, ("container %s is gone from runc"):format(c.runc_id), true end
      return nil, ("cannot ask runc about container %s: %s"):format(c.runc_id, tostring(serr))
    end
    if st.status == "running" and st.pid and st.pid > 0 then
      c.pid = st.pid
      if not rt(inst, c.name).watching then watch(inst, c) end -- adoption may be tried again
      running = running + 1
    elseif c.state == "exited" then
      rt(inst, c.name).exited:set({ code = c.exit_code })
    elseif st.status == "paused" then
      return nil, ("container %s is paused (by someone else than riklet); resume it with `runc --root %s resume %s`")
        :format(c.runc_id, runc.root(), c.runc_id)
    else
      return nil, ("container %s is %s"):format(c.runc_id, tostring(st.status)), true
    end
  end
  if inst.rec.network and netctl and netctl.adopt then
    local ok, err, gone = netctl.adopt(inst.id, inst.workload, inst.rec.network)
    if not ok then return nil, "its network: " .. tostring(err), gone end
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

-- What a record names is validated when it is read (riklet.store.check: names, directories, runc
-- ids derived from the instance id; an invalid record is quarantined, never used). One thing only
-- runc can tell: a container whose record has the runc id an older riklet gave ("<id>_<name>",
-- which can collide) keeps it only when runc shows that container's bundle is this container's
-- directory; otherwise it gets the current one (store.runc_id).
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
  unit.state, unit.exit_code, unit.exit_signal = "exited", msg.code, msg.signal
  unit.finished_at = core.time()
  unit.reason = msg.describe
  if msg.code ~= 0 or msg.signal then
    local n = unit.restart_count or 0
    return "FAILED", ("container %s %s%s"):format(unit.name, tostring(msg.describe),
      n > 0 and (" (after %d restart%s)"):format(n, n > 1 and "s" or "") or ""), unit
  end
  for _, c in ipairs(inst.rec.containers) do
    if c.state ~= "exited" then return "running", nil, unit end
  end
  return "TERMINATED", "all containers exited with code 0", unit
end

-- Restart one container and count it.
local function restart_counted(inst, name)
  local ok, err = P.restart(inst, name)
  if not ok then return nil, err end
  for _, c in ipairs(inst.rec.containers) do
    if c.name == name then
      c.restart_count = (c.restart_count or 0) + 1
      c.state, c.started_at, c.finished_at, c.reason = "running", core.time(), nil, ""
      c.exit_code, c.exit_signal, c.restart_at = nil, nil, nil
    end
  end
  save(inst)
  return true
end

-- Adopt, and give containers that were waiting to be restarted when riklet stopped their restart
-- (when it was due; at once if overdue).
local function adopt_with_restarts(inst)
  local waiting = {}
  for _, c in ipairs(inst.rec.containers or {}) do
    if c.state == "waiting" then
      c.state = "exited" -- what P.adopt expects of a container that is not running
      waiting[#waiting + 1] = c
    end
  end
  local res, err, gone = P.adopt(inst)
  for _, c in ipairs(waiting) do c.state = "waiting" end
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

-- Paths of the logs of an instance (for `riklet logs`), from its record.
function P.logs(rec)
  local out = {}
  for _, c in ipairs(rec.containers or {}) do out[#out + 1] = { name = c.name, path = c.log } end
  return out
end

return P
