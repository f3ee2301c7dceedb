-- riklet.prom — riklet's series in the Prometheus text exposition format (0.0.4): instances by
-- state, per-instance CPU and memory from the cgroups, container restarts, start and pull duration
-- histograms, scheduler connection and status updates, policy errors, loop lag, and the standard
-- process_* series of the agent process.
--
--   prom.inc(name, labels, n) / prom.observe(name, labels, value)   the daemon's counters and
--       histograms (names from M.COUNTERS / M.HISTOGRAMS); labels: a table or nil
--   prom.snapshot() -> plain table of them (saved in STATE/agent.json by riklet.status)
--   prom.collect({status=, records=, pid=, agent_running=}) -> families
--       status: the agent's status snapshot (riklet.status; it holds prom.snapshot()), records:
--       instance records (riklet.store), pid: the agent process (for process_*)
--   prom.render(families) -> text
--
--   prom.serve(addr, records) -> server | nil, err    GET /metrics on addr (--metrics-listen) from
--       the running agent's live state: records() -> its instance records (in memory)
--
-- `riklet metrics` prints collect() from STATE/agent.json and the records on disk.
local fs = require "riklet.fs"

local M = {}

M.HISTOGRAMS = {
  riklet_instance_start_duration_seconds = { help = "Time from CREATING to RUNNING of an instance (image pull, unpack, start).",
    labels = { "kind" }, buckets = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 } },
  riklet_image_pull_duration_seconds = { help = "Duration of image pulls (skopeo copy), failed ones included.",
    labels = { "result" }, buckets = { 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 } },
}
M.COUNTERS = {
  riklet_image_pulls_total = { help = "Image pulls by result (ok, error).", labels = { "result" } },
}

local reg = { counters = {}, histograms = {} }

