-- The store: definitions stored as they arrived, size checks on writing, records validated like
-- input (tampered ones quarantined and their ids held), fs.read refusing what is not a regular file.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local json = require "riklet.json"
local proc = require "riklet.proc"
local store = require "riklet.store"

local tmp = assert(proc.run({ "mktemp", "-d", "/tmp/riklet-store-test.XXXXXX" })).stdout:gsub("%s+$", "")
local state = tmp .. "/state"
local rdir = state .. "/records"
local idir = state .. "/instances"
assert(store.open(rdir, { write = true }))

local function write(name, data) assert(fs.write_atomic(rdir .. "/" .. name, data, "0600")) end
local function rec_of(id, extra)
  local r = { id = id, status = "RUNNING", created_at = 1, source = "test", kind = "Pod", name = id,
    dir = idir .. "/" .. id, containers = { { name = "c", runc_id = id .. "_c", dir = idir .. "/" .. id .. "/c",
      log = idir .. "/" .. id .. "/c/output.log", state = "running", pid = 42 } },
    network = { enabled = true, kind = "Pod", netns = "/run/riklet/netns/" .. id, ip = "10.89.0.2",
      address = "10.89.0.2/16", gateway = "10.89.0.1", host_if = "rkv0123abcd", ports = { "tcp/8080" } } }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- ---- fs.read: regular files only, never a wait -----------------------------------------------
assert(proc.run({ "mkfifo", tmp .. "/fifo" }))
assert(proc.run({ "ln", "-s", "/dev/zero", tmp .. "/zero" }))
assert(fs.mkdir_p(tmp .. "/dir.json"))
assert(proc.run({ "truncate", "-s", "100M", tmp .. "/big" }))
local _, err = fs.read(tmp .. "/fifo", 1024)
T.like(err, "is a FIFO", "fs.read refuses a FIFO at once instead of blocking in open()")
_, err = fs.read(tmp .. "/zero", 1024)
T.like(err, "is a symbolic link", "fs.read refuses a symbolic link (to /dev/zero)")
_, err = fs.read(tmp .. "/zero", 1024, { follow = true })
T.like(err, "is a character device", "fs.read{follow=true} follows it, and refuses the device")
_, err = fs.read(tmp .. "/dir.json", 1024)
T.like(err, "is a directory", "fs.read refuses a directory")
_, err = fs.read(tmp .. "/big", 1024 * 1024)
T.like(err, "larger than 1048576 bytes %(104857600 bytes%)", "fs.read refuses a 100 MB file from its size, unread")

