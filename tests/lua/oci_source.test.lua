-- oci:/path image references by front-end: standalone manifests and `riklet run` may name any
-- layout; the scheduler (any other front-end) only one inside --local-image-dirs, symbolic links
-- resolved, and never another tenant's pulled image under STATE/images.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local core = require "riklet.core"
local image = require "riklet.image"
local W = require "riklet.workload"
local json = require "riklet.json"

local root = ("/tmp/riklet-ocisrc-%d"):format(core.getpid())
fs.rm_rf(root)
local state = root .. "/state"
assert(fs.mkdir_p(root .. "/allowed/sub/layout", "0755"))
assert(fs.mkdir_p(root .. "/elsewhere/layout", "0755"))
assert(fs.mkdir_p(state .. "/images/secret", "0755"))
assert(os.execute(("ln -s %s/elsewhere/layout %s/allowed/link"):format(root, root)) == 0)
assert(os.execute(("ln -s %s/state/images %s/allowed/imgs"):format(root, root)) == 0)

local function w(img)
  return assert(W.from_rik(assert(json.encode({ apiVersion = "v1", kind = "Pod", name = "p",
    spec = { containers = { { name = "c", image = img } } } }))))
end

-- no --local-image-dirs
assert(image.init({ state_dir = state }))
local m, err = W.for_source(w("oci:" .. root .. "/allowed/sub/layout:latest"), "scheduler")
T.ok(not m and err:find("oci: references from the scheduler are refused; list the directory with %-%-local%-image%-dirs"),
  "from the scheduler with no --local-image-dirs: refused -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. state .. "/images/secret:latest"), "scheduler")
T.ok(not m, "another tenant's pulled image under STATE/images: refused -> " .. tostring(err))
m = W.for_source(w("oci:" .. root .. "/elsewhere/layout:latest"), "standalone:/etc/riklet/x.json")
T.ok(m and m.containers[1].image == "oci:" .. root .. "/elsewhere/layout:latest", "a standalone manifest may name any layout")
m = W.for_source(w("oci:" .. root .. "/elsewhere/layout:latest"), "run:/root/x.json")
T.ok(m, "riklet run may name any layout")
m = W.for_source(w("busybox:latest"), "scheduler")
T.ok(m and m.containers[1].image == "busybox:latest", "a registry image from the scheduler is untouched")
m, err = W.for_source(w("oci:" .. root .. "/allowed/sub/layout:latest"), "interlink")
T.ok(not m and err:find("from the interlink are refused"), "another network front-end: refused too -> " .. tostring(err))

-- with --local-image-dirs
assert(image.init({ state_dir = state, local_image_dirs = { root .. "/allowed" } }))
m, err = W.for_source(w("oci:" .. root .. "/allowed/sub/layout:v1"), "scheduler")
T.ok(m and m.containers[1].image == "oci:" .. root .. "/allowed/sub/layout:v1", "inside a listed dir: accepted " .. tostring(err))
T.is(m and m.containers[1].image_ref.layout, root .. "/allowed/sub/layout", "... and its parsed ref follows")
m, err = W.for_source(w("oci:" .. root .. "/allowed/link:latest"), "scheduler")
T.ok(not m and err:find("not inside %-%-local%-image%-dirs"), "a symbolic link out of the listed dir: refused -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. root .. "/allowed/imgs/secret:latest"), "scheduler")
T.ok(not m and err:find(state .. "/images/secret", 1, true), "a link into STATE/images: refused, naming the real path -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. root .. "/allowedx/layout:latest"), "scheduler")
T.ok(not m, "a sibling dir sharing the prefix: refused -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. root .. "/allowed/nothere:latest"), "scheduler")
T.ok(not m and err:find("cannot resolve"), "a layout that does not exist: refused -> " .. tostring(err))
local bad, berr = W.from_rik(assert(json.encode({ apiVersion = "v1", kind = "Pod", name = "p",
  spec = { containers = { { name = "c", image = "oci:" .. root .. "/allowed/../elsewhere/layout:latest" } } } })))
T.ok(not bad and berr:find("'%.%.'"), "a path with .. is refused by validation -> " .. tostring(berr))
bad, berr = W.from_rik(assert(json.encode({ apiVersion = "v1", kind = "Pod", name = "p",
  spec = { containers = { { name = "c", image = "oci:relative/layout:latest" } } } })))
T.ok(not bad and berr:find("absolute"), "a relative path is refused -> " .. tostring(berr))

-- a listed dir that holds the state dir, or is a link to it: STATE is still refused, not what is beside it
assert(os.execute(("ln -s %s %s/statelink"):format(state, root)) == 0)
assert(image.init({ state_dir = state, local_image_dirs = { root, root .. "/statelink" } }))
m, err = W.for_source(w("oci:" .. state .. "/images/secret:latest"), "scheduler")
T.ok(not m and tostring(err):find("inside riklet's state directory", 1, true),
  "--local-image-dirs holding STATE: STATE/images still refused -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. root .. "/statelink/images/secret:latest"), "scheduler")
T.ok(not m and tostring(err):find("inside riklet's state directory", 1, true),
  "--local-image-dirs a link to STATE: refused -> " .. tostring(err))
m, err = W.for_source(w("oci:" .. root .. "/elsewhere/layout:latest"), "scheduler")
T.ok(m, "... while a layout beside STATE in the listed dir is accepted " .. tostring(err))
local fm, ferr = image.local_file("file://" .. state .. "/images/secret", "scheduler")
T.ok(not fm and tostring(ferr):find("inside riklet's state directory", 1, true),
  "a file:// rootfs inside STATE: refused too -> " .. tostring(ferr))

fs.rm_rf(root)
T.done()
