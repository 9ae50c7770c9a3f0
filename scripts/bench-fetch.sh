#!/usr/bin/env bash
# Fetch+verify of a 256 MiB rootfs over loopback (`phase fetch`: the connection hands its
# buffers to a worker that writes them and shares them with one hashing thread per CPU, the
# rootfs checked by its dm-verity tree against the signed root hash; the other artifacts at
# once after the first) against `curl -o /dev/null` of the same file from the same server,
# as a throughput ratio; also against curl storing the file on tmpfs, as phase does, and
# the client CPU time of each (on a loaded machine the wall ratio follows the CPU ratio).
# They alternate, RUNS times each (default 5), and the best of each counts, so all see the
# same machine; the load average is printed with the figures.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/out"
runs=${RUNS:-5}
w=$(mktemp -d /dev/shm/phase-bench-fetch.XXXXXX); trap 'kill $srv 2>/dev/null || true; rm -rf "$w"' EXIT
# The kernel and initramfs are small stand-ins: the figure is about the rootfs.
head -c $((256 << 20)) /dev/urandom > "$w/big.bin"
head -c 4096 /dev/urandom > "$w/kernel"; head -c 8192 /dev/urandom > "$w/initramfs"
"$out/phase-image" verity "$w/big.bin" -o "$w/big.verity" > /dev/null
"$out/phase-image" release --root "$out/trusted-root.json" --version 1 --kernel "$w/kernel" \
  --initramfs "$w/initramfs" --rootfs "$w/big.bin" --rootfs-verity "$w/big.verity.json" \
  --sign "$top/keys/test/TEST-release-1.key" \
  --sign "$top/keys/test/TEST-release-2.key" --out-dir "$w/rel" > /dev/null
rm -f "$w/big.bin" "$w/big.verity" "$w/big.verity.json" "$w/kernel" "$w/initramfs"
big=$(basename "$(ls -S "$w/rel" | head -1)")
"$out/phase" provider serve "$w/rel" --listen 127.0.0.1:0 > "$w/srv.log" &
srv=$!
for _ in $(seq 100); do grep -q serving "$w/srv.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*/' "$w/srv.log")
# One run of "$@": "wall_ms cpu_ms" (CPU = user + sys of the command, from bash's `time`).
run() { local t; t=$( { TIMEFORMAT='%R %U %S'; time "$@" > /dev/null 2>&1 || echo FAILED; } 2>&1 )
  case "$t" in *FAILED*) echo "bench-fetch: $* failed" >&2; exit 1;; esac
  awk '{ printf "%d %d\n", $1 * 1000, ($2 + $3) * 1000 }' <<< "$t"; }
# Best (lowest wall) of the runs, alternating the three, so all see the same machine.
declare -A best cpu
for k in null tmpfs phase; do best[$k]=999999; cpu[$k]=0; done
keep() { local k=$1 r; r=($2); [ "${#r[@]}" -eq 2 ] || { echo "bench-fetch: a $k run failed" >&2; exit 1; }; if [ "${r[0]}" -lt "${best[$k]}" ]; then best[$k]=${r[0]}; cpu[$k]=${r[1]}; fi; }
for _ in $(seq "$runs"); do
  keep null "$(run curl -sf -o /dev/null "${url}${big}")"
  keep tmpfs "$(run curl -sf -o "$w/curl.out" "${url}${big}")"; rm -f "$w/curl.out"
  rm -rf "$w/got"
  keep phase "$(run "$out/phase" fetch --root "$out/trusted-root.json" --provider "$url" --out "$w/got")"
done
others=$(( ($(du -sb "$w/rel" | cut -f1) - $(stat -c %s "$w/rel/$big")) >> 10 ))
echo "fetch 256 MiB rootfs over loopback (best of $runs, alternating; wall ms, CPU ms of the client):"
echo "  curl -o /dev/null          ${best[null]} ms  (CPU ${cpu[null]} ms)"
echo "  curl -o FILE on tmpfs      ${best[tmpfs]} ms  (CPU ${cpu[tmpfs]} ms)"
echo "  phase fetch+verify         ${best[phase]} ms  (CPU ${cpu[phase]} ms; rootfs by its verity tree on $(nproc) CPUs, written to tmpfs; incl. metadata + ${others} KiB tree and stand-in kernel and initramfs)"
awk -v c="${best[null]}" -v t="${best[tmpfs]}" -v p="${best[phase]}" 'BEGIN {
  printf "ratio phase/curl throughput = %.2f (goal >= 0.8; against curl storing to tmpfs too: %.2f)\n", c / p, t / p }'
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
