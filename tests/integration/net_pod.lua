-- net_pod.lua — driven by test_net_pod.sh, one step per `riklet test` run (NET_STEP), so that
-- every step starts from what the previous process left: the persisted state and the kernel.
local T = require "riklet.testlib"
local netctl = require "riklet.netctl"
local fw = require "riklet.fw"
local net = require "riklet.net"
local json = require "riklet.json"
local fs = require "riklet.fs"

local step = os.getenv("NET_STEP")
local tmp = assert(os.getenv("NET_TMP"), "NET_TMP")
local out = tmp .. "/" .. step .. ".json"

local cfg = { state_dir = tmp .. "/state", netns_dir = tmp .. "/netns", pod_cidr = "10.89.0.0/16",
  function_cidr = "10.90.0.0/16", bridge = "riklet0" }
T.ok(netctl.init(cfg), "netctl.init")

local function pod(name, port, target, proto)
  return { apiVersion = "v1", kind = "Pod", name = name, spec = { containers = {
    { name = "web", image = "busybox:latest", env = json.null,
      ports = port and { port = port, target_port = target, protocol = proto or "TCP", type = json.null } or json.null } } } }
end

local results = {}

if step == "setup" then
  local a, err = netctl.setup("pod-a", pod("a", 8080, 80))
  T.ok(a, "pod-a set up: " .. tostring(err))
  T.is(a and a.ip, "10.89.0.2", "pod-a got the first free address")
  T.is(a and a.gateway, "10.89.0.1", "its gateway is the bridge")
  results.a = a
  local b
  b, err = netctl.setup("pod-b", pod("b", 9090, 8000))
  T.ok(b, "pod-b set up: " .. tostring(err))
  T.is(b and b.ip, "10.89.0.3", "pod-b got the next address")
  results.b = b
  local c
  c, err = netctl.setup("pod-c", pod("c", 8080, 81))
  T.ok(c == nil, "pod-c exposing 8080 again is refused")
  T.like(err, "port 8080/tcp is already exposed on this node by instance pod%-a", "with a clear reason: " .. tostring(err))
  T.ok(not net.netns_exists(cfg.netns_dir, "pod-c"), "the refused pod's namespace was rolled back")
  T.ok(netctl.state().instances["pod-c"] == nil, "and its address freed")
  local again
  again, err = netctl.setup("pod-d", pod("d", 8080, 80, "UDP"))
  T.ok(again, "the same port number over UDP is another port: " .. tostring(err))
  T.is(again and again.ip, "10.89.0.4", "pod-c's address was freed: pod-d gets .4")
  results.d = again
  local f
  f, err = netctl.setup("fn-1", { kind = "Function", name = "f", spec = { ["function"] = {
    execution = { rootfs = "http://x/r.ext4" }, exposure = { port = 45000, targetPort = 8080, type = "NodePort" } } } })
  T.ok(f, "function fn-1 set up: " .. tostring(err))
  T.is(f and f.guest_ip, "10.90.0.1", "guest .1 of the first /30")
  T.is(f and f.tap_ip, "10.90.0.2", "TAP .2")
  T.is(f and f.kernel_ip, "ip=10.90.0.1::10.90.0.2:255.255.255.252::eth0:off", "kernel ip= argument as upstream")
  results.f = f
  local bad
  bad, err = netctl.setup("../etc", pod("x"))
  T.ok(bad == nil and err:find("cannot name a network namespace"), "a hostile instance id is refused: " .. tostring(err))
  bad, err = netctl.setup("pod-e", pod("e", 70000, 80))
  T.ok(bad == nil and err:find("a port is a whole number"), "port 70000 refused by the policy: " .. tostring(err))
  -- the setup is idempotent: calling it again converges, nothing duplicated
  local a2 = netctl.setup("pod-a", pod("a", 8080, 80))
  T.is(a2 and a2.ip, "10.89.0.2", "setup of pod-a again keeps its address")
  -- saves coalesce (one write for the saves asked while one is on its way): setups and teardowns
  -- running at once each return only once a write holding their own change is on disk
  local task = require "riklet.task"
  local function on_disk(id)
    local st = json.decode(fs.read(cfg.state_dir .. "/network.json") or "")
    return type(st) == "table" and type(st.instances) == "table" and st.instances[id] ~= nil
  end
  local n, done, seen, ips = 12, 0, 0, {}
  for i = 1, n do
    task.spawn(function()
      local r = netctl.setup("many-" .. i, pod("m" .. i))
      if r and on_disk("many-" .. i) then seen = seen + 1 end
      if r then ips[r.ip] = true end
      done = done + 1
    end)
  end
  T.wait_for(60, function() return done == n end)
  T.is(seen, n, "12 setups at once: each one's allocation was on disk when it returned")
  local distinct = 0
  for _ in pairs(ips) do distinct = distinct + 1 end
  T.is(distinct, n, "and each got its own address")
  done, seen = 0, 0
  for i = 1, n do
    task.spawn(function()
      if netctl.teardown("many-" .. i) and not on_disk("many-" .. i) then seen = seen + 1 end
      done = done + 1
    end)
  end
  T.wait_for(60, function() return done == n end)
  T.is(seen, n, "12 teardowns at once: each one's release was on disk when it returned")
