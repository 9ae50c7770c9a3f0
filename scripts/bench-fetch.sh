#!/usr/bin/env bash
# Fetch+verify of a 256 MiB rootfs over loopback (`phase fetch`: the connection hands its
# buffers to a worker that writes them and shares them with one hashing thread per CPU, the
# rootfs checked by its dm-verity tree against the signed root hash; the other artifacts at
# once after the first) against `curl -o /dev/null` of the same file from the same server,
# as a throughput ratio. The two alternate, RUNS times each (default 5), and the best of
# each counts, so both see the same machine; the load average is printed with the figures.
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
ms() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null 2>&1 || { echo "bench-fetch: $* failed" >&2; exit 1; }
  t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
curl_ms=999999; phase_ms=999999
for _ in $(seq "$runs"); do
  c=$(ms curl -sf -o /dev/null "${url}${big}"); [ "$c" -lt "$curl_ms" ] && curl_ms=$c
  rm -rf "$w/got"
  p=$(ms "$out/phase" fetch --root "$out/trusted-root.json" --provider "$url" --out "$w/got"); [ "$p" -lt "$phase_ms" ] && phase_ms=$p
done
others=$(( ($(du -sb "$w/rel" | cut -f1) - $(stat -c %s "$w/rel/$big")) >> 10 ))
echo "fetch 256 MiB rootfs over loopback (best of $runs, alternating): curl -o /dev/null ${curl_ms} ms, phase fetch+verify ${phase_ms} ms (rootfs by its verity tree on $(nproc) CPUs; incl. metadata + ${others} KiB tree and stand-in kernel and initramfs; written to tmpfs)"
awk -v c="$curl_ms" -v p="$phase_ms" 'BEGIN { printf "ratio phase/curl throughput = %.2f (goal >= 0.8)\n", c / p }'
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
