-- The start-up check for host rules in nftables, against real nft in private network namespaces:
-- a forward chain with policy drop (as Docker's iptables-nft FORWARD DROP) and no rule for
-- riklet's links gives a warning that says what to run; running what it says clears it.
local T = require "riklet.testlib"
local proc = require "riklet.proc"
local netctl = require "riklet.netctl"

T.need_cmds({ nft = "nftables", unshare = "util-linux", ["iptables-nft"] = "iptables" })

-- run a shell script in a fresh network namespace, then list its ruleset as JSON
local function ruleset(script)
  local r = proc.run({ "unshare", "-n", "sh", "-ec", script .. "\nnft -j list ruleset" }, { timeout = 30 })
  assert(r and r.code == 0, "unshare/nft failed: " .. tostring(r and r.stderr))
  return r.stdout
end

local w, tables = netctl.nft_findings(ruleset(":"), "riklet0", "rkt")
T.is(#w, 0, "no nftables rules: no warning")
T.is(#tables, 0, "... and no table")

local docker = "iptables-nft -P FORWARD DROP\niptables-nft -N DOCKER-USER\niptables-nft -A FORWARD -j DOCKER-USER"
w = netctl.nft_findings(ruleset(docker), "riklet0", "rkt")
T.is(#w, 1, "iptables-nft FORWARD DROP (Docker's): one warning")
T.like(w[1] or "", "nftables chain 'ip filter FORWARD' %(hook forward, policy drop", "it names the chain")
T.like(w[1] or "", 'nft insert rule ip filter FORWARD iifname "{ riklet0, rkt%* }" accept', "it says what to run")

-- run exactly the nft commands the warning gives: no warning any more
local cmds = {}
for c in (w[1] or ""):gmatch("(nft insert rule [^;%(]-accept)") do cmds[#cmds + 1] = c end
T.is(#cmds, 3, "the warning gives three nft commands")
w = netctl.nft_findings(ruleset(docker .. "\n" .. table.concat(cmds, "\n")), "riklet0", "rkt")
T.is(#w, 0, "after running them: no warning")

-- Docker's own way (DOCKER-USER accepts for the bridge) is recognised too
w = netctl.nft_findings(ruleset(docker .. "\niptables-nft -I DOCKER-USER -i riklet0 -j ACCEPT"), "riklet0", "rkt")
T.is(#w, 0, "a DOCKER-USER accept for riklet0: no warning")

-- a native nftables forward drop (nftables.service, firewalld style)
local native = "nft add table inet host\nnft 'add chain inet host forward { type filter hook forward priority 0; policy drop; }'"
w, tables = netctl.nft_findings(ruleset(native), "riklet0", "rkt")
T.is(#w, 1, "an inet table with a forward drop chain: one warning")
T.like(w[1] or "", "chain 'inet host forward'", "... naming it")
T.is(tables[1], "inet host", "the table is listed")

-- a table that drops nothing: no warning (riklet logs it as information)
w, tables = netctl.nft_findings(ruleset("nft add table ip nat2\nnft 'add chain ip nat2 pre { type nat hook prerouting priority -100; }'"),
  "riklet0", "rkt")
T.is(#w, 0, "a nat table without a forward drop: no warning")
T.is(#tables, 1, "... but it is seen")

-- hostile or broken input never raises
T.is(#netctl.nft_findings("not json", "riklet0", "rkt"), 0, "garbage from nft: no warning, no error")
T.is(#netctl.nft_findings('{"nftables":[{"chain":{"hook":"forward","policy":"drop","family":1}}, 5, {"rule":7}]}', "riklet0", "rkt"), 1,
  "odd types in the JSON: handled")
T.done()
