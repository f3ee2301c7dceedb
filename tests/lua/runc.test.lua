-- riklet.runc + riklet.conmon + riklet.oci + riklet.image end to end, offline: a busybox image built
-- with tests/lib/mkimage.sh, unpacked from its oci: layout, an overlay per instance, and a real runc
-- container created under a real conmon, started, inspected, signalled and deleted; its output
-- lands in the CRI log file and its exit status in conmon's exit file.
local T = require "riklet.testlib"
local proc = require "riklet.proc"
local fs = require "riklet.fs"
local core = require "riklet.core"


if core.getuid() ~= 0 then T.skip_all("needs root (runc, overlay mounts)") end
T.need_cmds({ runc = "runc", conmon = "conmon", umoci = "umoci", busybox = "busybox-static", jq = "jq", flock = "util-linux" })

local src = debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]+$") or "."
local tmp = ("/tmp/riklet-runc-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

local r = proc.run({ "bash", src .. "/tests/lib/mkimage.sh",
  "--cmd", '["sh","-c","echo image default cmd"]', tmp .. "/layout:t" }, { timeout = 120 })
if not (r and r.code == 0) then
  T.diag(r and r.stderr or "mkimage did not start")
  T.ok(false, "mkimage built the busybox image")
  fs.rm_rf(tmp)
  return
end
T.ok(true, "mkimage built the busybox image")

local image = require "riklet.image"
local oci = require "riklet.oci"
local runc = require "riklet.runc"
local conmon = require "riklet.conmon"
local crilog = require "riklet.crilog"
T.ok(image.init({ state_dir = tmp .. "/state" }), "image.init")
local ok, err = runc.init({ runc_root = tmp .. "/runc" })
T.ok(ok, "runc.init: " .. tostring(err))
ok, err = conmon.init({})
T.ok(ok, "conmon.init: " .. tostring(err))
local img, ierr = image.ensure("oci:" .. tmp .. "/layout:t")
T.ok(img, "ensure oci: layout: " .. tostring(ierr))
if not img then fs.rm_rf(tmp) return end

local id = ("rk-test-%d"):format(core.getpid())
local bundle = tmp .. "/inst/" .. id
local log = bundle .. "/ctr.log"
T.ok(image.mount_rootfs(bundle, img), "overlay for the container")

-- 1. config from the image's template: the image's command kept unless overridden
ok, err = oci.edit_config(img.config, bundle .. "/config.json", { root_path = bundle .. "/rootfs", hostname = "tester" })
T.ok(ok, "edit_config with the image command: " .. tostring(err))
local cfgjson = require("riklet.json").decode(fs.read(bundle .. "/config.json"))
T.is(cfgjson.process.args[3], "echo image default cmd", "the image's cmd is kept")
T.is(cfgjson.process.terminal, false, "no terminal")

-- 2. now override: a workload that prints, writes to stderr, and exits on SIGTERM
ok, err = oci.edit_config(img.config, bundle .. "/config.json", {
  args = { "sh", "-c", 'trap "echo got TERM; exit 0" TERM; echo "hello $WHO from $(hostname)"; echo to-stderr >&2; while :; do sleep 0.1; done' },
  env = { "WHO=riklet" }, hostname = "tester", root_path = bundle .. "/rootfs",
})
T.ok(ok, "edit_config with args/env: " .. tostring(err))
-- riklet's pipes (conmon's sync pipe is closed once read: none may be left per container); the
-- count includes ls's own two
local function pipes()
  local ls = require("riklet.proc").run({ "ls", "-l", "/proc/" .. core.getpid() .. "/fd" })
  local _, n = ((ls and ls.stdout) or ""):gsub("pipe:%[", "")
  return n
