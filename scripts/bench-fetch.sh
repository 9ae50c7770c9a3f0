#!/usr/bin/env bash
# Fetch+verify of a 256 MiB rootfs over loopback (`phase fetch`: the connection hands its
# buffers to a worker that shares them with one hashing thread per CPU, each of which hashes
# its share of the 4 KiB blocks, two at a time on SHA-NI, and writes that share to the
# file; the rootfs checked by its dm-verity tree against the signed root hash; the other
# artifacts at once after the first) against `curl -o /dev/null` of the same file from the
# same server (`phase provider serve`, which sends with sendfile(2)),
# as a throughput ratio; also against curl storing the file on tmpfs, as phase does, and
# the client CPU time of each (on a loaded machine the wall ratio follows the CPU ratio).
# They alternate, RUNS times each (default 7), so all see the same machine; the median
# and the best of each are printed, the ratios of both, and the load average (on a shared
# machine the median says what to expect, the best what the code can do).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/out"
runs=${RUNS:-7}
# The init stores a fetched release in /run/phase/release, on the tmpfs it mounts with
# huge=within_size (init/src/boot/early.rs): as root the bench works on a tmpfs mounted the
# same way, else in /dev/shm (which says so below).
base=/dev/shm mnt=""
if [ "$(id -u)" -eq 0 ] && mnt=$(mktemp -d /tmp/phase-bench-run.XXXXXX) &&
   mount -t tmpfs -o mode=0755,huge=within_size,size=2g tmpfs "$mnt" 2>/dev/null; then base=$mnt
else [ -n "$mnt" ] && rmdir "$mnt"; mnt=""; fi
w=$(mktemp -d "$base/phase-bench-fetch.XXXXXX")
trap 'kill $srv 2>/dev/null || true; rm -rf "$w"; [ -z "$mnt" ] || { umount "$mnt"; rmdir "$mnt"; }' EXIT
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
# The provider's CPU time so far (user + sys), in ms: it shares the 2 cores with the client.
tick=$(getconf CLK_TCK)
srv_ms() { awk -v t="$tick" '{ printf "%d\n", ($14 + $15) * 1000 / t }' "/proc/$srv/stat"; }
# One run of "$@": "wall_ms cpu_ms provider_cpu_ms" (CPU = user + sys of the command, from
# bash's `time`; the provider's from /proc, in clock ticks).
run() { local t s0; s0=$(srv_ms)
  t=$( { TIMEFORMAT='%R %U %S'; time "$@" > /dev/null 2>&1 || echo FAILED; } 2>&1 )
  case "$t" in *FAILED*) echo "bench-fetch: $* failed" >&2; exit 1;; esac
  awk -v s=$(( $(srv_ms) - s0 )) '{ printf "%d %d %d\n", $1 * 1000, ($2 + $3) * 1000, s }' <<< "$t"; }
# Every run's "wall cpu provider", per command; alternating the three, so all see the same machine.
declare -A runs_of
keep() { local r; r=($2); [ "${#r[@]}" -eq 3 ] || { echo "bench-fetch: a $1 run failed" >&2; exit 1; }; runs_of[$1]+="$2"$'\n'; }
for _ in $(seq "$runs"); do
  keep null "$(run curl -sf -o /dev/null "${url}${big}")"
  keep tmpfs "$(run curl -sf -o "$w/curl.out" "${url}${big}")"; rm -f "$w/curl.out"
  rm -rf "$w/got"
  keep phase "$(run "$out/phase" fetch --root "$out/trusted-root.json" --provider "$url" --out "$w/got")"
done
# "median_wall median_cpu best_wall median_provider_cpu" of one command's runs (the median
# run by wall time; the provider's median over all runs).
stats() { local s; s=$(grep . <<< "${runs_of[$1]}" | awk '{ print $3 }' | sort -n | awk '{ s[NR] = $1 }
  END { print s[int((NR + 1) / 2)] }')
  grep . <<< "${runs_of[$1]}" | sort -n | awk -v s="$s" '{ w[NR] = $1; c[NR] = $2 }
  END { m = int((NR + 1) / 2); print w[m], c[m], w[1], s }'; }
declare -A med cpu best srvcpu
for k in null tmpfs phase; do read -r med[$k] cpu[$k] best[$k] srvcpu[$k] <<< "$(stats $k)"; done
others=$(( ($(du -sb "$w/rel" | cut -f1) - $(stat -c %s "$w/rel/$big")) >> 10 ))
echo "fetch 256 MiB rootfs over loopback ($runs runs each, alternating; median wall ms, its client CPU ms, best wall ms; files on $(if [ -n "$mnt" ]; then echo "a tmpfs mounted as the init's /run, huge=within_size"; else echo "/dev/shm, not as the init's /run: run as root for that"; fi)):"
echo "  curl -o /dev/null          ${med[null]} ms  (CPU ${cpu[null]} ms; best ${best[null]} ms; provider CPU ${srvcpu[null]} ms)"
echo "  curl -o FILE on tmpfs      ${med[tmpfs]} ms  (CPU ${cpu[tmpfs]} ms; best ${best[tmpfs]} ms; provider CPU ${srvcpu[tmpfs]} ms)"
echo "  phase fetch+verify         ${med[phase]} ms  (CPU ${cpu[phase]} ms; best ${best[phase]} ms; provider CPU ${srvcpu[phase]} ms; rootfs by its verity tree on $(nproc) CPUs, written to tmpfs; incl. metadata + ${others} KiB tree and stand-in kernel and initramfs)"
awk -v c="${med[null]}" -v t="${med[tmpfs]}" -v p="${med[phase]}" -v bc="${best[null]}" -v bp="${best[phase]}" 'BEGIN {
  printf "ratio phase/curl throughput = %.2f of medians, %.2f of bests (goal >= 0.8; against curl storing to tmpfs too: %.2f)\n", c / p, bc / bp, t / p }'
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