elseif step == "reconcile" then
  -- riklet was killed; pod-b died meanwhile. Boot with pod-a, pod-d and fn-1 alive.
  local s, err = netctl.reconcile({ "pod-a", "pod-d", "fn-1" })
  T.ok(s, "reconcile: " .. tostring(err))
  T.is(s and s.instances_removed, 1, "pod-b's allocation removed")
  T.ok(s and s.rules_removed >= 2, "pod-b's rule and the stray rule removed (" .. tostring(s and s.rules_removed) .. ")")
  T.ok(s and s.links_removed >= 1, "the stray link removed (" .. tostring(s and s.links_removed) .. ")")
  T.ok(s and s.netns_removed >= 1, "the stray namespace removed (" .. tostring(s and s.netns_removed) .. ")")
  local ok
  ok, err = netctl.adopt("pod-a", pod("a", 8080, 80), netctl.state().instances["pod-a"])
  T.ok(ok, "pod-a adopted: " .. tostring(err))
  -- a restart with nothing changed writes nothing: no netlink change, no iptables commit, no
  -- network.json (the adoptions run in tasks, as the agent's do: one batch)
  local task = require "riklet.task"
  local writes, saved = {}, 0
  local orig = {}
  for _, f in ipairs({ "veth_add", "link_set_master", "link_up", "addr_add", "route_add", "neigh_del", "tap_add" }) do
    orig[f] = net[f]
    net[f] = function(...) writes[#writes + 1] = f return orig[f](...) end
  end
  local apply, write_atomic = fw.apply, fs.write_atomic
  fw.apply = function(...)
    local st, ferr = apply(...)
    if st and st.commits > 0 then writes[#writes + 1] = "iptables commit" end
    return st, ferr
  end
  fs.write_atomic = function(path, ...)
    if path:find("network.json", 1, true) then saved = saved + 1 end
    return write_atomic(path, ...)
  end
  local function adopt_all(list)
    local done, oks = 0, 0
    for _, a in ipairs(list) do
      task.spawn(function()
        if netctl.adopt(a[1], a[2], a[3]) then oks = oks + 1 end
        done = done + 1
      end)
    end
    T.wait_for(30, function() return done == #list end)
    return oks
  end
  local st = netctl.state().instances
  T.is(adopt_all({ { "pod-a", pod("a", 8080, 80), st["pod-a"] }, { "pod-d", pod("d", 8080, 80, "UDP"), st["pod-d"] } }), 2,
    "pod-a and pod-d adopted again, nothing changed")
  T.is(table.concat(writes, ","), "", "no netlink change and no iptables commit")
  T.is(saved, 0, "network.json not written")
  -- what changed is written: pod-d's entry lost from the state, rebuilt from its record
  local netrec = { kind = "Pod", ip = st["pod-d"].ip, host_if = st["pod-d"].host_if }
  st["pod-d"] = nil
  T.is(adopt_all({ { "pod-d", pod("d", 8080, 80, "UDP"), netrec } }), 1, "pod-d adopted from its record")
  T.is(saved, 1, "its rebuilt entry written to network.json")
  T.ok(json.decode(fs.read(cfg.state_dir .. "/network.json")).instances["pod-d"], "and it is there")
  for f, fn in pairs(orig) do net[f] = fn end
  fw.apply, fs.write_atomic = apply, write_atomic
  results.exposed = netctl.exposed()
elseif step == "teardown" then
  for _, id in ipairs({ "pod-a", "pod-d", "fn-1", "never-existed" }) do
    local ok, err = netctl.teardown(id)
    T.ok(ok, "teardown " .. id .. ": " .. tostring(err))
  end
  T.ok(netctl.teardown("pod-a"), "teardown twice is fine")
  T.ok(next(netctl.state().instances) == nil, "no allocation left")
  local ok, err = netctl.cleanup_all()
  T.ok(ok, "cleanup_all: " .. tostring(err))
  T.ok(not net.link("riklet0"), "the bridge is gone")
  local left = fw.list()
  T.is(left and #left, 0, "fw.list is empty")
end

fs.write_atomic(out, json.encode(results) or "{}")
