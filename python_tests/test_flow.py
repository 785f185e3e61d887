"""TV-L1 (mvaccel.flow.tvl1): synthetic ground truth, kernel vs reference, batching, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mvaccel.flow import TVL1Params, epe, tvl1, tvl1_reference
from mvaccel.flow.reference import (
    centred_grad,
    divergence,
    forward_grad,
    median_filter,
    pyramid_sizes,
)

# Small, fast settings where the point is agreement, not accuracy.
QUICK = TVL1Params(nscales=2, warps=2, inner_iterations=10, outer_iterations=2, epsilon=0.01)


def textured(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(n, h, w) smooth random texture in [0, 255]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, h // 4 + 3, w // 4 + 3, generator=g)
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    x = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), True))
    return (x[:, 0] * 255).clamp(0, 255)


def smooth_flow(n: int, h: int, w: int, amp: float, seed: int = 1) -> torch.Tensor:
    """(n, 2, h, w) smooth flow with components up to about ``amp`` pixels."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 2, 3, 3, generator=g)
    f = F.interpolate(f, size=(h, w), mode="bicubic", align_corners=True)
    return amp * f / f.abs().amax((1, 2, 3), keepdim=True)


def warp_back(I1: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """I0(x) = I1(x + flow(x)): the pair whose TV-L1 flow is ``flow``."""
    n, h, w = I1.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    gx = (xs + flow[:, 0]) / (w - 1) * 2 - 1
    gy = (ys + flow[:, 1]) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(
        I1[:, None], grid, mode="bicubic", align_corners=True, padding_mode="border"
    )[:, 0]


def interior(f: torch.Tensor, m: int = 6) -> torch.Tensor:
    return f[..., m:-m, m:-m]


@pytest.mark.parametrize("preset", ["opencv", "fast"])
def test_recovers_known_smooth_flow(preset):
    h, w = 64, 80
    I1 = textured(2, h, w)
    gt = smooth_flow(2, h, w, amp=2.5)
    I0 = warp_back(I1, gt)
    p = TVL1Params.preset(preset).replace(nscales=3, warps=3)
    flow = tvl1(I0[:, None].round().to(torch.uint8), I1[:, None].round().to(torch.uint8), p)
    assert flow.shape == (2, 2, h, w) and flow.dtype == torch.float32
    err = epe(interior(flow), interior(gt))
    assert err < 0.25, err  # zero flow would be about 1.5
    assert epe(interior(torch.zeros_like(gt)), interior(gt)) > 1.0


def test_direction_convention_translation():
    # I1 is I0 shifted right by 2 px: I1(x + 2) = I0(x), so u = (+2, 0).
    big = textured(1, 48, 70)
    I0, I1 = big[:, :, 4:64], big[:, :, 2:62]
    flow = tvl1(I0[:, None] / 255, I1[:, None] / 255, TVL1Params(nscales=2))
    u, v = interior(flow, 8)[0]
    # I0(x) = big(x + 4) = I1(x + 2): u = +2
    assert abs(u.median().item() - 2.0) < 0.1, u.median()
    assert abs(v.median().item()) < 0.1


@pytest.mark.parametrize(
    "params",
    [
        QUICK,
        QUICK.replace(median=1, warp="cubic_clamp", stop_check="cuda", epsilon=0.02),
        QUICK.replace(warp="bilinear", epsilon=0.0, dual_eps=1e-12, scale_step=0.5),
    ],
    ids=["opencv-like", "cuda-like", "tvnet-like"],
)
@pytest.mark.parametrize("size", [(37, 53), (16, 16), (5, 7)], ids=str)
def test_kernel_matches_reference(params, size):
    h, w = size
    I1 = textured(3, h, w, seed=h)
    I0 = warp_back(I1, smooth_flow(3, h, w, amp=1.5, seed=w))
    ref = tvl1_reference(I0, I1, params)
    out = tvl1(I0[:, None].clone() / 255, I1[:, None] / 255, params)
    assert out.shape == (3, 2, h, w)
    assert torch.isfinite(out).all()
    diff = (out - ref).abs()
    # float32 order of operations differs (FMA, AVX); flips of the threshold's case at a
    # handful of pixels stay local.
    assert diff.mean() < 2e-3, diff.mean()
    assert diff.max() < 0.2, diff.max()


def test_batch_pairs_are_independent_and_stop_separately():
    h, w = 40, 48
    I1 = textured(2, h, w, seed=3)
    moving = warp_back(I1[1:], smooth_flow(1, h, w, amp=2.0))
    # pair 0: identical frames (converges at the first check); pair 1: real motion.
    I0 = torch.cat([I1[:1], moving])
    p = QUICK.replace(inner_iterations=40, outer_iterations=3, epsilon=0.01)
    both = tvl1(I0[:, None] / 255, I1[:, None] / 255, p)
    alone = tvl1(I0[1:, None] / 255, I1[1:, None] / 255, p)
    assert both[0].abs().max() < 1e-6
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)
    ref = tvl1_reference(I0, I1, p)
    assert (both - ref).abs().mean() < 2e-3


