-- seeds.lua — writes the generated part of the seed corpora (tests/fuzz/corpus/<target>/gen-*):
--   build/riklet test tests/fuzz/seeds.lua
-- Hand-written seeds sit beside them; crash reproducers found later are added as crash-<sha1>.
local pb = require "riklet.pb"
local json = require "riklet.json"
local src = os.getenv("RIKLET_SRC_DIR") or "."
local C = src .. "/tests/fuzz/corpus/"
local function put(dir, name, data)
  os.execute("mkdir -p '" .. C .. dir .. "'")
  local f = assert(io.open(C .. dir .. "/gen-" .. name, "wb"))
  f:write(data)
  f:close()
end
local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function frame(msg)
  local n = #msg
  return string.char(0, math.floor(n / 2 ^ 24) % 256, math.floor(n / 2 ^ 16) % 256, math.floor(n / 256) % 256, n % 256) .. msg
end

local defs = {}
for _, ex in ipairs({ "busybox", "alpine", "two-containers", "function" }) do
  defs[ex] = read(src .. "/examples/" .. ex .. ".json")
  put("workload", ex, defs[ex])
end
put("workload", "ports", json.encode({ apiVersion = "v1", kind = "Pod", name = "web", spec = { containers = {
  { name = "w", image = "nginx:1", env = { { name = "A", value = "1" } },
    ports = { port = 80, target_port = 8080, protocol = "TCP", type = "NodePort" } } } } }))

local msgs = {}
for name, d in pairs(defs) do
  local create = assert(pb.encode("worker.InstanceScheduling", { instance_id = name .. "-1", action = "CREATE", definition = d }))
  local destroy = assert(pb.encode("worker.InstanceScheduling", { instance_id = name .. "-1", action = "DESTROY", definition = "" }))
  put("pb", name .. "-create", create)
  put("pb", name .. "-destroy", destroy)
  msgs[#msgs + 1] = create
  msgs[#msgs + 1] = destroy
end
put("pb", "empty", "")
put("grpc_frame", "one", "\7" .. frame(msgs[1]))
put("grpc_frame", "stream", "\0" .. frame(msgs[1]) .. frame(msgs[2]) .. frame("") .. frame(msgs[3]))
put("grpc_frame", "split", "\63" .. frame(msgs[4]) .. frame(msgs[1]):sub(1, 9))
put("grpc_frame", "compressed", "\3" .. "\1" .. frame(msgs[1]):sub(2))
put("grpc_frame", "huge", "\5" .. "\0\0\1\0\1" .. ("x"):rep(40))

local id = "f"
local base = "/dev/shm/riklet-fuzz-store"
local function rec(extra)
  local r = { id = id, status = "RUNNING", created_at = 1, source = "scheduler", kind = "Pod", name = "hello",
    dir = base .. "/instances/" .. id, definition_size = #defs.busybox,
    containers = { { name = "c", runc_id = id .. "_c", dir = base .. "/instances/" .. id .. "/c",
      log = base .. "/instances/" .. id .. "/c/output.log", state = "running", pid = 42 } },
    network = { enabled = true, kind = "Pod", netns = "/run/riklet/netns/" .. id, ip = "10.89.0.2",
      address = "10.89.0.2/16", gateway = "10.89.0.1", host_if = "rkv0123abcd", ports = { "tcp/8080" } } }
  for k, v in pairs(extra or {}) do r[k] = v end
  return json.encode(r)
end
put("store", "running", rec() .. "\0" .. defs.busybox)
put("store", "failed", rec({ status = "FAILED", reason = "exited with code 1", definition_error = "too large" }))
put("store", "inline", rec({ definition = defs.alpine, definition_size = #defs.alpine }))
put("store", "destroyed", rec({ status = "TERMINATED", destroyed = true }))
