#!/usr/bin/env bash
# Builds the initramfs of a Cloister VM: cloister-enclave, its measured configuration, a busybox /init
# and the kernel modules the guest needs. Nothing else. The output is reproducible: the same inputs give
# the same bytes (sorted entries, owner 0:0, fixed modes and mtimes, gzip without name or time), because
# the initrd is part of the SNP launch measurement (kernel-hashes) and a model owner must be able to
# rebuild it and get the digest they pin. See docs/snp-qemu.md.
#
# Usage: scripts/build-initrd.sh --enclave FILE --config FILE --kernel-modules DIR --output FILE
#                                [--sim-dir DIR] [--busybox FILE] [--module NAME]...
#   --enclave FILE         the cloister-enclave binary, copied unchanged (the simulated platform measures
#                          its bytes). Dynamically linked: the shared libraries `ldd` lists are copied too.
#                          Statically linked (`-C target-feature=+crt-static`): copied alone.
#   --config FILE          the enclave's measured configuration (TOML), copied unchanged.
#   --kernel-modules DIR   the modules directory of the guest kernel, /lib/modules/<version> (with its
#                          modules.dep). The modules below are taken from it, with their dependencies, in
#                          load order; compressed modules (.ko.xz/.zst/.gz) are decompressed.
#   --output FILE          the initrd (cpio newc, gzip).
#   --sim-dir DIR          INSECURE, tests only: the simulated platform's state directory, for a VM whose
#                          configuration says firmware = "simulated" (its sim_dir must be /cloister/sim).
#   --busybox FILE         a statically linked busybox (default /bin/busybox, Debian's busybox-static).
#   --module NAME          another module to load at boot (repeatable).
#   SOURCE_DATE_EPOCH      the mtime of every entry (default 0).
#
# Layout:
#   /init                        busybox sh script (below): mounts, modules, network, then the enclave
#   /bin/busybox, /bin/<applet>  the applets /init uses (symlinks)
#   /cloister/cloister-enclave   the enclave
#   /cloister/enclave.toml       the measured configuration
#   /cloister/sim/...            only with --sim-dir
#   /lib/modules/<name>.ko       the modules, loaded in the order of /init
#   /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/*.so.*   only for a dynamically linked enclave
#
# Modules: virtio_pci and virtio_net (required: the network), then sev-guest and tsm when the kernel has
# them (optional: the SNP guest request device and configfs-tsm; they load only in an SNP guest, and a
# failure to load them is logged, not fatal, since the firmware backend reports a missing device itself).
# Each with its dependencies from modules.dep; modules built into the kernel (modules.builtin) are skipped.
#
# /init reads two launch arguments from the kernel command line (measured too under kernel-hashes):
#   cloister.listen=ADDR  --listen of the enclave (e.g. 0.0.0.0:4433; the host forwards a port to it)
#   cloister.blobs=URL    --blobs of the enclave (e.g. http://10.0.2.2:7000, the host's blob service)
# and configures eth0 for QEMU user networking (10.0.2.15/24, gateway 10.0.2.2). When the enclave exits,
# /init powers the VM off (QEMU runs with -no-reboot), so the host sees the VM stop and restarts it.
set -euo pipefail
umask 022

usage() { sed -n '8,22p' "$0" >&2; exit 2; }
die() { echo "build-initrd: $*" >&2; exit 1; }

ENCLAVE="" CONFIG="" MODULES_DIR="" OUTPUT="" SIM_DIR="" BUSYBOX="/bin/busybox"
EXTRA_MODULES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --enclave) ENCLAVE="${2:?}"; shift 2 ;;
    --config) CONFIG="${2:?}"; shift 2 ;;
    --kernel-modules) MODULES_DIR="${2:?}"; shift 2 ;;
    --output) OUTPUT="${2:?}"; shift 2 ;;
    --sim-dir) SIM_DIR="${2:?}"; shift 2 ;;
    --busybox) BUSYBOX="${2:?}"; shift 2 ;;
    --module) EXTRA_MODULES+=("${2:?}"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "build-initrd: unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$ENCLAVE" ] && [ -n "$CONFIG" ] && [ -n "$MODULES_DIR" ] && [ -n "$OUTPUT" ] || usage
