-- admission — validate and default a workload before riklet runs it.
--
-- admit(w, ctx) -> workload | nil, reason
--   w   : the workload definition, decoded from JSON (RIK format; null is ctx.null)
--   ctx : { null = <json null> }   (plain data only: the policy runs in riklet's sandbox; the
--           agent parses each container's image reference after admission)
-- Every rejection names the field and says why. The returned workload is normalized:
--   { kind, name, replicas, containers = { { name, image, env = { {name=, value=} }, ports } },
--     ["function"] = <spec.function> }
local A = {}

local NAME_MAX = 63
local function valid_name(s)
  return type(s) == "string" and #s >= 1 and #s <= NAME_MAX and s:match("^[A-Za-z0-9][A-Za-z0-9._-]*$") ~= nil
end

local function describe(s)
  if type(s) ~= "string" then return "a " .. type(s) end
  if #s > 60 then return ("%d characters starting %q"):format(#s, s:sub(1, 40)) end
  return ("%q"):format(s)
end

local function is_null(v, ctx) return v == nil or v == ctx.null end

local function check_env(env, where, ctx)
  local out = {}
  if is_null(env, ctx) then return out end
  if type(env) ~= "table" then return nil, where .. " must be null or an array of {name, value}" end
  for i, e in ipairs(env) do
    local w = ("%s[%d]"):format(where, i)
    if type(e) ~= "table" then return nil, w .. " must be an object {name, value}" end
    if type(e.name) ~= "string" or not e.name:match("^[A-Za-z_][A-Za-z0-9_]*$") or #e.name > 256 then
      return nil, ("%s.name is %s: an environment variable name is letters, digits and _, not starting with a digit"):format(w, describe(e.name))
    end
    local v = e.value
    if is_null(v, ctx) then v = "" end
    if type(v) == "number" or type(v) == "boolean" then v = tostring(v) end
    if type(v) ~= "string" then return nil, w .. ".value must be a string" end
    if #v > 32768 then return nil, w .. ".value is longer than 32768 bytes" end
    out[#out + 1] = { name = e.name, value = v }
  end
  return out
end

local function check_port(n, where)
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 65535 then
    return nil, ("%s is %s: a port is a whole number from 1 to 65535"):format(where, tostring(n))
  end
  return n
end

local function check_ports(p, where, ctx)
  if is_null(p, ctx) then return nil end
  if type(p) ~= "table" then return nil, where .. " must be null or an object {port, target_port, protocol}" end
  -- RIK sends one object; accept an array of them too.
  local list = p[1] and p or { p }
  local out = {}
  for i, e in ipairs(list) do
    local w = p[1] and ("%s[%d]"):format(where, i) or where
    local port, err = check_port(e.port, w .. ".port")
    if not port then return nil, err end
    local target = e.target_port
    if is_null(target, ctx) then target = port end
    target, err = check_port(target, w .. ".target_port")
    if not target then return nil, err end
    local proto = e.protocol
    if is_null(proto, ctx) then proto = "TCP" end
    if type(proto) ~= "string" or not (proto:upper() == "TCP" or proto:upper() == "UDP") then
      return nil, ("%s.protocol is %s: use TCP or UDP"):format(w, describe(proto))
    end
    out[#out + 1] = { port = port, target_port = target, protocol = proto:lower(),
      type = not is_null(e.type, ctx) and e.type or nil }
  end
  return out
end

function A.admit(w, ctx)
  if type(w) ~= "table" or w[1] ~= nil then
    return nil, "the workload definition must be a JSON object"
  end
  if not is_null(w.apiVersion, ctx) and w.apiVersion ~= "v1" then
    return nil, ("apiVersion is %s: riklet understands v1"):format(describe(w.apiVersion))
  end
  local kind = w.kind
  if kind ~= "Pod" and kind ~= "Function" then
    return nil, ("kind is %s: riklet runs kind Pod or Function"):format(describe(kind))
  end
  if not valid_name(w.name) then
    return nil, ("name is %s: a workload name is 1 to %d characters of letters, digits, '.', '_' and '-', starting with a letter or digit"):format(describe(w.name), NAME_MAX)
  end
  local spec = w.spec
  if type(spec) ~= "table" then return nil, "spec is missing or not an object" end
  local out = { kind = kind, name = w.name, replicas = not is_null(w.replicas, ctx) and w.replicas or nil }
  if kind == "Function" then
    local fn = spec["function"]
    if type(fn) ~= "table" then return nil, "spec.function is missing: a Function needs spec.function.execution.rootfs" end
    out["function"] = fn
    return out
  end
  local cs = spec.containers
  if type(cs) ~= "table" or #cs == 0 then
    return nil, "spec.containers is missing or empty: a Pod needs at least one container"
  end
  if #cs > 32 then return nil, "spec.containers has more than 32 containers" end
  out.containers = {}
  local seen = {}
  for i, c in ipairs(cs) do
    local where = ("spec.containers[%d]"):format(i)
    if type(c) ~= "table" then return nil, where .. " must be an object" end
    if not valid_name(c.name) then
      return nil, ("%s.name is %s: a container name is 1 to %d characters of letters, digits, '.', '_' and '-'"):format(where, describe(c.name), NAME_MAX)
    end
    if seen[c.name] then return nil, ("%s.name %q is used twice in this Pod"):format(where, c.name) end
    seen[c.name] = true
    if type(c.image) ~= "string" or c.image == "" then
      return nil, where .. ".image is missing: give an image reference like alpine:latest"
    end
    local env, eerr = check_env(c.env, where .. ".env", ctx)
    if not env then return nil, eerr end
    local ports, perr = check_ports(c.ports, where .. ".ports", ctx)
    if perr then return nil, perr end
    out.containers[i] = { name = c.name, image = c.image, env = env, ports = ports }
  end
  return out
end

return A
