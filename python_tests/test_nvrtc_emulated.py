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
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch._prims_common import suggest_memory_format

import mvaccel.ops  # noqa: F401
from mvaccel.ops import _nvrtc

REPO = Path(__file__).resolve().parents[1]
# half_t / bfloat16_t are NVRTC-only types: the shim gives them a host definition (GCC's
# _Float16, and device.cuh's bfloat16 rounding) with float arithmetic, as on the device.
SCALARS = ("float", "double", "mvaccel::half_t", "mvaccel::bfloat16_t")
EMULATED = [  # every kernel the launchers use, but the NVRTC-only 16-bit types
    e
    for u in _nvrtc.UNITS.values()
    for e in u.kernels
    if "<" not in e or e.split("<")[1].rstrip(">").split(",")[0] in SCALARS
]

SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time: statics are its shared memory
#define __launch_bounds__(n)
struct EmuDim { unsigned x, y, z; };
static thread_local EmuDim threadIdx, blockIdx;
static EmuDim blockDim, gridDim;
static std::barrier<>* emu_barrier = nullptr;
static std::mutex emu_atomic;
inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
template <typename T> T atomicAdd(T* p, T v) {
  std::lock_guard<std::mutex> lock(emu_atomic);
  T o = *p;
  *p += v;
  return o;
}
template <typename T> T __shfl_down_sync(unsigned, T v, int o) {
  static T slot[1024];
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  slot[t] = v;
  __syncthreads();
  const T r = (t % 32) + o < 32 ? slot[t + o] : v;
  __syncthreads();
  return r;
}
using std::max;
using std::min;
#include "device.cuh"
namespace mvaccel {
struct half_t {
  _Float16 x;
  half_t() = default;
  half_t(float f) : x(static_cast<_Float16>(f)) {}
  operator float() const { return static_cast<float>(x); }
};
struct bfloat16_t {
  uint16_t x;
  bfloat16_t() = default;
  bfloat16_t(float f) {  // device.cuh's rule: round to nearest even, NaN kept quiet
    uint32_t u;
    std::memcpy(&u, &f, 4);
    x = f != f ? uint16_t(0x7FC0) : uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
  operator float() const {
    const uint32_t u = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};
template <> struct OpMath<half_t> { using type = float; };
template <> struct OpMath<bfloat16_t> { using type = float; };
}  // namespace mvaccel
#include "ops/resample/resample_kernels.cuh"
#include "ops/off/off_kernels.cuh"
#include "ops/tvnet/tvnet_kernels.cuh"
#include "ops/tvl1/tvl1_kernels.cuh"

// Call a kernel with a CUDA kernelParams array: params[i] points at argument i.
template <typename... P, std::size_t... I>
void call_impl(void (*k)(P...), void** a, std::index_sequence<I...>) {
  k(*static_cast<std::remove_reference_t<P>*>(a[I])...);
}
template <typename... P>
void call(void (*k)(P...), void** a) { call_impl(k, a, std::index_sequence_for<P...>{}); }

// One OS thread per CUDA thread of a block; the blocks run one after another.
extern "C" int emu_launch(const char* name, void** a, unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz) {
  void (*run)(void**) = nullptr;
  RUN_TABLE
  if (!run) return 1;
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  const unsigned long blocks = 1ul * gx * gy * gz, threads = 1ul * bx * by * bz;
  std::barrier<> bar(static_cast<std::ptrdiff_t>(threads));
  emu_barrier = &bar;
  std::vector<std::thread> pool;
  for (unsigned long t = 0; t < threads; ++t) {
    pool.emplace_back([=, &bar] {
      threadIdx = {unsigned(t % bx), unsigned(t / bx % by), unsigned(t / bx / by)};
      for (unsigned long b = 0; b < blocks; ++b) {
        blockIdx = {unsigned(b % gx), unsigned(b / gx % gy), unsigned(b / gx / gy)};
        run(a);
        bar.arrive_and_wait();  // the block is done before the next reuses shared memory
      }
    });
  }
  for (auto& th : pool) th.join();
  emu_barrier = nullptr;
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
            "-std=c++20",
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
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
        # 16-bit results: fp32 math in another order may round one step apart.
        tol = 1e-5 if g.dtype in (torch.float32, torch.float64) else 1e-2
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)
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
    """More image rows (and images) than the grid holds: the kernels' loops cover the rest."""
    monkeypatch.setattr(_nvrtc, "_MAX_GRID_Y", 2)
    monkeypatch.setattr(_nvrtc, "_RESAMPLE_TARGET_THREADS", 1 << 30)  # split images over z
    _same("block_upsample", (_r(3, 2, 2, 2), 4, 4, 7, 6, "bilinear"), on_cpu, "forward")
    _same("block_upsample", (_r(3, 2, 2, 2), 4, 4, 7, 6, "nearest"), on_cpu, "forward_block")
    _same("_mv_resize_backward", (_r(3, 2, 7, 6), 3, 2, "bilinear"), on_cpu, "backward")


# Output widths around the 16-byte vector (4 float32 / 2 float64 elements) and block widths
# that do and do not hold one: runs that start off a 16-byte boundary (scalar head), end
# inside one (scalar tail) and are cut by the image edge.
BLOCK_CASES = [
    (4, 4, 4, 8), (3, 5, 7, 16), (2, 6, 9, 6), (4, 8, 5, 7), (1, 16, 3, 33), (2, 2, 3, 3),
    (2, 12, 5, 40),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bh, bw, out_h, out_w", BLOCK_CASES)
def test_block_upsample_nearest_runs(on_cpu, dtype, bh, bw, out_h, out_w):
    """forward_block_kernel (runs of one source value, 16-byte stores) against the CPU op."""
    hb, wb = -(-out_h // bh), -(-out_w // bw)
    x = _r(2, 3, hb, wb, dtype=dtype)
    for src in (x, x.contiguous(memory_format=torch.channels_last), x.mT.contiguous().mT):
        on_cpu.clear()
        _same("block_upsample", (src, bh, bw, out_h, out_w, "nearest"), on_cpu, "forward_block")
        fmt = suggest_memory_format(src)  # the launcher's output, as it allocates it
        out = torch.empty(2, 3, out_h, out_w, dtype=dtype, memory_format=fmt)
        vec = _nvrtc._vector_stores(out, {"block_w": bw})
        assert on_cpu[-1].endswith(", true>" if vec else ", false>"), on_cpu
    # An input one element into its storage, and a strided one.
    base = _r(2 * 3 * hb * wb + 1, dtype=dtype)[1:].view(2, 3, hb, wb)
    _same("block_upsample", (base, bh, bw, out_h, out_w, "nearest"), on_cpu, "forward_block")
    wide = _r(2, 6, hb, 2 * wb, dtype=dtype)[:, ::2, :, 1::2]
    _same("block_upsample", (wide, bh, bw, out_h, out_w, "nearest"), on_cpu, "forward_block")
    _same("block_upsample", (wide, bh, bw, out_h, out_w, "bilinear"), on_cpu, "forward_kernel")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("out_w", [16, 24, 40, 13])
def test_resample_forward_vector_rows(on_cpu, dtype, out_w):
    """forward_kernel<T, I, true>: V columns per thread, one 16-byte store (bilinear and
    nearest-exact), scalar when out_w is not a multiple of the vector."""
    vec = out_w * torch.empty(0, dtype=dtype).element_size() % 16 == 0
    kind = f"forward_kernel<{_nvrtc.SCALAR_TYPES[dtype]}, int32_t, {'true' if vec else 'false'}>"
    x = _r(2, 3, 3, -(-out_w // 8), dtype=dtype)
    _same("block_upsample", (x, 3, 8, 7, out_w, "bilinear"), on_cpu, kind)
    _same("block_upsample", (x.mT.contiguous().mT, 3, 8, 7, out_w, "bilinear"), on_cpu, kind)
    mv = _r(2, 2, 9, 11, dtype=dtype, seed=1)
    for mode in ("bilinear", "nearest"):
        _same("mv_resize", (mv, 5, out_w, mode), on_cpu, kind)
        _same("mv_resize", (mv[..., 1:], 5, out_w, mode), on_cpu, kind)


def test_block_upsample_vector_stores_cover_every_run(on_cpu):
    """The 16-byte path writes all of every run: a NaN-filled output has no hole left."""
    x = torch.arange(2 * 2 * 3 * 5, dtype=torch.float32).view(2, 2, 3, 5)
    out = _nvrtc.block_upsample(x, 4, 8, 12, 36, "nearest")
    assert on_cpu[-1] == "mvaccel::resample::forward_block_kernel<float, int32_t, true>"
    want = x.repeat_interleave(4, 2).repeat_interleave(8, 3)[..., :12, :36]
    assert torch.equal(out, want)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resample_64bit_index_fallback(on_cpu, monkeypatch, mode):
    """The int64_t kernels (chosen when an offset does not fit in 31 bits) compute the same."""
    monkeypatch.setattr(_nvrtc, "_INT32_MAX", 50)
    x = _r(2, 3, 3, 4, dtype=torch.float64)
    _same("block_upsample", (x, 4, 3, 11, 10, mode), on_cpu, "int64_t")
    _same("mv_resize", (x[:, :2], 7, 9, mode), on_cpu, "int64_t")
    _same("_block_upsample_backward", (_r(2, 3, 11, 10), 3, 4, 4, 3, mode), on_cpu, "int64_t")
    assert all("int64_t" in e for e in on_cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resample_backward_layouts(on_cpu, dtype, mode):
    g = _r(2, 3, 11, 10, dtype=dtype)
    for grad in (g.contiguous(memory_format=torch.channels_last), _r(663, dtype=dtype)[3:]):
        grad = grad.view(2, 3, 11, 10)
        _same("_block_upsample_backward", (grad, 3, 4, 4, 3, mode), on_cpu, "backward")
    mv = _r(2, 2, 9, 13, dtype=dtype).contiguous(memory_format=torch.channels_last)
    _same("_mv_resize_backward", (mv, 5, 7, mode), on_cpu, "backward")
    _same("mv_resize", (mv, 4, 6, mode), on_cpu, "forward_kernel")


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


# (H, W): rows around the 8-row tile, widths that are and are not multiples of the 16-byte
# vector (4 float32, 2 float64, 8 float16/bfloat16 elements).
OFF_TILES = [(5, 16), (9, 8), (17, 24), (8, 12), (3, 1), (1, 16), (10, 7)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("h, w", OFF_TILES)
def test_off_forward_tiles(on_cpu, dtype, h, w):
    """forward_kernel's register-window tiles, 16-byte (true) or scalar (false) columns."""
    vec = w * torch.empty(0, dtype=dtype).element_size() % 16 == 0
    kind = f"forward_kernel<{_nvrtc.SCALAR_TYPES[dtype]}, {'true' if vec else 'false'}>"
    f_t, f_prev = _r(2, 3, h, w, dtype=dtype), _r(2, 3, h, w, dtype=dtype, seed=1)
    _same("off_gradients", (f_t, f_prev), on_cpu, kind)
    f = _r(2, 3, 2, h, w, dtype=dtype, seed=2)
    _same("off_gradients_stack", (f,), on_cpu, kind)
    # One element into the storage: not 16-byte aligned, the scalar tiles.
    on_cpu.clear()
    shifted = _r(2 * 3 * h * w + 1, dtype=dtype, seed=3)[1:].view(2, 3, h, w)
    _same("off_gradients", (shifted, f_prev), on_cpu, "off::forward_kernel")
    assert on_cpu[-1].endswith("false>") or w == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("h, w", OFF_TILES)
def test_off_backward_tiles(on_cpu, dtype, h, w):
    """backward_kernel's tiles (two register windows), pair and stack, both variants."""
    vec = w * torch.empty(0, dtype=dtype).element_size() % 16 == 0
    kind = f"backward_kernel<{_nvrtc.SCALAR_TYPES[dtype]}, {'true' if vec else 'false'}>"
    _same("_off_gradients_backward", (_r(2, 9, h, w, dtype=dtype),), on_cpu, kind)
    _same("_off_gradients_stack_backward", (_r(2, 3, 6, h, w, dtype=dtype),), on_cpu, kind)
    on_cpu.clear()
    shifted = _r(2 * 9 * h * w + 1, dtype=dtype, seed=3)[1:].view(2, 9, h, w)
    _same("_off_gradients_backward", (shifted,), on_cpu, "off::backward_kernel")
    assert on_cpu[-1].endswith("false>") or w == 1


def test_off_forward_tiles_grid_stride(on_cpu, monkeypatch):
    """Fewer blocks than tiles: each thread's loop covers the rest."""
    monkeypatch.setattr(_nvrtc, "_OFF_MAX_BLOCKS", 1)
    f_t, f_prev = _r(3, 5, 11, 16), _r(3, 5, 11, 16, seed=1)
    _same("off_gradients", (f_t, f_prev), on_cpu, "forward_kernel<float, true>")
    _same("off_gradients", (f_t[..., 1:], f_prev[..., 1:]), on_cpu, "forward_kernel<float, false>")
    g = _r(2, 4, 6, 11, 16)
    _same("_off_gradients_stack_backward", (g,), on_cpu, "backward_kernel<float, true>")


def _cl(*shape, dtype, seed=0, offset=0):
    """(..., C, H, W) with channels_last frames, ``offset`` elements into its storage."""
    *lead, c, h, w = shape
    n = len(lead)
    flat = _r(math.prod(shape) + offset, dtype=dtype, seed=seed)[offset:]
    return flat.view(*lead, h, w, c).permute(*range(n), n + 2, n, n + 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_off_channels_last(on_cpu, dtype):
    """The channels_last kernels (channel fastest) and their launch arguments."""
    f_t, f_prev = _cl(2, 3, 5, 9, dtype=dtype, offset=1), _cl(2, 3, 5, 9, dtype=dtype, seed=1)
    _same("off_gradients", (f_t, f_prev), on_cpu, "off::forward_cl_kernel")
    _same("off_gradients", (f_t, f_prev.contiguous()), on_cpu, "off::forward_cl_kernel")
    _same("off_gradients", (_cl(1, 5, 1, 3, dtype=dtype),) * 2, on_cpu, "forward_cl")
    f = _cl(2, 4, 3, 5, 9, dtype=dtype, offset=3)
    _same("off_gradients_stack", (f,), on_cpu, "off::forward_cl_kernel")
    g = _cl(2, 9, 5, 9, dtype=dtype, offset=1)
    _same("_off_gradients_backward", (g,), on_cpu, "off::backward_cl_kernel")
    g5 = _cl(2, 3, 9, 5, 9, dtype=dtype, offset=2)
    _same("_off_gradients_stack_backward", (g5,), on_cpu, "off::backward_cl_kernel")


def test_off_channels_last_grid_rows_beyond_one_launch_row(on_cpu, monkeypatch):
    monkeypatch.setattr(_nvrtc, "_MAX_GRID_Y", 3)
    _same("off_gradients_stack", (_cl(2, 3, 2, 4, 5, dtype=torch.float64),), on_cpu, "forward_cl")
    g5 = _cl(2, 2, 6, 4, 5, dtype=torch.float64)
    _same("_off_gradients_stack_backward", (g5,), on_cpu, "backward_cl")


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tvnet_backward(on_cpu, dtype):
    u, p, w = (
        _r(2, 2, 6, 7, dtype=dtype),
        _r(2, 4, 6, 7, dtype=dtype, seed=1),
        _r(2, 3, 6, 7, dtype=dtype, seed=2),
    )
    wf, wb = _r(3, 8, dtype=dtype, seed=3), _r(3, 8, dtype=dtype, seed=4)
    coef = (0.05, 0.3, 0.8, 1e-12, 1e-12)
    u_out, p_out, states = torch.ops.mvaccel.tvnet_iterations.default(u, p, w, wf, wb, *coef, True)
    gu, gp = _r(*u_out.shape, dtype=dtype, seed=5), _r(*p_out.shape, dtype=dtype, seed=6)
    args = (gu, gp, states, u_out, w, wf, wb, *coef)
    _same("_tvnet_iterations_backward", args, on_cpu, "pass_u_backward")
    two = (gu, gp, states[:2], u_out, w, wf[:2], wb[:2], *coef)  # an even count: the other buffer
    _same("_tvnet_iterations_backward", two, on_cpu, "pass_g")


def _pair(n: int, h: int, w: int):
    coarse = torch.rand(n, 1, h // 4, w // 4, generator=torch.Generator().manual_seed(3)) * 255
    i1 = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic")[:, 0]
    return i1.roll((1, -1), (1, 2)).contiguous(), i1


# tau, lambda, theta, nscales, scale_step, warps, epsilon, inner, outer, median, warp,
# stop_check, min_size, dual_eps, grad_eps
TVL1 = (0.25, 0.15, 0.3, 2, 0.5, 2, 0.01, 6, 2, 5, 1, 0, 4, 0.0, 1e-7)


@pytest.mark.parametrize(
    "change",
    [{}, {11: 1, 9: 1}, {6: 0.0, 10: 2}, {"init": True}],
    ids=["opencv", "sparse-stop-no-median", "no-stop-bicubic", "init"],
)
def test_tvl1_solver(on_cpu, change):
    """The Python port of tvl1_cuda.cu's batch solver with the real kernels, against the C++
    CPU solver. The blocks run one after another here, as the later waves of a big launch do
    on a GPU: before the tiled kernel wrote its cores to a second buffer set, the
    rows where tiles meet took the neighbour tile's updated state (mean error 3e-3 to 1e-2
    px, up to 1 px, on these inputs)."""
    I0, I1 = _pair(2, 36, 20)  # 3 tile rows of 16: two tile borders
    args = list(TVL1)
    for k, v in change.items():
        if k != "init":
            args[k] = v
    init = torch.full((2, 2, 36, 20), 0.5) if change.get("init") else None
    got = _nvrtc.tvl1_flow(I0, I1, init, *args)
    want = torch.ops.mvaccel.tvl1_flow.default(I0, I1, init, *args)
    assert got.shape == want.shape == (2, 2, 36, 20)
    err = (got - want).abs()
    assert err.mean() < 1e-5 and err.max() < 1e-3, (err.mean(), err.max())
    assert want.abs().mean() > 0.1  # a real flow, not two zero fields
    assert "mvaccel::tvl1::tvl1_iterate_tiled" in on_cpu
