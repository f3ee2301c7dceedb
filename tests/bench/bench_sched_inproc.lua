-- bench_sched_inproc.lua — run with `riklet test`: status updates per second over one
-- SendStatusUpdates stream, and CPU time per node metrics sample. Needs SCHED_URL (a running
-- tests/sched/scheduler.py). Prints "name<TAB>value<TAB>unit" lines.
local grpc = require "riklet.grpc"
local metrics = require "riklet.metrics"
local core = require "riklet.core"
local task = require "riklet.task"

local function out(name, v, unit) io.stdout:write(("%s\t%.3f\t%s\n"):format(name, v, unit)) io.stdout:flush() end

-- CPU per metrics sample
local n = tonumber(os.getenv("BENCH_METRICS_N")) or 2000
metrics.node_json()
local c0 = os.clock()
for _ = 1, n do assert(metrics.node_json()) end
out("metrics_cpu_per_sample", (os.clock() - c0) / n * 1e6, "us")

local url = os.getenv("SCHED_URL")
if url then
  local ch = assert(grpc.channel(url))
  local N = tonumber(os.getenv("BENCH_STATUS_N")) or 20000
  local st = ch:client_stream("/worker.Worker/SendStatusUpdates", "common.WorkerStatus", "google.protobuf.Empty")
  local t0 = core.now()
  local msg = { identifier = "bench", instance = { instance_id = "", status = "RUNNING", metrics = "" } }
  for i = 1, N do
    msg.instance.instance_id = "i" .. i
    assert(st:send(msg))
    if i % 500 == 0 then task.yield() end -- let the loop hand bytes to the connection
  end
  local resp, err = st:finish()
  assert(resp, err)
  local dt = core.now() - t0
  out("status_updates_per_s_one_stream", N / dt, "msg/s")
  -- one call per update, like upstream riklet
  local M = tonumber(os.getenv("BENCH_UNARY_N")) or 300
  t0 = core.now()
  for i = 1, M do
    msg.instance.instance_id = "u" .. i
    assert(ch:unary("/worker.Worker/SendStatusUpdates", "common.WorkerStatus", msg, "google.protobuf.Empty"))
  end
  out("status_updates_per_s_call_each", M / (core.now() - t0), "msg/s")
  ch:close()
end
