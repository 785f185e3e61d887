#!/usr/bin/env bash
# The GPU half of mvaccel, checked on a bare GPU machine in a few minutes, crash-proof.
#
# Usage: bench/gpu_check.sh [OUT_DIR]          (default: $OUT, else ./out/gpu_check)
#
# Steps, each in its own process, each a row of the summary table:
#   build      setup.py build_ext --inplace for the GPU's own arch only (FORCE_CUDA=1)
#   test       every python_tests file that has CUDA tests, `pytest -m cuda`, one process per
#              file: a segfault or abort is reported as "crashed" and the next file still runs
#   memcheck   compute-sanitizer --tool memcheck over the ops' CUDA tests
#   racecheck  compute-sanitizer --tool racecheck over the TV-L1 and TVNet kernels' CUDA tests
#              (both with PYTORCH_NO_CUDA_MEMORY_CACHING=1, so every allocation is checked)
#   bench      every CUDA benchmark (`-k cuda --benchmark-only`), one process per file; none
#              needs the ffmpeg CLI (their videos come from PyAV or memory, or they skip)
# Writes OUT_DIR/summary.md (file, passed, failed, skipped, crashed, seconds, note), summary.tsv,
# gpu_check.log, the CUDA benchmarks' table (bench_cuda.md) and logs.tar.gz (steps/: one log,
# junit XML and benchmark JSON per step, the build log): few files, as a device machine's $OUT
# hands back. Exits non-zero on any failure, crash, timeout or sanitizer error.
#
# Needs: python3 with torch + CUDA, nvcc, ninja, pytest, pytest-benchmark, lightning (the
# device machines' image has them; cupy is not used). Optional: compute-sanitizer (a row says
# "unavailable" where it is missing or refuses the device, e.g. under gVisor), PyAV (videos of
# the decode benchmarks, else they skip), jsonargparse (the CLI tests; they are CPU tests).
#
# Carrying the Python packages such a machine lacks, as wheels (no network there):
#   here:  pip download --only-binary :all: --python-version 3.12 \
#            --platform manylinux2014_x86_64 -d wheels \
#            jsonargparse docstring-parser typeshed-client av
#          (add --platform manylinux_2_28_x86_64 etc. if pip finds no match; keep the folder
#           out of git, e.g. `echo /wheels/ >> .git/info/exclude`, and carry it with the tree)
#   there: python3 -m pip install -q --no-index --find-links wheels --target /tmp/site \
#            jsonargparse docstring-parser typeshed-client av && export PYTHONPATH=/tmp/site
#          then run this script.
#
# Knobs (environment): GPU_CHECK_BUILD=0 (use the build in place), GPU_CHECK_TESTS="files"
# (the test files instead of the CUDA ones found by collection), GPU_CHECK_SANITIZER=0,
# GPU_CHECK_BENCH=0, GPU_CHECK_NVRTC=0 (no NVRTC step), GPU_CHECK_INFO=0 (no machine facts in
# the log), GPU_CHECK_TIMEOUT (seconds per step, default 240). With
# GPU_CHECK_BUILD=0 GPU_CHECK_SANITIZER=0 it runs on a CPU machine too (the CUDA cases skip):
# that is how its own logic is tested (python_tests/test_gpu_check.py). Check the syntax
# with `bash -n bench/gpu_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
steps="$out/steps"
rm -rf "$steps"
mkdir -p "$steps"
summary="$out/summary.tsv"
: >"$summary"
log="$out/gpu_check.log"
: >"$log"
step_timeout="${GPU_CHECK_TIMEOUT:-240}"
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "$*" | tee -a "$log"; }

# row NAME KIND PASSED FAILED SKIPPED CRASHED SECONDS NOTE
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$summary"; }

# Counts of a junit XML file: "passed failed skipped" (failed includes errors).
junit_counts() {
  python3 - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - failed - skipped, failed, skipped)
PY
}

# The note of an exit status: "" (0, 1: pytest's own), "no tests" (5), or what killed it.
rc_note() {
  local rc=$1
  case $rc in
  0 | 1) echo "" ;;
  5) echo "no tests" ;;
  124) echo "timeout after ${step_timeout}s" ;;
  *)
    if [ "$rc" -gt 128 ]; then
      echo "crashed: signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo ?))"
    else
      echo "exit $rc"
    fi
    ;;
  esac
}

