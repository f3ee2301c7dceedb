-- restart — what to do when an instance's container exits on its own.
--
-- decide(w, exit, attempts) -> { action = "stop" } | { action = "restart", delay = seconds }
--   w        : the admitted workload
--   exit     : { container = name, code = n | nil, signal = n | nil }
--   attempts : restarts done so far for this instance
-- The default follows RIK: never restart; the instance ends TERMINATED (exit 0) or FAILED.
local R = {}

function R.decide(w, exit, attempts)
  return { action = "stop" }
end

return R
