-- riklet.function — the Function driver: one microVM per instance, booted from a kernel (node
-- flag --kernel-path / KERNEL_LOCATION, optional --initrd-path / INITRD_LOCATION) and the ext4 root
-- filesystem the workload names by URL, on a TAP with its own /30 (riklet.netctl), its exposure
-- as a DNAT rule like a Pod's port. The VMM is a backend (lua/riklet/vmm/<name>.lua, contract in
-- VMM.md): qemu or firecracker, chosen by --vmm auto|qemu|firecracker.
--
-- In INSTANCE_DIR: the instance's own writable disk (never the cached rootfs), the VMM's control
-- socket, console.log (the guest's serial console). The record's `vm` holds the backend's handle
-- (plain data: backend, pid, starttime, sock), the disk, the times CREATE -> RUNNING and CREATE ->
-- the guest answering on its port, and the exit.
--
-- States: RUNNING once the VMM reports the guest running; the guest powering off -> TERMINATED;
-- the VMM ending otherwise (a kernel panic under -no-reboot, a crash, a kill) -> FAILED with the
-- exit status and the console's last lines. Destroy: ACPI power button / Ctrl-Alt-Del, the grace
-- period, then kill; TAP, rules, disk and sockets removed. A VM outlives riklet: after a restart the
-- same VMM process (pid + start time) is re-adopted, never restarted.
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local usock = require "riklet.usock"
local store = require "riklet.store"
local lifecycle = require "riklet.lifecycle"

local F = {}
local cfg, agent, netctl
local backend, backend_err

local function log(level, fmt, ...) core.log(level, "function", fmt:format(...)) end

-- ---- rootfs: fetched and cached by riklet.rootfs (VMM.md) ----
local rootfs = require "riklet.rootfs"

-- ---- init -----------------------------------------------------------------------------------

local function load_backend(name)
  local found, mod = pcall(require, "riklet.vmm." .. name)
  if not found then return nil, ("the %s backend is not available in this build: %s"):format(name, tostring(mod)) end
  return mod
end

local function on_path(bin)
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local st = fs.stat(dir .. "/" .. bin)
    if st and st.type == "file" then return true end
  end
  return false
end

local function whole(v, lo, hi) return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi end

-- The options only this driver reads (defaults filled in): checked at start even when the driver
-- itself is loaded at the first Function (riklet.drivers).
function F.check_config(c)
  c.vm_vcpus = c.vm_vcpus or 1
  c.vm_memory_mib = c.vm_memory_mib or 128
  c.vm_machine = c.vm_machine or "pc"
  c.vm_accel = c.vm_accel or "auto"
  c.vmm = c.vmm or "auto"
  if not whole(c.vm_vcpus, 1, 64) then return nil, "--vm-vcpus: give a whole number from 1 to 64" end
  if not whole(c.vm_memory_mib, 16, 1048576) then return nil, "--vm-memory-mib: give a whole number of MiB, at least 16" end
  if c.vm_machine ~= "pc" and c.vm_machine ~= "microvm" then return nil, "--vm-machine: pc or microvm" end
  if c.vm_accel ~= "auto" and c.vm_accel ~= "kvm" and c.vm_accel ~= "tcg" then return nil, "--vm-accel: auto, kvm or tcg" end
  if c.vmm ~= "auto" and c.vmm ~= "qemu" and c.vmm ~= "firecracker" then return nil, "--vmm: auto, qemu or firecracker" end
  return true
end

function F.init(config, ag)
  cfg, agent = config, ag
  if type(cfg.paths) ~= "table" or not cfg.paths.instances then
    return nil, "no instances directory is configured (paths.instances)"
  end
  local cok, cerr = F.check_config(cfg)
  if not cok then return nil, cerr, true end
  local name = cfg.vmm
  if name == "auto" then name = on_path(cfg.firecracker or "firecracker") and "firecracker" or "qemu" end
  backend, backend_err = load_backend(name)
  if backend and backend.configure then backend.configure(cfg) end
  if not backend and name == "firecracker" and cfg.vmm == "auto" then backend, backend_err = load_backend("qemu") end
  if not backend then log("error", "%s: Functions cannot be created until this is fixed", backend_err) end
  -- (--rootfs-max-size and --rootfs-timeout come with riklet.rootfs; nil keeps its defaults)
  rootfs.configure({ cache_dir = cfg.paths.rootfs, max_bytes = cfg.rootfs_max_size, timeout = cfg.rootfs_timeout })
  if config.network ~= "none" then
    local found, mod = pcall(require, "riklet.netctl")
    if found then
      if mod.config() then netctl = mod
      else
        local ok, err = mod.init(config)
        if ok then netctl = mod else log("warn", "Function networking is off: %s", tostring(err)) end
      end
    end
  end
  return fs.mkdir_p(cfg.paths.instances, "0700")
end

-- ---- helpers --------------------------------------------------------------------------------

local function save(inst, durable)
  local ok, err = store.save(inst.rec, durable)
  if not ok then log("error", "instance %s: %s", inst.id, err) end
  return ok, err
end

local function rt(inst)
  inst.rt = inst.rt or {}
  return inst.rt
end

local function readable(path)
  local f = io.open(path, "rb")
  if not f then return false end
  f:close()
  return true
end

-- The last lines of the guest's console, for a reason.
local function console_tail(dir, n)
  local s = fs.tail(dir .. "/console.log", 16384)
  if not s or s == "" then return "" end
  local lines = {}
  for l in s:gmatch("[^\r\n]+") do lines[#lines + 1] = l end
  local out = {}
  -- the kernel's panic line first: what follows it is a stack dump
  for _, l in ipairs(lines) do
    if l:find("Kernel panic", 1, true) then out[1] = l break end
  end
  for i = math.max(1, #lines - (n or 5) + 1), #lines do out[#out + 1] = lines[i] end
  return table.concat(out, " | ")
end

local function mac_for(guest_ip)
  local a, b, c = guest_ip:match("^%d+%.(%d+)%.(%d+)%.(%d+)$")
  return ("52:54:00:%02x:%02x:%02x"):format(tonumber(a), tonumber(b), tonumber(c))
end

local cancelled, unless_destroyed = lifecycle.check_cancel, lifecycle.unless_destroyed

local function the_backend(name)
  if name == nil or (backend and backend.name == name) then return backend, backend_err end
  return load_backend(name)
end

-- Watch the VMM; its end goes to the instance's mailbox as an exit of unit "vm".
-- The guest writes its console as fast as it likes: while the VM runs, console.log is started over
-- once past --log-size-max (as conmon does a container's log; QEMU opens it O_APPEND).
local function cap_console(inst, r, path)
  local max = tonumber(cfg.log_size_max) or 10 * 1024 * 1024
  task.spawn(function()
    while r.watching and not inst.destroy_requested do
      local st = fs.stat(path)
      if st and st.size > max then
        local f = io.open(path, "w")
        if f then f:close() end
        r.console_resets = (r.console_resets or 0) + 1
        log(r.console_resets == 1 and "info" or "debug",
          "%s: the guest's console passed %d bytes (--log-size-max): console.log started over", inst.id, max)
      end
      task.sleep(1)
    end
  end)
end

local function watch(inst, b, handle)
  local r = rt(inst)
  if r.watching then return end
  r.watching = true
  if inst.rec and inst.rec.dir then cap_console(inst, r, inst.rec.dir .. "/console.log") end
  b.watch(handle, function(ev)
    r.watching = false
    r.ended = ev
    if r.expected then return end
    agent.post(inst.id, { type = "exit", container = "vm", code = ev.code, signal = ev.signal,
      describe = ev.reason, shutdown = ev.type == "shutdown" })
  end)
end

-- Probe the guest's exposed port until it accepts a TCP connection; record the time.
local function probe(inst, ip, port)
  local rec = inst.rec
  task.spawn(function()
    local deadline = core.now() + 300
    while core.now() < deadline and rec.status ~= "FAILED" and rec.status ~= "TERMINATED" and not rt(inst).ended do
      local s = usock.connect_tcp(ip, port)
      if s then
        local w = task.queue()
        task.spawn(function() w:put(s:wait_writable() and true or false) end)
        local got = w:get(1)
        local err = got and s:so_error()
        s:close()
        if got and not err then
          rec.vm.answering_after = core.time() - (rec.created_at or core.time())
          log("info", "instance %s: the guest answers on %s:%d, %.2f s after the create", inst.id, ip, port,
            rec.vm.answering_after)
          save(inst)
          return
        end
      end
      task.sleep(0.1)
    end
  end)
end

-- ---- driver ---------------------------------------------------------------------------------

-- rec.vm.steps: seconds each step of the create took (README "Functions", the bench prints them):
-- queue (from the CREATE, the instance's created_at, to this driver), checks, rootfs (fetch or
-- revalidation), net (TAP, /30, rules) and disk (link = base.img, overlay = disk.qcow2; made
-- beside net, at the same time), spawn (QEMU until -daemonize returns), qmp, total (running_after).
function F.create(inst, w)
  local rec = inst.rec
  local dir = cfg.paths.instances .. "/" .. inst.id
  local steps = {}
  local t0 = core.now()
  local t = t0
  local function step(name)
    local n = core.now()
    steps[name] = n - t
    t = n
  end
  rec.dir = dir
  rec.vm = { steps = steps }
  -- (progress notes without fsync, as the Pod driver's: a crash of riklet keeps them, a machine
  -- crash ends the VMs too and the durable CREATING record rolls the instance back; a QEMU
  -- started before its handle was stored is found by its -pidfile)
  local ok, err = fs.mkdir_p(dir, "0700")
  if not ok then return nil, err end
  ok, err = save(inst, false) if not ok then return nil, "cannot store its record: " .. err end

  -- 1. what the node must have
  if not cfg.kernel_path or cfg.kernel_path == "" then
    return nil, "no guest kernel: start riklet with --kernel-path FILE (or KERNEL_LOCATION) to run Functions"
  end
  if not readable(cfg.kernel_path) then
    return nil, ("the guest kernel %s (--kernel-path / KERNEL_LOCATION) does not exist or cannot be read"):format(cfg.kernel_path)
  end
  if cfg.initrd_path and cfg.initrd_path ~= "" and not readable(cfg.initrd_path) then
    return nil, ("the guest initrd %s (--initrd-path / INITRD_LOCATION) does not exist or cannot be read"):format(cfg.initrd_path)
  end
  if not backend then return nil, "no VM backend: " .. tostring(backend_err) end
  local avail, why = backend.available(cfg)
  if not avail then return nil, why end
  local accel
  if backend.accel then
    accel, err = backend.accel(cfg.vm_accel, cfg)
    if not accel then return nil, err end
  end
  if not netctl then return nil, "Functions need riklet's network (a TAP per VM): riklet runs with --network none or without it" end
  step("checks")

  -- 2. the root filesystem (cached, shared; a destroy stops the wait)
  local fn = w["function"]
  local cache
  cache, err = unless_destroyed(inst, rootfs.fetch, fn.rootfs, { cancel = function() return inst.destroy_requested end })
  if not cache then return nil, "rootfs: " .. tostring(err) end
  ok, err = rootfs.check_ext4(cache)
  if not ok then return nil, ("rootfs %s: %s"):format(fn.rootfs, tostring(err)) end
  ok, err = cancelled(inst) if not ok then return nil, err end
  step("rootfs")

  -- 3 + 4. the instance's own disk, made while the network (TAP, /30, exposure DNAT) is set up: the
  -- disk task waits on the worker pool (its write) while netctl works in the loop, and the other
  -- way round. Both are joined before anything is judged, so a failure of either rolls back both.
  rec.vm.backend = backend.name
  local disk_done, t_disk = task.queue(), t
  task.spawn(function()
    local ds = {}
    local pok, d, derr = pcall(backend.prepare_disk, cache, dir, ds)
    if not pok then d, derr = nil, "riklet internal error preparing the disk: " .. tostring(d) end
    ds.disk = core.now() - t_disk
    disk_done:put({ disk = d, err = derr, steps = ds })
  end)
  rec.network = { enabled = true, kind = "Function" }
  save(inst, false)
  local net, nerr = netctl.setup(inst.id, w)
  steps.net = core.now() - t_disk
  local dres = disk_done:get()
  for k, v in pairs(dres.steps) do steps[k] = v end
  step("net_and_disk")
  rec.vm.disk = dres.disk
  if net then rec.network = net rec.network.enabled = true end
  save(inst, false)
  if not net then return nil, nerr end
  if not dres.disk then return nil, dres.err end
  ok, err = cancelled(inst) if not ok then return nil, err end
  local disk = dres.disk

  -- 5. boot
  local cmdline = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw " .. (backend.boot_args or "")
    .. (backend.machine_args and backend.machine_args(cfg.vm_machine, accel) or "") .. " " .. net.kernel_ip
  local vm = {
    id = inst.id, dir = dir, kernel = cfg.kernel_path,
    initrd = cfg.initrd_path ~= "" and cfg.initrd_path or nil, cmdline = cmdline:gsub("%s+", " "), disk = disk,
    tap = net.tap, mac = mac_for(net.guest_ip), vcpus = cfg.vm_vcpus, memory_mib = cfg.vm_memory_mib,
    console_log = dir .. "/console.log", accel = accel, machine = cfg.vm_machine, steps = steps,
  }
  fs.unlink(vm.console_log)
  t = core.now()
  local handle, serr, partial = backend.start(vm)
  rec.vm.handle = handle or partial
  if not handle then
    save(inst, false)
    local tail = console_tail(dir)
    return nil, ("the VM did not start: %s%s"):format(tostring(serr), tail ~= "" and ("; console: " .. tail) or "")
  end
  steps.vmm = core.now() - t
  rec.vm.running_after = core.time() - (rec.created_at or core.time())
  rec.vm.running_at = core.time()
  steps.queue = rec.vm.running_after - (core.now() - t0)
  steps.total = rec.vm.running_after
  watch(inst, backend, handle)
  local e = fn.exposure
  if e then probe(inst, net.guest_ip, e.target_port) end
  log("info", "instance %s: %s VM pid %d running (%s, %s), %.2f s after the create", inst.id, backend.name,
    handle.pid, vm.machine, tostring(accel), rec.vm.running_after)
  return true
end

-- Stop the VM (when one runs) and remove what it made; keep console.log when keep_log.
local function free_resources(inst, keep_log)
  local rec, errs = inst.rec, {}
  local vmrec = rec.vm or {}
  local b = vmrec.backend and the_backend(vmrec.backend) or backend
  -- (QEMU writes its pidfile as it starts: without one there is nothing to look for)
  if not vmrec.handle and b and b.processes and rec.dir and (b.name ~= "qemu" or fs.exists(rec.dir .. "/qemu.pid")) then
    -- riklet stopped between starting the VMM and storing its handle: find it by its files
    for _, h in ipairs(b.processes(cfg.paths.instances)) do
      if h.id == inst.id then
        log("warn", "instance %s: its record names no VM but QEMU pid %d runs for it: stopping it", inst.id, h.pid)
        vmrec.handle = h
      end
    end
  end
  if vmrec.handle then
    if not b then
      errs[#errs + 1] = ("cannot stop its VM: the %s backend is not available"):format(tostring(vmrec.backend))
    else
      rt(inst).expected = true
      local ok, err = b.stop(vmrec.handle, inst.grace or cfg.stop_grace or 10)
      if not ok then errs[#errs + 1] = err end
    end
  end
  if #errs == 0 and b and rec.dir then b.cleanup(vmrec.handle, rec.dir) end
  if netctl and rec.network then
    local ok, err = netctl.teardown(inst.id)
    if ok then rec.network = nil else errs[#errs + 1] = err end
  end
  if #errs == 0 and rec.dir then
    if keep_log then
      fs.unlink(rec.dir .. "/disk.qcow2")
      fs.unlink(rec.dir .. "/base.img")
      fs.unlink(rec.dir .. "/disk.ext4")
    else
      local ok, err = fs.rm_rf(rec.dir)
      if not ok then errs[#errs + 1] = err end
    end
  end
  -- the lifecycle stores the record after this step
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

function F.release(inst) return free_resources(inst, true) end
function F.destroy(inst) return free_resources(inst, false) end

-- After a riklet restart: the same VMM process (pid and start time) is watched again.
function F.adopt(inst)
  local vmrec = inst.rec.vm
  if type(vmrec) ~= "table" or type(vmrec.handle) ~= "table" then
    return nil, "its record names no VM", true
  end
  local b, err = the_backend(vmrec.backend)
  if not b then return nil, err end
  local ok, aerr, gone = b.adopt(vmrec.handle)
  if not ok and gone and vmrec.handle.pid then
    -- it ended while riklet was not running: reported as an exit (the console tells a guest that
    -- powered off from one that crashed), the rest is freed as for any end
    local console = fs.tail(inst.rec.dir .. "/console.log", 4096) or ""
    local off = console:find("reboot: Power down", 1, true) ~= nil
    rt(inst).ended = true
    agent.post(inst.id, { type = "exit", container = "vm", shutdown = off,
      describe = off and "the guest powered off while riklet was not running"
        or ("%s while riklet was not running"):format(aerr) })
    return ("%s VM ended while riklet was not running"):format(b.name)
  end
  if not ok then return nil, aerr, gone end
  watch(inst, b, vmrec.handle)
  if inst.rec.network and netctl then
    local nok, nerr, ngone = netctl.adopt(inst.id, inst.workload, inst.rec.network)
    if not nok then return nil, "its network: " .. tostring(nerr), ngone end
  end
  return ("%s VM pid %d running"):format(b.name, vmrec.handle.pid)
end

function F.restart() return nil, "a Function is not restarted" end

-- The VMM ended: the guest powering off is TERMINATED, anything else FAILED.
function F.on_exit(inst, msg)
  local rec = inst.rec
  rec.vm = rec.vm or {}
  rec.vm.exit_code, rec.vm.exit_signal, rec.vm.finished_at = msg.code, msg.signal, core.time()
  if msg.shutdown then return "TERMINATED", tostring(msg.describe) end
  local tail = rec.dir and console_tail(rec.dir) or ""
  return "FAILED", ("%s%s"):format(tostring(msg.describe), tail ~= "" and ("; last console lines: " .. tail) or "")
end

-- What the record names is derived, never trusted: the socket and disk live in the instance dir.
function F.load(inst)
  local rec = inst.rec
  rec.dir = cfg.paths.instances .. "/" .. inst.id
  local vmrec = rec.vm
  if vmrec ~= nil and type(vmrec) ~= "table" then rec.vm = nil return end
  if type(vmrec) == "table" and type(vmrec.handle) == "table" then
    local h = vmrec.handle
    if not whole(h.pid, 2, 0x1p22) then h.pid = nil end
    if h.starttime ~= nil and not whole(h.starttime, 0, 0x1p53) then h.starttime = nil end
    local b = the_backend(vmrec.backend)
    local sock = b and b.name == "firecracker" and "api.sock" or "qmp.sock"
    h.sock = rec.dir .. "/" .. sock
    h.pidfile = rec.dir .. "/qemu.pid"
  end
end

-- Boot: a VMM riklet started for an instance that has no record (any more) is stopped.
function F.reconcile(_, is_live)
  if not (backend and backend.processes) then return true end
  for _, h in ipairs(backend.processes(cfg.paths.instances)) do
    if not is_live(h.id) then
      log("info", "stopping leftover %s VM pid %d of instance %s (no record)", backend.name, h.pid, h.id)
      local ok, err = backend.stop(h, 0)
      if not ok then log("error", "cannot stop leftover VM pid %d: %s", h.pid, tostring(err)) end
    end
  end
  return true
end

function F.timeout(step, inst)
  local grace = inst.grace or cfg.stop_grace or 10
  if step == "create" then return (cfg.rootfs_timeout or cfg.pull_timeout or 600) + 180 end
  if step == "destroy" or step == "release" then return grace + 60 end
  return 60
end

F.driver = {
  create = function(...) return F.create(...) end,
  destroy = function(...) return F.destroy(...) end,
  release = function(...) return F.release(...) end,
  adopt = function(...) return F.adopt(...) end,
  restart = function(...) return F.restart(...) end,
  on_exit = function(...) return F.on_exit(...) end,
  load = function(...) return F.load(...) end,
  timeout = function(...) return F.timeout(...) end,
  reconcile = function(...) return F.reconcile(...) end,
}

return F
