-- riklet.crilog (hostile): a container writing one 10 MB line, or a line that never ends. conmon
-- cuts it into 8 KiB parts (P) and ends it with F; a follower (riklet logs --follow, interLink
-- Follow, riklet run) and a reader (interLink getLogs) must not hold the whole line: what one
-- holds stays about a chunk, whatever the line's length, and the bytes come out in order and whole.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local core = require "riklet.core"
local crilog = require "riklet.crilog"

local tmp = ("/tmp/riklet-crilog-longline-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

local TS = "2026-11-29T15:30:29.074872445+00:00"
local PART = 8192 -- conmon's STDIO_BUF_SIZE: what one P record holds at most
local LINE = 10 * 1024 * 1024

-- the i-th part of the long line: its bytes tell where they belong
local function part(i)
  local tag = ("<%08d>"):format(i)
  return (tag .. ("x"):rep(PART - #tag))
end
local NPARTS = LINE / PART

local function write_log(path, parts, ended)
  local h = assert(io.open(path, "wb"))
  h:write(TS, " stdout F before\n")
  for i = 1, parts do h:write(TS, " stdout P ", part(i), "\n") end
  if ended then h:write(TS, " stdout F end\n", TS, " stdout F after\n") end
  h:close()
end

local function heap() return collectgarbage("count") * 1024 end

-- consume entries, checking the long line's bytes in order without keeping them
local function checker()
  local c = { texts = {}, next_part = 1, bad = nil, biggest = 0, pieces = 0, cur = nil }
  function c.take(e)
    c.biggest = math.max(c.biggest, #e.text)
    if c.cur then
      -- inside the long line: its pieces go on until one that is not cut
      c.pieces = c.pieces + 1
      local s = c.cur .. e.text
      local used = 0
      while #s - used >= PART do
        local want = part(c.next_part)
        if s:sub(used + 1, used + PART) ~= want then
          c.bad = c.bad or ("part %d differs"):format(c.next_part)
        end
        c.next_part, used = c.next_part + 1, used + PART
      end
      c.cur = s:sub(used + 1)
      if not e.cut then
        c.texts[#c.texts + 1] = "LONG+" .. c.cur
        c.cur = nil
      end
      return
    end
    if e.text:sub(1, 10) == "<00000001>" then
      c.cur = ""
      c.pieces = 0
      return c.take(e)
    end
    c.texts[#c.texts + 1] = e.text
  end
  return c
end

collectgarbage()
local base = heap()

-- 1. a follower (chunk 64 KiB) over a log holding the whole 10 MB line
local log = tmp .. "/0.log"
write_log(log, NPARTS, true)
local f = crilog.follower({ { name = "c", path = log } })
local c = checker()
local peak = 0
local polls = 0
local cpu0 = os.clock()
repeat
  for _, e in ipairs(f:poll()) do c.take(e) end
  polls = polls + 1
  peak = math.max(peak, heap() - base)
  if polls % 16 == 0 then collectgarbage() end
until not (f.first or f.more) or polls > 100000
local cpu = os.clock() - cpu0
f:close()
T.is(c.bad, nil, "follower: the long line's bytes come out in order")
T.is(c.next_part - 1, NPARTS, "follower: all of its " .. NPARTS .. " parts")
T.is(table.concat(c.texts, "|"), "before|LONG+end|after", "follower: the lines around it, and its end, as they are")
T.ok(c.biggest <= 1024 * 1024, ("follower: no entry holds the whole line (largest %d bytes)"):format(c.biggest))
T.ok(peak < 4 * 1024 * 1024, ("follower: the Lua heap grew by at most 4 MiB (%.1f MiB) for a 10 MiB line"):format(peak / 1048576))
-- linear in the log's size: 0.3 s of CPU here; 30 s when each chunk's last, unended line was
-- scanned again from each of its bytes (CPU time, not wall clock: the machine may be loaded)
T.ok(cpu < 8, ("follower: 10 MiB of 8 KiB parts read in %.2f s of CPU (< 8)"):format(cpu))

-- 2. a line that never ends, written while followed: the follower keeps up in bounded memory
local log2 = tmp .. "/1.log"
assert(fs.write_atomic(log2, TS .. " stdout F before\n"))
f = crilog.follower({ { name = "c", path = log2 } })
c = checker()
for _, e in ipairs(f:poll()) do c.take(e) end
collectgarbage()
base = heap()
peak = 0
local h = assert(io.open(log2, "ab"))
for i = 1, NPARTS do
  h:write(TS, " stdout P ", part(i), "\n")
  if i % 64 == 0 then
    h:flush()
    repeat
      for _, e in ipairs(f:poll()) do c.take(e) end
    until not f.more
    peak = math.max(peak, heap() - base)
    if i % 512 == 0 then collectgarbage() end
  end
end
h:close()
repeat
  for _, e in ipairs(f:poll()) do c.take(e) end
until not f.more
T.is(c.bad, nil, "never-ending line: its bytes come out in order while it is written")
T.ok(c.next_part - 1 >= NPARTS - 256, ("never-ending line: it is passed on as it comes (%d of %d parts before its end)")
  :format(c.next_part - 1, NPARTS))
T.ok(peak < 4 * 1024 * 1024, ("never-ending line: the Lua heap grew by at most 4 MiB (%.1f MiB)"):format(peak / 1048576))
for _, e in ipairs(f:poll(true)) do c.take(e) end
T.is(c.next_part - 1, NPARTS, "never-ending line: the final poll returns the rest")
T.is(c.texts[#c.texts], "LONG+", "never-ending line: and ends it (its last piece is not cut)")
f:close()

-- 3. the chunked reader (interLink getLogs, not followed)
collectgarbage()
base = heap()
peak = 0
local r = assert(crilog.open(log))
c = checker()
local n = 0
for e in function() return r:next() end do
  c.take(e)
  n = n + 1
  peak = math.max(peak, heap() - base)
  if n % 16 == 0 then collectgarbage() end
end
T.is(c.bad, nil, "reader: the long line's bytes in order")
T.is(table.concat(c.texts, "|"), "before|LONG+end|after", "reader: the lines around it as they are")
T.ok(peak < 4 * 1024 * 1024, ("reader: the Lua heap grew by at most 4 MiB (%.1f MiB)"):format(peak / 1048576))

-- 4. how a cut line is printed: one line, prefix and time only before its first piece
local a = { text = "ab", cut = true, name = "c", ts = TS }
local b = { text = "cd", cont = true, name = "c", ts = TS }
T.is(crilog.format(a, { prefix = true, timestamps = true }) .. crilog.format(b, { prefix = true, timestamps = true }),
  TS .. " [c] abcd\n", "format: the pieces of a cut line print as the one line")

-- 5. two containers merged by time (riklet logs of a Pod): a line of the other container written
-- while the long line was being written does not land inside it
local la, lb = tmp .. "/a.log", tmp .. "/b.log"
local function tsn(s) return ("2026-11-29T15:30:%02d.000000000+00:00"):format(s) end
local ha = assert(io.open(la, "wb"))
for i = 1, 40 do ha:write(tsn(i), " stdout P ", part(i), "\n") end
ha:write(tsn(41), " stdout F !\n")
ha:close()
assert(fs.write_atomic(lb, tsn(20) .. " stdout F from b\n"))
local printed = {}
for _, e in ipairs(crilog.collect({ { name = "a", path = la }, { name = "b", path = lb } })) do
  printed[#printed + 1] = crilog.format(e, { prefix = true })
end
local want = {}
for i = 1, 40 do want[#want + 1] = part(i) end
local out = table.concat(printed)
T.ok(out:find("[a] " .. table.concat(want) .. "!\n", 1, true) and out:find("[b] from b\n", 1, true),
  "merged by time: the long line stays whole, the other container's line beside it, not inside")

fs.rm_rf(tmp)
T.done()
