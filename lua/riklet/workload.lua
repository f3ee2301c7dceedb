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
--     grace_period? (seconds; nil = --stop-grace), independent? (Kubernetes semantics: a container
--     that ends does not stop the others; the Pod ends once all ended),
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
local limits = require "riklet.limits"

local W = {}

W.LIMITS = limits.workload
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

local is_array = limits.is_array
W.is_array = is_array

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

local MODEL_KEYS = set("kind", "name", "replicas", "restart_policy", "grace_period", "containers", "function",
  "independent", "volumes", "init_containers")
local CONTAINER_KEYS = set("name", "image", "image_ref", "command", "args", "working_dir", "env", "ports",
  "mounts", "limits", "user", "pull", "probes", "hooks")

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
  set("destination", "type", "read_only", "volume", "sub_path")

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
  if m.read_only ~= nil and type(m.read_only) ~= "boolean" then
    return nil, ("%s.read_only is %s: expected true or false"):format(w, describe(m.read_only))
  end
  if m.type == "volume" then -- one of the Pod's volumes (checked against them in W.validate)
    if not valid_name(m.volume) then return nil, ("%s.volume is %s: the name of one of the Pod's volumes"):format(w, describe(m.volume)) end
    local sub
    if m.sub_path ~= nil then
      sub, err = W.check_rel_path(m.sub_path, w .. ".sub_path")
      if not sub then return nil, err end
    end
    return { destination = dest, type = "volume", volume = m.volume, sub_path = sub, read_only = m.read_only }
  end
  if m.type ~= "tmpfs" then
    return nil, ("%s.type is %s: only tmpfs and volume mounts are supported (a host path never comes from a workload)"):format(w, describe(m.type))
  end
  return { destination = dest, type = "tmpfs", read_only = m.read_only }
end

-- A path inside a volume: relative, no '..', no empty part.
function W.check_rel_path(v, where)
  local p, err = check_string(v, where, L.arg)
  if not p then return nil, err end
  if p:sub(1, 1) == "/" or p:find("//", 1, true) or p:sub(-1) == "/" then
    return nil, ("%s is %s: a relative path like dir/file is needed"):format(where, describe(p))
  end
  for part in p:gmatch("[^/]+") do
    if part == ".." or part == "." then return nil, ("%s is %s: '.' and '..' are not allowed"):format(where, describe(p)) end
  end
  return p
end

local VOLUME_KEYS, FILE_KEYS = set("name", "type", "files", "medium", "size_limit"), set("path", "base64", "mode")

local function v_file(f, w)
  local p, err = W.check_rel_path(f.path, w .. ".path")
  if not p then return nil, err end
  local b
  b, err = check_string(f.base64, w .. ".base64", L.manifest_bytes, true)
  if not b then return nil, err end
  if not W.base64_decode(b) then return nil, w .. ".base64 is not valid base64" end
  local mode = f.mode
  if mode ~= nil and (type(mode) ~= "number" or mode ~= math.floor(mode) or mode < 0 or mode > 511) then
    return nil, ("%s.mode is %s: a file mode from 0 to 0777 (511)"):format(w, tostring(mode))
  end
  return { path = p, base64 = b, mode = mode }
end

local function v_volume(v, w)
  if not valid_name(v.name) then return nil, ("%s.name is %s: a volume name is letters, digits, '.', '_' and '-'"):format(w, describe(v.name)) end
  if v.type ~= "emptyDir" and v.type ~= "files" then
    return nil, ("%s.type is %s: use emptyDir or files"):format(w, describe(v.type))
  end
  local out = { name = v.name, type = v.type }
  if v.medium ~= nil then
    if v.medium ~= "Memory" and v.medium ~= "" then return nil, ("%s.medium is %s: use Memory or nothing"):format(w, describe(v.medium)) end
    out.medium = v.medium ~= "" and v.medium or nil
  end
  if v.size_limit ~= nil then
    if type(v.size_limit) ~= "number" or v.size_limit < 4096 or v.size_limit > 0x1p50 then
      return nil, ("%s.size_limit is %s: a number of bytes, at least 4096"):format(w, tostring(v.size_limit))
    end
    out.size_limit = math.floor(v.size_limit)
  end
  local err
  out.files, err = entries(v.files, w .. ".files", "{path, base64, mode}", 1024, FILE_KEYS, v_file)
  if not out.files then return nil, err end
  return out
end

local function v_limits(l, where)
  if l == nil then return {} end
  if type(l) ~= "table" then return nil, ("%s is %s: expected an object {cpu, memory}"):format(where, describe(l)) end
  local ok, err = only_keys(l, set("cpu", "memory"), where)
  if not ok then return nil, err end
  if l.cpu ~= nil and (type(l.cpu) ~= "number" or l.cpu ~= math.floor(l.cpu) or l.cpu < 1 or l.cpu > 1024 * 1000) then
    return nil, ("%s.cpu is %s: a whole number of millicores from 1 to 1024000"):format(where, describe(l.cpu))
  end
  if l.memory ~= nil and (type(l.memory) ~= "number" or l.memory ~= math.floor(l.memory) or l.memory < 4096 or l.memory > 0x1p50) then
    return nil, ("%s.memory is %s: a whole number of bytes, at least 4096"):format(where, describe(l.memory))
  end
  return { cpu = l.cpu, memory = l.memory }
