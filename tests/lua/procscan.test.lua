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

T.done()
