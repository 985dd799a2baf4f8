#!/bin/busybox sh
# /init of the n-kudo test guest: load the virtio modules, read the
# cloud-init NoCloud seed, apply its hostname and marker, and report once a
# second on the serial console.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /seed /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules-order); do
	insmod /lib/modules/$m.ko 2>/dev/null
done
seed=""
i=0
while [ -z "$seed" ] && [ $i -lt 100 ]; do
	for d in /dev/vd*; do
		[ -b "$d" ] || continue
		if mount -t vfat -o ro "$d" /seed 2>/dev/null; then
			if [ -f /seed/meta-data ]; then seed=$d; break; fi
			umount /seed
		fi
	done
	[ -z "$seed" ] && { sleep 0.1; i=$((i+1)); }
done
host=$(sed -n 's/^local-hostname: *//p' /seed/meta-data 2>/dev/null)
uhost=$(sed -n 's/^hostname: *//p' /seed/user-data 2>/dev/null)
[ -n "$uhost" ] && host=$uhost
[ -n "$host" ] && hostname "$host"
marker=$(sed -n 's/^nkudo_marker: *//p' /seed/user-data 2>/dev/null)
# The root disk is the one with serial "root"; its first sector remembers
# that the guest already powered itself off once (nkudo_poweroff_once).
root=""
for b in /sys/block/vd*; do
	[ "$(cat $b/serial 2>/dev/null)" = root ] && root=/dev/${b##*/}
done
for ev in /sys/class/input/event*; do
	if grep -q "Power Button" $ev/device/name 2>/dev/null; then
		(head -c 1 /dev/input/${ev##*/} >/dev/null; echo "NKUDO-POWER-BUTTON"; sync; poweroff -f) &
	fi
done
echo "NKUDO-READY hostname=$(hostname) marker=$marker seed=$seed root=$root uptime=$(cut -d" " -f1 /proc/uptime)"
once=$(sed -n 's/^nkudo_poweroff_once: *//p' /seed/user-data 2>/dev/null)
if [ "$once" = true ] && [ -n "$root" ]; then
	if ! head -c 16 $root | grep -q NKUDO-POWEREDOFF; then
		echo "NKUDO-POWEROFF-FROM-INSIDE"
		printf NKUDO-POWEREDOFF | dd of=$root conv=notrunc 2>/dev/null
		sync
		poweroff -f
	fi
fi
while true; do
	for c in /sys/devices/system/cpu/cpu*/online; do
		[ -f $c ] && [ "$(cat $c)" = 0 ] && echo 1 >$c 2>/dev/null
	done
	for m in /sys/devices/system/memory/memory*/state; do
		[ -f $m ] && [ "$(cat $m)" = offline ] && echo online_movable >$m 2>/dev/null
	done
	cpus=$(grep -c ^processor /proc/cpuinfo)
	mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
	echo "NKUDO-STATUS hostname=$(hostname) marker=$marker cpus=$cpus memkb=$mem"
	sleep 1
done
