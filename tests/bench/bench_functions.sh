#!/usr/bin/env bash
# bench_functions.sh — Function start latency through riklet side by side with a bare QEMU boot of
# the same guest with the same accelerator, in the same run, and riklet's RSS with 10 VMs (a
# benchmark, not a test: it prints numbers, and fails only when it cannot measure).
#
#   sudo tests/bench/bench_functions.sh [RIKLET]     RIKLET defaults to $RIKLET or build/riklet
#
# Environment: RUNS (default 3) interleaved runs of each; VMS (default 10) VMs for the RSS measure;
# ACCEL (default tcg; KVM guests hang on the machine this was written on).
# Everything runs in a private network + mount namespace (the host's links and rules untouched).
#  1. riklet: a manifest is moved into the --standalone dir at t0; RUNNING is seen in `riklet ps
#     --json` (polled every 50 ms), the first HTTP answer with curl on the node port (polled every
#     50 ms). riklet's own record of both (vm.running_after / answering_after, from the create) is
#     shown beside. The instance is destroyed between runs (not timed).
#  2. bare: the same qemu-system-x86_64 command riklet runs (-M pc, virtio-blk-pci on a fresh qcow2
#     overlay, virtio-net-pci on a TAP, -daemonize) started at t0: QEMU's parent returning is
#     "running", curl on the guest's address gives the first answer.
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
RUNS=${RUNS:-3} VMS=${VMS:-10} ACCEL=${ACCEL:-tcg} ROOTFS_MIB=${ROOTFS_MIB:-128}
rk_init
ip link set lo up
G=$TEST_TMP/guest
guest_build "$G" serve >&2 || bail_out "cannot build the guest"
qemu_pids() { pgrep -f -- "-pidfile $TEST_TMP/" || true; }
on_exit 'for p in $(qemu_pids); do kill -9 "$p"; done'

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
poll() { until "$@"; do sleep 0.05; done; }
is_running() { [[ $(rk_status "$1") == RUNNING ]]; }
answers() { curl -fs -m 1 -o /dev/null "http://$1/"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

manifest() { # manifest ID PORT
	printf '{"apiVersion":"v1","kind":"Function","name":"%s","replicas":null,"spec":{"containers":[],"function":{"execution":{"rootfs":"file://%s"},"exposure":{"port":%d,"targetPort":8080,"type":"NodePort"}}}}' \
		"$1" "$G/rootfs-serve.ext4" "$2" >"$TEST_TMP/$1.json"
}

rk_start_standalone --network bridge --kernel-path "$G/vmlinuz" --initrd-path "$G/initrd.img" --vm-accel "$ACCEL" \
	--stop-grace 3 --log-level info || bail_out "riklet did not start"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$RK_PID/status"; }
rss_idle=$(rss)

ip tuntap add dev rkbench0 mode tap && ip addr add 10.91.0.2/30 dev rkbench0 && ip link set rkbench0 up

for i in $(seq 1 "$RUNS"); do
	# riklet
	manifest "b$i" 45100
	t0=$(now)
	mv "$TEST_TMP/b$i.json" "$MANIFESTS/"
	poll is_running "b$i"
	t1=$(now)
	poll answers 127.0.0.1:45100
	t2=$(now)
	r_run=$(ms "$t0" "$t1") r_http=$(ms "$t0" "$t2")
	own=$(rk_ps_json | jq -r --arg id "b$i" '.instances[] | select(.id == $id) | "\(.vm.running_after * 1000 | floor) \(.vm.answering_after * 1000 | floor)"')
	rm "$MANIFESTS/b$i.json"
	rk_wait_status 60 "b$i" TERMINATED || bail_out "b$i was not destroyed"
	# bare QEMU, same guest, same accelerator
	d=$TEST_TMP/bare$i && mkdir -p "$d"
	t0=$(now)
	qemu-img create -q -f qcow2 -F raw -b "$G/rootfs-serve.ext4" "$d/disk.qcow2"
	qemu-system-x86_64 -name bare -M pc -accel "$ACCEL" -m 128 -smp 1 -no-reboot -nodefaults -display none -vga none \
		-kernel "$G/vmlinuz" -initrd "$G/initrd.img" \
		-append "console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip=10.91.0.1::10.91.0.2:255.255.255.252::eth0:off" \
		-serial "file:$d/console.log" -drive "file=$d/disk.qcow2,format=qcow2,if=none,id=rootfs" \
		-device virtio-blk-pci,drive=rootfs -netdev tap,id=net0,ifname=rkbench0,script=no,downscript=no \
		-device virtio-net-pci,netdev=net0 -qmp "unix:$d/qmp.sock,server=on,wait=off" -pidfile "$d/qemu.pid" -daemonize
	t1=$(now)
	poll answers 10.91.0.1:8080
	t2=$(now)
	b_run=$(ms "$t0" "$t1") b_http=$(ms "$t0" "$t2")
	qp=$(cat "$d/qemu.pid")
	kill "$qp"
	wait_for 20 eval "! kill -0 $qp 2>/dev/null"
	echo "run $i: riklet RUNNING $r_run ms, HTTP $r_http ms (riklet's own: $own) | bare QEMU started $b_run ms, HTTP $b_http ms"
	echo "$r_run $r_http $b_run $b_http" >>"$TEST_TMP/runs"
done

# the rootfs over HTTP: cold download vs cached (304)
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

for i in $(seq 1 "$VMS"); do manifest "m$i" $((45200 + i)); mv "$TEST_TMP/m$i.json" "$MANIFESTS/"; done
for i in $(seq 1 "$VMS"); do rk_wait_status 180 "m$i" RUNNING || bail_out "m$i did not run"; done
rss_vms=$(rss)
running=$(qemu_pids | wc -l)
for i in $(seq 1 "$VMS"); do rm "$MANIFESTS/m$i.json"; done
for i in $(seq 1 "$VMS"); do rk_wait_status 120 "m$i" TERMINATED; done
rss_after=$(rss)

col() { awk -v c="$1" '{ print $c }' "$TEST_TMP/runs" | median; }
echo
echo "| Functions ($ACCEL, median of $RUNS) | riklet | bare QEMU | ratio |"
echo "|---|---|---|---|"
printf '| CREATE -> RUNNING | %s ms | %s ms (QEMU -daemonize returns) | %s |\n' "$(col 1)" "$(col 3)" \
	"$(awk -v a="$(col 1)" -v b="$(col 3)" 'BEGIN { printf "%.2fx", a / b }')"
printf '| CREATE -> first HTTP answer | %s ms | %s ms | %s |\n' "$(col 2)" "$(col 4)" \
	"$(awk -v a="$(col 2)" -v b="$(col 4)" 'BEGIN { printf "%.2fx", a / b }')"
dcol() { awk -v c="$1" '{ print $c }' "$TEST_TMP/downloads" | median; }
printf '| CREATE -> RUNNING, rootfs over HTTP (%d MiB, loopback): cold download / cached (304) | %s / %s ms | | |\n' \
	"$ROOTFS_MIB" "$(dcol 1)" "$(dcol 3)"
printf '| riklet VmRSS idle / %d VMs running (%d QEMUs) / after | %s / %s / %s KiB | | |\n' "$VMS" "$running" \
	"$rss_idle" "$rss_vms" "$rss_after"
