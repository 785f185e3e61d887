"""The NVRTC launchers end to end on CPU: the kernel headers run as host code (a tiny CUDA shim,
one thread after another) with exactly the kernelParams the launchers pack.

No GPU here, so this is how the NVRTC path's host side (checks, planning, allocation, argument
packing, pointer offsets, launch grids) meets the real kernel source: a wrong stride, offset,
field order or too small a grid gives a different result than the C++ CPU op. Kernels that
synchronise a block (__syncthreads: TVNet's backward filter sums, TV-L1's tiles) cannot run one
thread at a time; their packing is checked by test_nvrtc.py and their results on a GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import mvaccel.ops  # noqa: F401
from mvaccel.ops import _nvrtc

REPO = Path(__file__).resolve().parents[1]
SCALARS = ("float", "double")  # half_t / bfloat16_t are NVRTC-only types
EMULATED = [
    *(
        f"mvaccel::resample::{k}<{t}>"
        for k in ("forward_kernel", "backward_kernel")
        for t in SCALARS
    ),
    *(f"mvaccel::off::{k}<{t}>" for k in ("forward_kernel", "backward_kernel") for t in SCALARS),
    *(f"mvaccel::tvnet::{k}<{t}>" for k in ("pass_u_kernel", "pass_p_kernel") for t in SCALARS),
]

SHIM = r"""
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
struct EmuDim { unsigned x, y, z; };
static thread_local EmuDim threadIdx, blockIdx, blockDim, gridDim;
inline void __syncthreads() {}
template <typename T> T atomicAdd(T* p, T v) { T o = *p; *p += v; return o; }
#include "ops/resample/resample_kernels.cuh"
#include "ops/off/off_kernels.cuh"
#include "ops/tvnet/tvnet_kernels.cuh"

// Call a kernel with a CUDA kernelParams array: params[i] points at argument i.
template <typename... P, std::size_t... I>
void call_impl(void (*k)(P...), void** a, std::index_sequence<I...>) {
  k(*static_cast<std::remove_reference_t<P>*>(a[I])...);
}
template <typename... P>
void call(void (*k)(P...), void** a) { call_impl(k, a, std::index_sequence_for<P...>{}); }