end

-- Probes and lifecycle hooks (riklet.probe runs them). A handler: {type = "exec", command} |
-- {type = "http", port, path, scheme = "http"|"https", host?, headers = {{name, value}}} |
-- {type = "tcp", port, host?} | {type = "sleep", seconds} (hooks only).
local HANDLER_KEYS = set("type", "command", "port", "path", "scheme", "host", "headers", "seconds")
local PROBE_KEYS = set("handler", "initial_delay_seconds", "period_seconds", "timeout_seconds", "success_threshold",
  "failure_threshold")
W.PROBE_DEFAULTS = { initial_delay_seconds = 0, period_seconds = 10, timeout_seconds = 1, success_threshold = 1,
  failure_threshold = 3 }
local PROBE_RANGES = { initial_delay_seconds = { 0, 86400 }, period_seconds = { 1, 86400 }, timeout_seconds = { 1, 3600 },
  success_threshold = { 1, 1000 }, failure_threshold = { 1, 1000 } }

local function v_handler(h, where, hook)
  if type(h) ~= "table" then return nil, ("%s is %s: expected an object {type, ...}"):format(where, describe(h)) end
  local ok, err = only_keys(h, HANDLER_KEYS, where)
  if not ok then return nil, err end
  local out = { type = h.type }
  if h.type == "exec" then
    out.command, err = check_strings(h.command, where .. ".command")
    if not out.command then return nil, err end
    if #out.command == 0 or #out.command > L.argv then
      return nil, ("%s.command has %d entries: from 1 to %d"):format(where, #out.command, L.argv)
    end
    return out
  elseif h.type == "http" or h.type == "tcp" then
    out.port, err = check_port(h.port, where .. ".port")
    if not out.port then return nil, err end
    if h.host ~= nil then
      out.host, err = check_string(h.host, where .. ".host", 253)
      if not out.host then return nil, err end
      if not out.host:match("^[A-Za-z0-9][A-Za-z0-9.-]*$") then
        return nil, ("%s.host is %s: an IPv4 address or a host name"):format(where, describe(out.host))
      end
    end
    if h.type == "tcp" then
      if out.host and not out.host:match("^%d+%.%d+%.%d+%.%d+$") then
        return nil, ("%s.host is %s: a tcp probe connects to an IPv4 address"):format(where, describe(out.host))
      end
      return out
    end
    out.path, err = check_string(h.path or "/", where .. ".path", L.arg)
    if not out.path then return nil, err end
    if out.path:sub(1, 1) ~= "/" or out.path:find("[%s%c]") then
      return nil, ("%s.path is %s: an absolute URL path without spaces or control characters"):format(where, describe(out.path))
    end
    out.scheme = h.scheme or "http"
    if out.scheme ~= "http" and out.scheme ~= "https" then
      return nil, ("%s.scheme is %s: use HTTP or HTTPS"):format(where, describe(h.scheme))
    end
    out.headers, err = entries(h.headers, where .. ".headers", "{name, value}", 64, ENV_KEYS, function(e, w)
      if type(e.name) ~= "string" or not e.name:match("^[!#$%%&'*+.^_`|~%w-]+$") or #e.name > 256 then
        return nil, ("%s.name is %s: an HTTP header name"):format(w, describe(e.name))
      end
      local v, verr = check_string(e.value, w .. ".value", L.arg, true)
      if not v then return nil, verr end
      if v:find("[%c]") then return nil, ("%s.value is %s: no control characters"):format(w, describe(v)) end
      return { name = e.name, value = v }
    end)
    if not out.headers then return nil, err end
    return out
  elseif h.type == "sleep" and hook then
    local n = h.seconds
    if type(n) ~= "number" or n ~= math.floor(n) or n < 0 or n > L.grace_period then
      return nil, ("%s.seconds is %s: a whole number of seconds from 0 to %d"):format(where, describe(n), L.grace_period)
    end
    out.seconds = n
    return out
  end
  return nil, ("%s.type is %s: use exec, http or tcp%s"):format(where, describe(h.type), hook and " (or sleep)" or "")
end

local function v_probes(p, where)
  if type(p) ~= "table" then return nil, ("%s is %s: expected an object {startup, readiness, liveness}"):format(where, describe(p)) end
  local ok, err = only_keys(p, set("startup", "readiness", "liveness"), where)
  if not ok then return nil, err end
  local out = {}
  for kind, pr in pairs(p) do
    local w = where .. "." .. kind
    if type(pr) ~= "table" then return nil, ("%s is %s: expected an object {handler, ...}"):format(w, describe(pr)) end
    ok, err = only_keys(pr, PROBE_KEYS, w)
    if not ok then return nil, err end
    local o = {}
    o.handler, err = v_handler(pr.handler, w .. ".handler", false)
    if not o.handler then return nil, err end
    for k, range in pairs(PROBE_RANGES) do
      local n = pr[k]
      if n == nil then n = W.PROBE_DEFAULTS[k] end
      if type(n) ~= "number" or n ~= math.floor(n) or n < range[1] or n > range[2] then
        return nil, ("%s.%s is %s: a whole number from %d to %d"):format(w, k, describe(n), range[1], range[2])
      end
      o[k] = n
    end
    if kind ~= "readiness" and o.success_threshold ~= 1 then
      return nil, ("%s.success_threshold is %d: it must be 1 for a %s probe (as in Kubernetes)"):format(w, o.success_threshold, kind)
    end
    out[kind] = o
  end
  return out
end

local function v_hooks(hk, where)
  if type(hk) ~= "table" then return nil, ("%s is %s: expected an object {post_start, pre_stop}"):format(where, describe(hk)) end
  local ok, err = only_keys(hk, set("post_start", "pre_stop"), where)
  if not ok then return nil, err end
  local out = {}
  for k, h in pairs(hk) do
    out[k], err = v_handler(h, where .. "." .. k, true)
    if not out[k] then return nil, err end
  end
  return out
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
  if c.pull ~= nil then -- image pull policy: "always" (pull each create), "missing" (the default), "never"
    if c.pull ~= "always" and c.pull ~= "missing" and c.pull ~= "never" then
      return nil, ("%s.pull is %s: use always, missing or never"):format(where, describe(c.pull))
    end
    out.pull = c.pull
  end
  if c.user ~= nil then -- {uid?, gid?}: the process's user and group ids
    local u = c.user
    if type(u) ~= "table" then return nil, where .. ".user must be an object {uid, gid}" end
    ok, err = only_keys(u, set("uid", "gid"), where .. ".user")
    if not ok then return nil, err end
    for _, k in ipairs({ "uid", "gid" }) do
      local n = u[k]
      if n ~= nil and (type(n) ~= "number" or n ~= math.floor(n) or n < 0 or n > 4294967294) then
        return nil, ("%s.user.%s is %s: a whole number from 0 to 4294967294"):format(where, k, tostring(n))
      end
    end
    out.user = { uid = u.uid, gid = u.gid }
  end
  if c.probes ~= nil then
    out.probes, err = v_probes(c.probes, where .. ".probes")
    if not out.probes then return nil, err end
  end
  if c.hooks ~= nil then
    out.hooks, err = v_hooks(c.hooks, where .. ".hooks")
    if not out.hooks then return nil, err end
  end
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
  if m.independent ~= nil then
    if type(m.independent) ~= "boolean" then return nil, "independent must be true or false" end
    out.independent = m.independent
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
  out.volumes, err = entries(m.volumes, "spec.volumes", "{name, type}", L.mounts, VOLUME_KEYS, v_volume)
  if not out.volumes then return nil, err end
  local vnames = {}
  for _, v in ipairs(out.volumes) do
    if vnames[v.name] then return nil, ("spec.volumes: %q is used twice"):format(v.name) end
    vnames[v.name] = true
  end
  out.containers = {}
  local seen = {}
  local ics = m.init_containers
  if ics ~= nil then
    if not is_array(ics) then return nil, "spec.initContainers must be an array of containers" end
    if #ics + #cs > L.containers then
      return nil, ("spec has %d containers and init containers: at most %d per Pod"):format(#ics + #cs, L.containers)
    end
    out.init_containers = {}
  end
  local all = {}
  for i, c in ipairs(ics or {}) do all[#all + 1] = { c, ("spec.initContainers[%d]"):format(i), out.init_containers, i } end
  for i, c in ipairs(cs) do all[#all + 1] = { c, ("spec.containers[%d]"):format(i), out.containers, i } end
  for _, e in ipairs(all) do
    local c, where = e[1], e[2]
    local vc
    vc, err = v_container(c, where)
    if not vc then return nil, err end
    if seen[vc.name] then return nil, ("%s.name %q is used twice in this Pod"):format(where, vc.name) end
    for j, mt in ipairs(vc.mounts) do
      if mt.type == "volume" and not vnames[mt.volume] then
        return nil, ("%s.mounts[%d].volume %q is not one of the Pod's volumes"):format(where, j, mt.volume)
      end
    end
    seen[vc.name] = true
    e[3][e[4]] = vc
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
local MEM_UNITS = { [""] = 1, k = 1e3, M = 1e6, G = 1e9, T = 1e12, Ki = 1024, Mi = 1048576, Gi = 1073741824, Ti = 1099511627776 }
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
    local vol = opt(m.volume)
    out[i] = { destination = dest, type = opt(m.type) or (vol and "volume") or "tmpfs", read_only = opt(m.readOnly),
      volume = vol, sub_path = opt(m.subPath) }
  end
  return out
end

-- A Kubernetes probe or hook handler ({exec: {command}} | {httpGet: {port, path, host, scheme,
-- httpHeaders}} | {tcpSocket: {port, host}} | {sleep: {seconds}}) -> the model's handler (checked by
-- W.validate). Named ports are resolved by the front-end (W.from_k8s) before.
local function rik_handler(h, where)
  if not is_obj(h) then return nil, ("%s is %s: expected an object"):format(where, describe(h)) end
  local function sub(k)
    local v = opt(h[k])
    if v ~= nil and not is_obj(v) then return nil, ("%s.%s is %s: expected an object"):format(where, k, describe(v)) end
    return v
  end
  local e, g, t, sl = sub("exec"), sub("httpGet"), sub("tcpSocket"), sub("sleep")
  if not is_null(h.grpc) then return nil, where .. ".grpc: riklet runs exec, httpGet and tcpSocket probes, not grpc" end
  if e then return { type = "exec", command = opt(e.command) } end
  if g then
    local scheme = opt(g.scheme)
    return { type = "http", port = opt(g.port), path = opt(g.path), host = opt(g.host) ~= "" and opt(g.host) or nil,
      scheme = type(scheme) == "string" and scheme:lower() or scheme, headers = opt(g.httpHeaders) }
  end
  if t then return { type = "tcp", port = opt(t.port), host = opt(t.host) ~= "" and opt(t.host) or nil } end
  if sl then return { type = "sleep", seconds = opt(sl.seconds) } end
  return nil, where .. " has no handler: give exec, httpGet or tcpSocket"
end

local PROBE_FIELDS = { initialDelaySeconds = "initial_delay_seconds", periodSeconds = "period_seconds",
  timeoutSeconds = "timeout_seconds", successThreshold = "success_threshold", failureThreshold = "failure_threshold" }

-- startupProbe / readinessProbe / livenessProbe and lifecycle.postStart / preStop of a container.
local function rik_probes_hooks(c, where)
  local probes, hooks
  for kind, field in pairs({ startup = "startupProbe", readiness = "readinessProbe", liveness = "livenessProbe" }) do
    local p = opt(c[field])
    if p ~= nil then
      local w = where .. "." .. field
      if not is_obj(p) then return nil, nil, ("%s is %s: expected an object"):format(w, describe(p)) end
      local h, err = rik_handler(p, w)
      if not h then return nil, nil, err end
      local m = { handler = h }
      for k, mk in pairs(PROBE_FIELDS) do m[mk] = opt(p[k]) end
      probes = probes or {}
      probes[kind] = m
    end
  end
  local lc = opt(c.lifecycle)
  if lc ~= nil then
    if not is_obj(lc) then return nil, nil, ("%s.lifecycle is %s: expected an object"):format(where, describe(lc)) end
    for k, field in pairs({ post_start = "postStart", pre_stop = "preStop" }) do
      if not is_null(lc[field]) then
        local h, err = rik_handler(lc[field], ("%s.lifecycle.%s"):format(where, field))
        if not h then return nil, nil, err end
        hooks = hooks or {}
        hooks[k] = h
      end
    end
  end
  return probes, hooks
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
  m.independent = opt(spec.independentContainers)
  -- volumes: {name, emptyDir = {medium, sizeLimit} | files = {{path, base64, mode}}}
  local vols = opt(spec.volumes)
  if vols ~= nil then
    if type(vols) ~= "table" then return nil, "spec.volumes must be an array" end
    m.volumes = {}
    for i, v in ipairs(vols) do
      if type(v) ~= "table" then return nil, ("spec.volumes[%d] must be an object"):format(i) end
      local ed = opt(v.emptyDir)
      m.volumes[i] = { name = v.name, type = ed ~= nil and "emptyDir" or "files", files = opt(v.files),
        medium = type(ed) == "table" and opt(ed.medium) or nil, size_limit = type(ed) == "table" and opt(ed.sizeLimit) or nil }
    end
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
  local ics = opt(spec.initContainers)
  if ics ~= nil and not is_arr(ics) then return nil, ("spec.initContainers is %s: expected an array"):format(describe(ics)) end
  if ics and #ics > L.containers then
    return nil, ("spec.initContainers has %d containers: at most %d per Pod"):format(#ics, L.containers)
  end
  if ics and #ics > 0 then m.init_containers = {} end
  for _, part in ipairs({ { "initContainers", ics or {}, m.init_containers }, { "containers", cs, m.containers } }) do
    for i, c in ipairs(part[2]) do
      local where = ("spec.%s[%d]"):format(part[1], i)
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
      local ipp = opt(c.imagePullPolicy)
      if ipp == "Always" then mc.pull = "always" elseif ipp == "IfNotPresent" then mc.pull = "missing"
      elseif ipp == "Never" then mc.pull = "never"
      elseif ipp ~= nil then
        return nil, ("%s.imagePullPolicy is %s: use Always, IfNotPresent or Never"):format(where, describe(ipp))
      end
      mc.probes, mc.hooks, err = rik_probes_hooks(c, where)
      if err then return nil, err end
      local sc = opt(c.securityContext)
      if type(sc) == "table" and (opt(sc.runAsUser) ~= nil or opt(sc.runAsGroup) ~= nil) then
        mc.user = { uid = opt(sc.runAsUser), gid = opt(sc.runAsGroup) }
      end
      part[3][i] = mc
    end
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

function W.for_source(m, source)
  for i, c in ipairs(m.containers or {}) do
    local ref, err = image.local_ref(c.image, source)
    if not ref then return nil, ("spec.containers[%d].image: %s"):format(i, err) end
    if ref ~= c.image then
      c.image, c.image_ref = ref, assert(image.parse_ref(ref))
    end
  end
  if m["function"] then
    local url, err = image.local_file(m["function"].rootfs, source)
    if not url then return nil, "spec.function.execution.rootfs: " .. err end
    m["function"].rootfs = url
  end
  return m
end

-- The admission policy sees a copy (it cannot change ours) and plain data only: riklet.sandbox
-- copies every argument into the policy's own Lua state (no copy here first: at a restart after a
-- policy change that was 1,000 more copies of each workload and of the limits, garbage all).
-- Whatever it returns is validated again.
function W.admit(m)
  local called, admitted, reason = policy.try("admission", "admit", m, { limits = L })
  if not called then return nil, admitted end -- its message and traceback (lsandbox made them safe)
  if not admitted then return nil, policy.reason(reason, "rejected by the admission policy") end
  local v, err = W.validate(admitted)
  if not v then return nil, "the admission policy returned a workload that is not valid: " .. err end
  return v
end

-- ---- Kubernetes v1.Pod (as the interLink virtual kubelet sends it) -> RIK workload JSON ------
--
-- W.from_k8s(data) -> definition (a table in the RIK JSON shape, for W.from_rik), notes | nil, reason
--   data: interLink's RetrievedPodData {pod = v1.Pod, container = {{name, configMaps, secrets,
--   projectedvolumemaps}}}. notes: what the spec asks for that riklet does not run (the caller logs
--   them once). Refused (reason names the field): init containers, hostNetwork, a shared emptyDir,
--   subPath, an env ref that cannot be resolved.

