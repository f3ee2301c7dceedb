-- riklet.config — defaults, then --config FILE.lua, then RIKLET_* environment, then flags.
-- Every flag has an environment variable: --state-dir <-> RIKLET_STATE_DIR, and so on. The
-- upstream-compatible names KERNEL_LOCATION, INITRD_LOCATION, IFACE and IFACE_IP are read too.
local core = require "riklet.core"

local M = {}

-- name, type, default, help. Types: string, number, bool, list (comma separated on the CLI).
M.options = {
  { "state-dir", "string", "/var/lib/riklet", "where images, root filesystems, instances and records live" },
  { "policy-dir", "string", nil, "directory of operator policies (admission.lua, network.lua, restart.lua) loaded over the defaults" },
  { "config", "string", nil, "a Lua file returning a table of these options (keys with _ instead of -)" },
  { "standalone", "string", nil, "no cluster: run the workloads described by the *.json manifests in this directory" },
  { "master-ip", "string", nil, "RIK scheduler address HOST:PORT (gRPC, port 4995 upstream)" },
  { "scheduler", "string", nil, "RIK scheduler URL: http://HOST:PORT (h2c) or https://HOST:PORT (TLS)" },
  { "hostname", "string", nil, "the name this node registers with (default: the system hostname)" },
  { "metrics-interval", "number", 15, "seconds between node metric reports to the scheduler" },
  { "instance-metrics-interval", "number", 0, "seconds between per-instance metric reports (cgroup CPU, memory, OOM kills, pids) to the scheduler; 0 = off" },
  { "reconnect-initial", "number", 1, "seconds before the first reconnect to the scheduler (then x1.6, +-20% jitter)" },
  { "reconnect-max", "number", 120, "longest wait between reconnects to the scheduler" },
  { "reconnect-healthy", "number", 60, "seconds connected after which the reconnect backoff starts over" },
  { "scheduler-connect-timeout", "number", 10, "seconds for the TCP connection (and TLS handshake) to the scheduler" },
  { "scheduler-handshake-timeout", "number", 10, "seconds, once connected, for the scheduler's first HTTP/2 frame (SETTINGS): a peer that accepts and says nothing" },
  { "scheduler-header-timeout", "number", 0, "seconds for the Register response headers; 0 = no limit (grpcio and grpc-go schedulers send them only with the first instruction)" },
  { "scheduler-keepalive", "number", 30, "seconds of silence from the scheduler before an HTTP/2 PING (and TCP keepalive probes)" },
  { "scheduler-keepalive-timeout", "number", 20, "seconds a PING, data or probes may stay unanswered before reconnecting" },
  { "tls-ca", "string", nil, "CA file to verify an https:// scheduler" },
  { "tls-cert", "string", nil, "client certificate for an https:// scheduler" },
  { "tls-key", "string", nil, "client key for an https:// scheduler" },
  { "runc", "string", "runc", "the runc binary" },
  { "runc-root", "string", "/run/riklet/runc", "runc --root: riklet's own container state directory" },
  { "conmon", "string", "conmon", "the conmon binary (the monitor every container runs under)" },
  { "log-size-max", "number", 10485760, "bytes of a container's log file; conmon starts the file over when it is full" },
  { "skopeo", "string", "skopeo", "the skopeo binary" },
  { "umoci", "string", "umoci", "the umoci binary" },
  { "insecure-registries", "list", {}, "registries (host:port) pulled over plain HTTP without TLS verification" },
  { "local-image-dirs", "list", {}, "directories whose OCI layouts (oci:/DIR/...) and Function rootfs files (file:///DIR/...) scheduled workloads may use (manifests: any)" },
  { "stop-grace", "number", 10, "seconds between SIGTERM and SIGKILL when stopping a container (a workload's own grace period wins)" },
  { "runtime-parallel", "number", nil, "runc processes at once (runc create under conmon included); default twice the CPUs; 0: no cap" },
  { "max-instances", "number", 1000, "instances this node has at once (not ended, plus held ids: records in quarantine); a create beyond it fails with the reason" },
  { "pull-timeout", "number", 600, "seconds an image pull may take" },
  { "firecracker", "string", "firecracker", "the Firecracker binary (--vmm firecracker; auto picks it when it is on PATH)" },
  { "rootfs-max-size", "number", 4294967296, "bytes: a Function rootfs download larger than this fails (and is never cached)" },
  { "rootfs-timeout", "number", 3600, "seconds a Function rootfs download may take (it also fails below 1 KiB/s for 60 s)" },
  { "network", "string", "auto", "pod network: auto (bridge when the network module is available), bridge, none" },
  { "pod-cidr", "string", "10.89.0.0/16", "addresses for Pods (the bridge takes the first)" },
  { "function-cidr", "string", "10.90.0.0/16", "addresses for Functions, one /30 each" },
  { "bridge", "string", "riklet0", "bridge joining Pod network namespaces" },
  { "netns-dir", "string", "/run/riklet/netns", "where Pod network namespaces are bind-mounted, one file per instance" },
  { "kernel-path", "string", nil, "guest kernel for Functions (env KERNEL_LOCATION)" },
  { "initrd-path", "string", nil, "guest initrd for Functions (env INITRD_LOCATION)" },
  { "vmm", "string", "auto", "VM monitor for Functions: auto (firecracker when on PATH, else qemu), qemu, firecracker" },
  { "qemu", "string", "qemu-system-x86_64", "the QEMU binary (--vmm qemu)" },
  { "vm-vcpus", "number", 1, "vCPUs of a Function's VM" },
  { "vm-memory-mib", "number", 128, "memory of a Function's VM, MiB" },
  { "vm-machine", "string", "pc", "QEMU machine type for Functions: pc (virtio-pci) or microvm" },
  { "vm-accel", "string", "auto", "QEMU accelerator for Functions: auto (kvm when /dev/kvm opens, else tcg), kvm, tcg" },
  { "iface", "string", nil, "outbound interface for masquerading (env IFACE)" },
  { "iface-ip", "string", nil, "address of --iface (env IFACE_IP)" },
  { "log-level", "string", "info", "error, warn, info or debug" },
  { "log-format", "string", "text", "text or json" },
  { "follow", "bool", false, "riklet logs: keep printing new output until the instance ends" },
  { "timestamps", "bool", false, "riklet logs: print each line's RFC 3339 timestamp" },
  { "tail", "number", -1, "riklet logs: only the last N lines (-1: all)" },
  { "since", "string", nil, "riklet logs: only lines since an RFC 3339 time or a duration ago (30s, 10m, 2h)" },
  { "previous", "bool", false, "riklet logs: the output of the run before the last restart" },
  { "json", "bool", false, "riklet ps: print JSON instead of a table" },
  { "keep-records", "number", 100, "ended instances kept in `riklet ps` before the oldest are forgotten" },
  -- ops: registry credentials, image garbage collection, riklet top
  { "auth-file", "string", nil, "registry credentials in the containers-auth.json format (as Podman and CRI-O use), given to skopeo for every pull" },
  { "image-gc-high", "number", 85, "percent of the state dir's disk used above which unused images are removed, oldest use first (0: never)" },
  { "image-gc-low", "number", 80, "percent used at which that removal stops" },
  { "image-gc-age", "number", 0, "seconds after its last use an unused image is removed whatever the disk usage (0: never)" },
  { "image-gc-interval", "number", 300, "seconds between two image garbage collection passes (0: none; riklet prune or SIGUSR1 on demand)" },
  { "once", "bool", false, "riklet top: print one table and exit" },
  { "metrics-listen", "string", nil, "serve Prometheus metrics (GET /metrics) on HOST:PORT (off by default)" },
  { "container-log-max-size", "number", nil, "bytes of a container's log file (the same as --log-size-max, which it overrides; conmon keeps one file)" },
  { "interlink", "list", {}, "serve the interLink plugin API on HOST:PORT and/or unix:/path (repeat or comma-separate)" },
  { "interlink-token-file", "string", nil, "interLink requests must carry Authorization: Bearer <the token in this file>" },
  { "interlink-body-max", "number", 8388608, "bytes of an interLink request body; a larger one is refused with 413" },
  { "interlink-request-timeout", "number", 30, "seconds a client has to send an interLink request's headers and body; a slower one is disconnected" },
}

