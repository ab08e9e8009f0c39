#!/usr/bin/env bash
# ipvs-vm.sh — the ipvs-migrate kernel test bed: Debian's stock kernel (which has IPVS, dummy links,
# nf_tables, ipset, ...) booted under qemu in software emulation (TCG) from a throw-away initramfs
# built only from Debian packages. The build machines' own kernel has no IPVS; this one does.
# By default the VM has NO network device (qemu -nic none): all its traffic stays inside it. With
# --forward, it gets one NIC on qemu's user-mode network with restrict=on (the guest can reach
# nothing outside: not the host, not the world) and only the given host ports, bound to
# 127.0.0.1, forwarded into it.
#
#   ipvs-vm.sh ensure [--refresh]
#       apt-get download the kernel + guest userland .debs into the cache, build the kernel and
#       initramfs image. Idempotent: when the cache is up to date it does nothing (no apt call).
#       --refresh: resolve the packages again (newest versions from apt) and rebuild if they changed.
#   ipvs-vm.sh run [OPTIONS] -- CMD [ARG...]
#       boot the VM once, run CMD (argv, not a shell string: use `-- sh -c '...'` for one) as root,
#       stream its stdout/stderr, exit with its exit status. Runs `ensure` first if needed.
#       --share DIR        make host DIR available (read-write, 9p) at the same path in the guest;
#                          repeatable. The guest's cwd is the host's cwd if that is inside a share.
#       --share-ro DIR     the same, read-only
#       --timeout S        kill the VM after S seconds (default $IPVS_VM_TIMEOUT or 600): exit 124
#       --libs-of ELF      copy the host shared libraries ELF needs (ldd) into the guest; repeatable.
#                          Done automatically for CMD itself when it is a host ELF file.
#       --modprobe MOD     load kernel module MOD before CMD; repeatable (all others autoload)
#       --env NAME[=VAL]   set NAME in the guest (without =VAL: the host's value); repeatable
#       --mem MIB          guest memory (default $IPVS_VM_MEM or 1024)
#       --forward H:G      forward TCP port H on the host's 127.0.0.1 to port G of the guest;
#                          repeatable. Gives the guest a virtio NIC (eth0, 10.0.2.15/24, gateway
#                          10.0.2.2: qemu's user-net defaults) on a restrict=on user network.
#       --verbose          stream the guest console (kernel log) to stderr as well
#   ipvs-vm.sh exec BINARY [ARG...]
#       cargo runner form: run BINARY ARGS in the VM with the repository (and BINARY's directory)
#       shared; passes RUST_* and a few other variables through:
#         CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/ipvs-vm.sh exec" \
#           cargo test --test NAME -- --test-threads=1
#   ipvs-vm.sh clean      remove the cache
#
# Exit status of run/exec: the guest command's status; 124 on timeout; 125 when the VM failed to
# boot or to report a status (kernel panic, bad module, ...); 2 on usage errors. On 124/125 the
# tail of the guest console is printed to stderr.
#
# Environment: IPVS_VM_CACHE (default tests/vm/cache), IPVS_VM_TIMEOUT (600), IPVS_VM_MEM (1024),
# IPVS_VM_SMP (1), IPVS_VM_CPU (qemu64), IPVS_VM_ACCEL (tcg), IPVS_VM_VERBOSE (1 = --verbose),
# IPVS_VM_QUIET (1 = no "ipvs-vm: ..." summary line), IPVS_VM_KERNEL_PKG (pin the kernel package,
# default: what linux-image-amd64 depends on), IPVS_VM_EXTRA_PACKAGES (more Debian packages for the
# guest userland).
#
# Needs on the host (installed by this script with apt-get when missing and running as root):
# qemu-system-x86, xz-utils; plus dpkg, apt, coreutils, util-linux, grep, libc-bin (Debian base).
set -euo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$VM_DIR/../.." && pwd)
CACHE=${IPVS_VM_CACHE:-$VM_DIR/cache}
DEB_DIR=$CACHE/debs
IMG_DIR=$CACHE/image

# Guest userland. apt resolves their dependencies (as if installing into an empty system);
# DENY_PACKAGES are dependencies the guest does not need (package management, init scripts).
GUEST_PACKAGES="busybox-static dash bash ipvsadm iptables ipset iproute2 conntrack netbase libc6 libgcc-s1 ${IPVS_VM_EXTRA_PACKAGES:-}"
DENY_PACKAGES="base-files debconf cdebconf dpkg tar install-info lsb-base sysvinit-utils
  init-system-helpers perl-base libcap2-bin gcc-12-base mawk readline-common"
