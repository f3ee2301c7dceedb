-- riklet.procscan — the node's processes and their command lines, read from /proc. The boot's
-- reconcile looks for riklet's conmons (riklet.conmon) and its VMMs (riklet.vmmproc) among every
-- process of the node: at 1,000 Pods that is ~2,000 command lines, read once for both.
--
--   procscan.cmdlines() -> array of { pid = N, cmd = "ARG0\0ARG1\0...\0" }: each process whose
--       command line could be read and is not empty (not a zombie, not a kernel thread). A
--       candidate list only: pids are recycled, so what a caller acts on (kills, stops) it checks
--       again on the process itself first (conmon.stop, vmmproc.find).
--   procscan.same_user(pid[, own_pidns]) -> boolean | nil: the process runs as riklet's user (its
--       real uid, /proc/PID/status); nil when that cannot be read. Any user can give a process the
--       command line of riklet's conmons or VMMs, not riklet's uid (root): another user's process is
--       none of riklet's, whatever it names (one at a recycled pid too). own_pidns: and it is in no
--       pid namespace below riklet's (NSpid: no more levels than riklet's own): a container's
--       process runs as root on the node (no user namespace) and can name itself a conmon, not
--       leave its container's pid namespace, where no conmon of riklet's runs.
--   procscan.claim(pid, is_it) -> claim | false | nil, err: a handle on the process that has pid
--       now, for a signal that must reach the process riklet checked and nothing else: a pidfd
--       (pidfd_open) is opened first, then is_it(pid) is asked (the re-check: command line, uid,
--       start time), and the claim is returned only when it says true. false: it says no (or nil:
--       cannot tell), or no process has pid; nil, err: no pidfd could be opened (no fd left).
--       claim:signal(signo) -> true | false (it ended meanwhile: nothing was sent, whatever has
--       its pid now included) | nil, err. Without pidfds (ENOSYS, Linux < 5.3) it signals the pid,
--       as riklet did before. claim:close() (idempotent).
--   procscan.signal_if(pid, signo, is_it) -> true (sent) | false (not it, or gone) | nil, err:
--       claim, signal, close.
--   procscan.with_claim(pid, is_it, fn, ...) -> fn(claim, ...)'s results, the claim closed after
--       it (fn raising too) | false | nil, err (as claim: fn not called).
--   procscan.shared(fn, ...) -> fn(...)'s results: while fn runs, every cmdlines() call returns one
--       listing, taken at the first of them (it may be older than fn's later calls: a process
--       started meanwhile is not in it, one ended meanwhile still is). Calls may nest. Shared
--       within fn's own task only: another task's cmdlines() while fn waits reads /proc afresh.
local core = require "riklet.core"
local fs = require "riklet.fs"
local proc = require "riklet.proc"

local M = {}

-- per task (coroutine): another task running while fn waits gets a listing of its own
local shares = setmetatable({}, { __mode = "k" }) -- coroutine -> { depth = N, listing = array }
local MAIN = {} -- (the key outside any coroutine)

local function scan()
  local out = {}
  for _, name in ipairs(fs.list("/proc") or {}) do
    local pid = name:match("^%d+$") and tonumber(name)
    local cmd = pid and fs.read("/proc/" .. name .. "/cmdline", 65536)
    if cmd and cmd ~= "" then out[#out + 1] = { pid = pid, cmd = cmd } end
  end
  return out
end

-- how many pid namespaces a process is in, counted from /proc's (its NSpid: line), or nil
local function nspid_depth(status)
  local l = status and status:match("\nNSpid:([^\n]*)")
  if not l then return nil end
  local n = 0
  for _ in l:gmatch("%d+") do n = n + 1 end
  return n
end
local own_depth -- riklet's (read once; false: unknown)

function M.same_user(pid, own_pidns)
  local s = fs.read("/proc/" .. pid .. "/status", 8192)
  if not s then return nil end
  local uid = tonumber(s:match("\nUid:%s+(%d+)"))
  if uid == nil or uid ~= core.getuid() then return false end
  if own_pidns then
    if own_depth == nil then own_depth = nspid_depth(fs.read("/proc/self/status", 8192)) or false end
    local depth = nspid_depth(s)
    if own_depth and depth and depth > own_depth then return false end
  end
  return true
end

-- (a check between two reads of /proc is no guarantee: the pid may be recycled between the check
-- and a kill(pid); a pidfd opened before the check names the process, not the pid)
local Claim = {}
Claim.__index = Claim

function Claim:signal(sig)
  if self.closed then error("procscan claim: signal after close", 2) end
  if not self.fd then
    local ok, err = proc.kill(self.pid, sig)
    if ok then return true end
    if not proc.alive(self.pid) then return false end
    return nil, err
  end
  local ok, err, name = self.fd:signal(sig)
  if ok then return true end
  if name == "ESRCH" then return false end
  return nil, ("cannot signal process %d: %s"):format(self.pid, tostring(err))
end

function Claim:close()
  if self.fd then self.fd:close() end
  self.fd, self.closed = nil, true
end

function M.claim(pid, is_it)
  local fd, err, name = proc.pidfd(pid)
  if not fd and name == "ESRCH" then return false end
  if not fd and name ~= "ENOSYS" then return nil, err end
  local ok, yes = pcall(is_it, pid)
  if not (ok and yes == true) then
    if fd then fd:close() end
    if not ok then error(yes, 0) end
    return false
  end
  return setmetatable({ pid = pid, fd = fd or nil }, Claim)
end

function M.signal_if(pid, sig, is_it)
  local c, err = M.claim(pid, is_it)
  if not c then return c, err end
  local ok, serr = c:signal(sig)
  c:close()
  return ok, serr
end

function M.cmdlines()
  local sh = shares[coroutine.running() or MAIN]
  if not sh then return scan() end
  sh.listing = sh.listing or scan()
  return sh.listing
end

local function packed(...) return { n = select("#", ...), ... } end

function M.with_claim(pid, is_it, fn, ...)
  local c, err = M.claim(pid, is_it)
  if not c then return c, err end
  local res = packed(pcall(fn, c, ...))
  c:close()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

function M.shared(fn, ...)
  local key = coroutine.running() or MAIN
  local sh = shares[key] or { depth = 0 }
  shares[key], sh.depth = sh, sh.depth + 1
  -- (an error in fn ends the sharing too: it is raised again with fn's traceback)
  local res = packed(xpcall(fn, debug.traceback, ...))
  sh.depth = sh.depth - 1
  if sh.depth == 0 then shares[key] = nil end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

return M
