-- riklet.policy — load operator policies (policies/*.lua) in a sandbox and call them safely.
--
-- A policy file is a chunk returning a table of functions. It runs with an allowlist of globals
-- (no io, os.execute, ffi, require, debug, load*, setfenv), JIT off and an instruction budget so
-- a runaway loop fails the call instead of hanging the agent. A policy in --policy-dir replaces
-- the default of the same name (and sees that default as the global `base`, to wrap it).
-- policy.call(name, fn, ...) returns the function's results, or
-- nil, "policy NAME.FN failed: <message + traceback>"; it never raises.
local core = require "riklet.core"

local M = {}
local INSTRUCTION_BUDGET = 50 * 1000 * 1000

local dirs = { core.paths().policies }
local cache = {}

function M.set_dir(dir)
  dirs = { dir, core.paths().policies }
  cache = {}
end

local function deep_copy_lib(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function sandbox_env()
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    xpcall = xpcall, setmetatable = setmetatable, getmetatable = getmetatable, rawequal = rawequal,
    rawget = rawget, rawset = rawset,
    string = deep_copy_lib(string), table = deep_copy_lib(table), math = deep_copy_lib(math),
    os = { time = os.time, clock = os.clock, date = os.date },
  }
  env._G = env
  return env
end

local function find(name, from)
  for i = from or 1, #dirs do
    local path = dirs[i] .. "/" .. name .. ".lua"
    local f = io.open(path, "r")
    if f then f:close() return path, i end
  end
end

local load_from

-- Load policy `name` from the first of dirs[from..] that has it. An operator's policy sees the
-- default it replaces as the global `base`, so it can wrap it instead of copying it.
function load_from(name, from)
  local path, at = find(name, from)
  if not path then
    return nil, ("no policy '%s' in %s"):format(name, table.concat(dirs, " or ", from or 1))
  end
  local chunk, err = loadfile(path)
  if not chunk then return nil, ("policy %s does not compile: %s"):format(path, err) end
  local env = sandbox_env()
  if at < #dirs then env.base = load_from(name, at + 1) end
  setfenv(chunk, env)
  jit.off(chunk, true)
  local ok, mod = pcall(chunk)
  if not ok then return nil, ("policy %s failed while loading: %s"):format(path, tostring(mod)) end
  if type(mod) ~= "table" then
    return nil, ("policy %s must return a table of functions, it returned a %s"):format(path, type(mod))
  end
  return mod
end

-- policy.load(name) -> table of functions | nil, err
function M.load(name)
  if cache[name] then return cache[name] end
  local mod, err = load_from(name, 1)
  if not mod then return nil, err end
  cache[name] = mod
  return mod
end

local function budget_hook()
  error("policy ran past its instruction budget (an endless loop?)", 2)
end

-- policy.call(name, fn, ...) -> results | nil, err
function M.call(name, fname, ...)
  local mod, err = M.load(name)
  if not mod then return nil, err end
  local f = mod[fname]
  if type(f) ~= "function" then
    return nil, ("policy %s has no function '%s'"):format(name, fname)
  end
  jit.off(f, true)
  debug.sethook(budget_hook, "", INSTRUCTION_BUDGET)
  local res = { xpcall(f, function(m) return debug.traceback(tostring(m), 2) end, ...) }
  debug.sethook()
  if not res[1] then
    return nil, ("policy %s.%s failed: %s"):format(name, fname, tostring(res[2]))
  end
  return unpack(res, 2, table.maxn(res))
end

return M