KERNEL_META=linux-image-amd64

# Kernel module subtrees taken out of the kernel .deb (the rest of its ~300 MB of modules is left out)
KERNEL_PATHS=(
  './boot/vmlinuz-*' './boot/config-*'
  './lib/modules/*/modules.builtin*' './lib/modules/*/modules.order'
  './lib/modules/*/kernel/net/netfilter/*' './lib/modules/*/kernel/net/ipv4/netfilter/*'
  './lib/modules/*/kernel/net/ipv6/netfilter/*' './lib/modules/*/kernel/net/bridge/*'
  './lib/modules/*/kernel/net/802/*' './lib/modules/*/kernel/net/llc/*'
  './lib/modules/*/kernel/net/9p/*' './lib/modules/*/kernel/fs/9p/*'
  './lib/modules/*/kernel/fs/netfs/*' './lib/modules/*/kernel/fs/fscache/*'
  './lib/modules/*/kernel/drivers/virtio/*'
  './lib/modules/*/kernel/drivers/net/veth.ko*' './lib/modules/*/kernel/drivers/net/dummy.ko*'
  './lib/modules/*/kernel/drivers/net/virtio_net.ko*' './lib/modules/*/kernel/drivers/net/net_failover.ko*'
  './lib/modules/*/kernel/net/core/failover.ko*'
  './lib/modules/*/kernel/lib/libcrc32c.ko*' './lib/modules/*/kernel/crypto/crc32c_generic.ko*'
)

