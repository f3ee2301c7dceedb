-- The policy sandbox and the default admission policy, against hostile workloads.
local T = require "riklet.testlib"
local policy = require "riklet.policy"
local json = require "riklet.json"
local fs = require "riklet.fs"

local ctx = { null = json.null }

local function admit(def)
  local w = type(def) == "string" and assert(json.decode(def)) or def
  return policy.call("admission", "admit", w, ctx)
end

local function pod(name, c)
  c = c or {}
  return {
    apiVersion = "v1", kind = "Pod", name = name,
    spec = { containers = { { name = c.name or "main", image = c.image or "busybox", env = c.env or json.null,
      ports = c.ports or json.null } } },
  }
end

-- a good Pod is normalized
local w, err = admit(pod("web", { env = { { name = "A", value = "1" } }, ports = { port = 8080, target_port = 80 } }))
T.ok(w, "a good Pod is admitted: " .. tostring(err))
T.is(w and w.containers[1].env[1].value, "1", "env kept")
T.is(w and w.containers[1].ports[1].protocol, "tcp", "protocol defaults to tcp")

local function rejects(def, pattern, what)
  local ok, reason = admit(def)
  T.ok(ok == nil and type(reason) == "string" and reason:find(pattern) ~= nil,
    what .. " -> " .. tostring(reason))
end

rejects(pod("../etc"), "^name is", "name with ../")
rejects(pod(("x"):rep(10240)), "name is 10240 characters", "10 KB name")
rejects(pod("a;rm -rf /"), "name is", "shell characters in the name")
rejects(pod("$(touch /tmp/pwned)"), "name is", "command substitution in the name")
rejects(pod("ok", { name = "../c" }), "containers%[1%]%.name", "hostile container name")
rejects(pod("ok", { image = "" }), "containers%[1%]%.image", "empty image reference")
rejects(pod("ok", { env = { { name = "1BAD", value = "x" } } }), "env%[1%]%.name", "bad env name")
rejects(pod("ok", { ports = { port = 70000 } }), "ports%.port", "port out of range")
rejects({ apiVersion = "v1", kind = "Deployment", name = "x", spec = {} }, "kind is \"Deployment\"", "unknown kind")
rejects({ apiVersion = "v2", kind = "Pod", name = "x", spec = {} }, "apiVersion", "unknown apiVersion")
rejects({ apiVersion = "v1", kind = "Pod", name = "x", spec = { containers = {} } }, "spec.containers", "no containers")
rejects(json.decode("[1,2]"), "JSON object", "an array instead of an object")
local two = pod("x")
two.spec.containers[2] = two.spec.containers[1]
rejects(two, "used twice", "duplicate container names")

-- the sandbox: an operator policy dir with hostile and broken policies
local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir))
fs.write_atomic(dir .. "/admission.lua", [[
local A = {}
function A.admit(w, ctx)
  if w.name == "io" then return io.open("/etc/passwd") end
  if w.name == "exec" then return os.execute("touch /tmp/riklet-pwned") end
  if w.name == "require" then return require("ffi") end
  if w.name == "loop" then while true do end end
  if w.name == "raise" then error("operator says no") end
  return { kind = w.kind, name = w.name }
end
return A
]])
fs.write_atomic(dir .. "/restart.lua", "return 42")
policy.set_dir(dir)
local function fails(name, pattern)
  local ok, e = policy.call("admission", "admit", { kind = "Pod", name = name }, ctx)
  T.ok(ok == nil and tostring(e):find(pattern) ~= nil, ("policy using %s fails: %s"):format(name, tostring(e):match("[^\n]*")))
end
fails("io", "attempt to index global 'io'")
fails("exec", "attempt to call field 'execute'")
fails("require", "attempt to call global 'require'")
fails("raise", "operator says no")
local core = require "riklet.core"
local t0 = core.now()
fails("loop", "instruction budget")
T.ok(core.now() - t0 < 10, ("an endless loop is stopped (%.1f s)"):format(core.now() - t0))
T.ok(not fs.exists("/tmp/riklet-pwned"), "nothing escaped the sandbox")
T.is(select(1, policy.call("admission", "admit", { kind = "Pod", name = "fine" }, ctx)).name, "fine",
  "the operator policy replaces the default")
local r, rerr = policy.call("restart", "decide", {}, {}, 0)
T.ok(r == nil and rerr:find("must return a table"), "a policy file returning a non-table: " .. tostring(rerr))
local n, nerr = policy.call("network", "nope")
T.ok(n == nil and nerr ~= nil, "a missing function is an error, not a crash: " .. tostring(nerr))
fs.rm_rf(dir)