end
local pipes_before = pipes()
local t0 = core.now()
local mon
mon, err = conmon.create(id, bundle, { log = log })
T.ok(mon, "runc create under conmon: " .. tostring(err))
T.diag("the container's pid came from " .. tostring(mon and mon.by))
local st = runc.state(id)
T.is(st and st.status, "created", "state: created")
local pid = tonumber((fs.read(bundle .. "/init.pid") or ""):match("%d+"))
T.ok(pid and st and pid == st.pid and mon and mon.pid == pid, "pid file matches runc state: " .. tostring(pid))
T.ok(mon and conmon.alive(mon.conmon_pid, id), "its conmon runs: " .. tostring(mon and mon.conmon_pid))
T.ok(mon and not conmon.alive(mon.conmon_pid, id .. "x"), "and is not taken for another container's conmon")
T.ok(mon and not conmon.alive(mon.conmon_pid, id:sub(1, -2)), "nor for the conmon of a container named by a prefix")
local listed
for _, cm in ipairs(conmon.list()) do
  if mon and cm.pid == mon.conmon_pid then listed = cm end
end
T.is(listed and (listed.cid .. " " .. tostring(listed.bundle)), id .. " " .. bundle,
  "conmon.list finds it, with its container id and bundle")
ok, err = runc.start(id)
T.ok(ok, "runc start: " .. tostring(err))
T.diag(("create+start took %.0f ms"):format((core.now() - t0) * 1000))
T.ok(T.wait_for(10, function() return (fs.read(log) or ""):find("hello riklet from tester", 1, true) end),
  "container stdout lands in the log file")
T.ok(T.wait_for(5, function() return (fs.read(log) or ""):find("to-stderr", 1, true) end), "and its stderr too")
T.like(fs.read(log) or "", "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+[Z+-][%d:]* stdout F hello riklet from tester\n",
  "stdout in the CRI format: RFC 3339 nano timestamp, stream, F, line")
T.like(fs.read(log) or "", " stderr F to%-stderr\n", "stderr in the CRI format")
local entries = crilog.read(log) or {}
T.is(entries[1] and entries[1].text, "hello riklet from tester", "crilog reads the line back")
T.ok(entries[1] and math.abs(entries[1].time - core.time()) < 60, "with its time")
st = runc.state(id)
T.is(st and st.status, "running", "state: running")
T.is(st and st.bundle, bundle, "state: bundle")
local found = false
for _, c in ipairs(runc.list() or {}) do found = found or c.id == id end
T.ok(found, "runc.list shows it")

-- 3. stop with TERM, the container's own handler runs
ok, err = runc.kill(id, "TERM")
T.ok(ok, "runc kill TERM: " .. tostring(err))
T.ok(T.wait_for(10, function() local s = runc.state(id) return s and s.status == "stopped" end), "stopped after TERM")
T.ok(mon and mon.ended:wait(10), "the monitor saw it end")
T.is(mon and mon.ended.value and mon.ended.value.code, 0, "with exit code 0 from conmon's exit file")
T.is((conmon.exit_status(bundle) or {}).code, 0, "conmon's exit file says 0")
T.ok(T.wait_for(5, function() return not conmon.alive(mon.conmon_pid, id) end), "conmon is gone")
T.ok((fs.read(log) or ""):find("got TERM", 1, true), "the container saw SIGTERM")
local k, note = runc.kill(id, "KILL")
T.ok(k and note == "not running", "kill of a stopped container: true, not running")
ok, err = runc.delete(id, { force = true })
T.ok(ok, "runc delete: " .. tostring(err))
local gone, gerr, missing = runc.state(id)
T.ok(gone == nil and missing == true and gerr:find("does not exist"), "state after delete: " .. tostring(gerr))
local d2, why = runc.delete(id)
T.ok(d2 and why == "absent", "delete again: true, absent")

