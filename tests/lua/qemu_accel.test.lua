-- riklet.vmm.qemu's accelerator choice and machine arguments: --vm-accel auto never picks a KVM
-- that opens but does not run guests (a probe boot that hangs is killed at its timeout and auto
-- answers tcg, once: later creates do not probe again), a probe QEMU that prints no kernel banner
-- is no proof either, and the probe passes with a real QEMU booting the node's real kernel (under
-- TCG here: the same probe, another accelerator). microvm under TCG gets tsc_early_khz (its guests
-- hang in TSC calibration without it, README "Functions"), pc and KVM guests nothing. A QEMU that
-- daemonizes but whose QMP never answers is killed, the reason saying so.
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local qemu = require "riklet.vmm.qemu"

local tmp = ("/tmp/riklet-qemu-accel-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))
local kernel = tmp .. "/vmlinuz"
assert(fs.write_atomic(kernel, "not a kernel", "0644"))

-- fake QEMUs: one that hangs as a guest on a broken KVM does (its pid in hang.pid, each start
-- counted in hang.count), one that exits at once and prints nothing
local hang, quiet = tmp .. "/qemu-hang", tmp .. "/qemu-quiet"
assert(fs.write_atomic(hang, ("#!/bin/sh\necho x >> %s/hang.count\necho $$ > %s/hang.pid\nexec sleep 600\n"):format(tmp, tmp), "0755"))
assert(fs.write_atomic(quiet, "#!/bin/sh\nexit 0\n", "0755"))

local t = core.now()
local ok, why = qemu.kvm_probe({ qemu = hang, kernel_path = kernel }, "kvm", 2)
local took = core.now() - t
T.ok(not ok and tostring(why):find("did not finish booting to its panic within 2 s", 1, true),
  "a probe guest that hangs: KVM not working (" .. tostring(why) .. ")")
T.ok(took < 8, ("  told within its timeout (%.1f s)"):format(took))
local hpid = tonumber(fs.read(tmp .. "/hang.pid") or "")
T.ok(hpid and T.wait_for(5, function() return not proc.alive(hpid) end), "  and the hung probe QEMU was killed")

ok, why = qemu.kvm_probe({ qemu = quiet, kernel_path = kernel }, "kvm", 5)
T.ok(not ok and tostring(why):find("printed no kernel banner", 1, true),
  "a probe QEMU that exits without a kernel banner proves nothing (" .. tostring(why) .. ")")

-- auto with a /dev/kvm that opens (a plain file here) and a KVM that hangs: TCG, probed once
T.is(qemu.accel("tcg"), "tcg", "--vm-accel tcg: tcg, no probe")
local a, aerr = qemu.accel("bogus")
T.ok(a == nil and tostring(aerr):find("auto, kvm or tcg", 1, true), "--vm-accel bogus: refused (" .. tostring(aerr) .. ")")
qemu.kvm_device = tmp .. "/kvm"
assert(fs.write_atomic(qemu.kvm_device, "", "0600"))
qemu.configure({ qemu = hang, kernel_path = kernel })
fs.unlink(tmp .. "/hang.count")
-- (B.kvm_probe's default timeout is 10 s)
T.is(qemu.accel("auto"), "tcg", "--vm-accel auto with /dev/kvm opening but its guests hanging: tcg")
T.is(qemu.accel("auto"), "tcg", "  and again")
T.is(#((fs.read(tmp .. "/hang.count") or ""):gsub("%s", "")), 1, "  one probe for both (once per riklet process)")
T.is(qemu.accel("kvm"), "kvm", "--vm-accel kvm: the operator's word, no probe")
qemu.kvm_device = tmp .. "/no-such-kvm"
T.is(select(1, qemu.accel("kvm")), nil, "--vm-accel kvm without /dev/kvm: an error")

-- machine arguments
T.like(qemu.machine_args("microvm", "tcg"), "^tsc_early_khz=%d+$", "microvm under TCG: tsc_early_khz (" ..
  qemu.machine_args("microvm", "tcg") .. ")")
T.is(qemu.machine_args("microvm", "kvm"), "", "microvm under KVM: nothing (kvmclock)")
T.is(qemu.machine_args("pc", "tcg"), "", "pc: nothing")

-- a QEMU that daemonizes (its parent exits 0: the instance goes RUNNING) but whose QMP never
-- answers: killed within the 15 s QMP allowance, and its watch says why
local daemon = tmp .. "/qemu-noqmp"
assert(fs.write_atomic(daemon, [[#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -pidfile ] && pf=$2; shift; done
setsid sleep 600 </dev/null >/dev/null 2>&1 &
echo $! > "$pf"
]], "0755"))
qemu.configure({ qemu = daemon })
local vdir = tmp .. "/vm"
assert(fs.mkdir_p(vdir, "0700"))
local steps = {}
local handle, herr = qemu.start({ id = "noqmp", dir = vdir, kernel = kernel, cmdline = "x", disk = vdir .. "/d",
  tap = "rkt0", mac = "52:54:00:00:00:01", vcpus = 1, memory_mib = 128, console_log = vdir .. "/console.log",
  machine = "pc", accel = "tcg", steps = steps })
T.ok(handle and handle.pid, "a QEMU whose parent exits 0: started at once, pid " .. tostring(handle and handle.pid or herr))
if handle then
  local ev
  qemu.watch(handle, function(e) ev = e end)
  T.ok(T.wait_for(30, function() return ev end), "  its QMP never answering: it is ended within the 15 s allowance")
  T.like(ev and ev.reason or "", "riklet killed it: QMP", "  and the reason says why (" .. tostring(ev and ev.reason) .. ")")
  T.ok(not proc.alive(handle.pid), "  the process is gone")
  T.ok(type(steps.qmp) == "number", "  the QMP step's time is recorded")
end

-- the real thing: QEMU boots the node's kernel to its panic (no root) under TCG
local real
for _, k in ipairs(fs.list("/boot") or {}) do
  if k:match("^vmlinuz%-.*%-cloud%-amd64$") then real = "/boot/" .. k end
end
local has_qemu = proc.run({ "sh", "-c", "command -v qemu-system-x86_64" })
if not real or not has_qemu or has_qemu.code ~= 0 then
  T.skip("needs qemu-system-x86_64 and a /boot/vmlinuz-*-cloud-amd64 kernel", 1)
else
  t = core.now()
  ok, why = qemu.kvm_probe({ qemu = "qemu-system-x86_64", kernel_path = real }, "tcg", 150)
  T.ok(ok, ("a real QEMU boots %s to its panic under TCG: the probe passes (%.1f s) %s"):format(real,
    core.now() - t, tostring(why or "")))
end

fs.rm_rf(tmp)
T.done()
