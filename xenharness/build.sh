#!/bin/bash
# Build (only) what is missing for the real-Xen harness into $PVPLUG_XEN_CACHE
# (default /var/tmp/pvplug-xen), from Debian packages:
#   xen            Xen 4.17 hypervisor (gunzipped multiboot ELF, booted by QEMU's -kernel)
#   vmlinuz        Debian's 6.1 kernel (dom0 and domU); its modules go into the rootfs
#   rootfs/        debootstrap'ed bookworm: the dom0 root (xen-utils, python3, alsa, gcc...),
#                  with our package built inside it by its own python3.11 (/opt/pvplug)
#   dom0-initrd.gz busybox initramfs that mounts rootfs over 9p (ro + tmpfs overlay)
#   domU-base.gz   busybox initramfs for the PV domU: xen modules, python3.11, alsa-lib,
#                  aplay/arecord, our package and the ALSA plugin (per-run files are appended
#                  as a second cpio by run.py)
# Needs root (apt-get, debootstrap, chroot).  Usage: build.sh REPO_DIR
set -euo pipefail
REPO="$(cd "${1:?usage: build.sh REPO_DIR}" && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
C="${PVPLUG_XEN_CACHE:-/var/tmp/pvplug-xen}"
SUITE=bookworm; MIRROR="${PVPLUG_XEN_MIRROR:-http://deb.debian.org/debian}"
XENPKG=xen-hypervisor-4.17-amd64
mkdir -p "$C"; cd "$C"
say() { echo "[build $(date +%T)] $*" >&2; }

# 1. host tools
need=""
for t in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio busybox:busybox-static depmod:kmod; do
  command -v "${t%%:*}" >/dev/null || need="$need ${t##*:}"
done
[ -x /bin/busybox ] || need="$need busybox-static"
if [ -n "$need" ]; then
  say "apt-get install$need"
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends $need >/dev/null
fi

# 2. hypervisor + kernel (.deb downloads, unpacked, nothing installed)
if [ ! -s xen ] || [ ! -s vmlinuz ] || [ ! -s kver ]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || { say "cannot resolve linux-image-amd64 (apt-get update?)"; exit 3; }
  mkdir -p debs; rm -rf x k
  (cd debs && { ls ${XENPKG}_*.deb >/dev/null 2>&1 && ls ${KPKG}_*.deb >/dev/null 2>&1 || timeout 300 apt-get download -q "$XENPKG" "$KPKG" 2>&1 | grep -v unsandboxed || true; })
  dpkg-deb -x debs/${XENPKG}_*.deb x; dpkg-deb -x debs/${KPKG}_*.deb k
  zcat x/boot/xen-*-amd64.gz > xen.tmp && mv xen.tmp xen
  cp k/boot/vmlinuz-* vmlinuz
  KV=$(ls k/lib/modules | head -1); depmod -b k "$KV"; echo "$KV" > kver
  say "xen $(ls x/boot), kernel $KV"
fi
KV=$(cat kver)

# 3. dom0 root filesystem
# debootstrap does not resolve virtual packages (python3-ply-lex-3.10): the base set first,
# the rest through apt-get inside the chroot
BASE=xen-utils-4.17,xenstore-utils,kmod,procps,busybox,libxen-dev,python3
MORE="python3-cffi python3-numpy python3-setuptools python3-dev python3-alsaaudio libasound2 libasound2-dev alsa-utils gcc libc6-dev"
if [ ! -f rootfs/.pvplug-ok ]; then
  rm -rf rootfs
  say "debootstrap (a few minutes on a cold cache)"
  timeout 600 debootstrap --variant=minbase --include=$BASE "$SUITE" rootfs "$MIRROR" > debootstrap.log 2>&1 \
    || { tail -20 debootstrap.log >&2; exit 4; }
  timeout 600 chroot rootfs env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $MORE \
    >> debootstrap.log 2>&1 || { tail -20 debootstrap.log >&2; exit 4; }
  chroot rootfs apt-get clean
  mkdir -p rootfs/lib/modules rootfs/mnt/share rootfs/var/lib/xen rootfs/var/log/xen rootfs/opt
  cp -a k/lib/modules/$KV rootfs/lib/modules/
  # the in-kernel vsnd frontend must never take the device from our plugin
  echo "blacklist snd_xen_front" > rootfs/etc/modprobe.d/pvplug-no-snd-xen-front.conf
  echo dom0 > rootfs/etc/hostname
  touch rootfs/.pvplug-ok
  say "rootfs: $(du -sh rootfs | cut -f1)"
