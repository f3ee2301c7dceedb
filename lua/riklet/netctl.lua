-- riklet.netctl — the Pod and Function networks, decided here, programmed through riklet.net and
-- riklet.fw.
--
-- Pods: one network namespace per Pod instance (<netns_dir>/<instance-id>), a veth joining it to
-- the bridge (riklet0), an IPv4 address from the pod CIDR (bridge takes the first), a default
-- route via the bridge, and the exposed ports as DNAT rules decided by policies/network.lua.
-- Functions: a /30 per instance from the function CIDR (guest .1, TAP .2, as upstream), a TAP.
-- Allocations live in <state_dir>/network.json, written atomically before anything is created,
-- so a crash at any point leaves a record that teardown/reconcile can clean.
--
--   netctl.init(cfg) -> true | nil, err      cfg: pod_cidr, function_cidr, bridge, state_dir
--                                            (or paths.state), netns_dir (default /run/riklet/netns);
--                                            takes the node-wide lock: nil, err naming the other
--                                            riklet when one manages this network namespace
--   netctl.setup(id, workload) -> net | nil, err   (rolls back what it created on failure)
--       Pod:      net = { kind, netns, ip, address = "ip/len", gateway, host_if, ports }
--       Function: net = { kind, tap, guest_ip, tap_ip, netmask, address, kernel_ip, ports }
--   netctl.teardown(id) -> true | nil, err   (idempotent; an unknown id is fine)
--   netctl.adopt(id, workload, net) -> true | nil, err, gone   (after a riklet restart: repair drift;
--                                            gone: its namespace no longer exists; failing to write
--                                            the state is logged and retried, not an error)
--   netctl.reconcile(live_ids) -> summary | nil, err     (boot: remove what dead instances left)
--   netctl.cleanup_all([cfg]) -> true | nil, err         (riklet cleanup: remove everything)
--   netctl.exposed() -> { ["tcp/8080"] = id, ... }       netctl.state() -> the allocation table
local net = require "riklet.net"
local fw = require "riklet.fw"
local fs = require "riklet.fs"
local json = require "riklet.json"
local core = require "riklet.core"
local fault = require "riklet.fault"
local proc = require "riklet.proc"

local M = {}
local C -- the configuration, set by init
local S -- the persisted state: { version, pod_cidr, function_cidr, instances = { [id] = rec } }

local INFRA = "riklet:infra"
local NET_LOCK = "riklet/net" -- the network-namespace-wide lock (net.lock)
local VETH_PREFIX, TAP_PREFIX = "rkv", "rkt"

local function log(level, fmt, ...) core.log(level, "net", fmt:format(...)) end
local function owner(id) return "riklet:" .. id end

-- ---- the policy (always in the policy sandbox: plain data in, plain data out) --------------
local policy = require "riklet.policy"
local function call_policy(fname, ...) return policy.call("network", fname, ...) end

-- ---- addresses ------------------------------------------------------------------------------
local function parse_cidr(cidr, what)
  local n, len = net.parse_cidr(cidr)
  if not n then return nil, ("%s '%s': %s"):format(what, tostring(cidr), tostring(len)) end
  local size = 2 ^ (32 - len)
  local base = n - n % size
  return { base = base, len = len, size = size, cidr = net.ip4str(base) .. "/" .. len }
end

local function valid_id(id)
  return type(id) == "string" and #id >= 1 and #id <= 64 and id:match("^[A-Za-z0-9._-]+$") ~= nil
    and id ~= "." and id ~= ".."
end

-- FNV-1a over the id → 8 hex chars, for link names (IFNAMSIZ leaves 15 characters). The
-- multiply is split in 16-bit halves so doubles keep it exact.
local function hash8(s)
  local function mul32(a, b)
    local alo, ahi = a % 65536, math.floor(a / 65536) % 65536
    return (alo * b + (ahi * b % 65536) * 65536) % 4294967296
  end
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i)) % 4294967296
    h = mul32(h, 16777619)
  end
  return bit.tohex(h, 8)
end

local function link_name(prefix, id, taken)
  for k = 0, 99 do
    local name = prefix .. hash8(k == 0 and id or (id .. "#" .. k))
    if not taken[name] then return name end
  end
  error("no free link name for " .. id)
end

-- ---- state ----------------------------------------------------------------------------------
local function state_path() return C.state_dir .. "/network.json" end

local unsaved -- a save failed where failing to write changes nothing in the kernel (adopt, reconcile)
-- S differs from network.json in a way no adoption or removal marks (entries load dropped, CIDRs
-- changed): the boot's reconcile writes it. Otherwise a restart with nothing changed writes nothing.
local dirty

local writes_at, last_encode = {}, 0 -- when the last BURST_WRITES writes began (core.now()); the last encoding's seconds
local BURST_WRITES, BURST_SECONDS = 5, 5

-- save(false): without fsync, for what only describes kernel objects a machine crash takes away
-- with it (the namespaces, links and rules of M.setup): a crash of riklet alone keeps the page cache
local function write_state(durable)
  local t0 = core.now()
  table.insert(writes_at, 1, t0)
  writes_at[BURST_WRITES + 1] = nil
  local s, err = json.encode(S, true)
  last_encode = core.now() - t0
  if not s then return nil, "encoding the network state: " .. tostring(err) end
  local ok, werr = fs.write_atomic(state_path(), s, "0600", durable == false and { sync = false } or nil)
  if not ok then return nil, "saving the network state: " .. tostring(werr) end
  unsaved, dirty = nil, nil
  return true
end

-- Saves coalesce (group commit): while one write is on its way (it yields: two fsyncs on the
-- worker pool), the saves asked meanwhile wait for the one next write of the whole state as it is
-- then, and each returns once a write holding its change is on disk. One write per save made
-- 1,000 Pods created at once write a state growing with every Pod 2,000 times, one after the
-- other: O(n^2) bytes, and every Pod's network step waited for all the fsyncs queued before it.
-- The next write is durable (fsynced) when any save waiting for it asked for that.
-- During a burst the saves come one or two per loop turn (the turn's budget paces the creates'
-- network steps), and each write encodes the whole state again. So during a burst (BURST_WRITES
-- writes begun in the last BURST_SECONDS) a write begins at the earliest LINGER times the last
-- encoding's time after the last one began (at most LINGER_MAX s later), and the saves asked
-- meanwhile join it. One Pod created on a node with 1,000 (two saves) is written at once.
local writing, next_write, next_durable -- a write is in flight; the event the saves behind it wait for
local lingering -- { ev =, durable = }: a write waiting for the saves that join it
local LINGER, LINGER_MAX = 50, 0.5

