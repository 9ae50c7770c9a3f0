#!/usr/bin/env bash
# `make bench`: our boot timings (phase-bench) against Debian's initramfs-tools baseline
# (../shared/bench/debian-initrd-baseline.sh) on the same kernel under the same QEMU, and
# verified fetch against curl: the figures of the fast-boot acceptance first, with a
# summary of them; then the other figures (discovery, kexec upgrade, release signing, the
# hybrid image, jobs), unless BENCH=acceptance. A section that fails is named and the
# others still run; the exit status says whether any failed. Prints how long each took.
# The baseline needs Debian's own initrd for that kernel, which only exists once the kernel
# package is installed (initramfs-tools builds it in /boot): this script installs it if
# missing. That is a system change made for the benchmark only; the build never needs it.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$(sed -n 's/^release=//p' "$top/build/kernel/VERSION")
baseline="$top/../shared/bench/debian-initrd-baseline.sh"
mkdir -p "$top/out/bench"
all_log="$top/out/bench/bench.log"
log=$(mktemp); trap 'rm -f "$log"' EXIT
: > "$all_log"
t0=$(date +%s)
failed=()
# section NAME CMD...: run it, its output on the terminal and in out/bench/bench.log.
section() { local name=$1 s; shift; s=$(date +%s)
  echo "bench: $name ..." | tee -a "$all_log"
  if ! "$@" 2>&1 | tee -a "$all_log"; then failed+=("$name"); echo "bench: $name FAILED" | tee -a "$all_log"; fi
  echo "bench: $name took $(( $(date +%s) - s )) s" | tee -a "$all_log"; }
debian() {
  if [ ! -f "$baseline" ]; then echo "bench: $baseline not found; Debian baseline skipped"; return 0; fi
  if [ ! -f "/boot/initrd.img-$rel" ]; then
    echo "bench: installing linux-image-$rel + initramfs-tools for Debian's baseline initrd"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "linux-image-$rel" initramfs-tools >/dev/null
  fi
  KERNEL="$top/out/vmlinuz" INITRD="/boot/initrd.img-$rel" RUNS=${RUNS:-3} bash "$baseline" | tee "$log"
}
section "Debian baseline (RUNS=${RUNS:-3})" debian
section "boots, compressors, ratios" env BASELINE_LOG="$log" PROBE_SRC="$top/../shared/bench/probe-init.c" BENCH_ONLY=acceptance "$top/target/release/phase-bench"
section "verified fetch" "$top/scripts/bench-fetch.sh"
{
  echo
  echo "Summary: the fast-boot acceptance figures (medians of guest ms; load average now $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs)"
  grep -E '^(kernel start -> init.start|init.start -> rootfs.mounted|diskless init.start -> net.up|initramfs (none|gzip|lz4|zstd|xz)|fastest compressor|floor kernel start|ratio kernel->init start|ratio to mounted root|ratio phase/curl|  curl -o /dev/null|  phase fetch\+verify|debian initramfs work)' "$all_log" | sed 's/^/  /'
  echo "bench: acceptance figures took $(( $(date +%s) - t0 )) s"
  echo
} | tee -a "$all_log"
if [ "${BENCH:-all}" != acceptance ]; then
  extra=${RUNS_EXTRA:-2}
  section "discovery (RUNS=$extra)" env RUNS="$extra" BENCH_ONLY=discovery "$top/target/release/phase-bench"
  section "kexec upgrade (RUNS=$extra)" env RUNS="$extra" BENCH_ONLY=kexec "$top/target/release/phase-bench"
  section "signed releases" bash -c "cd '$top' && cargo run -q --release --locked -p phase-release --example bench"
  section "hybrid image" "$top/scripts/bench-image.sh"
  jobs_bench() {
    cargo build -q --release --locked --manifest-path "$top/jobs/Cargo.toml" --target-dir "$top/target/jobs" --bin sieve &&
      "$top/out/phase-node" job bench "$top/out/jobs" "$top/target/jobs/release/sieve"
  }
  section "jobs (WASM executor, in-process)" jobs_bench
  section "job protocol (/phase/job/1 over loopback: warm latency, fresh connection, sieve jobs/s)" \
    "$top/out/phase-node" node bench --jobs-dir "$top/out/jobs"
fi
echo "bench: everything took $(( $(date +%s) - t0 )) s; the whole output is in out/bench/bench.log" | tee -a "$all_log"
if [ "${#failed[@]}" -gt 0 ]; then echo "bench: failed: ${failed[*]}" | tee -a "$all_log"; exit 1; fi