extern "C" int emu_launch(const char* name, void** a, unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz) {
  void (*run)(void**) = nullptr;
  RUN_TABLE
  if (!run) return 1;
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  const unsigned long blocks = 1ul * gx * gy * gz, threads = 1ul * bx * by * bz;
  for (unsigned long b = 0; b < blocks; ++b) {
    blockIdx = {unsigned(b % gx), unsigned(b / gx % gy), unsigned(b / gx / gy)};
    for (unsigned long t = 0; t < threads; ++t) {
      threadIdx = {unsigned(t % bx), unsigned(t / bx % by), unsigned(t / bx / by)};
      run(a);
    }
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    table = "\n".join(
        f'  if (!std::strcmp(name, "{e}")) run = [](void** a) {{ call(&{e}, a); }};'
        for e in EMULATED
    )
    d = tmp_path_factory.mktemp("emu")
    (d / "emu.cpp").write_text(SHIM.replace("RUN_TABLE", table))
    lib = d / "emu.so"
    subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-O1",
            "-shared",
            "-fPIC",
            f"-I{REPO / 'csrc'}",
            str(d / "emu.cpp"),
            "-o",
            str(lib),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    so = ctypes.CDLL(str(lib))
    so.emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_void_p, *[ctypes.c_uint] * 6]
    launched = []

    def launch(unit, expr, grid, block, args, ref, shared=0):
        assert expr in _nvrtc.UNITS[unit].kernels
        params, _keep = _nvrtc.kernel_params(expr, args)
        rc = so.emu_launch(
            expr.encode(), ctypes.addressof(params), *_nvrtc.dim3(grid), *_nvrtc.dim3(block)
        )
        assert rc == 0, f"{expr} is not emulated"
        launched.append(expr)

    return launch, launched


@pytest.fixture
def on_cpu(emu, monkeypatch):
    launch, launched = emu
    monkeypatch.setattr(_nvrtc, "launch", launch)
    launched.clear()
    return launched


def _same(op, args, launched, expect):
    got = _nvrtc.OPS[op][0](*args)
    want = getattr(torch.ops.mvaccel, op).default(*args)
    got, want = (
        (got,) if isinstance(got, torch.Tensor) else got,
        (want,) if isinstance(want, torch.Tensor) else want,
    )
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype and g.stride() == w.stride()
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert any(expect in e for e in launched), launched


def _r(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_block_upsample(on_cpu, dtype, mode):
    x = _r(2, 3, 3, 4, dtype=dtype)
    _same("block_upsample", (x, 4, 3, 11, 10, mode), on_cpu, "resample::forward")
    cl = x.contiguous(memory_format=torch.channels_last)
    _same("block_upsample", (cl, 4, 3, 11, 10, mode), on_cpu, "resample::forward")
    g = _r(2, 3, 11, 10, dtype=dtype)
    _same("_block_upsample_backward", (g, 3, 4, 4, 3, mode), on_cpu, "resample::backward")
    _same(
        "_block_upsample_backward",
        (g.transpose(2, 3).contiguous().transpose(2, 3), 3, 4, 4, 3, mode),
        on_cpu,
        "backward",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_mv_resize(on_cpu, dtype, mode):
    mv = _r(2, 2, 5, 7, dtype=dtype)
    _same("mv_resize", (mv, 9, 4, mode), on_cpu, "resample::forward")
    _same("mv_resize", (mv[..., ::2], 9, 4, mode), on_cpu, "resample::forward")
    _same("_mv_resize_backward", (_r(2, 2, 9, 4, dtype=dtype), 5, 7, mode), on_cpu, "backward")


def test_resample_grid_rows_beyond_one_launch_row(on_cpu, monkeypatch):
    """More image rows than the grid holds: the kernels' row loop covers the rest."""
    monkeypatch.setattr(_nvrtc, "_MAX_GRID_Y", 5)
    _same("block_upsample", (_r(3, 2, 2, 2), 4, 4, 7, 6, "bilinear"), on_cpu, "forward")
    _same("_mv_resize_backward", (_r(3, 2, 7, 6), 3, 2, "bilinear"), on_cpu, "backward")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_off(on_cpu, dtype):
    f_t, f_prev = _r(2, 3, 5, 9, dtype=dtype), _r(2, 3, 5, 9, dtype=dtype, seed=1)
    _same("off_gradients", (f_t, f_prev), on_cpu, "off::forward")
    _same(
        "off_gradients",
        (f_t[..., ::2], f_prev[..., ::2].contiguous(memory_format=torch.channels_last)),
        on_cpu,
        "forward",
    )
    f = _r(2, 4, 3, 5, 9, dtype=dtype)
    _same("off_gradients_stack", (f,), on_cpu, "off::forward")
    _same("off_gradients_stack", (f.transpose(1, 2),), on_cpu, "off::forward")
    _same("_off_gradients_backward", (_r(2, 9, 5, 9, dtype=dtype),), on_cpu, "off::backward")
    _same(
        "_off_gradients_stack_backward", (_r(2, 3, 9, 5, 9, dtype=dtype),), on_cpu, "off::backward"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tvnet_forward(on_cpu, dtype):
    u, p, w = (
        _r(2, 2, 6, 7, dtype=dtype),
        _r(2, 4, 6, 7, dtype=dtype, seed=1),
        _r(2, 3, 6, 7, dtype=dtype, seed=2),
    )
    wf, wb = _r(3, 8, dtype=dtype, seed=3), _r(3, 8, dtype=dtype, seed=4)
    _same(
        "tvnet_iterations", (u, p, w, wf, wb, 0.05, 0.3, 0.8, 1e-12, 1e-12, True), on_cpu, "pass_p"
    )
