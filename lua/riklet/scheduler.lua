-- riklet.scheduler — the RIK scheduler front-end (shared/PROTOCOL.md).
--
-- Registers with `worker.Worker/Register` and keeps that server stream for the node's lifetime:
-- every InstanceScheduling on it is handed to the agent (CREATE -> agent.create, DESTROY ->
-- agent.destroy). Every instance transition the agent reports goes back as
-- WorkerStatus{identifier = hostname, instance = {instance_id, status, metrics = message}} on one
-- long-lived `SendStatusUpdates` client stream; node metrics go the same way right after
-- registering and every `metrics_interval` seconds.
--
-- Registering does not wait for the Register response headers: tonic sends them at once, grpcio
-- and grpc-go only with the first instruction. Once the server has answered on the connection at
-- the HTTP/2 level (its SETTINGS; the TLS handshake for https://), metrics and statuses flow.
--
-- A silent peer is a failure too: no TCP connection within connect_timeout, no HTTP/2 SETTINGS
-- within handshake_timeout after connecting, (optionally) no Register response headers within
-- header_timeout, or (http://) an HTTP/2 PING sent after keepalive seconds of silence and left
-- unanswered for keepalive_timeout, or unacknowledged data/TCP keepalive probes for
-- keepalive_timeout on a live connection each end the session with a log line saying which.
--
-- When the scheduler is down, refuses us (ALREADY_EXISTS while our previous stream lingers), or
-- a stream ends or breaks, workloads keep running: we reconnect with backoff (1 s, x1.6, +-20 %
-- jitter, capped at 120 s, reset after a healthy period) and, once registered again, re-send the
-- current status of every instance. Updates made while disconnected wait in an outbox that keeps
-- the latest status per instance, in order; while connected every transition is sent, in order.
--
--   scheduler.run(cfg[, agent]) -- never returns while riklet runs; nil, err on a bad configuration
--     cfg.scheduler         "http://host:port" | "https://host:port"
--     cfg.hostname          the name this node registers with (non-empty)
--     cfg.metrics_interval  seconds between node metric reports (default 15)
--     cfg.tls_ca, cfg.tls_cert, cfg.tls_key   for https://
--     cfg.reconnect_initial, cfg.reconnect_max, cfg.reconnect_healthy (seconds; default 1, 120, 60;
--       also from RIKLET_RECONNECT_INITIAL / _MAX / _HEALTHY)
--     cfg.scheduler_connect_timeout, _handshake_timeout (seconds; default 10, 10),
--     cfg.scheduler_header_timeout (seconds; default 0 = none: grpcio holds the headers),
--     cfg.scheduler_keepalive, _keepalive_timeout (seconds; default 30, 20: silence before an
--       HTTP/2 PING and TCP keepalive probes, and how long a PING, data or probes may go unanswered)
--     cfg.instance_metrics_interval  seconds between per-instance metric reports (default 0 = off):
--       each RUNNING instance's riklet.cgstats numbers as the JSON of InstanceMetric.metrics
--   scheduler.stats() -> counters for tests and benchmarks; connected (the status stream is open)
--     and queued (status updates waiting to be sent)
--   scheduler.send_instance_metric(id, status, metrics_json) -> true | nil, why
--     an InstanceMetric{instance_id, status, metrics} on the status stream, in order with the
--     transitions. Not kept while disconnected (the next report is fresher); while one for id is
--     still waiting to be sent, it takes the newer numbers instead of queueing a second one.
--   scheduler.backoff(initial, factor, jitter, max) -> b; b:next() -> seconds; b:reset()
local core = require "riklet.core"
local task = require "riklet.task"
local grpc = require "riklet.grpc"
local metrics = require "riklet.metrics"
local json = require "riklet.json"

local M = {}

local REGISTER = "/worker.Worker/Register"
local SEND_STATUS = "/worker.Worker/SendStatusUpdates"

local STATUSES = {
  UNKNOWN = true, PENDING = true, RUNNING = true, FAILED = true, TERMINATED = true,
  CREATING = true, DESTROYING = true,
}

local function log(level, fmt, ...) core.log(level, "scheduler", fmt:format(...)) end

local stats = {
  sessions = 0, registered = 0, instructions = 0, statuses_sent = 0, metrics_sent = 0,
  reconnects = 0, last_error = nil, instance_metrics_sent = 0,
}
local cur_ob -- the outbox of the running front-end
function M.stats()
  stats.connected = cur_ob ~= nil and cur_ob.connected
  stats.queued = cur_ob and #cur_ob.q or 0
  return stats
end

-- ---- backoff ---------------------------------------------------------------------------------
local Backoff = {}
Backoff.__index = Backoff

function M.backoff(initial, factor, jitter, max)
  return setmetatable({ initial = initial or 1, factor = factor or 1.6, jitter = jitter or 0.2,
    max = max or 120, cur = nil }, Backoff)
end

-- The next delay: initial, then x factor each time, capped, each with +-jitter.
function Backoff:next()
  self.cur = self.cur and math.min(self.cur * self.factor, self.max) or self.initial
  local j = 1 + self.jitter * (2 * math.random() - 1)
  return self.cur * j
end

function Backoff:reset() self.cur = nil end

-- ---- outbox: every transition in order; while disconnected, only the latest per instance -------
local function new_outbox()
  return { q = {}, by_id = {}, metric_by_id = {}, kick = task.queue(), kicked = false, connected = false }
end

local function outbox_kick(ob)
  if not ob.kicked then
    ob.kicked = true
    ob.kick:put(true)
  end
end

local function outbox_put(ob, id, status, message)
  if not STATUSES[status] then
    log("warn", "instance %s: status %q is not a RIK status; reporting UNKNOWN", id, tostring(status))
    status = "UNKNOWN"
  end
  local rec = ob.by_id[id]
  if rec and not ob.connected then
    -- disconnected: the scheduler only needs the latest, in the place of the first
    rec.status, rec.message = status, message or ""
  else
    rec = { id = id, status = status, message = message or "" }
    ob.q[#ob.q + 1] = rec
    ob.by_id[id] = rec
  end
  outbox_kick(ob)
end

local function outbox_len(ob) return #ob.q end

function M.send_instance_metric(id, status, js)
  local ob = cur_ob
  if not (ob and ob.connected) then return nil, "not connected to the scheduler" end
  if not STATUSES[status] then return nil, ("%q is not a RIK status"):format(tostring(status)) end
  local rec = ob.metric_by_id[id]
  if rec then
    rec.message = js
  else
    rec = { id = id, status = status, message = js, metric = true }
    ob.q[#ob.q + 1] = rec
    ob.metric_by_id[id] = rec
  end
  outbox_kick(ob)
  return true
end

-- ---- the front-end ---------------------------------------------------------------------------
function M.run(cfg, agent)
  agent = agent or require "riklet.agent"
  local url = cfg.scheduler
  if type(url) ~= "string" or not (url:match("^http://") or url:match("^https://")) then
    return nil, ("the scheduler address %q must be http://HOST:PORT or https://HOST:PORT (or give "
      .. "--master-ip HOST:PORT)"):format(tostring(url))
  end
  local hostname = cfg.hostname
  if type(hostname) ~= "string" or hostname == "" then
    return nil, "this node has no hostname to register with: set --hostname NAME"
  end
  local interval = tonumber(cfg.metrics_interval) or 15
  if interval <= 0 then return nil, "--metrics-interval must be a positive number of seconds" end
  local inst_interval = tonumber(cfg.instance_metrics_interval) or 0
  if inst_interval < 0 then
    return nil, "--instance-metrics-interval must be 0 (off) or a positive number of seconds"
  end
  -- reconnect tuning: cfg keys, else RIKLET_RECONNECT_{INITIAL,MAX,HEALTHY} (seconds)
  local function knob(k, dflt)
    return tonumber(cfg["reconnect_" .. k]) or tonumber(os.getenv("RIKLET_RECONNECT_" .. k:upper())) or dflt
  end
  local healthy_after = knob("healthy", 60)
  local backoff = M.backoff(knob("initial", 1), 1.6, 0.2, knob("max", 120))
  local function seconds(k, dflt)
    local v = tonumber(cfg["scheduler_" .. k]) or dflt
    if v < 0 then return nil, ("--scheduler-%s must be 0 or more seconds"):format(k:gsub("_", "-")) end
    return v
  end
  local t = {}
  for k, dflt in pairs({ connect_timeout = 10, handshake_timeout = 10, header_timeout = 0, keepalive = 30,
    keepalive_timeout = 20 }) do
    local v, verr = seconds(k, dflt)
    if not v then return nil, verr end
    t[k] = v
  end
  local chopts = {
    ca_file = cfg.tls_ca, cert_file = cfg.tls_cert, key_file = cfg.tls_key,
    connect_timeout = t.connect_timeout, handshake_timeout = t.handshake_timeout,
    keepalive_idle = math.max(1, math.floor(t.keepalive)),
    keepalive_interval = math.max(1, math.floor(t.keepalive / 3)),
    keepalive_timeout = t.keepalive_timeout,
  }
  local reg_opts = t.header_timeout > 0 and { header_timeout = t.header_timeout } or nil
  -- "http://h:p /worker.Worker/Register: what happened" -> "what happened"
  local function why(err)
    err = tostring(err)
    local p = url:gsub("/+$", "") .. " /"
    if err:sub(1, #p) == p then err = err:gsub("^%S+ %S+: ", "", 1) end
    return err
  end
  math.randomseed(core.getpid and core.getpid() or os.time())

  local ob = new_outbox()
  cur_ob = ob
  local sess -- the current session: {ch, reg, st, alive}

  agent.subscribe(function(id, status, message)
    outbox_put(ob, id, status, message)
  end)

  -- A protobuf string is UTF-8 without NUL (protobuf-c cannot send a NUL; a grpcio scheduler
  -- refuses invalid UTF-8, breaking the stream): ids that are not are not sent, a message is
  -- repaired (NUL shown as \0, a bad byte as U+FFFD).
  local function instance_msg(id, e)
    if type(id) ~= "string" or id:find("%z") or not json.utf8(id) then return nil end
    local text = tostring(e.message or ""):gsub("%z", "\\0")
    return { identifier = hostname,
      instance = { instance_id = id, status = e.status, metrics = json.utf8_fix(text) } }
  end

  -- Open (or reopen) the status stream of session s and watch it: if it ends while the session
  -- lives, reopen it and re-send every instance's status.
  local function resync()
    for _, inst in ipairs(agent.list()) do
      if inst.status and not inst.gone then outbox_put(ob, inst.id, inst.status, inst.message) end
    end
    outbox_kick(ob) -- also delivers what waited while we were disconnected
  end

  local open_status_stream
  open_status_stream = function(s)
    local st, err = s.ch:client_stream(SEND_STATUS, "common.WorkerStatus", "google.protobuf.Empty")
    if not st then
      log("error", "cannot open SendStatusUpdates on %s: %s", url, err)
      return nil
    end
    s.st = st
    ob.connected = true
    task.spawn(function()
      local _, rerr, code = st:recv()
      if s.st ~= st or not s.alive then return end
      s.st = nil
      ob.connected = false
      log("warn", "the scheduler ended the status stream (%s: %s); reopening it and re-sending every "
        .. "instance's status", grpc.status_name(code or 2), tostring(rerr))
      task.sleep(1)
      if s.alive then
        if open_status_stream(s) then resync() end
      end
    end)
    return st
  end

  -- The sender: drains the outbox into the current status stream, in order.
  task.spawn(function()
    while true do
      ob.kick:get()
      ob.kicked = false
      local s = sess
      local st = s and s.alive and s.st
      if st then
        local keep = {}
        local broken = false
        for _, rec in ipairs(ob.q) do
          if not broken then
            local msg = instance_msg(rec.id, rec)
            local ok, err
            if msg then
              ok, err = st:send(msg)
            else
              log("warn", "status %s of instance id %s not sent: the id is not a valid protobuf string",
                tostring(rec.status), json.quote(tostring(rec.id)))
              ok = true
            end
            if ok and rec.metric then
              if ob.metric_by_id[rec.id] == rec then ob.metric_by_id[rec.id] = nil end
              stats.instance_metrics_sent = stats.instance_metrics_sent + 1
            elseif ok then
              if ob.by_id[rec.id] == rec then ob.by_id[rec.id] = nil end
              stats.statuses_sent = stats.statuses_sent + 1
              log("debug", "status %s %s sent%s", rec.id, rec.status,
                rec.message ~= "" and (": " .. rec.message) or "")
            else
              broken = true
              log("warn", "cannot send the status of %s: %s (kept for the next connection)", rec.id, err)
            end
          end
          if broken then keep[#keep + 1] = rec end
        end
        ob.q = keep
      end
    end
  end)

  local function send_metrics(s)
    local js, err = metrics.node_json()
    if not js then
      log("error", "cannot measure node metrics: %s", err)
      return
    end
    local st = s.st
    if not st then return end
    local ok, serr = st:send({ identifier = hostname, worker = { status = "RUNNING", metrics = js } })
    if ok then stats.metrics_sent = stats.metrics_sent + 1
    else log("warn", "cannot send node metrics: %s", serr) end
  end

  -- Per-instance metrics (opt-in): every RUNNING instance's cgroup (a Function: its VMM) numbers.
  -- riklet.cgstats is loaded only then, at start like the rest: a node that sends none keeps
  -- its code out of the Lua heap (issue 12, idle memory).
  local cgstats = inst_interval > 0 and require "riklet.cgstats"
  local function send_instance_metrics()
    if not ob.connected then return end
    for _, v in ipairs(agent.list()) do
      local inst = v.status == "RUNNING" and not v.gone and agent.instance(v.id)
      local m = inst and inst.rec and cgstats.of_instance(inst.rec)
      if m then
        local js, jerr = json.encode(m)
        if js then M.send_instance_metric(v.id, v.status, js)
        else log("warn", "instance %s: cannot encode its metrics: %s", v.id, tostring(jerr)) end
      end
    end
  end
  if inst_interval > 0 then
    task.spawn(function()
      while true do
        task.sleep(inst_interval)
        send_instance_metrics()
      end
    end)
  end

  local function handle(msg)
    stats.instructions = stats.instructions + 1
    local id, action = msg.instance_id, msg.action
    -- an id is shown quoted unless it is plain (a NUL, a newline or a terminal escape in it must
    -- not reach the log raw)
    local shown = (type(id) == "string" and id:match("^[%w._-]+$")) and id or json.quote(tostring(id), 80)
    if action == "CREATE" or action == 0 then
      log("info", "CREATE %s from the scheduler", shown)
      agent.create(id, msg.definition, "scheduler")
    elseif action == "DESTROY" or action == 1 then
      log("info", "DESTROY %s from the scheduler", shown)
      agent.destroy(id)
    else
      log("warn", "instruction for %s has an unknown action %s: ignored", shown, tostring(action))
    end
  end

  while true do
    stats.sessions = stats.sessions + 1
    local ch, err = grpc.channel(url, chopts)
    if not ch then return nil, ("cannot use the scheduler address %s: %s"):format(url, err) end
    local reg
    reg, err = ch:server_stream(REGISTER, "common.WorkerRegistration", { hostname = hostname },
      "worker.InstanceScheduling", reg_opts)
    local ok, code
    -- not reg:headers(): a grpcio or grpc-go scheduler sends them only with its first instruction
    if reg then ok, err, code = reg:ready() end
    local function refused(delay)
      if code == grpc.codes.ALREADY_EXISTS then
        log("warn", "the scheduler at %s still holds an open registration for %q (a previous "
          .. "connection it has not seen close yet): retrying in %.1f s", url, hostname, delay)
      elseif code == grpc.codes.FAILED_PRECONDITION then
        log("error", "the scheduler at %s refused to register %q: %s; retrying in %.1f s (check "
          .. "--hostname)", url, hostname, tostring(err), delay)
      else
        return false
      end
      return true
    end
    if not ok then
      local delay = backoff:next()
      stats.last_error = err
      if not refused(delay) then
        log("warn", "scheduler %s: %s (%s); workloads keep running; reconnecting in %.1f s", url, why(err),
          grpc.status_name(code or 14), delay)
      end
      ch:close()
      stats.reconnects = stats.reconnects + 1
      task.sleep(delay)
    else
      stats.registered = stats.registered + 1
      local started = core.now()
      log("info", "connected to the scheduler at %s as %q, registration sent: sending node metrics and statuses",
        url, hostname)
      local s = { ch = ch, reg = reg, alive = true }
      sess = s
      open_status_stream(s)
      send_metrics(s)
      resync()
      task.spawn(function()
        while s.alive do
          task.sleep(interval)
          if s.alive then send_metrics(s) end
        end
      end)
      while true do
        local msg, rerr, rcode = reg:recv()
        if not msg then
          err, code = rerr, rcode
          break
        end
        task.spawn(handle, msg)
      end
      s.alive = false
      sess = nil
      ob.connected = false
      if s.st then s.st:close() end
      ch:close()
      stats.last_error = err
      local lived = core.now() - started
      if lived >= healthy_after then backoff:reset() end
      local delay = backoff:next()
      if code == 0 then
        log("warn", "the scheduler at %s ended our registration stream after %.0f s; workloads keep "
          .. "running; registering again in %.1f s (%d status update(s) waiting)", url, lived, delay,
          outbox_len(ob))
      elseif not refused(delay) then
        log("warn", "lost the scheduler at %s after %.0f s: %s (%s); workloads keep running; "
          .. "registering again in %.1f s (%d status update(s) waiting)", url, lived, why(err),
          grpc.status_name(code or 14), delay, outbox_len(ob))
      end
      stats.reconnects = stats.reconnects + 1
      task.sleep(delay)
    end
  end
end

return M
