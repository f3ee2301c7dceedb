-- riklet.limits — the caps on a workload definition (riklet.workload validates with them; the
-- store, standalone mode and `riklet run` read the definition cap) and the plain-array test the
-- store shares with it: apart from riklet.workload, so that an idle agent does not keep the
-- validator's code (issue 12, idle memory: it is loaded by the first create or adoption).
local M = {}

M.workload = {
  manifest_bytes = 1024 * 1024, -- the definition text (the one cap: store, standalone, `riklet run` use it)
  depth = 32,                   -- JSON nesting (a RIK Pod needs 7)
  name = 63,                    -- workload and container names
  containers = 32,              -- per Pod
  env = 256,                    -- entries per container
  env_value = 32768,            -- bytes
  ports = 64,                   -- per container
  argv = 256,                   -- command + args entries
  arg = 4096,                   -- bytes per command/args entry, working_dir, mount destination
  mounts = 32,                  -- per container
  grace_period = 3600,          -- seconds
  url = 2048,                   -- Function rootfs URL
}

-- A plain array (keys 1..n, nothing else; {} counts as one)? The store checks records with it.
function M.is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

return M
