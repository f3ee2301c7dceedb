-- The image calls of the Pod create path that wait on the disk never stall the loop: the overlay
-- mount (mount(2) of overlayfs) and the index.json rewrite of a layout run on the worker pool while
-- the calling task waits. RIKLET_TEST_SLOW_IMAGE_MS makes each of them sleep inside its job: the
-- test runs itself again with it set and checks that another task kept ticking all along (on the
-- loop thread, the sleep would be one long gap).
local T = require "riklet.testlib"
local core = require "riklet.core"
local fs = require "riklet.fs"

if core.getuid() ~= 0 then T.skip_all("needs root (overlay mounts)") end

local SLOW_MS = 800
if not os.getenv("RIKLET_TEST_SLOW_IMAGE_MS") then
  T.run_nested({ "env", "RIKLET_TEST_SLOW_IMAGE_MS=" .. SLOW_MS }, "with RIKLET_TEST_SLOW_IMAGE_MS")
  return
end

local image = require "riklet.image"
local c = require "riklet.image.c"
local tmp = ("/tmp/riklet-image-offload-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp .. "/lower/etc", "0755"))
assert(fs.write_atomic(tmp .. "/lower/etc/hostname", "lower\n"))

local ticking = T.ticking

local slow = SLOW_MS / 1000
-- 1. overlay mount
local inst = tmp .. "/inst"
local target, err, took, ticks, gap = ticking(function() return image.mount_rootfs(inst, tmp .. "/lower") end)
T.is(target, inst .. "/rootfs", "mount_rootfs on the worker pool: " .. tostring(err))
T.ok(c.is_mountpoint(inst .. "/rootfs") and fs.read(inst .. "/rootfs/etc/hostname") == "lower\n",
  "the overlay is mounted and shows the lower layer")
T.ok(took >= slow * 0.9, ("the mount job took the injected %d ms (%.2f s)"):format(SLOW_MS, took))
T.ok(ticks >= 20 and gap < slow / 2,
  ("the loop kept turning during the mount: %d ticks, longest gap %.0f ms"):format(ticks, gap * 1000))

-- a failing mount still says why, from the worker
local bad, berr = ticking(function() return c.overlay_mount(tmp .. "/missing", inst .. "/u2", inst .. "/w2", inst .. "/r2") end)
T.ok(bad == nil and tostring(berr):find(tmp .. "/missing", 1, true), "a failed mount returns nil, why: " .. tostring(berr))
T.ok(image.umount_rootfs(inst), "umount")
T.ok(not c.is_mountpoint(inst .. "/rootfs"), "unmounted")

-- 2. the layout's index.json rewrite (fsynced): an untagged descriptor dropped
local layout = tmp .. "/layout"
assert(fs.mkdir_p(layout))
local d1, d2 = "sha256:" .. ("a"):rep(64), "sha256:" .. ("b"):rep(64)
assert(fs.write_atomic(layout .. "/index.json", ([[{"schemaVersion":2,"manifests":[
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,
  "annotations":{"org.opencontainers.image.ref.name":"image"}},
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1}]}]]):format(d1, d2)))
local n, derr
n, derr, took, ticks, gap = ticking(function() return c.layout_drop_untagged(layout) end)
T.is(n, 1, "layout_drop_untagged on the worker pool dropped the untagged descriptor: " .. tostring(derr))
local idx = fs.read(layout .. "/index.json") or ""
T.ok(idx:find(d1, 1, true) and not idx:find(d2, 1, true), "index.json keeps the tagged one only")
T.ok(took >= slow * 0.9, ("the rewrite job took the injected %d ms (%.2f s)"):format(SLOW_MS, took))
T.ok(ticks >= 20 and gap < slow / 2,
  ("the loop kept turning during the rewrite: %d ticks, longest gap %.0f ms"):format(ticks, gap * 1000))

local st = core.loop_stats()
T.ok(st.lag_max_ms < SLOW_MS / 2, ("core.loop_stats: the longest loop turn (%.0f ms) does not hold either job"):format(st.lag_max_ms))
fs.rm_rf(tmp)
