#!/usr/bin/env bash
# `make bench`: our boot timings (phase-bench) against Debian's initramfs-tools baseline
# (../shared/bench/debian-initrd-baseline.sh) on the same kernel under the same QEMU.
# The baseline needs Debian's own initrd for that kernel, which only exists once the kernel
# package is installed (initramfs-tools builds it in /boot): this script installs it if
# missing. That is a system change made for the benchmark only; the build never needs it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$(sed -n 's/^release=//p' "$top/build/kernel/VERSION")
baseline="$top/../shared/bench/debian-initrd-baseline.sh"
log=$(mktemp); trap 'rm -f "$log"' EXIT
if [ -f "$baseline" ]; then
  if [ ! -f "/boot/initrd.img-$rel" ]; then
    echo "bench: installing linux-image-$rel + initramfs-tools for Debian's baseline initrd"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "linux-image-$rel" initramfs-tools >/dev/null
  fi
  echo "bench: Debian baseline (RUNS=${RUNS:-3}) ..."
  KERNEL="$top/out/vmlinuz" INITRD="/boot/initrd.img-$rel" bash "$baseline" | tee "$log"
else
  echo "bench: $baseline not found; Debian baseline skipped"
fi
BASELINE_LOG="$log" "$top/target/release/phase-bench"
echo "bench: verified fetch"
"$top/scripts/bench-fetch.sh"
echo "bench: signed releases"
(cd "$top" && cargo run -q --release --locked -p phase-release --example bench)
echo "bench: hybrid image"
"$top/scripts/bench-image.sh"
echo "bench: jobs (WASM executor, in-process)"
cargo build -q --release --locked --manifest-path "$top/jobs/Cargo.toml" --target-dir "$top/target/jobs" --bin sieve
"$top/out/phase-node" job bench "$top/out/jobs" "$top/target/jobs/release/sieve"
echo "bench: job protocol (/phase/job/1 over loopback: warm latency, fresh connection, sieve jobs/s)"
"$top/out/phase-node" node bench --jobs-dir "$top/out/jobs"
