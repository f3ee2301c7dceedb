-- riklet.interlink — riklet as an interLink plugin: Kubernetes pods offloaded by interLink's
-- virtual kubelet run as riklet Pods (INTERLINK.md has the wire facts).
--
--   POST /create   RetrievedPodData (object, or a one-element array) -> {PodUID, PodJID}; the pod
--                  is created in the background; a repeated create of one UID starts nothing
--   GET  /status   [v1.Pod] -> [PodStatus] (one ContainerStatus per container); [] is the ping
--   POST /delete   v1.Pod -> 200 once it is destroyed (unknown: 200 too)
--   GET  /getLogs  LogStruct -> text/plain (Tail, Bytes, Timestamps, SinceSeconds, SinceTime,
--                  Previous, Follow streamed until the container ends or the client leaves)
-- The instance id (the PodJID) is "k8s-" .. the pod UID, never the name; pods are instances in
-- riklet's store like any other, so a restarted riklet answers for them with the same PodJID.
local core = require "riklet.core"
local task = require "riklet.task"
local fs = require "riklet.fs"
local json = require "riklet.json"
local httpd = require "riklet.httpd"
local workload = require "riklet.workload"
local crilog = require "riklet.crilog"

local I = {}
local cfg, agent

local JSON_DEPTH = 100
local STATUS_BATCH = 100 -- pods per turn of the loop in a /status
local ID_PREFIX = "k8s-"

local function log(level, fmt, ...) core.log(level, "interlink", fmt:format(...)) end

-- The instance id of a pod UID (Kubernetes UIDs are UUIDs), or nil.
function I.pod_id(uid)
  if type(uid) == "string" and #uid <= 60 and uid:match("^[A-Za-z0-9][A-Za-z0-9-]*$") then return ID_PREFIX .. uid end
  return nil
end

local function text(status, fmt, ...)
  return status, "riklet: " .. fmt:format(...) .. "\n"
end

-- interLink's InterLink-Http-Session header (e.g. CreatePod#123), for log lines; made safe to log.
local function session(info)
  local h = info.headers["interlink-http-session"]
  if not h then return "" end
  return (" [session %s]"):format(h:sub(1, 64):gsub("[^%w#._:/-]", "?"))
end

local function decode(info)
  local body = info.body or ""
  if body:match("^%s*$") then return nil end
  local v, err = json.decode(body, JSON_DEPTH)
  if v == nil then return nil, "the body is not valid JSON: " .. tostring(err) end
  return v
end

local function pod_ident(pod)
  if type(pod) ~= "table" or pod[1] ~= nil then return nil, "a pod must be a JSON object (a v1.Pod)" end
  local md = pod.metadata
  if type(md) ~= "table" then return nil, "pod.metadata is missing" end
  local uid = md.uid
  local id = I.pod_id(uid)
  if not id then
    return nil, ("pod.metadata.uid is %s: a pod UID (letters, digits and '-', at most 60) is needed"):format(
      type(uid) == "string" and ("%q"):format(uid:sub(1, 80)) or "missing")
  end
  local ns = md.namespace == nil and "default" or md.namespace
  if type(ns) ~= "string" or #ns > 63 or not ns:match("^[A-Za-z0-9][A-Za-z0-9-]*$") then
    return nil, "pod.metadata.namespace must be a Kubernetes namespace name (letters, digits and '-', at most 63)"
  end
  local name = md.name
  if type(name) ~= "string" or #name > 253 or not name:match("^[A-Za-z0-9][A-Za-z0-9._-]*$") then
    return nil, "pod.metadata.name must be a Kubernetes pod name (letters, digits, '.', '_' and '-', at most 253)"
  end
  return { id = id, uid = uid, name = name, namespace = ns }
end

-- ---- /create ----------------------------------------------------------------------------------

-- The parsing and mapping of the request bodies are module fields (pure: no instance, no socket), for
-- tests/fuzz/interlink.lua.

-- A /create body (a RetrievedPodData object, or a one-element array): data, pod ident | nil, status, text.
function I.create_request(info)
  local data, err = decode(info)
  if data == nil then return nil, text(400, "%s", err or "the body is empty: POST /create needs a RetrievedPodData") end
  if type(data) == "table" and data[1] ~= nil then
    if #data ~= 1 then return nil, text(400, "the body is an array of %d entries: send one RetrievedPodData", #data) end
    data = data[1]
  end
  if type(data) ~= "table" then return nil, text(400, "the body must be a RetrievedPodData object {pod, container}") end
  local p
  p, err = pod_ident(data.pod)
  if not p then return nil, text(400, "%s", err) end
  return data, p
