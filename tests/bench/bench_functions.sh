#!/usr/bin/env bash
# bench_functions.sh — Function start latency through riklet side by side with a bare QEMU boot of
# the same guest with the same accelerator, in the same run, and riklet's RSS with 10 VMs (a
# benchmark, not a test: it prints numbers, and fails only when it cannot measure).
#
#   sudo tests/bench/bench_functions.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: RUNS (default 5) interleaved runs of each; VMS (default 10) VMs for the RSS measure;
# ACCEL (default tcg; KVM guests hang on the machine this was written on); MACHINE (pc or
# microvm, default pc); PARTS (default "boot rootfs rss": which of 1-2, 3, 4 below to run).
# Everything runs in a private network + mount namespace (the host's links and rules untouched).
#  1. riklet: a manifest is moved into the --standalone dir at t0. CREATE -> RUNNING is riklet's
#     record of when the instance went RUNNING (vm.running_at, epoch; the record file is read
#     with bash builtins every 0.2 s only to know it happened: the poll's latency is not counted,
#     and it starts no process that would compete with QEMU's start); the first HTTP
#     answer is curl on the node port, polled (connect timeout 0.25 s). The create's steps (queue,
#     checks, rootfs, net, link, overlay, disk, spawn, qmp) are printed per run and as medians. One
#     untimed warm-up create first (the rootfs cache and the overlay template: cold vs cached is 3).
#  2. bare: the same QEMU command riklet runs (machine, devices, -daemonize, kernel arguments) on a
#     fresh qemu-img overlay and a TAP made beforehand, started at t0: QEMU's parent returning is
#     "running", curl on the guest's address (polled the same way) gives the first answer.
#     Runs alternate which of riklet and bare goes first, so a drift of the load hits both alike.
#  3. the rootfs over HTTP (tests/lib/httpserver.py on loopback, the guest grown to ROOTFS_MIB,
#     default 128): CREATE -> RUNNING with a cold cache (a URL never fetched: the whole download)
#     and then with it cached (the same URL again: a 304 revalidation), riklet's own record each.
#  4. riklet's VmRSS idle, with VMS VMs RUNNING (64 MiB guests), and after they are destroyed.
source "$(dirname "$0")/../lib/private_ns.sh"
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/../.." && pwd)
source "$SRC_DIR/tests/lib/common.sh" "${1:-${RIKLET:-$SRC_DIR/build/riklet}}"
source "$SRC_DIR/tests/lib/riklet.sh"
source "$SRC_DIR/tests/lib/guest.sh"
source "$SRC_DIR/tests/lib/fntest.sh"
need_root
need_cmd qemu-system-x86_64 qemu-img curl jq ip resize2fs
[[ -n ${RK_PRIVATE_NS:-} ]] || skip_all "needs a private network + mount namespace"
RUNS=${RUNS:-5} VMS=${VMS:-10} ACCEL=${ACCEL:-tcg} ROOTFS_MIB=${ROOTFS_MIB:-128} MACHINE=${MACHINE:-pc}
PARTS=${PARTS:-boot rootfs rss}
part() { [[ " $PARTS " == *" $1 "* ]]; }
rk_init
ip link set lo up
G=$TEST_TMP/guest
guest_build "$G" serve >&2 || bail_out "cannot build the guest"
qemu_pids() { pgrep -f -- "-pidfile $TEST_TMP/" || true; }
on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
# poll / poll_slow: until "$@" succeeds, every 50 / 200 ms; a guest that hangs stops the bench
# after POLL_MAX seconds (default 300) rather than for ever
POLL_MAX=${POLL_MAX:-300}
poll() { local end=$((SECONDS + POLL_MAX)); until "$@"; do ((SECONDS < end)) || bail_out "no success within $POLL_MAX s: $*"; sleep 0.05; done; }
poll_slow() { local end=$((SECONDS + POLL_MAX)); until "$@"; do ((SECONDS < end)) || bail_out "no success within $POLL_MAX s: $*"; sleep 0.2; done; }
is_running() { [[ $(rk_status "$1") == RUNNING ]]; }
# RUNNING in the instance's record, read with bash builtins: polling `riklet ps` + jq every 50 ms
# would compete for the CPU with the QEMU riklet is starting (the bare boot has no such poll)
record_running() {
	local r=""
	[[ -r $STATE/records/$1.json ]] && read -r -d '' r <"$STATE/records/$1.json"
	[[ $r =~ \"status\":[[:space:]]*\"RUNNING\" ]]
}
answers() { curl -fs --connect-timeout 0.25 -m 1 -o /dev/null "http://$1/"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
vm_json() { rk_ps_json | jq -c --arg id "$1" '.instances[] | select(.id == $id) | .vm'; }

manifest() { # manifest ID PORT
	printf '{"apiVersion":"v1","kind":"Function","name":"%s","replicas":null,"spec":{"containers":[],"function":{"execution":{"rootfs":"file://%s"},"exposure":{"port":%d,"targetPort":8080,"type":"NodePort"}}}}' \
		"$1" "$G/rootfs-serve.ext4" "$2" >"$TEST_TMP/$1.json"
}

rk_start_standalone --network bridge --kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel "$ACCEL" \
	--vm-machine "$MACHINE" --stop-grace 3 --log-level info || bail_out "riklet did not start"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$RK_PID/status"; }
rss_idle=$(rss)

ip tuntap add dev rkbench0 mode tap && ip addr add 10.91.0.2/30 dev rkbench0 && ip link set rkbench0 up

# the bare command: riklet's (lua/riklet/vmm/qemu.lua argv) with the bench's paths
if [[ $MACHINE == microvm ]]; then
	BARE_M=(-M microvm,acpi=on) BLK=virtio-blk-device NET=virtio-net-device
	[[ $ACCEL == kvm ]] || BARE_APPEND=" tsc_early_khz=$(awk '/^cpu MHz/ { printf "%d", $4 * 1000 + 0.5; exit }' /proc/cpuinfo)"
else
	BARE_M=(-M pc -vga none) BLK=virtio-blk-pci NET=virtio-net-pci
fi
STEPS="queue checks rootfs net link overlay disk spawn qmp"

riklet_run() { # riklet_run ID PORT: one timed create; appends "run http" to TEST_TMP/rk and its steps to TEST_TMP/rksteps
	local id=$1 port=$2 t0 t2 vm run
	manifest "$id" "$port"
	t0=$(now)
	mv "$TEST_TMP/$id.json" "$MANIFESTS/"
	poll_slow record_running "$id"
	poll answers "127.0.0.1:$port"
	t2=$(now)
	vm=$(vm_json "$id")
	run=$(ms "$t0" "$(jq -r .running_at <<<"$vm")")
	echo "$run $(ms "$t0" "$t2")" >>"$TEST_TMP/rk"
	jq -r --arg s "$STEPS" '[($s | split(" "))[] as $k | (.steps[$k] // 0) * 1000 | floor] | join(" ")' <<<"$vm" >>"$TEST_TMP/rksteps"
	printf '  riklet: RUNNING %s ms, HTTP %s ms (its probe: %s ms); steps ms: %s\n' "$run" "$(ms "$t0" "$t2")" \
		"$(jq -r '.answering_after * 1000 | floor' <<<"$vm")" \
		"$(paste -d= <(tr ' ' '\n' <<<"$STEPS") <(tail -1 "$TEST_TMP/rksteps" | tr ' ' '\n') | tr '\n' ' ')"
	rm "$MANIFESTS/$id.json"
	rk_wait_status 60 "$id" TERMINATED || bail_out "$id was not destroyed"
}

bare_run() { # bare_run N: the same guest with bare QEMU; appends "run http img" to TEST_TMP/bare
	local d=$TEST_TMP/bare$1 t0 t1 t2 ti qp
	mkdir -p "$d"
	t0=$(now)
	qemu-img create -q -f qcow2 -F raw -b "$G/rootfs-serve.ext4" "$d/disk.qcow2"
	ti=$(now)
	qemu-system-x86_64 -name bare "${BARE_M[@]}" -accel "$ACCEL" -m 128 -smp 1 -no-reboot -nodefaults -display none \
		-kernel "$G/vmlinuz" -initrd "$G/initrd.img" \
		-append "console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip=10.91.0.1::10.91.0.2:255.255.255.252::eth0:off$BARE_APPEND" \
		-chardev "file,id=console,append=on,path=$d/console.log" -serial chardev:console \
		-drive "file=$d/disk.qcow2,format=qcow2,if=none,id=rootfs,discard=unmap" \
		-device "$BLK,drive=rootfs" -netdev tap,id=net0,ifname=rkbench0,script=no,downscript=no \
		-device "$NET,netdev=net0" -qmp "unix:$d/qmp.sock,server=on,wait=off" -pidfile "$d/qemu.pid" -daemonize
	t1=$(now)
	poll answers 10.91.0.1:8080
	t2=$(now)
	echo "$(ms "$t0" "$t1") $(ms "$t0" "$t2") $(ms "$t0" "$ti")" >>"$TEST_TMP/bare"
	printf '  bare:   RUNNING %s ms (qemu-img %s ms), HTTP %s ms\n' "$(ms "$t0" "$t1")" "$(ms "$t0" "$ti")" "$(ms "$t0" "$t2")"
	qp=$(cat "$d/qemu.pid")
	kill "$qp"
	wait_for 20 eval "! kill -0 $qp 2>/dev/null"
}

if part boot; then
	echo "boot: $MACHINE, $ACCEL, $RUNS runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	manifest w0 45099 && mv "$TEST_TMP/w0.json" "$MANIFESTS/" # warm-up, untimed
	rk_wait_status 300 w0 RUNNING || bail_out "the warm-up Function did not run: $(rk_reason w0)"
	rm "$MANIFESTS/w0.json" && rk_wait_status 60 w0 TERMINATED
	for i in $(seq 1 "$RUNS"); do
		echo "run $i (load average $(cut -d' ' -f1 /proc/loadavg)):"
		if ((i % 2)); then riklet_run "b$i" $((45100 + i)); bare_run "$i"
		else bare_run "$i"; riklet_run "b$i" $((45100 + i)); fi
	done
fi

# the rootfs over HTTP: cold download vs cached (304)
if part rootfs; then
	mkdir -p "$TEST_TMP/www"
	cp "$G/rootfs-serve.ext4" "$TEST_TMP/www/big.img"
	resize2fs -f "$TEST_TMP/www/big.img" "${ROOTFS_MIB}M" >/dev/null 2>&1 || bail_out "resize2fs failed"
	http_serve "$TEST_TMP/www"
	for i in $(seq 1 "$RUNS"); do
		ln "$TEST_TMP/www/big.img" "$TEST_TMP/www/r$i.img" # a URL never fetched: a cold cache
		line=""
		for kind in cold cached; do
			printf '{"apiVersion":"v1","kind":"Function","name":"d%s","replicas":null,"spec":{"containers":[],"function":{"execution":{"rootfs":"%s/r%s.img"},"exposure":null}}}' \
				"$i$kind" "$HTTP_BASE" "$i" >"$TEST_TMP/d$i$kind.json"
			t0=$(now)
			mv "$TEST_TMP/d$i$kind.json" "$MANIFESTS/"
			poll is_running "d$i$kind"
			t1=$(now)
			own=$(rk_ps_json | jq -r --arg id "d$i$kind" '.instances[] | select(.id == $id) | .vm.running_after * 1000 | floor')
			rm "$MANIFESTS/d$i$kind.json"
			rk_wait_status 60 "d$i$kind" TERMINATED || bail_out "d$i$kind was not destroyed"
			line+="$(ms "$t0" "$t1") $own "
		done
		echo "run $i: rootfs over HTTP ($ROOTFS_MIB MiB) CREATE -> RUNNING: cold $(cut -d' ' -f1 <<<"$line") ms, cached $(cut -d' ' -f3 <<<"$line") ms (riklet's own: $(cut -d' ' -f2 <<<"$line") / $(cut -d' ' -f4 <<<"$line"))"
		echo "$line" >>"$TEST_TMP/downloads"
	done
	[[ $(grep -c '^GET /r1.img 200' "$TEST_TMP/http.log") == 1 && $(grep -c '^GET /r1.img 304' "$TEST_TMP/http.log") == 1 ]] ||
		bail_out "the cached create did not revalidate with a 304: $(grep /r1.img "$TEST_TMP/http.log" | tr '\n' ';')"
fi

if part rss; then
	for i in $(seq 1 "$VMS"); do manifest "m$i" $((45200 + i)); mv "$TEST_TMP/m$i.json" "$MANIFESTS/"; done
	for i in $(seq 1 "$VMS"); do rk_wait_status 180 "m$i" RUNNING || bail_out "m$i did not run"; done
	rss_vms=$(rss)
	running=$(qemu_pids | wc -l)
	for i in $(seq 1 "$VMS"); do rm "$MANIFESTS/m$i.json"; done
	for i in $(seq 1 "$VMS"); do rk_wait_status 120 "m$i" TERMINATED; done
	rss_after=$(rss)
fi

col() { awk -v c="$2" '{ print $c }' "$TEST_TMP/$1" | median; }
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if part boot; then
	echo "| Functions ($MACHINE, $ACCEL, median of $RUNS interleaved runs) | riklet | bare QEMU | ratio |"
	echo "|---|---|---|---|"
	printf '| CREATE -> RUNNING | %s ms | %s ms (qemu-img + QEMU -daemonize returns) | %s |\n' "$(col rk 1)" "$(col bare 1)" \
		"$(ratio "$(col rk 1)" "$(col bare 1)")"
	printf '| CREATE -> first HTTP answer | %s ms | %s ms | %s |\n' "$(col rk 2)" "$(col bare 2)" \
		"$(ratio "$(col rk 2)" "$(col bare 2)")"
	n=0 line=""
	for s in $STEPS; do n=$((n + 1)) line+="$s $(col rksteps $n), "; done
	echo "riklet's steps, median ms: ${line%, } (net and link/overlay/disk run side by side); bare qemu-img: $(col bare 3) ms"
fi
if part rootfs; then
	printf '| CREATE -> RUNNING, rootfs over HTTP (%d MiB, loopback): cold download / cached (304) | %s / %s ms | | |\n' \
		"$ROOTFS_MIB" "$(col downloads 1)" "$(col downloads 3)"
fi
if part rss; then
	printf '| riklet VmRSS idle / %d VMs running (%d QEMUs) / after | %s / %s / %s KiB | | |\n' "$VMS" "$running" \
		"$rss_idle" "$rss_vms" "$rss_after"
fi
