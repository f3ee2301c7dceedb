-- The v1.Pod -> workload mapping (workload.from_k8s, then from_rik as the interLink front-end does):
-- image references as Kubernetes writes them, command/args, env refs, volumes, names of the
-- lengths Kubernetes allows, what is refused (with the field named) and what is only noted;
-- base64 both ways; the instance id never built from a name.
local T = require "riklet.testlib"
local json = require "riklet.json"
local W = require "riklet.workload"
local I = require "riklet.interlink"

local function data(containers, spec_extra, md_extra, rc)
  local spec = { containers = containers, restartPolicy = "OnFailure", terminationGracePeriodSeconds = 5 }
  for k, v in pairs(spec_extra or {}) do spec[k] = v end
  local md = { name = "web", namespace = "ns1", uid = "0b7f3c4e-1111-4222-8333-444455556666" }
  for k, v in pairs(md_extra or {}) do md[k] = v end
  return { pod = { apiVersion = "v1", kind = "Pod", metadata = md, spec = spec }, container = rc or {} }
end

local function model(d)
  local def, notes = W.from_k8s(d)
  if not def then return nil, notes end
  local m, err = W.from_rik(assert(json.encode(def)))
  return m, err, notes
end

-- image references as Kubernetes writes them
for _, img in ipairs({ "busybox:1.36", "docker.io/library/busybox", "ghcr.io/o/x:tag", "registry:5000/team/app:v1",
  "busybox@sha256:" .. ("ab"):rep(32) }) do
  local m, err = model(data({ { name = "c", image = img } }))
  T.ok(m and m.containers[1].image_ref ~= nil, "image " .. img .. " is accepted: " .. tostring(err))
end

-- command / args / workingDir / limits / restart policy / grace / independent
local m, err = model(data({ { name = "c", image = "busybox", command = { "sh", "-c" }, args = { "echo hi" },
  workingDir = "/tmp", resources = { limits = { cpu = "500m", memory = "64Mi" }, requests = { cpu = "100m" } } } }))
T.ok(m ~= nil, "a full container maps: " .. tostring(err))
T.is(table.concat(m.containers[1].command, " ") .. " | " .. table.concat(m.containers[1].args, " "), "sh -c | echo hi",
  "command and args are kept apart (command replaces the entrypoint, args the cmd)")
T.is(m.containers[1].working_dir, "/tmp", "workingDir")
T.is(m.containers[1].limits.cpu, 500, "cpu 500m -> 500 millicores")
T.is(m.containers[1].limits.memory, 64 * 1024 * 1024, "memory 64Mi")
T.is(m.restart_policy, "OnFailure", "restartPolicy")
T.is(m.grace_period, 5, "terminationGracePeriodSeconds")
T.is(m.independent, true, "Kubernetes semantics: containers are independent")
m = model(data({ { name = "c", image = "busybox" } }, { restartPolicy = json.null, terminationGracePeriodSeconds = json.null }))
T.is(m.restart_policy .. " " .. m.grace_period, "Always 30", "Kubernetes defaults: Always, 30 s")