local b64 = {}
do
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do b64[chars:byte(i)] = i - 1 end
  b64[("-"):byte()], b64[("_"):byte()] = 62, 63
end

function W.base64_decode(s)
  if type(s) ~= "string" then return nil end
  s = s:gsub("[%s=]", "")
  local out, bits, n = {}, 0, 0
  for i = 1, #s do
    local v = b64[s:byte(i)]
    if not v then return nil end
    bits, n = bits * 64 + v, n + 6
    if n >= 8 then
      n = n - 8
      local b = math.floor(bits / 2 ^ n)
      out[#out + 1] = string.char(b)
      bits = bits - b * 2 ^ n
    end
  end
  return table.concat(out)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function W.base64_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1)
      .. (b and B64:sub(q[3] + 1, q[3] + 1) or "=") .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return table.concat(out)
end

local function k8s_list(v, where)
  if is_null(v) then return {} end
  if type(v) ~= "table" or (next(v) ~= nil and v[1] == nil) then return nil, where .. " must be an array" end
  return v
end

local function k8s_obj(v, where)
  if is_null(v) then return nil end
  if type(v) ~= "table" or v[1] ~= nil then return nil, where .. " must be an object" end
  return v
end

-- value of key in a ConfigMap (data, then binaryData) or a Secret (data is base64)
local function source_value(obj, key, secret)
  if type(obj) ~= "table" then return nil end
  local data = type(obj.data) == "table" and obj.data or {}
  local v = data[key]
  if secret and type(v) == "string" then return W.base64_decode(v) end
  if type(v) == "string" then return v end
  local sd = type(obj.stringData) == "table" and obj.stringData[key]
  if type(sd) == "string" then return sd end
  local bd = type(obj.binaryData) == "table" and obj.binaryData[key]
  if type(bd) == "string" then return W.base64_decode(bd) end
  return nil
