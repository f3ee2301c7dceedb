-- riklet.vmm.qemu — the QEMU backend of the Function driver (interface: /work/wt/VMM.md, in short
-- at riklet.function's top).
--
-- One QEMU per instance, started with -daemonize so it outlives riklet (riklet waits for the
-- parent, which exits once the VM is set up: an error in the arguments, the kernel path or the
-- disk comes back as its stderr). In the instance dir: disk.qcow2 (a qcow2 overlay whose backing
-- file is base.img, the instance's hard link to (or copy of) the cached rootfs, opened read-only), qmp.sock (QMP), qemu.pid, console.log
-- (the serial console). -no-reboot turns a guest reboot (a kernel panic with panic=1) into the end
-- of QEMU. QMP gives the guest's state (query-status) and why it stopped (the SHUTDOWN event's
-- reason: guest-shutdown = the guest powered off, guest-reset = it rebooted or panicked,
-- host-qmp-* / host-signal = riklet or someone on the host ended it).
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local json = require "riklet.json"
local usock = require "riklet.usock"
local status = require "riklet.status"
local rootfs = require "riklet.rootfs"
local vmmproc = require "riklet.vmmproc"
local procscan = require "riklet.procscan"

local B = { name = "qemu" }

local function log(level, fmt, ...) core.log(level, "qemu", fmt:format(...)) end

local node_cfg = {} -- the node's configuration (B.configure)

-- Runtime state per handle (by pid): the QMP connection and what it told us. Not persisted.
local live = {}

local function which(bin)
  if bin:find("/", 1, true) then
    local st = fs.stat(bin)
    return st and st.type == "file" and bin or nil
  end
  for dir in (os.getenv("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"):gmatch("[^:]+") do
    local st = fs.stat(dir .. "/" .. bin)
    if st and st.type == "file" then return dir .. "/" .. bin end
  end
  return nil
end

local function binary(cfg) return cfg.qemu or "qemu-system-x86_64" end

-- B.available(cfg) -> true | nil, why
function B.available(cfg)
  local bin = binary(cfg)
  local path = which(bin)
  if not path and bin:find("/", 1, true) then
    return nil, ("the QEMU binary %s (--qemu) does not exist or is not a file"):format(bin)
  elseif not path then
    return nil, ("the QEMU binary %s is not on PATH (%s): install qemu-system-x86 or set --qemu"):format(bin,
      os.getenv("PATH") or "")
  end
  if not which("qemu-img") then return nil, "qemu-img is not on PATH: install qemu-utils" end
  return true
end

-- B.kvm_probe(cfg[, accel[, timeout]]) -> true | nil, why
-- Whether a guest really runs under KVM here: /dev/kvm can open on a host whose KVM never runs a
-- guest (a nested or broken setup: the guests hang). The node's own kernel is booted with no root
-- and panic=-1 under -no-reboot, with the VMs' memory (in 64 MiB Debian's kernel cannot even
-- unpack: no banner, a reset): where the accelerator works, the kernel prints its banner, panics
-- for want of a root filesystem and QEMU exits, in about a second (10 s under TCG on a loaded
-- node); a hanging accelerator is killed when the timeout (default 10 s) runs out. accel: "kvm"
-- (tests pass "tcg").
function B.kvm_probe(c, accel, timeout)
  c = c or node_cfg
  timeout = timeout or 10
  local a = { binary(c), "-M", c.vm_machine == "microvm" and "microvm" or "pc", "-accel", accel or "kvm",
    "-m", tostring(c.vm_memory_mib or 128), "-smp", "1", "-no-reboot", "-nodefaults", "-display", "none", "-serial", "stdio",
    "-kernel", c.kernel_path, "-append", "console=ttyS0 panic=-1 root=/dev/riklet-probe-no-root" }
  local t = core.now()
  local r, err = proc.run(a, { timeout = timeout })
  if not r then return nil, ("cannot run %s: %s"):format(a[1], tostring(err)) end
  local out = r.stdout or ""
  if r.timed_out then
    return nil, ("a probe guest (%s) did not finish booting to its panic within %g s%s"):format(c.kernel_path, timeout,
      out:find("Linux version", 1, true) and " (its kernel started, then hung)" or " (its kernel printed nothing)")
  end
  if not out:find("Linux version", 1, true) then
    return nil, ("a probe guest (%s) printed no kernel banner: QEMU %s: %s"):format(c.kernel_path,
      proc.describe(r.code, r.signal), ((r.stderr or ""):gsub("%s+$", "")))
  end
  log("info", "%s works: a probe guest booted to its panic in %.1f s", accel or "kvm", core.now() - t)
  return true
end

-- The outcome of the KVM probe, once per riklet process (concurrent creates wait for the first).
local kvm_probed
B.kvm_device = "/dev/kvm" -- (a test points it at a file that opens)

-- B.accel(wanted[, cfg]) -> "kvm" | "tcg" | nil, err. auto: KVM when /dev/kvm opens read-write and
-- a probe guest boots under it (B.kvm_probe, once), else TCG; kvm: no probe (the operator's word).
function B.accel(wanted, c)
  wanted = wanted or "auto"
  if wanted == "tcg" then return "tcg" end
  local f = io.open(B.kvm_device, "r+")
  if f then f:close() end
  if wanted == "kvm" then
    if not f then return nil, "--vm-accel kvm: /dev/kvm cannot be opened read-write (no KVM here); use --vm-accel tcg" end
    return "kvm"
  end
  if wanted ~= "auto" then return nil, ("--vm-accel %s: use auto, kvm or tcg"):format(tostring(wanted)) end
  if not f then return "tcg" end
  if not kvm_probed then
    kvm_probed = task.event()
    local ok, why = B.kvm_probe(c or node_cfg)
    if not ok then
      log("warn", "--vm-accel auto: /dev/kvm opens but KVM does not run guests here (%s): Functions use TCG "
        .. "(software emulation, slower); fix KVM, or pass --vm-accel tcg to skip this probe (--vm-accel kvm forces KVM)", why)
    end
    kvm_probed:set(ok and "kvm" or "tcg")
  end
  return kvm_probed:wait()
end

-- The host's TSC rate in kHz, from /proc/cpuinfo's first "cpu MHz" (under TCG the guest's TSC
-- counts at the host's rate); 2000000 when it is not there.
local tsc_khz
local function host_tsc_khz()
  if tsc_khz then return tsc_khz end
  local f = io.open("/proc/cpuinfo", "r")
  local mhz = f and (f:read("*a") or ""):match("\ncpu MHz%s*:%s*([%d.]+)")
  if f then f:close() end
  tsc_khz = math.floor((tonumber(mhz) or 2000) * 1000 + 0.5)
  return tsc_khz
end

-- B.machine_args(machine, accel) -> extra kernel arguments for this machine and accelerator.
-- microvm under TCG: tsc_early_khz=<the host's TSC rate>. microvm has no HPET nor ACPI PM timer,
-- so a guest kernel whose TSC calibration against the PIT fails (often, on a loaded host: TCG's
-- PIT does not keep time with the TSC) marks the TSC unstable, then calibrates its delay loop on
-- timer ticks that do not come yet and hangs (about 1 boot in 5 here, every message at 0.000000
-- after "tsc: Marking TSC unstable due to could not calculate TSC khz"). Given the rate, it skips
-- both calibrations; its clock watchdog may still drop the TSC for jiffies later, harmlessly.
-- Checked: without it 19 of 19 boots hung on a loaded host, with it none of 34 (README "Functions").
-- KVM guests have kvmclock: nothing.
function B.machine_args(machine, accel)
  if machine ~= "microvm" or accel == "kvm" then return "" end
  return "tsc_early_khz=" .. host_tsc_khz()
end

-- The qcow2 overlay of a rootfs of SIZE bytes, as bytes: made once per size by qemu-img with the
-- relative backing file name base.img (QEMU resolves it from the overlay's own directory, so the
-- same bytes serve every instance), kept as overlay_SIZE.qcow2 beside the cached rootfs. A create
-- then runs no qemu-img (a second process start, 0.3-1 s on a loaded node): it copies these bytes.
local template_seq = 0
local function overlay_template(cache_path, size)
  local cache_dir = cache_path:match("^(.*)/[^/]*$") or "."
  local tmpl = ("%s/overlay_%d.qcow2"):format(cache_dir, size)
  local data = fs.read(tmpl, 16 * 1024 * 1024)
  if data and data:sub(1, 4) == "QFI\251" then return data end
  template_seq = template_seq + 1
  local tmp = ("%s/.overlay_%d.%d.%d.tmp"):format(cache_dir, size, core.getpid(), template_seq)
  local r, err = proc.run({ "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "base.img", tmp,
    tostring(size) }, { timeout = 60 })
  if not r or r.code ~= 0 then
    fs.unlink(tmp)
    return nil, ("qemu-img create of a qcow2 overlay template %s: %s"):format(tmp,
      r and (proc.describe(r.code, r.signal) .. ": " .. (r.stderr or ""):gsub("%s+$", "")) or tostring(err))
  end
  local ok, rerr = fs.rename(tmp, tmpl)
  if not ok then fs.unlink(tmp) return nil, rerr end
  data, err = fs.read(tmpl, 16 * 1024 * 1024)
  if not data then return nil, err end
  return data
end

-- B.prepare_disk(cache_path, dir[, steps]) -> disk_path | nil, err
-- The overlay's backing file is the instance's own name for the rootfs, DIR/base.img: a hard link
-- to the cache file (riklet.rootfs never writes a cache file in place, a new version replaces it by
-- rename), so a refresh of the cache never changes what a running VM reads, and the old version's
-- bytes are freed when the last instance using it is removed. Where a hard link is impossible (the
-- cache on another filesystem) it is a reflink or sparse copy. No child process in the usual case:
-- link(2), and the overlay is a copy of the size's template (above). steps.link / steps.overlay:
-- seconds each took.
function B.prepare_disk(cache_path, dir, steps)
  steps = steps or {}
  local disk, base = dir .. "/disk.qcow2", dir .. "/base.img"
  local t = core.now()
  fs.unlink(disk)
  fs.unlink(base)
  if not fs.link(cache_path, base) then
    local r, err = proc.run({ "cp", "--reflink=auto", "--sparse=always", "--", cache_path, base }, { timeout = 600 })
    if not r then return nil, err end
    if r.code ~= 0 then
      fs.unlink(base)
      return nil, ("cannot link or copy the rootfs %s to %s: %s"):format(cache_path, base,
        ((r.stderr or ""):gsub("%s+$", "")))
    end
  end
  -- the cache file may have been replaced since the driver checked it: check what this VM will read
  local eok, eerr = rootfs.check_ext4(base)
  if not eok then fs.unlink(base) return nil, eerr end
  local st = fs.stat(base)
  if not st then fs.unlink(base) return nil, ("the instance's rootfs %s vanished"):format(base) end
  steps.link = core.now() - t
  t = core.now()
  local data, terr = overlay_template(cache_path, st.size)
  if not data then fs.unlink(base) return nil, terr end
  local wok, werr = fs.write_atomic(disk, data, "0600", { sync = false })
  steps.overlay = core.now() - t
  if not wok then
    fs.unlink(base)
    return nil, ("the instance's disk %s: %s"):format(disk, tostring(werr))
  end
  return disk
end

-- ---- QMP ------------------------------------------------------------------------------------

local function qmp_send(conn, obj)
  local data = json.encode(obj) .. "\n"
  local off = 0
  while true do
    local ok, sent, err = conn.sock:send(data, off)
    if ok then return true end
    if sent == nil then return nil, err or "QMP socket closed" end
    off = sent
    if not conn.sock:wait_writable() then return nil, "QMP socket closed" end
  end
end

local function qmp_dispatch(conn, line)
  local msg = json.decode(line)
  if type(msg) ~= "table" then return end
  if msg.QMP then
    conn.greeting:set(msg)
  elseif msg.event then
    if msg.event == "SHUTDOWN" and type(msg.data) == "table" then conn.shutdown_reason = msg.data.reason end
    if msg.event == "GUEST_PANICKED" then conn.panicked = true end
    if conn.on_event then conn.on_event(msg) end
  elseif msg.id ~= nil and conn.pending[msg.id] then
    local w = conn.pending[msg.id]
    conn.pending[msg.id] = nil
    w:put(msg)
  end
end

-- The connection ended (why): every command waiting for a reply fails now.
local function qmp_ended(conn, why)
  if not conn.closed.is_set then conn.closed:set(why) end
  for _, w in pairs(conn.pending) do w:put({ error = { desc = "QMP connection closed (" .. why .. ")" } }) end
  conn.pending = {}
end

local LINE_MAX = 1024 * 1024

-- Read QMP messages (one JSON object a line) and dispatch them: replies to the waiting command
-- (by id), events to conn.on_event. Ends when the socket does. A line is assembled from its
-- chunks once (no rescanning), and one over LINE_MAX closes the connection.
local function qmp_reader(conn)
  local parts, size = {}, 0
  while true do
    local data, err = conn.sock:read()
    if not data then return qmp_ended(conn, err or "end of stream") end
    local pos = 1
    while true do
      local nl = data:find("\n", pos, true)
      if not nl then break end
      parts[#parts + 1] = data:sub(pos, nl - 1)
      local line = table.concat(parts)
      parts, size = {}, 0
      pos = nl + 1
      qmp_dispatch(conn, line)
    end
    if pos <= #data then
      parts[#parts + 1] = data:sub(pos)
      size = size + #data - pos + 1
      if size > LINE_MAX then
        conn.sock:close()
        return qmp_ended(conn, "QMP sent more than 1 MiB without a line end")
      end
    end
  end
end

-- qmp_send_cmd(conn, name[, args]) -> reply queue, id | nil, err: the command is on its way; its
-- reply comes to the queue (qmp_wait). QMP answers a connection's commands in order, so several
-- may be sent before the first reply (fewer round trips while QEMU is busy booting).
local function qmp_send_cmd(conn, name, args)
  if conn.closed.is_set then return nil, "QMP connection closed" end
  conn.seq = conn.seq + 1
  local id = conn.seq
  local q = task.queue()
  conn.pending[id] = q
  local ok, err = qmp_send(conn, { execute = name, arguments = args, id = id })
  if not ok then conn.pending[id] = nil return nil, err end
  return q, id
end

-- qmp_wait(conn, name, q, id[, timeout]) -> return value | nil, err
local function qmp_wait(conn, name, q, id, timeout)
  local r = q:get(timeout or 10)
  conn.pending[id] = nil
  if not r then return nil, ("QMP %s: no answer within %g s"):format(name, timeout or 10) end
  if r.error then return nil, ("QMP %s: %s"):format(name, tostring(r.error.desc or r.error.class)) end
  return r["return"]
end

-- qmp_cmd(conn, name[, args[, timeout]]) -> return value | nil, err
local function qmp_cmd(conn, name, args, timeout)
  local q, id = qmp_send_cmd(conn, name, args)
  if not q then return nil, id end
  return qmp_wait(conn, name, q, id, timeout)
end

-- Connect to QMP, negotiate capabilities. -> conn[, status] | nil, err
-- qmp_capabilities goes out at once, before the greeting is read (QEMU greets a connection before
-- it reads from it), and with with_status query-status right behind it: its answer is the
-- second result (QEMU's "status" object), so a start costs one round trip, not three.
local function qmp_connect(path, timeout, with_status)
  local deadline = core.now() + (timeout or 10)
  local sock, err
  repeat
    sock, err = usock.connect(path)
    if not sock then task.sleep(0.05) end
  until sock or core.now() > deadline
  if not sock then return nil, "QMP: " .. tostring(err) end
  local conn = { sock = sock, seq = 0, pending = {}, closed = task.event(), greeting = task.event() }
  task.spawn(qmp_reader, conn)
  local cq, cid = qmp_send_cmd(conn, "qmp_capabilities")
  local sq, sid
  if cq and with_status then sq, sid = qmp_send_cmd(conn, "query-status") end
  if not conn.greeting:wait(timeout or 10) then
    sock:close()
    return nil, ("QMP on %s: no greeting within %g s"):format(path, timeout or 10)
  end
  if not cq then sock:close() return nil, cid end
  local _, cerr = qmp_wait(conn, "qmp_capabilities", cq, cid)
  if cerr then sock:close() return nil, cerr end
  if not with_status then return conn end
  if not sq then sock:close() return nil, sid end
  local st, serr = qmp_wait(conn, "query-status", sq, sid)
  if not st then sock:close() return nil, serr end
  return conn, st
end

local function qmp_close(conn)
  if conn then conn.sock:close() end
end

-- ---- processes ------------------------------------------------------------------------------

-- The pid in QEMU's pidfile that is alive with starttime as recorded.
local function same_process(handle)
  if not handle.pid then return false end
  local t = status.start_ticks(handle.pid)
  return t ~= nil and (handle.starttime == nil or t == handle.starttime)
end

local function read_pidfile(path)
  local s = fs.read(path, 64)
  return s and tonumber(s:match("^%s*(%d+)%s*$"))
end

local function argv(cfg, vm)
  local dev = vm.machine == "microvm" and { blk = "virtio-blk-device", net = "virtio-net-device" }
    or { blk = "virtio-blk-pci", net = "virtio-net-pci" }
  local a = {
    binary(cfg), "-name", "riklet-" .. vm.id,
    "-M", vm.machine == "microvm" and "microvm,acpi=on" or "pc", "-accel", vm.accel or "tcg",
    "-m", tostring(vm.memory_mib), "-smp", tostring(vm.vcpus), "-no-reboot", "-nodefaults",
    "-display", "none", "-vga", "none",
    "-kernel", vm.kernel, "-append", vm.cmdline,
    -- append=on (O_APPEND): riklet starts the file over when it passes --log-size-max (function.lua)
    "-chardev", "file,id=console,append=on,path=" .. vm.console_log:gsub(",", ",,"), "-serial", "chardev:console",
    "-drive", "file=" .. vm.disk .. ",format=qcow2,if=none,id=rootfs,discard=unmap",
    "-device", dev.blk .. ",drive=rootfs",
    "-netdev", "tap,id=net0,ifname=" .. vm.tap .. ",script=no,downscript=no",
    "-device", dev.net .. ",netdev=net0,mac=" .. vm.mac,
    "-qmp", "unix:" .. vm.dir .. "/qmp.sock,server=on,wait=off",
    "-pidfile", vm.dir .. "/qemu.pid", "-daemonize",
  }
  if vm.machine == "microvm" then
    -- microvm has no VGA to disable
    for i = #a, 1, -1 do if a[i] == "-vga" then table.remove(a, i) table.remove(a, i) end end
  end
  if vm.initrd then
    a[#a + 1] = "-initrd"
    a[#a + 1] = vm.initrd
  end
  return a
end

function B.configure(c) node_cfg = c or {} end

-- B.start(vm) -> handle | nil, err. vm.steps (optional) gets the seconds QEMU took to start
-- (spawn: until -daemonize's parent returned) and, set a moment later, QMP to answer (qmp:
-- connect, greeting, capabilities and query-status, the two commands sent together).
function B.start(vm)
  local steps = vm.steps or {}
  local pidfile, sock = vm.dir .. "/qemu.pid", vm.dir .. "/qmp.sock"
  fs.unlink(pidfile)
  fs.unlink(sock)
  local a = argv(node_cfg, vm)
  log("debug", "instance %s: %s", vm.id, table.concat(a, " "))
  local t = core.now()
  -- own_group = false: the daemonized QEMU must not be in a group a timeout would kill
  local r, err = proc.run(a, { timeout = 60, own_group = false })
  steps.spawn = core.now() - t
  if not r then return nil, ("cannot run %s: %s"):format(a[1], tostring(err)) end
  local pid = read_pidfile(pidfile)
  if r.code ~= 0 or r.timed_out then
    local msg = (r.stderr or ""):gsub("%s+$", "")
    if pid then procscan.signal_if(pid, 9, proc.alive) end
    return nil, ("QEMU %s%s"):format(r.timed_out and "did not finish starting within 60 s" or proc.describe(r.code, r.signal),
      msg ~= "" and (": " .. msg) or "")
  end
  if not pid then return nil, ("QEMU started but wrote no pid to %s"):format(pidfile) end
  local handle = { backend = B.name, pid = pid, starttime = status.start_ticks(pid), sock = sock, pidfile = pidfile }
  -- Running: -daemonize's parent exits 0 once QEMU has built the machine and started it (no -S),
  -- the moment a bare `qemu -daemonize` returns. QMP is set up right behind, in a task: under TCG
  -- on a loaded node QEMU's main loop answers 0.05-1 s later (it shares the big lock with the
  -- booting guest's I/O), and RUNNING does not wait for that. A QEMU whose QMP does not confirm
  -- the guest running within 15 s is killed, and its watch reports why (the instance FAILS).
  local rt = { qmp_ready = task.event() }
  live[pid] = rt
  task.spawn(function()
    t = core.now()
    local conn, st = qmp_connect(sock, 15, true)
    steps.qmp = core.now() - t
    rt.conn = conn
    local why
    if not conn then why = st
    elseif type(st) ~= "table" or st.status ~= "running" then
      why = ("QEMU reports the guest %s, not running"):format(tostring(type(st) == "table" and st.status or st))
    end
    if live[pid] ~= rt and conn then qmp_close(conn) end -- (it ended meanwhile)
    local claim = why and procscan.claim(pid, function() return same_process(handle) end)
    if claim then
      rt.qmp_error = why
      log("error", "instance %s: QEMU pid %d started but %s: killing it", vm.id, pid, why)
      claim:signal(9)
      claim:close()
    end
    rt.qmp_ready:set(true)
  end)
  return handle
end

-- What ended QEMU, from the SHUTDOWN reason QMP gave (nil when the connection missed it).
local REASONS = {
  ["guest-shutdown"] = "the guest powered off",
  ["guest-reset"] = "the guest rebooted (a kernel panic with panic=N, or a reboot; QEMU runs with -no-reboot)",
  ["guest-panic"] = "the guest kernel panicked",
  ["host-qmp-quit"] = "QEMU was told to quit (QMP)",
  ["host-qmp-system-reset"] = "QEMU was told to reset (QMP)",
  ["host-signal"] = "QEMU was killed by a signal on the host",
  ["host-ui"] = "QEMU was closed from its UI",
}

-- B.watch(handle, on_event)
function B.watch(handle, on_event)
  local rt = live[handle.pid] or {}
  live[handle.pid] = rt
  if rt.watching then return end
  rt.watching = true
  task.spawn(function()
    local code, signal, werr = proc.watch(handle.pid)
    if werr then
      -- nothing is known: poll the process instead of taking this for an exit
      log("error", "cannot watch QEMU %d (%s): polling it every 2 s", handle.pid, werr)
      while same_process(handle) do task.sleep(2) end
      code, signal = nil, nil
    end
    -- the SHUTDOWN event comes before the process ends; give the reader a moment to have it
    if rt.conn and not rt.conn.closed.is_set then rt.conn.closed:wait(1) end
    local reason = rt.conn and rt.conn.shutdown_reason
    if rt.conn and rt.conn.panicked then reason = "guest-panic" end
    qmp_close(rt.conn)
    live[handle.pid] = nil
    local ev = { code = code, signal = signal, shutdown_reason = reason }
    if reason == "guest-shutdown" and (code == nil or code == 0) then
      ev.type = "shutdown"
      ev.reason = REASONS[reason]
    else
      ev.type = "exited"
      local what = code ~= nil and proc.describe(code, signal) or signal and proc.describe(nil, signal)
        or "ended (exit status unknown: not riklet's child)"
      ev.reason = ("QEMU %s%s%s"):format(what, reason and ("; " .. (REASONS[reason] or reason)) or "",
        rt.qmp_error and ("; riklet killed it: " .. rt.qmp_error) or "")
    end
    on_event(ev)
  end)
end

-- B.adopt(handle) -> true | nil, err, gone
function B.adopt(handle)
  if type(handle) ~= "table" or not handle.pid then return nil, "no QEMU pid recorded", true end
  if not same_process(handle) then
    return nil, ("QEMU (pid %d) is no longer running"):format(handle.pid), true
  end
  local rt = live[handle.pid]
  if rt and rt.conn and not rt.conn.closed.is_set then return true end
  local conn, err = qmp_connect(handle.sock, 10)
  if not conn then return nil, ("QEMU pid %d runs but its QMP socket does not answer: %s"):format(handle.pid, err) end
  live[handle.pid] = live[handle.pid] or {}
  live[handle.pid].conn = conn
  local st, serr = qmp_cmd(conn, "query-status")
  if not st then return nil, serr end
  return true, st.status
end

-- B.stop(handle, grace) -> true | nil, err
-- The SIGKILL at the end goes through a pidfd opened before the start-time check here
-- (procscan.claim): a QEMU that ends during the grace period is not replaced by a recycled pid.
local function stop(claim, handle, grace)
  local rt = live[handle.pid] or {}
  -- (QMP accepts one client at a time: let the start's connection finish first)
  if rt.qmp_ready then rt.qmp_ready:wait(20) end
  local conn = rt.conn
  if not conn or conn.closed.is_set then conn = qmp_connect(handle.sock, 5) rt.conn = conn end
  local gone = task.event()
  task.spawn(function()
    while same_process(handle) do task.sleep(0.1) end
    gone:set(true)
  end)
  if conn then
    local _, err = qmp_cmd(conn, "system_powerdown", nil, 5)
    if err then log("warn", "QEMU %d: system_powerdown: %s", handle.pid, err) end
    if gone:wait(grace) then return true end
    log("warn", "QEMU %d: the guest did not power off within %g s of the ACPI power button: quitting QEMU", handle.pid, grace)
    qmp_cmd(conn, "quit", nil, 5)
    if gone:wait(5) then return true end
  end
  log("warn", "QEMU %d: killing it (SIGKILL)", handle.pid)
  local ok, err = claim:signal(9)
  if ok == nil then return nil, ("QEMU (pid %d): %s"):format(handle.pid, tostring(err)) end
  if gone:wait(10) then return true end
  return nil, ("QEMU (pid %d) is still running 10 s after SIGKILL"):format(handle.pid)
end

function B.stop(handle, grace)
  if not handle or not handle.pid then return true end
  local ok, err = procscan.with_claim(handle.pid, function() return same_process(handle) end, stop, handle, grace)
  if ok == false then return true end -- (gone, or its pid is another process's now)
  return ok, err
end

-- B.processes(instances_dir) -> array of handles {pid, starttime, sock, id} of the QEMUs riklet
-- started for instances under instances_dir (their -pidfile is INSTANCES_DIR/ID/qemu.pid): what a
-- crash before the handle was stored, or an instance without a record, left running.
function B.processes(instances_dir)
  local out, prefix = {}, instances_dir .. "/"
  for _, p in ipairs(vmmproc.find(instances_dir, "-pidfile", "qemu%.pid")) do
    out[#out + 1] = { backend = B.name, pid = p.pid, starttime = status.start_ticks(p.pid), id = p.id,
      sock = prefix .. p.id .. "/qmp.sock", pidfile = prefix .. p.id .. "/qemu.pid" }
  end
  return out
end

-- B.cleanup(handle, dir)
function B.cleanup(handle, dir)
  if handle and handle.pid and live[handle.pid] then
    qmp_close(live[handle.pid].conn)
  end
  for _, f in ipairs({ "qmp.sock", "qemu.pid", "disk.qcow2", "base.img" }) do fs.unlink(dir .. "/" .. f) end
  return true
end

-- for tests/lua/qmp.test.lua (a hostile QMP peer)
B._qmp = { connect = qmp_connect, cmd = qmp_cmd, close = qmp_close }

return B
