-- riklet.vmmproc — what the VM backends (riklet.vmm.*) share about their VMM processes.
local fs = require "riklet.fs"
local procscan = require "riklet.procscan"

local M = {}

-- M.find(instances_dir, flag, file_pattern) -> array of { pid, id, path }: the processes whose
-- command line has FLAG followed by INSTANCES_DIR/ID/FILE, FILE matching file_pattern (a Lua
-- pattern, anchored at both ends): the VMMs riklet started for instances there (by that path).
-- The processes come from riklet.procscan (at boot, the listing the conmon search read too); the
-- command line of each match is read again here, so what the caller gets (and reads next: the
-- start time) is as fresh as a listing of its own.
function M.find(instances_dir, flag, file_pattern)
  local out, prefix = {}, instances_dir .. "/"
  local function matches(pid, cmd)
    local found = {}
    -- (every process of the node is read at boot: split only a VMM's that names the directory)
    if cmd and cmd:find(prefix, 1, true) and cmd:find(flag, 1, true) then
      local args = {}
      for a in cmd:gmatch("[^%z]+") do args[#args + 1] = a end
      for i = 1, #args - 1 do
        local id = args[i] == flag and args[i + 1]:sub(1, #prefix) == prefix
          and args[i + 1]:sub(#prefix + 1):match("^([^/]+)/" .. file_pattern .. "$")
        if id then found[#found + 1] = { pid = pid, id = id, path = args[i + 1] } end
      end
    end
    return found
  end
  for _, p in ipairs(procscan.cmdlines()) do
    -- (and runs as riklet's user: anyone can write such a command line, procscan.same_user)
    if #matches(p.pid, p.cmd) > 0 and procscan.same_user(p.pid) then
      for _, m in ipairs(matches(p.pid, fs.read("/proc/" .. p.pid .. "/cmdline", 65536))) do out[#out + 1] = m end
    end
  end
  return out
end

return M
