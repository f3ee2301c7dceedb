# leaks.sh — what riklet has on the node now, for the tests that kill it or inject faults
# (test_fault_points.sh, test_kill_loop.sh). Run inside the test's private network + mount
# namespace, with STATE, RUNC_ROOT and NETNS set to the --state-dir, --runc-root and --netns-dir
# given to riklet.
#
#   rk_owned [EXCEPT_PID...]   one line per resource riklet owns now, "KIND WHAT":
#       container ID        a container in RUNC_ROOT
#       process PID CMD     a process whose command line names STATE or RUNC_ROOT (conmon, a
#                           runc or skopeo left running), other than EXCEPT_PID (the riklet)
#       mount PATH          a mount at or below STATE, or a namespace file mounted in NETNS
#       netns NAME          a file in NETNS
#       veth NAME           a link named as riklet names a Pod's veth or a Function's TAP
#       address IP ID       an address allocated to instance ID in STATE/network.json
#       rule RULE           an iptables rule (nat or filter) owned by an instance ("riklet:<id>")
#       dir NAME            an instance directory in STATE/instances
#       record NAME         an instance record in STATE/records (quarantined ones too)
#       tmp PATH            a half-done pull or unpack (.tmp-*) in the image cache, or write
#                           (network.json.tmp.<pid>; a record's shows as a record)
#     Nothing at all when riklet owns nothing (the bridge and the node-wide rules do not count).
#   rk_owned_kinds [EXCEPT_PID...]   the kinds present, sorted, one space between

# shellcheck disable=SC2153 # STATE, RUNC_ROOT and NETNS are the test's
rk_owned() {
	local p cmd f
	# runc keeps one directory per container in its root (what `runc list` reads)
	[[ -d $RUNC_ROOT ]] && find "$RUNC_ROOT" -mindepth 1 -maxdepth 1 -type d -printf 'container %f\n'
	grep -laF -e "$STATE" -e "$RUNC_ROOT" /proc/[0-9]*/cmdline 2>/dev/null | while IFS=/ read -r _ _ p _; do
		[[ $p == "$$" || $p == "$BASHPID" || " $* " == *" $p "* ]] && continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
		[[ -n $cmd && $cmd != "grep -laF "* ]] && printf 'process %s %s\n' "$p" "$cmd"
	done
	# (the test's paths have no character mountinfo escapes)
	awk -v s="$STATE" -v n="$NETNS/" '$5 == s || index($5, s "/") == 1 || index($5, n) == 1 { print "mount " $5 }' \
		/proc/self/mountinfo
	[[ -d $NETNS ]] && find "$NETNS" -mindepth 1 -maxdepth 1 -printf 'netns %f\n'
	ip -o link 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2) } $2 ~ /^rk[vt][0-9a-f]+$/ && length($2) == 11 { print "veth " $2 }'
	[[ -f $STATE/network.json ]] &&
		jq -r '.instances // {} | to_entries[] | "address \(.value.ip // .value.guest_ip) \(.key)"' "$STATE/network.json"
	iptables-legacy-save 2>/dev/null | grep -- '--comment "\{0,1\}riklet:' | grep -v 'riklet:infra' | sed 's/^/rule /'
	[[ -d $STATE/instances ]] && find "$STATE/instances" -mindepth 1 -maxdepth 1 -printf 'dir %f\n'
	[[ -d $STATE/records ]] && find "$STATE/records" -mindepth 1 -type f -printf 'record %P\n'
	for f in "$STATE"/images/.tmp-* "$STATE"/rootfs/.tmp-* "$STATE"/*.tmp.*; do [[ -e $f ]] && printf 'tmp %s\n' "$f"; done
	return 0
}

rk_owned_kinds() { rk_owned "$@" | awk '{ print $1 }' | sort -u | tr '\n' ' ' | sed 's/ $//'; }
