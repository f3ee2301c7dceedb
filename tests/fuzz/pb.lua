-- fuzz target "pb": protobuf -> Lua conversion (bindings/lpb.c) of every message riklet receives
-- (worker.InstanceScheduling on Register, google.protobuf.Empty from SendStatusUpdates), then what
-- the scheduler front-end does with an instruction: its definition through workload.from_rik.
-- The other known types are decoded too (cheap, same code). Never raises.
local pb = require "riklet.pb"
local W = require "riklet.workload"
local types = pb.types()
return function(data)
  for _, t in ipairs(types) do
    for _, enums in ipairs({ "name", "number" }) do
      local m, err = pb.decode(t, data, { enums = enums })
      if m == nil then assert(type(err) == "string", "refused without a reason") end
      if m and t == "worker.InstanceScheduling" and enums == "name" then
        assert(type(m.instance_id) == "string" and type(m.definition) == "string", "a proto3 string came out absent")
        local w, werr = W.from_rik(m.definition)
        assert(w or type(werr) == "string", "workload refused without a reason")
      end
    end
  end
end