def test_early_stop_actually_stops():
    # with a huge epsilon the first check stops each warp: same result as a single iteration
    h, w = 32, 40
    I1 = textured(1, h, w, seed=5)
    I0 = warp_back(I1, smooth_flow(1, h, w, amp=1.0))
    base = TVL1Params(nscales=1, warps=1, median=1, outer_iterations=1)
    stopped = tvl1(I0[:, None] / 255, I1[:, None] / 255, base.replace(epsilon=1e3))
    one = tvl1(I0[:, None] / 255, I1[:, None] / 255, base.replace(inner_iterations=1))
    full = tvl1(I0[:, None] / 255, I1[:, None] / 255, base.replace(epsilon=0.0))
    torch.testing.assert_close(stopped, one)
    assert (full - one).abs().max() > 1e-2


@pytest.mark.parametrize("value", [0, 255])
def test_constant_images_give_zero_flow(value):
    img = torch.full((2, 1, 23, 31), value, dtype=torch.uint8)
    for backend in ("kernel", "reference"):
        out = tvl1(img, img, "opencv", backend=backend)
        assert torch.isfinite(out).all()
        assert out.abs().max() == 0


def test_rgb_input_uses_bt601_grey():
    rgb = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    shifted = torch.roll(rgb, 1, dims=3)
    grey_s = torch.roll(grey, 1, dims=3)
    # the same grey up to float rounding (weights applied before or after the 255 scale)
    torch.testing.assert_close(
        tvl1(rgb, shifted, QUICK), tvl1(grey, grey_s, QUICK), atol=1e-2, rtol=0
    )


def test_init_flow_is_used():
    h, w = 32, 32
    I1 = textured(1, h, w, seed=7)
    p = TVL1Params(nscales=1, warps=1, inner_iterations=1, outer_iterations=1, median=1)
    init = torch.full((1, 2, h, w), 3.0)
    out = tvl1(I1[:, None] / 255, I1[:, None] / 255, p, init=init)
    assert out.mean() > 2.0  # one iteration cannot walk back from 3 px
    ref = tvl1_reference(I1, I1, p, init)
    assert (out - ref).abs().max() < 1e-3


def test_pyramid_sizes_follow_cv_resize():
    p = TVL1Params()
    assert pyramid_sizes(384, 512, p) == [
        (384, 512),
        (307, 410),
        (246, 328),
        (197, 262),
        (158, 210),
    ]
    assert pyramid_sizes(20, 20, p) == [(20, 20), (16, 16)]
    assert pyramid_sizes(5, 7, p) == [(5, 7)]


