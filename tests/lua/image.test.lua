-- riklet.image against real tools: a loopback docker-registry (tests/lib/registry.sh), a busybox
-- image built offline with umoci and pushed with skopeo (tests/lib/mkimage.sh), pulls with skopeo,
-- unpacks with umoci, per-instance overlays. Failures must say what to do and leave nothing behind.
local T = require "riklet.testlib"
local task = require "riklet.task"
local proc = require "riklet.proc"
local fs = require "riklet.fs"
local core = require "riklet.core"


if core.getuid() ~= 0 then T.skip_all("needs root (overlay mounts, umoci unpack as root)") end
local pkgs = { skopeo = "skopeo", umoci = "umoci", ["docker-registry"] = "docker-registry", busybox = "busybox-static",
  jq = "jq", curl = "curl", flock = "util-linux", bash = "bash" }
T.need_cmds(pkgs)

local src = debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/[^/]+$") or "."
local lib = src .. "/tests/lib"
local tmp = ("/tmp/riklet-image-test-%d"):format(core.getpid())
fs.rm_rf(tmp)
assert(fs.mkdir_p(tmp, "0700"))

-- The fixture: a bash that starts the registry, builds and pushes two images, prints READY and
-- waits; SIGTERM runs its cleanup stack (registry stopped, its storage removed).
local fixture_out = tmp .. "/fixture.out"
local script = [[
set -e
source "$1/common.sh"; source "$1/registry.sh"; source "$1/mkimage.sh"
registry_start
mkimage --cmd '["sh","-c","echo hello from v1"]' "$2/layout:v1" >&2
mkimage --cmd '["sh","-c","echo hello from v3"]' "$2/layout:v3" >&2
mkimage_push "$2/layout:v1" "$REGISTRY/riklet/bb:v1"
mkimage_push "$2/layout:v1" "$REGISTRY/riklet/bb:v2"
mkimage_push "$2/layout:v3" "$REGISTRY/riklet/bb:v3"
echo "REGISTRY=$REGISTRY"
echo READY
# (killed by the cleanup stack: a sleep left behind keeps every fd it inherited, e.g. the
# benchmarks' flock on /work/wt/heavy.lock, held an hour after the test ended)
sleep 3600 &
on_exit "kill $!"
wait $!
]]
local fixture = assert(proc.spawn({ "bash", "-c", script, "fixture", lib, tmp },
  { stdout = fixture_out, stderr = tmp .. "/fixture.err" }))
local function fixture_stop()
  if not fixture:exited() then
    fixture:kill(15)
    fixture:wait()
  end
end
local ready = T.wait_for(180, function()
  return fixture:exited() or (fs.read(fixture_out) or ""):find("READY", 1, true)
end, 0.2)
local registry = (fs.read(fixture_out) or ""):match("REGISTRY=(%S+)")
if not (ready and registry) then
  T.diag(fs.tail(tmp .. "/fixture.err", 3000) or "")
  fixture_stop()
  fs.rm_rf(tmp)
  T.ok(false, "fixture: registry and images ready")
  return
end
T.ok(true, "fixture: registry on " .. registry .. " with riklet/bb:v1, v2 (same image) and v3")

local image = require "riklet.image"
local state = tmp .. "/state"
-- a leftover from a "crash" during an unpack must be swept by init
assert(fs.mkdir_p(state .. "/rootfs/.tmp-sha256_dead-1-1/rootfs", "0700"))
T.ok(image.init({ state_dir = state, insecure_registries = { registry } }), "image.init")
T.ok(not fs.exists(state .. "/rootfs/.tmp-sha256_dead-1-1"), "init removed a half-unpacked leftover")

local function listing(dir)
  return table.concat(fs.list(dir) or {}, ",")
end

-- 1. pull + unpack
local img, err = image.ensure(registry .. "/riklet/bb:v1")
T.ok(img, "ensure v1: " .. tostring(err))
img = img or {}
T.ok(image.digest_valid(img.digest), "digest is sha256: " .. tostring(img.digest))
T.is(img.rootfs, state .. "/rootfs/" .. (img.digest or ""):gsub(":", "_") .. "/rootfs", "rootfs under rootfs/sha256_<hex>")
T.ok(fs.exists((img.rootfs or "") .. "/bin/busybox"), "busybox unpacked")
T.ok(fs.exists(img.config or "/nonexistent"), "config.json template present")
T.is(image.stats.pulls, 1, "one pull")
T.is(image.stats.unpacks, 1, "one unpack")
local st1 = fs.stat(img.rootfs or "/nonexistent") or {}

