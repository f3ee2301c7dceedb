-- rootfs.test.lua — riklet.rootfs against a real HTTP/1.1 server (tests/lib/httpserver.py under
-- /usr/bin/python3): download, 304 revalidation, a changed ETag, 404, a download cut short, the
-- size cap, two concurrent fetches sharing one GET (counted in the server's log), cancellation
-- abandoning the transfer, file:// URLs, and the ext4 check.
local T = require "riklet.testlib"
local fs = require "riklet.fs"
local json = require "riklet.json"
local proc = require "riklet.proc"
local task = require "riklet.task"
local rootfs = require "riklet.rootfs"
local http = require "riklet.http"

local py = "/usr/bin/python3"
if not fs.exists(py) then T.skip_all("needs /usr/bin/python3 (apt-get install python3)") end
T.need_cmds({ ["mkfs.ext4"] = "e2fsprogs" })
local src = os.getenv("RIKLET_SRC_DIR") or debug.getinfo(1, "S").source:match("^@(.*)/tests/lua/") or "."
local tmp = assert(proc.run({ "mktemp", "-d", "/tmp/riklet-rootfs-test.XXXXXX" })).stdout:gsub("%s+$", "")
local www, cache, slog = tmp .. "/www", tmp .. "/cache", tmp .. "/server.log"
assert(fs.mkdir_p(www))
local function sh(cmd)
  local r = proc.run({ "sh", "-c", cmd }, { timeout = 60 })
  assert(r and r.code == 0, cmd .. ": " .. (r and r.stderr or "did not run"))
  return r.stdout
end
sh(("mkdir -p %s/tree/etc && echo guest > %s/tree/etc/hostname && mkfs.ext4 -q -F -d %s/tree %s/a.img 4M"):format(
  tmp, tmp, tmp, www))
sh(("head -c 3000000 /dev/urandom > %s/big.img && echo 'not a filesystem' > %s/text.img"):format(www, www))

local srv = proc.spawn({ py, src .. "/tests/lib/httpserver.py", "--dir", www, "--port-file", tmp .. "/port",
  "--log", slog }, { stderr = tmp .. "/server.err" })
local port = T.wait_for(15, function() local p = fs.read(tmp .. "/port", 64) return p and tonumber(p) end)
if not port then T.skip_all("the test HTTP server did not start: " .. (fs.read(tmp .. "/server.err") or "")) end
local base = "http://127.0.0.1:" .. port
local function modes(t) fs.write_atomic(www .. "/.modes.json", json.encode(t)) end
local function gets(path)
  local n = 0
  for line in (fs.read(slog) or ""):gmatch("[^\n]+") do
    if line:match("^GET " .. path:gsub("%p", "%%%0") .. " ") then n = n + 1 end
  end
  return n
end
local function parts()
  local n = 0
  for _, f in ipairs(fs.list(cache) or {}) do if f:match("%.part") then n = n + 1 end end
  return n
end

rootfs.configure({ cache_dir = cache, max_bytes = 8 * 1024 * 1024, timeout = 60 })
-- a leftover of a riklet that crashed mid-download (another pid), and a file that is not one
assert(fs.mkdir_p(cache, "0700"))
local stale = cache .. "/.url_" .. ("ab"):rep(32) .. ".999999.1.part"
fs.write_atomic(stale, "partial")
fs.write_atomic(cache .. "/keep.txt", "not ours to remove")

-- 1. download, then a cached hit revalidated with 304
local p, err = rootfs.fetch(base .. "/a.img")
T.ok(p, "a.img downloaded: " .. tostring(err))
T.ok(not fs.exists(stale), "a partial download of an earlier riklet is removed")
T.ok(fs.exists(cache .. "/keep.txt"), "a file that is not a partial download is kept")
T.like(p or "", "^" .. cache:gsub("%p", "%%%0") .. "/url_%x+%.img$", "cached under the cache dir, named by hash")
T.is(sh(("cmp %s %s/a.img && echo same"):format(p, www)), "same\n", "the cache file holds the served bytes")
local meta = json.decode(fs.read((p:gsub("%.img$", ".json"))))
T.is(meta.url, base .. "/a.img", "metadata: url")
T.ok(meta.etag and meta.last_modified and meta.size == 4194304, "metadata: etag, last_modified, size")
local d0 = rootfs.stats.downloads
local p2 = rootfs.fetch(base .. "/a.img")
T.is(p2, p, "second fetch: same path")
T.is(rootfs.stats.downloads, d0, "second fetch: nothing downloaded")
T.is(gets("/a.img"), 2, "second fetch: revalidated with one conditional GET")
T.like(sh("tail -n1 " .. slog), "^GET /a.img 304", "the server answered 304")
T.ok(rootfs.check_ext4(p), "check_ext4 accepts a mkfs.ext4 image")

-- 2. a changed ETag downloads again and replaces the cache atomically
sh(("head -c 4194304 /dev/zero > %s/x && cp %s/a.img %s/a.old && printf '\"v2\"' > %s/a.img.etag"):format(tmp, www, tmp, www))
sh(("mkfs.ext4 -q -F -L second -d %s/tree %s/a.new 4M && mv %s/a.new %s/a.img"):format(tmp, tmp, tmp, www))
local p3 = rootfs.fetch(base .. "/a.img")
T.is(p3, p, "changed ETag: same cache path")
T.is(rootfs.stats.downloads, d0 + 1, "changed ETag: downloaded again")
T.is(sh(("cmp %s %s/a.img && echo same"):format(p3, www)), "same\n", "changed ETag: the cache holds the new bytes")
T.is(json.decode(fs.read((p:gsub("%.img$", ".json")))).etag, '"v2"', "changed ETag: metadata updated")

-- 3. errors, each naming what went wrong; nothing cached, no temporary file left
local _, e404 = rootfs.fetch(base .. "/missing.img")
T.like(e404, "HTTP 404", "404: the error gives the status")
T.like(e404, "missing%.img", "404: the error names the URL")
modes({ ["/big.img"] = { cut = 100000 } })
local _, ecut = rootfs.fetch(base .. "/big.img")
T.like(ecut, "after 100000 of 3000000 bytes", "cut short: the error names bytes received/expected")
modes({})
T.is(parts(), 0, "cut short: no partial file left")
T.ok(not fs.exists(cache .. "/url_" .. http.sha256(base .. "/big.img") .. ".img"), "cut short: nothing cached")
rootfs.configure({ max_bytes = 1000000 })
local _, ecap = rootfs.fetch(base .. "/big.img")
T.like(ecap, "limit of 1000000 bytes", "over the cap: refused")
T.like(ecap, "%-%-rootfs%-max%-size", "over the cap: the error names the flag")
modes({ ["/big.img"] = { chunked = true } })
_, ecap = rootfs.fetch(base .. "/big.img")
T.like(ecap, "larger than the limit", "over the cap without a Content-Length: stopped while streaming")
T.is(parts(), 0, "over the cap: no partial file left")
modes({})
rootfs.configure({ max_bytes = 8 * 1024 * 1024 })
local _, ecred = rootfs.fetch(base:gsub("//", "//rkuser:s3cret@") .. "/missing.img")
T.ok(ecred and not ecred:find("s3cret", 1, true) and ecred:find("***@", 1, true),
  "a URL's password never appears in the error (" .. tostring(ecred) .. ")")
local _, ebad = rootfs.fetch("ftp://example.org/x.img")
T.like(ebad, "only http://, https:// and file://", "ftp URL refused")
local pt = assert(rootfs.fetch(base .. "/text.img"))
local ok, eext = rootfs.check_ext4(pt)
T.ok(not ok, "check_ext4 refuses a text file")
T.like(eext, "is not an ext4 image", "check_ext4: the contract's message")

-- 4. two concurrent fetches of one URL: one GET
modes({ ["/big.img"] = { delay = 1 } })
local before = gets("/big.img")
local res = {}
local done = task.queue()
for i = 1, 2 do
  task.spawn(function() res[i] = { rootfs.fetch(base .. "/big.img") } done:put(i) end)
end
done:get(60) done:get(60)
T.ok(res[1][1] and res[1][1] == res[2][1], "concurrent fetches: both get the same path")
T.is(gets("/big.img") - before, 1, "concurrent fetches: one GET in the server log")
modes({})

-- 5. cancel: the only waiter cancels → the transfer is abandoned; with two waiters, the other goes on
modes({ ["/slow.img"] = { rate = 20000 } })
sh(("head -c 2000000 /dev/urandom > %s/slow.img"):format(www))
local cancelled = false
local t0 = require("riklet.core").now()
task.spawn(function() task.sleep(0.5) cancelled = true end)
local pc, ec = rootfs.fetch(base .. "/slow.img", { cancel = function() return cancelled end })
T.ok(not pc and ec:find("cancelled"), "cancelled fetch: stops waiting (" .. tostring(ec) .. ")")
T.ok(require("riklet.core").now() - t0 < 5, "cancelled fetch: returns soon after the cancel")
T.ok(T.wait_for(5, function() return parts() == 0 end), "abandoned download: its temporary file is removed")
T.is(rootfs.stats.abandoned, 1, "abandoned download counted")
T.ok(not fs.exists(cache .. "/url_" .. http.sha256(base .. "/slow.img") .. ".img"), "abandoned: nothing cached")
modes({ ["/slow.img"] = { rate = 1000000 } })
local c1, r2 = false, nil
task.spawn(function() task.sleep(0.3) c1 = true end)
task.spawn(function() r2 = { rootfs.fetch(base .. "/slow.img") } end)
local pa = rootfs.fetch(base .. "/slow.img", { cancel = function() return c1 end })
T.ok(not pa, "one of two waiters cancels: it stops waiting")
T.ok(T.wait_for(30, function() return r2 end) and r2[1], "the other waiter still gets the file: " .. tostring(r2 and r2[2]))
modes({})

-- 6. file:// URLs: copied (never used in place), revalidated by size/mtime/inode
local pf = assert(rootfs.fetch("file://" .. www .. "/a.img"))
T.ok(pf ~= www .. "/a.img" and sh(("cmp %s %s/a.img && echo same"):format(pf, www)) == "same\n", "file://: a copy in the cache")
local d1 = rootfs.stats.downloads
rootfs.fetch("file://" .. www .. "/a.img")
T.is(rootfs.stats.downloads, d1, "file:// unchanged: not copied again")
-- an mtime that cJSON printed with 15 digits, a few hundred ns off (the file was copied again)
sh(("cp %s/a.img %s/b.img && touch -d @1764459187.123450161 %s/b.img"):format(www, www, www))
assert(rootfs.fetch("file://" .. www .. "/b.img"))
local d2 = rootfs.stats.downloads
assert(rootfs.fetch("file://" .. www .. "/b.img"))
T.is(rootfs.stats.downloads, d2, "file:// unchanged, mtime 1764459187.123450161: not copied again")
local _, enf = rootfs.fetch("file://" .. www .. "/none.img")
T.like(enf, "none%.img", "file:// missing: the error names the file")
local _, edir = rootfs.fetch("file://" .. www)
T.like(edir, "not a regular file", "file:// to a directory: refused")

srv:kill(9)
srv:wait()
proc.run({ "rm", "-rf", tmp })
