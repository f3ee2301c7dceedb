-- admission — accept, reject or amend a workload before riklet runs it.
--
-- admit(w, ctx) -> workload | nil, reason
--   w   : the workload, already validated by riklet (riklet.workload; plain data, no JSON null):
--         { kind, name, replicas, restart_policy, grace_period,
--           containers = { { name, image, image_ref = {registry, repository, tag, digest, ...},
--                            command, args, working_dir, env = { {name, value} },
--                            ports = { {port, target_port, protocol} }, mounts, limits } },
--           ["function"] = { rootfs, exposure } }
--   ctx : { limits = riklet's caps (containers, env, name, ...) }
-- This policy does not define what is valid: riklet checked the workload before, and checks what
-- this returns again (names, images, env, ports, unknown fields), so an amended workload is held
-- to the same rules. Reject with a reason that says what and why, e.g.
--   if w.containers and #w.containers > 4 then return nil, "at most 4 containers per Pod here" end
-- or amend, e.g. w.restart_policy = "OnFailure".
local A = {}

function A.admit(w, ctx)
  return w
end

return A
