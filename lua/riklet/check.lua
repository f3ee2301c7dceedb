-- riklet.check — preflight: what this node can and cannot run, and what to do about each line.
-- `riklet check` prints the table; the daemon runs the same checks at start and refuses to start
-- when something a configured front-end needs is missing.
--
--   check.run(cfg[, {startup = true}]) -> { {name=, status="ok"|"warn"|"fail"|"off", required=bool,
--       detail=, fix=}, ... }
--       startup: only what decides whether riklet may start (no VMM versions when Functions are
--       not configured, no firewall rule counts with --network none).
--   check.failures(lines) -> the lines that are required and failed
--   check.format(lines) -> the table as text
--
-- What is required: Pods always (runc, conmon, skopeo, umoci, cgroups, overlayfs, space in the
-- state dir); the firewall and IP forwarding with --network bridge (auto falls back to no network);
-- a VMM and the guest kernel once --kernel-path is set (Functions are configured).
local core = require "riklet.core"
local fs = require "riklet.fs"
local fw = require "riklet.fw"
local metrics = require "riklet.metrics"
local proc = require "riklet.proc"

local M = {}

M.MIN_FREE = 32 * 1024 * 1024 -- below this the state dir fails the check (nothing can be pulled)
M.WARN_FREE = 2 * 1024 * 1024 * 1024 -- below this, or below 10 %, it warns

local function mib(b) return ("%.0f MiB"):format(b / 1048576) end
local function size(b)
  if b >= 1073741824 then return ("%.1f GiB"):format(b / 1073741824) end
  return mib(b)
end

-- Run `argv` (a tool and its version flag) -> first line of its output, or nil, why.
local function version_of(argv, pattern)
  local r, err = proc.run(argv, { timeout = 10 })
  if not r then return nil, ("not found or not executable (%s)"):format(tostring(err)) end
  local out = (r.stdout or "") .. (r.stderr or "")
  if r.code ~= 0 then
    return nil, ("`%s` failed (%s): %s"):format(table.concat(argv, " "), proc.describe(r.code, r.signal),
      (out:match("[^\n]+") or ""):sub(1, 200))
  end
  return out:match(pattern) or (out:match("[^\n]+") or "?"):sub(1, 60)
end