fi

# 3b. the backend's ALSA sink needs pyalsaaudio >= 0.9 (PCM(..., channels=, rate=, format=));
# bookworm's python3-alsaaudio is 0.8.4, so build 0.11.0 from PyPI inside the root
if ! chroot rootfs python3 -c "import alsaaudio; alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device='null', channels=2, rate=48000, format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=480)" >/dev/null 2>&1; then
  say "pyalsaaudio 0.11.0 from PyPI into the rootfs"
  timeout 300 chroot rootfs env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip >> debootstrap.log 2>&1
  # downloaded by the host's pip (its index and CA settings), built offline in the chroot
  mkdir -p pip rootfs/tmp/pip
  ls pip/pyalsaaudio-0.11.0.tar.gz >/dev/null 2>&1 || timeout 120 python3 -m pip download -q --no-deps \
    --no-binary :all: -d pip pyalsaaudio==0.11.0 >&2 || { say "pip download pyalsaaudio failed"; exit 5; }
  cp pip/pyalsaaudio-0.11.0.tar.gz rootfs/tmp/pip/
  timeout 300 chroot rootfs python3 -m pip install -q --no-index --no-build-isolation --break-system-packages \
    /tmp/pip/pyalsaaudio-0.11.0.tar.gz >> debootstrap.log 2>&1 || { tail -20 debootstrap.log >&2; exit 5; }
  rm -rf rootfs/tmp/pip
  chroot rootfs apt-get clean
fi

# 4. dom0 boot initramfs (busybox + 9p/overlay modules)
if [ ! -s dom0-initrd.gz ] || [ "$HERE/guest/dom0-initramfs-init" -nt dom0-initrd.gz ]; then
  rm -rf ird0; mkdir -p ird0/{bin,dev,proc,sys,lower,upper,newroot,mods}
  cp /bin/busybox ird0/bin/
  for a in sh mount umount insmod mkdir switch_root cat echo; do ln -s busybox ird0/bin/$a; done
  mods=$(for m in 9p 9pnet_virtio virtio_pci overlay; do modprobe -d k -S "$KV" --show-depends $m; done \
         | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++')
  for f in $mods; do cp "$f" ird0/mods/; done
  for f in $mods; do basename "$f" .ko; done > ird0/mods/order
  cp "$HERE/guest/dom0-initramfs-init" ird0/init; chmod +x ird0/init
  (cd ird0 && find . | cpio -H newc -o 2>/dev/null | gzip -1) > dom0-initrd.gz
  say "dom0-initrd.gz $(du -h dom0-initrd.gz | cut -f1)"
fi

# 5. our package, built inside the root by Debian's python3.11 (only when the sources changed)
SRCSUM=$(cd "$REPO" && find alsa_pvplug csrc conf pvplug_build.py -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name '*.in' -o -name '*.conf' \) \
         -not -name '_native.c' | sort | xargs sha256sum | sha256sum | cut -c1-16)
if [ "$(cat rootfs/opt/pvplug/.srcsum 2>/dev/null)" != "$SRCSUM" ]; then
  say "building alsa_pvplug + plugin in the rootfs chroot"
  rm -rf rootfs/opt/pvplug; mkdir -p rootfs/opt/pvplug
  (cd "$REPO" && tar cf - --exclude=__pycache__ --exclude='*.so' --exclude='*.o' --exclude=_native.c \
     alsa_pvplug csrc conf pvplug_build.py) | tar xf - -C rootfs/opt/pvplug
  timeout 300 chroot rootfs /bin/sh -c 'cd /opt/pvplug && python3 pvplug_build.py \
    && python3 -c "from alsa_pvplug.glue.build import build_plugin; print(build_plugin(\"/opt/pvplug/plugin\"))" \
    && python3 -m compileall -q /opt/pvplug/alsa_pvplug' >&2
  echo "$SRCSUM" > rootfs/opt/pvplug/.srcsum
fi

