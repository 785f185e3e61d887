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

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    ref_a = a.grad.clone()
    a.grad = None
    off.off_gradients_reference(a, b).backward(grad)
    torch.testing.assert_close(ref_a, a.grad, atol=1e-4, rtol=1e-4)