[ -f "$ENCLAVE" ] || die "--enclave $ENCLAVE: not a file"
[ -f "$CONFIG" ] || die "--config $CONFIG: not a file"
[ -f "$MODULES_DIR/modules.dep" ] || die "--kernel-modules $MODULES_DIR: no modules.dep (expected /lib/modules/<version>; \
for a kernel package extracted with dpkg-deb -x ROOT, run depmod -b ROOT <version> first)"
[ -z "$SIM_DIR" ] || [ -d "$SIM_DIR" ] || die "--sim-dir $SIM_DIR: not a directory"
[ -f "$BUSYBOX" ] || die "busybox $BUSYBOX not found (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; a static busybox is needed (apt-get install busybox-static)"
fi
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
EPOCH="${SOURCE_DATE_EPOCH:-0}"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,cloister,dev,proc,sys,tmp,lib/modules}

# --- the enclave, its configuration, and (tests only) the simulated platform
install -m 0755 "$ENCLAVE" "$STAGE/cloister/cloister-enclave"
install -m 0644 "$CONFIG" "$STAGE/cloister/enclave.toml"
if [ -n "$SIM_DIR" ]; then
  cp -R "$SIM_DIR" "$STAGE/cloister/sim"
fi

# --- shared libraries of a dynamically linked enclave, at the paths the dynamic loader looks them up
if ldd "$ENCLAVE" >/dev/null 2>&1; then
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$STAGE$(dirname "$lib")"
    cp -L "$lib" "$STAGE$lib"
    chmod 0755 "$STAGE$lib"
  done < <(ldd "$ENCLAVE" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | LC_ALL=C sort -u)
fi

# --- busybox and the applets /init uses
install -m 0755 "$BUSYBOX" "$STAGE/bin/busybox"
for applet in sh mount insmod ip cat sleep echo poweroff; do
  ln -s busybox "$STAGE/bin/$applet"
done

# --- kernel modules with their dependencies, in load order
declare -A SEEN=()
LOAD_ORDER=()
module_path() { # NAME -> path relative to the modules dir, from modules.dep; "builtin"; "" if absent
  local name="$1" n found
  for n in "$name" "${name//-/_}" "${name//_/-}"; do
    found="$(grep -E "^([^:]*/)?${n}\.ko(\.(xz|zst|gz))?:" "$MODULES_DIR/modules.dep" | head -n1 | cut -d: -f1)"
    if [ -n "$found" ]; then echo "$found"; return; fi
  done
  for n in "$name" "${name//-/_}" "${name//_/-}"; do
    if grep -qE "(^|/)${n}\.ko$" "$MODULES_DIR/modules.builtin" 2>/dev/null; then echo builtin; return; fi
  done
}
resolve() { # PATH: its dependencies first, then itself
  local path="$1" deps dep
  [ -z "${SEEN[$path]:-}" ] || return 0
  SEEN[$path]=1
  deps="$(grep -E "^${path//./\\.}:" "$MODULES_DIR/modules.dep" | cut -d: -f2)"
  for dep in $deps; do resolve "$dep"; done
  LOAD_ORDER+=("$path")
}
REQUIRED_MODULES=(virtio_pci virtio_net "${EXTRA_MODULES[@]}")
OPTIONAL_MODULES=(tsm sev-guest)
for m in "${REQUIRED_MODULES[@]}"; do
  p="$(module_path "$m")"
  [ -n "$p" ] || die "module $m is neither in $MODULES_DIR/modules.dep nor built in (wrong kernel?)"
  [ "$p" = builtin ] || resolve "$p"
done
REQUIRED_COUNT=${#LOAD_ORDER[@]}
for m in "${OPTIONAL_MODULES[@]}"; do
  p="$(module_path "$m")"
  [ -z "$p" ] || [ "$p" = builtin ] || resolve "$p"
done
INSMOD_LINES=""
i=0
for p in "${LOAD_ORDER[@]}"; do
  base="$(basename "$p")"
  name="${base%%.ko*}"
  case "$p" in
    *.ko) cp "$MODULES_DIR/$p" "$STAGE/lib/modules/$name.ko" ;;
    *.ko.xz) xz -dc "$MODULES_DIR/$p" > "$STAGE/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$MODULES_DIR/$p" > "$STAGE/lib/modules/$name.ko" ;;
    *.ko.gz) gzip -dc "$MODULES_DIR/$p" > "$STAGE/lib/modules/$name.ko" ;;
    *) die "unexpected module file $p" ;;
  esac
  if [ "$i" -lt "$REQUIRED_COUNT" ]; then
    INSMOD_LINES+="load $name required"$'\n'
  else
    INSMOD_LINES+="load $name optional"$'\n'
  fi
  i=$((i + 1))
