#!/bin/busybox sh
# rrr's /init: mount the basics, say ready, wait for the go line on the console (the snapshot
# is taken here; the line carries the attempt number, RRR_ATTEMPT for the stimulus), run the
# stimulus, report how it ended, then wait: rrr ends the run (QEMU:
# rrr stops the machine, so its recording ends at a known instruction count; PANDA: rrr types
# the line that powers it off).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox stty -echo 2>/dev/null
echo RRR-READY
read -r go attempt
cd /tmp
RRR_ATTEMPT="${attempt:-1}" /stimulus
echo "RRR-END status=$?"
/bin/busybox sync
read -r off
/bin/busybox poweroff -f
