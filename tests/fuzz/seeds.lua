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

-- interlink: request bodies as interLink's virtual kubelet sends them (pods as the API server writes
-- them, from tests/integration/test_interlink.sh and tests/lua/k8s_pod.test.lua)
local B64 = require("riklet.workload").base64_encode
local function kpod(uid, name, containers, extra)
  local spec = { containers = containers, restartPolicy = "Never", terminationGracePeriodSeconds = 2,
    dnsPolicy = "ClusterFirst", serviceAccountName = "default", nodeName = "vk-node",
    volumes = { { name = "kube-api-access-x", projected = { sources = { { serviceAccountToken = { path = "token" } } } } } } }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return { apiVersion = "v1", kind = "Pod", metadata = { name = name, namespace = "default", uid = uid,
    labels = { app = name }, annotations = { ["interlink.eu/pod-vk"] = "vk" }, creationTimestamp = "2026-11-29T10:00:00Z" },
    spec = spec, status = { phase = "Pending" } }
end
local function kctr(n, cmd, extra)
  local c = { name = n, image = "busybox:1.36", imagePullPolicy = "IfNotPresent", command = { "sh", "-c" }, args = { cmd },
    resources = {}, terminationMessagePath = "/dev/termination-log",
    volumeMounts = { { name = "kube-api-access-x", readOnly = true, mountPath = "/var/run/secrets/kubernetes.io/serviceaccount" } } }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end
local U1 = "11111111-aaaa-4bbb-8ccc-000000000001"
local hello = kpod(U1, "hello", { kctr("main", "echo hello; sleep 3600") })
local full = kpod("0b7f3c4e-1111-4222-8333-444455556666", "web", {
  kctr("c", "echo hi", { workingDir = "/tmp", resources = { limits = { cpu = "500m", memory = "64Mi" }, requests = { cpu = "100m" } },
    env = { { name = "A", value = "1" }, { name = "B", valueFrom = { configMapKeyRef = { name = "cm", key = "k" } } },
      { name = "NS", valueFrom = { fieldRef = { fieldPath = "metadata.namespace" } } },
      { name = "OPT", valueFrom = { configMapKeyRef = { name = "missing", key = "k", optional = true } } } },
    envFrom = { { configMapRef = { name = "cm" }, prefix = "P_" } },
    ports = { { containerPort = 8080, protocol = "TCP" } } }),
  kctr("side", "sleep 1d") }, { restartPolicy = "OnFailure",
  initContainers = { kctr("init", "true") } })
local delivered = { { name = "c", configMaps = { { metadata = { name = "cm" }, data = { k = "v", other = "o" } } },
  secrets = { { metadata = { name = "s" }, data = { pw = B64("p\0w\n") } } } } }
put("interlink", "create-hello", json.encode({ pod = hello, container = json.array({}), jobConfig = {} }))
put("interlink", "create-array", json.encode({ { pod = hello, container = json.array({}), jobConfig = {} } }))
put("interlink", "create-full", json.encode({ pod = full, container = delivered, jobConfig = {} }))
put("interlink", "status", json.encode({ hello, full }))
put("interlink", "status-ping", "[]")
put("interlink", "delete", json.encode(hello))
put("interlink", "getlogs", '{"Namespace":"default","PodUID":"' .. U1 .. '","PodName":"hello","ContainerName":"main",'
  .. '"Opts":{"Tail":0,"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,'
  .. '"SinceTime":"0001-01-01T00:00:00Z"}}')
put("interlink", "getlogs-opts", '{"PodUID":"' .. U1 .. '","ContainerName":"main","Opts":{"Tail":2,"Bytes":8,'
  .. '"Timestamps":true,"SinceSeconds":60,"SinceTime":"2026-11-29T10:00:00.123456789+01:00"}}')
-- hostile
put("interlink", "create-two", json.encode({ { pod = hello }, { pod = hello } }))
put("interlink", "create-uid-path", (json.encode({ pod = kpod("../../etc", "x", { kctr("c", "true") }) })))
put("interlink", "create-name-nul", '{"pod":{"metadata":{"uid":"u1","name":"a\\u0000b"},"spec":{"containers":'
  .. '[{"name":"c\\u0000","image":"busybox","env":[{"name":"A","value":"x\\u0000y"}]}]}}}')
put("interlink", "create-types", '{"pod":{"metadata":{"uid":"u","name":"n","namespace":7},"spec":{"containers":"x"}},'
  .. '"container":{"a":1}}')
put("interlink", "create-wrong", '{"pod":{"metadata":{"uid":"u","name":"n"},"spec":{"containers":[{"name":"c",'
  .. '"image":";rm -rf /","command":[1,2],"ports":[{"containerPort":-1},{"containerPort":"80"}],'
  .. '"env":[{"name":"A"},{"name":"A","value":{}}],"resources":{"limits":{"cpu":"1e999","memory":"-5Gi"}}},'
  .. '{"name":"c","image":"busybox"}],"initContainers":{},"terminationGracePeriodSeconds":"x","restartPolicy":1}}}')
put("interlink", "nested", ("["):rep(200) .. ("]"):rep(200))
put("interlink", "status-scalar", "42")
put("interlink", "delete-grace", '[{"metadata":{"uid":"u","name":"n"},"spec":{"terminationGracePeriodSeconds":"1e999"}}]')
put("interlink", "getlogs-bad", '{"PodUID":null,"ContainerName":[],"Opts":{"Tail":"-1","Bytes":1e308,"SinceSeconds":"1e999",'
  .. '"SinceTime":"2026-13-45T99:99:99Z"}}')
put("interlink", "utf8", '{"pod":{"metadata":{"uid":"u","name":"\xff\xfe"}}}')