# run_pytest NAME KIND LOGNAME [PREFIX...] -- PYTEST_ARGS...: one process, one row.
run_pytest() {
  local name=$1 kind=$2 tag=$3
  shift 3
  local prefix=()
  while [ "$1" != "--" ]; do
    prefix+=("$1")
    shift
  done
  shift
  local xml="$steps/$tag.xml" slog="$steps/$tag.log"
  rm -f "$xml"
  local t0=$SECONDS
  timeout -k 10 "$step_timeout" "${prefix[@]}" python3 -m pytest -q -p no:cacheprovider \
    --junitxml="$xml" "$@" >"$slog" 2>&1
  local rc=$?
  local secs=$((SECONDS - t0))
  read -r passed failed skipped <<<"$(junit_counts "$xml")"
  local note crashed=0
  note=$(rc_note "$rc")
  case $note in crashed* | timeout* | exit*) crashed=1 note="$note; see steps/$tag.log" ;; esac
  if [ "$rc" = 1 ] && [ "$failed" = 0 ]; then
    failed=1 note="pytest exit 1 without a failed test; see steps/$tag.log"
  fi
  if [ "$kind" != test ] && [ "$kind" != bench ]; then
    local errors
    errors=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$slog" | awk '{s += $3} END {print s + 0}')
    if grep -q 'Device not supported\|Unable to find injection library\|no CUDA-capable' "$slog"; then
      note="unavailable: compute-sanitizer refused the device; see steps/$tag.log"
      crashed=0
    elif [ "$errors" != 0 ]; then
      note="$errors sanitizer errors; $note"
      failed=$((failed + errors))
    fi
  fi
  [ -n "$note" ] || { [ "$failed" = 0 ] && note=ok || note="see steps/$tag.log"; }
  row "$name" "$kind" "$passed" "$failed" "$skipped" "$crashed" "$secs" "$note"
  say "$(printf '%-10s %-40s passed %s failed %s skipped %s crashed %s %ss %s' "$kind" "$name" \
    "$passed" "$failed" "$skipped" "$crashed" "$secs" "$note")"
}

[ "${GPU_CHECK_INFO:-1}" = 0 ] || {
  echo "== machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
  for m in lightning pytest_benchmark av jsonargparse; do
    python3 -c "import $m" 2>/dev/null && echo "python: $m present" || echo "python: $m MISSING"
  done
  command -v ffmpeg >/dev/null && echo "ffmpeg CLI present" || echo "ffmpeg CLI missing (not needed)"
} 2>&1 | tee -a "$log"

# ---- build -----------------------------------------------------------------------------------
if [ "${GPU_CHECK_BUILD:-1}" != 0 ]; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')")
    export TORCH_CUDA_ARCH_LIST
  fi
  say "== build (archs $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
  t0=$SECONDS
  python3 setup.py build_ext --inplace >"$steps/build.log" 2>&1
  rc=$?
  if [ $rc = 0 ] && python3 -c "from mvaccel._ext import cuda_ops_ready; raise SystemExit(not cuda_ops_ready())"; then
    row build build 1 0 0 0 $((SECONDS - t0)) "archs $TORCH_CUDA_ARCH_LIST"
  else
    row build build 0 1 0 0 $((SECONDS - t0)) "build failed or no CUDA kernels (rc $rc); see steps/build.log"
  fi
  tail -n 5 "$steps/build.log" | tee -a "$log"
fi
[ "${GPU_CHECK_INFO:-1}" = 0 ] || python3 -m mvaccel info >>"$log" 2>&1 || say "mvaccel info failed"

# ---- tests, one process per file ------------------------------------------------------------
say "== CUDA tests"
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  files="$GPU_CHECK_TESTS"
else
  # Collection only (no test runs): the files holding CUDA tests. The nvcc compile test is left
  # out (the build above compiled every .cu for this GPU). A file that fails to import is a
  # failed row, unless what it lacks is an optional package (jsonargparse, av: CPU tests).
  python3 -m pytest python_tests -m cuda --collect-only -q -p no:cacheprovider \
    >"$steps/collect.log" 2>&1
  files=$(grep -o '^python_tests/test_[a-z0-9_]*\.py' "$steps/collect.log" | sort -u |
    grep -v test_cuda_compile.py)
  python3 - "$steps/collect.log" <<'PY' >>"$summary"
import re
import sys

