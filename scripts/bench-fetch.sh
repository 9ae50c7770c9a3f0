#!/usr/bin/env bash
# Fetch+verify of a 256 MiB artifact over loopback (`phase fetch`, hashing as bytes arrive)
# against `curl -o /dev/null` of the same file from the same server, as a throughput ratio.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/out"
w=$(mktemp -d /dev/shm/phase-bench-fetch.XXXXXX); trap 'kill $srv 2>/dev/null || true; rm -rf "$w"' EXIT
head -c $((256 << 20)) /dev/urandom > "$w/big.bin"
"$out/phase-image" release --root "$out/trusted-root.json" --version 1 --kernel "$w/big.bin" \
  --initramfs "$out/initramfs.img" --sign "$top/keys/test/TEST-release-1.key" \
  --sign "$top/keys/test/TEST-release-2.key" --out-dir "$w/rel" > /dev/null
"$out/phase" provider serve "$w/rel" --listen 127.0.0.1:0 > "$w/srv.log" &
srv=$!
for _ in $(seq 100); do grep -q serving "$w/srv.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*/' "$w/srv.log")
best() { local b=999999; for _ in 1 2 3; do local t0 t1; t0=$(date +%s%N); "$@" > /dev/null 2>&1; t1=$(date +%s%N)
  local ms=$(( (t1 - t0) / 1000000 )); [ $ms -lt $b ] && b=$ms; done; echo $b; }
curl_ms=$(best curl -s -o /dev/null "${url}big.bin")
phase_ms=$(best bash -c "rm -rf '$w/got'; '$out/phase' fetch --root '$out/trusted-root.json' --provider '$url' --out '$w/got'")
echo "fetch 256 MiB over loopback (best of 3): curl -o /dev/null ${curl_ms} ms, phase fetch+verify ${phase_ms} ms (incl. metadata + 1.7 MB initramfs)"
awk -v c="$curl_ms" -v p="$phase_ms" 'BEGIN { printf "ratio phase/curl throughput = %.2f (goal >= 0.8)\n", c / p }'
