-- network — which iptables rules an instance gets. Pure functions of plain tables, run in the
-- policy sandbox; core/fw applies the difference in one commit.
--
-- rules(w, ctx) -> array of rules | nil, reason
--   w   : the workload, either as RIK sends it (spec.containers[].ports {port, target_port,
--         protocol} snake_case, one object or an array; spec.function.exposure {port,
--         targetPort} camelCase) or as the admission policy normalized it (w.containers[].ports,
--         w["function"].exposure).
--   ctx : { instance_id, kind = "Pod"|"Function", comment = "riklet:<id>" (tag every rule with it),
--           address = the instance's IPv4 (pod address or microVM guest address),
--           host_if = the instance's host-side link (veth or TAP),
--           bridge = "riklet0", exposed = { ["tcp/8080"] = "<other instance id>", ... }
--           (ports other instances expose on this node now), null = the JSON null value,
--           reserved = { ["4995"] = "the scheduler's port (--master-ip)", ... } (riklet's own
--           listening ports and the scheduler's), reserved_below = 1024 }
--   Node ports below ctx.reserved_below and those in ctx.reserved are refused: a workload from
--   the network must not take the node's ssh (22), riklet's own ports or the scheduler's. An
--   operator allows them in its own network.lua, e.g. ctx.reserved_below = 0 before base.rules.
--
-- infra(ctx) -> array of rules for the node itself, tagged ctx.comment ("riklet:infra"):
--   ctx : { bridge, pod_cidr, function_cidr, tap_prefix = "rkt", comment }
--
-- A rule is a table: { chain = "RIKLET" | "RIKLET-POSTROUTING" | "RIKLET-FORWARD",
--   proto, dport, to, src, dst, iif, oif, ctstate, target, comment } (see bindings/lfw.c).
-- An operator's copy in --policy-dir replaces this file; examples in examples/policies/.
local N = {}

-- Expose ports only to this source CIDR (nil: anyone) and only on this interface (nil: any).
local ALLOW_SRC = nil
local ONLY_IIF = nil

local function is_null(v, ctx) return v == nil or v == ctx.null end

local function port_number(v, where)
  if type(v) == "string" and v:match("^%d+$") then v = tonumber(v) end
  if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > 65535 then
    return nil, ("%s is %s: a port is a whole number from 1 to 65535"):format(where, tostring(v))
  end
  return v
end

-- The exposures of a workload: array of { port, target, proto, where }.
local function exposures(w, ctx)
  local out = {}
  local function add(e, where, target_key)
    if type(e) ~= "table" then return nil, where .. " must be an object" end
    local port, err = port_number(e.port, where .. ".port")
    if not port then return nil, err end
    local target = e[target_key]
    if is_null(target, ctx) then target = port end
    target, err = port_number(target, where .. "." .. target_key)
    if not target then return nil, err end
    local proto = e.protocol
    if is_null(proto, ctx) then proto = "tcp" end
    if type(proto) ~= "string" or not (proto:lower() == "tcp" or proto:lower() == "udp") then
      return nil, ("%s.protocol is %s: use TCP or UDP"):format(where, tostring(proto))
    end
    out[#out + 1] = { port = port, target = target, proto = proto:lower(), where = where }
    return true
  end

  local kind = ctx.kind or w.kind
  if kind == "Function" then
    local fn = w["function"] or (type(w.spec) == "table" and w.spec["function"]) or nil
    if type(fn) == "table" and not is_null(fn.exposure, ctx) then
      local e = fn.exposure
      local key = (type(e) == "table" and is_null(e.targetPort, ctx) and not is_null(e.target_port, ctx))
        and "target_port" or "targetPort"
      local ok, err = add(e, "spec.function.exposure", key)
      if not ok then return nil, err end
    end
    return out
  end

  local cs = w.containers or (type(w.spec) == "table" and w.spec.containers) or {}
  if type(cs) ~= "table" then return nil, "spec.containers must be an array" end
  for i, c in ipairs(cs) do
    local p = type(c) == "table" and c.ports or nil
    -- (an empty table is no ports: arrays and objects look alike once copied into the sandbox)
    if not is_null(p, ctx) and not (type(p) == "table" and next(p) == nil) then
      if type(p) ~= "table" then return nil, ("spec.containers[%d].ports must be an object"):format(i) end
      local list = p[1] and p or { p }
      for j, e in ipairs(list) do
        local where = p[1] and ("spec.containers[%d].ports[%d]"):format(i, j) or ("spec.containers[%d].ports"):format(i)
        local key = (type(e) == "table" and is_null(e.target_port, ctx) and not is_null(e.targetPort, ctx))
          and "targetPort" or "target_port"
        local ok, err = add(e, where, key)
        if not ok then return nil, err end
      end
    end
  end
  return out
end

-- Why node port p is reserved, or nil.
local function reserved(p, ctx)
  local own = type(ctx.reserved) == "table" and ctx.reserved[tostring(p)]
  if own then return tostring(own) end
  local below = type(ctx.reserved_below) == "number" and ctx.reserved_below or 1024
  if p < below then
    return ("ports below %d belong to the node's own services (ssh is 22)"):format(below)
  end
end

function N.rules(w, ctx)
  if type(w) ~= "table" then return nil, "the workload must be a table" end
  if type(ctx.address) ~= "string" then return nil, "no address was allocated for this instance" end
  local exps, err = exposures(w, ctx)
  if not exps then return nil, err end
  local rules, mine = {}, {}
  for _, x in ipairs(exps) do
    local why = reserved(x.port, ctx)
    if why then
      return nil, ("%s: node port %d/%s is reserved: %s; expose another port, or allow it in the operator's "
        .. "network policy (--policy-dir/network.lua)"):format(x.where, x.port, x.proto, why)
    end
    local key = x.proto .. "/" .. x.port
    local other = ctx.exposed and ctx.exposed[key]
    if other and other ~= ctx.instance_id then
      return nil, ("%s: port %d/%s is already exposed on this node by instance %s; pick another port or destroy that instance first")
        :format(x.where, x.port, x.proto, tostring(other))
    end
    if mine[key] then
      return nil, ("%s: port %d/%s is exposed twice by this workload (also at %s)"):format(x.where, x.port, x.proto, mine[key])
    end
    mine[key] = x.where
    rules[#rules + 1] = {
      chain = "RIKLET", proto = x.proto, dport = x.port, to = ctx.address .. ":" .. x.target,
      src = ALLOW_SRC, iif = ONLY_IIF, comment = ctx.comment,
    }
  end
  -- A microVM's TAP is its own link (pods share the bridge, covered by infra): forward for it.
  if (ctx.kind or w.kind) == "Function" and ctx.host_if then
    rules[#rules + 1] = { chain = "RIKLET-FORWARD", oif = ctx.host_if, ctstate = "RELATED,ESTABLISHED,DNAT", comment = ctx.comment }
    rules[#rules + 1] = { chain = "RIKLET-FORWARD", iif = ctx.host_if, comment = ctx.comment }
  end
  return rules
end

function N.infra(ctx)
  local r = {}
  if ctx.pod_cidr then
    -- pods reach the outside with the node's address; pod-to-pod stays unmasqueraded
    r[#r + 1] = { chain = "RIKLET-POSTROUTING", src = ctx.pod_cidr, dst = "!" .. ctx.pod_cidr, comment = ctx.comment }
    -- node-local clients of an exposed port (127.0.0.1:PORT) need a source the pod can answer
    r[#r + 1] = { chain = "RIKLET-POSTROUTING", src = "127.0.0.0/8", oif = ctx.bridge, comment = ctx.comment }
    r[#r + 1] = { chain = "RIKLET-FORWARD", oif = ctx.bridge, ctstate = "RELATED,ESTABLISHED,DNAT", comment = ctx.comment }
    r[#r + 1] = { chain = "RIKLET-FORWARD", iif = ctx.bridge, comment = ctx.comment }
  end
  if ctx.function_cidr then
    r[#r + 1] = { chain = "RIKLET-POSTROUTING", src = ctx.function_cidr, dst = "!" .. ctx.function_cidr, comment = ctx.comment }
    if ctx.tap_prefix then
      r[#r + 1] = { chain = "RIKLET-POSTROUTING", src = "127.0.0.0/8", oif = ctx.tap_prefix .. "+", comment = ctx.comment }
    end
  end
  return r
end

return N
