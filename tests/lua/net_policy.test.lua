-- The network policy (default and examples) through the policy sandbox; its rules checked with
-- riklet.fw's validator and formatter (no kernel needed).
local T = require "riklet.testlib"
local policy = require "riklet.policy"
local fw = require "riklet.fw"
local fs = require "riklet.fs"
local json = require "riklet.json"
local core = require "riklet.core"

local function ctx(over)
  local c = { instance_id = "inst1", kind = "Pod", comment = "riklet:inst1", address = "10.89.0.2",
    host_if = "rkv00000001", bridge = "riklet0", exposed = {}, null = json.null }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end

local function texts(rules)
  local out = {}
  for i, r in ipairs(rules or {}) do
    local t, err = fw.format(r)
    out[i] = t or ("INVALID: " .. tostring(err))
  end
  return table.concat(out, "\n")
end

-- a Pod as RIK sends it: ports is one object, snake_case, protocol upper-case
local rik_pod = json.decode([[{"apiVersion":"v1","kind":"Pod","name":"web","replicas":null,
  "spec":{"containers":[{"name":"c","image":"busybox","env":null,
  "ports":{"port":8080,"target_port":80,"protocol":"TCP","type":null}}],"function":null}}]])
local rules, err = policy.call("network", "rules", rik_pod, ctx())
T.ok(rules, "rules for a RIK Pod: " .. tostring(err))
T.is(texts(rules), '-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment "riklet:inst1" -j DNAT --to-destination 10.89.0.2:80',
  "one DNAT to the pod address and target_port")

-- the same after admission (w.containers[].ports as an array, protocol lower-case)
local norm = { kind = "Pod", name = "web", containers = { { name = "c", image = "busybox",
  ports = { { port = 8080, target_port = 80, protocol = "tcp" }, { port = 5353, target_port = 53, protocol = "udp" } } } } }
rules = policy.call("network", "rules", norm, ctx())
T.is(texts(rules), '-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment "riklet:inst1" -j DNAT --to-destination 10.89.0.2:80\n' ..
  '-A RIKLET -p udp -m udp --dport 5353 -m comment --comment "riklet:inst1" -j DNAT --to-destination 10.89.0.2:53',
  "normalized workload, TCP and UDP")

-- no ports: no rules
local none = json.decode([[{"kind":"Pod","name":"x","spec":{"containers":[{"name":"c","image":"a","ports":null}]}}]])
rules = policy.call("network", "rules", none, ctx())
T.is(rules and #rules, 0, "ports null: no rule")

-- the validated model gives a container without ports an empty array, which reaches the sandbox as
-- an empty table (arrays and objects look alike there): no rule for it, not "port is nil"
-- (a two-container Pod with one port failed every create before)
local workload = require "riklet.workload"
local two = assert(workload.from_rik(json.encode({ apiVersion = "v1", kind = "Pod", name = "two", spec = {
  containers = { { name = "a", image = "busybox", ports = { port = 8080, target_port = 80, protocol = "TCP" } },
    { name = "b", image = "busybox", env = json.null, ports = json.null } } } })))
rules, err = policy.call("network", "rules", two, ctx())
T.is(texts(rules), '-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment "riklet:inst1" -j DNAT --to-destination 10.89.0.2:80',
  "a validated two-container Pod with ports on one container: one rule (" .. tostring(err) .. ")")

-- target_port missing: same as port
local same = { kind = "Pod", containers = { { name = "c", ports = { port = 9000 } } } }
T.like(texts(policy.call("network", "rules", same, ctx())), "%-%-dport 9000 .*10%.89%.0%.2:9000", "target_port defaults to port")

-- a port another instance exposes is refused, naming it
rules, err = policy.call("network", "rules", rik_pod, ctx({ exposed = { ["tcp/8080"] = "other-7" } }))
T.ok(rules == nil, "port taken by another instance refused")
T.like(err, "port 8080/tcp is already exposed on this node by instance other%-7", "reason names the port and the owner")
-- but the instance's own previous exposure is not a conflict (re-setup)
T.ok(policy.call("network", "rules", rik_pod, ctx({ exposed = { ["tcp/8080"] = "inst1" } })), "own port is no conflict")
-- twice in one workload
local twice = { kind = "Pod", containers = { { name = "a", ports = { port = 8081 } }, { name = "b", ports = { port = 8081 } } } }
rules, err = policy.call("network", "rules", twice, ctx())
T.ok(rules == nil and err:find("exposed twice"), "the same port twice in one Pod refused: " .. tostring(err))
-- hostile values
for _, bad in ipairs({ 0, 65536, -1, 1.5, "80; rm -rf /", {} }) do
  rules, err = policy.call("network", "rules", { kind = "Pod", containers = { { name = "c", ports = { port = bad } } } }, ctx())
  T.ok(rules == nil and err:find("a port is a whole number"), "port " .. (type(bad) == "table" and "{}" or tostring(bad)) .. " refused")
end
rules, err = policy.call("network", "rules", { kind = "Pod", containers = { { name = "c", ports = { port = 80, protocol = "SCTP" } } } }, ctx())
T.ok(rules == nil and err:find("use TCP or UDP"), "protocol SCTP refused: " .. tostring(err))

-- reserved node ports: below 1024 and riklet's own / the scheduler's, unless the operator allows them
local function one_port(p) return { kind = "Pod", containers = { { name = "c", ports = { port = p, target_port = 80 } } } } end
local res = { ["4995"] = "the scheduler's port (--master-ip)", ["9100"] = "riklet's metrics listener (--metrics-listen)" }
for _, p in ipairs({ 22, 1, 80, 443, 1023 }) do
  rules, err = policy.call("network", "rules", one_port(p), ctx({ reserved = res, reserved_below = 1024 }))
  T.ok(rules == nil and err:find(("node port %d/tcp is reserved: ports below 1024"):format(p)), ("port %d refused: %s"):format(p, tostring(err)))
end
rules, err = policy.call("network", "rules", one_port(22), ctx())
T.ok(rules == nil and err:find("reserved"), "port 22 refused even when ctx says nothing about reserved ports")
rules, err = policy.call("network", "rules", one_port(4995), ctx({ reserved = res, reserved_below = 1024 }))
T.ok(rules == nil and err:find("node port 4995/tcp is reserved: the scheduler's port %(%-%-master%-ip%)"), "the scheduler's port refused: " .. tostring(err))
rules, err = policy.call("network", "rules", one_port(9100), ctx({ reserved = res, reserved_below = 1024 }))
T.ok(rules == nil and err:find("metrics listener"), "riklet's own port refused: " .. tostring(err))
T.ok(policy.call("network", "rules", one_port(1024), ctx({ reserved = res, reserved_below = 1024 })), "port 1024 is fine")
local fnr = json.decode([[{"kind":"Function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r"},"exposure":{"port":22,"targetPort":22}}}}]])
rules, err = policy.call("network", "rules", fnr, ctx({ kind = "Function", address = "10.90.0.1", host_if = "rkt1" }))
T.ok(rules == nil and err:find("spec%.function%.exposure: node port 22/tcp is reserved"), "a Function exposing 22 refused: " .. tostring(err))
local netctl = require "riklet.netctl"
local rp = netctl.reserved_ports({ master_ip = "10.0.0.1:4995", scheduler = "https://sched.example:8443/x", interlink = "0.0.0.0:4000" })
T.is(rp["4995"], "the scheduler's port (--master-ip)", "reserved_ports: --master-ip HOST:PORT")
T.is(rp["8443"], "the scheduler's port (--scheduler)", "reserved_ports: --scheduler URL with a port")
T.is(rp["4000"], "riklet's interLink listener (--interlink)", "reserved_ports: --interlink")
T.is(next(netctl.reserved_ports({ interlink = "unix:/run/x.sock" })), nil, "a unix socket reserves no port")
rp = netctl.reserved_ports({ interlink = { "unix:/run/x.sock", "127.0.0.1:4001" }, metrics_listen = "[::1]:9100" })
T.is(rp["4001"], "riklet's interLink listener (--interlink)", "reserved_ports: --interlink given as a list")
T.is(rp["9100"], "riklet's metrics listener (--metrics-listen)", "reserved_ports: --metrics-listen")

