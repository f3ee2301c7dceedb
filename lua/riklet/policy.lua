-- riklet.policy — operator policies (policies/*.lua, --policy-dir) run in riklet.sandbox.
--
-- A policy file is a chunk returning a table of functions. Each policy (admission, network,
-- restart) lives in its own sandbox: a separate Lua state with an allowlist of globals (no io,
-- os.execute, load*, require, debug, ffi, jit, setfenv/getfenv, collectgarbage, newproxy,
-- string.dump), a memory cap, an instruction budget and a wall-clock deadline per call (LIMITS).
-- Arguments go in and results come out as plain data (copies: strings, numbers, booleans,
-- json.null, tables of those), so nothing a policy does reaches the agent's own tables. A policy
-- in --policy-dir replaces the default of the same name and sees that default as the global
-- `base` (in the same sandbox), to wrap it.
--   policy.call(name, fn, ...) -> the function's results | nil, "policy NAME.FN failed: <message
--     + traceback>"; it never raises; a result `nil, reason` has its reason made safe
--     (policy.reason). policy.try: true, results... (as returned) | false, err. After a call that raised or hit a limit, the policy's
--     sandbox is discarded and rebuilt from the same sources for the next call.
--   policy.reload([dir]) -> loaded, failed   re-read every loaded policy (SIGHUP), from dir over
--     the defaults when dir is given (false: the defaults only); a policy that no longer loads
--     keeps its previous version, and the log says why.
--   policy.set_dir(dir)   operator policies from dir, over the defaults (forgets what was loaded)
--   policy.park()   close every sandbox, keeping the sources read: each is rebuilt by its next call
--   policy.memory() -> bytes held by all policy sandboxes
--   policy.fingerprint(name) -> text | nil, err   what policy `name`'s sources are (paths, sizes, an
--     FNV-1a hash of each text): equal between two riklet runs when the policy is the same (kept in
--     records, so that a re-adoption asks the policy again only when it changed since). The paths
--     stay in it: which file is the default and which the operator's override (--policy-dir) is
--     part of what the policy is, and a policy read from elsewhere (another --policy-dir, a package
--     installed under another prefix) is the operator's change, worth one more question per Pod at
--     that one restart; a plain restart reads the same paths and asks nothing. (The cost shows
--     only in benchmarks that alternate two trees: give both the same policy path.)
local core = require "riklet.core"
local json = require "riklet.json"
local sandbox = require "riklet.sandbox"

local M = {}

-- per call; see README "Security"
M.LIMITS = { memory = 32 * 1024 * 1024, instructions = 20 * 1000 * 1000, deadline = 0.25, null = json.null }
local SOURCE_MAX = 1024 * 1024

local dirs = { core.paths().policies }
local loaded = {} -- name -> { chain = { { path, text }, ... } default first, box = sandbox | nil }

local function log(level, fmt, ...) core.log(level, "policy", fmt:format(...)) end

local fingerprints = {} -- name -> fingerprint of the chain loaded (reset when sources are re-read)

local function forget_all()
  for _, e in pairs(loaded) do
    if e.box then e.box:close() end
  end
  loaded = {}
  fingerprints = {}
end

function M.set_dir(dir)
  forget_all()
  dirs = { dir, core.paths().policies }
end

-- The files of policy `name`, the default first and the operator's copy (if any) last.
local function read_chain(name)
  local chain = {}
  for i = #dirs, 1, -1 do
    local path = dirs[i] .. "/" .. name .. ".lua"
    local f = io.open(path, "rb")
    if f then
      -- read what the file holds, not SOURCE_MAX + 1: LuaJIT reads f:read(n) into a buffer of n
      -- bytes (rounded up to 2 MiB here) that the collector only halves at each cycle, and the
      -- copies it makes while shrinking stay resident (tests/bench/bench_mem.sh)
      local size = f:seek("end")
      if size and size > SOURCE_MAX then
        f:close()
        return nil, ("policy %s is larger than %d bytes"):format(path, SOURCE_MAX)
      end
      if size then f:seek("set") end
      local text, err = f:read(size and size + 1 or SOURCE_MAX + 1)
      f:close()
      if not text and err then return nil, ("cannot read policy %s: %s"):format(path, err) end
      text = text or ""
      if #text > SOURCE_MAX then return nil, ("policy %s is larger than %d bytes"):format(path, SOURCE_MAX) end
      chain[#chain + 1] = { path = path, text = text }
    end
  end
  if #chain == 0 then
    return nil, ("no policy '%s' in %s"):format(name, table.concat(dirs, " or "))
  end
  return chain
end

-- A new sandbox with the chain loaded: module i sees module i-1 as `base`.
local function build(chain)
  local box, err = sandbox.new(M.LIMITS)
  if not box then return nil, err end
  for i, src in ipairs(chain) do
    if src.text:sub(1, 1) == "\27" then
      box:close()
      return nil, ("policy %s does not compile: it is LuaJIT bytecode; riklet loads policies only as source text"):format(src.path)
    end
    local ok, lerr, kind = box:load(tostring(i), src.text, "@" .. src.path, i > 1 and tostring(i - 1) or nil)
    if not ok then
      box:close()
      if kind == "compile" then return nil, ("policy %s does not compile: %s"):format(src.path, lerr) end
      if kind == "missing" then return nil, ("policy %s %s"):format(src.path, lerr) end
      return nil, ("policy %s failed while loading: %s"):format(src.path, lerr)
    end
  end
  return box
end

local function entry(name)
  local e = loaded[name]
  if not e then
    local chain, err = read_chain(name)
    if not chain then return nil, err end
    e = { chain = chain }
  end
  if not e.box then
    local box, err = build(e.chain)
    if not box then return nil, err end
    e.box = box
    if not loaded[name] then
      loaded[name] = e
      log(#e.chain > 1 and "info" or "debug", "policy %s loaded from %s", name, e.chain[#e.chain].path)
    end
  end
  return e
end

-- policy.load(name) -> true | nil, err   (loads it now, so errors show early)
function M.load(name)
  local e, err = entry(name)
  if not e then return nil, err end
  return true
end

local function pack(...) return { n = select("#", ...), ... } end

-- calls that failed (did not load, raised, overran, no such function), per policy: for metrics
M.errors = {}
local function count_error(name) M.errors[name] = (M.errors[name] or 0) + 1 end
-- calls made and the CPU seconds inside them (the sandbox's copies and the policy's run): the
-- boot's log line says what its policy pass cost (a restart after a policy change asks 2 per Pod)
M.calls, M.cpu = 0, 0

-- policy.try(name, fn, ...) -> true, results... | false, err   (tells a policy's own nil, reason
-- from a call that failed)
function M.try(name, fname, ...)
  local e, err = entry(name)
  if not e then count_error(name) return false, err end
  local box = e.box
  local c0 = os.clock()
  local r = pack(pcall(box.call, box, tostring(#e.chain), fname, ...))
  M.calls, M.cpu = M.calls + 1, M.cpu + (os.clock() - c0)
  if not r[1] then
    count_error(name)
    return false, ("policy %s.%s could not be called: %s"):format(name, tostring(fname), tostring(r[2]))
  end
  if r[2] then return true, unpack(r, 3, r.n) end
  local msg, kind = r[3], r[4]
  count_error(name)
  if kind == "missing" then return false, ("policy %s has no function '%s'"):format(name, tostring(fname)) end
  if kind == "limit" or kind == "error" then
    -- what failed may have left the policy's state half-changed or its memory held: start afresh
    box:close()
    if e.box == box then e.box = nil end
    if kind == "limit" then
      log("warn", "policy %s.%s was stopped: %s; its sandbox is discarded and rebuilt for the next call",
        name, tostring(fname), msg:match("[^\n]*"))
    end
  end
  return false, ("policy %s.%s failed: %s"):format(name, tostring(fname), msg)
end

-- policy.reason(v, default) -> text: what a policy gave as the reason of a refusal (nil, reason),
-- made fit for a record, a log line and the scheduler: one printable line of at most 1 KiB as it
-- is, other text JSON-quoted and cut (a NUL made the record unwritable, a newline forged a log
-- line), any other value described (a table or a boolean raised inside the agent).
function M.reason(v, default)
  local say = default or "refused by the policy"
  if v == nil then return say end
  if type(v) == "string" then
    if #v <= 1024 and not v:find("[%z\1-\31\127]") and json.utf8(v) then return v end
    return say .. ": " .. json.quote(v, 1024)
  end
  if type(v) == "number" and v == v then return tostring(v) end
  local shown = type(v) == "table" and json.encode(v) or tostring(v)
  if #shown > 60 then shown = ("%s... (%d bytes)"):format(shown:sub(1, 60), #shown) end
  return ("%s (its reason is a %s, not a string: %s)"):format(say, type(v), shown)
end

-- policy.call(name, fn, ...) -> results | nil, err   (a result nil/false, reason: reason made safe)
function M.call(name, fname, ...)
  local r = pack(M.try(name, fname, ...))
  if not r[1] then return nil, r[2] end
  if not r[2] and r.n >= 3 then r[3] = M.reason(r[3], ("refused by policy %s.%s"):format(name, tostring(fname))) end
  return unpack(r, 2, r.n)
end

-- policy.reload([dir]) -> loaded, failed
function M.reload(dir)
  if dir ~= nil then dirs = dir and { dir, core.paths().policies } or { core.paths().policies } end
  fingerprints = {}
  local ok, failed = 0, 0
  for name, e in pairs(loaded) do
    local chain, err = read_chain(name)
    local box
    if chain then box, err = build(chain) end
    if box then
      if e.box then e.box:close() end
      e.box, e.chain = box, chain
      ok = ok + 1
      log("info", "policy %s reloaded from %s", name, chain[#chain].path)
    else
      failed = failed + 1
      log("error", "policy %s was not reloaded, the version loaded before stays in use: %s", name, err)
    end
  end
  return ok, failed
end

-- policy.park() — close every sandbox (their sources stay read): each is built again by its next
-- call. The daemon parks the policies it loaded at start to check them, so a node that runs
-- nothing does not hold three Lua states (about 130 KiB).
function M.park()
  for _, e in pairs(loaded) do
    if e.box then e.box:close() e.box = nil end
  end
end

function M.memory() return sandbox.memory() end

function M.fingerprint(name)
  if fingerprints[name] then return fingerprints[name] end
  local chain, err = loaded[name] and loaded[name].chain
  if not chain then chain, err = read_chain(name) end
  if not chain then return nil, err end
  local parts = {}
  for i, src in ipairs(chain) do
    local h, text = 0x811c9dc5, src.text
    for k = 1, #text do
      h = bit.bxor(h, text:byte(k))
      h = bit.tobit(bit.lshift(h, 24) + h * 403) -- h * 16777619 (FNV prime), modulo 2^32
    end
    parts[i] = ("%s:%d:%s"):format(src.path, #text, bit.tohex(h, 8))
  end
  fingerprints[name] = table.concat(parts, ";")
  return fingerprints[name]
end

return M
