-- riklet.crilog — read container logs in the CRI (k8s-file) format that conmon writes, one record
-- a line:   2026-11-29T15:30:29.074872445+00:00 stdout F hello
-- (RFC 3339 timestamp with nanoseconds, stream, F for a full line or P for a part of a longer one,
-- the text). Used by `riklet logs` and meant for any front-end that serves logs (interLink).
--
--   crilog.parse(line) -> {ts=, time=, stream=, partial=, text=} | nil   (time: epoch seconds)
--   crilog.parse_time(s) -> epoch seconds (float) | nil                 RFC 3339, Z or +hh:mm
--   crilog.parse_since(s[, now]) -> epoch seconds | nil, err            RFC 3339 or 10s, 5m, 1h30m, 2d
--   crilog.read(path) -> array of entries | nil, err                    parts joined into lines
--   crilog.open(path[, size]) -> reader | nil, err; reader:next() -> entry | nil (at the end)
--       the entries crilog.read gives, one at a time, read in 64 KiB chunks: memory stays bounded
--       whatever the file's size. Only its first size bytes are read (default: its size at open,
--       so a log that grows is read as it was). reader.on_chunk, when set, is called after each
--       chunk (task.yield lets the loop turn); reader:close().
--   crilog.select(path, {since=, tail=, on_chunk=}) -> iterator, close | nil, err   the entries at
--       or after since (epoch s; lines with no time are kept), then the last tail of them, in
--       bounded memory: with tail the file is read twice (counting, then from the first kept
--       entry). close() releases the file when the iterator is left before its end.
--   crilog.collect(sources, {since=, tail=, limit_bytes=}) -> entries   sources: { {name=, path=}, ... };
--       the entries of every source in time order (stable: one file's order is kept), each with
--       .name; since (epoch s) drops older lines, tail keeps the last N, limit_bytes the last bytes
--   crilog.follower(sources[, {since=, tail=, chunk=, on_chunk=}]) -> f; f:poll([final]) -> new
--       entries of every source (in time order). The first polls return what the files held at
--       the call (since and tail applied), then each poll what was written since; every poll reads
--       at most chunk bytes (64 KiB) of each file and sets f.more when there is more to read now:
--       memory stays bounded whatever the files' sizes. f:set_path(name, path) switches a source
--       to a new file (a restarted container) once the old one is drained; f:close().
--       A file replaced under the same name (conmon's size cap starts a new one) is read to its
--       end, then the new one from its start: no line lost or repeated.
--   crilog.format(entry, {timestamps=, prefix=}) -> "TS [name] text\n"; crilog.eol(entry) -> "\n" | ""
-- A line longer than 64 KiB comes in pieces (entries with cut: more follows, cont: it goes on the
-- line before); format prints them as the one line (no end after a cut piece, no time or name
-- before a cont one): nothing ever holds a whole line of any length.
-- A line that is not in the CRI format (a log from an older riklet) is kept as a stdout line with
-- no time.
local fs = require "riklet.fs"

local M = {}

local READ_MAX = 256 * 1024 * 1024

-- days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  local frac, tz = rest:match("^(%.%d+)(.*)$")
  if not frac then frac, tz = "", rest end
  local off
  if tz == "Z" or tz == "z" then off = 0
  else
    local sign, oh, om = tz:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off
  return t + (frac ~= "" and tonumber("0" .. frac) or 0)
end

local UNITS = { s = 1, m = 60, h = 3600, d = 86400 }

function M.parse_since(s, now)
  if type(s) ~= "string" or s == "" then return nil, "--since needs a time" end
  local t = M.parse_time(s)
  if t then return t end
  local total, rest = 0, s
  while rest ~= "" do
    local n, u, r = rest:match("^(%d+%.?%d*)([smhd])(.*)$")
    if not n then
      return nil, ("--since %q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration (30s, 10m, 1h30m, 2d)"):format(s)
    end
    total = total + tonumber(n) * UNITS[u]
    rest = r
  end
  return (now or os.time()) - total
end

function M.parse(line)
  local ts, stream, tag, text = line:match("^(%S+) (std%a+) ([PF]) (.*)$")
  if not ts then
    ts, stream, tag = line:match("^(%S+) (std%a+) ([PF])$")
    text = ""
  end
  local t = ts and M.parse_time(ts)
  if not t then return nil end
  return { ts = ts, time = t, stream = stream, partial = tag == "P", text = text }
end

-- A parser with state: parts (P) of a stream are held until its full line (F) arrives, up to
-- PIECE bytes: a longer line (a container writing 10 MB without a newline, or never ending one)
-- goes out in pieces of about PIECE bytes, each but the last marked cut (more of the line follows)
-- and each but the first cont (it goes on the line before): what a reader or a follower holds
-- stays bounded whatever the line's length.
local PIECE = 64 * 1024
local function joiner()
  local parts = {}
  local function piece(held, out, last)
    local first = held.first
    first.text, first.cont = table.concat(held.text), held.cont
    if not last then first.cut = true end
    out[#out + 1] = first
  end
  return function(line, out)
    if line == nil then -- flush: the parts of a last line that never got its end
      for stream, held in pairs(parts) do
        if held.first then piece(held, out, true)
        else out[#out + 1] = { stream = stream, text = "", partial = true, cont = true } end -- its end
        parts[stream] = nil
      end
      return
    end
    local e = M.parse(line)
    if not e then
      out[#out + 1] = { stream = "stdout", text = line }
      return
    end
    local held = parts[e.stream]
    if held and not held.first then -- a cut line goes on: this part opens its next piece
      held.first, held.text, held.n = e, {}, 0
    end
    if e.partial then
      if held then
        held.text[#held.text + 1], held.n = e.text, held.n + #e.text
      else
        held = { first = e, text = { e.text }, n = #e.text }
        parts[e.stream] = held
      end
      if held.n >= PIECE then
        piece(held, out, false)
        held.first, held.text, held.n, held.cont = nil, nil, 0, true
      end
      return
    end
    if held then
      held.text[#held.text + 1] = e.text
      piece(held, out, true)
      out[#out].partial = false
      parts[e.stream] = nil
      return
    end
    out[#out + 1] = e
  end
end

function M.read(path)
  local data, err = fs.read(path, READ_MAX)
  if not data then return nil, err end
  local out, feed = {}, joiner()
  for line in data:gmatch("([^\n]*)\n") do feed(line, out) end
  feed(nil, out)
  return out
end

-- ---- reading a file in chunks ----
local CHUNK = 64 * 1024
local Reader = {}
Reader.__index = Reader

function M.open(path, size)
  local h, err = fs.open_read(path)
  if not h then return nil, err end
  if not size then
    local st = fs.stat(path)
    size = st and st.size or 0
  end
  return setmetatable({ h = h, size = size, left = size, buf = "", pos = 1, out = {}, oi = 1, feed = joiner() }, Reader)
end

function Reader:next()
  while true do
    local e = self.out[self.oi]
    if e then
      self.out[self.oi], self.oi = nil, self.oi + 1
      return e
    end
    self.oi = 1
    if self.done then return nil end
    local nl = self.buf:find("\n", self.pos, true)
    if nl then
      self.feed(self.buf:sub(self.pos, nl - 1), self.out)
      self.pos = nl + 1
    else
      local d = self.left > 0 and self.h:read(math.min(CHUNK, self.left))
      if d and #d > 0 then
        self.left = self.left - #d
        self.buf, self.pos = self.buf:sub(self.pos) .. d, 1
        if self.on_chunk then self.on_chunk() end
      else -- the end: a last line without its end is left out, as crilog.read does
        self.done, self.buf = true, ""
        self.feed(nil, self.out)
        self:close()
      end
    end
  end
end

function Reader:close()
  if self.h then self.h:close() end
  self.h, self.done = nil, true
end

function M.select(path, opts)
  local since, tail = opts.since, opts.tail
  local r, err = M.open(path)
  if not r then return nil, err end
  r.on_chunk = opts.on_chunk
  local function kept(e) return not since or not e.time or e.time >= since end
  local skip = 0
  if tail then
    local r2, err2 = M.open(path, r.size) -- opened now: the same file, even if it is replaced
    if not r2 then
      r:close()
      return nil, err2
    end
    r2.on_chunk = opts.on_chunk
    local n = 0
    for e in function() return r:next() end do
      if kept(e) then n = n + 1 end
    end
    skip = math.max(0, n - tail)
    r = r2
  end
  return function()
    while true do
      local e = r:next()
      if not e then return nil end
      if kept(e) then
        if skip == 0 then return e end
        skip = skip - 1
      end
    end
  end, function() r:close() end
end

-- merge per-source arrays by time, keeping each source's own order (entries without a time stay
-- where their neighbours put them)
local function merge(lists)
  if #lists == 1 then return lists[1] end
  local all = {}
  for li, l in ipairs(lists) do
    local last = 0
    for i, e in ipairs(l) do
      -- a piece going on a cut line (cont) keeps its line's time: the pieces stay together
      if not e.cont then last = e.time or last end
      all[#all + 1] = { e = e, t = last, li = li, i = i }
    end
  end
  table.sort(all, function(a, b)
    if a.t ~= b.t then return a.t < b.t end
    if a.li ~= b.li then return a.li < b.li end
    return a.i < b.i
  end)
  local out = {}
  for i, x in ipairs(all) do out[i] = x.e end
  return out
end

function M.collect(sources, opts)
  opts = opts or {}
  local lists = {}
  for _, src in ipairs(sources) do
    local l = src.path and fs.exists(src.path) and M.read(src.path) or {}
    for _, e in ipairs(l) do e.name = src.name end
    lists[#lists + 1] = l
  end
  local all = merge(lists)
  if opts.since then
    local kept = {}
    for _, e in ipairs(all) do
      if e.time and e.time >= opts.since then kept[#kept + 1] = e end
    end
    all = kept
  end
  if opts.tail and opts.tail >= 0 and #all > opts.tail then
    all = { unpack(all, #all - opts.tail + 1) }
  end
  if opts.limit_bytes and opts.limit_bytes >= 0 then
    local n, first = 0, #all + 1
    for i = #all, 1, -1 do
      n = n + #all[i].text + 1
      if n > opts.limit_bytes then break end
      first = i
    end
    all = { unpack(all, first) }
  end
  return all
end

-- ---- following files as they grow ----
-- A source: name, path (followed by name), h (its open file) and ino, buf (bytes read past the last
-- whole line), feed (its joiner: parts held until their line ends), left (bytes of the part the
-- file held when the follower was made, still to read), next_path (set_path's, once drained).
-- Every read is of at most f.chunk bytes: what is held stays about that size, whatever the log's.
local Follower = {}
Follower.__index = Follower

local function src_open(s, path)
  s.path, s.h, s.ino, s.buf = path, nil, nil, ""
  if not path then return nil end
  local h = fs.open_read(path)
  if not h then return nil end
  local st = h:stat() -- the file opened, even if the name was given to another one meanwhile
  if not st then
    h:close()
    return nil
  end
  s.h, s.ino = h, st.ino
  return st
end

-- read at most max bytes of s's file (fewer: its end), whole lines fed to its joiner into out
local function read_into(s, max, out)
  local n = 0
  while n < max do
    local d = s.h:read(math.min(CHUNK, max - n))
    if not d or #d == 0 then break end
    n = n + #d
    -- plain finds, not gmatch("([^\n]*)\n"): that one tried the pattern again at every byte of
    -- the last line without its end, O(n^2) in its length (a 64 KiB chunk of conmon's 8 KiB parts
    -- took ~0.2 s of the loop; 10 MB of them 30 s)
    local buf, last = s.buf .. d, 1
    while true do
      local nl = buf:find("\n", last, true)
      if not nl then break end
      s.feed(buf:sub(last, nl - 1), out)
      last = nl + 1
    end
    s.buf = buf:sub(last)
  end
  return n
end

-- the end of s's lines: a last line without its end, and held parts, go out as they are
local function src_flush(s, out)
  if s.buf ~= "" then s.feed(s.buf, out) end
  s.buf = ""
  s.feed(nil, out)
end

-- the kept entries (since) of the first size bytes of s's file, counted in bounded memory; the
-- file is then read again from its start
local function count_kept(s, size, since, on_chunk)
  local n, left, saved = 0, size, s.feed
  s.feed = joiner()
  while left > 0 do
    local out = {}
    local got = read_into(s, math.min(CHUNK, left), out)
    if got == 0 then break end
    left = left - got
    for _, e in ipairs(out) do
      if not since or not e.time or e.time >= since then n = n + 1 end
    end
    if on_chunk then on_chunk() end
  end
  s.feed, s.buf = saved, ""
  s.h:seek(0)
  return n
end

-- sources: { {name=, path=}, ... }; opts: since (epoch s), tail (entries), chunk (bytes a poll
-- reads of each file, default 64 KiB), on_chunk (called between reads of the files' first part)
function M.follower(sources, opts)
  opts = opts or {}
  local f = setmetatable({ srcs = {}, chunk = opts.chunk or CHUNK, since = opts.since, on_chunk = opts.on_chunk,
    skip = 0, first = true, more = false }, Follower)
  local total = 0
  for _, src in ipairs(sources) do
    local s = { name = src.name, feed = joiner(), out = {}, oi = 1 }
    local st = src_open(s, src.path)
    s.left = st and st.size or 0
    if opts.tail and s.h then total = total + count_kept(s, s.left, f.since, f.on_chunk) end
    f.srcs[#f.srcs + 1] = s
  end
  if opts.tail then f.skip = math.max(0, total - opts.tail) end
  return f
end

-- the next entry of the first part of s (what its file held at the start), or nil after it
local function next_first(f, s)
  while true do
    local e = s.out[s.oi]
    if e then
      s.out[s.oi], s.oi = nil, s.oi + 1
      return e
    end
    s.out, s.oi = {}, 1
    if not s.h or s.left <= 0 then return nil end
    local n = read_into(s, math.min(f.chunk, s.left), s.out)
    if n == 0 then s.left = 0 -- cut shorter than it was: what is left comes as new lines
    else s.left = s.left - n end
    if f.on_chunk then f.on_chunk() end
  end
end

-- the first part of every file, merged by time (a source's own order kept; a line with no time
-- takes its source's previous time), since and tail applied, about f.chunk bytes per call
local function poll_first(f)
  local out, bytes = {}, 0
  while bytes < f.chunk do
    local best, bt
    for _, s in ipairs(f.srcs) do
      if s.head == nil and not s.over then
        s.head = next_first(f, s)
        s.over = s.head == nil
      end
      local t = s.head and (s.head.time or s.t or 0)
      if t and (not bt or t < bt) then best, bt = s, t end
    end
    if not best then
      f.first = false
      break
    end
    local e = best.head
    best.head, best.t = nil, bt
    if not f.since or not e.time or e.time >= f.since then
      if f.skip > 0 then f.skip = f.skip - 1
      else
        e.name = best.name
        out[#out + 1] = e
        bytes = bytes + #e.text + 1
      end
    end
  end
  return out
end

-- What is new in s (at most f.chunk bytes) into out; true when it was read to its end. A file
-- replaced under its name (conmon's --log-size-max: conmon closes the full file, then renames a
-- new one over it) is read to its end, then the new one from its start, with the same joiner (a
-- line split across the two is joined); a set_path (a new run) likewise, its joiner flushed.
-- set_path's file, once the current one is done with: its last line and held parts go out first
local function src_switch(s, out)
  src_flush(s, out)
  if s.h then s.h:close() end
  s.feed = joiner()
  src_open(s, s.next_path)
  s.next_path = nil
end

local function poll_src(f, s, out)
  if not s.h and s.path then src_open(s, s.path) end
  local budget = f.chunk
  while s.h do
    local st = s.path and fs.stat(s.path) -- looked at before the read to the end (see above)
    budget = budget - read_into(s, budget, out)
    if budget <= 0 then return false end
    if s.next_path then src_switch(s, out)
    elseif st and st.ino ~= s.ino then
      if s.buf ~= "" then s.feed(s.buf, out) end
      s.h:close()
      src_open(s, s.path)
    else
      return true
    end
  end
  if s.next_path then -- the old file could not be opened: the new one at once
    src_switch(s, out)
    return poll_src(f, s, out)
  end
  return true
end

-- f:poll([final]) -> entries. The first polls return the files' first part (since, tail), then
-- each poll what is new. f.more is true when a poll stopped at its budget: poll again at once.
-- final (the containers ended): once a file is read to its end, its last line without its end
-- and its held parts are returned too.
function Follower:poll(final)
  if self.first then
    local out = poll_first(self)
    self.more = true -- the new lines come next
    return out
  end
  local lists, more = {}, false
  for _, s in ipairs(self.srcs) do
    local out = {}
    local drained = poll_src(self, s, out)
    if not drained then more = true
    elseif final then src_flush(s, out) end
    for _, e in ipairs(out) do e.name = s.name end
    lists[#lists + 1] = out
  end
  self.more = more
  return merge(lists)
end

-- switch a source to another file (a restarted container's) once the current one is read to its end
function Follower:set_path(name, path)
  for _, s in ipairs(self.srcs) do
    if s.name == name and (s.next_path or s.path) ~= path then s.next_path = path end
  end
end

function Follower:close()
  for _, s in ipairs(self.srcs) do
    if s.h then s.h:close() end
    s.h, s.buf, s.out = nil, "", {}
  end
end

-- what ends an entry's text when printed: nothing for a piece of a longer line (cut)
function M.eol(e) return e.cut and "" or "\n" end

function M.format(e, opts)
  opts = opts or {}
  local parts = {}
  if e.cont then return e.text .. M.eol(e) end
  if opts.timestamps then parts[#parts + 1] = (e.ts or "-") .. " " end
  if opts.prefix and e.name then parts[#parts + 1] = "[" .. e.name .. "] " end
  parts[#parts + 1] = e.text
  parts[#parts + 1] = M.eol(e)
  return table.concat(parts)
end

return M
