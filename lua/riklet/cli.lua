-- riklet.cli — the command line: the agent modes (scheduler, standalone), run, ps, logs, cleanup.
local core = require "riklet.core"
local config = require "riklet.config"
local fs = require "riklet.fs"
local json = require "riklet.json"
local task = require "riklet.task"

local M = {}

local USAGE = [[
riklet %s — the node agent of a RIK cluster: runs Pods (OCI containers with runc) and Functions
(microVMs) for the RIK scheduler, or on its own from a directory of workload manifests.

Usage:
  riklet [--master-ip HOST:PORT | --scheduler URL] [options]   node agent for a RIK scheduler
  riklet --standalone DIR [options]                              no cluster: DIR/*.json are the workloads
  riklet --interlink HOST:PORT|unix:/path [options]             interLink plugin: Kubernetes pods from a virtual kubelet
  riklet run FILE.json [options]        run one workload in the foreground; Ctrl-C destroys it
  riklet ps [--json]                    instances on this node: state, restarts, age, reason
  riklet logs ID [CONTAINER] [--follow] [--timestamps] [--tail N] [--since TIME|10m] [--previous]
                                        output of an instance's containers (kept until it is destroyed)
  riklet cleanup                        destroy every instance and remove everything riklet owns
  riklet check [--json]                 what this node can run, and what to do about what it cannot
  riklet top [--once]                   running instances: CPU %%, memory (peak, limit), pids, OOM kills
  riklet images [--json]                the image cache: size, last use, the instances using each
  riklet prune                          remove every image no instance uses (through the agent if one runs)
  riklet metrics                        riklet's series in the Prometheus text format (agent, instances)
  riklet fault-points                   the fault points RIKLET_FAULT=<point>[:abort|:error] can arm (tests)
  riklet test FILE.lua                  run a Lua test script inside riklet with the real bindings
  riklet version | --help

With no mode, riklet connects to the scheduler at 127.0.0.1:4995 (upstream's default).
Stopping riklet (Ctrl-C, SIGTERM) leaves workloads running; a restarted riklet re-adopts them.
riklet must run as root (runc, mounts, netlink and iptables need it).

Options (each also from the environment variable shown, and from --config FILE.lua):
%s

Files: records in STATE/records/<id>.json, containers and logs in STATE/instances/<id>/,
images in STATE/images/, unpacked root filesystems in STATE/rootfs/.
]]

local function usage() return USAGE:format(core.version, config.help()) end

-- the daemon's errors are log lines: JSON ones under --log-format json
local json_log = false
local function die(fmt, ...)
  if json_log then core.log("error", "riklet", fmt:format(...))
  else io.stderr:write("riklet: ", fmt:format(...), "\n") end
  return 1
end

-- --log-format json asked for on the command line or in the environment (for a command line that
-- does not parse)
local function wants_json_log(argv)
  for i, a in ipairs(argv) do
    if a == "--log-format=json" or (a == "--log-format" and argv[i + 1] == "json") then return true end
  end
  return os.getenv("RIKLET_LOG_FORMAT") == "json"
end

local function need_root(what)
  if core.getuid() ~= 0 then
    return nil, ("%s needs root (runc, overlay mounts, netlink and iptables do): run it with sudo or as root"):format(what)
  end
  return true
end

local function setup(cfg)
  local ok, err = core.log_setup(cfg.log_level, cfg.log_format == "json")
  if not ok then return nil, err end
  cfg.paths = config.paths(cfg)
  ok, err = fs.mkdir_p(cfg.state_dir, "0700")
  if not ok then return nil, ("cannot use the state directory: %s"):format(err) end
  local lock
  lock, err = fs.lock(cfg.paths.lock)
  if not lock then
    return nil, ("%s. One riklet per state directory: stop the other one, or give this one another --state-dir"):format(err)
  end
  cfg.lock = lock
  ok, err = require("riklet.fault").check() if not ok then return nil, err end
  local agent = require "riklet.agent"
  ok, err = agent.init(cfg)
  if not ok then return nil, err end
  return agent
end

-- ---- SIGHUP: the config file and the policies again ----
-- Options that the running agent reads at each use are applied; the others (state dir, network,
-- scheduler, binaries) are reported as needing a restart. Policies: see policy.reload.
local LIVE = { log_level = true, log_format = true, policy_dir = true, stop_grace = true, pull_timeout = true,
  keep_records = true, metrics_interval = true, reconnect_initial = true, reconnect_max = true, reconnect_healthy = true }

local function reload(cfg)
  local policy = require "riklet.policy"
  core.log("info", "riklet", "SIGHUP: reloading " .. (cfg.config and ("the config file " .. cfg.config .. " and ") or "") .. "the policies")
  local fresh, err = config.parse(core.args(), 1)
  local policy_dir = cfg.policy_dir
  if not fresh then
    core.log("error", "riklet", ("SIGHUP: the configuration is not valid, the running one stays in use: %s"):format(err))
  else
    local restart = {}
    for _, o in ipairs(config.options) do
      local k = o[1]:gsub("-", "_")
      local old, new = cfg[k], fresh[k]
      if type(old) == "table" and type(new) == "table" then old, new = table.concat(old, ","), table.concat(new, ",") end
      if old ~= new then
        if LIVE[k] then
          cfg[k] = fresh[k]
          core.log("info", "riklet", ("SIGHUP: --%s is now %s"):format(o[1], tostring(new)))
        elseif k ~= "config" then
          restart[#restart + 1] = "--" .. o[1]
        end
      end
    end
    if #restart > 0 then
      core.log("warn", "riklet", ("SIGHUP: %s changed; that takes effect when riklet restarts"):format(table.concat(restart, ", ")))
    end
    json_log = cfg.log_format == "json"
    local ok, lerr = core.log_setup(cfg.log_level, cfg.log_format == "json")
    if not ok then core.log("error", "riklet", "SIGHUP: " .. lerr) end
  end
  local loaded, failed = policy.reload(cfg.policy_dir ~= policy_dir and (cfg.policy_dir or false) or nil)
  core.log(failed > 0 and "warn" or "info", "riklet", ("SIGHUP: %d polic%s reloaded, %d kept at their previous version"):format(
    loaded, loaded == 1 and "y" or "ies", failed))
end

-- ---- riklet check, and the same checks at start ----
local function check_cmd(cfg)
  local check = require "riklet.check"
  local lines = check.run(cfg)
  local failed = check.failures(lines)
  if cfg.json then
    io.stdout:write(json.encode({ ok = #failed == 0, checks = lines }), "\n")
  else
    io.stdout:write(check.format(lines))
    io.stdout:write(#failed == 0 and "riklet can run the configured workloads on this node\n"
      or ("riklet cannot run here: %d required check%s failed\n"):format(#failed, #failed > 1 and "s" or ""))
  end
  return #failed == 0 and 0 or 1
end

-- Instances recorded as not ended: a node that runs workloads is watched even when a required tool
-- went missing (a missing runc is no evidence that they are gone, and nobody else reports them).
local function live_records(cfg)
  local paths = config.paths(cfg)
  if not fs.exists(paths.records) then return 0 end
  local store = require "riklet.store"
  store.open(paths.records)
  local recs = store.list() or {}
  local n = 0
  for _, r in ipairs(recs) do
    if r.status ~= "TERMINATED" and r.status ~= "FAILED" and not r.destroyed then n = n + 1 end
  end
  return n
end

-- the checks' lines and failures (check.run with startup); the module is used once: its code
-- (about 20 KiB) is not kept for the agent's life
local function preflight_run(cfg)
  local check = require "riklet.check"
  local lines = check.run(cfg, { startup = true })
  package.loaded["riklet.check"] = nil
  return { lines, check.failures(lines) }
end

-- done: preflight_run's result (run beside the re-adoption, see daemon), live: -> the instances not
-- ended (the agent's; live_records reads them from disk)
local function preflight(cfg, done, live)
  done = done or preflight_run(cfg)
  local lines = done[1]
  for _, l in ipairs(lines) do
    if l.status == "warn" then core.log("warn", "check", ("%s: %s; %s"):format(l.name, l.detail, l.fix)) end
  end
  local failed = done[2]
  if #failed == 0 then return true end
  local msg = {}
  for _, l in ipairs(failed) do msg[#msg + 1] = ("%s: %s (%s)"):format(l.name, l.detail, l.fix) end
  live = live and live() or live_records(cfg)
  if live > 0 then
    core.log("error", "check", ("%s; starting anyway to keep watching the %d instance(s) this node runs, but new "
      .. "instances fail until it is fixed (see `riklet check`)"):format(table.concat(msg, "; "), live))
    return true
  end
  return nil, ("cannot start, a required check failed: %s. `riklet check` shows every check"):format(table.concat(msg, "; "))
end

-- ---- the agent daemon ----

-- Memory back to the kernel once a burst of work is over (1,000 Pods created, adopted or removed
-- at once): every TRIM_EVERY seconds, when the Lua heap grew or shrank by a fifth since the last
-- time, or when instances changed state during the previous period and none did during this one
-- (the burst is over), a full collection then malloc_trim (the Lua state lives on glibc's malloc:
-- bindings/main.c). Without it the pages such a burst touched stay resident for good (see the
-- README's Benchmarks). The fifth alone missed the end of a burst: the base, taken during it,
-- counted the creates then in flight (1,000 Pods: a heap of 13.2 MiB left as it was, ~3 MiB of it
-- garbage, from the last RUNNING on). At most one full collection per period.
local TRIM_EVERY = 20
-- One period's decision: st = {base=, seen=, busy=} (the heap after the last full collection, the
-- transitions count at the last look, whether it moved during the previous period); now = the
-- heap, n = the transitions count. -> true when a full collection and a trim are due.
function M.trim_due(st, now, n)
  local quiet_again = st.busy and n == st.seen
  st.busy, st.seen = n ~= st.seen, n
  return now > st.base * 1.2 or now < st.base * 0.8 or quiet_again
end
local trim_due = M.trim_due
-- Between two of those, during a burst, the C heap's free pages are given back as they pile up:
-- every TRIM_CHECK seconds, a malloc_trim alone (no collection: a few ms) when the RSS grew by a
-- quarter and 4 MiB since the last trim. At 1,000 Pods the start's peak RSS was 52-64 MiB for a
-- Lua heap of 10-17 MiB: the rest was freed memory malloc kept until the next trim.
local TRIM_CHECK = 5
local function rss_kib()
  local st = require("riklet.status").proc_status("self")
  return st and st.rss_kib
end
local function trim_after_bursts(agent)
  local lifecycle = require "riklet.lifecycle"
  task.spawn(function()
    -- the first one once the boot is over: during it, a full collection of the heap 1,000 adoptions
    -- are filling (3 % of a restart's CPU) delays them, and what it frees is refilled at once
    agent.wait_booted()
    local status = require "riklet.status"
    task.collect() -- (in steps between which the loop serves others)
    core.trim()
    local st = { base = collectgarbage("count"), seen = lifecycle.transitions(), busy = false }
    status.note_live(st.base)
    local period_start, trimmed_at = core.now(), rss_kib()
    while true do
      task.sleep(TRIM_CHECK)
      local rss = rss_kib()
      if core.now() - period_start >= TRIM_EVERY then -- one period's decision (trim_due)
        period_start = core.now()
        if trim_due(st, collectgarbage("count"), lifecycle.transitions()) then
          task.collect()
          core.trim()
          st.base = collectgarbage("count")
          status.note_live(st.base)
          trimmed_at = rss_kib()
        end
      elseif rss and trimmed_at and rss > trimmed_at * 1.25 and rss > trimmed_at + 4096 then
        core.trim()
        trimmed_at = rss_kib()
      elseif rss and trimmed_at and rss < trimmed_at then
        trimmed_at = rss
      end
    end
  end)
end
local function daemon(cfg)
  -- The agent runs none of the other commands' code (run, ps, logs, top...: ~46 KiB of the Lua
  -- heap): the module is let go before the agent's own modules load, so that they reuse its space
  -- (idle scheduler mode: heap -40 KiB). M.main tail-calls this function, so only what it uses
  -- stays alive; nothing requires riklet.cli again.
  package.loaded["riklet.cli"] = nil
  json_log = cfg.log_format == "json"
  local ok, err = core.log_setup(cfg.log_level, json_log)
  if not ok then return die("%s", err) end
  ok, err = need_root("riklet")
  if not ok then return die("%s", err) end
  -- A restart of a node holding records: the preflight (eight tool runs, 0.6-1.5 s at load 7, all
  -- before the first record was read: tests/bench/bench_scale.sh) runs beside the re-adoption, and
  -- the front-ends start once it passed; failed, it stops riklet as before unless an instance is
  -- live. Without records it runs first: a node that cannot run anything makes nothing.
  -- Not beside with a tight open-files limit (under 256): there the check's tool runs would take
  -- the fds the boot needs for the records and the drivers (test_conmon's ulimit -n 14 restart
  -- ended at "cannot list the instance records: Too many open files").
  local beside
  local rnames = fs.list(config.paths(cfg).records)
  local nofile = require("riklet.status").max_open_files("self")
  if rnames and #rnames > 0 and (not nofile or nofile >= 256) then
    beside = task.event()
    task.spawn(function() beside:set({ pcall(preflight_run, cfg) }) end)
  else
    ok, err = preflight(cfg)
    if not ok then return die("%s", err) end
  end
  -- the code the daemon runs is loaded before anything is adopted: each re-adopted container
  -- holds a file descriptor, and a node out of them (or a package upgrade replacing these files
  -- under a running riklet) must not turn a later require into a crash of the agent
  for _, m in ipairs({ "riklet.policy", "riklet.prom", "riklet.imagegc", "riklet.status", "riklet.systemd",
    cfg.standalone and "riklet.standalone" or nil }) do require(m) end
  local agent
  agent, err = setup(cfg)
  if not agent then return die("%s", err) end
  local stopping = false
  local function stop(sig)
    if stopping then return end
    stopping = true
    core.log("info", "riklet", ("SIG%s: stopping; workloads keep running and will be re-adopted by the next riklet"):format(sig))
    pcall(require("riklet.systemd").notify, "STOPPING=1")
    core.exit(0)
  end
  core.on_signal("INT", stop)
  core.on_signal("TERM", stop)
  core.on_signal("HUP", function() reload(cfg) end)
  -- load the policies now: a broken one is reported at start, and SIGHUP reloads all three
  local policy = require "riklet.policy"
  for _, name in ipairs({ "admission", "network", "restart" }) do
    local pok, perr = policy.load(name)
    if not pok then core.log("error", "policy", ("%s; calls to it fail until it is fixed (then SIGHUP)"):format(perr)) end
  end
  policy.park()
  trim_after_bursts(agent) -- a full collection and malloc_trim after the boot, then after each burst
  require("riklet.prom").instrument(agent)
  -- image garbage collection: periodic, and every unused image on SIGUSR1 (riklet prune)
  local imagegc = require "riklet.imagegc"
  local records = agent.records
  imagegc.start(cfg, records)
  core.on_signal("USR1", function()
    core.log("info", "imagegc", "SIGUSR1: removing every unused image")
    local gok, gerr = pcall(imagegc.collect, cfg, records(), { all = true })
    if not gok then core.log("error", "imagegc", tostring(gerr)) end
    require("riklet.status").write_now()
  end)
  require("riklet.status").start(cfg.state_dir, agent.count)
  if beside then
    local res = beside:wait()
    if not res[1] then error(res[2], 0) end
    ok, err = preflight(cfg, res[2], function()
      local n = 0
      for _, v in ipairs(agent.list()) do
        if not v.gone and v.status ~= "TERMINATED" and v.status ~= "FAILED" then n = n + 1 end
      end
      return n
    end)
    if not ok then return die("%s", err) end
  end
  if cfg.metrics_listen then
    local msrv, merr = require("riklet.prom").serve(cfg.metrics_listen, records)
    if not msrv then return die("%s", merr) end
  end
  local interlink = #(cfg.interlink or {}) > 0
  if interlink then
    local servers, ierr = require("riklet.interlink").start(cfg, agent)
    if not servers then return die("%s", ierr) end
  end
  if cfg.standalone then
    local standalone = require "riklet.standalone"
    task.spawn(function()
      local sok, serr = standalone.run(cfg.standalone)
      if not sok then
        core.log("error", "standalone", serr)
        if not stopping then core.exit(1) end
      end
    end)
  elseif not interlink or cfg.scheduler then
    local found, scheduler = pcall(require, "riklet.scheduler")
    if not found then return die("scheduler mode is not available in this build: %s", scheduler) end
    cfg.scheduler = cfg.scheduler or "http://127.0.0.1:4995"
    task.spawn(function()
      local sok, serr = scheduler.run(cfg, agent)
      if not sok and serr then
        core.log("error", "scheduler", serr)
        if not stopping then core.exit(1) end
      end
    end)
  end
  core.log("info", "riklet", ("riklet %s started (pid %d, state %s, %s)"):format(core.version, core.getpid(),
    cfg.state_dir, cfg.standalone and ("standalone " .. cfg.standalone) or cfg.scheduler and ("scheduler " .. cfg.scheduler)
      or ("interLink " .. table.concat(cfg.interlink, ", "))))
  -- readiness for systemd (Type=notify): the store is re-adopted and the front-end is starting
  local nok, nerr = require("riklet.systemd").notify("READY=1\nSTATUS=" .. (cfg.standalone and ("standalone " .. cfg.standalone)
    or cfg.scheduler and ("scheduler " .. cfg.scheduler) or ("interLink " .. table.concat(cfg.interlink, ", "))))
  if nok == nil then core.log("warn", "riklet", nerr) end
  return nil -- keep running; the loop ends with core.exit
end

-- ---- riklet run FILE.json ----
local function run_one(cfg, file)
  local ok, err = need_root("riklet run")
  if not ok then return die("%s", err) end
  local def
  def, err = fs.read(file, require("riklet.workload").LIMITS.manifest_bytes, { follow = true })
  if not def then return die("cannot read the workload file: %s", err) end
  local agent
  agent, err = setup(cfg)
  if not agent then return die("%s", err) end
  local standalone = require "riklet.standalone"
  local id = "run-" .. standalone.id_for(file:match("([^/]+)$"))
  if #id > 64 then id = id:sub(1, 64) end
  local ended = task.event()
  agent.subscribe(function(iid, status, msg)
    if iid ~= id then return end
    io.stderr:write(("riklet: %s %s%s\n"):format(id, status, msg ~= "" and (": " .. msg) or ""))
    if status == "FAILED" or status == "TERMINATED" then ended:set(status) end
  end)
  local interrupted = false
  local function stop()
    if interrupted then return end
    interrupted = true
    io.stderr:write("riklet: interrupted: destroying ", id, "\n")
    agent.destroy(id)
  end
  core.on_signal("INT", stop)
  core.on_signal("TERM", stop)
  local cur = agent.get(id)
  if cur and not cur.gone then agent.replace(id, def, "run:" .. file)
  else agent.create(id, def, "run:" .. file) end
  -- follow the containers' output (CRI logs, printed as plain lines) on stdout until the instance
  -- ends. Each log is held open, so what a container prints while it is being destroyed (its
  -- directory removed) still shows.
  local crilog = require "riklet.crilog"
  local followers = {}
  local function pump(final)
    local inst = agent.instance(id)
    for _, c in ipairs(inst and inst.rec.containers or {}) do
      if c.log and not followers[c.name] and fs.exists(c.log) then
        followers[c.name] = crilog.follower({ { name = c.name, path = c.log } })
      elseif c.log and followers[c.name] then
        followers[c.name]:set_path(c.name, c.log)
      end
    end
    for _, f in pairs(followers) do
      repeat
        for _, e in ipairs(f:poll(final)) do io.stdout:write(e.text, crilog.eol(e)) end
      until not f.more
    end
    io.stdout:flush()
  end
  while not ended.is_set do
    pump()
    ended:wait(0.2)
  end
  pump()
  local final = ended.value
  if not interrupted then agent.destroy(id) end
  agent.wait_gone(id) -- bounded by the driver's destroy deadline (the workload's grace period + 3 min)
  pump(true)
  for _, f in pairs(followers) do f:close() end
  return final == "TERMINATED" and not interrupted and 0 or (interrupted and 130 or 1)
end

-- ---- riklet ps ----
local function age(t)
  if not t then return "-" end
  local s = math.max(0, core.time() - t)
  if s < 120 then return ("%ds"):format(s) end
  if s < 7200 then return ("%dm"):format(s / 60) end
  if s < 172800 then return ("%dh"):format(s / 3600) end
  return ("%dd"):format(s / 86400)
end

-- Per-container state of a record for `ps --json`, and the instance's restarts in all.
local function containers_of(r)
  local out, restarts = json.array({}), 0
  for _, c in ipairs(type(r.containers) == "table" and r.containers or {}) do
    if type(c) == "table" then
      restarts = restarts + (tonumber(c.restart_count) or 0)
      -- a container that exited and was then removed from runc is shown as exited
      local state = c.state
      if state == "deleted" and (c.exit_code ~= nil or c.exit_signal ~= nil) then state = "exited" end
      out[#out + 1] = { name = c.name, image = c.image, state = state, exit_code = c.exit_code,
        signal = c.exit_signal, started_at = c.started_at, finished_at = c.finished_at,
        restart_count = c.restart_count or 0, reason = c.reason }
    end
  end
  return out, restarts
end

-- A Function's VM for `ps --json`: backend, VMM pid, seconds from CREATE to RUNNING and to the
-- guest answering on its exposed port, and how the VMM ended; running_at (epoch s) and the create's
-- steps (seconds each, riklet.function).
local function vm_of(v)
  local h = type(v.handle) == "table" and v.handle or {}
  return { backend = v.backend, pid = h.pid, running_after = v.running_after, answering_after = v.answering_after,
    exit_code = v.exit_code, signal = v.exit_signal, running_at = v.running_at, steps = v.steps }
end

-- The footer of `riklet ps`: the agent running on this state dir and its loop lag.
local function agent_line(st, why)
  if not st then return ("agent: not running (%s)\n"):format(why) end
  local lp = type(st.loop) == "table" and st.loop or {}
  return ("agent: pid %d, riklet %s, up %s, %s instances; loop lag max %.0f ms, last minutes %.0f ms%s\n"):format(
    st.pid, tostring(st.version), age(st.started_at), tostring(st.instances or "?"), lp.lag_max_ms or 0,
    lp.lag_recent_ms or 0, lp.slowest and (" (slowest: " .. lp.slowest .. ")") or "")
end

local function ps(cfg)
  local store = require "riklet.store"
  local paths = config.paths(cfg)
  local agent_st, agent_why = require("riklet.status").read(cfg.state_dir)
  if not fs.exists(paths.records) then
    if cfg.json then io.stdout:write(json.encode({ agent = agent_st or json.null, instances = json.array({}) }), "\n")
    else io.stdout:write("no instances (no records in ", paths.records, ")\n", agent_line(agent_st, agent_why)) end
    return 0
  end
  store.open(paths.records)
  local recs, bad = store.list()
  if not recs then return die("%s", bad) end
  -- records that cannot be used: their instance is UNKNOWN, and everything named after it is kept
  for _, b in ipairs(bad) do recs[#recs + 1] = { id = b.id, status = "UNKNOWN", reason = b.reason } end
  if cfg.json then
    local out = json.array({})
    local cgstats = require "riklet.cgstats"
    for _, r in ipairs(recs) do
      local cs, restarts = containers_of(r)
      -- live usage from the cgroups (running instances only), per container too
      local m = r.status == "RUNNING" and cgstats.of_instance(r) or nil
      for _, c in ipairs(cs) do c.metrics = m and m.containers[c.name] end
      if m then m.containers = nil end
      out[#out + 1] = { id = r.id, name = r.name, kind = r.kind, status = r.status, reason = r.reason,
        created_at = r.created_at, ended_at = r.ended_at, source = r.source, restarts = restarts,
        restart_policy = r.restart_policy, containers = cs, metrics = m,
        vm = type(r.vm) == "table" and vm_of(r.vm) or nil }
    end
    io.stdout:write(json.encode({ agent = agent_st or json.null, instances = out }), "\n")
    return 0
  end
  local fmt = "%-36s %-20s %-9s %-11s %-8s %-6s %s\n"
  io.stdout:write(fmt:format("ID", "NAME", "KIND", "STATUS", "RESTARTS", "AGE", "REASON"))
  for _, r in ipairs(recs) do
    local reason = (r.reason or ""):gsub("\n", " ")
    if #reason > 100 then reason = reason:sub(1, 97) .. "..." end
    local _, restarts = containers_of(r)
    io.stdout:write(fmt:format(r.id, r.name or "-", r.kind or "-", r.status or "?", restarts, age(r.created_at), reason))
  end
  io.stdout:write(agent_line(agent_st, agent_why))
  return 0
end

-- ---- riklet top ----
local function bytes(b)
  if not b then return "-" end
  if b >= 1073741824 then return ("%.1fG"):format(b / 1073741824) end
  if b >= 1048576 then return ("%.1fM"):format(b / 1048576) end
  return ("%.0fK"):format(b / 1024)
end

-- The running instances and their cgroup usage now: { {rec=, m=, restarts=}, ... }, time
local function top_sample(cfg)
  local store = require "riklet.store"
  local cgstats = require "riklet.cgstats"
  local paths = config.paths(cfg)
  local out = {}
  if not fs.exists(paths.records) then return out, core.now() end
  store.open(paths.records)
  for _, r in ipairs(store.list() or {}) do
    if r.status == "RUNNING" then
      local _, restarts = containers_of(r)
      out[#out + 1] = { rec = r, m = cgstats.of_instance(r), restarts = restarts }
    end
  end
  return out, core.now()
end

-- A refreshing table of the running instances (like top / crictl stats): CPU % (of one CPU)
-- between two samples, memory, its peak and limit, pids, OOM kills, restarts, age. --once: one
-- table after one interval, for scripts and tests.
local function top(cfg)
  local cgstats = require "riklet.cgstats"
  local interval = cfg.once and 1 or 2
  local prev, t0 = top_sample(cfg)
  local stop = false
  core.on_signal("INT", function() stop = true end)
  core.on_signal("TERM", function() stop = true end)
  while not stop do
    task.sleep(interval)
    local cur, t1 = top_sample(cfg)
    local before = {}
    for _, e in ipairs(prev) do before[e.rec.id] = e.m end
    local buf = {}
    if not cfg.once then buf[#buf + 1] = "\27[H\27[2J" end
    local fmt = "%-36s %-20s %6s %8s %8s %8s %5s %4s %8s %6s\n"
    buf[#buf + 1] = fmt:format("ID", "NAME", "CPU%", "MEM", "PEAK", "LIMIT", "PIDS", "OOM", "RESTARTS", "AGE")
    for _, e in ipairs(cur) do
      local m = e.m or {}
      local pct = cgstats.cpu_percent(before[e.rec.id], e.m, t1 - t0)
      buf[#buf + 1] = fmt:format(e.rec.id, e.rec.name or "-", pct and ("%.1f"):format(pct) or "-", bytes(m.memory_bytes),
        bytes(m.memory_peak_bytes), m.memory_limit_bytes and bytes(m.memory_limit_bytes) or "none",
        m.pids and tostring(m.pids) or "-", m.oom_kills and tostring(m.oom_kills) or "-", e.restarts, age(e.rec.created_at))
    end
    if #cur == 0 then buf[#buf + 1] = "no running instances\n" end
    io.stdout:write(table.concat(buf))
    io.stdout:flush()
    if cfg.once then break end
    prev, t0 = cur, t1
  end
  return 0
end

-- ---- riklet metrics: the Prometheus exposition of the agent on this state dir ----
local function metrics_cmd(cfg)
  local prom = require "riklet.prom"
  local st = require("riklet.status").read(cfg.state_dir)
  local paths = config.paths(cfg)
  local recs = {}
  if fs.exists(paths.records) then
    local store = require "riklet.store"
    store.open(paths.records)
    recs = store.list() or {}
  end
  io.stdout:write(prom.render(prom.collect({ status = st, records = recs, pid = st and st.pid, agent_running = st ~= nil })))
  return 0
end

-- ---- riklet images / riklet prune ----
local function all_records(cfg)
  local paths = config.paths(cfg)
  if not fs.exists(paths.records) then return {} end
  local store = require "riklet.store"
  store.open(paths.records)
  local recs, bad = store.list()
  -- an unreadable record may name any image: nothing is pruned while one is there
  return recs or {}, bad and #bad or 0, bad or {}
end

local function images_cmd(cfg)
  local imagegc = require "riklet.imagegc"
  local recs, nbad, bad = all_records(cfg)
  local imgs = imagegc.list(cfg, recs)
  imagegc.sizes(imgs)
  local unreadable = json.array({})
  for _, b in ipairs(bad) do unreadable[#unreadable + 1] = b.id end
  if cfg.json then
    local out = json.array({})
    for _, e in ipairs(imgs) do
      out[#out + 1] = { digest = e.digest, refs = json.array(e.refs), size = e.size, last_use = e.last_use,
        in_use = json.array(e.in_use), rootfs = e.rootfs, layouts = json.array(e.layouts) }
    end
    io.stdout:write(json.encode({ images = out, unreadable_records = unreadable }), "\n")
    return 0
  end
  if nbad > 0 then
    io.stderr:write(("riklet: the record%s of %s cannot be read: the images %s are not known, and no image is "
      .. "pruned until %s dealt with (see riklet ps)\n"):format(nbad == 1 and "" or "s", table.concat(unreadable, ", "),
      nbad == 1 and "it uses" or "they use", nbad == 1 and "it is" or "they are"))
  end
  local fmt = "%-19s %-44s %9s %9s  %s\n"
  io.stdout:write(fmt:format("DIGEST", "REFERENCES", "SIZE", "LAST USE", "USED BY"))
  for _, e in ipairs(imgs) do
    local refs = #e.refs > 0 and table.concat(e.refs, ",") or "-"
    if #refs > 44 then refs = refs:sub(1, 41) .. "..." end
    io.stdout:write(fmt:format(e.digest:sub(1, 19), refs, bytes(e.size),
      #e.in_use > 0 and "now" or (e.last_use > 0 and (age(e.last_use) .. " ago") or "-"),
      #e.in_use > 0 and table.concat(e.in_use, ",") or "-"))
  end
  if #imgs == 0 then io.stdout:write("no images in ", cfg.state_dir, "\n") end
  return 0
end

local function prune_cmd(cfg)
  local ok, err = need_root("riklet prune")
  if not ok then return die("%s", err) end
  local paths = config.paths(cfg)
  local st = require("riklet.status").read(cfg.state_dir)
  if st then
    -- the agent knows what it is pulling and creating: it prunes, on SIGUSR1
    local before = type(st.image_gc) == "table" and st.image_gc.runs or 0
    -- through a pidfd opened before agent.json's pid and start time are checked again: an agent
    -- that ends meanwhile is not replaced by whatever gets its pid next
    local status = require "riklet.status"
    local kok, kerr = require("riklet.procscan").signal_if(st.pid, 10, function(pid)
      local again = status.read(cfg.state_dir)
      return again ~= nil and again.pid == pid
    end)
    if kok == false then kerr = "it is not running any more" end
    if not kok then return die("cannot signal the riklet running on %s (pid %d): %s", cfg.state_dir, st.pid, tostring(kerr)) end
    for _ = 1, 600 do
      task.sleep(0.1)
      local now = require("riklet.status").read(cfg.state_dir)
      local g = now and type(now.image_gc) == "table" and now.image_gc
      if g and (g.runs or 0) > before then
        for _, d in ipairs(g.last_removed or {}) do io.stdout:write("removed ", d, "\n") end
        io.stderr:write(("riklet: the agent (pid %d) removed %d director%s%s\n"):format(st.pid, #(g.last_removed or {}),
          #(g.last_removed or {}) == 1 and "y" or "ies", g.last_error and (": " .. g.last_error) or ""))
        return g.last_error and 1 or 0
      end
    end
    return die("the riklet running on %s (pid %d) did not report a prune within 60 s; see its log", cfg.state_dir, st.pid)
  end
  local lock
  lock, err = fs.lock(paths.lock)
  if not lock then return die("%s", err) end
  local recs, bad = all_records(cfg)
  if bad > 0 then
    return die("%d record(s) in %s cannot be read: they may name any image, so nothing is pruned (see riklet ps)", bad, paths.records)
  end
  cfg.paths = paths
  ok, err = require("riklet.image").init(cfg)
  if not ok then return die("%s", err) end
  local res = require("riklet.imagegc").collect(cfg, recs, { all = true, offline = true })
  for _, d in ipairs(res.removed) do io.stdout:write("removed ", d, "\n") end
  io.stderr:write(("riklet: %d director%s removed\n"):format(#res.removed, #res.removed == 1 and "y" or "ies"))
  lock:close()
  return 0
end

-- ---- riklet logs ID [CONTAINER] ----
local LOGS_USAGE = "usage: riklet logs ID [CONTAINER] [--follow] [--timestamps] [--tail N] [--since TIME|DURATION] [--previous]"

-- the logs of rec's containers (all, or the one named), current run or the previous one
-- (paths built by riklet.pod from the checked id, name and run: never a path a record names)
local function log_sources(cfg, rec, only, previous)
  local out = {}
  for _, l in ipairs(require("riklet.pod").logs(rec, config.paths(cfg).instances)) do
    if not only or l.name == only then
      local path = l.path
      if previous then path = l.previous end
      out[#out + 1] = { name = l.name, path = path }
    end
  end
  return out
end

-- A Function's output is its guest's serial console (STATE/instances/ID/console.log, raw text;
-- the last 4 MiB at most); --tail N keeps the last N lines.
local function function_console(paths, rec, tail)
  local path = paths.instances .. "/" .. rec.id .. "/console.log"
  local text = fs.exists(path) and fs.tail(path, 4 * 1024 * 1024)
  if not text then
    io.stderr:write("riklet: instance ", rec.id, " has no console output (", rec.status or "?",
      rec.reason and rec.reason ~= "" and (": " .. rec.reason) or "", ")\n")
    return 1
  end
  if tail then
    local lines = {}
    for l in text:gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
    text = table.concat(lines, "", math.max(1, #lines - tail + 1))
  end
  io.stdout:write(text)
  return 0
end

local function logs(cfg, id, cname)
  if not id then return die("%s  (see `riklet ps` for ids)", LOGS_USAGE) end
  if not fs.safe_name(id, 64) then return die("%q is not an instance id", id) end
  local crilog = require "riklet.crilog"
  local since, serr
  if cfg.since then
    since, serr = crilog.parse_since(cfg.since, core.time())
    if not since then return die("%s", serr) end
  end
  local tail = cfg.tail
  if tail and (tail ~= math.floor(tail) or tail < -1) then return die("--tail needs a whole number of lines (-1: all)") end
  if tail == -1 then tail = nil end
  local store = require "riklet.store"
  local paths = config.paths(cfg)
  store.open(paths.records)
  local rec, err = store.load(id)
  if not rec then
    -- a record that cannot be used (in quarantine or not): its id is held, what it names is kept
    local _, bad = store.list()
    for _, b in ipairs(type(bad) == "table" and bad or {}) do
      if b.id == id then
        local idir = paths.instances .. "/" .. id
        return die("instance %s is held (UNKNOWN in `riklet ps`): %s. riklet does not manage it, so it cannot say which "
          .. "logs are its own; its containers and their logs are kept%s", id, b.reason,
          fs.exists(idir) and (" (look in " .. idir .. "/<container>/logs/)") or "")
      end
    end
    return die("no instance %s on this node (%s); see `riklet ps`", id, err)
  end
  if rec.kind == "Function" then return function_console(paths, rec, tail) end
  local cs = rec.containers or {}
  if #cs == 0 then
    io.stderr:write("riklet: instance ", id, " has no containers", rec.reason and rec.reason ~= "" and (" (" .. rec.status .. ": " .. rec.reason .. ")") or "", "\n")
    return 1
  end
  if cname then
    local found = false
    for _, c in ipairs(cs) do found = found or c.name == cname end
    if not found then
      local names = {}
      for _, c in ipairs(cs) do names[#names + 1] = c.name end
      return die("instance %s has no container %q (it has: %s)", id, cname, table.concat(names, ", "))
    end
  end
  local srcs = log_sources(cfg, rec, cname, cfg.previous)
  local present = false
  for _, s in ipairs(srcs) do present = present or (s.path and fs.exists(s.path)) or false end
  if not present and (rec.destroyed or rec.status == "TERMINATED" and not fs.exists(rec.dir or "/nonexistent")) then
    io.stderr:write("riklet: instance ", id, " was destroyed (", rec.status or "?",
      rec.reason and rec.reason ~= "" and (": " .. rec.reason) or "", "); its output was removed with it\n")
    return 1
  end
  if cfg.previous and not present then
    return die("instance %s: no previous run of %s (its containers were not restarted)", id, cname or "its containers")
  end
  local fmt = { timestamps = cfg.timestamps, prefix = #srcs > 1 }
  local function print_all(entries)
    local buf = {}
    for i, e in ipairs(entries) do buf[i] = crilog.format(e, fmt) end
    io.stdout:write(table.concat(buf))
    io.stdout:flush()
  end
  if not cfg.follow or cfg.previous then
    print_all(crilog.collect(srcs, { since = since, tail = tail }))
    return 0
  end
  -- follow: what is there (since, tail), then new lines until the instance ends (or Ctrl-C); read
  -- and printed 64 KiB at a time (a log of any size is never held whole)
  local f = crilog.follower(srcs, { since = since, tail = tail })
  while f.first or f.more do print_all(f:poll()) end
  local ENDED = { FAILED = true, TERMINATED = true }
  while true do
    task.sleep(0.2)
    local r2 = store.load(id)
    local ended = not r2 or ENDED[r2.status] or r2.destroyed
    if r2 and not ended then
      for _, s in ipairs(log_sources(cfg, r2, cname)) do f:set_path(s.name, s.path) end
    end
    repeat print_all(f:poll(ended)) until not f.more
    if ended then break end
  end
  f:close()
  return 0
end

-- ---- riklet cleanup ----
local function cleanup(cfg)
  local ok, err = need_root("riklet cleanup")
  if not ok then return die("%s", err) end
  local agent
  agent, err = setup(cfg)
  if not agent then return die("%s", err) end
  task.sleep(0) -- let re-adoption tasks run
  local n = agent.destroy_all(cfg.stop_grace + 60)
  -- and forget them: after a cleanup `riklet ps` is empty (records of failed cleanups stay)
  local store = require "riklet.store"
  for _, inst in ipairs(agent.list()) do
    if inst.gone and inst.status == "TERMINATED" then store.remove(inst.id) end
  end
  local found, netctl = pcall(require, "riklet.netctl")
  if found and netctl.cleanup_all then
    local nok, nerr = netctl.cleanup_all(cfg)
    if not nok then io.stderr:write("riklet: network cleanup: ", tostring(nerr), "\n") end
  end
  io.stderr:write(("riklet: cleanup done: %d instance(s) destroyed\n"):format(n))
  return 0
end

-- The reading commands print what they read; a warning that their own event loop was slow (under
-- a loaded node) concerns no workload (the agent's loop runs those) and would cut into top's
-- table: they log errors only, unless --log-level debug asks for everything.
local READERS = { ps = true, top = true, logs = true, images = true, metrics = true }
local function quiet_reader(cfg)
  if cfg.log_level ~= "debug" then core.log_setup("error", cfg.log_format == "json") end
end

function M.main(argv)
  local cmd = argv[1]
  local first = 1
  local sub = { run = true, ps = true, logs = true, cleanup = true, version = true, help = true, check = true, top = true, metrics = true, images = true, prune = true }
  if cmd and sub[cmd] then first = 2 else cmd = nil end
  for _, a in ipairs(argv) do
    if a == "--help" or a == "-h" or cmd == "help" then io.stdout:write(usage()) return 0 end
    if a == "--version" then cmd = "version" end
  end
  if cmd == "version" then io.stdout:write("riklet ", core.version, "\n") return 0 end
  if argv[1] == "fault-points" then return require("riklet.fault").print_points() end
  if argv[1] == "check-drivers" then -- the daemon's start-up check of its on-demand code (riklet.drivers)
    local dcfg, derr = config.parse(argv, 2)
    if not dcfg then return die("%s", derr) end
    core.log_setup("error", false) -- its stderr is the answer: no loop warnings in it
    return require("riklet.drivers").child(dcfg)
  end
  local cfg, rest = config.parse(argv, first)
  if not cfg then
    if not cmd and wants_json_log(argv) then
      json_log = true
      core.log_setup("info", true)
    end
    return die("%s", rest)
  end
  if READERS[cmd] then quiet_reader(cfg) end
  if cmd == "run" then
    if not rest[1] then return die("usage: riklet run FILE.json") end
    return run_one(cfg, rest[1])
  elseif cmd == "ps" then return ps(cfg)
  elseif cmd == "logs" then return logs(cfg, rest[1], rest[2])
  elseif cmd == "cleanup" then return cleanup(cfg)
  elseif cmd == "check" then return check_cmd(cfg)
  elseif cmd == "top" then return top(cfg)
  elseif cmd == "metrics" then return metrics_cmd(cfg)
  elseif cmd == "images" then return images_cmd(cfg)
  elseif cmd == "prune" then return prune_cmd(cfg)
  end
  if rest[1] then return die("unexpected argument %q (see `riklet --help`)", rest[1]) end
  return daemon(cfg)
end

return M
