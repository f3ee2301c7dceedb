-- riklet.workload — the typed internal workload model, built and validated in trusted Lua.
--
-- Front-ends map their messages into this model (the RIK workload JSON: W.from_rik; Kubernetes
-- pods later); drivers and policies only ever see a model that W.validate accepted. The
-- admission policy may reject or amend a validated model; whatever it returns is validated again
-- (W.admit), so a replaced policy can never make riklet build a path from an unchecked name.
--
--   W.from_rik(text) -> model | nil, reason        size, depth, then every field; reasons name the
--                                                  RIK field (spec.containers[1].name is ...)
--   W.validate(m) -> model | nil, reason           strict: unknown keys refused; returns a fresh
--                                                  copy with no metatables (plain data)
--   W.admit(m) -> model | nil, reason              admission policy, then W.validate again
--   W.for_source(m, source) -> model | nil, reason what the front-end that sent it may ask for:
--                                                  oci: images (image.local_ref)
--   W.LIMITS                                       the caps below
--
-- The model (no JSON null anywhere: absent is nil):
--   { kind = "Pod" | "Function", name, replicas?, restart_policy = "Never"|"OnFailure"|"Always",
--     grace_period? (seconds; nil = --stop-grace),
--     containers = { { name, image, image_ref = {registry, repository, tag, digest, canonical, ...},
--                      command?, args? (arrays of strings), working_dir?, env = { {name, value} },
--                      ports = { {port, target_port, protocol = "tcp"|"udp", type?} },
--                      mounts = { {destination, type = "tmpfs", read_only?} },
--                      limits = { cpu? (millicores), memory? (bytes) } } },      (Pod)
--     ["function"] = { rootfs = URL, exposure? = {port, target_port, type?} } }    (Function)
-- RIK JSON has no restart policy, grace period, command, mounts or limits; riklet reads the
-- Kubernetes names when a manifest carries them: spec.restartPolicy,
-- spec.terminationGracePeriodSeconds, containers[].command / args / workingDir / volumeMounts
-- (tmpfs only) / resources.limits {cpu, memory}.
local json = require "riklet.json"
local image = require "riklet.image"
local policy = require "riklet.policy"

local W = {}

W.LIMITS = {
  manifest_bytes = 1024 * 1024, -- the definition text
  depth = 32,                   -- JSON nesting (a RIK Pod needs 7)
  name = 63,                    -- workload and container names
  containers = 32,              -- per Pod
  env = 256,                    -- entries per container
  env_value = 32768,            -- bytes
  ports = 64,                   -- per container
  argv = 256,                   -- command + args entries
  arg = 4096,                   -- bytes per command/args entry, working_dir, mount destination
  mounts = 32,                  -- per container
  grace_period = 3600,          -- seconds
  url = 2048,                   -- Function rootfs URL
}
local L = W.LIMITS

W.RESTART_POLICIES = { Never = true, OnFailure = true, Always = true }

