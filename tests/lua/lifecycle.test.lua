-- The lifecycle: the transition table, a driver that raises (create, adopt, exit handling) or
-- hangs (destroy), restarts with back-off, interrupted stops finished at start, bounded waits,
-- a failed clean-up and a failed record write tried again while riklet runs, --max-instances. The agent and lifecycle are the real ones over a real store; the driver is a
-- small one registered for kind Pod (what this file tests is what drives the driver).
local T = require "riklet.testlib"
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local json = require "riklet.json"
local store = require "riklet.store"
local lifecycle = require "riklet.lifecycle"
local agent = require "riklet.agent"

local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir .. "/records", "0700"))

local function pod(name, extra)
  local spec = { containers = { { name = "main", image = "busybox:latest", env = json.null, ports = json.null } } }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return assert(json.encode({ apiVersion = "v1", kind = "Pod", name = name, spec = spec }))
end

-- the driver: what it does depends on the workload's name
local calls = { restart = {}, release = {}, destroy = {} }
local function count(what, id) calls[what][id] = (calls[what][id] or 0) + 1 end
local drv = {
  create = function(inst, w)
    inst.rec.containers = { { name = "main", state = "running", started_at = core.time() } }
    if w.name == "raise-create" then error("boom in create") end
    if w.name == "fail-create" then return nil, "the image is not there" end
    return true
  end,
  destroy = function(inst)
    count("destroy", inst.id)
    -- (the first time only: the retry of the failed clean-up then succeeds)
    if inst.rec.name == "hang-destroy" and calls.destroy[inst.id] == 1 then task.sleep(3600) end
    return true
  end,
  release = function(inst)
    count("release", inst.id)
    if inst.rec.name == "release-partial" and calls.release[inst.id] == 1 then -- frees the container, not the rest
      inst.rec.containers[1].state = "deleted"
      return nil, "the veth is busy"
    end
    return true
  end,
  adopt = function(inst)
    if inst.rec.name == "raise-adopt" then error("boom in adopt") end
    calls.adopt = calls.adopt or {}
    calls.adopt[inst.id] = (calls.adopt[inst.id] or 0) + 1
    -- runc failing to answer, a full disk: no evidence that it is gone (answers on the 2nd try)
    if inst.rec.name == "adopt-flaky" and calls.adopt[inst.id] == 1 then return nil, "runc: too many open files" end
    if inst.rec.name == "adopt-gone" then return nil, "container main does not exist", true end
    return true
  end,
  restart = function(inst, unit)
    calls.restart[inst.id] = calls.restart[inst.id] or {}
    table.insert(calls.restart[inst.id], core.now())
    local c = inst.rec.containers[1]
    c.state, c.started_at, c.restart_count = "running", core.time(), (c.restart_count or 0) + 1
    return unit == "main" or nil, "no such container"
  end,
  on_exit = function(inst, msg)
    if inst.rec.name == "raise-exit" then error("boom in exit") end
    local c = inst.rec.containers[1]
    c.state, c.exit_code, c.finished_at = "exited", msg.code, core.time()
    if msg.code ~= 0 then return "FAILED", "main exited with code " .. msg.code, c end
    return "TERMINATED", "all containers exited with code 0", c
  end,
  timeout = function(step) return step == "destroy" and 1 or 10 end,
}
lifecycle.register("Pod", drv)

-- records found at start: a RUNNING one whose adoption raises, a DESTROYING one (a stop riklet
-- did not finish), an ended one whose release was interrupted
local t0 = core.time()
local function rec(id, name, status, extra)
  local r = { id = id, name = name, kind = "Pod", status = status, reason = "", definition = pod(name),
    created_at = t0, containers = { { name = "main", state = "running", started_at = t0 } } }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end
assert(store.open(dir .. "/records", { write = true }))
assert(store.save(rec("adopt-raises", "raise-adopt", "RUNNING")))
assert(store.save(rec("was-destroying", "ok", "DESTROYING")))
assert(store.save(rec("was-releasing", "ok", "FAILED", { released = false })))
assert(store.save(rec("was-running", "ok", "RUNNING")))
assert(store.save(rec("flaky", "adopt-flaky", "RUNNING")))
assert(store.save(rec("gone", "adopt-gone", "RUNNING")))
assert(store.save(rec("policy-changed", "refused-now", "RUNNING")))
-- an admission policy that refuses what was admitted before riklet restarted
assert(fs.mkdir_p(dir .. "/policies", "0700"))
assert(fs.write_atomic(dir .. "/policies/admission.lua", [[
return { admit = function(w) if w.name == "refused-now" then return nil, "refused-now is not welcome" end return w end }
]]))

