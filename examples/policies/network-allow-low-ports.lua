-- An operator network policy that lets workloads expose node ports below 1024 (80, 443), which
-- the default refuses (riklet's own ports and the scheduler's stay refused). Copy it to
-- --policy-dir/network.lua.
local N = setmetatable({}, { __index = base })
function N.rules(w, ctx)
  ctx.reserved_below = 0
  return base.rules(w, ctx)
end
return N