local function key_of(labels)
  if not labels then return "" end
  local ks = {}
  for k in pairs(labels) do ks[#ks + 1] = k end
  table.sort(ks)
  for i, k in ipairs(ks) do ks[i] = k .. "=" .. tostring(labels[k]) end
  return table.concat(ks, ",")
end

function M.inc(name, labels, n)
  assert(M.COUNTERS[name], "unknown counter " .. tostring(name))
  local c = reg.counters[name] or {}
  reg.counters[name] = c
  local k = key_of(labels)
  local e = c[k] or { labels = labels or {}, value = 0 }
  c[k] = e
  e.value = e.value + (n or 1)
end

function M.observe(name, labels, v)
  local def = assert(M.HISTOGRAMS[name], "unknown histogram " .. tostring(name))
  local h = reg.histograms[name] or {}
  reg.histograms[name] = h
  local k = key_of(labels)
  local e = h[k]
  if not e then
    e = { labels = labels or {}, counts = {}, sum = 0, count = 0 }
    for i = 1, #def.buckets do e.counts[i] = 0 end
    h[k] = e
  end
  for i, b in ipairs(def.buckets) do
    if v <= b then e.counts[i] = e.counts[i] + 1 end
  end
  e.sum = e.sum + v
  e.count = e.count + 1
end

-- as plain arrays (JSON objects with "" keys do not survive every decoder)
function M.snapshot()
  local out = { counters = {}, histograms = {} }
  for name, c in pairs(reg.counters) do
    local l = {}
    for _, e in pairs(c) do l[#l + 1] = e end
    out.counters[name] = l
  end
  for name, h in pairs(reg.histograms) do
    local l = {}
    for _, e in pairs(h) do l[#l + 1] = e end
    out.histograms[name] = l
  end
  return out
end

-- The daemon's instrumentation: image pulls (the on_pull hook of riklet.imagecfg: riklet.image
-- itself is loaded by the first create) and the time from CREATING to RUNNING of each instance
-- (agent transitions).
function M.instrument(agent)
  local core = require "riklet.core"
  require("riklet.imagecfg").on_pull = function(ok, secs)
    local result = ok and "ok" or "error"
    M.inc("riklet_image_pulls_total", { result = result })
    M.observe("riklet_image_pull_duration_seconds", { result = result }, secs)
  end
  local t0 = {}
  agent.subscribe(function(id, status)
    if status == "CREATING" then
      t0[id] = t0[id] or core.now()
    elseif t0[id] then
      if status == "RUNNING" then
        local inst = agent.instance and agent.instance(id)
        local kind = inst and inst.rec and inst.rec.kind or "unknown"
        M.observe("riklet_instance_start_duration_seconds", { kind = kind }, core.now() - t0[id])
      end
      t0[id] = nil
    end
  end)
end

-- ---- rendering --------------------------------------------------------------------------------

local function fmtnum(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 0x1p53 then return ("%d"):format(v) end
  return ("%.17g"):format(v)
end

local function esc_label(s) return (tostring(s):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"')) end
local function esc_help(s) return (s:gsub("\\", "\\\\"):gsub("\n", "\\n")) end

local function labelstr(labels, extra)
  local ks = {}
  for k in pairs(labels or {}) do ks[#ks + 1] = k end
  table.sort(ks)
  local parts = {}
  for _, k in ipairs(ks) do parts[#parts + 1] = ('%s="%s"'):format(k, esc_label(labels[k])) end
  if extra then parts[#parts + 1] = extra end
  if #parts == 0 then return "" end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- families: { {name=, help=, type="counter"|"gauge"|"histogram", samples={ {labels=, value=} }
-- or, for a histogram, series={ {labels=, buckets={b...}, counts={...}, sum=, count=} } }, ... }
function M.render(families)
  local out = {}
  for _, f in ipairs(families) do
    out[#out + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(f.name, esc_help(f.help), f.name, f.type)
    if f.type == "histogram" then
      for _, s in ipairs(f.series or {}) do
        for i, b in ipairs(s.buckets) do
          out[#out + 1] = ("%s_bucket%s %s\n"):format(f.name, labelstr(s.labels, ('le="%s"'):format(fmtnum(b))), fmtnum(s.counts[i] or 0))
        end
        out[#out + 1] = ("%s_bucket%s %s\n"):format(f.name, labelstr(s.labels, 'le="+Inf"'), fmtnum(s.count))
        out[#out + 1] = ("%s_sum%s %s\n"):format(f.name, labelstr(s.labels), fmtnum(s.sum))
        out[#out + 1] = ("%s_count%s %s\n"):format(f.name, labelstr(s.labels), fmtnum(s.count))
      end
    else
      for _, s in ipairs(f.samples or {}) do
        out[#out + 1] = ("%s%s %s\n"):format(f.name, labelstr(s.labels), fmtnum(s.value))
      end
    end
  end
  return table.concat(out)
end

-- ---- collecting -------------------------------------------------------------------------------

local STATES = { "CREATING", "RUNNING", "DESTROYING", "FAILED", "TERMINATED" }
local KINDS = { "Pod", "Function" }

-- process_* series of pid, as client libraries export them
local function process_families(pid, started_at, add)
  local status = require "riklet.status"
  local st = status.proc_status(pid)
  if not st then return end
  add("process_resident_memory_bytes", "gauge", "Resident memory size of the riklet process in bytes.",
    { { value = (st.rss_kib or 0) * 1024 } })
  local fds = fs.list("/proc/" .. pid .. "/fd")
  if fds then add("process_open_fds", "gauge", "Number of open file descriptors of the riklet process.", { { value = #fds } }) end
  local maxfds = status.max_open_files(pid)
  if maxfds then add("process_max_fds", "gauge", "Maximum number of open file descriptors.", { { value = maxfds } }) end
  local stat = fs.read("/proc/" .. pid .. "/stat", 4096)
  local after = stat and stat:match("%) (.*)$")
  if after then
    local f = {}
    for x in after:gmatch("%S+") do f[#f + 1] = x end
    -- fields 14 and 15 (utime, stime) are the 12th and 13th after "pid (comm)"; USER_HZ is 100 on Linux
    add("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
      { { value = ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / 100 } })
  end
  if started_at then
    add("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", { { value = started_at } })
  end
end

function M.collect(opts)
  local cgstats = require "riklet.cgstats"
  local fams = {}
  local function add(name, typ, help, samples) fams[#fams + 1] = { name = name, type = typ, help = help, samples = samples } end
  local status = opts.status or {}
  add("riklet_build_info", "gauge", "riklet's version (always 1).", { { labels = { version = status.version or require("riklet.core").version }, value = 1 } })
  add("riklet_agent_running", "gauge", "1 when a riklet agent runs on this state directory.", { { value = opts.agent_running and 1 or 0 } })

  -- instances
  local by = {}
  for _, k in ipairs(KINDS) do
    by[k] = {}
    for _, s in ipairs(STATES) do by[k][s] = 0 end
  end
  local cpu, mem, peak, limit, ooms, pids, restarts = {}, {}, {}, {}, {}, {}, {}
  for _, r in ipairs(opts.records or {}) do
    local kind = r.kind or "unknown"
    by[kind] = by[kind] or {}
    local st = r.status or "UNKNOWN"
    by[kind][st] = (by[kind][st] or 0) + 1
    local il = { instance = r.id, kind = kind }
    for _, c in ipairs(type(r.containers) == "table" and r.containers or {}) do
      if type(c) == "table" and c.name then
        restarts[#restarts + 1] = { labels = { instance = r.id, container = c.name }, value = tonumber(c.restart_count) or 0 }
      end
    end
    local m = st == "RUNNING" and cgstats.of_instance(r)
    if m then
      if m.cpu_seconds then cpu[#cpu + 1] = { labels = il, value = m.cpu_seconds } end
      if m.memory_bytes then mem[#mem + 1] = { labels = il, value = m.memory_bytes } end
      if m.memory_peak_bytes then peak[#peak + 1] = { labels = il, value = m.memory_peak_bytes } end
      if m.memory_limit_bytes then limit[#limit + 1] = { labels = il, value = m.memory_limit_bytes } end
      if m.oom_kills then ooms[#ooms + 1] = { labels = il, value = m.oom_kills } end
      if m.pids then pids[#pids + 1] = { labels = il, value = m.pids } end
    end
  end
  local samples = {}
  local kinds = {}
  for k in pairs(by) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  for _, k in ipairs(kinds) do
    local states = {}
    for s in pairs(by[k]) do states[#states + 1] = s end
    table.sort(states)
    for _, s in ipairs(states) do samples[#samples + 1] = { labels = { kind = k, state = s }, value = by[k][s] } end
  end
  add("riklet_instances", "gauge", "Instances on this node by kind and state (ended ones until forgotten, see --keep-records).", samples)
  add("riklet_instance_cpu_seconds_total", "counter", "CPU time used by a running instance (its containers' cgroups, a Function's VMM process), in seconds.", cpu)
  add("riklet_instance_memory_bytes", "gauge", "Memory used by a running instance (cgroups; a Function's VMM: its RSS), in bytes.", mem)
  add("riklet_instance_memory_peak_bytes", "gauge", "Peak memory of a running instance's cgroups, in bytes.", peak)
  add("riklet_instance_memory_limit_bytes", "gauge", "Memory limit of a running instance (absent: no limit), in bytes.", limit)
  add("riklet_instance_oom_kills_total", "counter", "Processes of a running instance killed by the OOM killer.", ooms)
  add("riklet_instance_pids", "gauge", "Processes (tasks) in a running instance's cgroups.", pids)
  add("riklet_container_restarts_total", "counter", "Restarts of a container by its restart policy.", restarts)

  -- the daemon's own counters and histograms
  local snap = type(status.prom) == "table" and status.prom or M.snapshot()
  for name, def in pairs(M.COUNTERS) do
    local l = {}
    for _, e in ipairs(snap.counters and snap.counters[name] or {}) do l[#l + 1] = { labels = e.labels, value = e.value } end
    add(name, "counter", def.help, l)
  end
  local hnames = {}
  for name in pairs(M.HISTOGRAMS) do hnames[#hnames + 1] = name end
  table.sort(hnames)
  for _, name in ipairs(hnames) do
    local def = M.HISTOGRAMS[name]
    local series = {}
    for _, e in ipairs(snap.histograms and snap.histograms[name] or {}) do
      series[#series + 1] = { labels = e.labels, buckets = def.buckets, counts = e.counts, sum = e.sum, count = e.count }
    end
    fams[#fams + 1] = { name = name, type = "histogram", help = def.help, series = series }
  end

  -- scheduler front-end (present when it runs)
  local sch = type(status.scheduler) == "table" and status.scheduler
  if sch then
    if sch.connected ~= nil then
      add("riklet_scheduler_connected", "gauge", "1 while the scheduler stream is open.", { { value = sch.connected and 1 or 0 } })
    end
    add("riklet_scheduler_reconnects_total", "counter", "Reconnections to the scheduler.", { { value = sch.reconnects or 0 } })
    add("riklet_scheduler_registrations_total", "counter", "Register calls the scheduler accepted.", { { value = sch.registered or 0 } })
    add("riklet_scheduler_instructions_total", "counter", "Instructions (create, destroy) received from the scheduler.", { { value = sch.instructions or 0 } })
    add("riklet_status_updates_sent_total", "counter", "Instance status updates sent to the scheduler.", { { value = sch.statuses_sent or 0 } })
    if sch.queued ~= nil then
      add("riklet_status_updates_queued", "gauge", "Instance status updates waiting to be sent.", { { value = sch.queued } })
    end
    add("riklet_node_metrics_sent_total", "counter", "Node metric reports sent to the scheduler.", { { value = sch.metrics_sent or 0 } })
    add("riklet_instance_metrics_sent_total", "counter", "Per-instance metric reports sent to the scheduler.",
      { { value = sch.instance_metrics_sent or 0 } })
  end

  local pe = {}
  local pnames = {}
  for name in pairs(type(status.policy_errors) == "table" and status.policy_errors or {}) do pnames[#pnames + 1] = name end
  table.sort(pnames)
  for _, name in ipairs(pnames) do pe[#pe + 1] = { labels = { policy = name }, value = status.policy_errors[name] } end
  add("riklet_policy_errors_total", "counter", "Policy calls that failed (did not load, raised, overran their budget).", pe)

  local lp = type(status.loop) == "table" and status.loop
  if lp then
    add("riklet_loop_lag_seconds", "gauge", "Longest time one event-loop turn kept everything else waiting "
      .. "(window: all since start, recent: the last minutes, last: the last turn).", {
      { labels = { window = "all" }, value = (lp.lag_max_ms or 0) / 1000 },
      { labels = { window = "recent" }, value = (lp.lag_recent_ms or 0) / 1000 },
      { labels = { window = "last" }, value = (lp.lag_last_ms or 0) / 1000 } })
    add("riklet_loop_turns_total", "counter", "Event-loop turns.", { { value = lp.turns or 0 } })
    add("riklet_loop_slow_turns_total", "counter", "Event-loop turns that took too long.", { { value = lp.slow_turns or 0 } })
  end
  if opts.pid then process_families(opts.pid, status.started_at, add) end
  return fams
end

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- The daemon's /metrics: the same families as `riklet metrics`, from the live agent (no file read
-- but /proc and the cgroups). Other paths 404, other methods 405 (riklet.httpd).
function M.serve(addr, records)
  local core = require "riklet.core"
  local status = require "riklet.status"
  local function metrics()
    local recs = records()
    local n = 0
    for _, r in ipairs(recs) do
      if r.status ~= "TERMINATED" and r.status ~= "FAILED" then n = n + 1 end
    end
    local text = M.render(M.collect({ status = status.snapshot(n), records = recs, pid = core.getpid(), agent_running = true }))
    return 200, text, { ["Content-Type"] = M.CONTENT_TYPE }
  end
  local srv, err = require("riklet.httpd").serve(addr, { name = "metrics", body_max = 4096, conn_max = 64 },
    { ["GET /metrics"] = metrics })
  if not srv then return nil, ("--metrics-listen %s: %s"):format(addr, tostring(err)) end
  M.server = srv -- held here: a server nothing refers to is collected, and its socket closed with it
  core.log("info", "metrics", ("serving Prometheus metrics on http://%s/metrics%s"):format(addr,
    srv:port() > 0 and addr:match(":0$") and (" (port %d)"):format(srv:port()) or ""))
  return srv
end

return M