text = open(sys.argv[1]).read()
for block in re.split(r"_{5,} ERROR collecting ", text)[1:]:
    name = block.split()[0]
    missing = re.search(r"No module named '(\w+)", block)
    optional = missing is not None and missing.group(1) in ("jsonargparse", "av")
    note = f"not collected: no {missing.group(1)}" if missing else "not collected: import error"
    print(f"{name}\tcollect\t0\t{0 if optional else 1}\t0\t0\t0\t{note}; see steps/collect.log")
PY
fi
for f in $files; do
  run_pytest "$f" test "test_$(basename "$f" .py)" -- "$f" -m cuda
done

# ---- compute-sanitizer ----------------------------------------------------------------------
if [ "${GPU_CHECK_SANITIZER:-1}" != 0 ]; then
  say "== compute-sanitizer"
  if command -v compute-sanitizer >/dev/null; then
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1
    san=(compute-sanitizer --error-exitcode 0 --print-limit 20)
    run_pytest "ops CUDA tests" memcheck memcheck_ops "${san[@]}" --tool memcheck -- \
      python_tests/test_resample.py python_tests/test_off.py python_tests/test_tvnet.py \
      python_tests/test_flow.py -m cuda -x
    run_pytest "TV-L1 + TVNet kernels" racecheck racecheck_tvl1_tvnet "${san[@]}" --tool racecheck -- \
      python_tests/test_tvnet.py python_tests/test_flow.py -m cuda -x \
      -k "cuda_matches_cpu or forward_matches_reference or backward_matches or gradcheck"
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
  else
    row compute-sanitizer memcheck 0 0 0 0 0 "unavailable: compute-sanitizer not on the PATH"
    say "compute-sanitizer not on the PATH"
  fi
fi

# ---- CUDA benchmarks, one process per file --------------------------------------------------
if [ "${GPU_CHECK_BENCH:-1}" != 0 ]; then
  say "== CUDA benchmarks"
  jsons=()
  for f in bench/bench_*.py; do
    tag="bench_$(basename "$f" .py | sed 's/^bench_//')"
    run_pytest "$f" bench "$tag" -- "$f" -k cuda --benchmark-only \
      --benchmark-json="$steps/$tag.json"
    [ -s "$steps/$tag.json" ] && jsons+=("$steps/$tag.json")
  done
  if [ ${#jsons[@]} -gt 0 ]; then
    python3 bench/report.py "${jsons[@]}" >"$out/bench_cuda.md" 2>&1 || true
  fi
fi

# ---- the NVRTC path (issue 17), after the nvcc build above ------------------------------------
if [ "${GPU_CHECK_NVRTC:-1}" != 0 ]; then
  say "== NVRTC path (bench/gpu_check_nvrtc.sh)"
  if python3 -c "import cupy_backends.cuda.libs.nvrtc" 2>/dev/null; then
    t0=$SECONDS
    if bash bench/gpu_check_nvrtc.sh "$steps/nvrtc" >"$steps/nvrtc.log" 2>&1; then
      row bench/gpu_check_nvrtc.sh nvrtc 1 0 0 0 $((SECONDS - t0)) "see steps/nvrtc/gpu_check_nvrtc.log"
    else
      row bench/gpu_check_nvrtc.sh nvrtc 0 1 0 0 $((SECONDS - t0)) "see steps/nvrtc/gpu_check_nvrtc.log"
    fi
  else
    row bench/gpu_check_nvrtc.sh nvrtc 0 0 1 0 0 "skipped: no CuPy/NVRTC (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)"
  fi
fi

# ---- summary --------------------------------------------------------------------------------
python3 - "$summary" "$out/summary.md" <<'PY'
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
head = ["file", "step", "passed", "failed", "skipped", "crashed", "seconds", "note"]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
lines += ["| " + " | ".join(r) + " |" for r in rows]
tot = [sum(int(r[i]) for r in rows) for i in (2, 3, 4, 5, 6)]
lines.append("| **total** | | " + " | ".join(map(str, tot)) + " | |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
tar -czf "$out/logs.tar.gz" -C "$out" steps && rm -rf "$steps"
bad=$(awk -F'\t' '$4 > 0 || $6 > 0' "$summary" | wc -l)
say "gpu_check: $bad step(s) with failures, crashes or sanitizer errors; summary in $out/summary.md"
[ "$bad" = 0 ]