# 6. domU base initramfs: busybox, xen modules, python + our package + alsa (ldd closure in the chroot)
BASESUM=$SRCSUM-$(sha256sum "$HERE/build.sh" | cut -c1-16)
if [ ! -s domU-base.gz ] || [ "$(cat domU-base.srcsum 2>/dev/null)" != "$BASESUM" ]; then
  say "domU base initramfs"
  I=irdU; rm -rf $I; mkdir -p $I/{bin,dev,proc,sys,tmp,mods,etc,root}
  cp /bin/busybox $I/bin/
  /bin/busybox --list | while read -r a; do [ "$a" = busybox ] || ln -sf busybox $I/bin/$a; done
  ln -s bin $I/sbin
  # mods LIST NAME...: copy the modules NAMEs need (in load order) and list the new ones
  mods() {
    local list=$1; shift
    for m in "$@"; do modprobe -d k -S "$KV" --show-depends $m; done | awk '$1=="insmod"{print $2}' \
      | while read -r f; do
          b=$(basename "$f" .ko); [ -e $I/mods/$b.ko ] && continue
          cp "$f" $I/mods/; echo "$b"
        done > $I/mods/$list
  }
  mods order xen-evtchn xen-gntalloc xen-gntdev xenfs
  # Linux's own vsnd frontend, loaded only by the scenario that checks the plugin refuses
  # a device it drives (and that our backend serves it): not in mods/order
  mods kfront-order snd-xen-front
  PY=python3.11
  files=$(cat <<LIST
/usr/bin/$PY
/usr/bin/aplay
/usr/lib/$PY
/usr/lib/python3/dist-packages/cffi
/usr/share/alsa
/opt/pvplug/alsa_pvplug
/opt/pvplug/conf
/opt/pvplug/plugin
/etc/alsa
LIST
)
  files="$files $(cd rootfs && ls usr/lib/python3/dist-packages/_cffi_backend*.so | sed 's|^|/|')"
  files=$(for f in $files; do [ -e "rootfs$f" ] && echo "$f"; done)
  # the .pyc files go along (Debian compiled the stdlib and cffi at install, we compiled our
  # package): without them every domU process compiles what it imports, ~8 s under TCG
  (cd rootfs && tar cf - --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
     --exclude=lib2to3 --exclude=pydoc_data --exclude='config-3*' --exclude=turtledemo \
     $(for f in $files; do echo ".$f"; done) 2>/dev/null) | tar xf - -C $I
  ln -s aplay $I/usr/bin/arecord; ln -s $PY $I/usr/bin/python3
  # shared libraries: the ldd closure (resolved inside the chroot) plus what is dlopen()ed
  elfs=$(cd rootfs && find ./usr/bin/$PY ./usr/bin/aplay ./usr/lib/$PY/lib-dynload ./usr/lib/python3/dist-packages/_cffi_backend*.so \
         ./opt/pvplug -name '*.so*' -o -type f -perm -u+x | sed 's|^\.||' | sort -u)
  libs=$(for e in $elfs; do chroot rootfs ldd "$e" 2>/dev/null; done | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | sort -u)
  # dlopen()ed: libpython by the plugin, libgcc_s by glibc for pthread_cancel (libxenstore xs_close)
  dl=$(cd rootfs && ls usr/lib/x86_64-linux-gnu/libpython3.11.so.1* usr/lib/x86_64-linux-gnu/libgcc_s.so.1 usr/lib/x86_64-linux-gnu/libxen*.so.* | sed 's|^|/|')
  mkdir -p $I/usr/lib/x86_64-linux-gnu $I/lib64
  for l in $libs $dl; do
    real=$(chroot rootfs readlink -f "$l"); base=$(basename "$l")
    case "$l" in /lib64/*) cp -L "rootfs$real" "$I/lib64/$base" ;; *) cp -L "rootfs$real" "$I/usr/lib/x86_64-linux-gnu/$base" ;; esac
  done
  ln -s usr/lib $I/lib
  (cd $I && find . | cpio -H newc -o 2>/dev/null | gzip -1) > domU-base.gz.tmp && mv domU-base.gz.tmp domU-base.gz
  echo "$BASESUM" > domU-base.srcsum
  say "domU-base.gz $(du -h domU-base.gz | cut -f1) (unpacked $(du -sh $I | cut -f1))"
fi
say "cache ready: $C"
