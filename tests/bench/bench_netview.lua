-- bench_netview.lua — run with `riklet test` by bench_netview.sh: CPU per net.view inside a Pod's
-- namespace (NS) and per net.links of the current one, BENCH_NETVIEW_N calls each (os.clock).
local net = require "riklet.net"
local n = tonumber(os.getenv("BENCH_NETVIEW_N")) or 2000
local ns = assert(os.getenv("NS"), "NS: the Pod namespace's path")
local v = assert(net.view("eth0", { netns = ns }))
assert(v.found and v.up and v.lo_up and v.addrs[1] == "10.88.0.2/16" and v.gateway == "10.88.0.1",
  "the view of the Pod namespace is not what bench_netview.sh made")
local ls = assert(net.links())
collectgarbage()
local t0 = os.clock()
for _ = 1, n do net.view("eth0", { netns = ns }) end
local t1 = os.clock()
for _ = 1, n do net.links() end
local t2 = os.clock()
io.stdout:write(("view %.1f us  links(%d) %.1f us\n"):format((t1 - t0) / n * 1e6, #ls, (t2 - t1) / n * 1e6))
