#!/usr/bin/env bash
# Copy the few shared files the GPU flow benchmark reads into gpu_data/ (git-ignored), so a
# GPU machine without /work/shared gets them by carrying that one folder.
#
# Usage: bench/pack_gpu_data.sh [SHARED_DATA]   (default: $MVACCEL_SHARED_DATA, else ../shared/data)
# Then on the GPU machine: MVACCEL_SHARED_DATA=$PWD/gpu_data bench/gpu_check_flow.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-${MVACCEL_SHARED_DATA:-../shared/data}}/flyingchairs"
dst=gpu_data/flyingchairs
if [ ! -f "$src/0000002-gt.flo" ]; then
  echo "pack_gpu_data: FlyingChairs pairs 0-2 not found in $src" >&2
  exit 1
fi
mkdir -p "$dst"
for k in 0000000 0000001 0000002; do
  cp "$src/$k-img0.png" "$src/$k-img1.png" "$src/$k-gt.flo" "$dst/"
done
cp "$src/README.md" "$dst/"
du -sh gpu_data