end

local function field_ref(path, md, spec)
  local map = {
    ["metadata.name"] = md.name, ["metadata.namespace"] = md.namespace or "default",
    ["metadata.uid"] = md.uid, ["spec.nodeName"] = spec.nodeName, ["spec.serviceAccountName"] = spec.serviceAccountName,
  }
  local v = map[path]
  if v == nil then
    local k = path:match("^metadata%.labels%['(.*)'%]$")
    if k and type(md.labels) == "table" then v = md.labels[k] end
    k = path:match("^metadata%.annotations%['(.*)'%]$")
    if k and type(md.annotations) == "table" then v = md.annotations[k] end
  end
  if type(v) == "string" then return v end
  return nil
end

local function k8s_env(c, where, src, md, spec)
  local out = {}
  local envs, err = k8s_list(c.envFrom, where .. ".envFrom")
  if not envs then return nil, err end
  for i, ef in ipairs(envs) do
    local w = ("%s.envFrom[%d]"):format(where, i)
    if type(ef) ~= "table" then return nil, w .. " must be an object" end
    local ref, secret = ef.configMapRef, false
    if is_null(ref) then ref, secret = ef.secretRef, true end
    if type(ref) ~= "table" or type(ref.name) ~= "string" then
      return nil, w .. " needs configMapRef.name or secretRef.name"
    end
    local obj = (secret and src.secrets or src.configmaps)[ref.name]
    if not obj then
      if ref.optional ~= true then
        return nil, ("%s: %s %q was not delivered with the pod"):format(w, secret and "Secret" or "ConfigMap", ref.name)
      end
    else
      local keys = {}
      for k in pairs(type(obj.data) == "table" and obj.data or {}) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        out[#out + 1] = { name = (type(ef.prefix) == "string" and ef.prefix or "") .. k, value = source_value(obj, k, secret) }
      end
    end
  end
  envs, err = k8s_list(c.env, where .. ".env")
  if not envs then return nil, err end
  for i, e in ipairs(envs) do
    local w = ("%s.env[%d]"):format(where, i)
    if type(e) ~= "table" or type(e.name) ~= "string" then return nil, w .. " must be an object with a name" end
    local v = e.value
    if is_null(v) and type(e.valueFrom) == "table" then
      local vf = e.valueFrom
      local ref, secret = vf.configMapKeyRef, false
      if is_null(ref) then ref, secret = vf.secretKeyRef, true end
      if type(ref) == "table" then
        local obj = (secret and src.secrets or src.configmaps)[ref.name]
        v = obj and source_value(obj, ref.key, secret)
        if v == nil and ref.optional ~= true then
          return nil, ("%s.valueFrom: key %q of %s %q is not in what was delivered with the pod"):format(w,
            tostring(ref.key), secret and "Secret" or "ConfigMap", tostring(ref.name))
        end
      elseif type(vf.fieldRef) == "table" then
        v = field_ref(tostring(vf.fieldRef.fieldPath), md, spec)
        if v == nil then
          return nil, ("%s.valueFrom.fieldRef %s: riklet cannot resolve this field"):format(w, tostring(vf.fieldRef.fieldPath))
        end
      else
        return nil, ("%s.valueFrom: only configMapKeyRef, secretKeyRef and fieldRef are supported"):format(w)
      end
    end
    if v ~= nil then out[#out + 1] = { name = e.name, value = is_null(v) and "" or v } end
  end
  return out
end

-- The volume riklet builds for a pod volume: RIK JSON {name, emptyDir = {medium, sizeLimit}} or
-- {name, files = {{path, base64, mode}}}; nil, reason when refused; nil when riklet does not
-- build this kind (the caller notes it).
local function k8s_files(v, obj, items, default_mode, secret, where)
  local files = {}
  local data = type(obj) == "table" and type(obj.data) == "table" and obj.data or {}
  local bin = type(obj) == "table" and type(obj.binaryData) == "table" and obj.binaryData or {}
  local function add(key, path, mode)
    local val = data[key]
    local enc
    if type(val) == "string" then enc = secret and val or W.base64_encode(val)
    elseif type(bin[key]) == "string" then enc = bin[key] end
    if not enc then return nil, ("key %q is not in %s"):format(tostring(key), where) end
    files[#files + 1] = { path = path, base64 = enc, mode = tonumber(mode) or tonumber(default_mode) or 420 }
    return true
  end
  if type(items) == "table" and #items > 0 then
    for _, it in ipairs(items) do
      if type(it) ~= "table" then return nil, "items must be objects {key, path}" end
      local ok, err = add(it.key, it.path, it.mode)
      if not ok then return nil, err end
    end
  else
    local keys = {}
    for k in pairs(data) do keys[#keys + 1] = k end
    for k in pairs(bin) do if data[k] == nil then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do add(k, k) end
  end
  return { name = v.name, files = files }
end

local function k8s_volume(v, src, projected)
  if not is_null(v.emptyDir) then
    local ed = type(v.emptyDir) == "table" and v.emptyDir or {}
    local size
    if not is_null(ed.sizeLimit) then
      local n, unit = tostring(ed.sizeLimit):match("^(%d+)(%a*)$")
      if not n or not MEM_UNITS[unit] then return nil, ("emptyDir.sizeLimit %s is not a quantity like 64Mi"):format(tostring(ed.sizeLimit)) end
      size = tonumber(n) * MEM_UNITS[unit]
    end
    return { name = v.name, emptyDir = { medium = opt(ed.medium), sizeLimit = size } }
  end
  if type(v.configMap) == "table" then
    local cm = src.configmaps[v.configMap.name]
    if not cm then
      if v.configMap.optional == true then return { name = v.name, files = {} } end
      return nil, ("ConfigMap %q was not delivered with the pod"):format(tostring(v.configMap.name))
    end
    return k8s_files(v, cm, v.configMap.items, v.configMap.defaultMode, false, "ConfigMap " .. tostring(v.configMap.name))
  end
  if type(v.secret) == "table" then
    local sc = src.secrets[v.secret.secretName]
    if not sc then
      if v.secret.optional == true then return { name = v.name, files = {} } end
      return nil, ("Secret %q was not delivered with the pod"):format(tostring(v.secret.secretName))
    end
    return k8s_files(v, sc, v.secret.items, v.secret.defaultMode, true, "Secret " .. tostring(v.secret.secretName))
  end
  if type(v.projected) == "table" or type(v.downwardAPI) == "table" then
    local pm = projected[v.name]
    if not pm then return nil end -- not delivered: noted, not mounted
    local mode = type(v.projected) == "table" and v.projected.defaultMode or nil
    return k8s_files(v, pm, nil, mode, false, "projected volume " .. v.name)
  end
  return nil
end

-- spec fields riklet does not run, named in the notes when present
local IGNORED_CONTAINER = { "stdin", "tty" }
local PROBE_HOOK_FIELDS = { "startupProbe", "readinessProbe", "livenessProbe", "lifecycle" }

-- A copy of a probe or lifecycle object of container c with its named ports (httpGet.port or
-- tcpSocket.port "http") replaced by the containerPort of that name: copy | nil, reason.
local function k8s_named_ports(v, c, where)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    if (k == "httpGet" or k == "tcpSocket") and type(x) == "table" and type(x.port) == "string" then
      local n = tonumber(x.port)
      if not n then
        for _, p in ipairs(type(c.ports) == "table" and c.ports or {}) do
          if type(p) == "table" and p.name == x.port then n = p.containerPort end
        end
      end
      if not n then
        return nil, ("%s.%s.port %s: no container port has this name"):format(where, k, describe(x.port))
      end
      local cp = {}
      for kk, xx in pairs(x) do cp[kk] = xx end
      cp.port = n
      out[k] = cp
    elseif type(x) == "table" and (k == "postStart" or k == "preStop") then
      local err
      out[k], err = k8s_named_ports(x, c, where .. "." .. k)
      if not out[k] then return nil, err end
    else
      out[k] = x
    end
  end
  return setmetatable(out, getmetatable(v))
end
local IGNORED_POD = { "affinity", "tolerations", "hostAliases", "dnsConfig", "priorityClassName",
  "runtimeClassName", "shareProcessNamespace", "readinessGates", "topologySpreadConstraints" }

function W.from_k8s(data)
  if type(data) ~= "table" then return nil, "the body must be a JSON object {pod, container}" end
  local pod = data.pod
  if type(pod) ~= "table" or pod[1] ~= nil then return nil, "pod is missing or not an object (expected interLink's RetrievedPodData)" end
  local md, spec = pod.metadata, pod.spec
  if type(md) ~= "table" then return nil, "pod.metadata is missing or not an object" end
  if type(spec) ~= "table" then return nil, "pod.spec is missing or not an object" end
  if type(md.name) ~= "string" or md.name == "" or #md.name > 253 then
    return nil, ("pod.metadata.name is %s: a pod name is 1 to 253 characters"):format(describe(md.name))
  end
  local notes = {}
  local init, err = k8s_list(spec.initContainers, "pod.spec.initContainers")
  if not init then return nil, err end
  if spec.hostNetwork == true then return nil, "pod.spec.hostNetwork: riklet runs every pod in its own network namespace" end
  -- ConfigMaps and Secrets delivered with the pod, by name
  local src = { configmaps = {}, secrets = {} }
  local rcs
  rcs, err = k8s_list(data.container, "container")
  if not rcs then return nil, err end
  for _, rc in ipairs(rcs) do
    if type(rc) == "table" then
      for _, cm in ipairs(type(rc.configMaps) == "table" and rc.configMaps or {}) do
        if type(cm) == "table" and type(cm.metadata) == "table" and type(cm.metadata.name) == "string" then
          src.configmaps[cm.metadata.name] = cm
        end
      end
      for _, sc in ipairs(type(rc.secrets) == "table" and rc.secrets or {}) do
        if type(sc) == "table" and type(sc.metadata) == "table" and type(sc.metadata.name) == "string" then
          src.secrets[sc.metadata.name] = sc
        end
      end
    end
  end
  local vols = {}
  local vl
  vl, err = k8s_list(spec.volumes, "pod.spec.volumes")
  if not vl then return nil, err end
  for i, v in ipairs(vl) do
    if type(v) ~= "table" or type(v.name) ~= "string" then return nil, ("pod.spec.volumes[%d] must be an object with a name"):format(i) end
    vols[v.name] = v
  end
  local cs
  cs, err = k8s_list(spec.containers, "pod.spec.containers")
  if not cs then return nil, err end
  if #cs == 0 then return nil, "pod.spec.containers is missing or empty: a pod needs at least one container" end
  local used, volumes = {}, {}
  local projected = {}
  for _, rc in ipairs(rcs) do
    for _, pm in ipairs(type(rc) == "table" and type(rc.projectedvolumemaps) == "table" and rc.projectedvolumemaps or {}) do
      if type(pm) == "table" and type(pm.metadata) == "table" and type(pm.metadata.name) == "string" then
        projected[pm.metadata.name] = pm
      end
    end
  end
  local out, init_out = {}, {}
  for _, part in ipairs({ { "initContainers", init, init_out }, { "containers", cs, out } }) do
    for i, c in ipairs(part[2]) do
      local where = ("pod.spec.%s[%d]"):format(part[1], i)
      if type(c) ~= "table" or c[1] ~= nil then return nil, where .. " must be an object" end
      local cname = type(c.name) == "string" and c.name or tostring(i)
      local mc = { name = c.name, image = c.image, command = opt(c.command), args = opt(c.args),
        workingDir = opt(c.workingDir) }
      mc.env, err = k8s_env(c, where, src, md, spec)
      if not mc.env then return nil, err end
      mc.env = json.array(mc.env) -- (a plain empty table would be encoded as a JSON object)
      local res = opt(c.resources)
      if res ~= nil then
        res, err = k8s_obj(res, where .. ".resources")
        if err then return nil, err end
        mc.resources = { limits = opt(res.limits) }
      end
      local ports
      ports, err = k8s_list(c.ports, where .. ".ports")
      if not ports then return nil, err end
      mc.ports = {}
      for j, p in ipairs(ports) do
        if type(p) ~= "table" then return nil, ("%s.ports[%d] must be an object"):format(where, j) end
        if not is_null(p.hostPort) then
          mc.ports[#mc.ports + 1] = { port = p.hostPort, targetPort = p.containerPort, protocol = opt(p.protocol) }
        end
      end
      if #mc.ports == 0 then mc.ports = nil end -- (RIK JSON reads an empty object as one port)
      local vms
      vms, err = k8s_list(c.volumeMounts, where .. ".volumeMounts")
      if not vms then return nil, err end
      mc.volumeMounts = json.array({})
      for j, vm in ipairs(vms) do
        local w = ("%s.volumeMounts[%d]"):format(where, j)
        if type(vm) ~= "table" or type(vm.name) ~= "string" then return nil, w .. " must be an object with a name" end
        local v = vols[vm.name]
        if not v then return nil, ("%s: no volume named %q in pod.spec.volumes"):format(w, vm.name) end
        if not is_null(v.hostPath) then
          return nil, ("%s: hostPath volume %q is refused: a pod never gets a path of the node"):format(w, vm.name)
        end
        local built, why = k8s_volume(v, src, projected)
        if built then
          if not used[vm.name] then
            used[vm.name] = true
            volumes[#volumes + 1] = built
            if built.emptyDir and built.emptyDir.sizeLimit and built.emptyDir.medium ~= "Memory" then
              notes[#notes + 1] = ("emptyDir %q: sizeLimit is not applied on disk (only to medium Memory, a tmpfs)"):format(vm.name)
            end
          end
          local sub = opt(vm.subPath)
          mc.volumeMounts[#mc.volumeMounts + 1] = { mountPath = vm.mountPath, volume = vm.name, readOnly = vm.readOnly == true,
            subPath = sub ~= "" and sub or nil }
        elseif why then
          return nil, ("%s: volume %q: %s"):format(w, vm.name, why)
        else
          notes[#notes + 1] = ("container %s: volume %q at %s is not mounted (riklet mounts emptyDir, configMap, secret "
            .. "and projected volumes)"):format(cname, vm.name, tostring(vm.mountPath))
        end
      end
      -- runAsUser / runAsGroup (the container's, else the pod's); the rest of securityContext is noted
      local csc = type(c.securityContext) == "table" and c.securityContext or {}
      local psc = type(spec.securityContext) == "table" and spec.securityContext or {}
      local uid, gid = opt(csc.runAsUser), opt(csc.runAsGroup)
      if uid == nil then uid = opt(psc.runAsUser) end
      if gid == nil then gid = opt(psc.runAsGroup) end
      if uid ~= nil or gid ~= nil then mc.securityContext = { runAsUser = uid, runAsGroup = gid } end
      for k, x in pairs(csc) do
        if k ~= "runAsUser" and k ~= "runAsGroup" and not is_null(x) then
          notes[#notes + 1] = ("container %s: securityContext.%s is not applied by riklet yet"):format(cname, tostring(k))
        end
      end
      for _, f in ipairs(IGNORED_CONTAINER) do
        if not is_null(c[f]) and c[f] ~= false then notes[#notes + 1] = ("container %s: %s is not run by riklet yet"):format(cname, f) end
      end
      for _, f in ipairs(PROBE_HOOK_FIELDS) do
        if not is_null(c[f]) then
          if part[1] == "initContainers" then
            notes[#notes + 1] = ("init container %s: %s is not run (Kubernetes allows it only on containers)"):format(cname, f)
          else
            mc[f], err = k8s_named_ports(c[f], c, where .. "." .. f)
            if not mc[f] then return nil, err end
          end
        end
      end
      mc.imagePullPolicy = opt(c.imagePullPolicy)
      part[3][i] = mc
    end
  end
  for _, f in ipairs(IGNORED_POD) do
    if not is_null(spec[f]) then notes[#notes + 1] = ("pod.spec.%s is not applied by riklet yet"):format(f) end
  end
  for k, x in pairs(type(spec.securityContext) == "table" and spec.securityContext or {}) do
    if k ~= "runAsUser" and k ~= "runAsGroup" and not is_null(x) then
      notes[#notes + 1] = ("pod.spec.securityContext.%s is not applied by riklet yet"):format(tostring(k))
    end
  end
  -- the hostname is the pod name (a name of at most 63 characters, as Kubernetes cuts it)
  local name = md.name:sub(1, 63):gsub("[.-]+$", "")
  local rp = opt(spec.restartPolicy) or "Always"
  local grace = opt(spec.terminationGracePeriodSeconds)
  if grace == nil then grace = 30 end
  return {
    apiVersion = "v1", kind = "Pod", name = name,
    spec = { containers = out, initContainers = #init_out > 0 and init_out or nil, restartPolicy = rp, terminationGracePeriodSeconds = grace, independentContainers = true,
      volumes = #volumes > 0 and volumes or nil },
  }, notes
end

return W
