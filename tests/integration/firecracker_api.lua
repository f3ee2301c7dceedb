-- firecracker_api.lua — run by test_firecracker_api.sh (`riklet test`), with the fake firecracker
-- (tests/firecracker/fake_firecracker.py) first on PATH: drives lua/riklet/vmm/firecracker.lua
-- through the VMM.md interface and checks the conversation the fake logged, every request of which
-- it validated against Firecracker's Swagger description.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local json = require "riklet.json"
local proc = require "riklet.proc"
local task = require "riklet.task"
local core = require "riklet.core"
local fc = require "riklet.vmm.firecracker"

local tmp = assert(os.getenv("FC_TMP"), "FC_TMP is not set (run test_firecracker_api.sh)")
local n = 0

local function sh(cmd)
  local r = proc.run({ "sh", "-c", cmd }, { timeout = 60 })
  assert(r and r.code == 0, cmd .. ": " .. (r and r.stderr or "did not run"))
  return r.stdout
end

sh(("head -c 1048576 /dev/zero > %s/cache.img && printf kernel > %s/vmlinuz && printf initrd > %s/initrd.img")
  :format(tmp, tmp, tmp))

-- A fresh instance dir, with knobs for the fake; -> vm
local function new_vm(knobs, extra)
  n = n + 1
  local dir = ("%s/i%d"):format(tmp, n)
  assert(fs.mkdir_p(dir, "0700"))
  if knobs then assert(fs.write_atomic(dir .. "/fake-firecracker.json", json.encode(knobs))) end
  local vm = {
    id = "fn-" .. n, dir = dir, kernel = tmp .. "/vmlinuz", initrd = tmp .. "/initrd.img",
    cmdline = "console=ttyS0 reboot=k panic=1 ip=10.90.0.2::10.90.0.1:255.255.255.252::eth0:off",
    tap = "rkt" .. n, mac = "02:fc:00:00:00:0" .. n, vcpus = 1, memory_mib = 128,
    console_log = dir .. "/console.log",
  }
  for k, v in pairs(extra or {}) do vm[k] = v end
  return vm
end

