-- riklet.crilog: the CRI (k8s-file) log reader on files written here byte for byte as conmon
-- writes them: times with offsets, parts joined per stream, since/tail/bytes, merging two
-- containers by time, a follower across growth, a start-over under the same name (the size cap)
-- and a switch to a new file (a restart), a last line without its end, plain-text lines.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local core = require "riklet.core"
local crilog = require "riklet.crilog"

local tmp = ("/tmp/riklet-crilog-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

-- times
T.is(crilog.parse_time("1970-01-01T00:00:00Z"), 0, "the epoch")
T.is(crilog.parse_time("2026-11-29T15:30:29.5+00:00"), 1795966229.5, "a time with a fraction and +00:00")
T.is(crilog.parse_time("2026-11-29T16:30:29.5+01:00"), 1795966229.5, "the same instant at +01:00")
T.is(crilog.parse_time("2026-11-29T10:00:29.5-05:30"), 1795966229.5, "and at -05:30")
T.is(crilog.parse_time("2000-02-29T00:00:00Z"), 951782400, "a leap day")
T.is(crilog.parse_time("2026-13-01T00:00:00Z"), nil, "month 13 is refused")
T.is(crilog.parse_time("yesterday"), nil, "words are refused")
T.is(crilog.parse_since("10m", 1000), 400, "--since 10m")
T.is(crilog.parse_since("1h30m", 10000), 10000 - 5400, "--since 1h30m")
T.is(crilog.parse_since("2026-11-29T15:30:29Z", 0), 1795966229, "--since an RFC 3339 time")
local none, err = crilog.parse_since("10 minutes", 0)
T.ok(none == nil and err:find("RFC 3339", 1, true), "--since '10 minutes' says what it takes: " .. tostring(err))

-- lines
local e = crilog.parse("2026-11-29T15:30:29.074872445+00:00 stderr F hello world")
T.ok(e and e.stream == "stderr" and not e.partial and e.text == "hello world", "a full line")
T.is(e and e.ts, "2026-11-29T15:30:29.074872445+00:00", "keeps its timestamp text")
e = crilog.parse("2026-11-29T15:30:29.074872445+00:00 stdout F ")
T.ok(e and e.text == "", "an empty line")
T.is(crilog.parse("hello"), nil, "plain text is not CRI")

-- a file: parts joined per stream, interleaved streams kept in order
local log = tmp .. "/0.log"
local function ts(s) return ("2026-11-29T15:30:%02d.000000001+00:00"):format(s) end
assert(fs.write_atomic(log, table.concat({
  ts(1) .. " stdout F one\n",
  ts(2) .. " stdout P tw\n",
  ts(3) .. " stderr F err\n",
  ts(4) .. " stdout F o\n",
  ts(5) .. " stdout F three\n",
  "a plain line from an older riklet\n",
  ts(6) .. " stderr P no end\n",
})))
local all = crilog.read(log)
local texts = {}
for i, x in ipairs(all) do texts[i] = x.text end
T.is(table.concat(texts, "|"), "one|err|two|three|a plain line from an older riklet|no end",
  "parts are joined, a line without its end comes last")
T.is(all[3].ts, ts(2), "a joined line has its first part's time")
local srcs = { { name = "c", path = log } }
local function joined(es)
  local t = {}
  for i, x in ipairs(es) do t[i] = x.text end
  return table.concat(t, "|")
end
T.is(joined(crilog.collect(srcs, { tail = 2 })), "a plain line from an older riklet|no end", "tail 2")
T.is(joined(crilog.collect(srcs, { tail = 0 })), "", "tail 0")
T.is(joined(crilog.collect(srcs, { since = crilog.parse_time(ts(3)) })), "err|three|no end",
  "since drops older lines and untimed ones")
T.is(joined(crilog.collect(srcs, { limit_bytes = 15 })), "no end", "limit_bytes keeps whole last lines")
all[1].name = "c"
T.is(crilog.format(all[1], { timestamps = true, prefix = true }), ts(1) .. " [c] one\n", "format with time and name")
T.is(crilog.format(all[1]), "one\n", "format plain")

-- two containers merged by time
local log2 = tmp .. "/other.log"
assert(fs.write_atomic(log2, ts(2) .. " stdout F from b at 2\n" .. ts(7) .. " stdout F from b at 7\n"))
local merged = crilog.collect({ { name = "a", path = tmp .. "/m.log" }, { name = "b", path = log2 } })
T.is(#merged, 2, "a missing file is no lines")
assert(fs.write_atomic(tmp .. "/m.log", ts(1) .. " stdout F a1\n" .. ts(3) .. " stdout F a3\n"))
merged = crilog.collect({ { name = "a", path = tmp .. "/m.log" }, { name = "b", path = log2 } })
T.is(joined(merged), "a1|from b at 2|a3|from b at 7", "two containers merged by time")

-- follower
local flog = tmp .. "/f.log"
assert(fs.write_atomic(flog, ts(1) .. " stdout F first\n"))
local f = crilog.follower({ { name = "c", path = flog } })
T.is(joined(f:poll()), "first", "the first poll returns what is there")
T.is(joined(f:poll()), "", "then nothing until it grows")
assert(fs.append(flog, ts(2) .. " stdout P half"))
T.is(joined(f:poll()), "", "half a record is held")
assert(fs.append(flog, "-and\n" .. ts(3) .. " stdout F done\n"))
T.is(joined(f:poll()), "half-anddone", "then returned whole (a part joined with its end)")
assert(fs.append(flog, ts(4) .. " stdout F before the start-over\n"))
assert(fs.write_atomic(flog, ts(5) .. " stdout F after the start-over\n"))
T.is(joined(f:poll()), "before the start-over|after the start-over",
  "a file started over under the same name: the old one drained, the new one read from its start")
local nlog = tmp .. "/1.log"
assert(fs.write_atomic(nlog, ts(6) .. " stdout F run 1\n"))
assert(fs.append(flog, ts(5) .. " stdout P last words"))
f:set_path("c", nlog)
T.is(joined(f:poll()), "last words|run 1", "a switch to a new file (a restart): the old one's last words, then the new")
assert(fs.append(nlog, ts(7) .. " stdout P unfinished\n"))
T.is(joined(f:poll()), "", "an unfinished line is held")
T.is(joined(f:poll(true)), "unfinished", "and returned by the final poll")
f:close()

-- crilog.select: the streaming reader /getLogs uses gives exactly what crilog.read + since + tail
-- gave (the in-memory way it replaced), on a file of 300 KiB (lines across the 64 KiB chunks),
-- with parts of both streams interleaved, plain-text lines, empty lines, times out of order and a
-- last line without its end
local big = tmp .. "/big.log"
local recs = {}
for i = 1, 6000 do
  local t = ts(i % 60)
  if i % 97 == 0 then recs[#recs + 1] = "not a cri line " .. i .. "\n"
  elseif i % 53 == 0 then
    recs[#recs + 1] = t .. " stdout P part-a-" .. i .. "\n" .. t .. " stderr F err-" .. i .. "\n" ..
      t .. " stdout P -part-b\n" .. t .. " stdout F -end\n"
  elseif i % 31 == 0 then recs[#recs + 1] = t .. " stderr F \n"
  else recs[#recs + 1] = t .. " stdout F line " .. i .. " " .. ("x"):rep(i % 41) .. "\n" end
end
recs[#recs + 1] = ts(9) .. " stdout F no end"
assert(fs.write_atomic(big, table.concat(recs)))
local whole = {}
local function reference(path, since, tail) -- the /getLogs selection before streaming
  whole[path] = whole[path] or crilog.read(path) or {}
  local entries = whole[path]
  if since then
    local kept = {}
    for _, x in ipairs(entries) do if not x.time or x.time >= since then kept[#kept + 1] = x end end
    entries = kept
  end
  if tail and #entries > tail then entries = { unpack(entries, #entries - tail + 1) } end
  return entries
end
local function key(list)
  local out = {}
  for i, x in ipairs(list) do out[i] = (x.ts or "-") .. " " .. x.stream .. " " .. x.text end
  return table.concat(out, "\n")
end
local chunks = 0
for _, since in ipairs({ false, crilog.parse_time(ts(30)), crilog.parse_time(ts(0)), 1e12 }) do
  for _, tail in ipairs({ false, 1, 7, 5000, 1e9 }) do
    local got = {}
    local it, close = crilog.select(big, { since = since or nil, tail = tail or nil, on_chunk = function() chunks = chunks + 1 end })
    for x in it do got[#got + 1] = x end
    close()
    local want = reference(big, since or nil, tail or nil)
    T.ok(#got == #want and key(got) == key(want),
      ("select since=%s tail=%s: the same %d entries as reading the whole file"):format(tostring(since), tostring(tail), #want))
  end
end
T.ok(chunks >= 20 * 5, "... read in 64 KiB chunks (" .. chunks .. " chunks)")
T.is(crilog.select(tmp .. "/absent.log", {}), nil, "select of a missing file: nil")
-- read up to the size at open: a log that grows meanwhile is read as it was
local r = crilog.open(log2)
assert(fs.append(log2, ts(8) .. " stdout F later\n"))
local n = 0
while r:next() do n = n + 1 end
T.is(n, #crilog.read(log2) - 1, "a reader stops at the size the file had when opened")

-- interlink's /getLogs answer (not followed), streamed in chunks: the bytes the in-memory answer had
local il = require "riklet.interlink"
local function old_answer(path, o)
  local buf = {}
  for i, x in ipairs(reference(path, o.since, o.tail)) do
    local line = x.text .. "\n"
    if o.ts then line = (x.ts or "-"):gsub("%+00:00$", "Z") .. " " .. line end
    buf[i] = line
  end
  local out = table.concat(buf)
  if o.limit and #out > o.limit then out = out:sub(1, o.limit) end
  return out
end
local combos = 0
for _, since in ipairs({ false, crilog.parse_time(ts(45)) }) do
  for _, tail in ipairs({ false, 3, 2000 }) do
    for _, limit in ipairs({ false, 1, 8, 40000, 1e9 }) do
      for _, tsf in ipairs({ false, true }) do
        local o = { since = since or nil, tail = tail or nil, limit = limit or nil, ts = tsf }
        local parts, finished, highs = {}, false, {}
        local req = {
          write = function(_, d, high) parts[#parts + 1], highs[#highs + 1] = d, high return true end,
          finish = function() finished = true end,
        }
        il.send_log(req, big, o)
        local got, want = table.concat(parts), old_answer(big, o)
        local maxpart = 0
        for _, p in ipairs(parts) do maxpart = math.max(maxpart, #p) end
        if got == want and finished and maxpart < 40 * 1024 and (highs[1] or 1) <= 64 * 1024 then
          combos = combos + 1
        else
          T.diag(("since=%s tail=%s limit=%s ts=%s: %d bytes vs %d, finished %s, largest write %d"):format(
            tostring(since), tostring(tail), tostring(limit), tostring(tsf), #got, #want, tostring(finished), maxpart))
        end
      end
    end
  end
end
T.is(combos, 2 * 3 * 5 * 2, "send_log: the same bytes as the whole-file answer for every since/tail/bytes/timestamps, in writes under 40 KiB")

-- the follower reads a big log in bounded polls: what the file held (since, tail) is exactly what
-- crilog.read gave, no poll returns much more than its chunk, and it then goes on from that very
-- byte: the last line without its end (held) comes once it ends, then the new lines, nothing twice
local fchunks, fcombos = 0, 0
for _, since in ipairs({ false, crilog.parse_time(ts(30)) }) do
  for _, tail in ipairs({ false, 1, 5000 }) do
    local fb = tmp .. "/fb.log"
    assert(fs.write_atomic(fb, table.concat(recs)))
    local ff = crilog.follower({ { name = "c", path = fb } }, { since = since or nil, tail = tail or nil, chunk = 4096,
      on_chunk = function() fchunks = fchunks + 1 end })
    local got, biggest = {}, 0
    while ff.first do
      local batch, bytes = ff:poll(), 0
      for _, x in ipairs(batch) do
        got[#got + 1] = x
        bytes = bytes + #x.text + 1
      end
      biggest = math.max(biggest, bytes)
      if not ff.more then biggest = 1e9 end -- more is set while the first part is read
    end
    local want = reference(big, since or nil, tail or nil)
    assert(fs.append(fb, "\n" .. ts(59) .. " stdout F new 1\n" .. ts(59) .. " stdout F new 2\n"))
    local after = {}
    repeat
      for _, x in ipairs(ff:poll()) do after[#after + 1] = x.text end
    until not ff.more
    ff:close()
    if key(got) == key(want) and biggest <= 4096 + 200 and table.concat(after, "|") == "no end|new 1|new 2" then
      fcombos = fcombos + 1
    else
      T.diag(("follower since=%s tail=%s: %d entries vs %d, largest poll %d bytes, then %s"):format(tostring(since),
        tostring(tail), #got, #want, biggest, table.concat(after, "|")))
    end
  end
end
T.is(fcombos, 6, "follower: the first part as crilog.read + since + tail gave, in polls of about 4 KiB, then the rest from that byte")
T.ok(fchunks >= 2 * 3 * 70, "... read a chunk at a time (" .. fchunks .. " reads)")

-- two files: the first part merged by time, tail across both (as crilog.collect)
assert(fs.write_atomic(tmp .. "/m2.log", ts(1) .. " stdout F a1\n" .. ts(3) .. " stdout F a3\n" .. ts(5) .. " stdout F a5\n"))
local two = { { name = "a", path = tmp .. "/m2.log" }, { name = "b", path = log2 } }
local tf = crilog.follower(two, { tail = 3 })
local tgot = {}
while tf.first do for _, x in ipairs(tf:poll()) do tgot[#tgot + 1] = x end end
T.is(joined(tgot), joined(crilog.collect(two, { tail = 3 })), "two files: the last 3 lines of both, merged by time")
tf:close()

-- growth past the chunk while followed: polls of at most the chunk, every line once, in order
local gl = tmp .. "/grow.log"
assert(fs.write_atomic(gl, ""))
local gf = crilog.follower({ { name = "c", path = gl } }, { chunk = 8192 })
gf:poll()
local lines, want_n = {}, 3000
for i = 1, want_n do lines[i] = ts(10) .. " stdout F grow " .. i .. "\n" end
assert(fs.append(gl, table.concat(lines)))
local seen, polls, inorder = 0, 0, true
repeat
  polls = polls + 1
  for _, x in ipairs(gf:poll()) do
    seen = seen + 1
    inorder = inorder and x.text == "grow " .. seen
  end
until not gf.more
T.ok(seen == want_n and inorder and polls >= 10, ("%d lines appended (%d KiB) came once each, in order, over %d polls"):format(
  seen, math.floor(#table.concat(lines) / 1024), polls))

-- conmon's size cap: the full file closed, a new one renamed over it. A line cut into parts across
-- the start-over is joined; nothing is lost or repeated
assert(fs.append(gl, ts(11) .. " stdout F before cap\n" .. ts(11) .. " stdout P split-"))
assert(fs.write_atomic(gl, ts(12) .. " stdout F -across\n" .. ts(12) .. " stdout F after cap\n"))
local rot = {}
repeat for _, x in ipairs(gf:poll()) do rot[#rot + 1] = x.text end until not gf.more
T.is(table.concat(rot, "|"), "before cap|split--across|after cap", "a start-over: the old file to its end, then the new one; a split line joined")
assert(fs.append(gl, ts(13) .. " stdout F on the new file\n"))
T.is(joined(gf:poll()), "on the new file", "then the new file is followed")
gf:close()

T.ok(fs.rm_rf(tmp), "cleanup")
