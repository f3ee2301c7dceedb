-- riklet.vmmproc — what the VM backends (riklet.vmm.*) share about their VMM processes.
local fs = require "riklet.fs"
local procscan = require "riklet.procscan"

local M = {}

-- M.find(instances_dir, flag, file_pattern) -> array of { pid, id, path }: the processes whose
-- command line has FLAG followed by INSTANCES_DIR/ID/FILE, FILE matching file_pattern (a Lua
-- pattern, anchored at both ends): the VMMs riklet started for instances there (by that path).
-- The processes come from riklet.procscan (at boot, the listing the conmon search read too): a
-- candidate there (its command line names the directory and the flag) has its command line read
-- again, and only that one is split and matched, so what the caller gets (and reads next: the
-- start time) is as fresh as a listing of its own.
function M.find(instances_dir, flag, file_pattern)
  local out, prefix, flagarg = {}, instances_dir .. "/", "\0" .. flag .. "\0"
  local tail = "^([^/]+)/" .. file_pattern .. "$"
  for _, p in ipairs(procscan.cmdlines()) do
    -- (every process of the node is read at boot: read again and split only a VMM's that names
    -- the directory and has FLAG as a whole argument: as a substring, qemu's -pidfile is in every
    -- conmon's --conmon-pidfile=<instances dir>/..., and each of 1,000 conmons was read again and
    -- its owner checked at every boot)
    local cmd = p.cmd:find(prefix, 1, true) and p.cmd:find(flagarg, 1, true)
      and fs.read("/proc/" .. p.pid .. "/cmdline", 65536)
    -- (and runs as riklet's user: anyone can write such a command line, procscan.same_user)
    if cmd and not procscan.same_user(p.pid) then cmd = nil end
    if cmd then
      local args = {}
      for a in cmd:gmatch("[^%z]+") do args[#args + 1] = a end
      for i = 1, #args - 1 do
        local id = args[i] == flag and args[i + 1]:sub(1, #prefix) == prefix
          and args[i + 1]:sub(#prefix + 1):match(tail)
        if id then out[#out + 1] = { pid = p.pid, id = id, path = args[i + 1] } end
      end
    end
  end
  return out
end

return M
