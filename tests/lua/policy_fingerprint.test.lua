-- The policy fingerprints a re-adoption trusts (hostile): a verdict given at create is kept while
-- the fingerprint is unchanged, so every real change of what a policy decides from must change
-- it. Each "restart" here is policy.set_dir (sources read again, as a new riklet does).
-- Tried: a file replaced by rename with the same size and mtime, a symbolic link swapped (the
-- file's and the directory's), the operator's copy removed (back to the default), and the node
-- options the network policy sees in its ctx (reserved ports: --metrics-listen, --interlink,
-- --scheduler; the bridge).
local T = require "riklet.testlib"
local policy = require "riklet.policy"
local netctl = require "riklet.netctl"
local fs = require "riklet.fs"
local core = require "riklet.core"

local tmp = ("/tmp/riklet-policy-fp-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp .. "/a", "0700"))
assert(fs.mkdir_p(tmp .. "/b", "0700"))

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok == 0 or ok == true, cmd)
end

local function restart(dir)
  policy.set_dir(dir)
  assert(policy.load("admission"))
  return policy.fingerprint("admission")
end

local v1 = "return { admit = function(w) return w end } -- v1\n"
local v2 = "return { admit = function(w) return nil end }--v2\n"
assert(#v1 == #v2)

-- same size, same mtime, replaced by rename (write_atomic)
assert(fs.write_atomic(tmp .. "/a/admission.lua", v1))
sh(("touch -d '2026-01-01 00:00:00' %s/a/admission.lua"):format(tmp))
local fp1 = restart(tmp .. "/a")
assert(fs.write_atomic(tmp .. "/a/admission.lua", v2))
sh(("touch -d '2026-01-01 00:00:00' %s/a/admission.lua"):format(tmp))
local fp2 = restart(tmp .. "/a")
T.ok(fp1 and fp2 and fp1 ~= fp2, "same size, same mtime, replaced by rename: another fingerprint")

-- the policy file a symbolic link, its target swapped
assert(fs.write_atomic(tmp .. "/b/one.lua", v1))
assert(fs.write_atomic(tmp .. "/b/two.lua", v2))
sh(("ln -sfn %s/b/one.lua %s/a/admission.lua"):format(tmp, tmp))
local l1 = restart(tmp .. "/a")
T.is(l1, fp1, "a link to the same text: the same fingerprint")
sh(("ln -sfn %s/b/two.lua %s/a/admission.lua"):format(tmp, tmp))
T.is(restart(tmp .. "/a"), fp2, "the link swapped to another text: that text's fingerprint")

-- the policy directory a symbolic link, swapped
sh(("mkdir -p %s/d1 %s/d2 && cp %s/b/one.lua %s/d1/admission.lua && cp %s/b/two.lua %s/d2/admission.lua"):format(
  tmp, tmp, tmp, tmp, tmp, tmp))
sh(("ln -sfn %s/d1 %s/cur"):format(tmp, tmp))
local d1 = restart(tmp .. "/cur")
sh(("ln -sfn %s/d2 %s/cur"):format(tmp, tmp))
local d2 = restart(tmp .. "/cur")
T.ok(d1 and d2 and d1 ~= d2, "the policy directory's link swapped: another fingerprint")

-- the operator's copy removed: the default alone decides again
fs.unlink(tmp .. "/a/admission.lua")
local def = restart(tmp .. "/a")
T.ok(def and def ~= fp1 and def ~= fp2 and not def:find(tmp, 1, true),
  "the operator's copy removed: the default's fingerprint alone: " .. tostring(def))

-- a policy cannot read another file: require, dofile, io are not there (nothing outside its
-- sources can change what it decides, but its arguments and os.time)
assert(fs.write_atomic(tmp .. "/a/admission.lua",
  "return { admit = function(w) return { r = type(require), d = type(dofile), io = type(io), lf = type(loadfile) } end }\n"))
policy.set_dir(tmp .. "/a")
local got = policy.call("admission", "admit", {}, {}) or {}
T.ok(got.r == "nil" and got.d == "nil" and got.io == "nil" and got.lf == "nil",
  "a policy has no require, dofile, loadfile or io to read another file with")

-- the network policy's ctx: node options that decide what it refuses (ctx.reserved, the ports
-- of --metrics-listen, --interlink, --scheduler; ctx.bridge). Rules given before a port became
-- riklet's own must not be kept as if nothing changed.
policy.set_dir(core.paths().policies)
local function rfp(opts)
  return netctl.rules_fingerprint({ bridge = opts.bridge or "riklet0", reserved = netctl.reserved_ports(opts) })
end
local base_fp = rfp({})
T.ok(base_fp ~= nil, "rules fingerprint of a node with no listener: " .. tostring(base_fp))
T.is(rfp({}), base_fp, "the same options: the same fingerprint")
T.ok(rfp({ metrics_listen = "0.0.0.0:9100" }) ~= base_fp, "--metrics-listen :9100 added: another fingerprint")
T.ok(rfp({ interlink = { "0.0.0.0:4000" } }) ~= base_fp, "--interlink :4000 added: another fingerprint")
T.ok(rfp({ bridge = "rk1" }) ~= base_fp, "another --bridge: another fingerprint")
T.is(rfp({ metrics_listen = "127.0.0.1:9100", interlink = { "0.0.0.0:4000" } }),
  rfp({ interlink = { "0.0.0.0:4000" }, metrics_listen = "127.0.0.1:9100" }), "the same options in another order: the same")

policy.set_dir(core.paths().policies)
fs.rm_rf(tmp)
T.done()
