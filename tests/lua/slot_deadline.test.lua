-- A destroy whose runc calls wait in a full --runtime-parallel queue: its deadline counts its work,
-- not its turn (1,000 Pods removed at once went FAILED "destroy step did not finish within 182 s"),
-- and runc commands on existing containers go before creates queued earlier. The agent, lifecycle,
-- slot queue and runc are the real ones (runc deletes containers that do not exist: real runc
-- processes); the driver is a small one whose destroy is one runc call, with a deadline of 1 s, or
-- 4 times what such a runc call takes here and now when that is more (a busy CI machine): the slots
-- are held 3 s longer than the deadline, the slow destroy's work 1.5 s longer.
local T = require "riklet.testlib"
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local json = require "riklet.json"
local lifecycle = require "riklet.lifecycle"
local agent = require "riklet.agent"
local runc = require "riklet.runc"

T.need_cmds({ runc = "runc" })

local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir .. "/records", "0700"))
local rroot = dir .. "/runc"
local iok, ierr = runc.init({ runc_root = rroot, runtime_parallel = 2 })
T.ok(iok, "runc.init with --runtime-parallel 2: " .. tostring(ierr))

local function pod(name)
  return assert(json.encode({ apiVersion = "v1", kind = "Pod", name = name,
    spec = { containers = { { name = "main", image = "busybox:latest", env = json.null, ports = json.null } } } }))
end

-- the same runc call as the destroys', timed on this machine now: the deadline scales with it
local t_ref = core.now()
runc.delete("absent-reference", { force = true })
local ref = core.now() - t_ref
local DEADLINE = math.max(1, math.ceil(4 * ref))
T.diag(("runc delete of an absent container took %.2f s: a destroy deadline of %d s"):format(ref, DEADLINE))

local order = {} -- what got a runc slot, in order
local drv = {
  create = function(inst)
    inst.rec.containers = { { name = "main", state = "running", started_at = core.time() } }
    return true
  end,
  destroy = function(inst)
    if inst.rec.name == "slow-destroy" then
      -- its work (inside the slot) is longer than the deadline: that still fails it
      return runc.throttled(function() task.sleep(DEADLINE + 1.5) return true end)
    end
    local ok, err = runc.delete("absent-" .. inst.id, { force = true })
    order[#order + 1] = "destroy " .. inst.id
    return ok, err
  end,
  release = function() return true end,
  adopt = function() return true end,
  restart = function() return true end,
  on_exit = function() return "running" end,
  timeout = function(step) return step == "destroy" and DEADLINE or 10 end,
}
lifecycle.register("Pod", drv)

local seen = {}
agent.subscribe(function(id, status, msg)
  seen[id] = seen[id] or {}
  table.insert(seen[id], status .. (status == "FAILED" and (": " .. tostring(msg)) or ""))
end)
local function status(id) local v = agent.get(id) return v and v.status end
assert(agent.init({ paths = { records = dir .. "/records" }, keep_records = 100, stop_grace = 1, pull_timeout = 5,
  max_instances = 8 }))

for _, id in ipairs({ "queued", "queued2", "slow" }) do
  agent.create(id, pod(id == "slow" and "slow-destroy" or id), "test")
end
T.wait_for(10, function() return status("queued") == "RUNNING" and status("queued2") == "RUNNING"
  and status("slow") == "RUNNING" end)
T.is(status("queued"), "RUNNING", "the instances run")

-- both slots held for 3 s more than the deadline (two long runc runs), then a create queued before the destroys
local held = 0
for _ = 1, 2 do
  task.spawn(function() runc.throttled(function() held = held + 1 task.sleep(DEADLINE + 3) held = held - 1 end) end)
end
T.is(held, 2, "both --runtime-parallel slots are taken")
task.spawn(function() runc.throttled(function() order[#order + 1] = "create" end) end)

local t0 = core.now()
agent.destroy("queued")
agent.destroy("queued2")
local gone, gerr = agent.wait_gone("queued", DEADLINE) -- not counting the instance's wait for a slot
T.ok(gone, ("wait_gone with %d s: true once the destroy got its slot and ran: %s"):format(DEADLINE, tostring(gerr)))
local waited = core.now() - t0
T.ok(waited >= DEADLINE + 2, ("the destroy waited for a slot (%.1f s), longer than its %d s deadline"):format(waited, DEADLINE))
T.wait_for(10 + DEADLINE, function() return status("queued2") == "TERMINATED" and (seen.queued2 or {})[4] ~= nil end)
T.is(table.concat(seen.queued or {}, " "), "CREATING RUNNING DESTROYING TERMINATED",
  "a destroy queued behind a full runc queue ends TERMINATED, not FAILED")
T.is(table.concat(seen.queued2 or {}, " "), "CREATING RUNNING DESTROYING TERMINATED", "and the one behind it too")
-- (a create queued first, served first, would have been recorded at once, before any runc delete ended)
T.like(table.concat(order, ", "), "^destroy queued", "the destroys' runc commands went before the create queued earlier")
T.like(table.concat(order, ", "), "create", "and the create got its turn after them")

-- the deadline still bounds the work itself: 2.5 s inside the slot, for a 1 s deadline
agent.destroy("slow")
-- the report follows the stored transition: wait for it
T.wait_for(10 + 2 * DEADLINE, function() return status("slow") == "FAILED" and (seen.slow or {})[#(seen.slow or {})] ~= "DESTROYING" end)
T.like(table.concat(seen.slow or {}, " "), "DESTROYING FAILED: could not clean up: destroy step did not finish within " .. DEADLINE .. " s",
  "a destroy whose own work overruns its deadline still goes FAILED")

task.sleep(2 + DEADLINE) -- the abandoned slow destroy ends before the directory goes
fs.rm_rf(dir)