-- 2. cached: no pull, no unpack, same directory (inode and mtime)
local img2, err2 = image.ensure(registry .. "/riklet/bb:v1")
T.ok(img2 and img2.rootfs == img.rootfs, "second ensure gives the same rootfs: " .. tostring(err2))
local st2 = fs.stat(img.rootfs or "/nonexistent") or {}
T.ok(st1.ino and st1.ino == st2.ino and st1.mtime == st2.mtime, "same inode and mtime: not unpacked again")
T.is(image.stats.pulls, 1, "no second pull for a local tag")
T.is(image.stats.unpacks, 1, "no second unpack")

-- 3. the same image under another tag: pulled, not unpacked again (same digest)
local img_v2 = image.ensure(registry .. "/riklet/bb:v2")
T.ok(img_v2 and img_v2.digest == img.digest and img_v2.rootfs == img.rootfs, "v2 (same manifest) shares the unpacked rootfs")
T.is(image.stats.unpacks, 1, "still one unpack")

-- 4. concurrent ensures of a new image coalesce into one pull and one unpack
local pulls0, unpacks0 = image.stats.pulls, image.stats.unpacks
local q = task.queue()
for i = 1, 4 do
  task.spawn(function()
    local r, e = image.ensure(registry .. "/riklet/bb:v3")
    q:put({ i = i, r = r, e = e })
  end)
