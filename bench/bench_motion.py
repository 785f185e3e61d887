"""Motion layers: fused mvaccel ops against the pure-torch compositions a user would write.

OFF: ``off_gradients`` (forward + backward) against ``conv2d(sobel) + sub + cat``, at backbone
map sizes. Run: ``PYTHONPATH=$PWD python -m pytest bench/bench_motion.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch

from mvaccel.ops import off

# (N, C, H, W): N = 4 videos x 7 segments of a BN-Inception level (128 channels after the
# OFF layer's 1x1 conv), at the 28x28 and 56x56 levels.
OFF_SIZES = [(28, 128, 28, 28), (28, 128, 56, 56)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", OFF_SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", ["mvaccel", "torch"])
def test_off_gradients_fwd_bwd(benchmark, impl, size, device):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, generator=gen).to(device).requires_grad_()
    b = torch.randn(size, generator=gen).to(device).requires_grad_()
    n, c, h, w = size
    grad = torch.randn(n, 3 * c, h, w, generator=gen).to(device)
    fn = off.off_gradients if impl == "mvaccel" else off.off_gradients_reference
    benchmark.group = f"off_gradients fwd+bwd {device} {'x'.join(map(str, size))}"

    def step():
        a.grad = b.grad = None
        fn(a, b).backward(grad)
        _sync(device)

    benchmark.pedantic(step, rounds=15, warmup_rounds=2)
    ref_a = a.grad.clone()
    a.grad = None
    off.off_gradients_reference(a, b).backward(grad)
    torch.testing.assert_close(ref_a, a.grad, atol=1e-4, rtol=1e-4)


# ---- TVNet-50 ------------------------------------------------------------------------------------
# Forward + backward of TVNet-1-1-50 (trainable filters and u0) on N = 4 pairs of 64x64 frames,
# float32: the fused op (hand-written backward, (u, p) kept per iteration) against the same
# network unrolled in plain PyTorch (autograd keeps every temporary).
TVNET_SIZE = (4, 64, 64)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def profiler_peak_bytes(fn, device: str = "cpu") -> int:
    """Peak bytes of live tensors during ``fn()`` (torch profiler memory timeline; slow)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts, profile_memory=True, record_shapes=True, with_stack=True) as p:
        fn()
    _, sizes = MemoryProfileTimeline(p._memory_profile())._coalesce_timeline(torch.device(device))
    return int(max(sum(s) if hasattr(s, "__len__") else s for s in sizes))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["mvaccel", "torch"])
def test_tvnet50_fwd_bwd(benchmark, impl, device):
    import os

    from mvaccel.nn import TVNet

    gen = torch.Generator().manual_seed(0)
    n, h, w = TVNET_SIZE
    i0 = torch.rand(n, 1, h, w, generator=gen).to(device)
    i1 = torch.rand(n, 1, h, w, generator=gen).to(device)
    net = TVNet(iterations=50, size=(h, w), fused=impl == "mvaccel").to(device)
    benchmark.group = f"TVNet-50 fwd+bwd {device} {n}x{h}x{w}"

    def step():
        net.zero_grad(set_to_none=True)
        net(i0, i1).square().mean().backward()
        _sync(device)

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    benchmark.extra_info["saved_for_backward_MiB"] = _saved_bytes(lambda: net(i0, i1)) / 2**20
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        benchmark.extra_info["peak_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    elif os.environ.get("MVACCEL_BENCH_PEAK") == "1":
        benchmark.extra_info["peak_MiB"] = profiler_peak_bytes(step) / 2**20