-- names: pod names up to 253 characters; the hostname is cut to 63; the id comes from the UID
local long = ("a"):rep(249) .. ".b-c"
m, err = model(data({ { name = ("c"):rep(63), image = "busybox" } }, nil, { name = long }))
T.ok(m ~= nil, "a 253-character pod name and a 63-character container name are accepted: " .. tostring(err))
T.is(#m.name, 63, "... the workload name (hostname) is cut to 63")
local d = data({ { name = "c", image = "busybox" } }, nil, { name = ("x"):rep(254) })
T.ok(W.from_k8s(d) == nil, "a pod name over 253 characters is refused")
T.is(I.pod_id("0b7f3c4e-1111-4222-8333-444455556666"), "k8s-0b7f3c4e-1111-4222-8333-444455556666", "the id is k8s-<uid>")
T.is(I.pod_id("../../etc"), nil, "a UID with a path in it gives no id")
T.is(I.pod_id(("a"):rep(61)), nil, "an over-long UID gives no id")

-- env: literals, refs, envFrom, fieldRef; refs to what was not delivered are refused
local rc = { { name = "c", configMaps = { { metadata = { name = "cm" }, data = { k = "v", other = "o" } } },
  secrets = { { metadata = { name = "s" }, data = { pw = W.base64_encode("p\0w\n") } } } } }
m, err = model(data({ { name = "c", image = "busybox", env = {
  { name = "A", value = "1" }, { name = "B", valueFrom = { configMapKeyRef = { name = "cm", key = "k" } } },
  { name = "NS", valueFrom = { fieldRef = { fieldPath = "metadata.namespace" } } },
  { name = "OPT", valueFrom = { configMapKeyRef = { name = "missing", key = "k", optional = true } } } },
  envFrom = { { configMapRef = { name = "cm" }, prefix = "P_" } } } }, nil, nil, rc))
T.ok(m ~= nil, "env maps: " .. tostring(err))
local env = {}
for _, e in ipairs(m and m.containers[1].env or {}) do env[e.name] = e.value end
T.is(table.concat({ env.A, env.B, env.NS, env.P_k, env.P_other }, ","), "1,v,ns1,v,o", "literal, configMapKeyRef, fieldRef, envFrom+prefix")
T.is(env.OPT, nil, "an optional ref that is missing sets nothing")
local _, reason = model(data({ { name = "c", image = "busybox", env = {
  { name = "X", valueFrom = { secretKeyRef = { name = "nope", key = "k" } } } } } }))
T.like(reason, 'key "k" of Secret "nope" is not in what was delivered', "a missing Secret ref is refused, named")
_, reason = model(data({ { name = "c", image = "busybox", env = { { name = "my.var", value = "x" } } } }))
T.like(tostring(reason), "env", "an env name that is not a C identifier is refused")

-- refusals name the field
m, err = model(data({ { name = "c", image = "busybox" } }, { initContainers = { { name = "i1", image = "busybox", command = { "true" } },
  { name = "i2", image = "busybox:1" } } }))
T.is(m and (m.init_containers[1].name .. "," .. m.init_containers[2].name .. "," .. m.containers[1].name), "i1,i2,c",
  "init containers map, in order: " .. tostring(err))
_, reason = model(data({ { name = "c", image = "busybox" } }, { initContainers = { { name = "c", image = "busybox" } } }))
T.like(tostring(reason), "used twice", "an init container named like a container is refused")
_, reason = model(data({ { name = "c", image = "busybox" } }, { hostNetwork = true }))
T.like(reason, "hostNetwork", "hostNetwork: refused")
_, reason = model(data({ { name = "c", image = "busybox", volumeMounts = { { name = "h", mountPath = "/h" } } } },
  { volumes = { { name = "h", hostPath = { path = "/etc" } } } }))
T.like(reason, "hostPath", "hostPath: refused")
_, reason = model(data("x"))
T.like(reason, "containers must be an array", "containers of the wrong type")
_, reason = model(data({ { name = "c", image = "busybox", command = { 1, 2 } } }))
T.like(tostring(reason), "command", "a command of numbers")
_, reason = model(data({ { name = "c", image = "busybox", volumeMounts = { { name = "v", mountPath = "/v", subPath = "../x" } } } },
  { volumes = { { name = "v", emptyDir = {} } } }))
T.like(tostring(reason), "'..' are not allowed", "a subPath with .. is refused")

-- volumes
rc[1].projectedvolumemaps = { { metadata = { name = "proj" }, data = { ["a/b.txt"] = "x\ny\n" } } }
m, err = model(data({
  { name = "w", image = "busybox", volumeMounts = { { name = "e", mountPath = "/e" }, { name = "cv", mountPath = "/cv" } } },
  { name = "r", image = "busybox", volumeMounts = { { name = "e", mountPath = "/e", readOnly = true },
    { name = "sv", mountPath = "/sv", subPath = "pw" }, { name = "proj", mountPath = "/p" } } } },
  { volumes = { { name = "e", emptyDir = { medium = "Memory", sizeLimit = "16Mi" } },
    { name = "cv", configMap = { name = "cm", items = { { key = "k", path = "d/k.txt", mode = 256 } } } },
    { name = "sv", secret = { secretName = "s", defaultMode = 256 } }, { name = "proj", projected = { sources = {} } } } },
  nil, rc))
T.ok(m ~= nil, "volumes map: " .. tostring(err))
local vols = {}
for _, v in ipairs(m and m.volumes or {}) do vols[v.name] = v end
T.is(vols.e and vols.e.type, "emptyDir", "emptyDir, once for both containers")
T.is(vols.cv and vols.cv.files[1].path .. " " .. vols.cv.files[1].mode .. " " .. W.base64_decode(vols.cv.files[1].base64),
  "d/k.txt 256 v", "configMap items: key -> path, mode")
T.is(vols.sv and W.base64_decode(vols.sv.files[1].base64), "p\0w\n", "secret data stays byte for byte (base64)")
T.is(vols.proj and W.base64_decode(vols.proj.files[1].base64), "x\ny\n", "projected content keeps its newlines")
T.is(m and m.containers[2].mounts[1].read_only, true, "readOnly")
T.is(m and m.containers[2].mounts[2].sub_path, "pw", "subPath")
local notes
_, _, notes = model(data({ { name = "c", image = "busybox", livenessProbe = { exec = { command = { "true" } } },
  imagePullPolicy = "Always", volumeMounts = { { name = "sa", mountPath = "/var/run/secrets/kubernetes.io/serviceaccount" } } } },
  { volumes = { { name = "sa", projected = { sources = {} } } }, affinity = {} }))
local all = table.concat(notes or {}, "\n")
T.ok(not all:find("livenessProbe", 1, true), "a liveness probe is run, not noted")
T.ok(not all:find("imagePullPolicy Always", 1, true), "imagePullPolicy Always is applied, not noted")
m = model(data({ { name = "c", image = "busybox:1", imagePullPolicy = "Always" }, { name = "d", image = "busybox", imagePullPolicy = "IfNotPresent" } }))
T.is(m and (m.containers[1].pull .. " " .. m.containers[2].pull), "always missing", "imagePullPolicy Always / IfNotPresent")
_, reason = model(data({ { name = "c", image = "busybox", imagePullPolicy = "Sometimes" } }))
T.like(tostring(reason), "imagePullPolicy", "an unknown imagePullPolicy is refused")
T.like(all, 'volume "sa" at /var/run/secrets/kubernetes.io/serviceaccount is not mounted', "an undelivered projected volume is noted")
T.like(all, "affinity", "affinity is noted")

-- base64 both ways, every byte
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local s = table.concat(bytes)
for n = 0, 3 do
  T.is(W.base64_decode(W.base64_encode(s:sub(1, 253 + n))), s:sub(1, 253 + n), "base64 round trip, " .. (253 + n) .. " bytes")
end
T.is(W.base64_encode("hunter2"), "aHVudGVyMg==", "base64 as everyone writes it")
T.is(W.base64_decode("not base64!"), nil, "invalid base64 is refused")

-- securityContext: runAsUser / runAsGroup (the container's over the pod's); the rest is noted
m, _, notes = model(data({ { name = "c", image = "busybox", securityContext = { runAsUser = 1000, privileged = true } } },
  { securityContext = { runAsUser = 1, runAsGroup = 2, fsGroup = 3 } }))
T.is(m and (m.containers[1].user.uid .. ":" .. m.containers[1].user.gid), "1000:2", "runAsUser from the container, runAsGroup from the pod")
all = table.concat(notes or {}, "\n")
T.like(all, "securityContext.privileged is not applied", "privileged is noted")
T.like(all, "pod.spec.securityContext.fsGroup is not applied", "fsGroup is noted")
_, reason = model(data({ { name = "c", image = "busybox", securityContext = { runAsUser = -1 } } }))
T.like(tostring(reason), "user.uid", "a negative runAsUser is refused")

-- probes and lifecycle hooks: Kubernetes defaults, named ports, every handler kind; bad ones refused
m, err = model(data({ { name = "c", image = "busybox", ports = { { name = "web", containerPort = 8080 } },
  readinessProbe = { httpGet = { path = "/healthz", port = "web", scheme = "HTTP", httpHeaders = { { name = "X-A", value = "b" } } },
    periodSeconds = 2, successThreshold = 2 },
  livenessProbe = { tcpSocket = { port = 8080 }, initialDelaySeconds = 5, failureThreshold = 1 },
  startupProbe = { exec = { command = { "cat", "/tmp/up" } } },
  lifecycle = { postStart = { exec = { command = { "touch", "/tmp/p" } } }, preStop = { sleep = { seconds = 1 } } } } }))
T.ok(m ~= nil, "probes and hooks map: " .. tostring(err))
local pr = m and m.containers[1].probes or {}
T.is(pr.readiness and (pr.readiness.handler.type .. " " .. pr.readiness.handler.port .. " " .. pr.readiness.handler.path
  .. " " .. pr.readiness.handler.scheme .. " " .. pr.readiness.handler.headers[1].name), "http 8080 /healthz http X-A",
  "httpGet: the named port resolved to its containerPort, scheme lower-cased, headers kept")
T.is(pr.readiness and (pr.readiness.period_seconds .. " " .. pr.readiness.success_threshold .. " " .. pr.readiness.timeout_seconds
  .. " " .. pr.readiness.failure_threshold), "2 2 1 3", "periodSeconds and successThreshold kept; timeout 1 and failureThreshold 3 by default")
T.is(pr.liveness and (pr.liveness.handler.type .. " " .. pr.liveness.initial_delay_seconds .. " " .. pr.liveness.failure_threshold),
  "tcp 5 1", "tcpSocket liveness, initialDelaySeconds, failureThreshold")
T.is(pr.startup and table.concat(pr.startup.handler.command, " "), "cat /tmp/up", "exec startup probe")
local hk = m and m.containers[1].hooks or {}
T.is(hk.post_start and hk.post_start.type .. " " .. hk.pre_stop.type .. " " .. hk.pre_stop.seconds, "exec sleep 1", "postStart exec, preStop sleep")
for _, bad in ipairs({
  { { livenessProbe = { grpc = { port = 1 } } }, "grpc" },
  { { livenessProbe = { httpGet = { port = "nope" } } }, "no container port has this name" },
  { { livenessProbe = { tcpSocket = { port = 70000 } } }, "port" },
  { { livenessProbe = { exec = { command = {} } } }, "command has 0 entries" },
  { { livenessProbe = { exec = { command = { "true" } }, successThreshold = 2 } }, "must be 1" },
  { { readinessProbe = { exec = { command = { "true" } }, periodSeconds = 0 } }, "period_seconds" },
  { { readinessProbe = { exec = { command = { "true" } }, timeoutSeconds = "1" } }, "timeout_seconds" },
  { { readinessProbe = {} }, "no handler" },
  { { readinessProbe = { httpGet = { port = 80, path = "/a b" } } }, "path" },
  { { readinessProbe = { httpGet = { port = 80, httpHeaders = { { name = "X\r\nY", value = "v" } } } } }, "header name" },
  { { readinessProbe = { httpGet = { port = 80, httpHeaders = { { name = "X", value = "a\r\nInjected: 1" } } } } }, "control" },
  { { readinessProbe = { httpGet = { port = 80, host = "-x" } } }, "host" },
  { { readinessProbe = { tcpSocket = { port = 80, host = "example.com" } } }, "IPv4" },
  { { lifecycle = { postStart = { exec = { command = "touch /x" } } } }, "array of strings" },
  { { readinessProbe = { sleep = { seconds = 1 } } }, "type" },
}) do
  local c = { name = "c", image = "busybox" }
  for k, v in pairs(bad[1]) do c[k] = v end
  local _, r = model(data({ c }))
  T.like(tostring(r), bad[2], "refused with the field named: " .. bad[2])
end
_, _, notes = model(data({ { name = "c", image = "busybox" } }, { initContainers = { { name = "i", image = "busybox",
  livenessProbe = { exec = { command = { "true" } } } } } }))
T.like(table.concat(notes or {}, "\n"), "init container i: livenessProbe is not run", "a probe on an init container is noted")

-- imagePullPolicy Never and emptyDir medium Memory with sizeLimit
m, err = model(data({ { name = "c", image = "busybox", imagePullPolicy = "Never",
  volumeMounts = { { name = "mem", mountPath = "/m" } } } }, { volumes = { { name = "mem", emptyDir = { medium = "Memory", sizeLimit = "2Mi" } } } }))
T.is(m and m.containers[1].pull, "never", "imagePullPolicy Never -> pull never: " .. tostring(err))
T.is(m and (m.volumes[1].medium .. " " .. m.volumes[1].size_limit), "Memory 2097152", "emptyDir medium Memory, sizeLimit 2Mi")
_, reason = model(data({ { name = "c", image = "busybox", volumeMounts = { { name = "hp", mountPath = "/m" } } } },
  { volumes = { { name = "hp", emptyDir = { medium = "HugePages" } } } }))
T.like(tostring(reason), "medium", "emptyDir medium HugePages is refused with the field named")