end
local got = {}
for _ = 1, 4 do got[#got + 1] = q:get(120) end
local same = #got == 4
for _, g in ipairs(got) do
  if not (g.r and g.r.rootfs == got[1].r.rootfs) then same = false end
end
T.ok(same, "4 concurrent ensures of v3 all succeed with one rootfs")
T.is(image.stats.pulls - pulls0, 1, "... after one pull")
T.is(image.stats.unpacks - unpacks0, 1, "... and one unpack")
T.ok(got[1] and got[1].r and got[1].r.digest ~= img.digest, "v3 is a different image")

-- 5. pull = "always" pulls again but does not unpack again
local a, aerr = image.ensure(registry .. "/riklet/bb:v1", { pull = "always" })
T.ok(a and a.rootfs == img.rootfs, "pull=always: same rootfs " .. tostring(aerr))
T.is(image.stats.pulls - pulls0, 2, "pull=always pulled")
T.is(image.stats.unpacks - unpacks0, 1, "pull=always did not unpack")

-- 6. an oci: layout source (offline)
local o, oerr = image.ensure("oci:" .. tmp .. "/layout:v3")
T.ok(o and image.digest_valid(o.digest) and fs.exists(o.rootfs .. "/bin/busybox"), "oci: source: " .. tostring(oerr))

-- 6b. a tag that moves: pull=always follows it, and the old image's blobs leave the layout
local function push(tag, as)
  local res = proc.run({ "skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
    "oci:" .. tmp .. "/layout:" .. tag, "docker://" .. registry .. "/riklet/bb:" .. as }, { timeout = 60 })
  return res and res.code == 0
end
T.ok(push("v1", "moving"), "push v1 as :moving")
local m1 = image.ensure(registry .. "/riklet/bb:moving") or {}
T.ok(push("v3", "moving"), "push v3 over :moving")
local m2 = image.ensure(registry .. "/riklet/bb:moving") or {}
T.is(m2.digest, m1.digest, "pull=missing keeps the local copy of a moved tag")
m2 = image.ensure(registry .. "/riklet/bb:moving", { pull = "always" }) or {}
T.is(m2.digest, got[1] and got[1].r and got[1].r.digest, "pull=always follows the moved tag")
local mkey = image.parse_ref(registry .. "/riklet/bb:moving").key
T.ok(m1.digest and not fs.exists(state .. "/images/" .. mkey .. "/blobs/sha256/" .. m1.digest:sub(8)),
  "the old manifest was garbage-collected from the layout")

-- 7. failures: clear messages, nothing left behind
local before_images, before_rootfs = listing(state .. "/images"), listing(state .. "/rootfs")
local function fails(ref, pattern, what, opts)
  local r, e = image.ensure(ref, opts)
  T.ok(r == nil and type(e) == "string" and e:find(pattern) ~= nil, what .. ": " .. tostring(e))
end
fails(registry .. "/riklet/bb:nope", "not found in registry", "missing tag")
fails(registry .. "/riklet/absent:v1", "not found in registry", "missing repository")
fails("127.0.0.1:1/riklet/bb:v1", "unreachable", "registry down", { insecure_registries = { "127.0.0.1:1" } })
fails(registry .. "/riklet/bb:v1@sha256:" .. ("0"):rep(64), "not found", "unknown digest")
fails("Bad/Name", "invalid image reference: .*lowercase", "invalid reference")
fails("../../etc", "invalid image reference", "path traversal")
fails("oci:" .. tmp .. "/nolayout:v1", "no OCI layout at .*nolayout", "missing oci layout")
fails("oci:" .. tmp .. "/layout:nope", "tag 'nope' not found", "missing tag in an oci layout")
fails(registry .. "/riklet/bb:v1", "plain HTTP.*insecure", "HTTP registry not listed as insecure",
  { insecure_registries = {}, pull = "always" })
T.is(listing(state .. "/images"), before_images, "no layout left behind by failed pulls")
T.is(listing(state .. "/rootfs"), before_rootfs, "no rootfs left behind")

-- 8. per-instance overlay
local inst = tmp .. "/instances/i1/c1"
local target, merr = image.mount_rootfs(inst, img)
T.is(target, inst .. "/rootfs", "mount_rootfs: " .. tostring(merr))
T.ok(image.is_mountpoint(inst .. "/rootfs"), "overlay mounted")
T.ok(fs.write_atomic(inst .. "/rootfs/written", "x"), "write into the instance rootfs")
T.ok(fs.exists(inst .. "/upper/written") and not fs.exists(img.rootfs .. "/written"), "writes land in upper, shared rootfs untouched")
T.is(image.mount_rootfs(inst, img), inst .. "/rootfs", "mounting again is a no-op")
local inst2 = tmp .. "/instances/i2/c1"
T.ok(image.mount_rootfs(inst2, img.rootfs), "a second instance on the same image")
T.ok(not fs.exists(inst2 .. "/rootfs/written"), "instances do not share writes")
-- 9. pruning: the rootfs under a mounted overlay stays, an unused one goes, and comes back
local v3 = got[1] and got[1].r or {}
local removed, perr = image.prune({})
T.ok(removed, "prune: " .. tostring(perr))
T.ok(fs.exists(img.rootfs), "prune keeps a rootfs that is the lower layer of a mounted overlay")
T.ok(v3.bundle and not fs.exists(v3.bundle), "prune removed the unused v3 rootfs")
local unpacks1 = image.stats.unpacks
local v3b = image.ensure(registry .. "/riklet/bb:v3")
T.ok(v3b and fs.exists(v3b.rootfs .. "/bin/busybox") and image.stats.unpacks == unpacks1 + 1, "v3 unpacked again after prune")
T.ok(image.umount_rootfs(inst), "umount i1")
T.ok(image.umount_rootfs(inst2), "umount i2")
T.ok(not image.is_mountpoint(inst .. "/rootfs"), "no longer mounted")
T.ok(image.umount_rootfs(inst), "umount again is fine")
local kept = {}
kept[img.digest] = true
removed = image.prune(kept, { layouts = true })
T.ok(removed and fs.exists(img.rootfs) and not fs.exists(v3b.bundle), "prune(keep) keeps the kept digest only")
T.ok(#(fs.list(state .. "/images") or {}) == 2, "prune with layouts keeps the v1 and v2 layouts (same digest): " ..
  table.concat(fs.list(state .. "/images") or {}, " "))
local r, e = image.mount_rootfs("relative/dir", img)
T.ok(r == nil and e:find("absolute"), "relative instance dir refused: " .. tostring(e))
r, e = image.mount_rootfs(tmp .. "/a,lowerdir=/etc", img)
T.ok(r == nil and e:find("','"), "option injection refused: " .. tostring(e))

fixture_stop()
-- nothing of the fixture still runs: a process holding its output file open is one it left behind
local fds = proc.run({ "find", "/proc", "-mindepth", "3", "-maxdepth", "3", "-path", "/proc/[0-9]*/fd/*", "-lname", fixture_out },
  { timeout = 60 })
T.ok(fds and (fds.stdout or "") == "", "fixture stopped: no process of it left: " .. tostring(fds and fds.stdout))
-- 10. registry stopped: a cached image still works offline, a new one fails clearly
local c1 = image.ensure(registry .. "/riklet/bb:v1")
T.ok(c1 and c1.rootfs == img.rootfs, "cached image works with the registry down")
fails(registry .. "/riklet/bb:v9", "unreachable", "registry stopped")

local ok, rerr = fs.rm_rf(tmp)
T.ok(ok, "cleanup " .. tostring(rerr))