-- 4. exit codes and signals from conmon's exit file
conmon.clean(bundle)
assert(oci.edit_config(img.config, bundle .. "/config.json", { args = { "sh", "-c", "exit 3" }, root_path = bundle .. "/rootfs" }))
mon, err = conmon.create(id, bundle, { log = log })
T.ok(mon and runc.start(id), "a container that exits 3: " .. tostring(err))
T.ok(mon and mon.ended:wait(10), "ended")
T.is(mon and mon.ended.value.code, 3, "exit code 3")
runc.delete(id, { force = true })
conmon.clean(bundle)
assert(oci.edit_config(img.config, bundle .. "/config.json", { args = { "sleep", "60" }, root_path = bundle .. "/rootfs" }))
mon, err = conmon.create(id, bundle, { log = log })
T.ok(mon and runc.start(id), "a container to kill: " .. tostring(err))
runc.kill(id, "KILL")
T.ok(mon and mon.ended:wait(10), "ended")
T.is(mon and mon.ended.value.signal, 9, "killed by signal 9")
T.is(mon and mon.ended.value.code, nil, "and no exit code")
runc.delete(id, { force = true })
conmon.clean(bundle)

-- 4b. conmon started early, held on its start pipe while the container is prepared (one runtime
-- slot): the held conmon holds no slot (a runc command runs meanwhile), and the create's time limit
-- counts from conmon's release, not from its spawn (a preparation longer than the limit is not
-- runc's fault)
assert(runc.init({ runc_root = tmp .. "/runc", runtime_parallel = 1 }))
assert(oci.edit_config(img.config, bundle .. "/config.json", { args = { "sleep", "60" }, root_path = bundle .. "/rootfs" }))
local task = require "riklet.task"
local during = {}
mon, err = conmon.create(id, bundle, { log = log, timeout = 3, prepare = function()
  local ts = core.now()
  local _, _, gone_missing = runc.state("nope-" .. id)
  during.state_ms, during.missing = (core.now() - ts) * 1000, gone_missing
  during.free = runc.slot_free()
  task.sleep(3.5)
  return true
end })
T.ok(during.missing and during.free, "while conmon is held, its runtime slot is free: a runc command ran in "
  .. ("%.0f ms"):format(during.state_ms or -1))
T.ok(mon, "a preparation (3.5 s) longer than the create's limit (3 s) does not time runc out: " .. tostring(err))
T.ok(mon and runc.start(id), "and the container starts")
runc.kill(id, "KILL")
T.ok(mon and mon.ended:wait(10), "ended")
runc.delete(id, { force = true })
conmon.clean(bundle)
assert(runc.init({ runc_root = tmp .. "/runc" }))

-- 5. failures carry runc's reason
assert(oci.edit_config(img.config, bundle .. "/config.json", { args = { "/no/such/binary" }, root_path = bundle .. "/rootfs" }))
mon, err = conmon.create(id .. "-bad", bundle, { log = log })
ok = mon ~= nil
if ok then ok, err = runc.start(id .. "-bad") end
T.ok(not ok and err:find("no such file", 1, true), "missing executable: " .. tostring(err))
runc.delete(id .. "-bad", { force = true })
conmon.clean(bundle)
ok, err = conmon.create("../evil", bundle, { log = log })
T.ok(not ok and err:find("invalid container id"), "hostile id refused: " .. tostring(err))
ok, err = conmon.create(id, tmp .. "/nowhere", { log = tmp .. "/nowhere.log" })
T.ok(not ok and err:find("failed", 1, true), "missing bundle: " .. tostring(err))
ok, err = runc.start("nope-" .. id)
T.ok(not ok and err:find("runc start nope%-") and err:find("does not exist"), "start of an unknown container: " .. tostring(err))
ok, err = runc.kill(id, "NOT A SIGNAL")
T.ok(not ok and err:find("invalid signal"), "bad signal refused: " .. tostring(err))

-- 6. nothing left behind
-- (closed once conmon's line is read, a few ms after runc's pid file when that came first)
T.ok(T.wait_for(10, function() return pipes() == pipes_before end),
  ("no pipe left open in riklet (conmon's sync pipes closed): %d, %d before"):format(pipes(), pipes_before))
T.ok(image.umount_rootfs(bundle), "umount the overlay")
local leftover = false
for _, c in ipairs(runc.list() or {}) do leftover = leftover or c.id:find(id, 1, true) ~= nil end
T.ok(not leftover, "no container left in runc")
ok, err = fs.rm_rf(tmp)
T.ok(ok, "cleanup " .. tostring(err))
