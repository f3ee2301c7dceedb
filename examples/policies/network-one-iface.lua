-- network-one-iface — exposed ports answer only on one interface (the public one); traffic coming
-- in elsewhere is not translated. Use: copy to <policy-dir>/network.lua, set ONLY_IIF, start riklet
-- with --policy-dir. `base` is riklet's default network policy (policies/network.lua).
local ONLY_IIF = "eth0" -- "eth+" would match every eth*

local N = setmetatable({}, { __index = base })

function N.rules(w, ctx)
  local rules, err = base.rules(w, ctx)
  if not rules then return nil, err end
  for _, r in ipairs(rules) do
    if r.chain == "RIKLET" then r.iif = ONLY_IIF end
  end
  return rules
end

return N