def test_reference_operators():
    u = torch.randn(2, 5, 6, dtype=torch.float64)
    ux, uy = forward_grad(u)
    assert (ux[:, :, -1] == 0).all() and (uy[:, -1] == 0).all()
    torch.testing.assert_close(ux[:, :, :-1], u[:, :, 1:] - u[:, :, :-1])
    # divergence is minus the adjoint of the forward gradient on fields that vanish on the
    # last row/column (what p does: it starts at 0 and its updates are 0 there)
    px, py = torch.randn_like(u), torch.randn_like(u)
    px[:, :, -1] = 0
    py[:, -1] = 0
    lhs = (ux * px + uy * py).sum()
    rhs = -(u * divergence(px, py)).sum()
    torch.testing.assert_close(lhs, rhs)
    gx, gy = centred_grad(u)
    torch.testing.assert_close(gx[:, :, 1:-1], (u[:, :, 2:] - u[:, :, :-2]) / 2)
    torch.testing.assert_close(gx[:, :, 0], (u[:, :, 1] - u[:, :, 0]) / 2)
    m = median_filter(u.float(), 5)
    pad = F.pad(u.float()[:, None], (2, 2, 2, 2), mode="replicate")[:, 0]
    assert m[0, 2, 3] == pad[0, 2:7, 3:8].flatten().median()