-- ---- the definition as it arrived ------------------------------------------------------------
local weird = '{"kind":"Pod","name":"x","pad":"' .. ("\1\2\31\127é"):rep(1000) .. '"}'
local r = rec_of("a", { definition = weird })
T.ok(store.save(r), "a record is saved")
T.is(fs.read(rdir .. "/a.definition"), weird, "the definition is stored byte for byte as it arrived")
local raw = fs.read(rdir .. "/a.json")
T.ok(not raw:find("pad", 1, true), "the record does not carry the definition")
T.is(json.decode(raw).definition_size, #weird, "the record names the definition's size")
local back = store.load("a", { definition = true })
T.is(back and back.definition, weird, "load gives the definition back")
T.ok(store.same_definition(back, weird), "same_definition: equal")
store.forget_definition(back)
T.is(back.definition, nil, "forget_definition drops it from memory")
T.ok(store.same_definition(back, weird), "same_definition still answers from the stored file once forgotten")
T.ok(not store.same_definition(back, weird:sub(1, -2) .. " "), "same_definition: a different definition of the same size")
-- saved_only (a running instance's): dropped once on disk, kept while its write failed
local run = rec_of("run1", { definition = '{"kind":"Pod","name":"run1"}' })
store.forget_definition(run, true)
T.is(run.definition, '{"kind":"Pod","name":"run1"}', "forget_definition(rec, true) keeps a definition not yet written")
T.ok(store.save(run), "saved")
store.forget_definition(run, true)
T.is(run.definition, nil, "forget_definition(rec, true) drops it once it is on disk")
T.ok(store.save(run) and store.same_definition(run, '{"kind":"Pod","name":"run1"}'),
  "a later save keeps the stored definition (same_definition reads it back)")
local run2 = store.load("run1", { definition = true })
T.is(run2 and run2.definition, '{"kind":"Pod","name":"run1"}', "and the next start loads it")
assert(store.remove("run1"))

-- ---- size checks on writing --------------------------------------------------------------------
local big = rec_of("b", { definition = ("x"):rep(store.DEFINITION_MAX + 1) })
local bok, berr = store.save(big)
T.ok(not bok and not fs.exists(rdir .. "/b.definition") and not fs.exists(rdir .. "/b.json"),
  "a definition over the cap (agent.create stores those as \"\") is refused, nothing written")
T.like(berr, "over the 1048576 allowed", "with a clear error")
local huge = rec_of("c", { source = ("s"):rep(store.RECORD_MAX) })
local ok
ok, err = store.save(huge)
T.ok(not ok and not fs.exists(rdir .. "/c.json"), "a record over the read cap is refused, not written")
T.like(err, "more than the 4194304 riklet reads back", "with a clear error")
local long = rec_of("d", { reason = ("r"):rep(100000), definition = "{}" })
T.ok(store.save(long) and #long.reason <= store.REASON_MAX, "a long reason is cut to REASON_MAX")

-- ---- validation ----------------------------------------------------------------------------------
local function bad(id, r2, pattern, what)
  local okc, why = store.check(r2, id)
  T.ok(not okc, what)
  T.like(why, pattern, what .. ": " .. tostring(why))
end
T.ok(store.check(rec_of("a"), "a"), "a record riklet writes passes")
bad("a", json.decode("[]"), "array", "[] is not a record")
bad("a", json.decode("{}"), "no id", "{} is not a record")
bad("a", rec_of("b"), 'id "b" is not the instance its file names', "an id that is not the file name")
bad("a", rec_of("a", { dir = "/tmp/victim" }), "not the instance's directory", "dir outside the state dir")
bad("a", rec_of("a", { status = "PWNED" }), "status", "an unknown status")
bad("a", rec_of("a", { created_at = "yesterday" }), "created_at", "a string where a time is expected")
bad("a", rec_of("a", { network = json.null }), "network", "null where an object is expected")
bad("a", rec_of("a", { definition = "not json", definition_size = 99999999 }), "definition_size says 99999999",
  "an inline definition (older records) whose size the record contradicts")
local t = rec_of("a")
t.containers[1].runc_id = "other_c"
bad("a", t, "runc_id \"other_c\" is not the runc id", "a runc id of another instance")
t = rec_of("a")
t.containers[1].dir = idir .. "/a/../../../etc"
bad("a", t, "is not the container's directory", "a container dir escaping with ..")
t = rec_of("a")
t.containers[1].dir = idir .. "/a/d"
bad("a", t, "is not the container's directory", "another container's directory")
t = rec_of("a")
t.containers[1].log = "/etc/shadow"
bad("a", t, "log", "a container log outside the instance")
t = rec_of("a")
t.containers[1].name = "c\0x"
bad("a", t, "name", "a container name with a NUL")
t = rec_of("a")
t.containers[1].pid = "1; kill"
bad("a", t, "pid", "a pid that is not a number")
t = rec_of("a")
t.containers[2] = t.containers[1]
bad("a", t, "twice", "a container listed twice")
t = rec_of("a")
t.network.host_if = "eth0"
bad("a", t, "host_if", "a link riklet does not name (eth0)")
t = rec_of("a")
t.network.netns = "/run/netns/other"
bad("a", t, "netns", "a network namespace not named after the instance")

-- ---- quarantine at boot ----------------------------------------------------------------------
assert(fs.mkdir_p(tmp .. "/victim"))
write("victim.json", json.encode(rec_of("victim", { dir = tmp .. "/victim" })))
write("array.json", "[]")
write("empty.json", "{}")
write("trunc.json", json.encode(rec_of("trunc")):sub(1, 100))
write("five.json", '{"id":"five","status":"RUNNING","pad":"' .. ("x"):rep(5 * 1024 * 1024) .. '"}')
write("nodef.json", json.encode(rec_of("nodef", { definition_size = 10 })))
write("short.json", json.encode(rec_of("short", { definition_size = 10 })))
write("short.definition", "123")
write("ended.json", json.encode(rec_of("ended", { status = "FAILED", definition_size = 10, definition_error = "written by an older riklet" })))
write("orphan.definition", "{}")
assert(proc.run({ "mkfifo", rdir .. "/fifo.json" }))
local recs, badl = store.list({ quarantine = true, definitions = true })
local got = {}
for _, x in ipairs(recs) do got[#got + 1] = x.id end
table.sort(got)
T.is(table.concat(got, " "), "a d ended", "the usable records are listed (an ended one needs no definition)")
local held = store.held_ids()
T.is(table.concat(held, " "), "array empty fifo five nodef short trunc victim", "every unusable record's id is held")
T.is(#badl, 8, "and reported")
for _, id in ipairs(held) do
  T.ok(fs.exists(rdir .. "/quarantine/" .. id .. ".json") and not fs.exists(rdir .. "/" .. id .. ".json"),
    id .. ": moved to records/quarantine/")
end
T.like(store.held("five"), "larger than 4194304", "the reason of a 5 MB record")
T.like(store.held("nodef"), "definition cannot be read", "the reason of a RUNNING record without its definition")
T.like(store.held("short"), "is 3 bytes, but the record says 10", "the reason of a definition of the wrong size")
T.ok(fs.exists(rdir .. "/quarantine/short.definition"), "a quarantined record's definition goes with it")
T.ok(fs.exists(tmp .. "/victim"), "the directory a tampered record names is untouched")
T.ok(not fs.exists(rdir .. "/orphan.definition"), "a definition no record names is removed")

-- the next boot: the quarantined ids are still held, with their reason
write("victim.json", "{not json")
_, badl = store.list({ quarantine = true })
T.ok(fs.exists(rdir .. "/quarantine/victim.json.1"), "a second bad record of one id is kept beside the first")
T.like(store.held("array"), "array.*quarantine/array.json", "held again from the quarantine, with the reason")
local ids = {}
for _, b in ipairs(badl) do ids[b.id] = (ids[b.id] or 0) + 1 end
T.is(ids.victim, 1, "one entry per id")

-- ps (no quarantine): nothing moves
write("late.json", "[]")
store.list()
T.ok(fs.exists(rdir .. "/late.json"), "store.list() without quarantine moves nothing (riklet ps)")

-- a read failing for want of an fd (or of memory) says nothing about the record: nothing is moved
-- aside, the listing fails (the start says why)
write("busy.json", json.encode(rec_of("busy")))
local fd_read = fs.read
fs.read = function(p, ...)
  if p:find("/busy.json", 1, true) then return nil, "cannot open " .. p .. ": Too many open files" end
  return fd_read(p, ...)
end
local r2, e2 = store.list({ quarantine = true, definitions = true })
fs.read = fd_read
T.is(r2, nil, "a record unreadable for want of an fd: the listing fails")
T.like(e2, "Too many open files.*busy%.json.*no record was moved aside", "... saying why, and that nothing moved")
T.ok(fs.exists(rdir .. "/busy.json") and not fs.exists(rdir .. "/quarantine/busy.json") and not store.held("busy"),
  "... the record stays in place, its id not held")
T.ok(store.transient("cannot open x: Cannot allocate memory") and not store.transient("the record is not valid JSON"),
  "out of memory is transient too; a bad record is not")
fs.unlink(rdir .. "/busy.json")

-- ---- a reader's store (riklet ps, top, logs, images) changes nothing ---------------------------
-- even a temp file that looks left by a killed riklet stays: the agent alone removes those (a
-- reader in another pid namespace would take a live agent's write for a dead one)
local dead = proc.spawn({ "true" })
local dead_pid = dead.pid
dead:wait()
write("late.json.3.tmp." .. dead_pid, "{}")
local function snapshot(d)
  local names = assert(fs.list(d))
  table.sort(names)
  local out = {}
  for _, n in ipairs(names) do
    local st = fs.stat(d .. "/" .. n)
    out[#out + 1] = n .. " " .. st.type .. " " .. (st.type == "file" and assert(fs.read(d .. "/" .. n, 1e7)) or "")
  end
  return table.concat(out, "\n")
end
local before = snapshot(rdir)
assert(store.open(rdir))
local all = store.list()
T.ok(#all > 0, "a read-only store lists the records")
T.ok(store.load("late") == nil and store.load(all[1].id) ~= nil, "and loads them")
local sok, serr = store.save(all[1])
T.ok(not sok and serr:find("opened read-only", 1, true), "save refuses on a read-only store: " .. tostring(serr))
sok, serr = store.remove(all[1].id)
T.ok(not sok and serr:find("opened read-only", 1, true), "remove refuses too: " .. tostring(serr))
sok, serr = store.list({ quarantine = true })
T.ok(not sok and serr:find("opened read-only", 1, true), "and moving records to quarantine: " .. tostring(serr))
T.is(snapshot(rdir), before, "the records directory is exactly as it was, the stale-looking temp file included")
-- a record removed between the listing and its read (the agent forgot an ended instance as ps
-- read): it is gone, not a bad record (ps would show it UNKNOWN, "cannot be read")
assert(fs.write_atomic(rdir .. "/gone.json", json.encode(rec_of("gone")), "0600"))
local real_read = fs.read
fs.read = function(p, ...)
  if p == rdir .. "/gone.json" then os.remove(p) end
  return real_read(p, ...)
end
local listed, badv = store.list()
fs.read = real_read
local seen_gone = false
for _, lr in ipairs(listed) do seen_gone = seen_gone or lr.id == "gone" end
for _, b in ipairs(badv) do seen_gone = seen_gone or b.id == "gone" end
T.ok(not seen_gone, "a record removed between the listing and its read is simply not listed (not UNKNOWN)")
assert(store.open(tmp .. "/nothing/records"))
T.ok(not fs.exists(tmp .. "/nothing"), "opening a store read-only creates no directory")
assert(store.open(rdir, { write = true }))
T.ok(not fs.exists(rdir .. "/late.json.3.tmp." .. dead_pid), "the agent's open removes the dead process's temp file")

proc.run({ "rm", "-rf", tmp })

-- ---- network.json entries are input too -------------------------------------------------------
local netctl = require "riklet.netctl"
T.is(netctl.bad_entry("a", { kind = "Pod", ip = "10.89.0.2", prefix = 16, host_if = "rkv0123abcd",
  rules = { { chain = "RIKLET", comment = "riklet:a" } } }), nil, "network state: an entry riklet writes is used")
T.like(netctl.bad_entry("a", { kind = "Pod", ip = "10.89.0.2", host_if = "eth0" }), "host_if",
  "network state: an entry naming a link riklet does not make (eth0) is ignored")
T.like(netctl.bad_entry("a", { kind = "Pod", ip = "10.89.0.2; x" }), "address", "network state: a bad address")
T.like(netctl.bad_entry("../a", { kind = "Pod" }), "instance id", "network state: an id with ../")
T.like(netctl.bad_entry("a", { kind = "Pod", rules = { { comment = "riklet:b" } } }), "rule",
  "network state: a rule of another instance")

-- ---- network.json writes coalesce during a burst (netctl's save) --------------------------------
-- README, Event loop: during a burst the writes are coalesced, none waits more than 0.5 s, one Pod
-- on a quiet node is written at once, every save returns the result of a write holding its change,
-- a durable save is fsynced. Writes are counted (and their sync option seen) at fs.write_atomic.
do
  local task, core = require "riklet.task", require "riklet.core"
  local ntmp = assert(proc.run({ "mktemp", "-d", "/tmp/riklet-netsave-test.XXXXXX" })).stdout:gsub("%s+$", "")
  local file = ntmp .. "/network.json"
  local real, writes, during = fs.write_atomic, {}, nil -- during: run in a task while the next write is in flight
  fs.write_atomic = function(path, data, mode, opts)
    if path == file then writes[#writes + 1] = { durable = not (opts and opts.sync == false) } end
    if path == file and during then task.spawn(during) during = nil end
    return real(path, data, mode, opts)
  end
  local function on_disk() return json.decode(assert(fs.read(file))).instances end
  -- (1) a quiet node: written at once
  local t0 = core.now()
  local qok, qerr = netctl._save_for_test(ntmp, false)
  local dt = core.now() - t0
  T.ok(qok and dt < 0.05, ("a save on a quiet node is written at once (%.3f s, %s)"):format(dt, tostring(qerr)))
  -- a state whose encoding takes a few ms, so the linger (50 times that) is long enough to see
  local S = netctl.state()
  for i = 1, 3000 do S.instances["p" .. i] = { kind = "Pod", ip = "10.89." .. math.floor(i / 250) .. "." .. (i % 250),
    prefix = 16, host_if = ("rkv%08x"):format(i), ports = {} } end
  for _ = 1, 5 do assert(netctl._save_for_test(ntmp, false)) end -- 5 writes in 5 s: a burst
  -- (2) a burst from separate tasks: each changes its entry, saves, and sees its change on disk
  writes = {}
  local n, done, failed, slowest = 8, 0, {}, 0
  for i = 1, n do
    task.spawn(function()
      task.sleep(0.01 * i)
      S.instances["b" .. i] = { kind = "Pod", ip = "10.89.200." .. i, prefix = 16 }
      local s0 = core.now()
      local wok, werr = netctl._save_for_test(ntmp, false)
      slowest = math.max(slowest, core.now() - s0)
      if not wok then failed[#failed + 1] = i .. ": " .. tostring(werr)
      elseif not on_disk()["b" .. i] then failed[#failed + 1] = i .. ": returned before a write holding its change" end
      done = done + 1
    end)
  end
  T.wait_for(5, function() return done == n end, 0.01)
  T.is(table.concat(failed, "; "), "", "every save of the burst returns ok after a write holding its change")
  local final, lost = on_disk(), {}
  for i = 1, n do if not final["b" .. i] then lost[#lost + 1] = i end end
  T.is(table.concat(lost, ","), "", "network.json holds every task's change")
  T.ok(#writes <= n / 2, ("%d saves in a burst: %d writes"):format(n, #writes))
  T.ok(slowest < 0.5 + 0.3, ("no save waits more than LINGER_MAX and a write (%.3f s)"):format(slowest))
  -- (2b) a save asked while a write is in flight (its change not in it) waits for the next write
  writes, done = {}, 0
  local late
  during = function()
    S.instances.late = { kind = "Pod", ip = "10.89.201.1", prefix = 16 }
    local lok, lerr = netctl._save_for_test(ntmp, false)
    late = lok and (on_disk().late and "written" or "returned before a write holding its change") or tostring(lerr)
    done = done + 1
  end
  task.spawn(function() netctl._save_for_test(ntmp, false) done = done + 1 end)
  T.wait_for(2, function() return done == 2 end, 0.01)
  T.is(late, "written", "a save behind a write in flight returns after the next write, which holds its change")
  T.is(#writes, 2, "and that is one more write")
  -- (3) a non-durable save lingering, a durable one joining it: the write is fsynced
  -- (a write just before, so that the burst's linger window is open whatever the machine did
  -- since (2b); the joiner is spawned in the same turn, while the first one lingers)
  netctl._save_for_test(ntmp, false)
  writes, done = {}, 0
  task.spawn(function() netctl._save_for_test(ntmp, false) done = done + 1 end)
  task.spawn(function() netctl._save_for_test(ntmp, true) done = done + 1 end)
  T.wait_for(2, function() return done == 2 end, 0.01)
  T.ok(#writes == 1 and writes[1].durable, ("a durable save joining a lingering one: one write, fsynced (%d writes, durable %s)")
    :format(#writes, tostring(writes[1] and writes[1].durable)))
  -- (4) the write fails (network.json is a directory): every joined save gets the error; then it works
  assert(proc.run({ "sh", "-c", 'rm -f "$1" && mkdir "$1"', "sh", file }))
  local errs, fails = {}, 0
  done = 0
  for i = 1, 4 do
    task.spawn(function()
      task.sleep(0.003 * i)
      local eok, eerr = netctl._save_for_test(ntmp, false)
      if not eok and tostring(eerr):find("saving the network state") then fails = fails + 1 end
      errs[#errs + 1] = tostring(eerr)
      done = done + 1
    end)
  end
  T.wait_for(2, function() return done == 4 end, 0.01)
  T.is(fails, 4, "a failed write reaches every save that joined it as nil, err (" .. table.concat(errs, " | ") .. ")")
  assert(proc.run({ "rmdir", file }))
  qok, qerr = netctl._save_for_test(ntmp, false)
  T.ok(qok and on_disk()["b1"], "the next save after the fix writes: " .. tostring(qerr))
  fs.write_atomic = real
  proc.run({ "rm", "-rf", ntmp })
end
