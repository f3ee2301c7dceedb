-- The workload model against hostile input: every refusal with its message; caps; the NUL that
-- C would truncate; a hostile admission policy whose result is validated again; runc ids that
-- cannot collide.
local T = require "riklet.testlib"
local json = require "riklet.json"
local fs = require "riklet.fs"
local policy = require "riklet.policy"
local W = require "riklet.workload"

local function pod(name, c, spec_extra)
  c = c or {}
  local ctr = { name = "main", image = "busybox", env = json.null, ports = json.null }
  for k, v in pairs(c) do ctr[k] = v end
  local spec = { containers = { ctr } }
  for k, v in pairs(spec_extra or {}) do spec[k] = v end
  return { apiVersion = "v1", kind = "Pod", name = name, spec = spec }
end

local function from(def)
  return W.from_rik(type(def) == "string" and def or assert(json.encode(def)))
end

-- a good Pod, with the optional Kubernetes-named fields
local m, err = from(pod("web", { env = { { name = "A", value = 1 } }, ports = { port = 8080, target_port = 80 },
  command = { "sh", "-c" }, args = { "echo hi" }, workingDir = "/srv", resources = { limits = { cpu = "500m", memory = "128Mi" } },
  volumeMounts = { { mountPath = "/tmp" } } }, { restartPolicy = "OnFailure", terminationGracePeriodSeconds = 3 }))
T.ok(m, "a good Pod is a model: " .. tostring(err))
local c = m and m.containers[1] or {}
T.is(c.env and c.env[1].value, "1", "env values become strings")
T.is(c.ports and c.ports[1].protocol, "tcp", "protocol defaults to tcp")
T.is(c.image_ref and c.image_ref.tag, "latest", "the image is parsed (no tag: latest)")
T.is(c.limits and c.limits.cpu, 500, "cpu 500m -> 500 millicores")
T.is(c.limits and c.limits.memory, 128 * 1024 * 1024, "memory 128Mi -> bytes")
T.is(c.working_dir, "/srv", "workingDir")
T.is(c.mounts and c.mounts[1].type, "tmpfs", "volumeMounts are tmpfs")
T.is(m and m.restart_policy, "OnFailure", "spec.restartPolicy")
T.is(m and m.grace_period, 3, "spec.terminationGracePeriodSeconds")
T.is(select(1, from(pod("plain"))).restart_policy, "Never", "no restart policy: Never (RIK's behaviour)")
local function plain(t, depth)
  if type(t) ~= "table" then return type(t) ~= "function" and type(t) ~= "userdata" end
  if getmetatable(t) or depth > 10 then return false end
  for k, v in pairs(t) do if not plain(k, depth + 1) or not plain(v, depth + 1) then return false end end
  return true
end
T.ok(plain(m, 0), "the model is plain data (no metatables, functions or JSON null)")

