-- riklet.prom: the exposition text is what promtool accepts, label values and help texts with
-- backslashes, quotes and newlines escaped; histograms cumulative with +Inf = count.
local T = require "riklet.testlib"
local proc = require "riklet.proc"
local prom = require "riklet.prom"

local function promtool(text)
  local r, err = proc.run({ "promtool", "check", "metrics" }, { input = text, timeout = 60 })
  if not r then return nil, err end
  return r.code == 0, (r.stdout or "") .. (r.stderr or "")
end

prom.observe("riklet_instance_start_duration_seconds", { kind = "Pod" }, 0.3)
prom.observe("riklet_instance_start_duration_seconds", { kind = "Pod" }, 7)
prom.observe("riklet_instance_start_duration_seconds", { kind = "Pod" }, 1000)
prom.inc("riklet_image_pulls_total", { result = "ok" })
prom.inc("riklet_image_pulls_total", { result = "ok" }, 2)
local text = prom.render(prom.collect({ records = {
  { id = "a", kind = "Pod", status = "RUNNING", containers = { { name = "c", restart_count = 4, state = "exited" } } },
  { id = "b", kind = "Function", status = "FAILED" } } }))
T.like(text, '\nriklet_image_pulls_total{result="ok"} 3\n', "a counter: inc by 1 then 2")
T.like(text, '\nriklet_instance_start_duration_seconds_bucket{kind="Pod",le="0.5"} 1\n', "histogram bucket 0.5: 1")
T.like(text, '\nriklet_instance_start_duration_seconds_bucket{kind="Pod",le="10"} 2\n', "bucket 10: cumulative 2")
T.like(text, '\nriklet_instance_start_duration_seconds_bucket{kind="Pod",le="%+Inf"} 3\n', "bucket +Inf: 3")
T.like(text, '\nriklet_instance_start_duration_seconds_sum{kind="Pod"} 1007.3\n', "sum")
T.like(text, '\nriklet_instances{kind="Function",state="FAILED"} 1\n', "instances by kind and state")
T.like(text, '\nriklet_instances{kind="Pod",state="CREATING"} 0\n', "states with no instance are 0")
T.like(text, '\nriklet_container_restarts_total{container="c",instance="a"} 4\n', "container restarts")
local ok, out = promtool(text)
if ok == nil then T.skip("promtool is not installed: " .. tostring(out), 1)
else T.ok(ok, "promtool check metrics accepts it: " .. out) end

local nasty = prom.render({ { name = "riklet_test_total", type = "counter", help = "a \\ back\nslash",
  samples = { { labels = { instance = 'q"uo\\te\nnl' }, value = 1.5 }, { labels = {}, value = 2 ^ 52 + 1 } } } })
T.like(nasty, '# HELP riklet_test_total a \\\\ back\\nslash\n', "help: backslash and newline escaped")
T.like(nasty, 'riklet_test_total{instance="q\\"uo\\\\te\\nnl"} 1.5\n', "label value: quote, backslash, newline escaped")
T.like(nasty, 'riklet_test_total 4503599627370497\n', "a large integer stays exact")
ok, out = promtool(nasty)
if ok ~= nil then T.ok(ok, "promtool accepts the escaped text: " .. out) end
