-- riklet.vmmproc — what the VM backends (riklet.vmm.*) share about their VMM processes.
local fs = require "riklet.fs"

local M = {}

-- M.find(instances_dir, flag, file_pattern) -> array of { pid, id, path }: the processes whose
-- command line has FLAG followed by INSTANCES_DIR/ID/FILE, FILE matching file_pattern (a Lua
-- pattern, anchored at both ends): the VMMs riklet started for instances there (by that path).
function M.find(instances_dir, flag, file_pattern)
  local out, prefix = {}, instances_dir .. "/"
  for _, name in ipairs(fs.list("/proc") or {}) do
    local pid = name:match("^%d+$") and tonumber(name)
    local cmd = pid and fs.read("/proc/" .. name .. "/cmdline", 65536)
    -- (every process of the node is read at boot: split only a VMM's that names the directory)
    if cmd and cmd:find(prefix, 1, true) and cmd:find(flag, 1, true) then
      local args = {}
      for a in cmd:gmatch("[^%z]+") do args[#args + 1] = a end
      for i = 1, #args - 1 do
        local id = args[i] == flag and args[i + 1]:sub(1, #prefix) == prefix
          and args[i + 1]:sub(#prefix + 1):match("^([^/]+)/" .. file_pattern .. "$")
        if id then out[#out + 1] = { pid = pid, id = id, path = args[i + 1] } end
      end
    end
  end
  return out
end

return M
