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

T.ok(fs.rm_rf(tmp), "cleanup")
