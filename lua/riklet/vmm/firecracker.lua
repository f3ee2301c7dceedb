-- riklet.vmm.firecracker — the Firecracker VM backend (interface: /work/wt/VMM.md, README
-- "Firecracker backend and rootfs cache"). One firecracker process per instance with its API
-- socket in the instance dir, driven over that socket with riklet.http (HTTP/1.1 on libcurl):
--   PUT /machine-config, /boot-source, /drives/rootfs, /network-interfaces/eth0,
--   PUT /actions InstanceStart; stop: PUT /actions SendCtrlAltDel, grace, SIGKILL.
-- The guest's serial console (firecracker's stdout) and firecracker's own log (stderr) go to the
-- instance's console log. Firecracker exits when its guest powers off or reboots: code 0 is
-- reported as {type="shutdown"}, anything else as {type="exited"} with the console's last lines.
local core = require "riklet.core"
local fs = require "riklet.fs"
local http = require "riklet.http"
local json = require "riklet.json"
local proc = require "riklet.proc"
local task = require "riklet.task"
local vmmproc = require "riklet.vmmproc"
local procscan = require "riklet.procscan"

local B = { name = "firecracker" }
-- appended to the driver's kernel command line (upstream Firecracker's recommended arguments; its
-- devices are virtio-mmio, described on the command line, so no PCI probing)
B.boot_args = "pci=off " -- the driver appends its ip= right after

local API_TIMEOUT = 10 -- seconds for one API call (the VMM answers at once or is stuck)
local SOCK_WAIT = 10   -- seconds for the API socket to appear after the spawn

local function log(level, fmt, ...) core.log(level, "firecracker", fmt:format(...)) end

local node = {} -- the agent config given to B.configure (cfg.firecracker: the binary)
function B.configure(c) node = c or {} end

local function binary(cfg)
  return (cfg and cfg.firecracker) or node.firecracker or "firecracker"
end