local function tool(lines, name, bin, flag, pattern, pkg, option, required)
  local v, err = version_of({ bin, flag }, pattern)
  if v then
    lines[#lines + 1] = { name = name, status = "ok", required = required, detail = ("%s %s"):format(bin, v), fix = "" }
  else
    lines[#lines + 1] = { name = name, status = required and "fail" or "warn", required = required,
      detail = ("%s: %s"):format(bin, err),
      fix = ("apt-get install %s%s"):format(pkg, option and (", or give its path with --" .. option) or "") }
  end
end

-- /proc/self/mountinfo -> { {mnt=, fstype=, opts=}, ... } of the lines that name a cgroup (all
-- cgroup_mode looks at): a node with 1,000 Pods has ~3,000 mounts, overlays with long option
-- strings, and the start-up check runs beside the boot's re-adoptions (parsing them all was 5 % of
-- a 1,000-Pod restart's CPU)
local function mounts()
  local s = fs.read("/proc/self/mountinfo", 4 * 1024 * 1024) or ""
  local out = {}
  for line in s:gmatch("[^\n]+") do
    if line:find("cgroup", 1, true) then
      local mnt = line:match("^%S+ %S+ %S+ %S+ (%S+)")
      local fstype, src, opts = line:match(" %- (%S+) (%S+) (%S+)$")
      if mnt and fstype then out[#out + 1] = { mnt = mnt:gsub("\\040", " "), fstype = fstype, src = src, opts = opts } end
    end
  end
  return out
end

-- cgroup mode: v2 (unified), hybrid (v1 controllers + a cgroup2 mount), v1; and the controllers
-- Pods need (memory, cpu, pids).
function M.cgroup_mode(mnts)
  mnts = mnts or mounts()
  local root, unified, v1 = nil, nil, {}
  for _, m in ipairs(mnts) do
    if m.mnt == "/sys/fs/cgroup" then root = m.fstype end
    if m.fstype == "cgroup2" and m.mnt ~= "/sys/fs/cgroup" then unified = m.mnt end
    if m.fstype == "cgroup" then
      for c in m.opts:gmatch("[^,]+") do v1[c] = m.mnt end
    end
  end
  if root == "cgroup2" then
    local ctl = fs.read("/sys/fs/cgroup/cgroup.controllers", 4096) or ""
    local have = {}
    for c in ctl:gmatch("%S+") do have[c] = true end
    return "v2", have
  end
  if next(v1) then return unified and "hybrid" or "v1", v1, unified end
  return nil, {}
end

local function cgroups(lines)
  local mode, have, unified = M.cgroup_mode()
  if not mode then
    lines[#lines + 1] = { name = "cgroups", status = "fail", required = true, detail = "no cgroup file system mounted at /sys/fs/cgroup",
      fix = "mount cgroup2 on /sys/fs/cgroup (systemd does it at boot)" }
    return
  end
  local missing = {}
  for _, c in ipairs({ "memory", "cpu", "pids" }) do
    if not have[c] then missing[#missing + 1] = c end
  end
  local detail = mode == "hybrid" and ("hybrid: v1 controllers, cgroup2 at %s"):format(unified) or mode
  if #missing > 0 then
    lines[#lines + 1] = { name = "cgroups", status = "fail", required = true,
      detail = ("%s; controller%s %s not available"):format(detail, #missing > 1 and "s" or "", table.concat(missing, ", ")),
      fix = mode == "v2" and "enable them in /sys/fs/cgroup/cgroup.subtree_control (or boot with systemd.unified_cgroup_hierarchy=1)"
        or "mount the missing v1 controllers, or boot with systemd.unified_cgroup_hierarchy=1" }
  else
    lines[#lines + 1] = { name = "cgroups", status = "ok", required = true, detail = detail .. "; memory, cpu, pids", fix = "" }
  end
end

local function overlayfs(lines)
  local fsl = fs.read("/proc/filesystems", 65536) or ""
  if fsl:find("%soverlay\n") then
    lines[#lines + 1] = { name = "overlayfs", status = "ok", required = true, detail = "overlay in /proc/filesystems", fix = "" }
    return
  end
  local rel = (fs.read("/proc/sys/kernel/osrelease", 256) or ""):gsub("%s+$", "")
  if fs.exists("/lib/modules/" .. rel .. "/kernel/fs/overlayfs") then
    -- mount(2) loads it on first use (the kernel asks modprobe for "fs-overlay")
    lines[#lines + 1] = { name = "overlayfs", status = "ok", required = true, detail = "module overlay available, not loaded yet", fix = "" }
    return
  end
  lines[#lines + 1] = { name = "overlayfs", status = "fail", required = true,
    detail = "the kernel has no overlay file system (Pods get their writable root from it)",
    fix = "modprobe overlay, or use a kernel with CONFIG_OVERLAY_FS" }
end

-- iptables: the backend the `iptables` command uses, and the rules each backend holds. riklet
-- writes its rules with libiptc, i.e. the legacy backend: rules another program keeps in nftables
-- (a FORWARD policy of DROP) are evaluated too, and can drop Pod traffic riklet accepted.
local function count_rules(bin)
  local r = proc.run({ bin }, { timeout = 10 })
  if not r or r.code ~= 0 then return nil end
  local n, drop = 0, false
  for line in (r.stdout or ""):gmatch("[^\n]+") do
    if line:sub(1, 3) == "-A " then n = n + 1 end
    if line:match("^:FORWARD DROP") then drop = true end
  end
  return n, drop
end

-- libip4tc first: riklet writes with it (dlopen'ed, core/iptc_lazy.c), and iptables-legacy-save
-- fails without it too, which read as "no legacy backend" beside `iptables` using nft.
local function firewall(lines, cfg, required)
  local lib, liberr = true, nil
  if cfg.network ~= "none" then lib, liberr = fw.load() end
  local v, err = version_of({ "iptables", "-V" }, "(v[%d.]+[^\n]*)")
  local backend = v and (v:match("nf_tables") and "nft" or "legacy")
  local legacy, ldrop = count_rules("iptables-legacy-save")
  local nft, ndrop = count_rules("iptables-nft-save")
  local parts = {}
  parts[#parts + 1] = backend and ("`iptables` uses %s (%s)"):format(backend, v) or ("iptables: " .. tostring(err))
  if legacy then parts[#parts + 1] = ("legacy: %d rules%s"):format(legacy, ldrop and ", FORWARD policy DROP" or "") end
  if nft then parts[#parts + 1] = ("nft: %d rules%s"):format(nft, ndrop and ", FORWARD policy DROP" or "") end
  local detail = table.concat(parts, "; ")
  if cfg.network == "none" then
    lines[#lines + 1] = { name = "iptables", status = "off", required = false, detail = detail, fix = "--network none: riklet writes no rules" }
  elseif not lib then
    local what, how = tostring(liberr):match("^(.-); install it with: (.+)$")
    lines[#lines + 1] = { name = "iptables", status = required and "fail" or "warn", required = required,
      detail = what or tostring(liberr),
      fix = (how or "install libip4tc") .. ": riklet writes its rules with it, Pod networking is off without it" }
  elseif ndrop then
    lines[#lines + 1] = { name = "iptables", status = "warn", required = false, detail = detail,
      fix = "riklet writes legacy (libiptc) rules; the nftables FORWARD policy DROP also filters Pod traffic: accept riklet0 there" }
  elseif not legacy then
    lines[#lines + 1] = { name = "iptables", status = required and "fail" or "warn", required = required, detail = detail,
      fix = "apt-get install iptables (riklet needs the legacy xtables backend; Pod networking is off without it)" }
  else
    lines[#lines + 1] = { name = "iptables", status = "ok", required = required,
      detail = detail .. "; riklet writes legacy rules (chains RIKLET-*)", fix = "" }
  end
  local fwd = (fs.read("/proc/sys/net/ipv4/ip_forward", 16) or "?"):gsub("%s+$", "")
  if cfg.network == "none" then
    lines[#lines + 1] = { name = "ip forwarding", status = "off", required = false, detail = "net.ipv4.ip_forward=" .. fwd, fix = "--network none" }
  elseif fwd == "1" then
    lines[#lines + 1] = { name = "ip forwarding", status = "ok", required = required, detail = "net.ipv4.ip_forward=1", fix = "" }
  else
    local ok = fs.exists("/proc/sys/net/ipv4/ip_forward")
    lines[#lines + 1] = { name = "ip forwarding", status = ok and "ok" or (required and "fail" or "warn"), required = required,
      detail = "net.ipv4.ip_forward=" .. fwd .. (ok and " (riklet turns it on at start)" or ""),
      fix = ok and "" or "this kernel has no IPv4 forwarding: Pods get no network" }
  end
end

local function kvm(lines, functions)
  local f = io.open("/dev/kvm", "r+")
  if f then
    f:close()
    lines[#lines + 1] = { name = "/dev/kvm", status = "ok", required = false, detail = "usable (hardware virtualization)", fix = "" }
    return
  end
  local why = fs.exists("/dev/kvm") and "present but not usable (permissions, or KVM taken)" or "absent"
  lines[#lines + 1] = { name = "/dev/kvm", status = functions and "warn" or "off", required = false,
    detail = why .. ": QEMU runs Functions with TCG (slow), firecracker cannot run",
    fix = "enable virtualization (nested on a VM), modprobe kvm_intel or kvm_amd" }
end

local function guest_file(lines, name, path, option, env, required)
  if not path then
    lines[#lines + 1] = { name = name, status = required and "fail" or "off", required = required,
      detail = "not configured", fix = ("--%s FILE (or %s) to run Functions"):format(option, env) }
    return
  end
  local st = fs.stat(path)
  local fh = st and io.open(path, "rb")
  if fh then
    fh:close()
    lines[#lines + 1] = { name = name, status = "ok", required = required, detail = ("%s (%s)"):format(path, size(st.size or 0)), fix = "" }
  else
    lines[#lines + 1] = { name = name, status = required and "fail" or "warn", required = required, detail = ("%s: not a readable file"):format(path),
      fix = ("fix --%s (%s)"):format(option, env) }
  end
end

local function free_space(lines, dir)
  local p = dir
  while p ~= "" and not fs.exists(p) do p = p:match("^(.*)/[^/]*$") or "" end
  if p == "" then p = "/" end
  local u, err = metrics.fs(p)
  if not u then
    lines[#lines + 1] = { name = "state dir space", status = "fail", required = true, detail = err, fix = "check --state-dir" }
    return
  end
  local pct = u.total > 0 and 100 * u.free / u.total or 0
  local detail = ("%s: %s free of %s (%.0f%%), %d inodes free"):format(dir, size(u.free), size(u.total), pct, u.files_free)
  if u.free < M.MIN_FREE or (u.files > 0 and u.files_free < 1000) then
    lines[#lines + 1] = { name = "state dir space", status = "fail", required = true, detail = detail,
      fix = ("free space (at least %s: images and container root filesystems live there; riklet prune) or move --state-dir"):format(mib(M.MIN_FREE)) }
  elseif u.free < M.WARN_FREE or pct < 10 then
    lines[#lines + 1] = { name = "state dir space", status = "warn", required = true, detail = detail,
      fix = "little room for images: riklet prune, or a larger disk for --state-dir" }
  else
    lines[#lines + 1] = { name = "state dir space", status = "ok", required = true, detail = detail, fix = "" }
  end
end

function M.run(cfg, opts)
  opts = opts or {}
  local lines = {}
  if core.getuid() ~= 0 then
    lines[#lines + 1] = { name = "root", status = "fail", required = true, detail = ("running as uid %d"):format(core.getuid()),
      fix = "riklet needs root (runc, overlay mounts, netlink, iptables): sudo riklet ..." }
  end
  tool(lines, "runc", cfg.runc or "runc", "--version", "runc version (%S+)", "runc", "runc", true)
  tool(lines, "conmon", cfg.conmon or "conmon", "--version", "conmon version (%S+)", "conmon", "conmon", true)
  tool(lines, "skopeo", cfg.skopeo or "skopeo", "--version", "skopeo version (%S+)", "skopeo", "skopeo", true)
  tool(lines, "umoci", cfg.umoci or "umoci", "--version", "umoci version (%S+)", "umoci", "umoci", true)
  cgroups(lines)
  overlayfs(lines)
  if not (opts.startup and cfg.network == "none") then firewall(lines, cfg, cfg.network == "bridge") end
  -- Functions are configured once a guest kernel is given
  local functions = cfg.kernel_path ~= nil
  -- ... but at start-up they only warn: a node whose Function set-up is broken keeps running Pods,
  -- and each Function goes FAILED with the reason (the driver checks the kernel per create)
  local fn_required = functions and not opts.startup
  if functions or not opts.startup then
    local qemu = cfg.qemu or "qemu-system-x86_64"
    local fc = cfg.firecracker or "firecracker"
    local q, qerr = version_of({ qemu, "--version" }, "version (%S+)")
    local f, ferr = version_of({ fc, "--version" }, "Firecracker v?(%S+)")
    lines[#lines + 1] = { name = "qemu", status = q and "ok" or (functions and not f and (fn_required and "fail" or "warn") or "off"),
      required = fn_required, detail = q and (qemu .. " " .. q) or (qemu .. ": " .. qerr),
      fix = q and "" or "apt-get install qemu-system-x86 (Functions need QEMU or firecracker)" }
    lines[#lines + 1] = { name = "firecracker", status = f and "ok" or "off", required = false,
      detail = f and (fc .. " " .. f) or (fc .. ": " .. ferr),
      fix = f and "" or "optional: a firecracker release binary on PATH (needs /dev/kvm)" }
    kvm(lines, functions)
    guest_file(lines, "guest kernel", cfg.kernel_path, "kernel-path", "KERNEL_LOCATION", fn_required)
    if functions or cfg.initrd_path then
      guest_file(lines, "guest initrd", cfg.initrd_path, "initrd-path", "INITRD_LOCATION", false)
    else
      lines[#lines + 1] = { name = "guest initrd", status = "off", required = false, detail = "not configured",
        fix = "--initrd-path FILE (or INITRD_LOCATION) when the guest kernel needs one" }
    end
  end
  if cfg.auth_file then
    local text, err = fs.read(cfg.auth_file, 1024 * 1024, { follow = true })
    local doc = text and require("riklet.json").decode(text)
    local ok = type(doc) == "table" and type(doc.auths) == "table"
    local n = 0
    for _ in pairs(ok and doc.auths or {}) do n = n + 1 end
    lines[#lines + 1] = { name = "auth file", status = ok and "ok" or "fail", required = true,
      detail = ok and ("%s: credentials for %d registr%s"):format(cfg.auth_file, n, n == 1 and "y" or "ies")
        or ("%s: %s"):format(cfg.auth_file, text and "not a containers-auth.json document ({\"auths\": {...}})" or tostring(err)),
      fix = ok and "" or "fix --auth-file (podman login --authfile FILE REGISTRY writes one)" }
  end
  -- interLink httpGet probes run curl inside the Pod's network namespace through nsenter
  local il = type(cfg.interlink) == "table" and #cfg.interlink > 0
  if il or not opts.startup then
    local c, cerr = version_of({ "curl", "--version" }, "^curl (%S+)")
    local n, nerr = version_of({ "nsenter", "--version" }, "util%-linux (%S+)")
    lines[#lines + 1] = { name = "probe tools", status = (c and n) and "ok" or (il and "warn" or "off"), required = false,
      detail = (c and n) and ("curl %s, nsenter %s"):format(c, n) or (not c and ("curl: " .. cerr) or ("nsenter: " .. nerr)),
      fix = (c and n) and "" or "apt-get install curl util-linux (interLink httpGet probes run them; without, each such probe fails)" }
  end
  free_space(lines, cfg.state_dir)
  -- the drivers' code, loaded on demand by the agent: broken or missing, riklet does not start
  -- (riklet.drivers; at start-up its files are kept open for that first use)
  local drivers = require "riklet.drivers"
  local n, derr
  if opts.startup then n, derr = drivers.check_apart(cfg)
  else
    n, derr = drivers.check(cfg)
    n = n and #n
  end
  lines[#lines + 1] = { name = "driver code", status = n and "ok" or "fail", required = true,
    detail = n and ("%d modules of the Pod and Function drivers and the VM backends load"):format(n) or derr,
    fix = n and "" or "fix the option it names, or reinstall riklet (its Lua files are damaged or missing)" }
  return lines
end

function M.failures(lines)
  local out = {}
  for _, l in ipairs(lines) do
    if l.required and l.status == "fail" then out[#out + 1] = l end
  end
  return out
end

local LABEL = { ok = "ok", warn = "WARN", fail = "FAIL", off = "-" }

function M.format(lines)
  local w = 5
  for _, l in ipairs(lines) do w = math.max(w, #l.name) end
  local fmt = "%-" .. w .. "s  %-6s  %-8s  %s%s\n"
  local out = { fmt:format("CHECK", "STATUS", "NEEDED", "DETAIL", "") }
  for _, l in ipairs(lines) do
    out[#out + 1] = fmt:format(l.name, LABEL[l.status] or l.status, l.required and "required" or "optional",
      l.detail, l.fix ~= "" and ("\n" .. (" "):rep(w + 20) .. "-> " .. l.fix) or "")
  end
  return table.concat(out)
end

return M
