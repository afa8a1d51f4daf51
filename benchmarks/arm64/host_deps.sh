#!/bin/sh
# Host packages for the emulated aarch64 check: qemu user-mode emulation and the Debian root-folder builder.
# Installs only what is missing; needs root (CI runs as root). See docs/arm64.md.
set -eu
missing=""
command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$missing qemu-user-static"
command -v mmdebstrap >/dev/null 2>&1 || missing="$missing mmdebstrap"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "arm64: need$missing (apt); run as root or: sudo apt-get install$missing" >&2
    exit 2
fi
echo "arm64: apt-get install$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt may hold the lock (CI images update in the background): wait for it instead of failing.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null
