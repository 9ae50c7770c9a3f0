#!/usr/bin/env bash
# Fetch Debian's default amd64 kernel package without installing it: `apt-get download`,
# then unpack with dpkg-deb into build/kernel/. Cached: does nothing if the recorded version
# is already unpacked. Writes build/kernel/VERSION (package=version, kernel release).
# Override with KERNEL_PKG=linux-image-<release> to pin another kernel, and KERNEL_DIR=build/NAME
# to unpack it elsewhere (`make build` unpacks the kernel of release N+1 in build/kernel-next).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest="$top/${KERNEL_DIR:-build/kernel}"
pkg=${KERNEL_PKG:-}
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null 2>&1 || sudo apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }
ver=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
release=${pkg#linux-image-}
if [ -f "$dest/VERSION" ] && grep -qx "package=$pkg=$ver" "$dest/VERSION" && [ -d "$dest/lib/modules/$release" ]; then
  exit 0
fi
echo "fetch-kernel: downloading $pkg=$ver"
rm -rf "$dest" && mkdir -p "$dest/deb"
(cd "$dest/deb" && apt-get download "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
deb=$(ls "$dest"/deb/*.deb)
dpkg-deb -x "$deb" "$dest"
rm -rf "$dest/deb"
[ -f "$dest/boot/vmlinuz-$release" ] || { echo "fetch-kernel: $deb has no boot/vmlinuz-$release" >&2; exit 1; }
printf 'package=%s=%s\nrelease=%s\n' "$pkg" "$ver" "$release" > "$dest/VERSION"
echo "fetch-kernel: $pkg $ver unpacked in ${KERNEL_DIR:-build/kernel} ($(du -sh "$dest" | cut -f1))"
