-- riklet.conmon's monitor when its conmon is gone and there is no evidence yet of how the container
-- ended (no exit file readable, runc not answering: no runc on PATH, no fd left): it must look again
-- every few seconds, yielding meanwhile. It asked again at once, forever, without yielding: the
-- whole agent froze (test_conmon.sh's "exits meanwhile" under ulimit -n 14, when the Pod killed was
-- one riklet had no fd to watch).
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"
local runc = require "riklet.runc"
local conmon = require "riklet.conmon"

local dir = ("/tmp/riklet-conmon-monitor-test-%d"):format(core.getpid())
fs.rm_rf(dir)
assert(fs.mkdir_p(dir, "0700"))

-- a conmon pid that is gone (reaped): proc.watch gives nil, nil at once
local p = assert(proc.spawn({ "true" }))
p:wait()

-- runc cannot tell (as with no runc on PATH); counted, and raising at the 50th ask (the monitor ends,
-- "failed") so that the old busy loop ends, and shows, instead of hanging the test
local asked, state = 0, runc.state
runc.state = function(id)
  asked = asked + 1
  if asked >= 50 then error("asked runc 50 times without yielding") end
  return nil, ("runc state %s: runc (runc) could not be started: cannot create pipes for runc: Too many open files"):format(id), false
end
local mon = conmon.monitor({ id = "monitor-test-c", dir = dir, conmon_pid = p.pid })
local _, _, took, ticks = T.ticking(function() task.sleep(1) end)
runc.state = state
T.ok(asked >= 1 and asked <= 5, ("in 1 s, the monitor asked runc %d times (every few seconds: at most 5)"):format(asked))
T.ok(ticks >= math.floor(took / 0.01 * 0.5), ("the loop kept turning meanwhile: %d ticks of 10 ms in %.2f s"):format(ticks, took))
T.ok(not mon.ended.is_set, "no evidence of the end: not ended")

-- the evidence comes (conmon's exit file): the monitor ends with the container's real status
assert(fs.mkdir_p(dir .. "/exit", "0700"))
assert(fs.write_atomic(dir .. "/exit/exit", "42"))
local st = mon.ended:wait(10)
T.ok(st and st.code == 42, "once conmon's exit file is there, the monitor ends with its code: " .. tostring(st and st.describe))
mon.cancelled = true

-- a container that ends while many tasks are ready (the loop's budget paces them: 150 tasks of
-- 3 ms steps, ~0.45 s a pass): whoever waits for its monitor resumes in the next turns, ahead of
-- them (before: after two passes, the monitor's resume at the exit then the waiter's; with 1,000
-- Pods removed at once 108 destroys saw their exit only after the 2 s grace and sent a SIGKILL).
-- The "conmon" is a process riklet did not spawn (watched through a pidfd, as a re-adopted one);
-- its exit file is there already.
do
  local d2 = dir .. "/first"
  assert(fs.mkdir_p(d2 .. "/exit", "0700"))
  assert(fs.write_atomic(d2 .. "/exit/exit", "0"))
  local r = assert(proc.run({ "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!" }, { own_group = false }))
  local pid = assert(tonumber(r.stdout:match("%d+")))
  local m = conmon.monitor({ id = "monitor-test-first", dir = d2, conmon_pid = pid })
  local seen_at
  task.spawn(function() m.ended:wait() seen_at = core.now() end)
  local busy = T.busy_tasks(150)
  task.sleep(0.05)
  local killed_at = core.now()
  assert(proc.kill(pid, 9))
  T.wait_for(30, function() return seen_at ~= nil and busy.left == 0 end)
  T.ok(seen_at and seen_at - killed_at < 0.15,
    ("a conmon killed while 150 tasks were ready: its monitor's waiter resumed %.1f ms later (load %s)")
    :format(((seen_at or killed_at) - killed_at) * 1000, (fs.read("/proc/loadavg", 64) or "?"):match("^(%S+)")))
  m.cancelled = true
end

-- A start in flight when riklet stopped, adopted (conmon.adopt_start): its conmon, a real process
-- riklet did not spawn whose command line is a conmon's (bash through a link named conmon, --cid=ID
-- as its $0), has two children: the container's init (sleep 600, its pid in init.pid, as runc
-- writes it) and its runtime (the shim: a sleep of its own). runc's word is stubbed: created while that runtime runs, then what the
-- case says. -> the adopted monitor, the fake conmon's pid, its init's pid, its runtime's pid
assert(proc.run({ "ln", "-s", "/bin/bash", dir .. "/conmon" }).code == 0)
local function fake_start(name, runtime_s, after)
  local d = dir .. "/" .. name
  assert(fs.mkdir_p(d, "0700"))
  local id = "adopt-test-" .. name
  local script = ("sleep 600 & echo $! >%s/init.pid; sleep %s & echo $! >%s/runtime; wait"):format(d, runtime_s, d)
  local r = assert(proc.run({ "sh", "-c", ('%s/conmon -c "$1" --cid=%s </dev/null >/dev/null 2>&1 & echo $!'):format(dir, id),
    "sh", script }, { own_group = false }))
  local pid = assert(tonumber(r.stdout:match("%d+")))
  T.wait_for(5, function() return fs.read(d .. "/runtime", 64) ~= nil and fs.read(d .. "/init.pid", 64) ~= nil end)
  local init = tonumber((fs.read(d .. "/init.pid", 64) or ""):match("%d+"))
  local rt_pid = tonumber((fs.read(d .. "/runtime", 64) or ""):match("%d+"))
  runc.state = function(cid)
    if cid ~= id then return state(cid) end
    if rt_pid and proc.alive(rt_pid) and not (fs.read("/proc/" .. rt_pid .. "/stat", 4096) or ""):match("^%d+ %b() Z") then
      return { status = "created", pid = init }
    end
    return { status = after, pid = init }
  end
  return id, d, pid, init, rt_pid
