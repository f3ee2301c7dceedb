-- file:// Function root filesystems by front-end (review finding): a standalone manifest or
-- `riklet run` may name any file, but the scheduler (any other front-end) only one that resolves
-- inside --local-image-dirs, as for oci: images. Before, a scheduled Function with
-- rootfs file:///STATE/instances/OTHER/base.img booted another tenant's disk (riklet copies it as
-- root and serves it to the guest), and any ext4 file on the node was readable the same way.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local core = require "riklet.core"
local image = require "riklet.image"
local W = require "riklet.workload"
local json = require "riklet.json"

local root = ("/tmp/riklet-rootfssrc-%d"):format(core.getpid())
fs.rm_rf(root)
local state = root .. "/state"
assert(fs.mkdir_p(root .. "/allowed/sub", "0755"))
assert(fs.mkdir_p(state .. "/instances/other", "0755"))
assert(fs.write_atomic(root .. "/allowed/sub/fn.img", "x"))
assert(fs.write_atomic(state .. "/instances/other/base.img", "x"))
assert(os.execute(("ln -s %s/instances/other/base.img %s/allowed/link.img"):format(state, root)) == 0)

local function fnw(url)
  return assert(W.from_rik(assert(json.encode({ apiVersion = "v1", kind = "Function", name = "f",
    spec = { containers = json.array({}), ["function"] = { execution = { rootfs = url } } } }))))
end

assert(image.init({ state_dir = state }))
local other = "file://" .. state .. "/instances/other/base.img"
local m, err = W.for_source(fnw(other), "scheduler")
T.ok(not m and tostring(err):find("file:// root filesystems from the scheduler are refused; list the directory with %-%-local%-image%-dirs"),
  "another tenant's disk as a rootfs from the scheduler, no --local-image-dirs: refused -> " .. tostring(err))
m, err = W.for_source(fnw("file:///etc/passwd"), "interlink")
T.ok(not m, "any node file from another network front-end: refused -> " .. tostring(err))
m = W.for_source(fnw(other), "standalone:/etc/riklet/f.json")
T.ok(m and m["function"].rootfs == other, "a standalone manifest may name any file")
m = W.for_source(fnw("http://127.0.0.1:8000/x.ext4"), "scheduler")
T.ok(m and m["function"].rootfs == "http://127.0.0.1:8000/x.ext4", "an http:// rootfs from the scheduler is untouched")

assert(image.init({ state_dir = state, local_image_dirs = { root .. "/allowed" } }))
m, err = W.for_source(fnw("file://" .. root .. "/allowed/sub/fn.img"), "scheduler")
T.is(m and m["function"].rootfs, "file://" .. root .. "/allowed/sub/fn.img", "inside a listed dir: accepted " .. tostring(err))
m, err = W.for_source(fnw("file://" .. root .. "/allowed/link.img"), "scheduler")
T.ok(not m and tostring(err):find(state .. "/instances/other/base.img", 1, true),
  "a symbolic link out of the listed dir into STATE: refused, naming the real path -> " .. tostring(err))
m, err = W.for_source(fnw(other), "scheduler")
T.ok(not m and tostring(err):find("not inside %-%-local%-image%-dirs"), "outside the listed dirs: refused -> " .. tostring(err))
m, err = W.for_source(fnw("file://" .. root .. "/allowed/nothere.img"), "scheduler")
T.ok(not m and tostring(err):find("cannot resolve"), "a file that does not exist: refused -> " .. tostring(err))

fs.rm_rf(root)
T.done()