-- the hostile-input table: definition -> the words the refusal must hold
local long = ("x"):rep(300)
local many = {}
for i = 1, 33 do many[i] = { name = "c" .. i, image = "busybox" } end
local envs = {}
for i = 1, 257 do envs[i] = { name = "E" .. i, value = "v" } end
local cases = {
  { pod("../x"), '^name is "%.%./x"', "name ../x" },
  { pod("/"), '^name is "/"', "name /" },
  { pod("a/b"), '^name is "a/b"', "name with /" },
  { pod(long), "^name is \"x+\"%.%.%. %(300 bytes%)", "300-character name" },
  { pod(""), '^name is ""', "empty name" },
  { pod("."), '^name is "%."', "name ." },
  { pod(".."), '^name is "%.%."', "name .." },
  { pod("a;rm -rf /"), "^name is", "shell characters in the name" },
  { pod("$(touch /tmp/pwned)"), "^name is", "command substitution in the name" },
  { pod("ok", { name = "../c" }), "spec%.containers%[1%]%.name is", "container name ../c" },
  { pod("ok", { name = long }), "spec%.containers%[1%]%.name is \"x+\"%.%.%. %(300 bytes%)", "300-character container name" },
  { pod("ok", { name = "." }), "spec%.containers%[1%]%.name is", "container name ." },
  { pod("ok", { name = "" }), "spec%.containers%[1%]%.name is", "empty container name" },
  { pod("ok", { name = "a b" }), "spec%.containers%[1%]%.name is", "container name with a space" },
  { pod("ok", { image = "busybox;touch /x" }), "spec%.containers%[1%]%.image", "shell characters in the image" },
  { pod("ok", { image = json.null }), "spec%.containers%[1%]%.image is missing", "no image" },
  { pod("ok", { env = { { name = "1BAD", value = "x" } } }), "env%[1%]%.name", "bad env name" },
  { pod("ok", { env = envs }), "env has 257 entries: at most 256", "257 env entries" },
  { pod("ok", { ports = { port = 70000 } }), "ports%.port is 70000", "port out of range" },
  { pod("ok", { command = { "sh", 3 } }), "command%[2%] is 3: expected a string", "a command entry that is not a string" },
  { pod("ok", { workingDir = "srv" }), "working_dir is \"srv\": an absolute path", "relative working dir" },
  { pod("ok", { workingDir = "/srv/../../etc" }), "'%.%.' is not allowed", "working dir with .." },
  { pod("ok", { volumeMounts = { { mountPath = "/x", type = "bind" } } }), "only tmpfs", "a bind mount" },
  { pod("ok", { resources = { limits = { memory = "lots" } } }), "limits%.memory is \"lots\"", "a bad memory limit" },
  { pod("ok", nil, { restartPolicy = "Sometimes" }), "spec%.restartPolicy is \"Sometimes\"", "unknown restart policy" },
  { pod("ok", nil, { terminationGracePeriodSeconds = -1 }), "grace period is %-1", "negative grace period" },
  { pod("ok", nil, { terminationGracePeriodSeconds = 1e9 }), "grace period is", "a grace period of 30 years" },
  { { apiVersion = "v1", kind = "Pod", name = "x", spec = { containers = many } }, "33 containers: at most 32 per Pod", "33 containers" },
  { { apiVersion = "v1", kind = "Pod", name = "x", spec = { containers = {} } }, "a Pod needs an array of at least one container", "no containers" },
  { { apiVersion = "v1", kind = "Deployment", name = "x", spec = {} }, 'kind is "Deployment"', "unknown kind" },
  { { apiVersion = "v2", kind = "Pod", name = "x", spec = {} }, "apiVersion", "unknown apiVersion" },
  { { apiVersion = "v1", kind = "Function", name = "f", spec = { ["function"] = { execution = { rootfs = "ftp://x" } } } },
    "spec%.function%.rootfs is", "a Function rootfs that is not http(s)" },
  { "[1,2]", "is %[1,2%]: expected a JSON object", "an array instead of an object" },
  { '{"apiVersion":"v1","kind":"Pod","name":"ok\\u0000../x","spec":{}}', "NUL character", "a name with an embedded \\u0000" },
  { '{"apiVersion":"v1","kind":"Pod","name":"ok","sp\\u0000ec":{}}', "NUL character", "a key with an embedded \\u0000" },
  { ("["):rep(10000) .. ("]"):rep(10000), "nested deeper than 32 levels", "10,000-deep JSON" },
  { ("["):rep(33) .. ("]"):rep(33), "nested deeper than 32 levels", "33-deep JSON" },
  { ('{"a":"%s"}'):format(("x"):rep(1024 * 1024)), "larger than the 1048576 bytes", "a manifest over 1 MiB" },
  { "", "not valid JSON", "an empty manifest" },
}
for _, case in ipairs(cases) do
  local ok, reason = from(case[1])
  T.ok(ok == nil and type(reason) == "string" and reason:find(case[2]) ~= nil, case[3] .. " -> " .. tostring(reason))