local function save(durable)
  local task = require "riklet.task"
  if not task.in_task() then return write_state(durable) end
  if lingering then
    if durable ~= false then lingering.durable = true end
    local r = lingering.ev:wait()
    return r[1], r[2]
  end
  if writing then
    next_write = next_write or task.event()
    if durable ~= false then next_durable = true end
    local r = next_write:wait()
    return r[1], r[2]
  end
  writing = true
  local joined
  local t = core.now()
  local burst = writes_at[BURST_WRITES] and t - writes_at[BURST_WRITES] < BURST_SECONDS
  local wait = burst and writes_at[1] + LINGER * last_encode - t or 0
  if wait > 0 then
    lingering = { ev = task.event(), durable = durable ~= false }
    task.sleep(math.min(wait, LINGER_MAX))
    joined, lingering = lingering, nil
    durable = joined.durable
  end
  local pok, ok, err = pcall(write_state, durable)
  writing = false
  if not pok then ok, err = nil, "saving the network state: " .. tostring(ok) end
  if joined then joined.ev:set({ ok, err }) end
  if next_write then
    local ev, d = next_write, next_durable
    next_write, next_durable = nil, nil
    task.spawn(function()
      local r1, r2 = save(d and true or false)
      ev:set({ r1, r2 })
    end)
  end
  return ok, err
end

-- For tests only (tests/lua/store.test.lua): save() on a state dir of the test's. No public path
-- reaches save() without init, which takes the node-wide network lock, nor without the kernel
-- (teardown removes rules and links).
function M._save_for_test(state_dir, durable)
  if not C then C, S = { state_dir = state_dir }, { version = 1, instances = {} } end
  return save(durable)
end

-- After adoption or reconciliation the kernel matches S already: a full or read-only state disk
-- must not turn into "the workload is gone". Log it and keep trying in the background; any later
-- save writes the whole state too.
local function save_later(why)
  local ok, err = save()
  if ok then return true end
  log("error", "%s: %s. The network is in place; riklet keeps the state in memory and retries the write", why, err)
  if unsaved then return true end
  unsaved = true
  local task = require "riklet.task"
  task.spawn(function()
    local delay = 2
    while unsaved do
      task.sleep(delay)
      if not unsaved then break end
      local sok, serr = save()
      if sok then log("info", "the network state is written again (%s)", state_path())
      elseif delay < 60 then delay = delay * 2
      else log("error", "still cannot write the network state: %s", serr) end
    end
  end)
  return true
end

local function load()
  local p = state_path()
  if not fs.exists(p) then
    S = { version = 1, instances = {} }
    dirty = true
    return true
  end
  local data, err = fs.read(p)
  if not data then return nil, err end
  local t, derr = json.decode(data)
  if type(t) ~= "table" then
    return nil, ("the network state %s is not valid JSON (%s); move it away to start afresh, then run riklet cleanup"):format(p, tostring(derr))
  end
  t.instances = type(t.instances) == "table" and t.instances or {}
  -- the state file is input too: an entry is used only if every name and address in it is one
  -- riklet would have made (a dropped entry's links are still swept by name at reconcile, and a
  -- live instance gets its entry back from its record on adoption)
  for id, r in pairs(t.instances) do
    local why = M.bad_entry(id, r)
    if why then
      log("error", "%s: the entry of %s is ignored: %s", p, tostring(id):sub(1, 80), why)
      t.instances[id] = nil
      dirty = true
    end
  end
  S = t
  return true
end

local function ip_ok(s) return s == nil or (type(s) == "string" and net.ip4(s) ~= nil) end

-- Why a network state entry cannot be trusted, or nil.
function M.bad_entry(id, r)
  if not valid_id(id) then return "not an instance id" end
  if type(r) ~= "table" then return "not an object" end
  if r.kind ~= "Pod" and r.kind ~= "Function" then return "kind is not Pod or Function" end
  local pattern = r.kind == "Pod" and "^" .. VETH_PREFIX .. "%x%x%x%x%x%x%x%x$" or "^" .. TAP_PREFIX .. "%x%x%x%x%x%x%x%x$"
  if r.host_if ~= nil and not (type(r.host_if) == "string" and r.host_if:match(pattern)) then
    return "host_if is not a link name riklet makes"
  end
  if not (ip_ok(r.ip) and ip_ok(r.guest_ip) and ip_ok(r.tap_ip)) then return "an address is not an IPv4 address" end
  if r.rules ~= nil and type(r.rules) ~= "table" then return "rules is not an array" end
  if r.policy ~= nil and type(r.policy) ~= "string" then return "policy is not a string" end
  for _, rule in ipairs(r.rules or {}) do
    if type(rule) ~= "table" or rule.comment ~= owner(id) then return "a rule does not belong to it" end
  end
  return nil
end

local function used(kind)
  local u, names = {}, {}
  for _, r in pairs(S.instances) do
    if kind == "Pod" and r.kind == "Pod" and r.ip then u[net.ip4(r.ip)] = true end
    if kind == "Function" and r.kind == "Function" and r.slot then u[r.slot] = true end
    if r.host_if then names[r.host_if] = true end
  end
  return u, names
end

local function alloc_pod_ip()
  local u = used("Pod")
  local p = C.pod
  for n = p.base + 2, p.base + p.size - 2 do
    if not u[n] then return net.ip4str(n) end
  end
  return nil, ("the pod CIDR %s is exhausted (%d addresses in use); give a larger --pod-cidr"):format(p.cidr, p.size - 3)
end