say() { echo "ipvs-vm: $*" >&2; }
die() { echo "ipvs-vm: error: $1" >&2; exit "${2:-1}"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------------------------------------
# host tools

APT_UPDATED=
apt_update_once() {
  [ -n "$APT_UPDATED" ] && return 0
  say "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
  APT_UPDATED=1
}

# need_host CMD:PKG... — install the Debian packages of missing commands (as root)
need_host() {
  local missing=() cp
  for cp in "$@"; do command -v "${cp%%:*}" >/dev/null 2>&1 || missing+=("${cp#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing host packages: ${missing[*]} (run: sudo apt-get install -y --no-install-recommends ${missing[*]})"
  say "installing host packages: ${missing[*]}"
  local i
  for i in 1 2; do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
      return 0
    fi
    [ $i = 1 ] && apt_update_once
  done
  die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------------------------------------
# ensure: download + build, cached

config_key() { echo "v1 $GUEST_PACKAGES | $DENY_PACKAGES | ${IPVS_VM_KERNEL_PKG:-$KERNEL_META} | ${KERNEL_PATHS[*]}" | sha256sum | cut -c1-16; }
image_key() { cat "$VM_DIR/ipvs-vm.sh" "$VM_DIR/guest/init" "$DEB_DIR/packages.txt" | sha256sum | cut -c1-16; }

debs_ok() {
  [ -f "$DEB_DIR/key" ] && [ "$(cat "$DEB_DIR/key")" = "$(config_key)" ] && [ -f "$DEB_DIR/packages.txt" ] || return 1
  local f; while read -r _ f; do [ -f "$DEB_DIR/$f" ] || return 1; done < "$DEB_DIR/packages.txt"
}
image_ok() {
  [ -f "$IMG_DIR/key" ] && [ "$(cat "$IMG_DIR/key")" = "$(image_key)" ] && [ -f "$IMG_DIR/base.cpio" ] \
    && [ -x "$IMG_DIR/busybox" ] \
    && { [ -f "$IMG_DIR/vmlinux" ] || [ -f "$IMG_DIR/vmlinuz" ]; }
}

# prints "pkg=version" lines: the kernel + GUEST_PACKAGES with their dependencies, minus DENY
resolve_packages() {
  local kpkg=${IPVS_VM_KERNEL_PKG:-}
  if [ -z "$kpkg" ]; then
    kpkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    if [ -z "$kpkg" ]; then apt_update_once
      kpkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    [ -n "$kpkg" ] || die "cannot resolve $KERNEL_META to a versioned kernel package"
  fi
  # the kernel .deb is only unpacked, never installed: its own dependencies are not wanted
  local kver; kver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/{print $2; exit}')
  case $kver in ""|"(none)") die "no installable version of $kpkg (apt-get update?)" ;; esac
  echo "$kpkg=$kver"
  # simulate an install into an empty system: apt picks the dependency closure (alternatives,
  # virtual packages) the way it would on a real one
  local sim
  # shellcheck disable=SC2086 # word splitting of the package lists is intended
  sim=$(apt-get -s install --no-install-recommends -o Dir::State::status=/dev/null -o Debug::NoLocking=1 \
        $GUEST_PACKAGES 2>&1) || die "apt could not resolve the guest packages:
$sim"
  # shellcheck disable=SC2086,SC2116
  echo "$sim" | awk -v deny=" $(echo $DENY_PACKAGES) " '
    /^Inst / { v=$3; gsub(/[()]/, "", v); if (index(deny, " " $2 " ") == 0) print $2 "=" v }'
}

download_debs() {
  local list; list=$(resolve_packages)
  if [ -z "$list" ] || ! echo "$list" | grep -q '^busybox-static='; then
    apt_update_once; list=$(resolve_packages)
  fi
  mkdir -p "$DEB_DIR"
  local t0; t0=$(now)
  # apt-get download names files pkg_version_arch.deb (':' in the version as %3a)
  local want=() pv
  for pv in $list; do
    local p=${pv%%=*} v=${pv#*=}
    compgen -G "$DEB_DIR/${p}_${v//:/%3a}_*.deb" >/dev/null || want+=("$pv")
  done
  if [ ${#want[@]} -gt 0 ]; then
    say "downloading ${#want[@]} Debian packages into $DEB_DIR"
    if ! (cd "$DEB_DIR" && apt-get -qq -o APT::Sandbox::User=root download "${want[@]}" >&2); then
      apt_update_once  # stale lists: the versions may be gone from the mirror
      list=$(resolve_packages); want=()
      for pv in $list; do
        local p=${pv%%=*} v=${pv#*=}
        compgen -G "$DEB_DIR/${p}_${v//:/%3a}_*.deb" >/dev/null || want+=("$pv")
      done
      (cd "$DEB_DIR" && apt-get -qq -o APT::Sandbox::User=root download "${want[@]}" >&2) || die "apt-get download failed"
    fi
  fi
  # packages.txt: "pkg=version file", the kernel first; drop .debs no longer wanted
  local tmp="$DEB_DIR/packages.txt.tmp"; : > "$tmp"
  for pv in $(echo "$list" | grep '^linux-image-'; echo "$list" | grep -v '^linux-image-'); do
    local p=${pv%%=*} v=${pv#*=} f
    f=$(cd "$DEB_DIR" && compgen -G "${p}_${v//:/%3a}_*.deb" | head -1) || die "missing .deb for $pv"
    echo "$pv $f" >> "$tmp"
  done
  local d; for d in "$DEB_DIR"/*.deb; do
    grep -qF " $(basename "$d")" "$tmp" || rm -f "$d"
  done
  mv "$tmp" "$DEB_DIR/packages.txt"
  config_key > "$DEB_DIR/key"
  say "packages ready ($(wc -l < "$DEB_DIR/packages.txt") .debs, $(du -sh "$DEB_DIR" | cut -f1)) in $(elapsed "$t0") s"
}

# copy_libs ELF DESTROOT [MANIFEST]: the ELF's ldd libraries (+ symlinks) into DESTROOT/usr/...,
# skipping those the guest image already has (MANIFEST: its file list).
# Everything goes under /usr (merged /usr): an appended cpio archive must never contain a top-level
# lib/ or lib64/ directory, or the kernel replaces the base archive's lib -> usr/lib symlink by it.
copy_libs() {
  local f=$1 dst=$2 manifest=${3:-/dev/null} l real
  { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | while read -r l; do
    real=$(readlink -f "$l")
    case $l in /lib/*|/lib64/*) l=/usr$l ;; esac
    case $real in /lib/*|/lib64/*) real=/usr$real ;; esac
    grep -qxF "$l" "$manifest" && continue
    [ -e "$dst$real" ] || { mkdir -p "$dst$(dirname "$real")"; cp "$real" "$dst$real"; }
    [ "$l" = "$real" ] || [ -e "$dst$l" ] || [ -L "$dst$l" ] || { mkdir -p "$dst$(dirname "$l")"; ln -s "$real" "$dst$l"; }
  done
  return 0
}

build_image() {
  local t0; t0=$(now)
  local out="$CACHE/image.tmp"; rm -rf "$out"; mkdir -p "$out"
  local root="$out/root" kx="$out/kpkg"
  mkdir -p "$root" "$kx"
  # 1. kernel + the module subtrees we need (plain .ko in Debian 12; the .deb has no modules.dep)
  local kdeb; kdeb=$DEB_DIR/$(awk 'NR==1{print $2}' "$DEB_DIR/packages.txt")
  case $kdeb in */linux-image-*) ;; *) die "no kernel package in $DEB_DIR/packages.txt" ;; esac
  dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kx" --wildcards "${KERNEL_PATHS[@]}"
  local kver; kver=$(ls "$kx/lib/modules")
  # Uncompressed ELF vmlinux: qemu boots it through its PVH entry (CONFIG_PVH=y), which skips the
  # bzImage's XZ self-decompression (3-7 s under TCG). Same as the kernel's scripts/extract-vmlinux.
  local vmlinuz="$kx/boot/vmlinuz-$kver" off
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1 || true)
  # (xz exits non-zero on the bytes after the stream: judge by the result, an ELF file)
  if [ -n "$off" ]; then
    ( set +o pipefail; tail -c +$((off + 1)) "$vmlinuz" 2>/dev/null | xz -dcq 2>/dev/null \
        | dd of="$out/vmlinux" bs=64k iflag=fullblock conv=sparse status=none ) || true
  fi
  if [ -s "$out/vmlinux" ] && [ "$(head -c4 "$out/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then :; else
    say "could not extract vmlinux, will boot the bzImage (slower)"; rm -f "$out/vmlinux"; cp "$vmlinuz" "$out/vmlinuz"
  fi
  # 2. merged-/usr skeleton, then every userland .deb unpacked into it
  mkdir -p "$root"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64,local/bin,local/sbin} \
           "$root"/{proc,sys,dev,tmp,run,etc/ipvs-vm,root,var,mnt}
  ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"; ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
  ln -s ../run "$root/var/run"
  local pv f
  while read -r pv f; do
    case $pv in linux-image-*) continue ;; esac
    dpkg-deb --fsys-tarfile "$DEB_DIR/$f" | tar -x -C "$root" --keep-directory-symlink \
      --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
      --exclude='./usr/share/info/*' --exclude='./usr/share/lintian/*' --exclude='./etc/init.d/*' \
      --exclude='./usr/lib/x86_64-linux-gnu/gconv/*' --exclude='./usr/include/*'
  done < "$DEB_DIR/packages.txt"
  local bb="$root/usr/bin/busybox"
  [ -x "$bb" ] || die "busybox-static did not unpack to /bin/busybox"
  # busybox applets, only where no real program of that name exists (iproute2's ip, dash's sh...)
  local a
  for a in $("$bb" --list); do
    [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || [ -L "$root/usr/bin/$a" ] || [ -L "$root/usr/sbin/$a" ] \
      || ln -s /bin/busybox "$root/usr/bin/$a"
  done
  ln -sf /bin/busybox "$root/usr/sbin/modprobe"   # the kernel's module autoloader calls this
  # iptables: what update-alternatives would create; nft is the default backend, as on Debian 12
  local t
  for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf "${t%%tables*}tables-nft${t#*tables}" "$root/usr/sbin/$t"
  done
  # 3. modules + modules.dep for busybox modprobe
  mkdir -p "$root/usr/lib/modules"
  cp -a "$kx/lib/modules/$kver" "$root/usr/lib/modules/"
  find "$root/usr/lib/modules" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
  "$bb" depmod -b "$root" "$kver"
  # 4. /etc
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  printf '127.0.0.1 localhost ipvs-vm\n::1 localhost ip6-localhost\n' > "$root/etc/hosts"
  printf 'passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n' > "$root/etc/nsswitch.conf"
  : > "$root/etc/resolv.conf"
  echo ipvs-vm > "$root/etc/hostname"
  printf 'ID=ipvs-vm\nNAME="ipvs-migrate test VM"\nKERNEL=%s\n' "$kver" > "$root/etc/os-release"
  install -m 755 "$VM_DIR/guest/init" "$root/init"
  # 5. check that every program and library in the image finds its shared libraries
  if command -v readelf >/dev/null 2>&1; then
    local missing
    missing=$({ find "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib/x86_64-linux-gnu/xtables" \
        -maxdepth 1 -type f \( -perm -u+x -o -name '*.so*' \) -exec readelf -d {} + 2>/dev/null || true; } \
        | awk -F'[][]' '/\(NEEDED\)/{print $2}' | sort -u | while read -r l; do
          [ -e "$root/usr/lib/x86_64-linux-gnu/$l" ] || [ -e "$root/usr/lib64/$l" ] || echo "$l"; done)
    [ -z "$missing" ] || die "guest image lacks shared libraries: $missing (add their packages to GUEST_PACKAGES)"
  fi
  # 6. the file list (for copy_libs) and the uncompressed newc archive (no gunzip under TCG)
  (cd "$root" && find . -mindepth 1 | sed 's|^\.||' | LC_ALL=C sort) > "$out/manifest.txt"
  (cd "$root" && find . | LC_ALL=C sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null) > "$out/base.cpio"
  echo "$kver" > "$out/kernel-version"
  cp "$bb" "$out/busybox"   # static: the host uses it for the per-run cpio archive
  rm -rf "$root" "$kx"
  image_key > "$out/key"
  rm -rf "$IMG_DIR"; mv "$out" "$IMG_DIR"
  say "image built in $(elapsed "$t0") s: kernel $kver, base.cpio $(du -h --apparent-size "$IMG_DIR/base.cpio" | cut -f1)"
}

cmd_ensure() {
  local refresh=
  case "${1:-}" in --refresh) refresh=1 ;; "") ;; *) die "usage: ipvs-vm.sh ensure [--refresh]" 2 ;; esac
  if [ -z "$refresh" ] && debs_ok && image_ok; then
    [ -n "${IPVS_VM_QUIET:-}" ] || say "up to date ($CACHE, kernel $(cat "$IMG_DIR/kernel-version"))"
    return 0
  fi
  need_host dpkg-deb:dpkg apt-get:apt xz:xz-utils flock:util-linux
  mkdir -p "$CACHE"
  exec 9> "$CACHE/.lock"
  flock 9
  if [ -n "$refresh" ] || ! debs_ok; then
    [ -n "$refresh" ] && apt_update_once
    download_debs
  fi
  image_ok || build_image
  exec 9>&-
}

# ---------------------------------------------------------------------------------------------
# run

q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }   # shell-quote one word

