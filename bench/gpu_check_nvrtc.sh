#!/usr/bin/env bash
# The NVRTC GPU path on a GPU machine (issue 17): run after bench/gpu_check.sh's nvcc build (it
# can call this script last), or alone after `python setup.py build_ext --inplace` with CUDA.
#
# Usage: bench/gpu_check_nvrtc.sh [OUT_DIR]   (default: $OUT, else ./out/gpu_check)
#
# Needs CuPy with NVRTC (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12) besides what
# gpu_check.sh needs. Steps, each logged to OUT_DIR/gpu_check_nvrtc.log:
#   1. NVRTC results equal the nvcc kernels' for every op forward and backward
#      (python_tests/test_nvrtc.py -m cuda), and the compile tests;
#   2. every CUDA test with MVACCEL_GPU_BACKEND=nvrtc (NVRTC replaces the nvcc kernels in the
#      dispatcher: autograd, torch.compile and the op tests through it);
#   3. the side-by-side benchmark, NVRTC vs nvcc (bench/bench_nvrtc.py; ratio = NVRTC / nvcc);
#   4. a copy built without CUDA kernels (MVACCEL_FORCE_CPU=1), where NVRTC is the only GPU path:
#      the ops' CUDA tests there.
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-${OUT:-out/gpu_check}}")"
mkdir -p "$out"
log="$out/gpu_check_nvrtc.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MVACCEL_NVRTC_CACHE="$out/nvrtc_cache"
unset MVACCEL_GPU_BACKEND
status=0
step() { echo "== $*" | tee -a "$log"; }
run() {  # run a command, log its tail, remember a failure
  "$@" 2>&1 | tail -n 60 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
: >"$log"
step "NVRTC"
if ! python3 -c "from cupy_backends.cuda.libs import nvrtc; print('NVRTC', nvrtc.getVersion())" \
  2>&1 | tee -a "$log"; then
  echo "no CuPy/NVRTC: pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12" | tee -a "$log"
  exit 1
fi
step "1. NVRTC vs nvcc, every op (and the NVRTC compile tests)"
run python3 -m pytest python_tests/test_nvrtc.py python_tests/test_nvrtc_compile.py -q \
  -p no:cacheprovider --junitxml="$out/nvrtc_tests.xml"
step "2. every CUDA test with MVACCEL_GPU_BACKEND=nvrtc"
MVACCEL_GPU_BACKEND=nvrtc python3 -m mvaccel info 2>&1 | grep -E "GPU path|NVRTC" | tee -a "$log"
run env MVACCEL_GPU_BACKEND=nvrtc python3 -m pytest python_tests -m cuda -q -p no:cacheprovider \
  --junitxml="$out/cuda_tests_nvrtc.xml"
step "3. benchmark, NVRTC vs nvcc side by side"
run python3 -m pytest bench/bench_nvrtc.py -q -p no:cacheprovider --benchmark-only \
  --benchmark-json="$out/bench_nvrtc.json"
python3 bench/report.py "$out/bench_nvrtc.json" 2>&1 | tee "$out/bench_nvrtc.md" | tee -a "$log"
step "4. a build without CUDA kernels: NVRTC is the only GPU path"
copy="$(mktemp -d)/mvaccel"
mkdir -p "$copy"
tar --exclude=./build --exclude=./out --exclude='./mvaccel/*.so' --exclude=./.git -cf - . \
  | tar -xf - -C "$copy"
(
  cd "$copy" || exit 1
  MVACCEL_FORCE_CPU=1 MVACCEL_NO_VIDEO=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    python3 setup.py build_ext --inplace 2>&1 | tail -n 5
  PYTHONPATH="$copy" python3 -m mvaccel info 2>&1 | grep -E "built with CUDA|GPU path"
  PYTHONPATH="$copy" python3 -m pytest python_tests/test_resample.py python_tests/test_off.py \
    python_tests/test_tvnet.py python_tests/test_flow.py python_tests/test_nvrtc.py -m cuda -q \
    -p no:cacheprovider --junitxml="$out/cuda_tests_nvrtc_only.xml"
) 2>&1 | tail -n 60 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check_nvrtc exit status: $status" | tee -a "$log"
exit $status
