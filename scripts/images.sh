#!/usr/bin/env bash
# Build Kiln's sandbox images from Debian packages and load them with `docker import`
# (no container registry is reachable here). Images that already exist are skipped.
#
#   kiln/busybox  busybox-static only (about 2 MB)
#   kiln/python   debootstrap of bookworm minbase with python3 (about 250 MB)
#   kiln/runtimes the same with python3, nodejs, gcc and g++: the runtime catalog's languages
#
# Usage: scripts/images.sh [busybox] [python] [runtimes]   (default: all three)
set -euo pipefail

log() { echo "[images] $*" >&2; }
MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${KILN_DEBIAN_SUITE:-bookworm}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

need_pkg() {
  local bin=$1 pkg=$2
  if ! command -v "$bin" >/dev/null 2>&1 && ! dpkg -s "$pkg" >/dev/null 2>&1; then
    log "installing $pkg"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$pkg" >/dev/null
  fi
}

build_busybox() {
  if have_image kiln/busybox; then log "kiln/busybox exists, skipping"; return; fi
  need_pkg busybox busybox-static
  [ -x /bin/busybox ] || { log "busybox-static did not install /bin/busybox"; exit 1; }
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,workspace,proc,sys,dev}
  cp /bin/busybox "$root/bin/busybox"
  chroot "$root" /bin/busybox --install -s /bin
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  log "importing kiln/busybox"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - kiln/busybox >/dev/null
}

# A debootstrap of bookworm minbase with extra packages, imported as image $1.
build_debian() {
  local image=$1 packages=$2 what=$3
  if have_image "$image"; then log "$image exists, skipping"; return; fi
  need_pkg debootstrap debootstrap
  local root
  root=$(mktemp -d)
  # Cleared when it fires, so that it does not fire again when the caller returns.
  trap 'rm -rf "$root"; trap - RETURN' RETURN
  log "debootstrap $SUITE minbase + $what"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$MIRROR" >/tmp/kiln-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /tmp/kiln-debootstrap.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  mkdir -p "$root/workspace"
  log "importing $image"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
}

build_python() { build_debian kiln/python python3 "python3 (about a minute)"; }

# Every language of the runtime catalog (config/runtimes.toml) in one image.
build_runtimes() {
  build_debian kiln/runtimes python3,nodejs,gcc,g++,libc6-dev \
    "python3, nodejs, gcc, g++ (a few minutes)"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(busybox python runtimes)
for t in "${targets[@]}"; do
  case "$t" in
    busybox) build_busybox ;;
    python) build_python ;;
    runtimes) build_runtimes ;;
    *) log "unknown image $t (known: busybox python runtimes)"; exit 2 ;;
  esac
done
