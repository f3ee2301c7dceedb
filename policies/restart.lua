-- restart — what to do when a container of an instance exits on its own.
--
-- decide(w, exit) -> { action = "stop" } | { action = "restart", delay = seconds }
--   w    : { kind, name, restart_policy = "Never" | "OnFailure" | "Always" }
--   exit : { container = name, code = n | nil, signal = n | nil, ran = seconds it ran,
--            restart_count = restarts so far, attempt = restarts in a row that ran less than
--            10 minutes each (0 after a run of 10 minutes or more) }
-- The default follows the workload's restart policy (RIK's default is Never: the instance ends
-- TERMINATED when every container exited 0, else FAILED) with an exponential back-off: 1 s, 2 s,
-- 4 s ... capped at 5 minutes, starting over once a container ran 10 minutes. riklet caps any
-- delay at one hour.
local R = {}

local FIRST, CAP = 1, 300

function R.decide(w, exit)
  local policy = w.restart_policy or "Never"
  local failed = exit.code ~= 0 or exit.signal ~= nil
  if policy == "Always" or (policy == "OnFailure" and failed) then
    return { action = "restart", delay = math.min(CAP, FIRST * 2 ^ (exit.attempt or 0)) }
  end
  return { action = "stop" }
end

return R
