#!/usr/bin/env bash
# Build mvaccel with CUDA on a GPU machine, run the CUDA tests and the CUDA benchmarks.
#
# Usage: bench/gpu_check.sh [OUT_DIR]     (default: $OUT, else ./out/gpu_check)
#
# Made for a machine with torch + CUDA, nvcc, ninja, pytest and pytest-benchmark, no internet
# and no apt (the device machines this project borrows). It builds in place (no pip, no
# downloads), so it also works from a read-only site-packages. Logs and JSON land in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
# The GPU's own architecture only: a faster build than the default list.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')")
  export TORCH_CUDA_ARCH_LIST
fi
status=0
{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "== build (archs $TORCH_CUDA_ARCH_LIST)"
} 2>&1 | tee "$out/gpu_check.log"
python3 setup.py build_ext --inplace 2>&1 | tail -n 40 | tee -a "$out/gpu_check.log" || status=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -m mvaccel info 2>&1 | tee -a "$out/gpu_check.log" || status=1
echo "== CUDA tests" | tee -a "$out/gpu_check.log"
python3 -m pytest python_tests -m cuda -q -p no:cacheprovider --junitxml="$out/cuda_tests.xml" 2>&1 \
  | tail -n 60 | tee -a "$out/gpu_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== CUDA benchmarks" | tee -a "$out/gpu_check.log"
python3 -m pytest bench -q -p no:cacheprovider -k cuda --benchmark-only \
  --benchmark-json="$out/bench_cuda.json" 2>&1 | tail -n 30 | tee -a "$out/gpu_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 bench/report.py "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.md" | tee -a "$out/gpu_check.log"
echo "gpu_check exit status: $status" | tee -a "$out/gpu_check.log"
exit $status