local seen = {}
agent.subscribe(function(id, status, msg)
  seen[id] = seen[id] or {}
  table.insert(seen[id], { status = status, msg = msg })
end)
local function statuses(id)
  local out = {}
  for _, s in ipairs(seen[id] or {}) do out[#out + 1] = s.status end
  return table.concat(out, " ")
end
local function status(id) local v = agent.get(id) return v and v.status end
local function last_msg(id) local s = seen[id] return s and s[#s].msg or "" end
-- the last status reported (reports follow the stored transition: wait for the report, not the store)
local function reported(id) local s = seen[id] return s and s[#s].status end

local cfg = { paths = { records = dir .. "/records" }, keep_records = 100, stop_grace = 1, pull_timeout = 5,
  max_instances = 8, policy_dir = dir .. "/policies" }
assert(agent.init(cfg))

-- ---- adoption ---------------------------------------------------------------------------------
-- a transition is stored (on the worker pool: the task yields) before it is reported: wait for both
T.wait_for(5, function() return status("adopt-raises") == "FAILED" and calls.release["adopt-raises"] end)
T.is(status("adopt-raises"), "FAILED", "a driver raising in adopt: the instance is FAILED")
T.like(last_msg("adopt-raises"), "could not be re%-adopted: .*boom in adopt.*stack traceback", "with the error and its traceback")
T.is(calls.release["adopt-raises"], 1, "and what it held is released")
T.wait_for(5, function() return status("was-destroying") == "TERMINATED" end)
T.is(status("was-destroying"), "TERMINATED", "a destroy in progress when riklet stopped is finished at start")
T.is(calls.destroy["was-destroying"], 1, "by the driver's destroy")
T.wait_for(5, function() local r = store.load("was-releasing") return r and r.released end)
T.is(calls.release["was-releasing"], 1, "an ended instance whose release was interrupted is released at start")
T.is(store.load("was-releasing").released, true, "and stored as released")
T.is(status("was-running"), "RUNNING", "a RUNNING record whose adoption works stays RUNNING")
T.is(statuses("was-running"), "RUNNING", "and is reported RUNNING with no transition")
T.is(status("policy-changed"), "RUNNING", "a running instance the admission policy now refuses keeps running")
-- the admission policy asked again (its sources changed since the records were written): a verdict
-- it gave again is kept in the record once the boot is over, so a plain restart does not ask again
local admission_fp = require("riklet.policy").fingerprint("admission")
T.wait_for(5, function() local r = store.load("was-running") return r and r.admitted_by end)
T.is(store.load("was-running").admitted_by, admission_fp, "a verdict given again at a re-adoption is stored in the record")
T.is(store.load("policy-changed").admitted_by, nil, "a refusal is not (the instance keeps running as it was admitted)")
T.wait_for(15, function() return status("gone") == "FAILED" and reported("gone") == "FAILED" end)
T.like(last_msg("gone"), "lost while riklet was not running: container main does not exist", "adopt says gone: FAILED lost")
T.is(calls.release.gone, 1, "and released")
T.is(status("flaky"), "RUNNING", "adopt failing without evidence that it is gone: still RUNNING")
T.wait_for(5, function() return calls.adopt.flaky == 2 and statuses("flaky") ~= "" end)
T.is(calls.adopt.flaky, 2, "adoption is tried again (after ~2 s)")
T.is(statuses("flaky") .. "/" .. status("flaky"), "RUNNING/RUNNING", "and then reported RUNNING, with no transition")
agent.create("policy-new", pod("refused-now"), "test")
T.wait_for(15, function() return status("policy-new") == "FAILED" and reported("policy-new") == "FAILED" end)
T.is(last_msg("policy-new"), "refused-now is not welcome", "while a new one is refused with the policy's reason")

-- the mailbox of the instance whose adoption raised still serves a destroy
agent.destroy("adopt-raises")
T.ok(agent.wait_gone("adopt-raises", 5), "adopt raised: a later destroy still works")
T.is(status("adopt-raises"), "TERMINATED", "and ends TERMINATED")

-- ---- create -----------------------------------------------------------------------------------
-- the phase times of a create that ends RUNNING are formatted only when they will be logged (at
-- debug): counted through string.format, which the line's formatting goes through
local phase_lines = 0
local function count_phase_lines(level)
  local format = string.format
  local was = core.log_enabled("debug") and "debug" or "info"
  core.log_setup(level, false)
  phase_lines = 0
  string.format = function(f, ...) -- luacheck: ignore 122
    if type(f) == "string" and f:find("start phases (ms)", 1, true) then phase_lines = phase_lines + 1 end
    return format(f, ...)
  end
  jit.flush()
  return function()
    string.format = format -- luacheck: ignore 122
    core.log_setup(was, false)
  end
end
local restore = count_phase_lines("info")
agent.create("good", pod("ok"), "test")
T.wait_for(5, function() return status("good") == "RUNNING" end)
restore()
T.is(statuses("good"), "CREATING RUNNING", "a good Pod: CREATING then RUNNING")
T.is(phase_lines, 0, "at log level info, its phase times are not formatted")
T.is(store.load("good").status, "RUNNING", "every transition is stored")

agent.create("c-raises", pod("raise-create"), "test")
T.wait_for(15, function() return status("c-raises") == "FAILED" and reported("c-raises") == "FAILED" end)
T.is(statuses("c-raises"), "CREATING FAILED", "a driver raising in create: CREATING then FAILED")
T.like(last_msg("c-raises"), "internal error in the create step: .*boom in create.*stack traceback", "with the traceback")
T.is(calls.destroy["c-raises"], 1, "and the creation is rolled back")
agent.destroy("c-raises")
T.ok(agent.wait_gone("c-raises", 5), "a later destroy still works")
T.is(statuses("c-raises"), "CREATING FAILED DESTROYING TERMINATED", "FAILED -> DESTROYING -> TERMINATED")

agent.create("c-fails", pod("fail-create"), "test")
T.wait_for(15, function() return status("c-fails") == "FAILED" and reported("c-fails") == "FAILED" end)
T.is(last_msg("c-fails"), "the image is not there", "a create that fails: FAILED with the driver's reason")

-- hostile input never reaches the driver
agent.create("bad-name", pod("../x"), "test")
T.wait_for(15, function() return status("bad-name") == "FAILED" and reported("bad-name") == "FAILED" end)
T.like(last_msg("bad-name"), "^name is \"../x\"", "a workload named ../x: FAILED naming the field")
local r1, e1 = agent.create("a\0b", pod("ok"), "test")
T.ok(r1 == nil and e1:find("not valid", 1, true), "an instance id with a NUL is refused: " .. tostring(e1))
agent.create("nul-def", pod("ok") .. "\0", "test")
T.wait_for(15, function() return status("nul-def") == "FAILED" and reported("nul-def") == "FAILED" end)
T.like(last_msg("nul-def"), "NUL", "a definition holding a NUL byte: FAILED")
T.is(fs.read(dir .. "/records/nul-def.definition"), "", "and what is stored is not the NUL-holding text")

-- ---- exits and restarts -----------------------------------------------------------------------
-- a release that frees part of what the instance held: the record says what was freed (the
-- lifecycle stores it after the step, failed or not; the driver does not save at its end)
agent.create("rel-partial", pod("release-partial"), "test")
T.wait_for(5, function() return status("rel-partial") == "RUNNING" end)
agent.post("rel-partial", { type = "exit", container = "main", code = 1, describe = "exited with code 1" })
-- (the FAILED transition stores released = false before the release runs: wait for the record the
-- release's step stored, which names what it freed; under load the check read the first one)
T.wait_for(5, function()
  local r = store.load("rel-partial") or {}
  return calls.release["rel-partial"] and r.released == false and r.containers and r.containers[1].state == "deleted"
end)
local rp = store.load("rel-partial") or {}
T.is(rp.status .. "/" .. tostring(rp.released) .. "/" .. tostring(rp.containers and rp.containers[1].state),
  "FAILED/false/deleted", "a release that failed half-way: stored FAILED, not released, with what it freed")
local t_rel = core.now() -- (its retry, ~1 s later, is checked below, after the restarts)

-- the record of an instance that ended cannot be written (a directory where its file goes: the
-- rename fails): written again, in the background, once it can be (checked below)
agent.create("rec-retry", pod("ok"), "test")
T.wait_for(5, function() return status("rec-retry") == "RUNNING" end)
local rec_path = dir .. "/records/rec-retry.json"
fs.unlink(rec_path)
assert(fs.mkdir_p(rec_path .. "/in-the-way", "0700"))
agent.post("rec-retry", { type = "exit", container = "main", code = 1, describe = "exited with code 1" })
T.wait_for(5, function() return reported("rec-retry") == "FAILED" and calls.release["rec-retry"] end)
T.ok(store.load("rec-retry") == nil, "an ended instance whose record cannot be written: FAILED in memory, not on disk")
fs.rm_rf(rec_path)
local t_rec = core.now()

agent.create("x-raises", pod("raise-exit"), "test")
T.wait_for(5, function() return status("x-raises") == "RUNNING" end)
agent.post("x-raises", { type = "exit", container = "main", code = 1, describe = "exited with code 1" })
T.wait_for(15, function() return status("x-raises") == "FAILED" and reported("x-raises") == "FAILED" end)
T.is(status("x-raises"), "FAILED", "a driver raising while handling an exit: FAILED")
T.like(last_msg("x-raises"), "internal error while handling exit: .*boom in exit.*stack traceback", "with the traceback")
agent.destroy("x-raises")
T.ok(agent.wait_gone("x-raises", 5), "its mailbox still serves a destroy")
T.is(status("x-raises"), "TERMINATED", "which ends TERMINATED")

agent.create("never", pod("ok"), "test")
T.wait_for(5, function() return status("never") == "RUNNING" end)
agent.post("never", { type = "exit", container = "main", code = 1, describe = "exited with code 1" })
T.wait_for(15, function() return status("never") == "FAILED" and reported("never") == "FAILED" end)
T.is(statuses("never"), "CREATING RUNNING FAILED", "restart policy Never (the default): a failure is FAILED")
T.is(calls.restart.never, nil, "and nothing is restarted")

agent.create("onfail", pod("ok", { restartPolicy = "OnFailure" }), "test")
T.wait_for(5, function() return status("onfail") == "RUNNING" end)
local function crash(id, code)
  agent.post(id, { type = "exit", container = "main", code = code, describe = "exited with code " .. code })
end
local tcrash = core.now()
crash("onfail", 1)
T.wait_for(5, function() return calls.restart.onfail and #calls.restart.onfail == 1 end, 0.05)
crash("onfail", 1)
T.wait_for(5, function() return calls.restart.onfail and #calls.restart.onfail == 2 end, 0.05)
-- the driver's restart is called before the restart is stored and reported (the store yields)
T.wait_for(5, function() return statuses("onfail") == "CREATING RUNNING RUNNING RUNNING RUNNING RUNNING" end, 0.05)
local rs = calls.restart.onfail or {}
T.ok(rs[1] and rs[1] - tcrash >= 0.9 and rs[1] - tcrash < 1.6, ("first restart after ~1 s (%.2f s)"):format((rs[1] or 0) - tcrash))
T.ok(rs[2] and rs[2] - rs[1] >= 1.9 and rs[2] - rs[1] < 2.8, ("second after ~2 s more (%.2f s)"):format((rs[2] or 0) - (rs[1] or 0)))
T.is(status("onfail"), "RUNNING", "OnFailure: still RUNNING after two failures")
T.like(last_msg("onfail"), "restarted", "the reported message says it restarted")
T.is(statuses("onfail"), "CREATING RUNNING RUNNING RUNNING RUNNING RUNNING", "restarts are reported (RUNNING with a message), not transitions")
crash("onfail", 0)
T.wait_for(5, function() return status("onfail") == "TERMINATED" end)
T.is(status("onfail"), "TERMINATED", "OnFailure: an exit 0 ends it TERMINATED")

-- the failed release is tried again (after ~1 s) while riklet runs, not only at its next start
T.wait_for(5, function() return (store.load("rel-partial") or {}).released == true end)
T.is(calls.release["rel-partial"], 2, ("a release that failed is tried again while riklet runs (seen %.1f s after)")
  :format(core.now() - t_rel))
T.is(tostring((store.load("rel-partial") or {}).released), "true", "and stored released once it succeeded")
T.wait_for(5, function() local r = store.load("rec-retry") return r and r.released == true end)
local rr = store.load("rec-retry") or {}
T.is(tostring(rr.status) .. "/" .. tostring(rr.released), "FAILED/true",
  ("the record that could not be written is on disk once it can be (seen %.1f s after)"):format(core.now() - t_rec))

-- a destroy during a back-off wait does not wait for the back-off
agent.create("always", pod("ok", { restartPolicy = "Always" }), "test")
T.wait_for(5, function() return status("always") == "RUNNING" end)
crash("always", 0)
T.wait_for(5, function() return calls.restart.always ~= nil end, 0.05)
crash("always", 0)
task.sleep(0.1)
-- what the lifecycle writes is what store.check accepts (or the next start would quarantine it)
local function loads(id, what)
  local r, why = store.load(id)
  T.ok(r ~= nil, ("the record of %s (%s) passes store.check: %s"):format(id, what, tostring(why)))
end
T.is(agent.get("always").containers[1].state, "waiting", "Always: the container waits for its restart")
loads("always", "mid-back-off")
local td = core.now()
agent.destroy("always")
T.ok(agent.wait_gone("always", 5), "Always: a destroy during the back-off wait")
T.ok(core.now() - td < 1, ("is served at once (%.2f s)"):format(core.now() - td))
task.sleep(2.5)
T.is(#(calls.restart.always or {}), 1, "and the pending restart never happens")

-- ---- bounded waits ----------------------------------------------------------------------------
agent.create("hang", pod("hang-destroy"), "test")
T.wait_for(5, function() return status("hang") == "RUNNING" end)
agent.destroy("hang")
T.wait_for(2, function() return status("hang") == "DESTROYING" end)
loads("hang", "DESTROYING")
local tw = core.now()
local gone, gerr = agent.wait_gone("hang", 10)
T.ok(not gone and core.now() - tw < 5, ("a destroy whose driver step hangs: wait_gone gives up (%.1f s): %s"):format(core.now() - tw, tostring(gerr)))
T.is(status("hang"), "FAILED", "the instance is FAILED")
T.like(last_msg("hang"), "could not clean up: destroy step did not finish within 1 s", "saying which step it gave up on")
local tw2 = core.now()
T.ok(not agent.wait_gone("hang", 0.5) and core.now() - tw2 < 1, "wait_gone with a timeout returns when it expires")
-- the failed clean-up is tried again ~1 s after it failed, and succeeds: then DESTROYING, TERMINATED
T.ok(agent.wait_gone("hang", 5), ("its destroy is tried again while riklet runs and succeeds (%.1f s after it failed)")
  :format(core.now() - tw))
T.is(statuses("hang"), "CREATING RUNNING DESTROYING FAILED DESTROYING TERMINATED", "DESTROYING FAILED DESTROYING TERMINATED")
T.like(seen.hang[5] and seen.hang[5].msg, "tried again, succeeded %(attempt 2%)", "the report says so")
T.is(calls.destroy.hang, 2, "by the driver's destroy, once more")

-- ---- the transition table ---------------------------------------------------------------------
local inst = agent.instance("onfail")
T.ok(not lifecycle.transition(inst, "RUNNING", "again"), "TERMINATED -> RUNNING is refused")
T.is(inst.rec.status, "TERMINATED", "and not stored in memory")
T.is(store.load("onfail").status, "TERMINATED", "nor on disk")
T.ok(not lifecycle.transition(inst, "CREATING"), "TERMINATED -> CREATING is refused")
local fake = { id = "fake", rec = { id = "fake", containers = {} } }
T.ok(not lifecycle.transition(fake, "RUNNING"), "new -> RUNNING is refused")
local allowed = { { nil, "CREATING" }, { "CREATING", "RUNNING" }, { "CREATING", "FAILED" }, { "CREATING", "DESTROYING" },
  { "RUNNING", "FAILED" }, { "RUNNING", "TERMINATED" }, { "RUNNING", "DESTROYING" }, { "FAILED", "DESTROYING" },
  { "DESTROYING", "TERMINATED" }, { "DESTROYING", "FAILED" }, { "TERMINATED", "DESTROYING" } }
local all_ok = true
for _, p in ipairs(allowed) do
  fake.rec.status = p[1]
  if not lifecycle.transition(fake, p[2]) or fake.rec.status ~= p[2] then
    all_ok = false T.diag(("%s -> %s refused"):format(tostring(p[1]), p[2]))
  end
end
T.ok(all_ok, "every transition of the documented machine is allowed")
for _, p in ipairs({ { "FAILED", "RUNNING" }, { "DESTROYING", "RUNNING" }, { "TERMINATED", "FAILED" }, { "FAILED", "TERMINATED" } }) do
  fake.rec.status = p[1]
  T.ok(not lifecycle.transition(fake, p[2]) and fake.rec.status == p[1], ("%s -> %s is refused"):format(p[1], p[2]))
end
store.remove("fake")

-- every record written (RUNNING, restarting, DESTROYING, ended, destroyed) passes store.check
local names = fs.list(dir .. "/records") or {}
local bad_recs = {}
for _, f in ipairs(names) do
  local id = f:match("^(.+)%.json$")
  if id and not store.load(id) then bad_recs[#bad_recs + 1] = id .. ": " .. select(2, store.load(id)) end
end
T.is(table.concat(bad_recs, "; "), "", "every record the lifecycle wrote passes store.check")
loads("onfail", "TERMINATED after restarts")
T.ok(not fs.exists(dir .. "/records/quarantine"), "and nothing was quarantined at start")

-- ---- --max-instances --------------------------------------------------------------------------
local n = 0
for _, v in ipairs(agent.list()) do if not v.gone and not lifecycle.ENDED[v.status] then n = n + 1 end end
for i = n + 1, cfg.max_instances do agent.create("fill" .. i, pod("ok"), "test") end
local ok_max, err_max = agent.create("one-too-many", pod("ok"), "test")
T.ok(ok_max == nil and err_max:find("--max-instances 8", 1, true), "a create beyond --max-instances is refused: " .. tostring(err_max))
T.like(last_msg("one-too-many"), "maximum", "and reported FAILED with the reason")

-- a held id (its record quarantined: what it names is kept) counts as an instance of the node
T.wait_for(10, function()
  for i = n + 1, cfg.max_instances do if status("fill" .. i) ~= "RUNNING" then return false end end
  return true
end)
assert(fs.write_atomic(dir .. "/records/tampered.json", "[]"))
local _, held_bad = store.list({ quarantine = true })
T.ok(store.held("tampered") and #held_bad == 1, "a tampered record is quarantined and its id held")
agent.destroy("fill" .. cfg.max_instances)
T.wait_for(10, function() return agent.get("fill" .. cfg.max_instances) == nil
  or lifecycle.ENDED[status("fill" .. cfg.max_instances)] end)
ok_max, err_max = agent.create("one-too-many", pod("ok"), "test")
T.ok(ok_max == nil and err_max:find("8 instances", 1, true) and err_max:find("1 of them held", 1, true),
  "with 7 running and 1 held id, a create is still refused, saying so: " .. tostring(err_max))
agent.destroy("fill" .. (cfg.max_instances - 1))
T.wait_for(10, function() return agent.get("fill" .. (cfg.max_instances - 1)) == nil
  or lifecycle.ENDED[status("fill" .. (cfg.max_instances - 1))] end)
restore = count_phase_lines("debug")
T.ok(agent.create("one-more", pod("ok"), "test"), "with 6 running and 1 held, one more is created")
T.wait_for(5, function() return status("one-more") == "RUNNING" end)
restore()
T.is(status("one-more"), "RUNNING", "and runs")
T.is(phase_lines, 1, "at log level debug, its phase times are formatted (and logged) once")

fs.rm_rf(dir)
T.done()
