"""The NVRTC GPU path against the nvcc-built kernels, side by side in one process (GPU only).

Every op forward and backward on the same CUDA inputs: ``mvaccel nvcc`` is the op through
``torch.ops.mvaccel`` on an nvcc build, ``nvrtc`` the same kernel source compiled by NVRTC and
launched from mvaccel/ops/_nvrtc.py (its ratio column is NVRTC time / nvcc time; the issue's bar
is 1.05). Shapes: a batch of 8 two-channel 1080p fields (resample), (8, 64, 56, 56) features
(OFF), a (4, 2, 256, 256) TVNet block of 10 iterations, 8 TV-L1 pairs of 240x320. Run by
bench/gpu_check_nvrtc.sh; needs an nvcc build, CuPy and a GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import timed

from mvaccel.ops import _nvrtc

TVL1 = (0.25, 0.15, 0.3, 5, 0.5, 5, 0.01, 30, 2, 5, 1, 1, 16, 0.0, 1.2e-7)


def _inputs(op: str):
    g = torch.Generator().manual_seed(0)

    def r(*s, dtype=torch.float32):
        return torch.randn(*s, generator=g, dtype=dtype).cuda()

    if op == "block_upsample":
        return (r(8, 2, 135, 240), 8, 8, 1080, 1920, "bilinear")
    if op == "_block_upsample_backward":
        return (r(8, 2, 1080, 1920), 135, 240, 8, 8, "bilinear")
    if op == "mv_resize":
        return (r(8, 2, 540, 960), 1080, 1920, "bilinear")
    if op == "_mv_resize_backward":
        return (r(8, 2, 1080, 1920), 540, 960, "bilinear")
    if op == "off_gradients":
        return (r(8, 64, 56, 56), r(8, 64, 56, 56))
    if op == "off_gradients_stack":
        return (r(4, 8, 64, 56, 56),)
    if op == "_off_gradients_backward":
        return (r(8, 192, 56, 56),)
    if op == "_off_gradients_stack_backward":
        return (r(4, 7, 192, 56, 56),)
    u, p, w = r(4, 2, 256, 256), r(4, 4, 256, 256), r(4, 3, 256, 256)
    wf, wb = r(10, 8), r(10, 8)
    coef = (0.05, 0.3, 0.8, 1e-12, 1e-12)
    if op == "tvnet_iterations":
        return (u, p, w, wf, wb, *coef, True)
    if op == "_tvnet_iterations_backward":
        _, _, states = _nvrtc.tvnet_iterations(u, p, w, wf, wb, *coef, True)
        return (u, p, states, u, w, wf, wb, *coef)
    frames = r(8, 240, 320).abs() * 60
    return (frames, frames.roll(2, -1), None, *TVL1)


@pytest.fixture(scope="module", autouse=True)
def _needs_both_paths():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    if not _nvrtc._nvcc_kernels() or _nvrtc._library is not None:
        pytest.skip("needs the nvcc kernels in the dispatcher (an nvcc build, no forced NVRTC)")
    try:
        _nvrtc.nvrtc_module()
    except ImportError as e:
        pytest.skip(str(e))


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["mvaccel nvcc", "nvrtc"])
@pytest.mark.parametrize("op", list(_nvrtc.OPS))
def test_nvrtc_vs_nvcc(benchmark, op, impl):
    args = _inputs(op)
    fn = _nvrtc.OPS[op][0] if impl == "nvrtc" else getattr(torch.ops.mvaccel, op).default
    with torch.cuda.device(0):
        fn(*args)  # compile / load the module, warm the caches
    torch.cuda.synchronize()
    benchmark.group = f"{op} cuda (nvcc vs NVRTC)"
    benchmark(timed(lambda: fn(*args), "cuda"))
