#!/usr/bin/env bash
# GPU TV-L1 and the `mvaccel flow` pipeline on one GPU (issue 15), in one run:
#   - pairs/s per preset (dense_flow, opencv, fast, tvnet) and batch (1, 64, 256) at 340x256 on
#     FlyingChairs pair 0, the single-pair latency (batch 1), the pure-torch reference on the same
#     GPU, and the CPU kernel's rows at 340x256 beside them (the CPU must not get slower);
#   - EPE of the CUDA kernel against the CPU kernel on FlyingChairs pairs 0-2 (asserted within 1 %);
#   - `mvaccel flow` over a synthetic 320x240 tree, one video after the other vs the pipeline
#     (videos/s, pairs/s, CPU time, estimated hours for UCF101's 2.5 M pairs).
#
# Usage (repository root, GPU machine):
#   here:  bench/pack_gpu_data.sh            # copies FlyingChairs pairs 0-2 into gpu_data/
#   there: bench/gpu_check_flow.sh [OUT_DIR] # carry gpu_data/; default OUT_DIR: $OUT, else out/gpu_check_flow
# Env: MVACCEL_BENCH_TREE=VIDEOSxFRAMES (default 40x150), MVACCEL_SHARED_DATA (default ./gpu_data).
# Builds the CUDA extension in place when the build here has no CUDA kernels (bench/gpu_check.sh's
# way). Writes gpu_check_flow.log (the summary), bench_flow_cuda.txt (pytest's whole output),
# bench_flow_cuda.json and bench_flow_cuda.md under OUT_DIR. About 3 min after the build on an
# H100/H200 with 16 cores (most of it the 40x150 tree: rendering, then 4 passes over it).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-out/gpu_check_flow}}"
mkdir -p "$out"
log="$out/gpu_check_flow.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MVACCEL_SHARED_DATA="${MVACCEL_SHARED_DATA:-$PWD/gpu_data}"
export MVACCEL_BENCH_TREE="${MVACCEL_BENCH_TREE:-40x150}"
status=0
{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  nproc; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$log"
if ! python3 -c "from mvaccel._ext import cuda_ops_ready; import sys; sys.exit(not cuda_ops_ready())" 2>/dev/null; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')")
    export TORCH_CUDA_ARCH_LIST
  fi
  echo "== build (archs $TORCH_CUDA_ARCH_LIST)" | tee -a "$log"
  FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" python3 setup.py build_ext --inplace 2>&1 \
    | tail -n 20 | tee -a "$log" || status=1
fi
echo "== bench/bench_flow.py: CUDA rows, CPU rows at 340x256, tree $MVACCEL_BENCH_TREE" | tee -a "$log"
# MVACCEL_BENCH_FULL: the CPU pairs/s rows at the CUDA rows' 340x256 (the other FULL-only CPU
# rows are left out by -k: OpenCV at 512x384 takes minutes)
MVACCEL_BENCH_FULL=1 python3 -m pytest bench/bench_flow.py -q -p no:cacheprovider --benchmark-only \
  -k "cuda or test_tvl1_pairs_per_s" --benchmark-json="$out/bench_flow_cuda.json" \
  > "$out/bench_flow_cuda.txt" 2>&1 || status=1
# the summary (pairs/s, latency, EPE, videos/s, UCF101 hours), then pytest's verdict
grep -E "^(tvl1 |EPE |mvaccel flow tree)" "$out/bench_flow_cuda.txt" | tee -a "$log"
grep -E "(passed|failed|error)" "$out/bench_flow_cuda.txt" | tail -n 20 | tee -a "$log"
python3 bench/report.py "$out/bench_flow_cuda.json" 2>&1 | tee "$out/bench_flow_cuda.md" >> "$log"
echo "gpu_check_flow exit status: $status" | tee -a "$log"
exit $status
