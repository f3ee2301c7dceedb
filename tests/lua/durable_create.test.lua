-- The CREATING record is written at once and made durable beside the create (store.sync on the
-- worker pool): CREATING is reported only once it is on disk, a driver with create_waits_durable
-- waits for it before anything that outlives a crash (lifecycle.wait_durable), a later transition
-- is never reported before it, and a sync that fails fails the create with the reason. The agent,
-- lifecycle and store are the real ones over a real directory; the driver is a small one.
local T = require "riklet.testlib"
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local json = require "riklet.json"
local store = require "riklet.store"
local lifecycle = require "riklet.lifecycle"
local agent = require "riklet.agent"

local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir .. "/records", "0700"))

-- fs.sync: each path fsync'd, a missing one named in the error
assert(fs.write_atomic(dir .. "/f", "x", "0600", { sync = false }))
T.is(fs.sync(dir .. "/f", dir), true, "fs.sync of a file and its directory")
local ok, err = fs.sync(dir .. "/f", dir .. "/missing", dir)
T.is(ok, nil, "fs.sync of a missing file fails")
T.like(tostring(err), "cannot sync .*/missing to disk: No such file", "and says which and why")

local function pod(name)
  return assert(json.encode({ apiVersion = "v1", kind = "Pod", name = name,
    spec = { containers = { { name = "main", image = "busybox:latest" } } } }))
end

-- store.sync is slowed (and made to fail for one instance) to see what waits for it
local real_sync, sync_done = store.sync, {}
store.sync = function(rec)
  task.sleep(0.3)
  if rec.name == "sync-fails" or rec.id == "sync-fails" then return nil, "fsync: Input/output error" end
  local r, e = real_sync(rec)
  sync_done[rec.id] = core.now()
  return r, e
end

local seen, at = {}, {}
local created = {}
lifecycle.register("Pod", {
  create_waits_durable = true,
  create = function(inst, w)
    local c = { started = core.now() }
    created[inst.id] = c
    -- what the driver does before a container exists runs beside the sync
    c.reported_before_wait = seen[inst.id] ~= nil
    local wok, werr = lifecycle.wait_durable(inst)
    c.waited = core.now()
    if not wok then return nil, werr end
    c.on_disk = store.load(inst.id).status
    c.reported_after_wait = seen[inst.id]
    inst.rec.containers = { { name = "main", state = "running", started_at = core.time() } }
    if w.name == "fail-create" then return nil, "the image is not there" end
    return true
  end,
  destroy = function() return true end,
  release = function() return true end,
  adopt = function() return true end,
  restart = function() return true end,
  on_exit = function() return "TERMINATED", "" end,
})
agent.subscribe(function(id, status)
  seen[id] = (seen[id] and seen[id] .. " " or "") .. status
  at[id .. "/" .. status] = core.now()
end)

assert(agent.init({ paths = { records = dir .. "/records" }, keep_records = 100, stop_grace = 1, pull_timeout = 5,
  max_instances = 8 }))

assert(agent.create("ok", pod("ok"), "test"))
assert(agent.create("fail-create", pod("fail-create"), "test"))
assert(agent.create("sync-fails", pod("sync-fails"), "test"))
T.wait_for(10, function() return agent.get("ok").status == "RUNNING" and seen["ok"] == "CREATING RUNNING" end)
T.wait_for(10, function() return seen["fail-create"] == "CREATING FAILED" and seen["sync-fails"] == "CREATING FAILED" end)

local c = created.ok
T.ok(c and c.started < sync_done.ok, "the driver's create starts while the CREATING record is being made durable")
T.is(c.reported_before_wait, false, "CREATING is not reported before it is on disk")
T.ok(c.waited >= sync_done.ok, "lifecycle.wait_durable returns once it is on disk")
T.is(c.reported_after_wait, "CREATING", "and CREATING was reported by then")
T.is(c.on_disk, "CREATING", "the record on disk says CREATING")
T.ok(at["ok/CREATING"] >= sync_done.ok, "CREATING reported after the sync")
T.is(seen.ok, "CREATING RUNNING", "then RUNNING, in that order")
T.is(store.load("ok").status, "RUNNING", "RUNNING stored")

T.is(seen["fail-create"], "CREATING FAILED", "a failed create: CREATING reported before FAILED")
T.is(agent.get("fail-create").message, "the image is not there", "with the driver's reason")

T.is(agent.get("sync-fails").status, "FAILED", "a CREATING record that cannot be made durable fails the create")
T.like(agent.get("sync-fails").message, "cannot store its record: fsync: Input/output error", "saying why")
T.is(created["sync-fails"].on_disk, nil, "and the driver made nothing after its wait")

-- an admission refusal (before any driver) is reported after CREATING too
assert(agent.create("bad", "{not json", "test"))
T.wait_for(10, function() return seen.bad == "CREATING FAILED" end)
T.is(seen.bad, "CREATING FAILED", "an invalid definition: CREATING then FAILED, in that order")

store.sync = real_sync
fs.rm_rf(dir)