-- A value as it was given, for a reason: JSON text (strings quoted with their NULs and invalid
-- UTF-8 bytes shown as \u0000 and \xNN), cut after 60 bytes.
local function describe(v)
  if v == nil then return "missing" end
  if v == json.null then return "null" end
  if type(v) == "string" then return json.quote(v, 60) end
  if type(v) == "number" and v ~= v then return "NaN" end
  local s = (type(v) == "table" or type(v) == "number" or type(v) == "boolean") and json.encode(v)
  if not s then return "a " .. type(v) end
  if #s <= 60 then return s end
  local cut = 60
  while cut > 1 and s:byte(cut + 1) and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xc0 do cut = cut - 1 end
  return ("%s... (%d bytes)"):format(s:sub(1, cut), #s)
end
W.describe = describe

local function is_null(v) return v == nil or v == json.null end

-- JSON objects and arrays (decoded JSON carries json.object_mt / json.array_mt; a plain Lua table
-- is an array when its keys are 1..n).
local function is_obj(v)
  return type(v) == "table" and getmetatable(v) ~= json.array_mt and (getmetatable(v) == json.object_mt or v[1] == nil)
end
local function is_arr(v)
  if type(v) ~= "table" or getmetatable(v) == json.object_mt then return false end
  if getmetatable(v) == json.array_mt then return true end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

local function valid_name(s)
  return type(s) == "string" and #s >= 1 and #s <= L.name and s:match("^[A-Za-z0-9][A-Za-z0-9._-]*$") ~= nil
end

-- A plain array (keys 1..n, nothing else)? max: the cap on n.
local function is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function only_keys(t, allowed, where)
  for k in pairs(t) do
    if not allowed[k] then
      return nil, ("%s has an unknown field %s: riklet's workload model has no such field"):format(where, describe(tostring(k)))
    end
  end
  return true
end

local function set(...)
  local s = {}
  for _, k in ipairs({ ... }) do s[k] = true end
  return s
end

local function check_string(v, where, max, allow_empty)
  if type(v) ~= "string" then return nil, ("%s is %s: expected a string"):format(where, describe(v)) end
  if v:find("%z") then return nil, ("%s is %s: NUL bytes are not allowed"):format(where, describe(v)) end
  if #v > max then return nil, ("%s is %s: at most %d bytes"):format(where, describe(v), max) end
  local utf8, bad = json.utf8(v)
  if not utf8 then
    return nil, ("%s is %s: not valid UTF-8 (byte %d)"):format(where, describe(v), bad + 1)
  end
  if not allow_empty and v == "" then return nil, where .. " is empty" end
  return v
end

local function check_strings(v, where)
  if not is_array(v) then return nil, ("%s is %s: expected an array of strings"):format(where, describe(v)) end
  local out = {}
  for i, s in ipairs(v) do
    local ok, err = check_string(s, ("%s[%d]"):format(where, i), L.arg, true)
    if not ok then return nil, err end
    out[i] = s
  end
  return out
end

local function check_port(n, where)
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 65535 then
    return nil, ("%s is %s: a port is a whole number from 1 to 65535"):format(where, describe(n))
  end
  return n
end

local function check_path(v, where)
  local p, err = check_string(v, where, L.arg)
  if not p then return nil, err end
  if p:sub(1, 1) ~= "/" then return nil, ("%s is %s: an absolute path is needed"):format(where, describe(p)) end
  for part in p:gmatch("[^/]+") do
    if part == ".." then return nil, ("%s is %s: '..' is not allowed"):format(where, describe(p)) end
  end
  return p
end

-- ---- strict validation of a model ----------------------------------------------------------

local MODEL_KEYS = set("kind", "name", "replicas", "restart_policy", "grace_period", "containers", "function")
local CONTAINER_KEYS = set("name", "image", "image_ref", "command", "args", "working_dir", "env", "ports",
  "mounts", "limits")

-- An array of objects with only `keys`, at most max entries, each checked by check(e, where).
local function entries(list, where, shape, max, keys, check)
  if list == nil then return {} end
  if not is_array(list) then return nil, ("%s is %s: expected an array of %s"):format(where, describe(list), shape) end
  if #list > max then return nil, ("%s has %d entries: at most %d"):format(where, #list, max) end
  local out = {}
  for i, e in ipairs(list) do
    local w = ("%s[%d]"):format(where, i)
    if type(e) ~= "table" then return nil, ("%s is %s: expected an object %s"):format(w, describe(e), shape) end
    local ok, err = only_keys(e, keys, w)
    if not ok then return nil, err end
    out[i], err = check(e, w)
    if not out[i] then return nil, err end
  end
  return out
end

local ENV_KEYS, PORT_KEYS, MOUNT_KEYS = set("name", "value"), set("port", "target_port", "protocol", "type"),
  set("destination", "type", "read_only")

local function v_env(e, w)
  if type(e.name) ~= "string" or #e.name > 256 or not e.name:match("^[A-Za-z_][A-Za-z0-9_]*$") then
    return nil, ("%s.name is %s: an environment variable name is letters, digits and _, not starting with a digit"):format(w, describe(e.name))
  end
  local v, err = check_string(e.value, w .. ".value", L.env_value, true)
  if not v then return nil, err end
  return { name = e.name, value = v }
end

local function v_port(e, w)
  local port, err = check_port(e.port, w .. ".port")
  if not port then return nil, err end
  local target
  target, err = check_port(e.target_port, w .. ".target_port")
  if not target then return nil, err end
  if e.protocol ~= "tcp" and e.protocol ~= "udp" then
    return nil, ("%s.protocol is %s: use tcp or udp"):format(w, describe(e.protocol))
  end
  if e.type ~= nil then
    local ok, terr = check_string(e.type, w .. ".type", L.name)
    if not ok then return nil, terr end
  end
  return { port = port, target_port = target, protocol = e.protocol, type = e.type }
end

local function v_mount(m, w)
  local dest, err = check_path(m.destination, w .. ".destination")
  if not dest then return nil, err end
  if m.type ~= "tmpfs" then
    return nil, ("%s.type is %s: only tmpfs mounts are supported (a host path never comes from a workload)"):format(w, describe(m.type))
  end
  if m.read_only ~= nil and type(m.read_only) ~= "boolean" then
    return nil, ("%s.read_only is %s: expected true or false"):format(w, describe(m.read_only))
  end
  return { destination = dest, type = "tmpfs", read_only = m.read_only }
end

local function v_limits(l, where)
  if l == nil then return {} end
  if type(l) ~= "table" then return nil, ("%s is %s: expected an object {cpu, memory}"):format(where, describe(l)) end
  local ok, err = only_keys(l, set("cpu", "memory"), where)
  if not ok then return nil, err end
  if l.cpu ~= nil and (type(l.cpu) ~= "number" or l.cpu ~= math.floor(l.cpu) or l.cpu < 1 or l.cpu > 1024 * 1000) then
    return nil, ("%s.cpu is %s: a whole number of millicores from 1 to 1024000"):format(where, describe(l.cpu))
  end
  if l.memory ~= nil and (type(l.memory) ~= "number" or l.memory ~= math.floor(l.memory) or l.memory < 4096 or l.memory > 2 ^ 50) then
    return nil, ("%s.memory is %s: a whole number of bytes, at least 4096"):format(where, describe(l.memory))
  end
  return { cpu = l.cpu, memory = l.memory }
end

local function v_container(c, where)
  if type(c) ~= "table" then return nil, ("%s is %s: expected an object"):format(where, describe(c)) end
  local ok, err = only_keys(c, CONTAINER_KEYS, where)
  if not ok then return nil, err end
  if not valid_name(c.name) then
    return nil, ("%s.name is %s: a container name is 1 to %d characters of letters, digits, '.', '_' and '-', "
      .. "starting with a letter or digit"):format(where, describe(c.name), L.name)
  end
  if is_null(c.image) or c.image == "" then
    return nil, where .. ".image is missing: give an image reference like alpine:latest"
  end
  local img
  img, err = check_string(c.image, where .. ".image", 1024)
  if not img then return nil, err end
  -- parsed here, never taken from the input: a policy cannot hand the driver a ref of its own
  local ref, perr = image.parse_ref(img)
  if not ref then return nil, ("%s.image %s: %s"):format(where, describe(img), perr) end
  local out = { name = c.name, image = img, image_ref = ref }
  if c.command ~= nil then
    out.command, err = check_strings(c.command, where .. ".command")
    if not out.command then return nil, err end
  end
  if c.args ~= nil then
    out.args, err = check_strings(c.args, where .. ".args")
    if not out.args then return nil, err end
  end
  if #(out.command or {}) + #(out.args or {}) > L.argv then
    return nil, ("%s: command and args have more than %d entries"):format(where, L.argv)
  end
  if c.working_dir ~= nil then
    out.working_dir, err = check_path(c.working_dir, where .. ".working_dir")
    if not out.working_dir then return nil, err end
  end
  out.env, err = entries(c.env, where .. ".env", "{name, value}", L.env, ENV_KEYS, v_env)
  if not out.env then return nil, err end
  out.ports, err = entries(c.ports, where .. ".ports", "{port, target_port, protocol}", L.ports, PORT_KEYS, v_port)
  if not out.ports then return nil, err end
  out.mounts, err = entries(c.mounts, where .. ".mounts", "{destination, type}", L.mounts, MOUNT_KEYS, v_mount)
  if not out.mounts then return nil, err end
  out.limits, err = v_limits(c.limits, where .. ".limits")
  if not out.limits then return nil, err end
  return out
end

local function v_function(fn, where)
  if type(fn) ~= "table" then return nil, where .. " is missing: a Function needs spec.function.execution.rootfs" end
  local ok, err = only_keys(fn, set("rootfs", "exposure"), where)
  if not ok then return nil, err end
  local url
  url, err = check_string(fn.rootfs, where .. ".rootfs", L.url)
  if not url then return nil, err end
  if not (url:match("^https?://[^%s]+$") or url:match("^file:///[^%s]+$")) then
    return nil, ("%s.rootfs is %s: an http://, https:// or file:/// URL of an ext4 image"):format(where, describe(url))
  end
  local out = { rootfs = url }
  if fn.exposure ~= nil then
    local e = fn.exposure
    local w = where .. ".exposure"
    if type(e) ~= "table" then return nil, ("%s is %s: expected an object {port, target_port}"):format(w, describe(e)) end
    ok, err = only_keys(e, set("port", "target_port", "type"), w)
    if not ok then return nil, err end
    local port, target
    port, err = check_port(e.port, w .. ".port")
    if not port then return nil, err end
    target, err = check_port(e.target_port, w .. ".target_port")
    if not target then return nil, err end
    if e.type ~= nil then
      ok, err = check_string(e.type, w .. ".type", L.name)
      if not ok then return nil, err end
    end
    out.exposure = { port = port, target_port = target, type = e.type }
  end
  return out
end

function W.validate(m)
  if type(m) ~= "table" then return nil, ("the workload is %s, not a table"):format(describe(m)) end
  local ok, err = only_keys(m, MODEL_KEYS, "the workload")
  if not ok then return nil, err end
  if m.kind ~= "Pod" and m.kind ~= "Function" then
    return nil, ("kind is %s: riklet runs kind Pod or Function"):format(describe(m.kind))
  end
  if not valid_name(m.name) then
    return nil, ("name is %s: a workload name is 1 to %d characters of letters, digits, '.', '_' and '-', starting with a letter or digit"):format(describe(m.name), L.name)
  end
  local out = { kind = m.kind, name = m.name }
  if m.replicas ~= nil then
    if type(m.replicas) ~= "number" or m.replicas ~= math.floor(m.replicas) or m.replicas < 0 or m.replicas > 1e6 then
      return nil, ("replicas is %s: a whole number from 0 to 1000000"):format(describe(m.replicas))
    end
    out.replicas = m.replicas
  end
  local rp = m.restart_policy or "Never"
  if not W.RESTART_POLICIES[rp] then
    return nil, ("restart policy is %s: use Never, OnFailure or Always"):format(describe(rp))
  end
  out.restart_policy = rp
  if m.grace_period ~= nil then
    local g = m.grace_period
    if type(g) ~= "number" or g ~= g or g < 0 or g > L.grace_period then
      return nil, ("grace period is %s: a number of seconds from 0 to %d"):format(describe(g), L.grace_period)
    end
    out.grace_period = g
  end
  if m.kind == "Function" then
    if m.containers ~= nil then return nil, "a Function has no containers" end
    out["function"], err = v_function(m["function"], "spec.function")
    if not out["function"] then return nil, err end
    return out
  end
  if m["function"] ~= nil then return nil, "a Pod has no spec.function" end
  local cs = m.containers
  if not is_array(cs) or #cs == 0 then
    return nil, ("spec.containers is %s: a Pod needs an array of at least one container"):format(describe(cs))
  end
  if #cs > L.containers then
    return nil, ("spec.containers has %d containers: at most %d per Pod"):format(#cs, L.containers)
  end
  out.containers = {}
  local seen = {}
  for i, c in ipairs(cs) do
    local where = ("spec.containers[%d]"):format(i)
    local vc
    vc, err = v_container(c, where)
    if not vc then return nil, err end
    if seen[vc.name] then return nil, ("%s.name %q is used twice in this Pod"):format(where, vc.name) end
    seen[vc.name] = true
    out.containers[i] = vc
  end
  return out
end

-- ---- the RIK workload JSON -> model ----------------------------------------------------------

local RIK_POLICY = { Never = "Never", OnFailure = "OnFailure", Always = "Always" }

local function opt(v) if is_null(v) then return nil end return v end

-- RIK sends ports as one object (or null); accept an array too. null protocol -> tcp, null
-- target_port -> port; protocol case-insensitive.
local function rik_ports(p, where)
  if is_null(p) then return nil end
  if type(p) ~= "table" then
    return nil, ("%s is %s: expected null, an object {port, target_port, protocol} or an array of them"):format(where, describe(p))
  end
  local multi = is_arr(p) and (#p > 0 or getmetatable(p) == json.array_mt)
  local list = multi and p or { p }
  if #list > L.ports then return nil, ("%s has %d entries: at most %d"):format(where, #list, L.ports) end
  local out = {}
  for i, e in ipairs(list) do
    local w = multi and ("%s[%d]"):format(where, i) or where
    if not is_obj(e) then return nil, ("%s is %s: expected an object {port, target_port, protocol}"):format(w, describe(e)) end
    local target = e.target_port
    if is_null(target) then target = e.targetPort end
    if is_null(target) then target = e.port end
    local proto = e.protocol
    if is_null(proto) then proto = "TCP" end
    if type(proto) ~= "string" or not (proto:upper() == "TCP" or proto:upper() == "UDP") then
      return nil, ("%s.protocol is %s: use TCP or UDP"):format(w, describe(proto))
    end
    local port, err = check_port(e.port, w .. ".port")
    if not port then return nil, err end
    target, err = check_port(target, w .. ".target_port")
    if not target then return nil, err end
    out[i] = { port = port, target_port = target, protocol = proto:lower(), type = opt(e.type) }
  end
  return out
end

local function rik_env(env, where)
  if is_null(env) then return nil end
  if not is_arr(env) then return nil, ("%s is %s: expected null or an array of {name, value}"):format(where, describe(env)) end
  if #env > L.env then return nil, ("%s has %d entries: at most %d"):format(where, #env, L.env) end
  local out = {}
  for i, e in ipairs(env) do
    local w = ("%s[%d]"):format(where, i)
    if not is_obj(e) then return nil, ("%s is %s: expected an object {name, value}"):format(w, describe(e)) end
    local v = e.value
    if is_null(v) then v = "" end
    if type(v) == "number" or type(v) == "boolean" then v = tostring(v) end
    out[i] = { name = e.name, value = v }
  end
  return out
end

-- Kubernetes quantities: cpu "500m" | "2" | 0.5 -> millicores; memory "128Mi" | "1G" | bytes.
local MEM_UNITS = { [""] = 1, k = 1e3, M = 1e6, G = 1e9, T = 1e12, Ki = 1024, Mi = 1024 ^ 2, Gi = 1024 ^ 3, Ti = 1024 ^ 4 }
local function rik_limits(r, where)
  if is_null(r) then return nil end
  if not is_obj(r) then return nil, ("%s is %s: expected an object {limits = {cpu, memory}}"):format(where, describe(r)) end
  local l = r.limits
  if is_null(l) then return nil end
  if not is_obj(l) then return nil, ("%s.limits is %s: expected an object {cpu, memory}"):format(where, describe(l)) end
  local out = {}
  if not is_null(l.cpu) then
    local n, unit
    if type(l.cpu) == "string" or type(l.cpu) == "number" then n, unit = tostring(l.cpu):match("^(%d+%.?%d*)(m?)$") end
    if not n then return nil, ("%s.limits.cpu is %s: use cores (0.5, 2) or millicores (500m)"):format(where, describe(l.cpu)) end
    out.cpu = math.ceil(tonumber(n) * (unit == "m" and 1 or 1000))
  end
  if not is_null(l.memory) then
    local n, unit
    if type(l.memory) == "string" or type(l.memory) == "number" then n, unit = tostring(l.memory):match("^(%d+)(%a*)$") end
    if not n or not MEM_UNITS[unit] then
      return nil, ("%s.limits.memory is %s: use bytes or a quantity like 128Mi or 1G"):format(where, describe(l.memory))
    end
    out.memory = tonumber(n) * MEM_UNITS[unit]
  end
  return out
end

local function rik_mounts(vm, where)
  if is_null(vm) then return nil end
  if not is_arr(vm) then return nil, ("%s is %s: expected an array of {mountPath, type}"):format(where, describe(vm)) end
  if #vm > L.mounts then return nil, ("%s has %d entries: at most %d"):format(where, #vm, L.mounts) end
  local out = {}
  for i, m in ipairs(vm) do
    if not is_obj(m) then return nil, ("%s[%d] is %s: expected an object {mountPath, type}"):format(where, i, describe(m)) end
    local dest = opt(m.mountPath)
    if dest == nil then dest = opt(m.destination) end
    out[i] = { destination = dest, type = opt(m.type) or "tmpfs", read_only = opt(m.readOnly) }
  end
  return out
end

-- Map the decoded RIK JSON into a model (types checked as far as the mapping needs; W.validate
-- checks the rest).
local function map_rik(w)
  if not is_obj(w) then return nil, ("the workload definition is %s: expected a JSON object"):format(describe(w)) end
  if not is_null(w.apiVersion) and w.apiVersion ~= "v1" then
    return nil, ("apiVersion is %s: riklet understands v1"):format(describe(w.apiVersion))
  end
  if w.kind ~= "Pod" and w.kind ~= "Function" then
    return nil, ("kind is %s: riklet runs kind Pod or Function"):format(describe(w.kind))
  end
  if not valid_name(w.name) then
    return nil, ("name is %s: a workload name is 1 to %d characters of letters, digits, '.', '_' and '-', starting with a letter or digit"):format(describe(w.name), L.name)
  end
  local spec = w.spec
  if not is_obj(spec) then return nil, ("spec is %s: expected an object"):format(describe(spec)) end
  local m = { kind = w.kind, name = w.name, replicas = opt(w.replicas) }
  local rp = opt(spec.restartPolicy)
  if rp ~= nil then
    if not RIK_POLICY[rp] then return nil, ("spec.restartPolicy is %s: use Never, OnFailure or Always"):format(describe(rp)) end
    m.restart_policy = RIK_POLICY[rp]
  end
  m.grace_period = opt(spec.terminationGracePeriodSeconds)
  if m.grace_period ~= nil and type(m.grace_period) ~= "number" then
    return nil, ("spec.terminationGracePeriodSeconds is %s: a number of seconds"):format(describe(m.grace_period))
  end
  if w.kind == "Function" then
    local fn = spec["function"]
    if not is_obj(fn) then return nil, ("spec.function is %s: a Function needs spec.function.execution.rootfs"):format(describe(fn)) end
    local ex = fn.execution
    if not is_obj(ex) then return nil, ("spec.function.execution is %s: a Function needs spec.function.execution.rootfs"):format(describe(ex)) end
    m["function"] = { rootfs = ex.rootfs }
    local e = opt(fn.exposure)
    if e ~= nil then
      if not is_obj(e) then return nil, ("spec.function.exposure is %s: expected null or an object {port, targetPort}"):format(describe(e)) end
      local target = opt(e.targetPort)
      if target == nil then target = opt(e.target_port) end
      if target == nil then target = e.port end
      m["function"].exposure = { port = e.port, target_port = target, type = opt(e.type) }
    end
    return m
  end
  local cs = spec.containers
  if not is_arr(cs) or #cs == 0 then
    return nil, ("spec.containers is %s: a Pod needs an array of at least one container"):format(describe(cs))
  end
  if #cs > L.containers then
    return nil, ("spec.containers has %d containers: at most %d per Pod"):format(#cs, L.containers)
  end
  m.containers = {}
  for i, c in ipairs(cs) do
    local where = ("spec.containers[%d]"):format(i)
    if not is_obj(c) then return nil, ("%s is %s: expected an object"):format(where, describe(c)) end
    local mc = { name = c.name, image = opt(c.image), command = opt(c.command), args = opt(c.args),
      working_dir = opt(c.workingDir) or opt(c.working_dir) }
    local err
    mc.env, err = rik_env(c.env, where .. ".env")
    if err then return nil, err end
    mc.ports, err = rik_ports(c.ports, where .. ".ports")
    if err then return nil, err end
    mc.limits, err = rik_limits(c.resources, where .. ".resources")
    if err then return nil, err end
    mc.mounts, err = rik_mounts(opt(c.volumeMounts), where .. ".volumeMounts")
    if err then return nil, err end
    m.containers[i] = mc
  end
  return m
end

function W.from_rik(text)
  if type(text) ~= "string" then return nil, "the workload definition is not a string" end
  if #text > L.manifest_bytes then
    return nil, ("the workload definition is %d bytes, larger than the %d bytes (1 MiB) allowed"):format(#text, L.manifest_bytes)
  end
  local w, err = json.decode(text, L.depth)
  if w == nil then return nil, "the workload definition is not valid JSON: " .. err end
  local m
  m, err = map_rik(w)
  if not m then return nil, err end
  return W.validate(m)
end

-- The admission policy sees a copy (it cannot change ours) and plain data only; whatever it
-- returns is validated again.
local function copy(v, depth)
  if type(v) ~= "table" then return v end
  if depth > L.depth then error("workload nested too deep to copy") end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x, depth + 1) end
  return c
end

function W.for_source(m, source)
  for i, c in ipairs(m.containers or {}) do
    local ref, err = image.local_ref(c.image, source)
    if not ref then return nil, ("spec.containers[%d].image: %s"):format(i, err) end
    if ref ~= c.image then
      c.image, c.image_ref = ref, assert(image.parse_ref(ref))
    end
  end
  return m
end

function W.admit(m)
  local admitted, reason = policy.call("admission", "admit", copy(m, 0), { limits = copy(L, 0) })
  if not admitted then return nil, reason or "rejected by the admission policy" end
  local v, err = W.validate(admitted)
  if not v then return nil, "the admission policy returned a workload that is not valid: " .. err end
  return v
end

return W