local upstream_env = {
  ["kernel-path"] = "KERNEL_LOCATION", ["initrd-path"] = "INITRD_LOCATION",
  ["iface"] = "IFACE", ["iface-ip"] = "IFACE_IP",
}

local by_name = {}
for _, o in ipairs(M.options) do by_name[o[1]] = o end

local function key(name) return (name:gsub("-", "_")) end

local function coerce(o, v, from)
  local t = o[2]
  if t == "number" then
    local n = tonumber(v)
    if not n then return nil, ("%s: '%s' is not a number"):format(from, tostring(v)) end
    return n
  elseif t == "bool" then
    if v == true or v == "1" or v == "true" or v == "yes" then return true end
    if v == false or v == "0" or v == "false" or v == "no" then return false end
    return nil, ("%s: '%s' is not true or false"):format(from, tostring(v))
  elseif t == "list" then
    if type(v) == "table" then return v end
    local l = {}
    for item in tostring(v):gmatch("[^,%s]+") do l[#l + 1] = item end
    return l
  end
  if type(v) ~= "string" then return nil, ("%s: expected a string"):format(from) end
  return v
end

local function getenv(name) return os.getenv(name) end

-- Parse argv (array) from position `first`. Returns cfg, positional, or nil, err.
-- Flags: --name value, --name=value, and --no-name / --name for bools.
function M.parse(argv, first)
  local cfg, positional, flags = {}, {}, {}
  for _, o in ipairs(M.options) do
    local d = o[3]
    if type(d) == "table" then d = { unpack(d) } end
    cfg[key(o[1])] = d
  end
  local i = first or 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do positional[#positional + 1] = argv[j] end
      break
    elseif a:sub(1, 2) == "--" then
      local name, val = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local o = by_name[name]
      if not o then
        return nil, ("unknown option --%s (see `riklet --help`)"):format(name)
      end
      if not val then
        if o[2] == "bool" then val = true
        else
          i = i + 1
          val = argv[i]
          if val == nil then return nil, ("option --%s needs a value"):format(name) end
        end
      end
      -- a list option given twice adds up (--interlink A --interlink B)
      if o[2] == "list" and flags[name] then val = flags[name] .. "," .. val end
      flags[name] = val
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  -- --config file first, so environment and flags override it
  local cfile = flags["config"] or getenv("RIKLET_CONFIG")
  if cfile then
    local chunk, err = loadfile(cfile)
    if not chunk then return nil, ("cannot load the config file: %s"):format(err) end
    setfenv(chunk, {})
    local ok, t = pcall(chunk)
    if not ok or type(t) ~= "table" then
      return nil, ("config file %s must return a table of options: %s"):format(cfile, ok and type(t) or t)
    end
    for k, v in pairs(t) do
      local o = by_name[tostring(k):gsub("_", "-")]
      if not o then return nil, ("config file %s: unknown option '%s'"):format(cfile, tostring(k)) end
      local cv, cerr = coerce(o, v, cfile .. ": " .. k)
      if cv == nil then return nil, cerr end
      cfg[key(o[1])] = cv
    end
    cfg.config = cfile
  end
  for _, o in ipairs(M.options) do
    local env = getenv("RIKLET_" .. key(o[1]):upper())
    if env == nil and upstream_env[o[1]] then env = getenv(upstream_env[o[1]]) end
    if env ~= nil and env ~= "" then
      local cv, cerr = coerce(o, env, "environment RIKLET_" .. key(o[1]):upper())
      if cv == nil then return nil, cerr end
      cfg[key(o[1])] = cv
    end
  end
  for name, v in pairs(flags) do
    local cv, cerr = coerce(by_name[name], v, "--" .. name)
    if cv == nil then return nil, cerr end
    cfg[key(name)] = cv
  end
  if cfg.log_format ~= "text" and cfg.log_format ~= "json" then
    return nil, "--log-format must be text or json"
  end
  if not (cfg.image_gc_low >= 0 and cfg.image_gc_high <= 100 and (cfg.image_gc_high == 0 or cfg.image_gc_low < cfg.image_gc_high)) then
    return nil, ("--image-gc-low (%g) must be below --image-gc-high (%g), both percentages"):format(cfg.image_gc_low, cfg.image_gc_high)
  end
  local rt = cfg.interlink_request_timeout
  if not (rt >= 1 and rt <= 3600 and rt == math.floor(rt)) then
    return nil, ("--interlink-request-timeout (%g) must be a whole number of seconds from 1 to 3600"):format(rt)
  end
  if cfg.container_log_max_size ~= nil then cfg.log_size_max = cfg.container_log_max_size end
  if cfg.master_ip and not cfg.scheduler then cfg.scheduler = "http://" .. cfg.master_ip end
  cfg.hostname = cfg.hostname or core.hostname()
  return cfg, positional
end

function M.help()
  local lines = {}
  for _, o in ipairs(M.options) do
    local d = o[3]
    if type(d) == "table" then d = table.concat(d, ",") end
    local env = "RIKLET_" .. key(o[1]):upper()
    lines[#lines + 1] = ("  --%-20s %s%s\n  %22s env %s%s"):format(o[1], o[4],
      d ~= nil and d ~= "" and (" [default: " .. tostring(d) .. "]") or "", "", env,
      upstream_env[o[1]] and (" or " .. upstream_env[o[1]]) or "")
  end
  return table.concat(lines, "\n")
end

-- Paths under the state dir.
function M.paths(cfg)
  local s = cfg.state_dir
  return {
    state = s,
    images = s .. "/images",
    rootfs = s .. "/rootfs",
    instances = s .. "/instances",
    records = s .. "/records",
    lock = s .. "/riklet.lock",
  }
end

return M
