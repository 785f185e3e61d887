"""TVNet module and the flow losses: TV-L1 equivalence, fused vs unrolled, training, losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mvaccel.distill import epe, tvl1_energy
from mvaccel.nn import TVNet
from mvaccel.nn.tvnet import warp_bilinear


def _texture(n, h, w, gen, dtype=torch.float64):
    t = torch.rand(n, 1, h + 8, w + 8, generator=gen, dtype=dtype)
    return F.avg_pool2d(t, 5, 1, 2)[:, :, 4 : 4 + h, 4 : 4 + w]


def _smooth_flow(n, h, w, gen, amp=2.0, dtype=torch.float64):
    coarse = torch.randn(n, 2, 3, 3, generator=gen, dtype=dtype) * amp
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)


def _pair(n, h, w, gen, dtype=torch.float64):
    """Frames in [0, 1] with I1(x + u(x)) = I0(x) exactly (up to bilinear sampling)."""
    tex = _texture(n, h, w, gen, dtype)
    u = _smooth_flow(n, h, w, gen, dtype=dtype)
    return warp_bilinear(tex, u), tex, u


def _tvl1_tvnet_preset(I0, I1, iters, warps=1, tau=0.25, lbda=0.15, theta=0.3, eps=1e-12):
    """Independent one-scale TV-L1 with the `tvnet` preset's rules (the TV-L1 engine's order):
    replicated-border centred gradient, gather-based bilinear warp with clamped coordinates,
    thresholding with grad_eps, backward-difference divergence, forward differences."""
    n, h, w = I0.shape
    l_t, taut = lbda * theta, tau / theta
    p = F.pad(I1[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    I1x = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    I1y = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    u1 = torch.zeros_like(I0)
    u2 = torch.zeros_like(I0)
    p11, p12, p21, p22 = (torch.zeros_like(I0) for _ in range(4))
    gy, gx = torch.meshgrid(
        torch.arange(h, dtype=I0.dtype), torch.arange(w, dtype=I0.dtype), indexing="ij"
    )

    def warp(img):
        X = (gx + u1).clamp(0, w - 1)
        Y = (gy + u2).clamp(0, h - 1)
        x0, y0 = X.floor().long(), Y.floor().long()
        x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
        ax, ay = X - x0, Y - y0
        b = torch.arange(n).view(n, 1, 1)
        return (
            img[b, y0, x0] * (1 - ax) * (1 - ay)
            + img[b, y0, x1] * ax * (1 - ay)
            + img[b, y1, x0] * (1 - ax) * ay
            + img[b, y1, x1] * ax * ay
        )

    def div(px, py):
        return px - F.pad(px[:, :, :-1], (1, 0)) + py - F.pad(py[:, :-1], (0, 0, 1, 0))

    def fgrad(v):
        return F.pad(v[:, :, 1:] - v[:, :, :-1], (0, 1)), F.pad(v[:, 1:] - v[:, :-1], (0, 0, 0, 1))

    for _ in range(warps):
        I1w, I1wx, I1wy = warp(I1), warp(I1x), warp(I1y)
        grad = I1wx**2 + I1wy**2
        rho_c = I1w - I1wx * u1 - I1wy * u2 - I0
        for _ in range(iters):
            rho = rho_c + I1wx * u1 + I1wy * u2
            big = grad > 1e-12
            fi = torch.where(big, -rho / torch.where(big, grad, 1.0), 0.0)
            s = torch.where(rho < -l_t * grad, l_t, torch.where(rho > l_t * grad, -l_t, fi))
            u1 = u1 + s * I1wx + theta * div(p11, p12)
            u2 = u2 + s * I1wy + theta * div(p21, p22)
            for a, b, c in ((0, 1, u1), (2, 3, u2)):
                ux, uy = fgrad(c)
                ng = 1 + taut * torch.sqrt(ux * ux + uy * uy + eps)
                ps = [p11, p12, p21, p22]
                ps[a], ps[b] = (ps[a] + taut * ux) / ng, (ps[b] + taut * uy) / ng
                p11, p12, p21, p22 = ps
    return torch.stack([u1, u2], 1)


@dataclasses.dataclass
class Params:
    """Stand-in for mvaccel.flow.TVL1Params (the `tvnet` preset's values)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 1
    scale_step: float = 0.5
    warps: int = 1
    epsilon: float = 0.0
    inner_iterations: int = 50
    outer_iterations: int = 1
    median: int = 1
    warp: str = "bilinear"
    dual_eps: float = 1e-12
    grad_eps: float = 1e-12

    @property
    def iterations(self):
        return self.inner_iterations * self.outer_iterations


@pytest.mark.parametrize("warps", [1, 2])
def test_untrained_tvnet_is_tvl1(one_thread, warps):
    gen = torch.Generator().manual_seed(0)
    I0, I1, _ = _pair(2, 24, 28, gen)
    net = TVNet.from_tvl1_params(Params(warps=warps)).double()
    u = net(I0, I1)
    ref = _tvl1_tvnet_preset(I0[:, 0] * 255, I1[:, 0] * 255, iters=50, warps=warps)
    assert (u - ref).abs().max() < 1e-4
    assert u.abs().max() > 0.5  # a real flow, not zeros


def test_untrained_tvnet_is_the_tvl1_engine_preset(one_thread):
    flow = pytest.importorskip("mvaccel.flow", reason="the TV-L1 engine (branch flow) is absent")
    gen = torch.Generator().manual_seed(1)
    I0, I1, _ = _pair(2, 32, 40, gen, dtype=torch.float32)
    params = flow.TVL1Params.preset("tvnet")
    net = TVNet.from_tvl1_params(params)
    u = net(I0, I1)
    ref = flow.tvl1(I0, I1, params)
    assert (u - ref).abs().max() < 1e-4


def test_from_tvl1_params_fields_and_errors():
    net = TVNet.from_tvl1_params(
        Params(nscales=3, warps=2, inner_iterations=10, outer_iterations=2)
    )
    assert (net.nscales, net.warps, net.iterations, net.lambda_, net.scale_step) == (
        3,
        2,
        20,
        0.15,
        0.5,
    )
    assert net.wf.shape == (3 * 2 * 20, 8) and net.wf.requires_grad

    @dataclasses.dataclass
    class Other:
        tau: float = 0.2
        lbda: float = 0.1
        theta: float = 0.25
        scales: int = 1
        warps: int = 1
        iters: int = 7

    net = TVNet.from_tvl1_params(Other(), trainable=())
    assert (net.tau, net.lambda_, net.theta, net.iterations) == (0.2, 0.1, 0.25, 7)
    assert not net.wf.requires_grad and len(list(net.parameters())) == 0
    for bad, match in [
        (Params(median=5), "median"),
        (Params(epsilon=0.01), "epsilon"),
        (Params(warp="cubic_opencv"), "bilinear"),
    ]:
        with pytest.raises(ValueError, match=match):
            TVNet.from_tvl1_params(bad)


@pytest.mark.parametrize("scales, warps, per_iter", [(1, 1, True), (2, 2, True), (2, 1, False)])
def test_fused_equals_unrolled_with_gradients(one_thread, scales, warps, per_iter):
    gen = torch.Generator().manual_seed(2)
    I0, I1, _ = _pair(2, 20, 18, gen)
    nets = []
    for fused in (True, False):
        torch.manual_seed(0)
        net = TVNet(scales, warps, 4, size=(20, 18), per_iter_filters=per_iter, fused=fused)
        net = net.double()
        with torch.no_grad():  # trained-looking filters and u0
            net.wf.add_(0.05 * torch.randn_like(net.wf))
            net.wb.add_(0.05 * torch.randn_like(net.wb))
            net.u0.add_(0.3 * torch.randn_like(net.u0))
        nets.append(net)
    outs = []
    for net in nets:
        u = net(I0, I1)
        tvl1_energy(I0 * 255, I1 * 255, u).backward()
        outs.append((u, net.wf.grad, net.wb.grad, net.u0.grad))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_stack_input_and_shapes():
    gen = torch.Generator().manual_seed(3)
    frames = torch.rand(2, 4, 3, 16, 12, generator=gen)
    net = TVNet(iterations=5)
    out = net(frames)
    assert out.shape == (2, 6, 16, 12)
    torch.testing.assert_close(out[:, 2:4], net(frames[:, 1], frames[:, 2]))
    u8 = (frames * 255).round().to(torch.uint8)
    torch.testing.assert_close(
        net(u8[:, 0], u8[:, 1]), net(u8[:, 0].float() / 255, u8[:, 1].float() / 255)
    )
    with pytest.raises(ValueError, match="T >= 2"):
        net(frames[:, :1])
    with pytest.raises(ValueError, match="one shape"):
        net(frames[:, 0], frames[:, 1, :, :8])
    with pytest.raises(ValueError, match="trainable"):
        TVNet(trainable=("theta",))
    authors = TVNet(iterations=5, preprocess="authors")
    assert authors(frames[:, 0], frames[:, 1]).shape == (2, 2, 16, 12)


def test_compile_fullgraph_tvnet(one_thread):
    gen = torch.Generator().manual_seed(4)
    I0, I1, _ = _pair(1, 12, 10, gen, dtype=torch.float32)
    net = TVNet(nscales=2, iterations=3, size=(12, 10))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    u = compiled(I0, I1)
    torch.testing.assert_close(u, net(I0, I1))
    u.square().sum().backward()
    assert net.wf.grad is not None and net.u0.grad is not None


def test_losses():
    gen = torch.Generator().manual_seed(5)
    I0, I1, u = _pair(2, 24, 24, gen)
    e_true = tvl1_energy(I0 * 255, I1 * 255, u)
    e_zero = tvl1_energy(I0 * 255, I1 * 255, torch.zeros_like(u))
    assert e_true < e_zero
    # Constant flow: no TV term; data term of the exact warp.
    c = torch.full_like(u, 0.5)
    want = 0.15 * (warp_bilinear(I1, c) - I0).abs().mean() * 255
    torch.testing.assert_close(tvl1_energy(I0 * 255, I1 * 255, c, eps=0.0), want)
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert epe(pred, gt).item() == 5.0
    valid = torch.tensor([[[True, False], [False, False]]])
    assert epe(pred * torch.tensor([[1.0, 0.0], [0.0, 0.0]]), gt, valid).item() == 5.0
    with pytest.raises(ValueError, match="N, 2, H, W"):
        epe(pred[:, :1], gt[:, :1])
    with pytest.raises(ValueError, match="agree"):
        tvl1_energy(I0, I1[:, :, :10], u)


def test_training_lowers_epe(one_thread):
    # Paper Table 1 in small: train the filters and u0 with EPE on synthetic pairs.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(6)
    net = TVNet(iterations=10, size=(24, 24))
    test_pairs = _pair(8, 24, 24, torch.Generator().manual_seed(7), dtype=torch.float32)

    def test_epe():
        with torch.no_grad():
            return epe(net(test_pairs[0], test_pairs[1]), test_pairs[2]).item()

    before = test_epe()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(100):
        I0, I1, u = _pair(8, 24, 24, gen, dtype=torch.float32)
        loss = epe(net(I0, I1), u)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = test_epe()
    assert after < 0.85 * before, f"EPE {before:.3f} -> {after:.3f}"


def test_old_spellings_warn_and_give_the_same_network():
    gen = torch.Generator().manual_seed(3)
    I0, I1, _ = _pair(1, 16, 20, gen, dtype=torch.float32)
    new = TVNet(nscales=2, iterations=3, lambda_=0.2, scale_step=0.6, dual_eps=1e-6)
    with pytest.warns(DeprecationWarning, match="'lbda' is deprecated, use 'lambda_'"):
        old = TVNet(scales=2, iters=3, lbda=0.2, zfactor=0.6, eps=1e-6)
    assert (old.nscales, old.iterations, old.lambda_, old.scale_step, old.dual_eps) == (
        2, 3, 0.2, 0.6, 1e-6
    )  # fmt: skip
    with pytest.warns(DeprecationWarning, match=r"TVNet\.iters is deprecated"):
        assert old.iters == 3
    u = new(I0, I1)
    with pytest.warns(DeprecationWarning, match="'x0' is deprecated, use 'I0'"):
        assert torch.equal(old(x0=I0, x1=I1), u)
    assert torch.equal(new(I0=I0, I1=I1), u)
    with pytest.raises(TypeError, match="both 'iters'"):
        TVNet(iters=3, iterations=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'iter'"):
        TVNet(iter=3)


def test_tvl1_energy_old_lbda_spelling_warns_and_agrees():
    g = torch.Generator().manual_seed(3)
    I0, I1 = torch.rand(2, 1, 1, 12, 14, generator=g).unbind(0)
    u = torch.randn(1, 2, 12, 14, generator=g)
    want = tvl1_energy(I0 * 255, I1 * 255, u, lambda_=0.3)
    with pytest.warns(DeprecationWarning, match="lbda"):
        got = tvl1_energy(I0 * 255, I1 * 255, u, lbda=0.3)
    torch.testing.assert_close(got, want)
    with pytest.raises(TypeError, match="both"):
        tvl1_energy(I0, I1, u, lambda_=0.3, lbda=0.3)
