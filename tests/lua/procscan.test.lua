-- riklet.procscan: one listing of /proc shared by the boot's searches (conmons, VMMs), and what
-- the searches still check on the process itself: a listing older than the process it names must
-- not make riklet act on a pid that ended (or was recycled) since.
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"
local task = require "riklet.task"
local procscan = require "riklet.procscan"
local vmmproc = require "riklet.vmmproc"

-- (nothing is made there: only command lines name it)
local dir = ("/tmp/riklet-procscan-test-%d/instances"):format(core.getpid())

-- a stand-in VMM: one process whose command line names DIR/ID/qemu.pid after -pidfile (perl keeps
-- the words after "--" in its command line). Not a shell looping over sleep: each of its forks has
-- the shell's command line until it execs, and was found as a second VMM when a listing caught it
local function vmm(id)
  local p = assert(proc.spawn({ "perl", "-e", "sleep 600", "--", "-pidfile", dir .. "/" .. id .. "/qemu.pid" }))
  for _ = 1, 100 do
    local cmd = fs.read("/proc/" .. p.pid .. "/cmdline", 65536)
    if cmd and cmd:find("-pidfile", 1, true) then break end
    task.sleep(0.01)
  end
  return p
end
local function ids(found)
  local s = {}
  for _, f in ipairs(found) do s[#s + 1] = f.id .. "=" .. f.pid end
  table.sort(s)
  return table.concat(s, ",")
end
local function gone(p)
  proc.kill(p.pid, 9)
  p:wait()
end

local a = vmm("a")
local mine = false
for _, p in ipairs(procscan.cmdlines()) do
  if p.pid == a.pid then mine = p.cmd:find("\0-pidfile\0" .. dir .. "/a/qemu.pid\0", 1, true) ~= nil end
end
T.ok(mine, "cmdlines(): the process and its whole command line, NUL-separated")
T.is(ids(vmmproc.find(dir, "-pidfile", "qemu%.pid")), "a=" .. a.pid, "find outside a shared listing: the VMM")

-- each match's command line is split and matched once (the fresh one), not once in the listing and
-- again when read afresh: counted through the string library, which both go through
do
  local splits, matched = 0, 0
  local gmatch, match = string.gmatch, string.match
  string.gmatch = function(s, p, ...) -- luacheck: ignore 122
    if p == "[^%z]+" and s:find(dir, 1, true) then splits = splits + 1 end
    return gmatch(s, p, ...)
  end
  string.match = function(s, p, ...) -- luacheck: ignore 122
    if p:find("qemu%.pid$", 1, true) then matched = matched + 1 end
    return match(s, p, ...)
  end
  jit.flush()
  local ok_find, found = pcall(vmmproc.find, dir, "-pidfile", "qemu%.pid")
  string.gmatch, string.match = gmatch, match -- luacheck: ignore 122
  T.is(ok_find and ids(found), "a=" .. a.pid, "find, counted: the VMM")
  T.is(splits, 1, "its command line is split once")
  T.is(matched, 1, "and its file pattern matched once")
end

-- a conmon names the instances directory too, and its --conmon-pidfile=DIR/... holds "-pidfile":
-- FLAG counts only as a whole argument, so such a process is not read again nor its owner asked
-- (at 1,000 Pods, every conmon was, at every boot)
do
  local cm = assert(proc.spawn({ "perl", "-e", "sleep 600", "--", "--conmon-pidfile=" .. dir .. "/c1/conmon.pid",
    "--bundle=" .. dir .. "/c1" }))
  for _ = 1, 100 do
    local cmd = fs.read("/proc/" .. cm.pid .. "/cmdline", 65536)
    if cmd and cmd:find("conmon-pidfile", 1, true) then break end
    task.sleep(0.01)
  end
  local asked, same_user = 0, procscan.same_user
  procscan.same_user = function(pid) if pid == cm.pid then asked = asked + 1 end return same_user(pid) end
  local ok_find, found = pcall(vmmproc.find, dir, "-pidfile", "qemu%.pid")
  procscan.same_user = same_user
  T.is(ok_find and ids(found), "a=" .. a.pid, "a conmon-like process beside the VMM: only the VMM found")
  T.is(asked, 0, "the process with --conmon-pidfile=DIR/... is not checked as a VMM")
  gone(cm)
end

local first, second, b
local r1, r2 = procscan.shared(function(x, y)
  first = procscan.cmdlines()
  b = vmm("b")
  second = procscan.cmdlines()
  -- a VMM started after the listing is not in it; one ended since is in it, but find reads the
  -- command line of each match again: it is not returned
  T.is(ids(vmmproc.find(dir, "-pidfile", "qemu%.pid")), "a=" .. a.pid, "inside: the one listing (b started after it)")
  gone(a)
  T.is(ids(vmmproc.find(dir, "-pidfile", "qemu%.pid")), "", "a ended since the listing: not returned (checked again)")
  return x + 1, y
end, 1, "two")
T.ok(first == second, "inside shared(): every cmdlines() call gets the same listing")
T.ok(r1 == 2 and r2 == "two", "shared() returns fn's results")
T.is(ids(vmmproc.find(dir, "-pidfile", "qemu%.pid")), "b=" .. b.pid, "after shared(): a listing of its own (b found)")

-- an error inside ends the sharing too, and is raised with fn's traceback
local ok, err = pcall(procscan.shared, function()
  procscan.cmdlines()
  error("boom")
end)
T.ok(not ok and tostring(err):find("boom", 1, true) and tostring(err):find("traceback", 1, true), "an error in fn is raised again: " .. tostring(err):match("^[^\n]*"))
gone(b)
T.is(ids(vmmproc.find(dir, "-pidfile", "qemu%.pid")), "", "after the error: not sharing (b's end seen)")

-- the sharing is the boot task's own: another task that asks while the boot's fn waits (a rollback
-- freeing a VMM, say) reads /proc afresh and sees a process started after the boot's listing
local c
local seen_by_other
procscan.shared(function()
  procscan.cmdlines()
  c = vmm("c")
  local done = task.event()
  task.spawn(function()
    seen_by_other = ids(vmmproc.find(dir, "-pidfile", "qemu%.pid"))
    done:set(true)
  end)
  done:wait(10)
end)
T.is(seen_by_other, "c=" .. c.pid, "another task during shared(): a listing of its own (c, started after the boot's, found)")
gone(c)

-- pid reuse between the check and the kill: conmon.stop (and the VMM stops) check the process (its
-- command line, its uid, its start time), then signal it. The kill goes through a pidfd opened
-- before the check (procscan.claim), so a process that ends after the check and whose pid is given
-- to another one is not replaced by it. The pid is recycled for real: the test process ends, and
-- the next pid is set through /proc/sys/kernel/ns_last_pid (root) until a new one gets it.
local function recycle(pid)
  for _ = 1, 100 do
    local f = io.open("/proc/sys/kernel/ns_last_pid", "w")
    if not f then return nil end
    f:write(tostring(pid - 1))
    f:close()
    local p = proc.spawn({ "sleep", "600" })
    if p and p.pid == pid then return p end
    if p then gone(p) end
  end
end
local conmon = require "riklet.conmon"
do
  local victim = assert(proc.spawn({ "sleep", "600" }))
  local pid, cid = victim.pid, "pidreuse-test_c"
  local heir
  local read = fs.read
  -- the check reads its command line (conmon's, naming the container), and by then the process
  -- ended and another one has its pid (run by riklet's user: the owner check passes too)
  fs.read = function(path, ...) -- luacheck: ignore 122
    if path == "/proc/" .. pid .. "/cmdline" then
      if not heir then
        proc.kill(pid, 9)
        victim:wait()
        heir = recycle(pid) or false
      end
      return "/usr/bin/conmon\0--api-version\0001\0--cid=" .. cid .. "\0"
    end
    return read(path, ...)
  end
  local ran, why = pcall(conmon.stop, pid, cid)
  fs.read = read -- luacheck: ignore 122
  T.ok(ran, "conmon.stop ran: " .. tostring(why))
  if not heir then
    T.skip("the pid could not be recycled here (ns_last_pid not writable, or other forks took it)", 2)
  else
    T.is(heir.pid, pid, "the conmon's pid went to another process between the check and the kill")
    task.sleep(0.05)
    T.ok(not heir:exited() and proc.alive(pid), "conmon.stop did not kill the process that got the pid after its check")
    gone(heir)
  end
end

-- procscan.claim itself: false for a process the check refuses (no fd kept), a claim that signals the
-- process checked, false from it once that ended
do
  local p = assert(proc.spawn({ "sleep", "600" }))
  T.is(procscan.claim(p.pid, function() return nil end), false, "claim: a check that cannot tell: false")
  local cl = procscan.claim(p.pid, function(pid) return pid == p.pid end)
  T.ok(cl and cl.fd ~= nil, "claim: a pidfd on the process checked")
  T.is(cl and cl:signal(15), true, "claim:signal: sent")
  local code, sig = p:wait()
  T.is(sig, 15, "the process checked got it (" .. proc.describe(code, sig) .. ")")
  T.is(cl and cl:signal(9), false, "claim:signal once it ended (and was reaped): false, nothing sent")
  if cl then cl:close() cl:close() end
  T.is(procscan.signal_if(p.pid, 9, function() return true end), false, "signal_if on a pid nothing has: false")
end

T.done()
