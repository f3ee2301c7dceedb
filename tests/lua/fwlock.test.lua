-- fw and the xtables lock: while another program holds the lock, fw.apply waits for it without
-- blocking the loop (the task yields and retries), succeeds once it is released, and gives up
-- with a clear error after 3 s. Runs itself again in a private network namespace (unshare -n) with
-- a private lock file, so the host's iptables and other users of /run/xtables.lock are untouched.
local T = require "riklet.testlib"
local core = require "riklet.core"
local proc = require "riklet.proc"
local fs = require "riklet.fs"

if core.getuid() ~= 0 then T.skip_all("needs root (iptables in a private network namespace)") end
T.need_cmds({ unshare = "util-linux", flock = "util-linux", ["iptables-legacy"] = "iptables" })

if not os.getenv("RIKLET_FWLOCK_INNER") then
  local tmp = os.tmpname() fs.unlink(tmp) assert(fs.mkdir_p(tmp))
  T.run_nested({ "unshare", "-n", "env", "RIKLET_FWLOCK_INNER=" .. tmp, "XTABLES_LOCKFILE=" .. tmp .. "/xtables.lock" },
    "in a private network namespace")
  fs.rm_rf(tmp)
  return
end

local fw = require "riklet.fw"
local dir = os.getenv("RIKLET_FWLOCK_INNER")
local lock = os.getenv("XTABLES_LOCKFILE")
local rule = { chain = "RIKLET", proto = "tcp", dport = 8080, to = "10.0.0.2:80", comment = "riklet:t1" }

local st, err = fw.apply({ rule }, { owner = "riklet:t1" })
T.ok(st and st.added == 1, "fw.apply with the lock free: " .. tostring(err))

-- hold the lock for `secs` seconds from another process; returns once it is held
local function hold(secs)
  local ready = dir .. "/ready"
  fs.unlink(ready)
  local p = assert(proc.spawn({ "flock", lock, "sh", "-c", "touch " .. ready .. "; sleep " .. secs }))
  T.wait_for(5, function() return fs.exists(ready) end, 0.01)
  return p
end

local ticking = T.ticking

local holder = hold(0.6)
rule.dport = 8081
local res, aerr, took, ticks, gap = ticking(function() return fw.apply({ rule }, { owner = "riklet:t1" }) end)
T.ok(res and res.added == 1 and res.deleted == 1, "fw.apply succeeds once the other program releases the lock: " .. tostring(aerr))
T.ok(took >= 0.4 and took < 2, ("it waited for the lock (%.2f s)"):format(took))
T.ok(ticks >= 20 and gap < 0.1, ("the loop kept turning while it waited: %d ticks, longest gap %.0f ms"):format(ticks, gap * 1000))
holder:wait()

holder = hold(5)
rule.dport = 8082
res, aerr, took, ticks, gap = ticking(function() return fw.apply({ rule }, { owner = "riklet:t1" }) end)
T.ok(res == nil and aerr:find("stayed held for 3 s", 1, true) and aerr:find(lock, 1, true),
  "a lock held too long: nil, a clear error naming the lock: " .. tostring(aerr))
T.ok(took >= 2.9 and took < 4, ("after 3 s (%.2f s)"):format(took))
T.ok(ticks >= 150 and gap < 0.1, ("the loop kept turning for those 3 s: %d ticks, longest gap %.0f ms"):format(ticks, gap * 1000))
local rules = fw.list()
local dports = {}
for _, r in ipairs(rules or {}) do if r.comment == "riklet:t1" then dports[#dports + 1] = r.dport end end
T.is(table.concat(dports, ","), "8081", "the refused change wrote nothing: the rule from before is kept")
holder:kill(9) holder:wait()
T.ok(fw.flush_all(), "flush_all with the lock free")