done

# --- /init
cat > "$STAGE/init" <<'EOF'
#!/bin/sh
# Cloister VM init (generated by scripts/build-initrd.sh; part of the measured initrd).
export PATH=/bin
say() { echo "cloister-init: $*"; }
halt() { say "$*; powering off"; poweroff -f; sleep 60; }

mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp

load() { # NAME required|optional
  if ! insmod "/lib/modules/$1.ko" 2>/dev/null; then
    if [ "$2" = required ]; then halt "cannot load module $1"; fi
    say "module $1 not loaded (only available in an SEV-SNP guest)"
  fi
}
EOF
printf '%s' "$INSMOD_LINES" >> "$STAGE/init"
cat >> "$STAGE/init" <<'EOF'
# configfs-tsm (firmware = "configfs-tsm") lives under /sys/kernel/config (configfs may be a module).
[ -d /sys/kernel/config ] && mount -t configfs configfs /sys/kernel/config

# Launch arguments from the kernel command line.
LISTEN=""
BLOBS=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cloister.listen=*) LISTEN="${arg#cloister.listen=}" ;;
    cloister.blobs=*) BLOBS="${arg#cloister.blobs=}" ;;
  esac
done
[ -n "$LISTEN" ] || halt "cloister.listen= is missing from the kernel command line"
[ -n "$BLOBS" ] || halt "cloister.blobs= is missing from the kernel command line"

# QEMU user networking: the host is 10.0.2.2.
ip link set lo up
n=0
while ! ip link show eth0 >/dev/null 2>&1; do
  n=$((n + 1))
  [ "$n" -le 50 ] || halt "no eth0"
  sleep 0.1
done
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2

say "starting cloister-enclave"
/cloister/cloister-enclave --config /cloister/enclave.toml --listen "$LISTEN" --blobs "$BLOBS"
halt "cloister-enclave exited with status $?"
EOF
chmod 0755 "$STAGE/init"

# --- normalise and pack: sorted names, owner 0:0, fixed modes and mtimes, no gzip name or time
find "$STAGE" -mindepth 1 -type d -exec chmod 0755 {} +
chmod 1777 "$STAGE/tmp"
find "$STAGE/lib/modules" -type f -exec chmod 0644 {} +
if [ -n "$SIM_DIR" ]; then
  # The simulated platform refuses private keys that group or others may read.
  find "$STAGE/cloister/sim" -type d -exec chmod 0700 {} +
  find "$STAGE/cloister/sim" -type f -exec chmod 0600 {} +
fi
find "$STAGE" -exec touch -h -d "@$EPOCH" {} +
mkdir -p "$(dirname "$OUTPUT")"
TMP_OUT="$OUTPUT.tmp.$$"
(cd "$STAGE" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z \
  | cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) \
  | gzip -n -6 > "$TMP_OUT"
mv "$TMP_OUT" "$OUTPUT"
MODULE_NAMES=""
for p in "${LOAD_ORDER[@]}"; do base="${p##*/}"; MODULE_NAMES+=" ${base%%.ko*}"; done
echo "build-initrd: $OUTPUT ($(stat -c %s "$OUTPUT") bytes; modules:$MODULE_NAMES)" >&2
