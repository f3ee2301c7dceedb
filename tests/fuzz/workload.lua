-- fuzz target "workload": a workload definition as it arrives from a front-end (scheduler CREATE,
-- standalone manifest): JSON decoding (bindings/ljson.c) and validation (workload.lua). It must
-- return a model or nil and a reason, never raise; a model it returns must validate again.
local W = require "riklet.workload"
return function(data)
  local m, err = W.from_rik(data)
  if m == nil then
    assert(type(err) == "string" and #err > 0, "refused without a reason")
  else
    local again, err2 = W.validate(m)
    assert(again, "a validated model does not validate again: " .. tostring(err2))
  end
end