end
local function cleanup(...)
  for _, q in ipairs({ ... }) do if q then proc.kill(q, 9) end end
  runc.state = state
end
do -- its runtime starts the container and its conmon lives on: started (then a conmon gone: its end)
  local id, d, pid, init, rt_pid = fake_start("run", "0.3", "running")
  T.ok(conmon.runtime(pid, init) == rt_pid, "conmon.runtime: the conmon's child that is not the container's init")
  local m = conmon.adopt_start({ id = id, dir = d, conmon_pid = pid, pid = init })
  T.is(m.start_done:wait(5), true, "its runtime ended with the container running and its conmon alive: start_done")
  T.ok(not m.ended.is_set, "and it is not ended")
  assert(proc.kill(pid, 9))
  local lost = m.ended:wait(5)
  T.is(lost and lost.describe, conmon.CONMON_LOST, "its conmon gone while the container runs: taken as ended (CONMON_LOST)")
  cleanup(init)
end
do -- its runtime ends with the container only created: never started
  local id, d, pid, init = fake_start("dead", "0.3", "created")
  local m = conmon.adopt_start({ id = id, dir = d, conmon_pid = pid, pid = init })
  local never = m.ended:wait(5)
  T.is(never and never.describe, conmon.NEVER_STARTED, "its runtime ended, the container only created: never started")
  T.is(m.start_done:wait(1), false, "start_done: false")
  T.ok(proc.alive(pid), "its conmon is left to the rollback (which deletes the container first)")
  cleanup(pid, init)
end
do -- its runtime stuck past conmon's 60 s limit (its pid file 2 minutes old): its conmon stopped
  local id, d, pid, init, rt_pid = fake_start("stuck", "600", "created")
  assert(fs.write_atomic(d .. "/conmon.pid", tostring(pid)))
  assert(proc.run({ "touch", "-d", "-2 min", d .. "/conmon.pid" }).code == 0)
  local t0 = core.now()
  local m = conmon.adopt_start({ id = id, dir = d, conmon_pid = pid, pid = init })
  local stuck = m.ended:wait(5)
  T.like(stuck and stuck.describe or "", "did not end within 60s", ("its start stuck: taken as ended at once (%.2f s)"):format(core.now() - t0))
  T.wait_for(2, function() return not conmon.alive(pid, id) end)
  T.ok(not conmon.alive(pid, id), "its conmon stopped (riklet's, by its command line and uid)")
  cleanup(rt_pid, init)
end
-- A container's process (root on the node: riklet's containers have no user namespace) giving
-- itself a conmon's command line for a container (it may find out the id), at the pid of that
-- container's conmon once recycled (a conmon ends at its report of a start riklet, killed, no
-- longer waits for): it is in a pid namespace of its own, below riklet's, where no conmon of
-- riklet's runs. Not its conmon: neither adopted (conmon.alive) nor killed (conmon.stop). The
-- same command line in riklet's pid namespace is taken (the control).
if core.getuid() == 0 and proc.run({ "unshare", "--pid", "--fork", "true" }).code == 0 then
  local id = "adopt-test-imitation"
  local script = "sleep 600; :"
  local fake = assert(proc.run({ "sh", "-c", ('unshare --pid --fork --kill-child %s/conmon -c "$1" --cid=%s </dev/null >/dev/null 2>&1 & echo $!'):format(dir, id),
    "sh", script }, { own_group = false }))
  local outer = assert(tonumber(fake.stdout:match("%d+")))
  local pid
  T.wait_for(5, function()
    pid = tonumber((fs.read(("/proc/%d/task/%d/children"):format(outer, outer), 256) or ""):match("%d+"))
    return pid and (fs.read("/proc/" .. pid .. "/cmdline", 4096) or ""):find("--cid=" .. id, 1, true)
  end)
  local same = assert(proc.run({ "sh", "-c", ('%s/conmon -c "$1" --cid=%s </dev/null >/dev/null 2>&1 & echo $!'):format(dir, id),
    "sh", script }, { own_group = false }))
  local control = assert(tonumber(same.stdout:match("%d+")))
  T.ok(pid ~= nil, "an imitation of conmon " .. id .. " in a pid namespace of its own runs: " .. tostring(pid))
  T.is(conmon.alive(control, id), true, "the same command line in riklet's pid namespace: taken for the conmon (the control)")
  T.is(conmon.alive(pid, id), false, "the imitation in a container's pid namespace: not the conmon (not adopted)")
  conmon.stop(pid, id, "(test)")
  task.sleep(0.1)
  T.ok(proc.alive(pid), "nor killed by conmon.stop")
  cleanup(pid, outer, control)
else
  T.skip("imitation in another pid namespace: needs root and unshare --pid")
end
fs.rm_rf(dir)
