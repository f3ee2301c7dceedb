-- riklet.conmon — every container runs under conmon (the monitor CRI-O and Podman use): conmon
-- runs `runc create`, holds the container's stdio, writes its output in the CRI (k8s-file) log
-- format with a size cap, reaps it and writes its exit status to a file, whether or not riklet
-- is alive. riklet keeps runc for start / kill / delete / state (riklet.runc).
--
--   conmon.init(cfg) -> true | nil, err     cfg.conmon (binary), cfg.log_size_max (bytes)
--   conmon.files(dir) -> {pid=, conmon_pid=, exit_dir=, exit=, runc_log=, out=}   a container's files
--   conmon.create(id, dir, {log=, name=, timeout=, on_conmon=fn(pid), run=bool}) -> mon | nil, err
--       starts conmon, which runs `runc create` for the bundle `dir`; returns once runc has
--       created the container (conmon's sync pipe says so): mon.pid (container init), mon.conmon_pid.
--       on_conmon is called with conmon's pid as soon as it is known. run = true (when
--       conmon.can_run()): conmon's runtime is riklet-runc-run, which makes its `create` `runc create`
--       + `runc start` in one runtime invocation for conmon: the container runs when this returns
--       (mon.started), riklet runs no `runc start`.
--       prepare = fn() -> true | nil, err: conmon is started first, held on its start pipe
--       (_OCI_STARTPIPE) while fn does the rest of the container's preparation beside conmon's own
--       start-up, and let go only when fn returns true; otherwise (or fn raises) conmon is ended
--       before it has started anything, and create returns nil, fn's err, nil, true. With every
--       --runtime-parallel slot busy, fn runs first and conmon is started after it, as without it.
--   conmon.can_run() -> boolean             riklet-runc-run was found (beside riklet's binary)
--   conmon.monitor({id=, dir=, conmon_pid=, pid=}) -> mon   watch a container (after a riklet
--       restart); mon.ended is a task.event set once with {code=, signal=, describe=} when the
--       container has ended for sure: conmon's exit file, or conmon gone and runc saying stopped or
--       absent. A failed watch is never an exit: it is logged and re-checked.
--   conmon.ended(status) -> mon             a monitor already ended (an exit file found at adoption)
--   conmon.exit_status(dir) -> {code=, signal=, describe=} | nil   from conmon's exit file
--   conmon.alive(pid, id) -> boolean        pid is the conmon of container id (no fd needed)
--   conmon.runtime(pid, init) -> pid | false | nil   conmon pid's runtime child (riklet-runc-run, or
--       its runc create; init, the container's, aside); false: none left; nil: /proc cannot tell.
--       conmon.init_pid(dir) -> pid | nil: init's pid from runc's pid file (the shim's too).
--       conmon.NEVER_STARTED: the status of a container whose start nothing will finish
--   conmon.adopt_start({id=, dir=, conmon_pid=, pid=, state=}) -> mon   watch a start that was in
--       flight when riklet stopped (after a riklet restart; state: runc's word, when the caller
--       asked runc after it saw the runtime gone, else nil): a monitor as conmon.monitor's, and mon.start_done, a task.event set once with true when
--       the container was started and its conmon is alive, false otherwise (mon.ended then says
--       how it ended, or is taken as ended). conmon dies as that start ends (its line meets the closed
--       pipe of the riklet that asked for it: conmon 2.1.6), so such a monitor takes a conmon gone
--       while the container runs as the container's end (CONMON_LOST); a start still in flight
--       conmon's create limit (60 s) after conmon's start (its pid file's time) is ended: conmon
--       stopped (its runtime and runc with it: PDEATHSIG), the container taken as ended.
--   conmon.stop(pid, id[, why])             SIGKILL a conmon still there after its container is gone
--       (why: what the log says instead)
--   conmon.list() -> { {pid=, cid=, bundle=}, ... }   conmons running for riklet's runc root
--   conmon.clean(dir)                       remove conmon's and runc's per-run files (not the log)
--
-- conmon is started without --sync: it double-forks and its daemon is re-parented to riklet (a
-- child subreaper), so a running riklet reaps it; after a riklet restart it belongs to init and is
-- watched through a pidfd. The end of runc create (run) comes through conmon's sync pipe
-- (_OCI_SYNCPIPE, riklet.proc's sync_pipe), read by a task on the loop, or, when it comes first,
-- runc renaming the pid file into place (inotify, see watch_pid): no polling. A restarted
-- riklet knows conmon and the container by their pid files and the exit file. Exit statuses: conmon writes 128+N for a container killed by signal N; it is
-- reported as signal N (an exit(137) of the process itself reads the same, as in a shell).
local core = require "riklet.core"
local fs = require "riklet.fs"
local json = require "riklet.json"
local proc = require "riklet.proc"
local procscan = require "riklet.procscan"
local runc = require "riklet.runc"
local task = require "riklet.task"

local M = {}
local cfg = { conmon = "conmon", log_size_max = 10 * 1024 * 1024, timeout = 60 }

-- riklet-runc-run (shim/riklet-runc-run.c): installed beside riklet (bin/), built beside it
-- (build/); RIKLET_RUNC_RUN names another one, "" turns one-invocation starts off.
local function find_run_shim()
  local env = os.getenv("RIKLET_RUNC_RUN")
  if env then return env ~= "" and env or nil end
  local exe = core.paths().exe
  local dir = exe and exe:match("^(.*)/[^/]+$")
  local path = dir and dir .. "/riklet-runc-run"
  local st = path and fs.stat(path)
  return st and st.type == "file" and path or nil
end

local function log(level, fmt, ...) core.log(level, "conmon", fmt:format(...)) end

function M.init(config)
  config = config or {}
  cfg.conmon = config.conmon or cfg.conmon
  local max = tonumber(config.log_size_max)
  if max then cfg.log_size_max = math.max(4096, math.floor(max)) end
  local r, err = proc.run({ cfg.conmon, "--version" }, { timeout = 10 })
  if not r then
    return nil, ("conmon (%s) could not be started: %s; install it (apt-get install conmon) or set --conmon"):format(cfg.conmon, tostring(err))
  end
  if r.code ~= 0 then
    return nil, ("%s --version failed (%s): %s"):format(cfg.conmon, proc.describe(r.code, r.signal), (r.stderr or ""):gsub("%s+$", ""))
  end
  cfg.version = (r.stdout or ""):match("conmon version (%S+)")
  cfg.run_shim = find_run_shim()
  if not cfg.run_shim then
    log("info", "riklet-runc-run is not beside riklet (%s): containers are started with runc create + "
      .. "runc start (one runc process more per start), and a runtime writing more than 64 KiB on stderr "
      .. "during a create blocks it until the create's deadline", tostring(core.paths().exe))
  end
  return true
end

function M.version() return cfg.version end
function M.can_run() return cfg.run_shim ~= nil end

function M.files(dir)
  return {
    pid = dir .. "/init.pid", conmon_pid = dir .. "/conmon.pid", exit_dir = dir .. "/exit",
    exit = dir .. "/exit/exit", runc_log = dir .. "/runc.log", out = dir .. "/conmon.out",
  }
end

local function read_pid(path)
  local s = fs.read(path, 64)
  return s and tonumber(s:match("^%s*(%d+)%s*$"))
end

-- runc is handed to conmon as an absolute path (conmon checks it with access(X_OK)).
local function runc_path()
  local bin = runc.binary()
  if bin:find("/", 1, true) then return bin end
  for dir in (os.getenv("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"):gmatch("[^:]+") do
    local st = fs.stat(dir .. "/" .. bin)
    if st and st.type == "file" then return dir .. "/" .. bin end
  end
  return nil, ("runc (%s) is not on PATH (%s): install it (apt-get install runc) or set --runc"):format(bin, os.getenv("PATH") or "")
end

-- The status in conmon's exit file: a number, 128+N for a container killed by signal N.
function M.exit_status(dir)
  local path = M.files(dir).exit
  if not fs.exists(path) then return nil end
  local s, err = fs.read(path, 64)
  if not s then return nil, err end
  local n = tonumber(s:match("^%s*(-?%d+)%s*$"))
  if not n or n < 0 then
    return { code = -1, describe = ("ended (conmon recorded no exit code: %q)"):format(s:sub(1, 32)) }
  end
  if n > 128 and n <= 128 + 64 then
    return { signal = n - 128, describe = proc.describe(nil, n - 128) }
  end
  return { code = n, describe = proc.describe(n, nil) }
end

-- (another user's process is no conmon of riklet's, whatever its command line, nor a process in a
-- pid namespace below riklet's: a container's, root on the node, naming itself a conmon at a
-- recycled conmon pid; procscan.same_user)
local same_user = procscan.same_user

-- Is pid the conmon of container id? true, false, or nil when its command line or owner cannot be
-- read (no fd left; a zombie has an empty command line: false). kill(0) first: it needs no fd. The
-- command line and the owner rule out a recycled pid and another user's imitation.
local function is_conmon_of(pid, id)
  if not pid or not proc.alive(pid) then return false end
  local cmd = fs.read("/proc/" .. pid .. "/cmdline", 65536)
  if not cmd then return fs.exists("/proc/" .. pid) and nil end
  if not cmd:match("^[^%z]*"):match("conmon$") then return false end
  -- an argument after the first (each ends with a NUL), found without splitting the command line:
  -- a re-adoption asks this for every Pod
  local function arg(a) return cmd:find("\0" .. a .. "\0", 1, true) ~= nil end
  if not (arg("--cid=" .. id) or arg("-c\0" .. id) or arg("--cid\0" .. id)) then return false end
  local mine = same_user(pid, true)
  if mine == nil then return fs.exists("/proc/" .. pid) and nil end
  return mine
end

M.NEVER_STARTED = "never started (riklet stopped while it was being started, and what was to start it is gone)"
M.CONMON_LOST = "started after riklet stopped, without its conmon (conmon ends when its report of the start meets "
  .. "the closed pipe of the riklet that asked for it): its output would go nowhere and its exit status be lost; "
  .. "taken as ended"

-- conmon pid's runtime: its children, from /proc, but the container's init (conmon's child too:
-- it is a subreaper) and zombies. -> the pid of the one left | false (none) | nil (cannot be read,
-- or more than one: no evidence). conmon 2.1.6 whose runtime failed (riklet-runc-run killed between
-- runc create and runc start) waits for ever to read the runtime's stderr, whose write end the
-- created container holds.
function M.runtime(pid, init)
  local kids = fs.read(("/proc/%d/task/%d/children"):format(pid, pid), 65536)
  if not kids then return nil end
  local found = false
  for kid in kids:gmatch("%d+") do
    kid = tonumber(kid)
    if kid ~= init then
      local st = fs.read("/proc/" .. kid .. "/stat", 4096)
      if not st then return nil end
      if st:match("^%d+ %b() (%a)") ~= "Z" then
        if found then return nil end
        found = kid
      end
    end
  end
  return found
end

-- The pid of container dir's init from runc's pid file: conmon's --container-pidfile, or the one
-- riklet-runc-run has runc write until the container runs (renamed into place then); nil: none yet
-- (runc create has not finished: its init is not conmon's child yet).
function M.init_pid(dir)
  return read_pid(M.files(dir).pid) or read_pid(dir .. "/.riklet-create.init.pid")
end

-- Is pid the conmon of container id? Under an fd limit kill(0) is what we can still ask (alive);
-- the command line and the owner, when readable, rule out a recycled pid and an imitation.
function M.alive(pid, id) return is_conmon_of(pid, id) ~= false end

-- The conmons running for riklet's runc root: { {pid=, cid=, bundle=}, ... } (from /proc, through
-- riklet.procscan: the boot's listing, shared with the VMM search). Candidates: M.stop checks the
-- process again before it kills it.
function M.list()
  local out, root = {}, "\0--runtime-arg=" .. runc.root() .. "\0"
  for _, p in ipairs(procscan.cmdlines()) do
    local cmd = p.cmd
    -- (every process of the node is read at boot: a conmon's arguments are found in its command
    -- line as it is, each after a NUL, without splitting it)
    if cmd:match("^[^%z]*"):match("conmon$") and cmd:find(root, 1, true) then
      local cid, bundle = cmd:match("%z%-%-cid=([^%z]*)"), cmd:match("%z%-%-bundle=([^%z]*)")
      if cid then out[#out + 1] = { pid = p.pid, cid = cid, bundle = bundle } end
    end
  end
  return out
end

-- Kill conmon pid of container id, only on positive evidence that it is that conmon: its
-- /proc/PID/cmdline read and naming the container, run by riklet's user (the pid may come from a
-- record, and pids are recycled; a command line can be imitated). An unreadable command line (no fd left) is no evidence: it is left alone.
-- The signal goes through a pidfd opened before that check (procscan.claim): a conmon that ends
-- between the check and the kill is not replaced by whatever gets its pid next.
-- (procscan.with_claim closes the claim; not claimed: not that conmon, gone, or no fd left for a
-- pidfd: left alone, said nothing)
local function kill_claimed(c, pid, id, why)
  log("warn", "conmon %d of container %s is still there %s: killing it", pid, id, why or "after its container is gone")
  local sent, err = c:signal(9)
  if sent == false then log("info", "conmon %d of container %s ended by itself before the kill", pid, id)
  elseif not sent then log("error", "cannot kill conmon %d of container %s: %s", pid, id, tostring(err)) end
end

function M.stop(pid, id, why)
  if pid then procscan.with_claim(pid, function(p) return is_conmon_of(p, id) end, kill_claimed, pid, id, why) end
end

function M.clean(dir)
  local f = M.files(dir)
  for _, p in ipairs({ f.pid, f.conmon_pid, f.exit, f.out, dir .. "/attach", dir .. "/ctl", dir .. "/winsz" }) do
    fs.unlink(p)
  end
  fs.rm_rf(f.exit_dir)
end

-- ---- monitors ----
local Mon = {}
Mon.__index = Mon

function M.ended(status)
  local mon = setmetatable({ ended = task.event() }, Mon)
  mon.ended:set(status)
  return mon
end

-- Has the container ended for sure? -> status, or nil (still running, or no evidence yet).
local function settle(mon)
  if mon.final then return mon.final end
  local st = M.exit_status(mon.dir)
  if st then return st end
  if mon.conmon_pid and M.alive(mon.conmon_pid, mon.id) then return nil end
  if mon.conmon_pid and fs.exists(M.files(mon.dir).exit) then return M.exit_status(mon.dir) end
  local rs, err, missing = runc.state(mon.id)
  if missing then
    return { code = -1, describe = "ended (exit code unknown: conmon left no exit file and runc has no such container)" }
  end
  if not rs then
    if not mon.warned_runc then
      mon.warned_runc = true
      log("error", "container %s: its conmon is gone and runc cannot tell whether it still runs (%s); "
        .. "checking again until it can", mon.id, tostring(err))
    end
    return nil
  end
  if rs.status == "stopped" then
    return { code = -1, describe = "ended (exit code unknown: conmon left no exit file)" }
  end
  if mon.conmon_pid and mon.start_done then
    -- a start adopted in flight: its conmon died at its report of the start (or was stopped)
    return { code = -1, describe = M.CONMON_LOST }
  end
  if mon.conmon_pid then
    -- conmon died (killed?) and the container lives on: watch its init process instead
    log("warn", "container %s: its conmon (pid %d) is gone but the container runs (pid %s): watching the "
      .. "container's process directly", mon.id, mon.conmon_pid, tostring(rs.pid))
    mon.conmon_pid = nil
    mon.pid = rs.pid
  end
  return nil
end

local function run_monitor(mon)
  local delay = 0.5
  while not mon.cancelled do
    local target = mon.conmon_pid or mon.pid
    local failed, gone
    if target and target > 0 then
      -- proc.watch may raise, return nil, err, or code, signal, err: a failed watch is no exit
      local ok, code, sig, werr = pcall(proc.watch, target)
      if not ok then failed = code
      elseif werr then failed = werr
      elseif type(sig) == "string" then failed = sig
      elseif not mon.conmon_pid and (code or sig) then
        -- the container's own init, re-parented to riklet after its conmon died: a real status
        return { code = code, signal = sig, describe = proc.describe(code, sig) }
      else gone = true end
    end
    local st = settle(mon)
    if st then return st end
    if gone and (mon.conmon_pid or mon.pid) == target then
      -- the process is gone and nothing says yet how the container ended (its exit file cannot be
      -- read, runc cannot answer: no fd left, no runc): the next watch returns at once, so wait
      -- before asking again (it asked again at once, without yielding: the agent froze)
      task.sleep(delay)
      delay = math.min(delay * 2, 5)
    elseif failed then
      if not mon.warned_watch then
        mon.warned_watch = true
        log("error", "container %s: %s (watching process %s); checking its exit file and runc every few "
          .. "seconds instead", mon.id, tostring(failed), tostring(target))
      end
      task.sleep(delay)
      delay = math.min(delay * 2, 5)
    elseif not target or target <= 0 then
      task.sleep(delay)
      delay = math.min(delay * 2, 5)
    end
  end
  return { code = -1, describe = "not watched any more" }
end

function M.monitor(info)
  local mon = setmetatable({
    id = info.id, dir = info.dir, conmon_pid = info.conmon_pid, pid = info.pid, ended = task.event(),
  }, Mon)
  -- a container's end reaches whoever waits for it ahead of the paced task resumes (the monitor's
  -- own resume at the exit, then its waiters'): with 1,000 Pods removed at once, each behind a
  -- pass of the ready tasks, 108 destroys saw the exit only after their 2 s grace and sent a
  -- SIGKILL, one more runc call each (bench_start_lag.sh; none with no budget)
  mon.ended.first = true
  task.spawn(function()
    task.set_first(true)
    local ok, st = pcall(run_monitor, mon)
    if not ok then
      log("error", "container %s: its monitor failed: %s", mon.id, tostring(st))
      st = { code = -1, describe = "ended (riklet's monitor failed: " .. tostring(st) .. ")" }
    end
    mon.ended:set(st)
  end)
  return mon
end

-- A start in flight when riklet stopped, followed to its end: its runtime is watched (its pidfd;
-- looked at again every 0.1-5 s when no watch can be set up), and runc asked only once the runtime
-- was seen gone (its word then is final: nothing else starts the container), within conmon's
-- create limit counted from conmon's start (its pid file's time: a riklet down for longer finds it
-- over at once). state: runc's word asked after the runtime was seen gone (at adoption), or nil.
local function await_start(mon, state)
  local st = fs.stat(M.files(mon.dir).conmon_pid)
  local started = st and st.mtime or core.time()
  local deadline = core.now() + math.max(0, math.min(cfg.timeout, started + cfg.timeout - core.time()))
  local delay, watched, woke = 0.1, nil, task.event()
  while not mon.ended.is_set do
    local kid = M.runtime(mon.conmon_pid, M.init_pid(mon.dir))
    if kid == false then
      local rs, err, missing = state, nil, nil
      if not rs then rs, err, missing = runc.state(mon.id) end
      state = nil
      if rs and rs.status == "created" then
        log("warn", "container %s: its start, in flight when riklet stopped, ended without starting it: taken as ended", mon.id)
        mon.final = { code = -1, describe = M.NEVER_STARTED }
        mon.cancelled = true
        mon.ended:set(mon.final) -- (its conmon, waiting for ever, is stopped with the container)
        return
      end
      if rs and rs.status ~= "creating" then
        -- started (running, or already stopped: its exit file follows); a conmon gone meanwhile:
        -- its monitor says so (CONMON_LOST)
        return mon.start_done:set(M.alive(mon.conmon_pid, mon.id) and not mon.ended.is_set)
      end
      if missing then return end -- its create failed: conmon ends, its monitor says how
      if not rs and not mon.warned_start then
        mon.warned_start = true
        log("error", "container %s: runc cannot tell how its start, in flight when riklet stopped, went (%s); "
          .. "asking again", mon.id, tostring(err))
      end
    end
    if core.now() >= deadline then
      mon.final = { code = -1, describe = ("never started (riklet stopped while it was being started, and that start "
        .. "did not end within %gs: its conmon was stopped, and the start with it)"):format(cfg.timeout) }
      -- (the monitor reports mon.final once conmon is gone)
      M.stop(mon.conmon_pid, mon.id, ("%gs after it started a start that riklet, stopped meanwhile, was waiting "
        .. "for (its start is stuck; the container is taken as ended)"):format(cfg.timeout))
      return
    end
    if kid and kid ~= watched then
      -- (a failed watch wakes nobody: the runtime is looked at again after delay)
      watched, woke = kid, task.event()
      local ev = woke
      task.spawn(function()
        local ok, _, sig, err = pcall(proc.watch, kid)
        if ok and not err and type(sig) ~= "string" then ev:set(true) end
      end)
    end
    woke:wait(math.min(delay, math.max(0.001, deadline - core.now())))
    delay = math.min(delay * 2, 5)
  end
end

function M.adopt_start(info)
  local mon = M.monitor(info)
  mon.start_done = task.event()
  mon.ended:on_set(function() mon.start_done:set(false) end)
  task.spawn(function()
    local ok, err = pcall(await_start, mon, info.state)
    if not ok then
      log("error", "container %s: following its start, in flight when riklet stopped, failed: %s; watched as a "
        .. "running container", mon.id, tostring(err))
    end
    mon.start_done:set(false) -- (unless set already: no start seen with its conmon alive)
  end)
  return mon
end

-- ---- create ----
local create

-- conmon's sync pipe (--api-version 1, conmon's parent_pipe_fd.c): one JSON line once the runtime's
-- create has ended, {"data": PID} (the container's pid, read from its pid file), or {"data": -1,
-- "message": "the runtime's stderr"}; the end of the stream without a line: conmon ended (it failed
-- and had nothing to say, or was killed). conmon keeps its end open until it exits and writes no
-- more for a create: the pipe is closed after the first line. synced is set with the decoded line,
-- or {} at the end of the stream.
local SYNC_MAX = 65536
local function read_line(pipe)
  local buf = ""
  while #buf < SYNC_MAX and not buf:find("\n", 1, true) do
    local data = pipe:read()
    if not data then break end
    buf = buf .. data
  end
  local line = buf:match("^[^\n]*\n")
  local ok, msg = pcall(json.decode, line or "")
  return line and ok and type(msg) == "table" and msg or {}
end

-- runc writes the container's pid file (renamed into place) once the container is created (run:
-- running), then exits; conmon writes its line only after reaping runc: 0-14 ms later (median 8,
-- load 7). An inotify watch of the container's directory (one per create in flight: at most
-- --runtime-parallel at once, far below fs.inotify.max_user_instances) sets synced at the rename.
-- nil when no watch can be made (then the sync pipe alone). Closing the watcher ends its task.
local function watch_pid(dir, pid_file, synced)
  local w = fs.watch_dir(dir)
  if not w then return nil end
  local name = pid_file:match("[^/]+$")
  task.spawn(function()
    while not synced.is_set do
      local events = w:read()
      if not events or #events == 0 then return end -- closed
      for _, ev in ipairs(events) do
        if ev.kind == "overflow" or ev.kind == "written" and ev.name == name then
          local pid = read_pid(pid_file)
          if pid then synced:set({ data = pid }) end
        end
      end
    end
  end)
  return w
end

local function read_sync(pipe, synced)
  task.spawn(function()
    local ok, msg = pcall(read_line, pipe)
    pipe:close()
    if not ok then log("error", "reading conmon's sync pipe failed: %s", tostring(msg)) end
    synced:set(ok and msg or {})
  end)
end

-- one --runtime-parallel slot (riklet.runc) from conmon's start until runc create is done. An early
-- start (opts.prepare) is made only when a slot is free at once, counting the conmons held already
-- (at most --runtime-parallel of them), and holds none while it waits: a conmon held on its start
-- pipe runs no runc, so its slot is taken once the preparation is done, right before conmon is let
-- go (a slow network setup never keeps runc kill/delete of other Pods waiting); with every slot
-- busy, the Pod is prepared first, then conmon started as before
local held = 0
function M.create(id, dir, opts)
  if opts and opts.prepare and runc.slot_free(held) then
    held = held + 1
    local counted = true
    local function unhold()
      if counted then counted, held = false, held - 1 end
    end
    local ok, a, b, c, d = pcall(create, id, dir, opts, false, unhold) -- (create's results: up to 4)
    unhold()
    if not ok then error(a, 0) end
    return a, b, c, d
  end
  if opts and opts.prepare then
    log("debug", "container %s: every --runtime-parallel slot is busy: prepared first, then conmon started", id)
    local ok, err = opts.prepare()
    if not ok then return nil, err, nil, true end
    return runc.throttled(create, id, dir, opts, true)
  end
  return runc.throttled(create, id, dir, opts)
end

-- conmon 2.1.6 reads its start pipe (_OCI_STARTPIPE) once, after parsing its options and opening
-- its log, before it forks its daemon or starts anything; a read error makes it exit, the end of
-- the stream does not (it would go on). riklet.proc's start_pipe is a unix socket pair whose
-- riklet end holds an unread byte: closed unsent (riklet failing or killed meanwhile), conmon's
-- read fails (ECONNRESET) and it exits. Runs prepare while conmon p waits -> true (start still to be
-- sent: release()) | nil, err (conmon ended and reaped); raises prepare's error after ending conmon.
local function hold(id, p, start, start_err, prepare)
  local ok, res, err = true, nil, ("container %s: cannot hold conmon on its start pipe: %s"):format(id, tostring(start_err))
  if start then ok, res, err = pcall(prepare) end
  if ok and res then return true end
  if start then start:close() end -- conmon's read fails: it exits
  p:kill(9)
  p:wait()
  if not ok then error(res, 0) end
  return nil, err
end

-- (a send that fails: conmon ended meanwhile, or its read fails once this end is closed; the wait
-- for its first process then says why, with its output)
local function release(start)
  start:send("1")
  start:close()
end

local after_hold

-- unhold: an early start (M.create), which takes its slot after the preparation; called once
-- conmon's hold is over
create = function(id, dir, opts, prepared, unhold)
  opts = opts or {}
  local prepare = not prepared and opts.prepare or nil
  if not runc.valid_id(id) then return nil, ("invalid container id %q"):format(tostring(id)) end
  if type(opts.log) ~= "string" or opts.log:find(":", 1, true) or dir:find(":", 1, true) then
    return nil, ("container %s: its directory and log path may not contain ':' (conmon's -l DRIVER:PATH)"):format(id)
  end
  local rpath, perr = runc_path()
  if not rpath then return nil, perr end
  local f = M.files(dir)
  for _, p in ipairs({ f.pid, f.conmon_pid, f.exit }) do fs.unlink(p) end
  local ok, err = fs.mkdir_p(f.exit_dir, "0700")
  if not ok then return nil, err end
  -- NAME=VALUE forms and runc's "--" before the id: an id may start with '-' (--help.json)
  -- the shim gets the real runc as its first argument and turns `create` into create + start (run),
  -- or keeps it (--create); either way it reads the runtime's stdout and stderr while create runs
  -- (conmon reads them only after: more than a pipe's 64 KiB blocked the runtime until the
  -- deadline), before the container runs any code; the start goes through runc's exec.fifo (or a
  -- `runc start` with pipes of its own)
  local run = opts.run and cfg.run_shim
  local verb = run and "runc create + start" or "runc create"
  local argv = {
    cfg.conmon, "--api-version", "1", "--cid=" .. id, "--cuuid=" .. id, "--name=" .. (opts.name or id),
    "--runtime=" .. (cfg.run_shim or rpath), "--bundle=" .. dir, "--container-pidfile=" .. f.pid,
    "--conmon-pidfile=" .. f.conmon_pid, "--log-path=k8s-file:" .. opts.log,
    "--log-size-max=" .. tostring(cfg.log_size_max), "--persist-dir=" .. f.exit_dir, "--full-attach",
    "--runtime-arg=--root", "--runtime-arg=" .. runc.root(),
    "--runtime-arg=--log", "--runtime-arg=" .. f.runc_log, "--runtime-arg=--log-format", "--runtime-arg=json",
    "--runtime-opt=--",
  }
  local shim_args = cfg.run_shim and (run and { rpath } or { "--create", rpath }) or {}
  for i, a in ipairs(shim_args) do table.insert(argv, 14 + i, "--runtime-arg=" .. a) end -- the first ones
  assert(argv[15 + #shim_args] == "--runtime-arg=--root")
  local t0 = core.now()
  local timeout = opts.timeout or cfg.timeout
  -- cwd: conmon writes its "oom" file (an OOM kill) into its working directory
  local synced = task.event()
  local watcher = watch_pid(dir, f.pid, synced)
  local p, pipe, pipe_err, start, start_err = proc.spawn(argv, { stdout = f.out, stderr_to_stdout = true, cwd = dir,
    sync_pipe = "_OCI_SYNCPIPE", start_pipe = prepare and "_OCI_STARTPIPE" or nil })
  if not p then
    if watcher then watcher:close() end
    return nil, ("conmon (%s) could not be started: %s"):format(cfg.conmon, tostring(pipe))
  end
  if pipe then
    read_sync(pipe, synced)
  else -- (no fd for the pipe's read end: the pid file is polled instead)
    log("warn", "container %s: cannot read conmon's sync pipe (%s): polling the pid file", id, tostring(pipe_err))
  end
  local ctx = { id = id, dir = dir, opts = opts, f = f, p = p, pipe = pipe, synced = synced, watcher = watcher,
    verb = verb, run = run, t0 = t0, timeout = timeout }
  if prepare then
    log("debug", "container %s: conmon (pid %d) started, held on its start pipe while the container is prepared", id, p.pid)
    local hok, went, herr = pcall(hold, id, p, start, start_err, prepare)
    if not hok or not went then
      -- (the sync pipe's reader ends with conmon)
      if watcher then watcher:close() end
      if not hok then error(went, 0) end
      return nil, herr, nil, true
    end
    ctx.start = start
    if unhold then
      unhold()
      return runc.throttled(after_hold, ctx)
    end
  end
  return after_hold(ctx)
end

-- a runtime's message for a reason: its start and its end (where runc says what failed), about
-- 800 bytes
local function cut(msg)
  if #msg <= 800 then return msg end
  return msg:sub(1, 300) .. (" [... %d bytes ...] "):format(#msg - 780) .. msg:sub(-480)
end

-- the rest of a create, once conmon runs (or is let go: ctx.start): its pid file, then runc's
after_hold = function(ctx)
  local id, dir, opts, f, p, pipe, synced, watcher = ctx.id, ctx.dir, ctx.opts, ctx.f, ctx.p, ctx.pipe, ctx.synced, ctx.watcher
  local verb, run, t0, timeout = ctx.verb, ctx.run, ctx.t0, ctx.timeout
  if ctx.start then
    -- runc's time starts when conmon is let go: the preparation (network, durable record) has
    -- bounds of its own, and the wait for a slot is not runc's
    t0 = core.now()
    release(ctx.start)
  end
  -- the first conmon process forks its daemon, writes its pid file and exits at once
  local code, sig = p:wait()
  local cpid = read_pid(f.conmon_pid)
  if code ~= 0 or not cpid then
    -- (the pipe stays with its reader: conmon 2.1.6 exits when its line meets a closed pipe)
    if watcher then watcher:close() end
    local said = (fs.tail(f.out, 2048) or ""):gsub("%s+$", "")
    return nil, ("conmon for %s failed (%s)%s"):format(id, proc.describe(code, sig),
      said ~= "" and (": " .. said) or (cpid and "" or ": it wrote no pid file"))
  end
  local mon = M.monitor({ id = id, dir = dir, conmon_pid = cpid })
  -- recorded before runc create is done, so that a riklet killed meanwhile leaves a conmon that
  -- the next one knows about (and can stop: it would wait for its container forever)
  if opts.on_conmon then opts.on_conmon(cpid) end
  local function created(pid)
    mon.pid, mon.started = pid, run and true or nil
    return mon
  end
  local function timed_out(pipe_to_close)
    M.stop(cpid, id)
    if pipe_to_close then pipe_to_close:close() end
    mon.cancelled = true
    return nil, ("%s %s (under conmon) did not finish within %gs (conmon killed)"):format(verb, id, timeout), mon
  end
  local said
  if pipe then
    -- wait for runc create (run): conmon's line on the sync pipe, or its end (conmon ended)
    local msg = synced:wait(math.max(0.001, timeout - (core.now() - t0)))
    if watcher then watcher:close() end
    if not msg then return timed_out(pipe) end
    local pid = tonumber(msg.data)
    if pid and pid > 0 and pid == math.floor(pid) then return created(pid) end
    said = type(msg.message) == "string" and cut(msg.message:gsub("%s+$", "")) or nil
    -- (no line: conmon ended; a restarted riklet would read the pid file: so does this one)
    pid = not msg.data and read_pid(f.pid)
    if pid then return created(pid) end
  end
  -- without the pipe: the container's pid file, or conmon's end (it failed), polled every 1/20 of
  -- the time waited so far, from 1 to 10 ms
  if watcher and not pipe then watcher:close() end
  while not pipe do
    local pid = read_pid(f.pid)
    if pid then return created(pid) end
    if mon.ended.is_set or not M.alive(cpid, id) then break end
    if core.now() - t0 > timeout then return timed_out() end
    mon.ended:wait(math.min(math.max((core.now() - t0) / 20, 0.001), 0.01))
  end
  mon.cancelled = true
  local why = runc.log_error(f.runc_log) or said
  return nil, ("%s %s failed under conmon: %s"):format(verb, id, why or ("conmon ended without creating it; see "
    .. f.runc_log)), mon
end

return M
