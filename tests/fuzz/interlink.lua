-- fuzz target "interlink": one input as the body of each interLink request, through the parsing and
-- mapping lua/riklet/interlink.lua runs for it (no instance created, no socket opened):
--   /create   JSON decoding, object or one-element array, pod identity, workload.from_k8s, the JSON
--             definition built from it and workload.from_rik (validation) on it
--   /status   the list of v1.Pod and each pod's PodStatus for a pod unknown here, JSON-encoded as sent
--   /delete   the pod identity and grace period
--   /getLogs  the LogStruct and its Opts (SinceSeconds, SinceTime, Tail, Bytes, Timestamps)
-- Each must answer nil and a reason, never raise.
local I = require "riklet.interlink"
local json = require "riklet.json"
local W = require "riklet.workload"

local function unknown() return nil end

return function(data)
  local info = { body = data, headers = {} }
  -- /create
  local rpd, p, perr = I.create_request(info)
  if rpd == nil then
    assert(p == 400 and type(perr) == "string" and #perr > 0, "create refused without a 400 and a reason")
  else
    assert(type(p) == "table" and I.pod_id(p.uid) == p.id, "create: a pod ident without its id")
    local def, notes = I.create_definition(rpd, p)
    if def == nil then
      assert(type(notes) == "string" and #notes > 0, "create: refused without a reason")
    else
      assert(type(notes) == "table", "create: no notes list")
      local m, err = W.from_rik(def)
      assert(m, "create: the definition built does not validate again: " .. tostring(err))
    end
  end
  -- /status
  local pods, err = I.status_request(info)
  if pods == nil then
    assert(type(err) == "string" and #err > 0, "status refused without a reason")
  else
    local out = json.array({})
    for _, pod in ipairs(pods) do
      local st, serr = I.pod_status(pod, unknown)
      if not st then
        assert(type(serr) == "string" and #serr > 0, "status: a pod refused without a reason")
        break
      end
      out[#out + 1] = st
    end
    local text, eerr = json.encode(out)
    assert(text, "status: the answer cannot be encoded: " .. tostring(eerr))
  end
  -- /delete
  local dp, grace = I.delete_request(info)
  if dp == nil then
    assert(type(grace) == "string" and #grace > 0, "delete refused without a reason")
  else
    assert(grace == false or grace == nil or type(grace) == "number", "delete: grace is not a number")
    local _ = grace and ("(grace period %g s)"):format(grace)
  end
  -- /getLogs
  local q, qerr = I.logs_request(info)
  if q == nil then
    assert(type(qerr) == "string" and #qerr > 0, "getLogs refused without a reason")
  else
    local _ = I.pod_id(q.PodUID), tostring(q.PodName or q.PodUID), tostring(q.ContainerName)
    local o, oerr = I.log_options(type(q.Opts) == "table" and q.Opts or {})
    assert(o or (type(oerr) == "string" and #oerr > 0), "getLogs: Opts refused without a reason")
  end
end
