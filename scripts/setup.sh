#!/usr/bin/env bash
# Install what building, running and testing Phase Boot needs on a Debian machine.
# Idempotent: installs only what is missing. Needs root for apt (sudo is used if present).
set -euo pipefail
# avahi-daemon and tcpdump are for the discovery tests: avahi announces a plain HTTP server
# inside a test network namespace (private config, no D-Bus), tcpdump captures on the test
# bridge. Neither is started on the host by the tests. grub-common + grub-efi-amd64-bin build
# the UEFI network loader of out/netboot; ipxe-qemu is the PXE ROM QEMU's netboot tests use.
# lz4 compresses the initramfs (phase-image initramfs); xz-utils (with zstd) lets `make bench`
# compare initramfs compressors.
# grub-pc-bin and grub-efi-ia32-bin (with the above) build the hybrid image's BIOS and IA32
# loaders rootless; ovmf-ia32 is the 32-bit UEFI firmware its boot test uses; qemu-img
# (qemu-utils) makes the qcow2. faketime runs `make test` with the clock moved ahead
# (docs/testing.md, "No time bomb").
pkgs=(lz4 xz-utils grub-common grub-efi-amd64-bin grub-pc-bin grub-efi-ia32-bin ipxe-qemu qemu-system-x86 qemu-utils ovmf ovmf-ia32 musl-tools cpio zstd e2fsprogs cryptsetup-bin file fdisk squashfs-tools iproute2 python3 python3-venv dnsmasq-base avahi-daemon tcpdump faketime)
missing_pkgs() { for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# Twice at most: installing one package can remove another that conflicts with it (a
# backported qemu-utils goes when Debian's qemu-system-x86 comes), which then comes back
# at the version that fits.
for pass in 1 2; do
  mapfile -t missing < <(missing_pkgs)
  [ ${#missing[@]} -eq 0 ] && break
  echo "setup: installing ${missing[*]}"
  [ $pass = 1 ] && $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
done
mapfile -t missing < <(missing_pkgs)
[ ${#missing[@]} -eq 0 ] || { echo "setup: still not installed: ${missing[*]}" >&2; exit 1; }
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  echo "setup: adding rust target x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
fi
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding rust target wasm32-wasip1 (example jobs)"
  rustup target add wasm32-wasip1
fi
# Pinned Python packages of the tests (securesystemslib verifies job receipts independently).
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/build/pyenv/bin/pip" freeze 2>/dev/null | grep -qx 'securesystemslib==1.6.0'; then
  echo "setup: installing scripts/requirements-test.txt into build/pyenv"
  mkdir -p "$root/build"
  python3 -m venv "$root/build/pyenv"
  "$root/build/pyenv/bin/pip" install -q -r "$root/scripts/requirements-test.txt"
fi
if ! rustup component list --installed | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup component list --installed | grep -q '^rustfmt'; then rustup component add rustfmt; fi
# cargo-fuzz for the bounded fuzzing run in `make test` (built from crates.io).
if ! command -v cargo-fuzz >/dev/null; then
  echo "setup: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
