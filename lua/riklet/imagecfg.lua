-- riklet.imagecfg — riklet.image's settings and hooks, and the image cache's directories, apart
-- from its code: the agent sets them up at start (a bad path is said then, and what an interrupted
-- pull or unpack left is removed), while riklet.image itself (pulls, unpacks, mounts: ~35 KiB of
-- Lua heap) is loaded by the first create, adoption or image removal (issue 12, idle memory).
--
--   imagecfg.init(cfg) -> true | nil, err      (image.init: see riklet.image)
--   imagecfg.cfg                               the settings riklet.image reads (ready once init ran)
--   imagecfg.on_pull(ok, seconds)              set by the metrics (riklet_image_pulls_total, pull
--                                              duration); riklet.image calls it after each pull
local core = require "riklet.core"
local fs = require "riklet.fs"

local M = {}

local cfg = {
  skopeo = "skopeo", umoci = "umoci", insecure = {}, pull_timeout = 600, unpack_timeout = 600,
}
M.cfg = cfg

local function log(level, fmt, ...) core.log(level, "image", fmt:format(...)) end

function M.init(config)
  config = config or {}
  local paths = config.paths
  if not paths then
    local s = config.state_dir or "/var/lib/riklet"
    paths = { images = s .. "/images", rootfs = s .. "/rootfs" }
  end
  cfg.images, cfg.rootfs = paths.images, paths.rootfs
  cfg.state = paths.state or config.state_dir
  cfg.skopeo = config.skopeo or cfg.skopeo
  cfg.umoci = config.umoci or cfg.umoci
  cfg.insecure = config.insecure_registries or {}
  cfg.pull_timeout = config.pull_timeout or cfg.pull_timeout
  cfg.authfile = config.auth_file or config.registry_authfile
  cfg.local_dirs = config.local_image_dirs or {}
  for _, d in ipairs({ cfg.images, cfg.rootfs }) do
    if d:sub(1, 1) ~= "/" or d:find("[,:\\]") then
      return nil, ("image directory %q must be an absolute path without ',' ':' or '\\'"):format(d)
    end
    local ok, err = fs.mkdir_p(d, "0700")
    if not ok then return nil, "cannot create the image cache: " .. err end
  end
  -- A crash during an unpack or a first pull leaves a ".tmp-*" directory: never used, remove it.
  for _, d in ipairs({ cfg.images, cfg.rootfs }) do
    for _, name in ipairs(fs.list(d) or {}) do
      if name:sub(1, 5) == ".tmp-" then
        local ok, err = fs.rm_rf(d .. "/" .. name)
        if ok then log("info", "removed %s/%s left by an interrupted pull or unpack", d, name)
        else log("warn", "cannot remove leftover %s/%s: %s", d, name, err) end
      end
    end
  end
  cfg.ready = true
  return true
end

return M