local function calls(vm)
  local out = {}
  for line in (fs.read(vm.dir .. "/fake-firecracker.log") or ""):gmatch("[^\n]+") do
    out[#out + 1] = json.decode(line)
  end
  return out
end

local function seq(vm)
  local s = {}
  for _, c in ipairs(calls(vm)) do
    local what = c.method .. " " .. c.path
    if c.path == "/actions" and type(c.body) == "table" then what = what .. " " .. tostring(c.body.action_type) end
    s[#s + 1] = what .. " " .. c.status
  end
  return table.concat(s, "\n")
end

local function all_valid(vm)
  for _, c in ipairs(calls(vm)) do
    if not c.valid then return false, c.method .. " " .. c.path .. ": " .. tostring(c.problem) end
  end
  return true
end

T.ok(fc.available({ skip_kvm_check = true }), "available: the firecracker on PATH is found")
local av, why = fc.available({ firecracker = "no-such-firecracker" })
T.ok(not av and why:find("%-%-vmm"), "available: a missing binary is named with the flag (" .. tostring(why) .. ")")

-- 1. prepare_disk: the instance's own copy, never the cache
local vm = new_vm()
local disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
T.is(disk, vm.dir .. "/rootfs.ext4", "prepare_disk: a copy in the instance dir")
T.ok(fs.stat(disk).ino ~= fs.stat(tmp .. "/cache.img").ino, "prepare_disk: another file than the cache")
T.is(sh(("cmp %s %s/cache.img && echo same"):format(disk, tmp)), "same\n", "prepare_disk: same bytes")
vm.disk = disk

-- 2. start: the exact sequence, every request valid against the Swagger contract
local h, err = fc.start(vm)
T.ok(h, "start: the guest is started: " .. tostring(err))
T.is(seq(vm), table.concat({
  "PUT /machine-config 204", "PUT /boot-source 204", "PUT /drives/rootfs 204", "PUT /network-interfaces/eth0 204",
  "PUT /actions InstanceStart 204" }, "\n"), "start: the exact sequence of API calls")
local valid, problem = all_valid(vm)
T.ok(valid, "start: every request matches firecracker's Swagger description " .. (problem or ""))
local c = calls(vm)
T.ok(c[1].body.vcpu_count == 1 and c[1].body.mem_size_mib == 128, "machine-config: vcpus and memory")
T.ok(c[2].body.kernel_image_path == vm.kernel and c[2].body.initrd_path == vm.initrd
  and c[2].body.boot_args == vm.cmdline, "boot-source: kernel, initrd, boot args")
T.ok(c[3].body.path_on_host == disk and c[3].body.is_root_device == true and c[3].body.is_read_only == false,
  "drives/rootfs: the instance's copy, root, writable")
T.ok(c[4].body.host_dev_name == vm.tap and c[4].body.guest_mac == vm.mac, "network-interfaces/eth0: the TAP and MAC")
T.ok(h and h.backend == "firecracker" and h.pid > 0 and h.starttime and h.sock == vm.dir .. "/api.sock",
  "handle: plain data with pid, starttime, socket")
T.ok(json.encode(h), "handle: encodes as JSON (stored in the record)")
T.like(fs.read(vm.console_log) or "", "fake guest: booting kernel", "console: the guest's output is in the console log")
local events = {}
fc.watch(h, function(e) events[#events + 1] = e end)
task.sleep(0.3)
T.is(#events, 0, "watch: no event while the VMM runs")

-- 3. adopt: the same process answers on its socket; a changed starttime or a dead pid is gone
T.ok(fc.adopt(h), "adopt: a running firecracker is reconnected")
local _, aerr, gone = fc.adopt({ backend = "firecracker", pid = h.pid, starttime = h.starttime + 1, sock = h.sock })
T.ok(gone == true, "adopt: another start time is positive evidence it is gone (" .. tostring(aerr) .. ")")

-- 4. stop: SendCtrlAltDel, the VMM exits, cleanup removes what the backend made
local t0 = core.now()
T.ok(fc.stop(h, 10), "stop: returns true")
T.ok(core.now() - t0 < 5, "stop: the guest powered off on Ctrl-Alt-Del, no kill needed")
T.like(seq(vm), "PUT /actions SendCtrlAltDel 204$", "stop: SendCtrlAltDel was sent")
T.ok(not proc.alive(h.pid), "stop: the firecracker process is gone")
T.ok(T.wait_for(5, function() return events[1] end) and events[1].type == "exited", "watch: exited after a stop")
fc.cleanup(h, vm.dir)
T.ok(not fs.exists(h.sock) and not fs.exists(disk), "cleanup: socket and disk copy removed")
fc.cleanup(h, vm.dir)
T.ok(true, "cleanup: idempotent")
_, aerr, gone = fc.adopt(h)
T.ok(gone == true, "adopt after it ended: gone (" .. tostring(aerr) .. ")")

-- 5. a 400 with fault_message fails the start with that message, and nothing is left running
vm = new_vm({ FAKE_FC_FAIL = "PUT /boot-source", FAKE_FC_FAULT = "Invalid kernel path: No such file (os error 2)" })
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h, err = fc.start(vm)
T.ok(not h, "fault: the start fails")
T.like(err or "", "Invalid kernel path: No such file %(os error 2%)", "fault: the error carries firecracker's fault_message")
T.like(err or "", "PUT /boot%-source", "fault: the error names the call")
T.is(seq(vm), "PUT /machine-config 204\nPUT /boot-source 400", "fault: nothing sent after the refused call")
T.ok(T.wait_for(5, function() return proc.run({ "pgrep", "-f", "fake_firecracker.py --api-sock " .. vm.dir .. "/" }).code == 1 end),
  "fault: the firecracker process was killed")
T.ok(not fs.exists(vm.dir .. "/api.sock"), "fault: its socket removed")

-- 6. without an initrd the boot source has no initrd_path (still valid)
vm = new_vm(nil, { initrd = false })
vm.initrd = nil
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
c = calls(vm)
T.ok(c[2].body.initrd_path == nil, "no initrd: boot-source without initrd_path")
T.ok(all_valid(vm), "no initrd: still valid against the contract")

-- 7. a guest that ignores Ctrl-Alt-Del is killed after the grace period
fc.stop(h, 0.1)
vm = new_vm({ FAKE_FC_IGNORE_CAD = "1" })
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
t0 = core.now()
T.ok(fc.stop(h, 1), "ignored Ctrl-Alt-Del: stop still returns true")
local took = core.now() - t0
T.ok(took >= 0.9 and took < 8, ("ignored Ctrl-Alt-Del: killed after the grace period (%.1f s)"):format(took))
T.ok(not proc.alive(h.pid), "ignored Ctrl-Alt-Del: the process is gone")

-- 8. the guest powering off → shutdown; the VMM crashing → exited with the reason
vm = new_vm({ FAKE_FC_POWEROFF_AFTER = "0.5" })
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
local ev2 = {}
fc.watch(h, function(e) ev2[#ev2 + 1] = e end)
T.ok(T.wait_for(10, function() return ev2[1] end) and ev2[1].type == "shutdown", "guest powered off: shutdown")
vm = new_vm({ FAKE_FC_CRASH_AFTER = "0.5" })
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
local ev3 = {}
fc.watch(h, function(e) ev3[#ev3 + 1] = e end)
T.ok(T.wait_for(10, function() return ev3[1] end) and ev3[1].type == "exited" and ev3[1].code == 3,
  "VMM crashed: exited with its code")
T.like(ev3[1] and ev3[1].reason or "", "Kernel panic", "VMM crashed: the reason quotes the console's last lines")

vm = new_vm({ FAKE_FC_PANIC_AFTER = "0.5" })
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
local ev4 = {}
fc.watch(h, function(e) ev4[#ev4 + 1] = e end)
T.ok(T.wait_for(10, function() return ev4[1] end) and ev4[1].type == "exited",
  "guest panicked (firecracker exits 0 after the reboot): exited, not a power-off")
T.like(ev4[1] and ev4[1].reason or "", "guest panic: Kernel panic %- not syncing: VFS", "guest panic: the reason leads with the panic line")

-- 9. leftovers: processes() finds a firecracker serving a socket under the instances dir
vm = new_vm()
vm.disk = assert(fc.prepare_disk(tmp .. "/cache.img", vm.dir))
h = assert(fc.start(vm))
local found
for _, x in ipairs(fc.processes(tmp)) do if x.pid == h.pid then found = x end end
T.ok(found and found.id == "i" .. n and found.starttime == h.starttime and found.sock == h.sock,
  "processes: the running firecracker is found with its instance id, start time and socket")
T.ok(fc.stop(found, 5) and not proc.alive(h.pid), "processes: a found one can be stopped")

-- 10. a missing binary fails the start with its name
vm = new_vm(nil, { firecracker = tmp .. "/nowhere/firecracker" })
vm.disk = tmp .. "/cache.img"
h, err = fc.start(vm)
T.ok(not h and err:find("nowhere/firecracker", 1, true), "missing binary: start fails naming it (" .. tostring(err) .. ")")

-- 11. the contract check itself refuses what Firecracker would (the test can fail)
vm = new_vm()
local p = proc.spawn({ "firecracker", "--api-sock", vm.dir .. "/api.sock" }, { stdout = vm.dir .. "/console.log" })
T.ok(T.wait_for(10, function() return fs.exists(vm.dir .. "/api.sock") end), "fake firecracker listens")
local sock = vm.dir .. "/api.sock"
local ok, cerr = fc.api(sock, "PUT", "/machine-config", { vcpu_count = 0, mem_size_mib = 128 })
T.ok(not ok and cerr:find("vcpu_count"), "contract: vcpu_count 0 refused (" .. tostring(cerr) .. ")")
ok, cerr = fc.api(sock, "PUT", "/drives/rootfs", { drive_id = "rootfs", is_root_device = true, path_on_host = "/x", bogus = 1 })
T.ok(not ok and cerr:find("bogus"), "contract: an unknown field refused (" .. tostring(cerr) .. ")")
ok, cerr = fc.api(sock, "PUT", "/drives/other", { drive_id = "rootfs", is_root_device = true, path_on_host = "/x" })
T.ok(not ok and cerr:find("differs"), "contract: a drive id differing from the path refused")
ok, cerr = fc.api(sock, "PUT", "/no-such-thing", { a = 1 })
T.ok(not ok and cerr:find("no such path"), "contract: an unknown path refused")
ok, cerr = fc.api(sock, "PUT", "/actions", { action_type = "SendCtrlAltDel" })
T.ok(not ok and cerr:find("not running"), "contract: SendCtrlAltDel before InstanceStart refused")
ok, cerr = fc.api(sock, "PUT", "/actions", { action_type = "InstanceStart" })
T.ok(not ok and cerr:find("kernel"), "contract: InstanceStart without a boot source refused")
p:kill(9)
p:wait()
task.sleep(0)
