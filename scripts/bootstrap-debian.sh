#!/usr/bin/env bash
# Install the Debian packages ORBIT needs, on Debian 12 (QEMU 7.2, libvirt 9.0) or
# Debian 13 (QEMU 10.x, libvirt 11.x). Idempotent: apt-get runs only when something is missing.
set -euo pipefail

if [ ! -r /etc/debian_version ]; then
  echo "bootstrap: this is not Debian (/etc/debian_version is missing); install by hand" >&2
  exit 1
fi
major=$(cut -d. -f1 /etc/debian_version)

packages=(
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  pkg-config iproute2 iptables gcc binutils make python3-venv python3-dev
  postgresql   # the tests start a private server from its binaries; the service stays off
  chromium chromium-driver   # the dashboard's browser tests (headless, driven by Playwright)
)
case "$major" in
  12) ;;
  13|trixie/sid) packages+=(libvirt-daemon) ;;   # the monolithic libvirtd the lab runs
  *) echo "bootstrap: Debian $major is untested; trying the Debian 12 package set" >&2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: Debian $(cat /etc/debian_version): all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: missing Debian packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
