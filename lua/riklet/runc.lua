-- riklet.runc — the runc CLI, driven over riklet.proc (every call yields, never blocks the loop).
-- Every function returns a value (true, a table) or nil, err where err names the command, the
-- container and what runc said.
--
--   runc.init(cfg) -> true | nil, err        cfg.runc (binary), cfg.runc_root (--root directory)
--   (`runc create` is run by conmon: see riklet.conmon)
--   runc.log_error(path) -> the last error message in a runc --log file (JSON lines) | nil
--   runc.start(id) -> true | nil, err
--   runc.state(id) -> {id=, pid=, status=, bundle=, created=} | nil, err, missing:boolean
--   runc.kill(id, signal="TERM", {all=bool}) -> true | nil, err   (a stopped container: true, "not running")
--   runc.delete(id, {force=bool}) -> true | nil, err             (an absent container: true, "absent")
--   runc.exec(id, argv, timeout) -> {code=, signal=, stdout=, stderr=, timed_out=} | nil, err
--       argv run in the running container (its user, env, cwd), as kubelet runs exec probes/hooks
--   runc.list() -> array of {id=, pid=, status=, bundle=, created=} | nil, err
--   runc.exists(id) -> boolean   runc has a container ID in its root (its state directory is
--       there: what makes `runc create ID` refuse); no runc process, so cheap on a start's path
--   runc.valid_id(id) -> boolean      runc.root() / runc.binary() -> the configured --root / binary
--   runc.throttled(fn, ...) -> fn(...)'s results, run while holding one of the --runtime-parallel
--       slots that every runc command (and conmon's runc create, riklet.conmon) takes; runc
--       commands (start, kill, delete, state: work on containers that exist) go before creates
--       (a create at least after every 4 of them), those of a lifecycle step already under way
--       first, oldest first (riklet.task semaphore, riklet.lifecycle step)
--   runc.slot_free([promised]) -> boolean   one of those slots is free now, nobody waiting
local fs = require "riklet.fs"
local json = require "riklet.json"
local oci = require "riklet.oci"
local proc = require "riklet.proc"

local M = {}
local cfg = { runc = "runc", root = "/run/riklet/runc", timeout = 60 }

-- --runtime-parallel N: at most N runc processes at once (default twice the CPUs; 0: no cap). runc
-- create/start/delete are CPU-bound (~0.1-0.3 s of CPU each): with 1,000 Pods created at once,
-- 1,000 runc processes on a few cores made each one take minutes (past its 60 s timeout: the Pod
-- FAILED), for no more throughput; twice the CPUs keeps them busy (one runs while another waits on
-- its I/O or its child). The others wait their turn in order, commands on existing containers
-- first (else a created container waits for every create queued before its start), and among
-- them those of a step under way first, in the order the steps got their first slot (else 1,000
-- Pods removed at once all get their kill before any gets its delete); a create still gets a
-- slot after every 4 of them (one arriving during a mass teardown does not wait for all of it). A lifecycle step's deadline
-- does not count that wait (riklet.lifecycle).
local slots = require("riklet.task").semaphore(4)
function M.throttled(fn, ...) return slots:with(fn, ...) end
-- runc.slot_free([promised]) -> boolean: a --runtime-parallel slot is free now and nobody waits
-- for one (with promised more slots counted as held: riklet.conmon's held conmons)
function M.slot_free(promised)
  return slots.held + (promised or 0) < slots.n and slots.first:len() == 0 and slots.waiting:len() == 0
end

function M.init(config)
  config = config or {}
  cfg.runc = config.runc or cfg.runc
  cfg.root = config.runc_root or config.root or cfg.root
  local par = tonumber(config.runtime_parallel)
  if not par then
    local cpu = require("riklet.metrics").cpu()
    par = 2 * math.max(1, cpu and tonumber(cpu.total) or 1)
  end
  slots.n = par >= 1 and math.floor(par) or 1e9
  if cfg.root:sub(1, 1) ~= "/" then return nil, ("runc root %q must be an absolute path"):format(cfg.root) end
  local ok, err = fs.mkdir_p(cfg.root, "0700")
  if not ok then return nil, "cannot create the runc state directory: " .. err end
  local r, rerr = proc.run({ cfg.runc, "--version" }, { timeout = 10 })
  if not r then
    return nil, ("runc (%s) could not be started: %s; install it (apt-get install runc) or set --runc"):format(cfg.runc, tostring(rerr))
  end
  if r.code ~= 0 then
    return nil, ("%s --version failed (%s): %s"):format(cfg.runc, proc.describe(r.code, r.signal), (r.stderr or ""):gsub("%s+$", ""))
  end
  cfg.version = (r.stdout or ""):match("runc version (%S+)")
  return true
end

-- runc ids: what runc itself accepts, bounded; they come from instance ids and container names.
-- An id may start with '-' (a manifest named --help.json): every command passes "--" before it,
-- so runc never takes an id for an option.
function M.valid_id(id)
  return type(id) == "string" and #id <= 1024 and fs.safe_name(id, 1024) and id:sub(1, 1) ~= "." and true or false
end

local function check_id(id, what)
  if not M.valid_id(id) then
    return nil, ("runc %s: invalid container id %q (allowed: letters, digits, '.', '_', '-')"):format(what, tostring(id))
  end
  return true
end

-- runc writes `time="…" level=error msg="…"`: keep the messages.
local function runc_msg(s)
  s = s or ""
  local msgs = {}
  for line in s:gmatch("[^\n]+") do
    local m = line:match('msg="(.-)"%s*$') or line:match('msg="(.-)"')
    if not m then
      local ok, j = pcall(json.decode, line)
      if ok and type(j) == "table" and j.msg then m = j.msg end
    end
    msgs[#msgs + 1] = (m or line):gsub('\\"', '"')
  end
  local out = table.concat(msgs, "; ")
  if #out > 800 then out = "..." .. out:sub(-800) end
  return out
end

local function run(args, what, id, timeout)
  local argv = { cfg.runc, "--root", cfg.root }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r, err = slots:with_first(proc.run, argv, { timeout = timeout or cfg.timeout })
  if not r then
    return nil, ("runc %s %s: runc (%s) could not be started: %s"):format(what, id or "", cfg.runc, tostring(err))
  end
  if r.timed_out then
    return nil, ("runc %s %s did not finish within %gs (killed)"):format(what, id or "", timeout or cfg.timeout), r
  end
  if r.code ~= 0 then
    return nil, ("runc %s %s failed (%s): %s"):format(what, id or "", proc.describe(r.code, r.signal), runc_msg(r.stderr)), r
  end
  return r
end

-- runc's own account of a failure, from the end of its --log (JSON lines): the last error message.
function M.log_error(path)
  local tail = fs.tail(path, 4096) or ""
  local last
  for line in tail:gmatch("[^\n]+") do
    local okj, j = pcall(json.decode, line)
    if okj and type(j) == "table" and j.level == "error" and j.msg then last = j.msg end
  end
  return last
end

function M.start(id)
  local ok, err = check_id(id, "start")
  if not ok then return nil, err end
  local r, rerr = run({ "start", "--", id }, "start", id)
  if not r then return nil, rerr end
  return true
end

function M.state(id)
  local ok, err = check_id(id, "state")
  if not ok then return nil, err end
  local r, rerr, raw = run({ "state", "--", id }, "state", id, 30)
  if not r then
    local missing = raw and (raw.stderr or ""):find("does not exist", 1, true) ~= nil
    if missing then return nil, ("container %s does not exist in runc (root %s)"):format(id, cfg.root), true end
    return nil, rerr, false
  end
  local st, perr = oci.parse_state(r.stdout or "")
  if not st then return nil, ("runc state %s: %s"):format(id, perr), false end
  return st
end

function M.exists(id)
  if not M.valid_id(id) then return false end
  return fs.exists(cfg.root .. "/" .. id)
end

local function signame(sig)
  if sig == nil then return "TERM" end
  if type(sig) == "number" then return tostring(math.floor(sig)) end
  sig = tostring(sig):upper():gsub("^SIG", "")
  if not sig:match("^[A-Z0-9+-]+$") then return nil end
  return sig
end

function M.kill(id, signal, opts)
  local ok, err = check_id(id, "kill")
  if not ok then return nil, err end
  local sig = signame(signal)
  if not sig then return nil, ("runc kill %s: invalid signal %q"):format(id, tostring(signal)) end
  local args = { "kill" }
  if opts and opts.all then args[#args + 1] = "--all" end
  args[#args + 1] = "--"
  args[#args + 1] = id
  args[#args + 1] = sig
  local r, rerr, raw = run(args, "kill", id, 30)
  if not r then
    local e = raw and raw.stderr or ""
    if e:find("not running", 1, true) or e:find("process already finished", 1, true) then
      return true, "not running"
    end
    return nil, rerr
  end
  return true
end

function M.delete(id, opts)
  local ok, err = check_id(id, "delete")
  if not ok then return nil, err end
  local args = { "delete" }
  if opts and opts.force then args[#args + 1] = "--force" end
  args[#args + 1] = "--"
  args[#args + 1] = id
  local r, rerr, raw = run(args, "delete", id, 60)
  if not r then
    if raw and (raw.stderr or ""):find("does not exist", 1, true) then return true, "absent" end
    return nil, rerr
  end
  return true
end

function M.exec(id, argv, timeout)
  local ok, err = check_id(id, "exec")
  if not ok then return nil, err end
  local args = { cfg.runc, "--root", cfg.root, "exec", "--", id }
  for _, a in ipairs(argv) do args[#args + 1] = a end
  local r, rerr = proc.run(args, { timeout = timeout })
  if not r then return nil, ("runc exec %s: runc (%s) could not be started: %s"):format(id, cfg.runc, tostring(rerr)) end
  return r
end

function M.list()
  local r, err = run({ "list", "--format", "json" }, "list", nil, 30)
  if not r then return nil, err end
  local out = (r.stdout or ""):gsub("%s+$", "")
  if out == "" or out == "null" then return {} end
  local arr, derr = json.decode(out)
  if type(arr) ~= "table" then return nil, "runc list: cannot parse its output: " .. tostring(derr) end
  local res = {}
  for _, s in ipairs(arr) do
    res[#res + 1] = { id = s.id, pid = s.pid, status = s.status, bundle = s.bundle, created = s.created }
  end
  return res
end

function M.root() return cfg.root end
function M.binary() return cfg.runc end

return M