end

-- The riklet definition (JSON, validated as every front-end's) of a RetrievedPodData whose pod is
-- `p`: definition, notes | nil, reason.
function I.create_definition(data, p)
  local def, notes = workload.from_k8s(data)
  if not def then
    log("warn", "pod %s/%s (%s) refused: %s", p.namespace, p.name, p.uid, notes)
    return nil, ("pod %s/%s refused: %s"):format(p.namespace, p.name, notes)
  end
  local definition, err = json.encode(def)
  if not definition then return nil, ("pod %s/%s refused: %s"):format(p.namespace, p.name, err) end
  local ok, verr = workload.from_rik(definition)
  if not ok then
    -- the model's field names are the pod's, under pod.spec
    verr = tostring(verr):gsub("^spec%.", "pod.spec.")
    log("warn", "pod %s/%s (%s) refused: %s", p.namespace, p.name, p.uid, verr)
    return nil, ("pod %s/%s refused: %s"):format(p.namespace, p.name, verr)
  end
  return definition, notes
end

local function create(info)
  local data, p, perr = I.create_request(info)
  if not data then return p, perr end
  local cur = agent.get(p.id)
  if cur and not cur.gone and cur.status == "DESTROYING" then
    return text(409, "pod %s/%s (%s) is being deleted: create it again once it is gone", p.namespace, p.name, p.uid)
  end
  if cur and not cur.gone then
    log("info", "pod %s/%s (%s): already created as %s (%s): nothing started", p.namespace, p.name, p.uid, p.id,
      tostring(cur.status))
    return 200, { PodUID = p.uid, PodJID = p.id }
  end
  local definition, notes = I.create_definition(data, p)
  if not definition then return text(422, "%s", notes) end
  for _, n in ipairs(notes) do log("warn", "pod %s/%s (%s): %s", p.namespace, p.name, p.uid, n) end
  local cok, cerr = agent.create(p.id, definition, ("interlink:%s/%s"):format(p.namespace, p.name))
  if not cok then return text(503, "pod %s/%s not created: %s", p.namespace, p.name, tostring(cerr)) end
  log("info", "pod %s/%s (%s): creating as instance %s%s", p.namespace, p.name, p.uid, p.id, session(info))
  return 200, { PodUID = p.uid, PodJID = p.id }
end

-- ---- /status ----------------------------------------------------------------------------------

local function rfc3339(t)
  if type(t) ~= "number" then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

local function terminated(c, fallback_reason)
  local code, sig = c.exit_code, c.exit_signal
  if code == nil or code < 0 then code = sig and (128 + sig) or 128 end
  local reason = fallback_reason or (code == 0 and not sig and "Completed" or "Error")
  if c.oom then reason = "OOMKilled" end
  return { terminated = { exitCode = code, signal = sig, reason = reason, message = c.reason ~= "" and c.reason or nil,
    startedAt = rfc3339(c.started_at), finishedAt = rfc3339(c.finished_at or c.started_at) } }
end

-- One v1.ContainerStatus for spec container `spec_c` of an instance view `v` (nil: unknown pod).
local function container_status(v, spec_c, has_init)
  local name = type(spec_c) == "table" and spec_c.name or "?"
  local out = { name = name, image = type(spec_c) == "table" and spec_c.image or "", imageID = "", ready = false,
    restartCount = 0 }
  if not v then
    out.state = { terminated = { exitCode = 137, reason = "ContainerStatusUnknown",
      message = "riklet has no pod with this UID (never created on this node, or deleted)" } }
    return out
  end
  local c
  for _, x in ipairs(v.containers or {}) do
    if x.name == name then c = x end
  end
  out.restartCount = c and c.restart_count or 0
  if c then
    out.containerID = "riklet://" .. tostring(c.runc_id)
    out.imageID = c.digest or ""
  end
  local st = v.status
  if st == "FAILED" and (not c or not c.started_at) then
    -- the pod could not be created (or lost): a reason that fails it, never waiting forever
    local msg = tostring(v.message or "")
    local reason = "CreateContainerError"
    if not c and msg:find("ErrImageNeverPull", 1, true) then reason = "ErrImageNeverPull"
    elseif not c and msg:match("^init container") then reason = "Init:Error"
    elseif not c and (msg:find("image", 1, true) or msg:find("pull", 1, true)) then reason = "ErrImagePull"
    elseif c then reason = "StartError" end
    out.state = { terminated = { exitCode = 128, reason = reason, message = msg } }
    return out
  end
  if not c or c.state == "preparing" or c.state == "created" then
    if st == "TERMINATED" or st == "DESTROYING" then
      out.state = { terminated = { exitCode = 0, reason = "Completed", message = "destroyed before it started" } }
    else
      out.state = { waiting = { reason = has_init and "PodInitializing" or "ContainerCreating" } }
    end
  elseif c.state == "running" then
    if st == "DESTROYING" or (st == "TERMINATED" and v.gone) then
      out.state = terminated({ exit_signal = 15, started_at = c.started_at, finished_at = core.time(), reason = "destroyed" })
    else
      out.state = { running = { startedAt = rfc3339(c.started_at) } }
      -- its readiness and startup probes (riklet.probe) decide; none: ready once running
      out.ready = c.ready ~= false
      out.started = c.started ~= false
    end
  elseif c.state == "waiting" then
    out.state = { waiting = { reason = "CrashLoopBackOff", message = c.reason } }
    out.lastState = terminated(c)
  else -- exited, deleted
    if c.exit_code == nil and c.exit_signal == nil then
      out.state = terminated({ exit_signal = 15, started_at = c.started_at, finished_at = c.finished_at,
        reason = "stopped by a delete" })
    else
      out.state = terminated(c)
    end
  end
  return out
end

-- The v1.PodStatus of a pod; get(id) -> the instance view (nil: unknown here): status | nil, err.
-- unknown: a list the unknown pod is added to (the caller logs them once), else it is logged here.
function I.pod_status(pod, get, unknown)
  local p, err = pod_ident(pod)
  if not p then return nil, err end
  local v = get(p.id)
  local spec = type(pod.spec) == "table" and pod.spec or {}
  local st = { name = p.name ~= "" and p.name or p.uid, UID = p.uid, namespace = p.namespace, JID = p.id,
    containers = json.array({}), initContainers = json.array({}) }
  local inits = type(spec.initContainers) == "table" and spec.initContainers or {}
  for _, c in ipairs(type(spec.containers) == "table" and spec.containers or {}) do
    st.containers[#st.containers + 1] = container_status(v, c, #inits > 0)
  end
  for _, c in ipairs(inits) do
    st.initContainers[#st.initContainers + 1] = container_status(v, c, false)
  end
  if not v then
    local what = ("%s/%s (%s)"):format(p.namespace, p.name, p.uid)
    if unknown then unknown[#unknown + 1] = what
    else log("info", "status of unknown pod %s: reported as failed", what) end
  end
  return st
end

local function ping()
  local metrics = require "riklet.metrics"
  local cpu, mem = metrics.cpu(), metrics.memory()
  return 200, { status = "ok", resources = {
    cpu = tostring(cpu and cpu.total or 0),
    memory = tostring(mem and math.floor(mem.total / 1024 / 1024) or 0) .. "Mi",
    pods = tostring(cfg.max_instances or 1000),
  } }
end

-- A /status body: the list of v1.Pod ({}: the ping, an empty body or []) | nil, err.
function I.status_request(info)
  local pods, err = decode(info)
  if pods == nil and err then return nil, err end
  if pods == nil or (type(pods) == "table" and next(pods) == nil) then return {} end
  if type(pods) ~= "table" then return nil, "the body must be a JSON array of v1.Pod" end
  if pods[1] == nil then pods = { pods } end
  return pods
end

local function status(info, req)
  local pods, err = I.status_request(info)
  if not pods then return text(400, "%s", err) end
  if #pods == 0 then return ping() end
  log("debug", "GET /status: %d pods%s", #pods, session(info))
  local out, unknown = json.array({}), {}
  for i, pod in ipairs(pods) do
    -- a body may hold tens of thousands of pods: let the loop turn between batches
    if i % STATUS_BATCH == 0 then
      task.yield()
      if req and req:gone() then return end
    end
    local st
    st, err = I.pod_status(pod, agent.get, unknown)
    if not st then return text(400, "pod %d: %s", i, err) end
    out[#out + 1] = st
  end
  if #unknown > 0 then
    log("info", "status of %d unknown pod(s) reported as failed: %s%s", #unknown,
      table.concat(unknown, ", ", 1, math.min(#unknown, 5)), #unknown > 5 and ", ..." or "")
  end
  return 200, out
end

-- ---- /delete ----------------------------------------------------------------------------------

-- A /delete body (the v1.Pod, or an array of it): pod ident, grace period (number or false) | nil, err.
function I.delete_request(info)
  local pod, err = decode(info)
  if pod == nil then return nil, err or "the body is empty: POST /delete needs the v1.Pod" end
  if type(pod) == "table" and pod[1] ~= nil then pod = pod[1] end
  local p
  p, err = pod_ident(pod)
  if not p then return nil, err end
  return p, type(pod.spec) == "table" and tonumber(pod.spec.terminationGracePeriodSeconds)
end

local function delete(info)
  local p, grace = I.delete_request(info)
  if not p then return text(400, "%s", grace) end
  local v = agent.get(p.id)
  if not v or v.gone then
    log("info", "delete of pod %s/%s (%s): not known here (or already deleted): nothing to do", p.namespace, p.name, p.uid)
    return 200, "riklet: nothing to delete\n"
  end
  local inst = agent.instance(p.id)
  if grace and grace >= 0 and grace <= workload.LIMITS.grace_period and inst then inst.grace = grace end
  log("info", "delete of pod %s/%s (%s): destroying instance %s%s%s", p.namespace, p.name, p.uid, p.id,
    grace and (" (grace period %g s)"):format(grace) or "", session(info))
  agent.destroy(p.id)
  local ok, werr = agent.wait_gone(p.id)
  if not ok then return text(500, "pod %s/%s: the destroy did not complete: %s", p.namespace, p.name, tostring(werr)) end
  return 200, "riklet: deleted\n"
end

-- ---- /getLogs ---------------------------------------------------------------------------------

local LIVE = { preparing = true, created = true, running = true, waiting = true }

local function fmt_entry(e, ts)
  local line = e.text .. crilog.eol(e)
  if e.cont then return line end -- a piece of a long line (crilog): on the line before
  if ts then line = (e.ts or "-"):gsub("%+00:00$", "Z") .. " " .. line end
  return line
end

-- A /getLogs body: the LogStruct | nil, err.
function I.logs_request(info)
  local q, err = decode(info)
  if q == nil then return nil, err or "the body is empty: GET /getLogs needs a LogStruct" end
  if type(q) ~= "table" then return nil, "the body must be a LogStruct object" end
  return q
end

-- The LogStruct's Opts that select lines: { since (epoch s), tail, limit (bytes), ts } | nil, err.
function I.log_options(opts)
  local since
  if tonumber(opts.SinceSeconds) and tonumber(opts.SinceSeconds) > 0 then since = core.time() - tonumber(opts.SinceSeconds) end
  if type(opts.SinceTime) == "string" and not opts.SinceTime:match("^0001%-") then
    since = crilog.parse_time(opts.SinceTime)
    if not since then return nil, ("Opts.SinceTime %q is not an RFC 3339 time"):format(opts.SinceTime) end
  end
  local tail = tonumber(opts.Tail)
  if tail and tail <= 0 then tail = nil end
  local limit = tonumber(opts.Bytes)
  if limit and limit <= 0 then limit = nil end
  return { since = since, tail = tail, limit = limit, ts = opts.Timestamps == true }
end

-- The log at path as /getLogs answers it (not followed), streamed to req in chunks of about 32 KiB
-- read from the file as the client takes them: a client holds about that much, whatever the log's
-- size (o: I.log_options). A log not written yet is an empty answer.
local LOG_CHUNK = 32 * 1024
function I.send_log(req, path, o)
  local limit, sent = o.limit, 0
  local next_entry, close = crilog.select(path, { since = o.since, tail = o.tail, on_chunk = task.yield })
  local buf, n = {}, 0
  local function flush()
    local ok = n == 0 or req:write(table.concat(buf), LOG_CHUNK)
    sent, buf, n = sent + n, {}, 0
    return ok
  end
  for e in next_entry or function() end do
    local line = fmt_entry(e, o.ts)
    local room = limit and limit - sent - n
    if room and #line >= room then
      buf[#buf + 1], n = line:sub(1, room), n + room
      break
    end
    buf[#buf + 1], n = line, n + #line
    if n >= LOG_CHUNK and not flush() then break end
  end
  flush()
  if close then close() end
  req:finish()
end

local function get_logs(info, req)
  local q, err = I.logs_request(info)
  if not q then return text(400, "%s", err) end
  local id = I.pod_id(q.PodUID)
  local v = id and agent.get(id)
  if not v then return text(404, "no pod with UID %s on this node", tostring(q.PodUID)) end
  local opts = type(q.Opts) == "table" and q.Opts or {}
  local cname = q.ContainerName
  local c, src
  for _, x in ipairs(v.containers or {}) do
    if x.name == cname then c = x end
  end
  for _, s in ipairs(require("riklet.pod").logs({ id = id, containers = v.containers }, cfg.paths.instances)) do
    if s.name == cname then src = s end
  end
  if not c or not src then
    return text(404, "pod %s has no container %s (it has: %s)", tostring(q.PodName or q.PodUID), tostring(cname),
      (function()
        local n = {}
        for _, x in ipairs(v.containers or {}) do n[#n + 1] = x.name end
        return #n > 0 and table.concat(n, ", ") or "none started yet"
      end)())
  end
  local path = src.path
  if opts.Previous == true then
    if not src.previous then return text(404, "container %s has not been restarted: it has no previous run", cname) end
    path = src.previous
  end
  local o, oerr = I.log_options(opts)
  if not o then return text(400, "%s", oerr) end
  local ok, serr = req:stream(200, { ["Content-Type"] = "text/plain; charset=utf-8" })
  if not ok then return log("info", "getLogs %s/%s: %s", id, httpd.shown(cname), tostring(serr)) end
  if opts.Follow ~= true or opts.Previous == true then
    return I.send_log(req, path, o)
  end
  -- Follow: what the log holds (since, tail) read and sent about LOG_CHUNK at a time as the client
  -- takes it, then what is written after, every 0.2 s, until the container ends or the client
  -- leaves. A log started over by conmon (--log-size-max) is read to its end, then the new file.
  local f = crilog.follower({ { name = cname, path = path } }, { since = o.since, tail = o.tail, chunk = LOG_CHUNK,
    on_chunk = task.yield })
  local limit, sent = o.limit, 0
  local function send(entries)
    local buf = {}
    for _, e in ipairs(entries) do
      local line = fmt_entry(e, o.ts)
      if limit and sent + #line > limit then line = line:sub(1, limit - sent) end
      sent = sent + #line
      buf[#buf + 1] = line
      if limit and sent >= limit then break end
    end
    if #buf > 0 and not req:write(table.concat(buf), LOG_CHUNK) then return false end
    return not (limit and sent >= limit)
  end
  while true do
    local cur = agent.get(id)
    local ended = not cur or cur.gone or not LIVE[c.state] or cur.status == "FAILED" or cur.status == "TERMINATED"
    if c.log and c.log ~= path and not ended then
      f:set_path(cname, c.log)
      path = c.log
    end
    local entries = f:poll(ended)
    if not send(entries) or req:gone() or (ended and not f.more) then break end
    if f.more then task.yield() else task.sleep(0.2) end
  end
  f:close()
  req:finish()
end

-- ---- start --------------------------------------------------------------------------------------

local function read_token(path)
  local t, err = fs.read(path, 4096, { follow = true })
  if not t then return nil, ("--interlink-token-file %s: %s"):format(path, tostring(err)) end
  t = t:gsub("^%s+", ""):gsub("%s+$", "")
  if t == "" then return nil, ("--interlink-token-file %s is empty: put the bearer token in it"):format(path) end
  return t
end

-- I.start(cfg, agent) -> servers | nil, err   (cfg.interlink: a list of addresses)
function I.start(config, ag)
  cfg, agent = config, ag
  local token
  if cfg.interlink_token_file then
    local err
    token, err = read_token(cfg.interlink_token_file)
    if not token then return nil, err end
  end
  local want = token and ("Bearer " .. token)
  local function auth(info)
    if not want then return true end
    local got = info.headers.authorization
    if got == want then return true end
    log("warn", "%s %s refused: %s bearer token", httpd.shown(info.method), httpd.shown(info.path), got and "wrong" or "no")
    return nil, 401, "riklet: this interLink endpoint needs Authorization: Bearer <token> (see --interlink-token-file)\n"
  end
  local routes = {
    ["POST /create"] = create, ["GET /status"] = status, ["POST /delete"] = delete, ["GET /getLogs"] = get_logs,
  }
  local servers = {}
  for _, addr in ipairs(cfg.interlink) do
    local srv, err = httpd.serve(addr, { name = "interlink", body_max = cfg.interlink_body_max, auth = auth,
      header_timeout = cfg.interlink_request_timeout }, routes)
    if not srv then
      for _, s in ipairs(servers) do s:close() end
      return nil, ("--interlink %s: %s"):format(addr, tostring(err))
    end
    servers[#servers + 1] = srv
    log("info", "serving the interLink plugin API on %s%s%s", addr,
      srv:port() > 0 and addr:match(":0$") and (" (port %d)"):format(srv:port()) or "",
      token and " (bearer token required)" or "")
  end
  I.servers = servers
  return servers
end

return I
