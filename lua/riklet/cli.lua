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
  riklet run FILE.json [options]        run one workload in the foreground; Ctrl-C destroys it
  riklet ps [--json]                    instances on this node: state, age, reason
  riklet logs ID [--follow]             output of an instance's containers
  riklet cleanup                        destroy every instance and remove everything riklet owns
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

local function die(fmt, ...)
  io.stderr:write("riklet: ", fmt:format(...), "\n")
  return 1
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

-- ---- the agent daemon ----
local function daemon(cfg)
  local ok, err = need_root("riklet")
  if not ok then return die("%s", err) end
  local agent
  agent, err = setup(cfg)
  if not agent then return die("%s", err) end
  local stopping = false
  local function stop(sig)
    if stopping then return end
    stopping = true
    core.log("info", "riklet", ("SIG%s: stopping; workloads keep running and will be re-adopted by the next riklet"):format(sig))
    core.exit(0)
  end
  core.on_signal("INT", stop)
  core.on_signal("TERM", stop)
  if cfg.standalone then
    local standalone = require "riklet.standalone"
    task.spawn(function()
      local sok, serr = standalone.run(cfg.standalone)
      if not sok then
        core.log("error", "standalone", serr)
        if not stopping then core.exit(1) end
      end
    end)
  else
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
    cfg.state_dir, cfg.standalone and ("standalone " .. cfg.standalone) or ("scheduler " .. cfg.scheduler)))
  return nil -- keep running; the loop ends with core.exit
end

-- ---- riklet run FILE.json ----
local function run_one(cfg, file)
  local ok, err = need_root("riklet run")
  if not ok then return die("%s", err) end
  local def
  def, err = fs.read(file, 1024 * 1024)
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
  -- follow the containers' output on stdout until the instance ends. Each log is held open, so
  -- what a container prints while it is being destroyed (its directory removed) still shows.
  local readers = {}
  local function pump()
    local inst = agent.instance(id)
    for _, c in ipairs(inst and inst.rec.containers or {}) do
      if c.log and not readers[c.log] and fs.exists(c.log) then readers[c.log] = fs.open_read(c.log) end
    end
    for _, r in pairs(readers) do
      local data = r:read(1024 * 1024)
      while data and #data > 0 do
        io.stdout:write(data)
        data = r:read(1024 * 1024)
      end
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
  agent.wait_gone(id, cfg.stop_grace + 30)
  pump()
  for _, r in pairs(readers) do r:close() end
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

local function ps(cfg)
  local store = require "riklet.store"
  local paths = config.paths(cfg)
  if not fs.exists(paths.records) then
    if cfg.json then io.stdout:write("[]\n") else io.stdout:write("no instances (no records in ", paths.records, ")\n") end
    return 0
  end
  store.open(paths.records)
  local recs, bad = store.list()
  if not recs then return die("%s", bad) end
  if cfg.json then
    local out = json.array({})
    for _, r in ipairs(recs) do
      out[#out + 1] = { id = r.id, name = r.name, kind = r.kind, status = r.status, reason = r.reason,
        created_at = r.created_at, ended_at = r.ended_at, source = r.source }
    end
    io.stdout:write(json.encode(out), "\n")
    return 0
  end
  local fmt = "%-36s %-20s %-9s %-11s %-6s %s\n"
  io.stdout:write(fmt:format("ID", "NAME", "KIND", "STATUS", "AGE", "REASON"))
  for _, r in ipairs(recs) do
    local reason = (r.reason or ""):gsub("\n", " ")
    if #reason > 100 then reason = reason:sub(1, 97) .. "..." end
    io.stdout:write(fmt:format(r.id, r.name or "-", r.kind or "-", r.status or "?", age(r.created_at), reason))
  end
  for _, b in ipairs(bad or {}) do io.stderr:write("riklet: ", b, "\n") end
  return 0
end

-- ---- riklet logs ID ----
local function logs(cfg, id)
  if not id then return die("usage: riklet logs ID [--follow]  (see `riklet ps` for ids)") end
  if not fs.safe_name(id, 64) then return die("%q is not an instance id", id) end
  local store = require "riklet.store"
  local paths = config.paths(cfg)
  store.open(paths.records)
  local rec, err = store.load(id)
  if not rec then return die("no instance %s on this node (%s); see `riklet ps`", id, err) end
  local cs = rec.containers or {}
  if #cs == 0 then
    io.stderr:write("riklet: instance ", id, " has no containers", rec.reason and rec.reason ~= "" and (" (" .. rec.status .. ": " .. rec.reason .. ")") or "", "\n")
    return 1
  end
  local present = false
  for _, c in ipairs(cs) do present = present or (c.log and fs.exists(c.log)) or false end
  if not present and (rec.destroyed or rec.status == "TERMINATED" and not fs.exists(rec.dir or "/nonexistent")) then
    io.stderr:write("riklet: instance ", id, " was destroyed (", rec.status or "?",
      rec.reason and rec.reason ~= "" and (": " .. rec.reason) or "", "); its output was removed with it\n")
    return 1
  end
  local offsets = {}
  local function pump(prefix)
    local any = false
    for _, c in ipairs(cs) do
      if c.log and fs.exists(c.log) then
        local data, nxt = fs.read_from(c.log, offsets[c.log] or 0, 1024 * 1024)
        while data and #data > 0 do
          any = true
          if prefix then
            for line in data:gmatch("[^\n]*\n?") do
              if line ~= "" then io.stdout:write("[", c.name, "] ", line) end
            end
          else
            io.stdout:write(data)
          end
          offsets[c.log] = nxt
          data, nxt = fs.read_from(c.log, nxt, 1024 * 1024)
        end
      end
    end
    io.stdout:flush()
    return any
  end
  pump(#cs > 1)
  if cfg.follow then
    while true do
      task.sleep(0.25)
      pump(#cs > 1)
      local r2 = store.load(id)
      if not r2 or r2.status == "TERMINATED" and not fs.exists(rec.dir or "/nonexistent") then break end
    end
  end
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

function M.main(argv)
  local cmd = argv[1]
  local first = 1
  local sub = { run = true, ps = true, logs = true, cleanup = true, version = true, help = true }
  if cmd and sub[cmd] then first = 2 else cmd = nil end
  for _, a in ipairs(argv) do
    if a == "--help" or a == "-h" or cmd == "help" then io.stdout:write(usage()) return 0 end
    if a == "--version" then cmd = "version" end
  end
  if cmd == "version" then io.stdout:write("riklet ", core.version, "\n") return 0 end
  if argv[1] == "fault-points" then return require("riklet.fault").print_points() end
  local cfg, rest = config.parse(argv, first)
  if not cfg then return die("%s", rest) end
  if cmd == "run" then
    if not rest[1] then return die("usage: riklet run FILE.json") end
    return run_one(cfg, rest[1])
  elseif cmd == "ps" then return ps(cfg)
  elseif cmd == "logs" then return logs(cfg, rest[1])
  elseif cmd == "cleanup" then return cleanup(cfg)
  end
  if rest[1] then return die("unexpected argument %q (see `riklet --help`)", rest[1]) end
  return daemon(cfg)
end

return M