local function alloc_fn_slot()
  local u = used("Function")
  local slots = C.fn.size / 4
  for k = 0, slots - 1 do
    if not u[k] then return k end
  end
  return nil, ("the function CIDR %s is exhausted (%d /30 blocks in use); give a larger --function-cidr"):format(C.fn.cidr, slots)
end

-- ---- node infrastructure -----------------------------------------------------------------------
local infra_ready = false

-- current: the rules in the chains now (fw.list()). The instances' rules come in the order they
-- are in now, then the others by id: fw keeps a chain in the order asked for, so the order of
-- pairs() moved most rules (a delete and an insert each: at a restart with 100 Pods, "86 rule(s)
-- removed" in the log, for a table that was right).
local function desired_all(current)
  local rules = {}
  local infra, err = call_policy("infra", {
    bridge = C.bridge, pod_cidr = C.pod.cidr, function_cidr = C.fn.cidr, tap_prefix = TAP_PREFIX, comment = INFRA,
  })
  if not infra then return nil, err end
  for _, r in ipairs(infra) do rules[#rules + 1] = r end
  local ids, seen, rest = {}, {}, {}
  for _, r in ipairs(current or {}) do
    local id = type(r.comment) == "string" and r.comment:match("^riklet:(.+)$")
    if id and S.instances[id] and not seen[id] then seen[id] = true ids[#ids + 1] = id end
  end
  for id in pairs(S.instances) do if not seen[id] then rest[#rest + 1] = id end end
  table.sort(rest)
  for _, id in ipairs(rest) do ids[#ids + 1] = id end
  for _, id in ipairs(ids) do
    for _, r in ipairs(S.instances[id].rules or {}) do rules[#rules + 1] = r end
  end
  return rules
end

-- ---- host rules in nftables ------------------------------------------------------------------
-- riklet programs iptables-legacy (libiptc). Rules the host keeps in nftables (iptables-nft,
-- Docker, firewalld, nftables.service) apply as well, and a drop there wins: a forward chain
-- with policy drop (Docker's) silently drops Pod traffic riklet's rules accept. riklet warns at
-- start, saying what to add; it does not refuse to run (the host's rules are the operator's, and
-- node-local access to exposed ports does not cross FORWARD).

-- From `nft -j list ruleset` output: a list of warnings (strings) for the bridge and TAP prefix.
function M.nft_findings(text, bridge, tap_prefix)
  local doc = type(text) == "string" and json.decode(text)
  local items = type(doc) == "table" and type(doc.nftables) == "table" and doc.nftables or {}
  local tables, drops, allowed = {}, {}, {}
  for _, it in ipairs(items) do
    if type(it) == "table" and type(it.table) == "table" then
      tables[#tables + 1] = ("%s %s"):format(tostring(it.table.family), tostring(it.table.name))
    elseif type(it) == "table" and type(it.chain) == "table" then
      local c = it.chain
      if c.hook == "forward" and c.policy == "drop" then drops[#drops + 1] = c end
    elseif type(it) == "table" and type(it.rule) == "table" then
      local r = it.rule
      local rtext = json.encode(r.expr or {}) or ""
      if rtext:find('"accept"', 1, true) and (rtext:find('"' .. bridge .. '"', 1, true)) then
        allowed[tostring(r.family) .. " " .. tostring(r.table)] = true
      end
    end
  end
  local out = {}
  for _, c in ipairs(drops) do
    local where = ("%s %s %s"):format(tostring(c.family), tostring(c.table), tostring(c.name))
    if not allowed[tostring(c.family) .. " " .. tostring(c.table)] then
      local links = ('"{ %s, %s* }"'):format(bridge, tap_prefix)
      out[#out + 1] = ("the host's nftables chain '%s' (hook forward, policy drop: Docker sets one) has no rule "
        .. "accepting %s: it drops the Pod and Function traffic riklet's iptables-legacy rules accept (both "
        .. "apply; a drop wins), so Pods cannot reach other hosts and their exposed ports are unreachable from "
        .. "other hosts. Allow riklet's links there: nft insert rule %s iifname %s accept; nft insert rule %s "
        .. "oifname %s ct state related,established accept; nft insert rule %s oifname %s ct status dnat accept "
        .. "(with Docker: iptables -I DOCKER-USER -i %s -j ACCEPT; iptables -I DOCKER-USER -o %s -j ACCEPT)")
        :format(where, bridge, where, links, where, links, where, links, bridge, bridge)
    end
  end
  return out, tables
end

local nft_checked = false
function M.check_nftables(bridge)
  if nft_checked then return end
  nft_checked = true
  local res = proc.run({ "nft", "-j", "list", "ruleset" }, { timeout = 10 })
  if not res then
    log("info", "nft is not installed: riklet cannot check the host's nftables rules (apt-get install nftables)")
    return
  end
  if res.code ~= 0 then
    log("warn", "cannot list the host's nftables rules (nft -j list ruleset: %s)", tostring(res.stderr):sub(1, 300))
    return
  end
  local warnings, tables = M.nft_findings(res.stdout, bridge, TAP_PREFIX)
  for _, w in ipairs(warnings) do log("warn", "%s", w) end
  if #tables > 0 and #warnings == 0 then
    log("info", "the host also has nftables rules (tables: %s); riklet's own rules are iptables-legacy "
      .. "(iptables-legacy -t nat -S RIKLET), and a drop in nftables applies to Pods too", table.concat(tables, ", "))
  end
  return warnings
end

local function ensure_infra()
  if infra_ready then return true end
  local ok, err = net.bridge_add(C.bridge)
  if not ok then return nil, err end
  ok, err = net.addr_add(C.bridge, C.bridge_ip .. "/" .. C.pod.len)
  if not ok then return nil, err end
  ok, err = net.link_up(C.bridge)
  if not ok then return nil, err end
  ok, err = net.ip_forward(true)
  if not ok then return nil, err end
  -- DNAT of 127.0.0.1:PORT to a pod needs local-net addresses routable out of the bridge
  ok, err = net.route_localnet(C.bridge, true)
  if not ok then return nil, err end
  local rules
  rules, err = call_policy("infra", {
    bridge = C.bridge, pod_cidr = C.pod.cidr, function_cidr = C.fn.cidr, tap_prefix = TAP_PREFIX, comment = INFRA,
  })
  if not rules then return nil, err end
  local st
  st, err = fw.apply(rules, { owner = INFRA })
  if not st then return nil, err end
  infra_ready = true
  -- (it runs nft: in a task of its own, so that the Pod adopted first joins the others' batch)
  local task = require "riklet.task"
  if task.in_task() then task.spawn(M.check_nftables, C.bridge) else M.check_nftables(C.bridge) end
  return true
end

-- ---- init -----------------------------------------------------------------------------------
function M.init(cfg)
  cfg = cfg or {}
  local pod, err = parse_cidr(cfg.pod_cidr or "10.89.0.0/16", "--pod-cidr")
  if not pod then return nil, err end
  local fn
  fn, err = parse_cidr(cfg.function_cidr or "10.90.0.0/16", "--function-cidr")
  if not fn then return nil, err end
  if pod.len > 30 then return nil, "--pod-cidr " .. pod.cidr .. " is too small (at most /30)" end
  if fn.len > 30 then return nil, "--function-cidr " .. fn.cidr .. " is too small (at most /30)" end
  if (pod.base < fn.base + fn.size) and (fn.base < pod.base + pod.size) then
    return nil, ("--pod-cidr %s and --function-cidr %s overlap; give them disjoint ranges"):format(pod.cidr, fn.cidr)
  end
  local bridge = cfg.bridge or "riklet0"
  if not net.valid_ifname(bridge) then return nil, ("--bridge '%s' is not a valid link name (1..15 of [A-Za-z0-9_.-])"):format(tostring(bridge)) end
  local state_dir = cfg.state_dir or (cfg.paths and cfg.paths.state) or "/var/lib/riklet"
  -- One riklet per network namespace manages the Pod network: a second one (another state dir)
  -- would remove the first one's links and rules as leftovers. The lock is an abstract unix socket,
  -- scoped to this network namespace and released when riklet exits, however it exits.
  local locked, lerr, holder = net.lock(NET_LOCK, ("pid %d, state dir %s, bridge %s"):format(core.getpid(),
    state_dir, bridge))
  if not locked then
    if not holder then return nil, lerr end
    return nil, ("another riklet (%s) manages the Pod network (its bridge, chains RIKLET-*) in this network "
      .. "namespace; two would remove each other's Pod networking: stop that one, run this one in its own "
      .. "network namespace, or give it --network none"):format(holder ~= "" and holder or "pid unknown")
  end
  C = {
    pod = pod, fn = fn, bridge = bridge, bridge_ip = net.ip4str(pod.base + 1),
    state_dir = state_dir, netns_dir = cfg.netns_dir or "/run/riklet/netns",
    reserved = M.reserved_ports(cfg),
  }
  local ok
  ok, err = fs.mkdir_p(state_dir, "0700")
  if not ok then return nil, err end
  require("riklet.store").remove_stale_tmp(state_dir, "network.json")
  ok, err = load()
  if not ok then return nil, err end
  if S.pod_cidr and S.pod_cidr ~= pod.cidr and next(S.instances) then
    log("warn", "the pod CIDR changed from %s to %s; running Pods keep their old addresses until they are recreated",
      S.pod_cidr, pod.cidr)
  end
  if S.pod_cidr ~= pod.cidr or S.function_cidr ~= fn.cidr then dirty = true end
  S.pod_cidr, S.function_cidr = pod.cidr, fn.cidr
  infra_ready = false
  return true
end

local function need_init()
  if not C then return nil, "riklet.netctl is not initialised (netctl.init(cfg) first)" end
  return true
end

function M.state() return S end
function M.config() return C end

-- Node ports a workload may not expose (the network policy gets them as ctx.reserved): riklet's
-- own listening ports and the scheduler's, from the options that name them.
function M.reserved_ports(cfg)
  local out = {}
  local function add(addr, what)
    if type(addr) ~= "string" then return end
    local port = addr:match("^%a[%w+.-]*://[^/]-:(%d+)") or addr:match("^[^/]-:(%d+)$")
    if not port and addr:match("^https://") then port = "443" end
    if not port and addr:match("^http://") then port = "80" end
    if port and tonumber(port) >= 1 and tonumber(port) <= 65535 then out[tostring(tonumber(port))] = what end
  end
  add(cfg.master_ip, "the scheduler's port (--master-ip)")
  add(cfg.scheduler, "the scheduler's port (--scheduler)")
  add(cfg.interlink, "riklet's interLink listener (--interlink)")
  -- --interlink is a list option (several listeners)
  for _, a in ipairs(type(cfg.interlink) == "table" and cfg.interlink or {}) do add(a, "riklet's interLink listener (--interlink)") end
  add(cfg.metrics_listen, "riklet's metrics listener (--metrics-listen)")
  for port, what in pairs(M.extra_reserved or {}) do out[tostring(port)] = what end
  return out
end

function M.exposed(except)
  local out = {}
  for id, rec in pairs(S and S.instances or {}) do
    if id ~= except then
      for _, p in ipairs(rec.ports or {}) do out[p] = id end
    end
  end
  return out
end

local function ports_of(rules)
  local ports = {}
  for _, r in ipairs(rules) do
    if r.chain == "RIKLET" and r.dport then ports[#ports + 1] = (r.proto or "tcp") .. "/" .. r.dport end
  end
  return ports
end

-- ---- rules of one instance ------------------------------------------------------------------
local function instance_rules(id, w, rec, exposed)
  local rules, err = call_policy("rules", w, {
    instance_id = id, kind = rec.kind, comment = owner(id), address = rec.ip or rec.guest_ip,
    host_if = rec.host_if, bridge = C.bridge, exposed = exposed or M.exposed(id), null = json.null,
    reserved = C.reserved, reserved_below = 1024,
  })
  if not rules then return nil, err end
  if type(rules) ~= "table" then return nil, "policy network.rules returned a " .. type(rules) .. ", not an array of rules" end
  for i, r in ipairs(rules) do
    if type(r) ~= "table" then return nil, ("policy network.rules: rule %d is not a table"):format(i) end
    if r.comment ~= owner(id) then
      return nil, ("policy network.rules: rule %d has comment %s; every rule of an instance must carry ctx.comment (%s)")
        :format(i, tostring(r.comment), owner(id))
    end
  end
  return rules
end

-- Remove what an instance record names; errors are collected, nothing stops half-way.
-- Returns true, rules_deleted | nil, err.
local function remove_instance(id, rec)
  local errs = {}
  local st, err = fault.point("net.rules_del")
  if st then st, err = fw.apply({}, { owner = owner(id) }) end
  if not st then errs[#errs + 1] = err end
  if rec and rec.host_if then
    local ok, lerr = fault.point("net.veth_del")
    if ok then ok, lerr = net.link_del(rec.host_if) end
    if not ok then errs[#errs + 1] = lerr end
  end
  if rec and rec.kind == "Pod" and rec.ip then
    -- the address goes back to the pool: the node must not keep mapping it to this veth's MAC
    local ok, nerr = net.neigh_del(C.bridge, rec.ip)
    if not ok then errs[#errs + 1] = nerr end
  end
  if rec == nil or rec.kind == "Pod" then
    local ok, nerr = fault.point("net.netns_del")
    if ok then ok, nerr = net.netns_del(C.netns_dir, id) end
    if not ok then errs[#errs + 1] = nerr end
  end
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true, st and st.deleted or 0
end

local function result(id, rec)
  if rec.kind == "Pod" then
    return {
      kind = "Pod", netns = rec.netns, ip = rec.ip, address = rec.ip .. "/" .. rec.prefix, gateway = C.bridge_ip,
      host_if = rec.host_if, ports = rec.ports,
    }
  end
  return {
    kind = "Function", tap = rec.host_if, guest_ip = rec.guest_ip, tap_ip = rec.tap_ip, netmask = "255.255.255.252",
    address = rec.guest_ip .. "/30", ports = rec.ports,
    kernel_ip = ("ip=%s::%s:255.255.255.252::eth0:off"):format(rec.guest_ip, rec.tap_ip),
  }
end

-- Bring the kernel to what rec says (creating is idempotent, so this also repairs drift).
-- links: a snapshot of the node's links by name (re-adoption: one dump for all), where a veth
-- that is up on the bridge needs nothing (three netlink calls less per Pod)
local function converge_pod(id, rec, links)
  local fok, ferr = fault.point("net.netns") if not fok then return nil, ferr end
  local path, err = net.netns_add(C.netns_dir, id)
  if not path then return nil, err end
  rec.netns = path
  fok, ferr = fault.point("net.veth") if not fok then return nil, ferr end
  local l, br = links and links[rec.host_if], links and links[C.bridge]
  local ok, how
  if l and br and l.kind == "veth" and l.up and l.master == br.index then how = "exists"
  else
    ok, how = net.veth_add(rec.host_if, "eth0", path)
    if not ok then return nil, how end
    ok, err = net.link_set_master(rec.host_if, C.bridge)
    if not ok then return nil, err end
    ok, err = net.link_up(rec.host_if)
    if not ok then return nil, err end
  end
  if how == "created" then
    -- a new veth, a new MAC: the node may still map this address to the MAC of the veth that had it
    -- before (a freed address given to a new Pod, a veth recreated after drift), and would send
    -- the Pod's traffic there until that ARP entry expires
    ok, err = net.neigh_del(C.bridge, rec.ip)
    if not ok then return nil, err end
  end
  local inns = { netns = path }
  local cidr = rec.ip .. "/" .. rec.prefix
  -- re-adoption (links given): one look inside the namespace (one setns, one netlink socket) and
  -- nothing more when eth0 has its address, eth0 and lo are up and the default route goes to the
  -- bridge; otherwise (or when the look fails) the idempotent calls below repair what drifted
  ok, err = fault.point("net.address") if not ok then return nil, err end
  local v, verr
  if links then v, verr = net.view("eth0", inns) end
  if v then
    local drift = {}
    if not v.found then drift[#drift + 1] = "no eth0"
    elseif not v.up then drift[#drift + 1] = "eth0 down" end
    local has = false
    for _, a in ipairs(v.addrs) do has = has or a == cidr end
    if v.found and not has then drift[#drift + 1] = "address " .. cidr .. " missing" end
    if not v.lo_up then drift[#drift + 1] = "lo down" end
    if v.gateway ~= C.bridge_ip then
      drift[#drift + 1] = v.gateway == "" and "no default route" or ("default route via " .. v.gateway)
    end
    if #drift == 0 then return true end
    log("info", "instance %s: repairing its network namespace %s (%s)", id, path, table.concat(drift, ", "))
  elseif links then
    log("warn", "instance %s: cannot look inside its network namespace (%s): setting it up again", id, tostring(verr))
  end
  ok, err = net.addr_add("eth0", cidr, inns)
  if not ok then return nil, err end
  ok, err = net.link_up("eth0", inns)
  if not ok then return nil, err end
  ok, err = net.link_up("lo", inns)
  if not ok then return nil, err end
  ok, err = fault.point("net.route") if not ok then return nil, err end
  ok, err = net.route_add("default", { via = C.bridge_ip, netns = path })
  if not ok then return nil, err end
  return true
end

local function converge_function(id, rec)
  local ok, err = net.tap_add(rec.host_if)
  if not ok then return nil, err end
  ok, err = net.addr_add(rec.host_if, rec.tap_ip .. "/30")
  if not ok then return nil, err end
  ok, err = net.link_up(rec.host_if)
  if not ok then return nil, err end
  ok, err = net.route_localnet(rec.host_if, true)
  if not ok then return nil, err end
  return true
end

-- ---- setup / teardown -----------------------------------------------------------------------
local function unnamable(id)
  return ("instance id '%s' cannot name a network namespace: use 1 to 64 characters of [A-Za-z0-9._-]"):format(tostring(id))
end

function M.setup(id, w)
  local ok, err = need_init()
  if not ok then return nil, err end
  if not valid_id(id) then return nil, unnamable(id) end
  if type(w) ~= "table" then return nil, "setup needs the workload table" end
  local kind = w.kind == "Function" and "Function" or "Pod"
  ok, err = ensure_infra()
  if not ok then return nil, "preparing the node network: " .. err end

  local rec = S.instances[id]
  local fresh = rec == nil
  if fresh then
    local _, names = used(kind)
    if kind == "Pod" then
      local ip, aerr = alloc_pod_ip()
      if not ip then return nil, aerr end
      rec = { kind = "Pod", ip = ip, prefix = C.pod.len, host_if = link_name(VETH_PREFIX, id, names) }
    else
      local slot, serr = alloc_fn_slot()
      if not slot then return nil, serr end
      local b = C.fn.base + 4 * slot
      rec = { kind = "Function", slot = slot, guest_ip = net.ip4str(b + 1), tap_ip = net.ip4str(b + 2),
        host_if = link_name(TAP_PREFIX, id, names) }
    end
    rec.created_at = os.time()
    local fok, ferr = fault.point("net.alloc") if not fok then return nil, ferr end
    S.instances[id] = rec
    -- persist the allocation before creating anything: a crash now leaves a record to clean (no
    -- fsync: after a machine crash there is nothing left to clean, and adopt rebuilds an
    -- allocation from the instance's record)
    ok, err = save(false)
    if not ok then S.instances[id] = nil return nil, err end
  end

  local function fail(msg)
    if fresh then
      local rok, rerr = remove_instance(id, rec)
      if not rok then log("warn", "instance %s: rolling back its network left: %s", id, rerr) end
      S.instances[id] = nil
      save()
    end
    return nil, msg
  end

  if kind == "Pod" then ok, err = converge_pod(id, rec) else ok, err = converge_function(id, rec) end
  if not ok then return fail(("network of instance %s: %s"):format(id, err)) end
  local rules
  if kind == "Pod" then rules, err = M.policy_rules(id, w, rec, M.exposed(id))
  else rules, err = instance_rules(id, w, rec) end
  if not rules then return fail(err) end
  local st
  ok, err = fault.point("net.rules") if not ok then return fail(("ports of instance %s: %s"):format(id, err)) end
  st, err = fw.apply(rules, { owner = owner(id) })
  if not st then return fail(("ports of instance %s: %s"):format(id, err)) end
  rec.rules, rec.ports, rec.policy = rules, ports_of(rules), M.rules_fingerprint()
  ok, err = save(false)
  if not ok then return fail(err) end
  log("info", "instance %s: %s %s on %s%s", id, kind, rec.ip or rec.guest_ip, rec.host_if,
    #rec.ports > 0 and (", exposing " .. table.concat(rec.ports, " ")) or "")
  return result(id, rec)
end

-- The network namespace of Pod id, made now (M.setup makes it too: creating is idempotent), so
-- that runc can create the Pod's containers in it while M.setup adds the veth, address, routes and
-- rules beside it. Removed by M.teardown. -> path | nil, err
function M.netns(id)
  local ok, err = need_init()
  if not ok then return nil, err end
  if not valid_id(id) then return nil, unnamable(id) end
  return net.netns_add(C.netns_dir, id)
end

function M.teardown(id)
  local ok, err = need_init()
  if not ok then return nil, err end
  if not valid_id(id) then return nil, ("instance id '%s' is not valid"):format(tostring(id)) end
  local rec = S.instances[id]
  ok, err = remove_instance(id, rec)
  if not ok then return nil, ("removing the network of instance %s: %s"):format(id, err) end
  if rec then
    local fok, ferr = fault.point("net.release") if not fok then return nil, ferr end
    S.instances[id] = nil
    return save()
  end
  return true
end

-- ---- re-adoption, batched ---------------------------------------------------------------------
-- The adoptions that run in one turn of the loop (a restart with 1,000 Pods: all of them) share one
-- dump of the node's links and one libiptc commit for all their rules (b.rules[owner]): one commit per Pod rewrote
-- the whole nat table each time (O(n^2): 27 s of a 28.6 s re-adoption at 1,000 Pods). ports: node
-- port -> instance, kept up to date as each adoption sets its ports (M.exposed(id) per Pod was
-- another O(n^2)).
-- The batch is applied once every adoption under way has joined it (or ended without it): those
-- ready in the same turn, and those that waited meanwhile, for the xtables lock (ensure_infra: held
-- by another program, each retries on its own timer) or for their turn (a loop turn's budget
-- paces task resumes: 12 adoptions were applied in batches of 3 and 8 + 4). At most ARRIVAL_WAIT
-- seconds: then what joined is applied, and a later one opens a batch of its own.
local batch
local arriving = 0 -- adoptions under way in M.adopt that have not joined a batch yet
local ARRIVAL_WAIT = 10

local function arrived(a)
  if a.done then return end
  a.done = true
  arriving = arriving - 1
  if arriving == 0 and batch and batch.arrived then batch.arrived:set(true) end
end

local function adoption_batch()
  if batch then return batch end
  local task = require "riklet.task"
  local b = { owners = {}, rules = {}, done = task.event() }
  batch = b
  task.spawn(function()
    task.yield() -- every adoption ready to run joins first
    local deadline = core.now() + ARRIVAL_WAIT
    while arriving > 0 and core.now() < deadline do
      b.arrived = task.event()
      b.arrived:wait(deadline - core.now())
    end
    batch = nil
    if #b.owners == 0 then return b.done:set({ true }) end
    -- in the order the chains hold them now (fw keeps a chain in the order asked for: adoption
    -- order would move most rules, a delete and an insert each)
    local at = {}
    for i, r in ipairs(fw.list() or {}) do
      if r.comment and not at[r.comment] then at[r.comment] = i end
    end
    local owners = {}
    for i, o in ipairs(b.owners) do owners[i] = o end
    table.sort(owners, function(x, y) return (at[x] or math.huge) < (at[y] or math.huge) or
      (at[x] or math.huge) == (at[y] or math.huge) and x < y end)
    local rules = {}
    for _, o in ipairs(owners) do
      for _, r in ipairs(b.rules[o]) do rules[#rules + 1] = r end
    end
    local st, err = fw.apply(rules, { owners = owners })
    b.done:set({ st, err })
  end)
  return b
end

local function batch_links(b)
  if not b.links then
    b.links = {}
    for _, l in ipairs(net.links() or {}) do b.links[l.name] = l end
  end
  return b.links
end

local function batch_ports(b)
  if not b.ports then
    b.ports = {}
    for id, rec in pairs(S.instances) do
      for _, p in ipairs(rec.ports or {}) do b.ports[p] = id end
    end
  end
  return b.ports
end

-- The rules of an instance from the policy, which sees of the other instances' exposed ports (idx:
-- port -> id) only those that can matter: the ones this instance exposed before and the ones its
-- workload names. Every exposed port of the node made each call O(n) (copied into the sandbox):
-- at 1,000 Pods a create's policy call ran past its 0.25 s deadline on a busy node. When what it
-- returns exposes a port another instance has anyway, it is asked again with all of them.
local function policy_rules(id, w, rec, idx)
  local near = {}
  local function consider(p)
    if idx[p] and idx[p] ~= id then near[p] = idx[p] end
  end
  for _, p in ipairs(rec.ports or {}) do consider(p) end
  for _, c in ipairs(type(w.containers) == "table" and w.containers or {}) do
    for _, p in ipairs(type(c) == "table" and type(c.ports) == "table" and c.ports or {}) do
      if type(p) == "table" and p.port then consider(tostring(p.protocol or "tcp"):lower() .. "/" .. tostring(p.port)) end
    end
  end
  local rules, err = instance_rules(id, w, rec, near)
  if not rules then return nil, err end
  for _, p in ipairs(ports_of(rules)) do
    if idx[p] and idx[p] ~= id and not near[p] then return instance_rules(id, w, rec) end
  end
  return rules
end

M.policy_rules = policy_rules

-- What the rules of an instance were computed with: the network policy, the admission policy
-- (which may have changed the workload the rules are made from) and the node options the policy's
-- ctx carries (c: the config, default C; the bridge and the reserved ports of --metrics-listen,
-- --interlink, --scheduler: a port that became riklet's own must not keep a Pod's DNAT rule from
-- before). nil when a policy cannot be read.
local last_fp = {} -- the last one made, and from what (asked once per Pod at a re-adoption)
function M.rules_fingerprint(c)
  c = c or C or {}
  local n, a = policy.fingerprint("network"), policy.fingerprint("admission")
  if not (n and a) then return nil end
  if last_fp.n == n and last_fp.a == a and last_fp.c == c and last_fp.reserved == c.reserved
    and last_fp.bridge == c.bridge then
    return last_fp.fp
  end
  local ports = {}
  for p in pairs(c.reserved or {}) do ports[#ports + 1] = p end
  table.sort(ports)
  local fp = ("%s|%s|bridge=%s;reserved=%s"):format(n, a, tostring(c.bridge), table.concat(ports, ","))
  last_fp = { n = n, a = a, c = c, reserved = c.reserved, bridge = c.bridge, fp = fp }
  return fp
end

-- The rules of a re-adopted instance (the policy may have changed since); the batch's port index
-- follows each adoption's ports.
local function adopt_rules(id, w, rec, b)
  if not b then return instance_rules(id, w, rec) end
  local idx = batch_ports(b)
  local rules, err = policy_rules(id, w, rec, idx)
  if not rules then return nil, err end
  for _, p in ipairs(rec.ports or {}) do
    if idx[p] == id then idx[p] = nil end
  end
  for _, p in ipairs(ports_of(rules)) do idx[p] = id end
  return rules
end

-- Apply the rules of instance id, with the batch b (one commit for the batch) or alone. A batch that
-- fails (a bad rule of one instance) is no reason to fail the others: each then tries alone.
local function adopt_apply(id, rules, b, arrival)
  if b then
    for i, r in ipairs(rules) do
      local ok, err = fw.validate(r)
      if not ok then return nil, ("rule %d of instance %s: %s"):format(i, id, tostring(err)) end
    end
    b.owners[#b.owners + 1] = owner(id)
    b.rules[owner(id)] = rules
    arrived(arrival)
    local res = b.done:wait()
    if res[1] then return res[1] end
    log("warn", "instance %s: applying the rules of %d re-adopted instances at once failed (%s); applying its own alone",
      id, #b.owners, tostring(res[2]))
  end
  return fw.apply(rules, { owner = owner(id) })
end

-- After a restart: the record is the truth; put the kernel back in line with it.
local function adopt(id, w, netrec, arrival)
  local ok, err = need_init()
  if not ok then return nil, err end
  if not valid_id(id) then return nil, ("instance id '%s' is not valid"):format(tostring(id)) end
  local rec = S.instances[id]
  -- what changes in rec is written to network.json; a restart with nothing changed writes nothing
  -- (no netlink or iptables change either: converge_pod only looks, fw commits only a difference)
  local changed = rec == nil
  if not rec then
    -- the network state was lost but the instance record remembers its network
    if type(netrec) ~= "table" or not (netrec.ip or netrec.guest_ip) then
      return nil, ("instance %s has no network record to adopt"):format(id)
    end
    if netrec.kind == "Function" then
      local g = net.ip4(netrec.guest_ip)
      rec = { kind = "Function", slot = (g - 1 - C.fn.base) / 4, guest_ip = netrec.guest_ip, tap_ip = netrec.tap_ip,
        host_if = netrec.tap }
    else
      rec = { kind = "Pod", ip = netrec.ip, prefix = C.pod.len, host_if = netrec.host_if }
    end
    S.instances[id] = rec
  end
  ok, err = ensure_infra()
  if not ok then return nil, "preparing the node network: " .. err end
  if rec.kind == "Pod" and not net.netns_exists(C.netns_dir, id) then
    return nil, ("the network namespace of instance %s is gone (%s/%s); the instance must be recreated"):format(id, C.netns_dir, id), true
  end
  local b = require("riklet.task").in_task() and adoption_batch() or nil
  local netns = rec.netns
  if rec.kind == "Pod" then ok, err = converge_pod(id, rec, b and batch_links(b)) else ok, err = converge_function(id, rec) end
  if not ok then return nil, err end
  if rec.netns ~= netns then changed = true end
  -- the network policy is asked again only when its sources (or the admission policy's) changed
  -- since it gave the rules network.json holds; otherwise those rules stay, as they do between two
  -- restarts (a policy that reads os.time is not re-asked on a schedule either): a restart with
  -- nothing changed asks no policy. When one changed, the rules it gives now replace the old ones
  -- (the operator's change is the evidence that the old ones are no longer wanted).
  local fp = w and M.rules_fingerprint()
  if w and not (fp and rec.policy == fp and type(rec.rules) == "table") then
    local rules, rerr = adopt_rules(id, w, rec, b)
    if not rules then return nil, rerr end
    rec.rules, rec.ports, rec.policy = rules, ports_of(rules), fp
    changed = true
  end
  local st
  st, err = adopt_apply(id, rec.rules or {}, b, arrival)
  if not st then return nil, err end
  if not changed then return true end
  return save_later("instance " .. id .. " re-adopted")
end

function M.adopt(id, w, netrec)
  arriving = arriving + 1
  local arrival = {}
  local ok, r1, r2, r3 = pcall(adopt, id, w, netrec, arrival)
  arrived(arrival) -- (ended without joining a batch)
  if not ok then error(r1, 0) end
  return r1, r2, r3
end

-- Boot: everything that does not belong to a live instance goes (rules, links, namespaces,
-- allocations); everything live is converged.
function M.reconcile(live_ids)
  local ok, err = need_init()
  if not ok then return nil, err end
  local live = {}
  for _, id in ipairs(live_ids or {}) do live[id] = true end
  local summary = { instances_removed = 0, links_removed = 0, netns_removed = 0, rules_removed = 0 }
  local errs = {}
  for id, rec in pairs(S.instances) do
    if not live[id] then
      local rok, rerr = remove_instance(id, rec)
      if rok then
        S.instances[id] = nil
        summary.instances_removed = summary.instances_removed + 1
        summary.rules_removed = summary.rules_removed + rerr
      else errs[#errs + 1] = rerr end
    end
  end
  if summary.instances_removed > 0 or dirty then save_later("network reconciled") end
  ok, err = ensure_infra()
  if not ok then return nil, err end
  -- the whole rule set in one commit: rules of unknown owners disappear
  local rules
  local current = fw.list() or {}
  rules, err = desired_all(current)
  if not rules then return nil, err end
  -- a live (or held) instance whose entry network.json lost keeps the rules it has: removing them
  -- needs positive evidence that they are no longer wanted
  for _, r in ipairs(current) do
    local id = type(r.comment) == "string" and r.comment:match("^riklet:(.+)$")
    if id and live[id] and not S.instances[id] and not r.foreign then
      local keep = {}
      for k, v in pairs(r) do if k ~= "text" and k ~= "foreign" then keep[k] = v end end
      rules[#rules + 1] = keep
    end
  end
  local st
  st, err = fw.apply(rules)
  if not st then return nil, err end
  summary.rules_removed = summary.rules_removed + st.deleted
  -- links riklet names that no instance owns (nor a live one the state lost: named after its id)
  local mine = {}
  for _, rec in pairs(S.instances) do if rec.host_if then mine[rec.host_if] = true end end
  for id in pairs(live) do
    mine[VETH_PREFIX .. hash8(id)], mine[TAP_PREFIX .. hash8(id)] = true, true
  end
  for _, l in ipairs(net.links() or {}) do
    local p = l.name:sub(1, 3)
    if (p == VETH_PREFIX or p == TAP_PREFIX) and #l.name == 11 and not mine[l.name] then
      local lok, lerr = net.link_del(l.name)
      if lok then summary.links_removed = summary.links_removed + 1 else errs[#errs + 1] = lerr end
    end
  end
  for _, name in ipairs(net.netns_list(C.netns_dir) or {}) do
    if not (S.instances[name] and S.instances[name].kind == "Pod") and not live[name] then
      local nok, nerr = net.netns_del(C.netns_dir, name)
      if nok then summary.netns_removed = summary.netns_removed + 1 else errs[#errs + 1] = nerr end
    end
  end
  if #errs > 0 then return nil, "reconciling the network: " .. table.concat(errs, "; ") end
  log("info", "network reconciled: %d instance(s), %d link(s), %d namespace(s), %d rule(s) removed",
    summary.instances_removed, summary.links_removed, summary.netns_removed, summary.rules_removed)
  return summary
end

-- riklet cleanup: everything riklet owns, whether or not the state knows it.
function M.cleanup_all(cfg)
  if not C then
    local ok, err = M.init(cfg)
    if not ok then return nil, err end
  end
  local errs = {}
  for id, rec in pairs(S.instances) do
    local ok, err = remove_instance(id, rec)
    if not ok then errs[#errs + 1] = err end
  end
  for _, l in ipairs(net.links() or {}) do
    local p = l.name:sub(1, 3)
    if (p == VETH_PREFIX or p == TAP_PREFIX) and #l.name == 11 then
      local ok, err = net.link_del(l.name)
      if not ok then errs[#errs + 1] = err end
    end
  end
  for _, name in ipairs(net.netns_list(C.netns_dir) or {}) do
    local ok, err = net.netns_del(C.netns_dir, name)
    if not ok then errs[#errs + 1] = err end
  end
  -- and the bind mount of the directory onto itself that netns_add made (when empty and ours)
  local rok, rerr = net.netns_dir_release(C.netns_dir)
  if not rok and rerr then errs[#errs + 1] = rerr end
  local ok, err = fw.flush_all()
  if not ok then errs[#errs + 1] = err end
  ok, err = net.link_del(C.bridge)
  if not ok then errs[#errs + 1] = err end
  S.instances = {}
  ok, err = save()
  if not ok then errs[#errs + 1] = err end
  infra_ready = false
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

return M
