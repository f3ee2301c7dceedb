-- The loop, tasks, processes, JSON and fs bindings, exercised for real inside the binary.
local T = require "riklet.testlib"
local task = require "riklet.task"
local proc = require "riklet.proc"
local json = require "riklet.json"
local fs = require "riklet.fs"
local core = require "riklet.core"

-- sleep really waits, and timers fire in order
local t0 = core.now()
task.sleep(0.05)
T.ok(core.now() - t0 >= 0.045, "sleep(0.05) waited at least 45 ms")

local order = {}
task.spawn(function() task.sleep(0.03) order[#order + 1] = "b" end)
task.spawn(function() task.sleep(0.01) order[#order + 1] = "a" end)
task.sleep(0.06)
T.is(table.concat(order), "ab", "timers fire in due order")

-- queues: put before get, get before put, timeout, and a value is never lost to a timeout
local q = task.queue()
q:put(1)
T.is(q:get(), 1, "get returns an item put before")
task.spawn(function() task.sleep(0.01) q:put("late") end)
T.is(q:get(1), "late", "get waits for a put")
local v, err = q:get(0.02)
T.ok(v == nil and err == "timeout", "get times out with 'timeout'")
task.spawn(function() q:put("x") end)
T.is(q:get(0), "x", "a put from a task spawned before a zero timeout is seen")

-- proc.run captures output, exit code, signals, input, timeouts
local r = assert(proc.run({ "sh", "-c", "echo out; echo err >&2; exit 3" }))
T.is(r.stdout, "out\n", "stdout captured")
T.is(r.stderr, "err\n", "stderr captured")
T.is(r.code, 3, "exit code reported")
r = assert(proc.run({ "cat" }, { input = "hello" }))
T.is(r.stdout, "hello", "input is written to stdin")
r = assert(proc.run({ "sleep", "5" }, { timeout = 0.2 }))
T.ok(r.timed_out and r.signal == 9 and r.code == nil, "timeout kills with SIGKILL")
local none, nerr = proc.run({ "/nonexistent/binary" })
T.ok(none == nil and nerr:find("cannot run /nonexistent/binary"), "missing binary: clear error: " .. tostring(nerr))

-- two runs in parallel take the time of one
t0 = core.now()
local done = task.queue()
for _ = 1, 2 do task.spawn(function() proc.run({ "sleep", "0.3" }) done:put(true) end) end
done:get(5) done:get(5)
T.ok(core.now() - t0 < 0.55, ("two 0.3 s processes ran concurrently (%.2f s)"):format(core.now() - t0))

-- spawn + wait + kill
local p = assert(proc.spawn({ "sleep", "10" }))
T.ok(p.pid > 0 and proc.alive(p.pid), "spawned process is alive")
p:kill(15)
local code, sig = p:wait()
T.ok(code == nil and sig == 15, "wait reports the killing signal")

-- proc.watch on a process that is not our child (pidfd): spawn via a shell that exits at once
local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir))
r = assert(proc.run({ "sh", "-c", "setsid sleep 0.3 >/dev/null 2>&1 & echo $!" }))
local orphan = tonumber(r.stdout)
T.ok(orphan and proc.alive(orphan), "orphan started: " .. tostring(orphan))
t0 = core.now()
proc.watch(orphan)
T.ok(core.now() - t0 > 0.1 and not proc.alive(orphan), "watch returns when the orphan exits")

-- json round trip, null, empty arrays and objects, errors
local doc = json.decode('{"a":[1,2,{"b":null}],"e":[],"o":{},"s":"x\\u00e9"}')
T.ok(doc.a[3].b == json.null, "null decodes to json.null")
T.is(json.encode(doc.e), "[]", "empty array round-trips")
T.is(json.encode(doc.o), "{}", "empty object round-trips")
local bad, berr = json.decode('{"a":')
T.ok(bad == nil and berr:find("invalid JSON"), "invalid JSON gives a message: " .. tostring(berr))
T.ok(json.decode(string.rep("[", 300) .. string.rep("]", 300)) == nil, "deep nesting refused")

-- fs
local f = dir .. "/rec.json"
assert(fs.write_atomic(f, "one"))
T.is(fs.read(f), "one", "write_atomic then read")
T.ok(fs.safe_name("abc-1.2_x") and not fs.safe_name("../x") and not fs.safe_name("..")
  and not fs.safe_name(("a"):rep(200)) and not fs.safe_name("a b") and not fs.safe_name("a;rm"),
  "safe_name accepts plain names and refuses hostile ones")
-- a reader follows a growing file and keeps reading it after it is unlinked
local lf = dir .. "/follow.log"
assert(fs.append(lf, "one\n"))
local rd = assert(fs.open_read(lf))
T.is(rd:read(), "one\n", "reader reads what is there")
T.is(rd:read(), "", "reader gives \"\" at the end of the file")
assert(fs.append(lf, "two\n"))
T.is(rd:read(2), "tw", "reader reads what was appended since, at most max bytes")
assert(fs.append(lf, "three\n"))
fs.unlink(lf)
T.is(rd:read(), "o\nthree\n", "reader still reads after the file is unlinked")
rd:close() rd:close()
T.ok(not pcall(rd.read, rd), "reading a closed reader raises")
local nr, oerr = fs.open_read(dir .. "/missing")
T.ok(nr == nil and oerr:find("cannot open", 1, true), "open_read of a missing file: nil, err")
local w = assert(fs.watch_dir(dir))
task.spawn(function() task.sleep(0.02) fs.write_atomic(dir .. "/new.json", "{}") fs.unlink(f) end)
local seen = {}
local deadline = core.now() + 2
while core.now() < deadline and not (seen["written:new.json"] and seen["removed:rec.json"]) do
  for _, ev in ipairs(w:read()) do seen[ev.kind .. ":" .. ev.name] = true end
end
T.ok(seen["written:new.json"], "dir watch sees a new file")
T.ok(seen["removed:rec.json"], "dir watch sees a removed file")
w:close()
assert(fs.rm_rf(dir))
T.ok(not fs.exists(dir), "rm_rf removed the directory")
