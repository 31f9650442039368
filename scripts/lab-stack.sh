#!/usr/bin/env bash
# Unpack Debian 13's QEMU 10 / libvirt 11 (bookworm-backports builds, for Debian 12) into
# a directory of their own, for the lab's daemons to run (ORBIT_LAB_STACK=DIR/root): the
# system's QEMU and libvirt stay as they are. Idempotent: does nothing once DIR/root holds
# the versions asked for. Debian 12 only (on Debian 13 the system's own stack is that one).
#
#   scripts/lab-stack.sh [DIR]      default DIR: /var/cache/orbit-stacks/debian13
set -euo pipefail

dir=${1:-/var/cache/orbit-stacks/debian13}
suite=bookworm-backports
qemu_version=1:10.0.2+ds-2+deb13u1~bpo12+1
libvirt_version=11.3.0-2~bpo12+1
seabios_version=1.16.3-2~bpo12+1
packages=(
  "qemu-system-x86=$qemu_version" "qemu-system-common=$qemu_version"
  "qemu-system-data=$qemu_version" "qemu-utils=$qemu_version" "seabios=$seabios_version"
)
for p in libvirt0 libvirt-common libvirt-clients libvirt-daemon libvirt-daemon-common \
         libvirt-daemon-log libvirt-daemon-driver-qemu libvirt-daemon-driver-storage \
         libvirt-daemon-driver-network libvirt-daemon-driver-nwfilter \
         libvirt-daemon-driver-nodedev libvirt-daemon-driver-secret; do
  packages+=("$p=$libvirt_version")
done
stamp="$dir/root/.orbit-stack"
want="${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "lab-stack: $dir/root holds QEMU ${qemu_version#1:} / libvirt $libvirt_version"
  exit 0
fi
if [ "$(cut -d. -f1 /etc/debian_version)" != 12 ]; then
  echo "lab-stack: only for Debian 12 (this is $(cat /etc/debian_version))" >&2
  exit 1
fi
sources=/etc/apt/sources.list.d/orbit-$suite.sources
if [ ! -f "$sources" ]; then
  # a package source for downloads only: pinned below every other, nothing installs from it
  cat > "$sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/orbit-$suite <<PIN
Package: *
Pin: release n=$suite
Pin-Priority: 1
PIN
fi
apt-get update -q
rm -rf "$dir/debs" "$dir/root"
mkdir -p "$dir/debs" "$dir/root"
# the versions tested; when the mirror has moved on, the suite's own (said so)
if ! (cd "$dir/debs" && apt-get download -q "${packages[@]}"); then
  echo "lab-stack: $suite no longer has these versions; taking its current ones" >&2
  (cd "$dir/debs" && apt-get download -q "${packages[@]/=*//$suite}")
fi
for deb in "$dir"/debs/*.deb; do
  dpkg-deb -x "$deb" "$dir/root"
done
echo "$want" > "$stamp"
echo "lab-stack: unpacked QEMU ${qemu_version#1:} / libvirt $libvirt_version into $dir/root"