def test_bad_inputs_raise():
    a = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        tvl1(a, torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tvl1(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        tvl1(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="uint8 or floating"):
        tvl1(a.to(torch.int32), a.to(torch.int32))
    with pytest.raises(ValueError, match="at least 2x2"):
        tvl1(torch.rand(1, 1, 1, 8), torch.rand(1, 1, 1, 8))
    with pytest.raises(ValueError, match="finite"):
        tvl1(a * math.nan, a)
    with pytest.raises(ValueError, match="init"):
        tvl1(a, a, init=torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="unknown preset"):
        tvl1(a, a, "nope")
    with pytest.raises(ValueError, match="backend"):
        tvl1(a, a, backend="gpu")
    with pytest.raises(ValueError, match="median"):
        TVL1Params(median=3)
    with pytest.raises(ValueError, match="scale_step"):
        TVL1Params(scale_step=1.0)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.mvaccel.tvl1_flow(
            a[:, 0].double(), a[:, 0].double(), None, 0.25, 0.15, 0.3, 1, 0.5, 1, 0.01,
            1, 1, 1, 0, 0, 16, 0.0, 1e-7,
        )  # fmt: skip


def test_empty_batch():
    out = tvl1(torch.rand(0, 1, 8, 8), torch.rand(0, 1, 8, 8), QUICK)
    assert out.shape == (0, 2, 8, 8)


def test_presets():
    assert TVL1Params.preset("opencv") == TVL1Params()
    assert TVL1Params.preset("dense_flow") == TVL1Params.preset("opencv_cuda")
    cuda = TVL1Params.preset("opencv_cuda")
    assert (cuda.iterations, cuda.median, cuda.warp) == (300, 1, "cubic_clamp")
    tv = TVL1Params.preset("tvnet")
    assert (tv.nscales, tv.warps, tv.iterations, tv.warp, tv.epsilon) == (1, 1, 50, "bilinear", 0)


def test_opcheck():
    I0 = textured(2, 12, 14)
    I1 = torch.roll(I0, 1, 2)
    args = (I0, I1, None, 0.25, 0.15, 0.3, 2, 0.8, 1, 0.01, 3, 1, 5, 0, 0, 4, 0.0, 1e-7)
    torch.library.opcheck(torch.ops.mvaccel.tvl1_flow.default, args)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    h, w = 45, 61
    I1 = textured(4, h, w, seed=11)
    I0 = warp_back(I1, smooth_flow(4, h, w, amp=2.0))
    for p in (
        QUICK,
        TVL1Params.preset("opencv_cuda").replace(nscales=3),
        TVL1Params.preset("tvnet"),
    ):
        cpu = tvl1(I0[:, None] / 255, I1[:, None] / 255, p)
        gpu = tvl1(I0[:, None].cuda() / 255, I1[:, None].cuda() / 255, p).cpu()
        assert (gpu - cpu).abs().mean() < 2e-3
        ref = tvl1(I0[:, None].cuda() / 255, I1[:, None].cuda() / 255, p, backend="reference")
        assert (gpu - ref.cpu()).abs().mean() < 2e-3


# ---- op contracts ---------------------------------------------------------------------------


def test_inputs_that_require_grad_raise_on_backward():
    # The output said it required grad and backward() left I0.grad None without an error.
    I0 = textured(1, 12, 14).requires_grad_()
    out = tvl1(I0, torch.roll(I0.detach(), 1, 2), QUICK)
    with pytest.raises(RuntimeError, match="not differentiable"):
        out.sum().backward()
    # Without grad the output is plain data, as before.
    assert not tvl1(I0.detach(), I0.detach(), QUICK).requires_grad


def test_too_large_raises_before_allocating(device):
    # Issue 13.8: a 60000^2 pair needs ~250 GB of solver planes; the op checks first.
    from mvaccel.flow.tvl1 import _op_args

    big = torch.zeros(1, 1, 1, device=device).expand(1, 60000, 60000)
    with pytest.raises(torch.OutOfMemoryError, match=r"tvl1_flow: .* GiB .* available"):
        torch.ops.mvaccel.tvl1_flow.default(big, big, None, *_op_args(QUICK))


def _bad_tvl1_calls():
    """(I0, I1, init, tweaks of the scalar arguments) the kernel's checks reject."""
    a, d = torch.rand(1, 6, 6), torch.rand(1, 6, 6).double()
    return [
        (torch.rand(6, 6), torch.rand(6, 6), None, {}),
        (a, torch.rand(1, 6, 7), None, {}),
        (d, d, None, {}),
        (torch.rand(1, 1, 6), torch.rand(1, 1, 6), None, {}),
        (a, a, torch.zeros(1, 2, 5, 6), {}),
        (a, a, torch.zeros(1, 2, 6, 6).double(), {}),
        (a, a, None, {0: -1.0}),
        (a, a, None, {3: 0}),
        (a, a, None, {4: 1.5}),
        (a, a, None, {9: 3}),
        (a, a, None, {10: 7}),
        (a, a, None, {11: 2}),
        (a, a, None, {12: 1}),
        (a, a, None, {13: -1.0}),
    ]


@pytest.mark.parametrize("case", range(len(_bad_tvl1_calls())))
def test_fake_kernel_checks_like_the_kernel(case):
    # The fake (meta) kernel had no checks: meta calls returned a tensor where the kernel raises.
    from mvaccel.flow.tvl1 import _op_args

    I0, I1, init, tweaks = _bad_tvl1_calls()[case]
    args = list(_op_args(QUICK))
    for i, v in tweaks.items():
        args[i] = v
    with pytest.raises(RuntimeError) as cpu:
        torch.ops.mvaccel.tvl1_flow.default(I0, I1, init, *args)
    meta = [t if t is None else t.to("meta") for t in (I0, I1, init)]
    with pytest.raises(RuntimeError) as fake:
        torch.ops.mvaccel.tvl1_flow.default(*meta, *args)
    assert str(fake.value) == str(cpu.value)


def test_fake_kernel_rejects_mixed_cpu_and_meta_inputs():
    # A cpu/meta pair returned an uninitialised meta tensor instead of raising.
    from mvaccel.flow.tvl1 import _op_args

    cpu, meta = torch.rand(1, 6, 6), torch.rand(1, 6, 6, device="meta")
    for a, b in ((cpu, meta), (meta, cpu)):
        with pytest.raises(RuntimeError, match="I0 and I1 on different devices"):
            torch.ops.mvaccel.tvl1_flow.default(a, b, None, *_op_args(QUICK))
    with pytest.raises(RuntimeError, match="init must be float32 on the images' device"):
        torch.ops.mvaccel.tvl1_flow.default(meta, meta, torch.zeros(1, 2, 6, 6), *_op_args(QUICK))
    # Good meta inputs still give the output's shape.
    assert torch.ops.mvaccel.tvl1_flow.default(meta, meta, None, *_op_args(QUICK)).shape == (
        1, 2, 6, 6,
    )  # fmt: skip
