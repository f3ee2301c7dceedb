-- riklet.config: the operator options of issue 11 that are spelled two ways or checked at parse.
local T = require "riklet.testlib"
local config = require "riklet.config"

local cfg = assert(config.parse({ "--container-log-max-size", "20000" }))
T.is(cfg.log_size_max, 20000, "--container-log-max-size sets the conmon cap (log_size_max)")
cfg = assert(config.parse({ "--log-size-max", "30000", "--container-log-max-size=20000" }))
T.is(cfg.log_size_max, 20000, "--container-log-max-size wins over --log-size-max")
cfg = assert(config.parse({ "--log-size-max", "30000" }))
T.is(cfg.log_size_max, 30000, "--log-size-max alone still works")
cfg = assert(config.parse({}))
T.is(cfg.log_size_max, 10485760, "default 10 MiB")
T.is(cfg.metrics_listen, nil, "--metrics-listen is off by default")
local bad, err = config.parse({ "--container-log-max-size", "ten" })
T.is(bad, nil, "--container-log-max-size ten: refused")
T.like(err or "", "container%-log%-max%-size", "naming the option: " .. tostring(err))
cfg = assert(config.parse({ "--metrics-listen", "127.0.0.1:9100" }))
T.is(cfg.metrics_listen, "127.0.0.1:9100", "--metrics-listen HOST:PORT")
