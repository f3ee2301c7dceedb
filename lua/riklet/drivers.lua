-- riklet.drivers — the instance drivers' code, loaded on demand (issue 12, idle memory).
--
-- A node with nothing to adopt or clean up (no record, no instance directory, no runc container,
-- --network none) loads neither the Pod nor the Function driver at start: each is loaded by the
-- first create of its kind (riklet.agent, riklet.lifecycle.register_lazy). Their code is about a
-- quarter of the Lua heap of an idle agent.
--
-- Broken or missing code must still stop riklet at start, not fail a create at 3 a.m.:
--   drivers.check(cfg) -> modules | nil, err
--       loads every on-demand module (syntax, top-level code, every module it requires) and runs
--       the drivers' check_config(cfg) (the options only they read), then drops what it loaded;
--       returns the names of the Lua modules that took. `riklet check` runs it.
--   drivers.check_apart(cfg) -> n | nil, err
--       the daemon's start-up check (riklet.check with startup): the same in a child process
--       (`riklet check-drivers ARGS...`: the daemon's own arguments), so that loading does not
--       grow the agent's heap; remembers which modules it loaded, for hold.
--   drivers.hold(): called by the agent when it chose to load the drivers on demand, once what it
--       runs at start is loaded: keeps the files of those modules still not loaded open, and loads
--       each from its file at its first require: a package upgrade replacing the files under a
--       running riklet, or a node out of file descriptors, cannot break or mix the code it runs.
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"

local M = {}

-- kind -> module of its driver, in the order they are loaded
M.KINDS = { { kind = "Pod", module = "riklet.pod" }, { kind = "Function", module = "riklet.function" } }
-- what check loads: the drivers, the VM backends the Function driver picks at init, and the
-- workload validator (riklet.lifecycle loads it at the first create or adoption)
M.MODULES = { "riklet.pod", "riklet.function", "riklet.vmm.qemu", "riklet.vmm.firecracker", "riklet.workload" }

local held = {} -- module name -> { reader = fs reader, path = file }
local pending = {} -- the modules check_apart found, for hold

-- The searcher that loads a held module from its open file (before package.path's searcher).
local function held_searcher(name)
  local h = held[name]
  if not h then return nil end
  held[name] = nil
  local parts = {}
  while true do
    local s, err = h.reader:read()
    if not s then
      h.reader:close()
      error(("cannot read %s (module %s, opened at start): %s"):format(h.path, name, tostring(err)), 0)
    end
    if s == "" then break end
    parts[#parts + 1] = s
  end
  h.reader:close()
  local fn, err = loadstring(table.concat(parts), "@" .. h.path)
  if not fn then error(err, 0) end
  return fn
end

local installed = false
local function install_searcher()
  if installed then return end
  installed = true
  table.insert(package.loaders, 2, held_searcher)
end

-- The file package.path gives module `name`, or nil.
local function file_of(name)
  local f = name:gsub("%.", "/")
  for tmpl in package.path:gmatch("[^;]+") do
    local p = tmpl:gsub("%?", f)
    if fs.exists(p) then return p end
  end
end

function M.check(cfg)
  local before = {}
  for k in pairs(package.loaded) do before[k] = true end
  local err
  for _, name in ipairs(M.MODULES) do
    local ok, mod = pcall(require, name)
    if not ok then
      err = ("cannot load %s: %s"):format(name, tostring(mod))
      break
    end
    if type(mod) == "table" and mod.check_config then
      local cok, cerr = mod.check_config(cfg)
      if not cok then
        err = tostring(cerr)
        break
      end
    end
  end
  -- drop what was loaded here (a built-in C module stays loaded)
  local loaded = {}
  for name in pairs(package.loaded) do
    if not before[name] and not package.preload[name] then
      package.loaded[name] = nil
      loaded[#loaded + 1] = name
    end
  end
  if err then return nil, err end
  table.sort(loaded)
  return loaded
end

-- `riklet check-drivers ARGS...`: drivers.check in a process of its own; prints the modules, one a
-- line, or the error on stderr (exit 1)
function M.child(cfg)
  local mods, err = M.check(cfg)
  if not mods then
    io.stderr:write(err, "\n")
    return 1
  end
  io.stdout:write(table.concat(mods, "\n"), "\n")
  return 0
end

function M.check_apart(cfg)
  local argv = { "/proc/self/exe", "check-drivers" }
  for _, a in ipairs(core.args()) do argv[#argv + 1] = a end
  local r, err = proc.run(argv, { timeout = 120 })
  if not r then return nil, ("cannot run `riklet check-drivers`: %s"):format(tostring(err)) end
  if r.code ~= 0 then
    local msg = (r.stderr or ""):gsub("%s+$", "")
    return nil, msg ~= "" and msg:sub(-2000) or ("`riklet check-drivers` failed (%s)"):format(proc.describe(r.code, r.signal))
  end
  pending = {}
  for name in (r.stdout or ""):gmatch("[^\n]+") do pending[#pending + 1] = name end
  return #pending
end

-- drivers.hold(): once the agent has loaded what it runs at start and chose to load the drivers on
-- demand, keep open the files of the checked modules still not loaded (none are held when the
-- drivers are loaded at start: a node with many instances may be short of descriptors)
function M.hold()
  for _, name in ipairs(pending) do
    local path = not package.loaded[name] and not held[name] and file_of(name)
    local reader = path and fs.open_read(path)
    if reader then held[name] = { reader = reader, path = path } end
  end
  pending = {}
  install_searcher()
end

-- drivers.held() -> names of the modules held open, sorted (for tests and the debug log)
function M.held()
  local out = {}
  for name in pairs(held) do out[#out + 1] = name end
  table.sort(out)
  return out
end

return M