end
-- wrong types are refused (never dropped), quoting the value as given (JSON)
local tcases = {
  { pod("ok", { env = { A = "b" } }), 'env is {"A":"b"}: expected null or an array', "env given as an object" },
  { pod("ok", { env = "A=b" }), 'env is "A=b": expected null or an array', "env given as a string" },
  { pod("ok", { env = { "A=b" } }), 'env%[1%] is "A=b": expected an object', "an env entry given as a string" },
  { pod("ok", { env = { { name = 5, value = "x" } } }), "env%[1%]%.name is 5:", "an env name given as a number" },
  { pod("ok", { env = { { name = "A", value = { 1 } } } }), "env%[1%]%.value is %[1%]: expected a string", "an env value given as an array" },
  { pod("ok", { ports = { port = "80", target_port = 80 } }), 'ports%.port is "80": a port is a whole number', "a port given as a string" },
  { pod("ok", { ports = { port = -1 } }), "ports%.port is %-1:", "a negative port" },
  { pod("ok", { ports = { port = 80.5 } }), "ports%.port is 80%.5:", "a fractional port" },
  { pod("ok", { ports = { port = 1e300 } }), "ports%.port is 1e%+300:", "a port of 1e300" },
  { pod("ok", { ports = { port = 80, target_port = "http" } }), 'target_port is "http"', "a target port given as a string" },
  { pod("ok", { ports = { port = 80, type = 7 } }), "ports%[1%]%.type is 7: expected a string", "a port type given as a number" },
  { pod("ok", { ports = "80:80" }), 'ports is "80:80": expected null, an object', "ports given as a string" },
  { pod("ok", { ports = { { port = 80 }, 8080 } }), "ports%[2%] is 8080: expected an object", "a port list holding a number" },
  { pod("ok", { image = 123 }), "image is 123: expected a string", "image 123" },
  { pod("ok", { image = { "busybox" } }), 'image is %["busybox"%]: expected a string', "image given as an array" },
  { pod("ok", { image = ";rm -rf /" }), 'image ";rm %-rf /"', "image ;rm -rf /" },
  { pod("ok", { command = "sh -c id" }), 'command is "sh %-c id": expected an array of strings', "command given as a string" },
  { pod("ok", { workingDir = 5 }), "working_dir is 5: expected a string", "working dir given as a number" },
  { pod("ok", { volumeMounts = { mountPath = "/x" } }), 'volumeMounts is {"mountPath":"/x"}: expected an array', "mounts given as an object" },
  { pod("ok", { volumeMounts = { { mountPath = "/x", readOnly = "yes" } } }), 'read_only is "yes": expected true or false', "readOnly as a string" },
  { pod("ok", { resources = { limits = { cpu = { 1 } } } }), "limits%.cpu is %[1%]:", "a cpu limit given as an array" },
  { pod("ok", { resources = "big" }), 'resources is "big": expected an object', "resources given as a string" },
  { pod("ok", nil, { terminationGracePeriodSeconds = "10" }), 'terminationGracePeriodSeconds is "10"', "a grace period given as a string" },
  { pod("ok", nil, { restartPolicy = 1 }), "spec%.restartPolicy is 1:", "a restart policy given as a number" },
  { { apiVersion = "v1", kind = "Pod", name = "x", spec = { containers = { a = {} } } }, 'spec%.containers is {"a":{}}', "containers given as an object" },
  { { apiVersion = "v1", kind = "Pod", name = "x", spec = json.array({ 1 }) }, "spec is %[1%]: expected an object", "spec given as an array" },
  { { apiVersion = "v1", kind = "Pod", name = "x", replicas = "3", spec = { containers = { { name = "a", image = "b" } } } },
    'replicas is "3"', "replicas given as a string" },
  { { apiVersion = "v1", kind = 7, name = "x", spec = {} }, "kind is 7:", "kind given as a number" },
  { { apiVersion = "v1", kind = "Pod", name = true, spec = {} }, "name is true:", "name given as a boolean" },
  { { apiVersion = "v1", kind = "Function", name = "f", spec = { ["function"] = { execution = { rootfs = "http://x/r" }, exposure = { port = "8080" } } } },
    'exposure%.port is "8080"', "a Function exposure port given as a string" },
  { '{"apiVersion":"v1","kind":"Pod","name":"ok","spec":{"containers":[{"name":"a","image":"b","env":[{"name":"A","value":"\255"}]}]}}',
    "not valid UTF%-8 at byte", "invalid UTF-8 in an env value" },
  { '{"apiVersion":"v1","kind":"Pod","name":"\192\175","spec":{}}', "not valid UTF%-8 at byte", "an overlong '/' in the name" },
}
for _, case in ipairs(tcases) do
  local def = case[1]
  if type(def) == "string" then def = def:gsub("\\(%d%d%d)", function(d) return string.char(tonumber(d)) end) end
  local ok, reason = from(def)
  T.ok(ok == nil and type(reason) == "string" and reason:find(case[2]) ~= nil, case[3] .. " -> " .. tostring(reason))
