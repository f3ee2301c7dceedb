# guest.sh — build a tiny test guest for Functions, offline, from Debian packages already installed
# (linux-image-cloud-amd64, busybox-static, kmod, e2fsprogs, cpio). See /work/shared/GUESTS.md.
#
#   guest_build DIR [VARIANT...]   DIR/vmlinuz (the cloud kernel), DIR/initrd.img, and per variant
#                                  DIR/rootfs-VARIANT.ext4 (default variant: serve). Variants:
#       serve     brings eth0 up from the ip= kernel argument and serves HTTP on 8080 (busybox
#                 httpd: / answers "hello from a riklet guest"); ACPI power button → poweroff
#       poweroff  brings eth0 up, then powers the machine off after 2 s
#       panic     its init exits at once: the kernel panics ("Attempted to kill init")
#       flood     writes lines to the serial console as fast as it can, for ever
#   guest_kernel                   print the path of the cloud kernel (nonzero when absent)
#
# The kernel has ext4 built in but virtio only as modules, so the initrd (busybox + the virtio
# modules, loaded in dependency order) mounts /dev/vda and switch_roots into it. Kernel ip=
# autoconfiguration does not apply to a NIC whose driver came from an initrd, so the guest's init
# reads ip=GUEST::GATEWAY:NETMASK::eth0:off from /proc/cmdline and configures eth0 itself.
# Run directly: `bash tests/lib/guest.sh DIR [VARIANT...]`.

GUEST_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio virtio_blk
	failover net_failover virtio_net button evdev)

guest_kernel() {
	local k
	for k in /boot/vmlinuz-*-cloud-amd64; do
		[[ -r $k ]] && { printf '%s\n' "$k"; return 0; }
	done
	echo "guest.sh: no /boot/vmlinuz-*-cloud-amd64: install linux-image-cloud-amd64" >&2
	return 1
}

guest__bin() { # guest__bin ROOT: busybox-static and its applet links under ROOT/bin
	local root=$1 a
	mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/etc"
	cp /bin/busybox "$root/bin/busybox"
	for a in $(/bin/busybox --list); do
		[[ $a == busybox ]] || ln -sf busybox "$root/bin/$a"
	done
}

guest__initrd() { # guest__initrd KVER OUT
	local kver=$1 out=$2 d m f
	d=$(mktemp -d)
	guest__bin "$d"
	mkdir -p "$d/modules" "$d/newroot"
	for m in "${GUEST_MODULES[@]}"; do
		f=$(modinfo -k "$kver" -n "$m" 2>/dev/null) || { echo "guest.sh: module $m not found for $kver" >&2; rm -rf "$d"; return 1; }
		case $f in
		*.ko) cp "$f" "$d/modules/$m.ko" ;;
		*.ko.xz) xz -dc "$f" >"$d/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$d/modules/$m.ko" ;;
		*) echo "guest.sh: module $m: unexpected file $f" >&2; rm -rf "$d"; return 1 ;;
		esac
	done
	cat >"$d/init" <<EOF
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${GUEST_MODULES[*]}; do insmod /modules/\$m.ko 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
if ! mount -t ext4 /dev/vda /newroot; then
	echo "initrd: cannot mount /dev/vda as ext4" >&2
	exit 1
fi
mount --move /dev /newroot/dev 2>/dev/null
umount /proc /sys
exec switch_root /newroot /init
EOF
	chmod 755 "$d/init"
	(cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) >"$out" || { rm -rf "$d"; return 1; }
	rm -rf "$d"
}

guest__rootfs() { # guest__rootfs VARIANT OUT
	local variant=$1 out=$2 d
	d=$(mktemp -d)
	guest__bin "$d"
	mkdir -p "$d/www" "$d/etc/acpi/PWRF"
	echo "hello from a riklet guest" >"$d/www/index.html"
	printf '#!/bin/sh\npoweroff -f\n' >"$d/etc/acpi/PWRF/00000080"
	printf "PWRF PWRF/00000080\n" >"$d/etc/acpid.conf"
	chmod 755 "$d/etc/acpi/PWRF/00000080"
	cat >"$d/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
hostname riklet-guest
ip link set lo up
for a in $(cat /proc/cmdline); do
	case $a in ip=*) spec=${a#ip=} ;; esac
done
if [ -n "$spec" ]; then
	IFS=: read -r addr _peer gw mask _host dev _auto <<IP
$spec
IP
	dev=${dev:-eth0}
	ip addr add "$addr/$mask" dev "$dev" && ip link set "$dev" up
	[ -n "$gw" ] && ip route add default via "$gw"
	echo "guest: $dev $addr/$mask via $gw"
fi
EOF
	case $variant in
	serve)
		cat >>"$d/init" <<'EOF'
mkdir -p /var/log /var/run
acpid -f -d -c /etc/acpi -a /etc/acpid.conf >/dev/console 2>&1 &
httpd -p 8080 -h /www
echo "guest: serving HTTP on 8080"
while :; do sleep 3600; done
EOF
		;;
	poweroff)
		cat >>"$d/init" <<'EOF'
echo "guest: powering off in 2 s"
sleep 2
poweroff -f
EOF
		;;
	panic)
		cat >>"$d/init" <<'EOF'
echo "guest: init exits on purpose (the kernel panics)"
exit 3
EOF
		;;
	flood)
		cat >>"$d/init" <<'EOF'
echo "guest: flooding the serial console"
while :; do echo "flood flood flood flood flood flood flood flood flood flood flood flood flood flood"; done
EOF
		;;
	*) echo "guest.sh: unknown variant $variant (serve, poweroff, panic, flood)" >&2; rm -rf "$d"; return 1 ;;
	esac
	chmod 755 "$d/init"
	rm -f "$out"
	mkfs.ext4 -q -F -L rootfs -d "$d" "$out" 16M >/dev/null || { rm -rf "$d"; return 1; }
	rm -rf "$d"
}

guest_build() {
	local dir=$1 kernel kver v
	shift
	(($# > 0)) || set -- serve
	kernel=$(guest_kernel) || return 1
	kver=${kernel#/boot/vmlinuz-}
	mkdir -p "$dir" || return 1
	cp "$kernel" "$dir/vmlinuz" || return 1
	guest__initrd "$kver" "$dir/initrd.img" || return 1
	for v in "$@"; do
		guest__rootfs "$v" "$dir/rootfs-$v.ext4" || return 1
	done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -e
	(($# >= 1)) || { echo "usage: $0 DIR [serve|poweroff|panic|flood...]" >&2; exit 2; }
	guest_build "$@"
	echo "guest in $1: vmlinuz initrd.img $(cd "$1" && echo rootfs-*.ext4)"
fi
