#!/bin/bash
# run-in-uml.sh — run a command as root inside a throw-away User-Mode-Linux 6.1 kernel
# (Debian package user-mode-linux; no KVM, no QEMU). The host root filesystem is the guest's
# root via hostfs, mounted READ-ONLY, so the same python/venv/checkout are visible; /run and
# /dev/shm are tmpfs; /tmp /var /root and $PWD get tmpfs-backed overlays (writes discarded).
# Kernel modules (ipip, veth, overlay, nf_tables, ...) come from /usr/lib/uml/modules.
#
# usage: run-in-uml.sh CMD [ARGS...]      (a single argument is run as a shell snippet)
# env:   RIK_MEM (default 1G)  RIK_TIMEOUT (seconds, 900)  RIK_OVERLAYS ("/tmp /var /root $PWD")
#        RIK_VERBOSE=1 print the guest console (kernel log) to stderr afterwards
# exit:  the command's exit status; 124 timeout; 125 VM/infrastructure failure.
set -euo pipefail
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
UML=${RIK_UML:-/usr/bin/linux.uml}
[ -x "$UML" ] || { echo "rik: apt-get install user-mode-linux" >&2; exit 125; }
# The guest mounts UML's module tree on /lib/modules of the (read-only) host root, so the
# mount point must exist; a host kernel without module support has no such directory.
[ -d /lib/modules ] || mkdir -p /lib/modules
command -v modprobe >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v modprobe >/dev/null || { echo "rik: apt-get install kmod (the guest uses the host's modprobe)" >&2; exit 125; }
IO=$(mktemp -d "${TMPDIR:-/tmp}/rik-uml.XXXXXX"); trap 'rm -rf "$IO"' EXIT
echo "${RIK_OVERLAYS:-/tmp /var /root $PWD}" > "$IO/overlays"
cat > "$IO/init" <<'INIT'
#!/bin/sh
# PID 1 inside UML; the root fs is the host's / (hostfs, ro)
mount -t proc proc /proc; IO=$(sed -n 's/.*\brik_io=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t sysfs sys /sys; mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 run /run; mkdir -p /run/netns /run/rik /run/ovl /run/lock
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t hostfs -o "$IO" hostfs /run/rik || { echo "rik-init: io mount failed"; echo o > /proc/sysrq-trigger; }
mount -t hostfs -o /usr/lib/uml/modules hostfs /lib/modules || echo "rik-init: modules mount failed"
modprobe overlay
i=0
for dir in $(cat /run/rik/overlays); do
  [ -d "$dir" ] || continue
  i=$((i+1)); mkdir -p /run/ovl/$i/u /run/ovl/$i/w
  mount -t overlay -o lowerdir=$dir,upperdir=/run/ovl/$i/u,workdir=/run/ovl/$i/w ovl$i $dir || echo "rik-init: overlay $dir failed"
done
hostname rik-guest; ip link set lo up
stty -F /dev/tty1 raw -echo 2>/dev/null; stty -F /dev/tty2 raw -echo 2>/dev/null
echo "rik-init: ready uptime=$(cut -d' ' -f1 /proc/uptime)s"
/bin/sh /run/rik/cmd.sh >/dev/tty1 2>/dev/tty2 </dev/null
echo $? > /run/rik/rc
echo "rik-init: done uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync; echo o > /proc/sysrq-trigger; sleep 30 2>/dev/null
INIT
chmod +x "$IO/init"
{ echo "cd $(printf %q "$PWD") || exit 125"
  echo "export HOME=/root PATH=$(printf %q "$PATH") PYTHONDONTWRITEBYTECODE=1 TERM=dumb RIK_GUEST=1"
  [ -n "${VIRTUAL_ENV:-}" ] && echo "export VIRTUAL_ENV=$(printf %q "$VIRTUAL_ENV")"
  if [ $# -eq 1 ]; then printf '%s\n' "$1"; else printf '%q ' "$@"; echo; fi
} > "$IO/cmd.sh"
set +e
# con0 = kernel console -> $IO/console.log (fd 3); con1/con2 (tty1/tty2) = command stdout/stderr
timeout -k 10 "${RIK_TIMEOUT:-900}" "$UML" mem="${RIK_MEM:-1G}" umid="rik$$" uml_dir="$IO" \
  root=/dev/root rootfstype=hostfs rootflags=/ ro init="$IO/init" rik_io="$IO" \
  con=null con0=null,fd:3 con1=null,fd:1 con2=null,fd:2 ssl=null quiet \
  </dev/null 3>"$IO/console.log"
urc=$?
set -e
[ -n "${RIK_VERBOSE:-}" ] && { echo "---- guest console ----" >&2; cat "$IO/console.log" >&2; }
[ $urc -eq 124 ] && { echo "rik: timeout after ${RIK_TIMEOUT:-900}s" >&2; exit 124; }
if [ ! -s "$IO/rc" ]; then
  echo "rik: no exit status from guest (linux.uml rc=$urc); console tail:" >&2; tail -20 "$IO/console.log" >&2 2>/dev/null || true; exit 125
fi
exit "$(cat "$IO/rc")"
