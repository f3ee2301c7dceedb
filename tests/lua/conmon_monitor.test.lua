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
fs.rm_rf(dir)