is_elf() { [ -f "$1" ] && [ "$(head -c4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; }

cmd_run() {
  local shares=() libs=() mods=() envs=() timeout=${IPVS_VM_TIMEOUT:-600} mem=${IPVS_VM_MEM:-1024}
  local verbose=${IPVS_VM_VERBOSE:-} fwds=()
  while [ $# -gt 0 ]; do
    case $1 in
      --share) [ $# -ge 2 ] || die "--share needs a directory" 2; shares+=("rw:$2"); shift 2 ;;
      --share-ro) [ $# -ge 2 ] || die "--share-ro needs a directory" 2; shares+=("ro:$2"); shift 2 ;;
      --timeout) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--timeout needs seconds" 2; timeout=$2; shift 2 ;;
      --libs-of) [ -f "${2:-}" ] || die "--libs-of: no such file: ${2:-}" 2; libs+=("$2"); shift 2 ;;
      --modprobe) [ -n "${2:-}" ] || die "--modprobe needs a module" 2; mods+=("$2"); shift 2 ;;
      --env) [ -n "${2:-}" ] || die "--env needs NAME[=VALUE]" 2; envs+=("$2"); shift 2 ;;
      --mem) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--mem needs MiB" 2; mem=$2; shift 2 ;;
      --forward)
        if ! [[ ${2:-} =~ ^([1-9][0-9]{0,4}):([1-9][0-9]{0,4})$ ]] \
            || [ "${BASH_REMATCH[1]}" -gt 65535 ] || [ "${BASH_REMATCH[2]}" -gt 65535 ]; then
          die "--forward needs HOSTPORT:GUESTPORT (ports 1-65535), got '${2:-}'" 2
        fi
        fwds+=("$2"); shift 2 ;;
      --verbose) verbose=1; shift ;;
      --) shift; break ;;
      *) die "run: unknown option '$1' (the command goes after --)" 2 ;;
    esac
  done
  [ $# -gt 0 ] || die "run: no command (usage: ipvs-vm.sh run [OPTIONS] -- CMD [ARG...])" 2
  need_host qemu-system-x86_64:qemu-system-x86 timeout:coreutils ldd:libc-bin
  # CMD itself, when it is a host ELF file: bring its libraries
  if is_elf "$1"; then libs+=("$1"); fi

  local t0; t0=$(now)
  local work; work=$(mktemp -d "${TMPDIR:-/tmp}/ipvs-vm.XXXXXX")
  RUN_WORK=$work
  trap run_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 141' PIPE
  local ov="$work/overlay"; mkdir -p "$ov/etc/ipvs-vm"
  # per-run settings
  local share_lines="" share_args=() i=0 s mode dir cwd="/root"
  for s in ${shares[@]+"${shares[@]}"}; do
    mode=${s%%:*}; dir=${s#*:}
    [ -d "$dir" ] || { rm -rf "$work"; die "share: not a directory: $dir" 2; }
    dir=$(cd "$dir" && pwd -P)
    case $dir in
      /|/usr|/usr/*bin|/usr/lib|/usr/lib64|/usr/lib/x86_64-linux-gnu|/bin|/sbin|/lib|/lib64|/etc|/etc/ipvs-vm|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/run|/var|/root)
        rm -rf "$work"; die "share: $dir would hide part of the guest system; share a subdirectory" 2 ;;
    esac
    share_lines+="share$i $mode $dir"$'\n'
    local ro=""; [ "$mode" = ro ] && ro=",readonly=on"
    share_args+=(-virtfs "local,path=${dir//,/,,},mount_tag=share$i,security_model=none,id=share$i$ro")
    case "$(pwd -P)/" in "$dir"/*) [ "$cwd" = /root ] && cwd=$(pwd -P) ;; esac
    i=$((i + 1))
  done
  {
    echo "VM_MODULES=$(q "${mods[*]-}")"
    echo "VM_SHARES=$(q "$share_lines")"
    echo "VM_NET=${fwds[0]:+1}"
  } > "$ov/etc/ipvs-vm/run.env"
  {
    echo "# generated by ipvs-vm.sh run"
    echo "export IPVS_VM=1"
    local e
    for e in ${envs[@]+"${envs[@]}"}; do
      case $e in
        *=*) echo "export ${e%%=*}=$(q "${e#*=}")" ;;
        *) [ -n "${!e+x}" ] && echo "export $e=$(q "${!e}")" ;;
      esac
    done
    echo "cd $(q "$cwd") || exit 125"
    local cmd="exec" a
    for a in "$@"; do cmd+=" $(q "$a")"; done
    echo "$cmd"
  } > "$ov/etc/ipvs-vm/cmd"
  local l
  for l in ${libs[@]+"${libs[@]}"}; do copy_libs "$l" "$ov" "$IMG_DIR/manifest.txt"; done
  # the per-run archive appended to the base one: the kernel unpacks both into the same rootfs
  local initrd="$work/initrd.cpio"
  { cat "$IMG_DIR/base.cpio"; (cd "$ov" && find . -mindepth 1 | LC_ALL=C sort | "$VM_BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null); } > "$initrd"

  local kernel="$IMG_DIR/vmlinux"; [ -f "$kernel" ] || kernel="$IMG_DIR/vmlinuz"
  local log="$work/console.log"; : > "$log"
  mkfifo "$work/out" "$work/err"
  cat "$work/out" & local out_pid=$!
  cat "$work/err" >&2 & local err_pid=$!
  RUN_PIDS="$out_pid $err_pid"
  local tail_pid=""
  if [ -n "$verbose" ]; then tail -n +1 -f "$log" >&2 & tail_pid=$!; RUN_PIDS+=" $tail_pid"; fi
  # -nic none: no network device, unless --forward. Then qemu's user-mode network (slirp) with
  # restrict=on: "the guest will be isolated, i.e. it will not be able to contact the host and
  # no guest IP packets will be routed over the host to the outside. This option does not affect
  # any explicitly set forwarding rules" (qemu(1), -netdev user). Each hostfwd binds 127.0.0.1
  # only, never the host's other addresses. panic=-1 + -no-reboot: a guest panic ends qemu.
  local nic="none" fw
  if [ ${#fwds[@]} -gt 0 ]; then
    nic="user,model=virtio-net-pci,restrict=on"
    for fw in "${fwds[@]}"; do nic+=",hostfwd=tcp:127.0.0.1:${fw%%:*}-:${fw#*:}"; done
  fi
  local qrc=0
  timeout -k 10 "$timeout" qemu-system-x86_64 \
      -accel "${IPVS_VM_ACCEL:-tcg}" -cpu "${IPVS_VM_CPU:-qemu64}" -smp "${IPVS_VM_SMP:-1}" -m "$mem" \
      -nic "$nic" -no-reboot -nodefaults -display none -vga none -monitor none \
      -serial "file:$log" -serial "file:$work/out" -serial "file:$work/err" \
      ${share_args[@]+"${share_args[@]}"} \
      -kernel "$kernel" -initrd "$initrd" \
      -append "console=ttyS0 panic=-1 quiet loglevel=4 8250.nr_uarts=4 rdinit=/init" \
      < /dev/null > "$work/qemu.out" 2>&1 &
  QEMU_PID=$!   # the pid of timeout(1), which owns qemu
  wait "$QEMU_PID" || qrc=$?
  QEMU_PID=
  # a cat still blocked in open() (qemu never opened its fifo) gets a writer and EOF
  local fd f
  for f in out err; do exec {fd}<>"$work/$f"; exec {fd}>&-; done
  wait "$out_pid" "$err_pid" 2>/dev/null || true
  if [ -n "$tail_pid" ]; then sleep 0.2; kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; fi
  RUN_PIDS=""

  local rc ready
  rc=$(tr -d '\r' < "$log" | sed -n 's/^IPVS-VM-EXIT=\([0-9]*\)$/\1/p' | tail -1)
  ready=$(tr -d '\r' < "$log" | sed -n 's/^IPVS-VM: READY uptime=\([0-9.]*\).*/\1/p' | tail -1)
  local why=""
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    why="TIMEOUT: the VM did not finish within $timeout s (killed)"; rc=124
  elif [ -z "$rc" ]; then
    local gfail; gfail=$(tr -d '\r' < "$log" | sed -n 's/^IPVS-VM-FAIL: //p' | head -1)
    if [ -z "$ready" ]; then why="BOOT FAILURE: the guest never reached the command (${gfail:+$gfail; }qemu exit $qrc)"
    else why="the guest ended without reporting the command's exit status (qemu exit $qrc; panic?)"; fi
    rc=125
  fi
  if [ -n "$why" ]; then
    say "$why"
    { echo "---- qemu output:"; cat "$work/qemu.out"; echo "---- guest console (last 50 lines):"; tr -d '\r' < "$log" | tail -n 50; echo "----"; } >&2
  fi
  [ -n "${IPVS_VM_QUIET:-}" ] || say "exit $rc; boot-to-command ${ready:-?} s guest uptime; total $(elapsed "$t0") s"
  return "$rc"
}

# on any exit of run/exec (also Ctrl-C, a closed output pipe): stop what this run started, by pid,
# and remove its temporary directory
RUN_WORK="" RUN_PIDS="" QEMU_PID=""
run_cleanup() {
  local p
  [ -z "$QEMU_PID" ] || kill -TERM "$QEMU_PID" 2>/dev/null || true
  for p in $RUN_PIDS; do kill "$p" 2>/dev/null || true; done
  [ -z "$RUN_WORK" ] || rm -rf "$RUN_WORK"
}

cmd_exec() {
  [ $# -ge 1 ] || die "usage: ipvs-vm.sh exec BINARY [ARG...]" 2
  local bin=$1 bdir; shift
  [ -f "$bin" ] || die "exec: no such file: $bin" 2
  bdir=$(cd "$(dirname "$bin")" && pwd -P)
  local opts=(--share "$REPO_DIR")
  case "$bdir/" in "$REPO_DIR"/*) ;; *) opts+=(--share "$bdir") ;; esac
  local v
  for v in $(compgen -e); do
    case $v in RUST_*|CARGO_TERM_COLOR|NO_COLOR|IPVS_MIGRATE_*) opts+=(--env "$v") ;; esac
  done
  cmd_run "${opts[@]}" -- "$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")" "$@"
}

VM_BUSYBOX=""   # the image's static busybox, set once the cache exists
main() {
  local sub=${1:-}; [ $# -gt 0 ] && shift
  case $sub in
    ensure) cmd_ensure "$@" ;;
    run|exec)
      IPVS_VM_QUIET=1 cmd_ensure
      VM_BUSYBOX="$IMG_DIR/busybox"
      [ -x "$VM_BUSYBOX" ] || die "no busybox in the cache (run ensure)"
      if [ "$sub" = run ]; then cmd_run "$@"; else cmd_exec "$@"; fi ;;
    clean) rm -rf "$CACHE"; say "removed $CACHE" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}
main "$@"
