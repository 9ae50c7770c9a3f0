#!/usr/bin/env bash
# `make bench`, the image part: how long `phase-image disk --bootable` takes from the
# artifacts already built (release, rootfs, hash device; GRUB images made each time), and
# how big out/phase-x86_64.img and its qcow2 are. Goal: the image in at most 10 s.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/out"
runs=${RUNS:-3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct)}
times=()
for i in $(seq "$runs"); do
  t0=$(date +%s%N)
  "$out/phase-image" disk --bootable --trusted-root "$out/trusted-root.json" \
    --release-dir "$out/release" --rootfs "$out/rootfs.squashfs" \
    --verity "$out/rootfs.verity" --state-size-mib 64 -o "$tmp/phase-x86_64.img" >/dev/null
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
same=$(cmp -s "$tmp/phase-x86_64.img" "$out/phase-x86_64.img" && echo yes || echo no)
size=$(stat -c %s "$out/phase-x86_64.img")
alloc=$(( $(stat -c %b "$out/phase-x86_64.img") * $(stat -c %B "$out/phase-x86_64.img") ))
qsize=$(stat -c %s "$out/phase-x86_64.qcow2" 2>/dev/null || echo 0)
echo "image: phase-image disk --bootable: median ${median} ms of ${runs} runs (${times[*]} ms); goal 10000 ms: $(( median * 100 / 10000 ))% of the goal"
printf 'image: out/phase-x86_64.img %d MiB (%d MiB allocated, sparse); qcow2 %d MiB; identical to make build'"'"'s: %s\n' \
  $((size >> 20)) $((alloc >> 20)) $((qsize >> 20)) "$same"