local function which(cmd)
  if cmd:find("/", 1, true) then return fs.exists(cmd) and cmd or nil end
  for dir in (os.getenv("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"):gmatch("[^:]+") do
    local p = dir .. "/" .. cmd
    local st = fs.stat(p)
    if st and (st.type == "file" or st.type == "link") then return p end
  end
end

-- B.available(cfg) -> true | nil, why
function B.available(cfg)
  local bin = binary(cfg)
  if not which(bin) then
    return nil, ("--vmm firecracker: no %s on PATH (install Firecracker, or use --vmm qemu)"):format(bin)
  end
  if not (cfg and cfg.skip_kvm_check) and not fs.exists("/dev/kvm") then
    return nil, "--vmm firecracker: /dev/kvm is missing (Firecracker needs KVM; use --vmm qemu with --vm-accel tcg)"
  end
  return true
end

-- The process start time (clock ticks since boot, /proc/PID/stat field 22): tells a reused pid.
-- nil for no such process, or a zombie (it ended; only its exit status is left to collect).
local function starttime(pid)
  local s = fs.read("/proc/" .. math.floor(pid) .. "/stat", 4096)
  local rest = s and s:match("^%d+ %(.*%) (.*)$") -- the command name may hold spaces and parentheses
  if not rest then return nil end
  local i = 3 -- rest starts at field 3 (state)
  for f in rest:gmatch("%S+") do
    if i == 3 and (f == "Z" or f == "X") then return nil end
    if i == 22 then return tonumber(f) end
    i = i + 1
  end
end

local function tail_lines(path, n)
  local data = path and fs.tail(path, 4096) or ""
  local lines = {}
  for l in data:gmatch("[^\r\n]+") do lines[#lines + 1] = l end
  local first = math.max(1, #lines - n + 1)
  return table.concat(lines, " | ", first)
end

-- One API call. -> decoded body (or true) | nil, err, kind ("refused": an HTTP error answer;
-- else riklet.http's failure kind, "transport" when nothing answered)
local function api(sock, method, path, body)
  local res, err, kind = http.request({
    url = "http://localhost" .. path, method = method, unix_socket = sock,
    json = body and json.encode(body) or nil, timeout = API_TIMEOUT, max_bytes = 65536,
  })
  if not res then return nil, ("firecracker API %s %s: %s"):format(method, path, err), kind end
  if res.status >= 200 and res.status < 300 then
    if res.body ~= "" then return json.decode(res.body) or true end
    return true
  end
  local fault = json.decode(res.body)
  local msg = type(fault) == "table" and type(fault.fault_message) == "string" and fault.fault_message
    or res.body:gsub("%c", " "):sub(1, 300)
  return nil, ("firecracker refused %s %s (HTTP %d): %s"):format(method, path, res.status, msg), "refused"
end
B.api = api

-- Exit of each VMM we know: [pid] = event set with {code=, signal=}
local exits, children = {}, {}

local function exit_event(pid)
  if exits[pid] then return exits[pid] end
  local ev = task.event()
  exits[pid] = ev
  task.spawn(function()
    local code, sig, err
    if children[pid] then
      code, sig = children[pid]:wait()
    else
      code, sig, err = proc.watch(pid)
      if err then -- cannot watch it: poll (never read a failed watch as an exit)
        log("warn", "cannot watch firecracker pid %d (%s): polling it", pid, err)
        while proc.alive(pid) do task.sleep(1) end
      end
    end
    children[pid] = nil
    ev:set({ code = code, signal = sig })
  end)
  return ev
end

-- B.prepare_disk(cache_path, dir) -> disk_path | nil, err
function B.prepare_disk(cache_path, dir)
  local disk = dir .. "/rootfs.ext4"
  fs.unlink(disk)
  local r, err = proc.run({ "cp", "--reflink=auto", "--sparse=always", "--", cache_path, disk }, { timeout = 600 })
  if not r then return nil, err end
  if r.code ~= 0 then
    fs.unlink(disk)
    return nil, ("cannot copy the rootfs %s to %s: %s"):format(cache_path, disk, (r.stderr:gsub("%s+$", "")))
  end
  return disk
end

-- Kill a VMM we started and wait for it to be gone (rollback of a failed start). Through its
-- process handle, which signals nothing once riklet reaped it (its pid may be another's then).
local function kill_now(pid, ev)
  if children[pid] then children[pid]:kill(9) end
  ev:wait(10)
end

-- B.start(vm) -> handle | nil, err
function B.start(vm)
  local sock = vm.dir .. "/api.sock"
  if #sock > 107 then
    return nil, ("the API socket path %s is longer than a unix socket allows (107 bytes): use a shorter "
      .. "--state-dir"):format(sock)
  end
  fs.unlink(sock) -- firecracker refuses to start over an existing socket (a leftover of a crash)
  local bin = binary(vm)
  local p, err = proc.spawn({ bin, "--api-sock", sock }, {
    stdout = vm.console_log, stderr_to_stdout = true, new_session = true, cwd = vm.dir,
  })
  if not p then return nil, ("cannot start %s: %s"):format(bin, err) end
  local pid = p.pid
  children[pid] = p
  local ev = exit_event(pid)
  local handle = { backend = B.name, pid = pid, starttime = starttime(pid), sock = sock, console_log = vm.console_log }
  local function died()
    local r = ev.value
    return ("%s %s before the guest started; last console lines: %s"):format(bin,
      proc.describe(r.code, r.signal), tail_lines(vm.console_log, 5))
  end
  -- the API socket appears once firecracker listens
  local deadline = core.now() + SOCK_WAIT
  while not fs.exists(sock) do
    if ev.is_set then return nil, died() end
    if core.now() > deadline then
      kill_now(pid, ev)
      return nil, ("%s did not open its API socket %s within %d s; last console lines: %s"):format(bin, sock,
        SOCK_WAIT, tail_lines(vm.console_log, 5))
    end
    task.sleep(0.02)
  end
  local drive = { drive_id = "rootfs", path_on_host = vm.disk, is_root_device = true, is_read_only = false }
  local boot = { kernel_image_path = vm.kernel, boot_args = vm.cmdline, initrd_path = vm.initrd }
  local steps = {
    { "PUT", "/machine-config", { vcpu_count = vm.vcpus or 1, mem_size_mib = vm.memory_mib or 128 } },
    { "PUT", "/boot-source", boot },
    { "PUT", "/drives/rootfs", drive },
  }
  if vm.tap then
    steps[#steps + 1] = { "PUT", "/network-interfaces/eth0", { iface_id = "eth0", host_dev_name = vm.tap, guest_mac = vm.mac } }
  end
  steps[#steps + 1] = { "PUT", "/actions", { action_type = "InstanceStart" } }
  for i, s in ipairs(steps) do
    local ok, aerr, kind = api(sock, s[1], s[2], s[3])
    -- the socket file exists from bind(), a moment before listen(): retry a refused connect
    while not ok and i == 1 and kind == "transport" and not ev.is_set and core.now() < deadline do
      task.sleep(0.05)
      ok, aerr, kind = api(sock, s[1], s[2], s[3])
    end
    if not ok then
      if ev.is_set then return nil, died() end
      kill_now(pid, ev)
      fs.unlink(sock)
      return nil, aerr
    end
  end
  log("info", "instance %s: firecracker pid %d started its guest", tostring(vm.id), pid)
  return handle
end

-- B.watch(handle, on_event) — on_event fires once, when the VMM ended (start returning was the
-- "running": the function driver takes any event for the end, so no {type="running"} is sent).
-- Firecracker ends with code 0 whenever its guest stops: powered off, rebooted, or (panic=1
-- reboot=k) panicked, so the console's last lines tell a panic from a power-off. After a riklet
-- restart the exit code of an adopted VMM cannot be known; the console's "reboot: Power down"
-- is then the evidence of a clean power-off.
function B.watch(handle, on_event)
  local ev = exit_event(handle.pid)
  task.spawn(function()
    local r = ev:wait()
    local tail = tail_lines(handle.console_log, 5)
    local panic = tail:match("Kernel panic[^|]*")
    local off = tail:find("reboot: Power down", 1, true) or tail:find("reboot: Restarting system", 1, true)
    if not handle.stopping and not panic and (r.code == 0 or (r.code == nil and r.signal == nil and off)) then
      on_event({ type = "shutdown", code = r.code, reason = "the guest powered off" })
      return
    end
    local what = (r.code or r.signal) and proc.describe(r.code, r.signal)
      or "ended (exit status unknown: riklet restarted since it started)"
    on_event({ type = "exited", code = r.code, signal = r.signal,
      reason = ("%sfirecracker %s; last console lines: %s"):format(panic and ("guest panic: " .. panic .. "; ") or "",
        what, tail) })
  end)
end

local function same_process(handle)
  local st = starttime(handle.pid)
  return st ~= nil and (handle.starttime == nil or st == handle.starttime)
end

-- B.adopt(handle) -> true | nil, err, gone
function B.adopt(handle)
  if type(handle) ~= "table" or type(handle.pid) ~= "number" or handle.pid <= 1 then
    return nil, "the record holds no firecracker pid", false
  end
  if not same_process(handle) then
    return nil, ("firecracker pid %d is gone (no such process, or the pid now belongs to another one)")
      :format(handle.pid), true
  end
  local info, err = api(handle.sock, "GET", "/")
  if not info then return nil, ("firecracker pid %d runs but its API does not answer: %s"):format(handle.pid, err), false end
  exit_event(handle.pid)
  return true
end

-- B.stop(handle, grace) -> true | nil, err
-- The SIGKILL goes through a pidfd opened before the start-time check here (procscan.claim): a
-- firecracker that ends during the grace period is not replaced by a recycled pid.
local function stop(claim, handle, grace)
  local ev = exit_event(handle.pid)
  local ok, err = api(handle.sock, "PUT", "/actions", { action_type = "SendCtrlAltDel" })
  if not ok then log("info", "firecracker pid %d: %s; killing it", handle.pid, err) end
  if not (ok and ev:wait(grace or 10)) then
    local sent, serr = claim:signal(9)
    if sent == nil then return nil, ("firecracker pid %d: %s"):format(handle.pid, tostring(serr)) end
    if not ev:wait(10) and same_process(handle) then
      return nil, ("firecracker pid %d did not die from SIGKILL within 10 s"):format(handle.pid)
    end
  end
  return true
end

function B.stop(handle, grace)
  handle.stopping = true
  local ok, err = procscan.with_claim(handle.pid, function() return same_process(handle) end, stop, handle, grace)
  if ok == false then return true end -- (gone, or its pid is another process's now)
  return ok, err
end

-- B.processes(instances_dir) -> array of handles {backend, pid, starttime, sock, id}: the
-- firecrackers serving an API socket INSTANCES_DIR/ID/api.sock (riklet's, by that path), for the
-- driver to stop those no record names (a crash before the handle was stored).
function B.processes(instances_dir)
  local out = {}
  for _, p in ipairs(vmmproc.find(instances_dir, "--api-sock", "api%.sock")) do
    out[#out + 1] = { backend = B.name, pid = p.pid, starttime = starttime(p.pid), id = p.id, sock = p.path,
      console_log = instances_dir .. "/" .. p.id .. "/console.log" }
  end
  return out
end

-- B.cleanup(handle, dir)
function B.cleanup(handle, dir)
  if handle and handle.sock then fs.unlink(handle.sock) end
  if dir then fs.unlink(dir .. "/rootfs.ext4") end
  if handle and handle.pid and exits[handle.pid] and exits[handle.pid].is_set then exits[handle.pid] = nil end
end

return B
