-- network-one-source — exposed ports answer only to one source CIDR (e.g. the load balancers'
-- subnet); other sources see them closed. Use: copy to <policy-dir>/network.lua, set ALLOW_SRC,
-- start riklet with --policy-dir. `base` is riklet's default network policy (policies/network.lua).
local ALLOW_SRC = "192.168.50.0/24"

local N = setmetatable({}, { __index = base })

function N.rules(w, ctx)
  local rules, err = base.rules(w, ctx)
  if not rules then return nil, err end
  for _, r in ipairs(rules) do
    if r.chain == "RIKLET" then r.src = ALLOW_SRC end
  end
  return rules
end

return N