-- a Function: exposure is camelCase; its TAP gets forward accepts
local fn = json.decode([[{"kind":"Function","name":"f","spec":{"containers":null,"function":{
  "execution":{"rootfs":"http://x/r.ext4"},"exposure":{"port":45001,"targetPort":8080,"type":"NodePort"}}}}]])
rules = policy.call("network", "rules", fn, ctx({ kind = "Function", address = "10.90.0.1", host_if = "rkt00000001" }))
T.is(texts(rules), '-A RIKLET -p tcp -m tcp --dport 45001 -m comment --comment "riklet:inst1" -j DNAT --to-destination 10.90.0.1:8080\n' ..
  '-A RIKLET-FORWARD -o rkt00000001 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "riklet:inst1" -j ACCEPT\n' ..
  '-A RIKLET-FORWARD -i rkt00000001 -m comment --comment "riklet:inst1" -j ACCEPT',
  "Function: DNAT to guest:targetPort and forward accepts for its TAP")

-- the node's own rules
local infra = policy.call("network", "infra", { bridge = "riklet0", pod_cidr = "10.89.0.0/16", function_cidr = "10.90.0.0/16",
  tap_prefix = "rkt", comment = "riklet:infra" })
T.like(texts(infra), '%-A RIKLET%-POSTROUTING %-s 10%.89%.0%.0/16 ! %-d 10%.89%.0%.0/16 %-m comment %-%-comment "riklet:infra" %-j MASQUERADE',
  "infra: masquerade for the pod CIDR only")
T.ok(not texts(infra):find("INVALID"), "every infra rule is valid")

-- the examples, loaded as an operator's --policy-dir
local dir = ("/tmp/rk-netpol-%d-%d"):format(os.time(), math.random(1e6))
local src = core.paths().policies .. "/../examples/policies/"
for _, ex in ipairs({ { "network-one-iface.lua", "%-i eth0 %-p tcp" }, { "network-one-source.lua", "%-s 192%.168%.50%.0/24 %-p tcp" } }) do
  assert(fs.mkdir_p(dir))
  local data = assert(fs.read(src .. ex[1]))
  assert(fs.write_atomic(dir .. "/network.lua", data))
  policy.set_dir(dir)
  rules, err = policy.call("network", "rules", rik_pod, ctx())
  T.like(texts(rules), ex[2], "example " .. ex[1] .. " restricts the DNAT: " .. tostring(err))
end
assert(fs.write_atomic(dir .. "/network.lua", assert(fs.read(src .. "network-allow-low-ports.lua"))))
policy.set_dir(dir)
rules, err = policy.call("network", "rules", one_port(80), ctx({ reserved = res, reserved_below = 1024 }))
T.like(texts(rules), "%-%-dport 80 ", "an operator policy allows port 80: " .. tostring(err))
rules, err = policy.call("network", "rules", one_port(4995), ctx({ reserved = res, reserved_below = 1024 }))
T.ok(rules == nil and err:find("scheduler's port"), "... but not the scheduler's port: " .. tostring(err))
fs.rm_rf(dir)
policy.set_dir(core.paths().policies)
