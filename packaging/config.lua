-- /etc/riklet/config.lua — riklet options as a Lua table (keys with _ instead of -), read by
-- riklet.service through --config. Order: defaults < this file < RIKLET_* environment
-- (/etc/default/riklet) < flags. `riklet --help` lists every option; SIGHUP
-- (systemctl reload riklet) re-reads this file.
return {
  -- master_ip = "10.0.0.1:4995",
  -- state_dir = "/var/lib/riklet",
  -- network = "auto",
  -- insecure_registries = { "registry.local:5000" },
  -- kernel_path = "/var/lib/riklet/vmlinux",
  -- metrics_listen = "127.0.0.1:9558", -- Prometheus GET /metrics
}