end
local okp = from(pod("ok", { ports = json.array() }))
T.ok(okp and #okp.containers[1].ports == 0, "ports given as an empty array: no ports")

local dup = pod("x")
dup.spec.containers[2] = dup.spec.containers[1]
local ok_dup, dup_err = from(dup)
T.ok(not ok_dup and dup_err:find("used twice"), "duplicate container names -> " .. tostring(dup_err))

-- strict validation of a model (what an admission policy returns)
local good = assert(from(pod("ok")))
local function amended(fn)
  local x = assert(from(pod("ok")))
  fn(x)
  return W.validate(x)
end
local vcases = {
  { function(x) x.name = "a\0b" end, '^name is "a\\u0000b"', "a model name with a NUL" },
  { function(x) x.containers[1].name = "c\0../x" end, 'name is "c\\u0000%.%./x"', "a container name with a NUL" },
  { function(x) x.containers[1].env = { { name = "A", value = "x\0y" } } end, "NUL bytes are not allowed", "an env value with a NUL" },
  { function(x) x.containers[1].command = { "sh\0" } end, "NUL bytes are not allowed", "a command with a NUL" },
  { function(x) x.hostPath = "/" end, 'unknown field "hostPath"', "an unknown field in the model" },
  { function(x) x.containers[1].privileged = true end, 'unknown field "privileged"', "an unknown container field" },
  { function(x) x.containers[1].ports = { { port = 80, target_port = 80, protocol = "sctp" } } end, "protocol", "a bad protocol" },
  { function(x) x.containers[1].mounts = { { destination = "/x", type = "bind", source = "/" } } end, 'unknown field "source"', "a bind mount source" },
  { function(x) x.containers[1].env = { { name = "A", value = "ok\255" } } end, 'value is "ok\\xff": not valid UTF%-8', "an env value of invalid UTF-8 from a policy" },
  { function(x) x.containers[1] = function() end end, "is a function: expected an object", "a function for a container" },
}
for _, case in ipairs(vcases) do
  local ok, reason = amended(case[1])
  T.ok(ok == nil and type(reason) == "string" and reason:find(case[2]) ~= nil, case[3] .. " -> " .. tostring(reason))
end
local tampered = assert(from(pod("ok")))
tampered.containers[1].image_ref = { registry = "evil", repository = "../../x" }
T.is(select(1, W.validate(tampered)).containers[1].image_ref.repository, good.containers[1].image_ref.repository,
  "an image_ref given in the model is replaced by the one riklet parses")

-- a hostile admission policy: its result is validated again, and it sees plain data only
local dir = os.tmpname() fs.unlink(dir) assert(fs.mkdir_p(dir))
fs.write_atomic(dir .. "/admission.lua", [[
local A = {}
local function plain(t, d)
  if type(t) == "function" or type(t) == "userdata" then return false end
  if type(t) ~= "table" then return true end
  if getmetatable(t) or d > 12 then return false end
  for k, v in pairs(t) do if not plain(k, d + 1) or not plain(v, d + 1) then return false end end
  return true
end
function A.admit(w, ctx)
  if not plain(w, 0) or not plain(ctx, 0) then return nil, "not plain data" end
  if w.name == "rename" then w.name = "../x" end
  if w.name == "cname" then w.containers[1].name = "../x" end
  if w.name == "extra" then w.containers[1].hostPath = "/etc" end
  if w.name == "nul" then w.containers[1].name = "ok\0../x" end
  if w.name == "amend" then w.restart_policy = "Always" end
  if w.name == "small" and #w.containers > 0 then return nil, "no Pods here" end
  return w
end
return A
]])
policy.set_dir(dir)
local function admit(name)
  local x = assert(from(pod(name)))
  return W.admit(x)
end
local acases = {
  { "rename", "not valid: name is \"%.%./x\"", "a policy renaming the workload ../x" },
  { "cname", "not valid: spec%.containers%[1%]%.name is \"%.%./x\"", "a policy renaming a container ../x" },
  { "extra", "not valid: spec%.containers%[1%] has an unknown field \"hostPath\"", "a policy adding a field" },
  { "nul", "not valid: .*\\u0000", "a policy putting a NUL in a name" },
  { "small", "^no Pods here$", "a policy rejecting, with its reason" },
}
for _, case in ipairs(acases) do
  local ok, reason = admit(case[1])
  T.ok(ok == nil and type(reason) == "string" and reason:find(case[2]) ~= nil, case[3] .. " -> " .. tostring(reason))
end
local am, am_err = admit("amend")
T.is(am and am.restart_policy, "Always", "a policy may amend a valid field: " .. tostring(am_err))
local pl, pl_err = admit("plainok")
T.ok(pl, "the policy saw only plain data (no functions, metatables or userdata): " .. tostring(pl_err))
policy.set_dir(nil)
fs.rm_rf(dir)

-- ids with a NUL: refused where C would stop at it
local agent = require "riklet.agent"
T.ok(not agent.valid_id("abc\0/../x"), "an instance id with a NUL is not valid")
T.ok(not fs.safe_name("abc\0/../x"), "fs.safe_name refuses a NUL")
local deep_ok, deep_err = json.decode(("["):rep(10000) .. ("]"):rep(10000))
T.ok(deep_ok == nil and deep_err:find("nested deeper than 200 levels"), "json.decode of 10,000-deep JSON with the default depth: " .. tostring(deep_err))
local ok_nul, nul_err = json.encode({ a = "x\0y" })
T.ok(ok_nul == nil and nul_err:find("NUL"), "json.encode refuses a string with a NUL: " .. tostring(nul_err))

-- runc ids cannot collide: every (id, name) pair over a small alphabet, both in the allowed set
local pod_driver = require "riklet.pod"
T.ok(pod_driver.runc_id("a_b", "c") ~= pod_driver.runc_id("a", "b_c"), ("a_b+c -> %s, a+b_c -> %s"):format(
  pod_driver.runc_id("a_b", "c"), pod_driver.runc_id("a", "b_c")))
T.is(pod_driver.runc_id("web", "c1"), "web_c1", "an id with no '_' keeps the short form")
local alphabet = { "a", "_", "-", "." }
local words, last = { "a" }, { "a" }
for _ = 1, 4 do -- every word of length 1 to 5 starting with a
  local more = {}
  for _, w in ipairs(last) do
    for _, ch in ipairs(alphabet) do more[#more + 1] = w .. ch end
  end
  for _, w in ipairs(more) do words[#words + 1] = w end
  last = more
end
local names = {}
for _, w in ipairs(words) do if w:match("^[a]") then names[#names + 1] = w end end
local seen, collisions, invalid, pairs_n = {}, 0, 0, 0
local runc = require "riklet.runc"
for _, id in ipairs(words) do
  if fs.safe_name(id) then
    for _, name in ipairs(names) do
      local r = pod_driver.runc_id(id, name)
      pairs_n = pairs_n + 1
      if seen[r] then collisions = collisions + 1 end
      seen[r] = true
      if not runc.valid_id(r) then invalid = invalid + 1 end
    end
  end
end
T.is(collisions, 0, ("no two of %d (id, name) pairs give the same runc id"):format(pairs_n))
T.is(invalid, 0, "every runc id is one runc accepts")

-- record runc ids and directories are checked when read back (store.check, where an invalid record
-- is quarantined; P.load only resolves an older riklet's runc id against runc): a tampered record
-- cannot point riklet at another instance's container or at a directory outside its instance dir
local tmp = os.tmpname() fs.unlink(tmp) assert(fs.mkdir_p(tmp, "0700"))
local store = require "riklet.store"
assert(store.open(tmp .. "/records", { write = true }))
local idir = tmp .. "/instances/a_b"
local function checked(cr, rdir)
  local ok, why = store.check({ id = "a_b", status = "RUNNING", dir = rdir or idir, containers = { cr } }, "a_b")
  return ok and "valid" or why
end
T.is(checked({ name = "c", runc_id = "a__b_-c", dir = idir .. "/c" }), "valid", "store.check: the current runc id is valid")
T.is(checked({ name = "c", runc_id = "a_b_c", dir = idir .. "/c" }), "valid", "store.check: an older riklet's a_b_c is valid (P.load resolves it)")
T.like(checked({ name = "d", runc_id = "other_d", dir = idir .. "/d" }), "is not the runc id", "store.check: another instance's runc id")
T.like(checked({ name = "../e", runc_id = "a__b_-e" }), "name", "store.check: a container named ../e")
T.like(checked({ name = "c", runc_id = "a__b_-c", dir = "/etc/c" }), "not the container's directory", "store.check: a container dir outside")
T.like(checked({ name = "c", runc_id = "a__b_-c" }, "/etc"), "not the instance's directory", "store.check: an instance dir outside")
local pok, perr = pod_driver.init({ paths = { instances = tmp .. "/instances", images = tmp .. "/images",
  rootfs = tmp .. "/rootfs" }, network = "none", runc = "runc", runc_root = tmp .. "/runc" }, agent)
if not pok then
  T.skip("the Pod driver cannot start here: " .. tostring(perr), 3)
else
  local inst = { id = "a_b", rec = { id = "a_b", containers = {
    { name = "c", runc_id = "a_b_c" },      -- the old colliding form, not in runc
    { name = "f", runc_id = "a__b_-f", dir = idir .. "/f" },
  } } }
  pod_driver.load(inst)
  local cs = inst.rec.containers
  T.is(cs[1].runc_id, "a__b_-c", "P.load: an old a_b_c that runc does not show as this container's is replaced")
  T.is(cs[2].runc_id, "a__b_-f", "P.load: a valid runc id is kept")
  T.is(inst.rec.dir, idir, "P.load: the instance dir is where riklet puts it")
end
fs.rm_rf(tmp)

T.done()
