"""Pure-PyTorch TV-L1: the readable twin of the C++/CUDA kernels, on any device, batched.

Every step is a whole-tensor operation in the order of OpenCV's ``DualTVL1`` (see
``csrc/ops/tvl1/tvl1_math.h`` for the per-pixel formulas), so this file is both the test oracle
of the compiled kernels and the base that TVNet's unrolled layers start from. Each pair of the
batch has its own stopping state: a pair that converges keeps its flow while the others go on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .params import TVL1Params

_FLT_MAX = 3.4028234663852886e38


def pyramid_sizes(h: int, w: int, params: TVL1Params) -> list[tuple[int, int]]:
    """Sizes of the pyramid levels, finest first, as ``cv::resize(..., fx=step, fy=step)`` makes.

    Each level is the previous one times ``scale_step``, rounded to nearest (ties to even); a
    level under ``min_size`` in either dimension ends the pyramid.
    """
    sizes = [(h, w)]
    for _ in range(1, params.nscales):
        ph, pw = sizes[-1]
        nh, nw = round(ph * params.scale_step), round(pw * params.scale_step)
        if nh < params.min_size or nw < params.min_size:
            break
        sizes.append((nh, nw))
    return sizes


def _taps(n_out: int, n_in: int, scale: float, device) -> tuple[Tensor, Tensor, Tensor]:
    d = torch.arange(n_out, device=device, dtype=torch.float64)
    s = (d + 0.5) * scale - 0.5
    i0 = torch.floor(s)
    f = (s - i0).float()
    i0 = i0.long()
    f = torch.where((i0 < 0) | (i0 >= n_in - 1), torch.zeros_like(f), f)
    i0 = i0.clamp(0, n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, f


def resize_linear(x: Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None):
    """``cv::resize`` INTER_LINEAR of ``(N, H, W)`` planes to ``size = (h, w)``.

    Args:
        x: ``(N, H, W)`` float.
        size: output ``(h, w)``.
        scale: source/destination ratio ``(sy, sx)`` of the coordinate map; default ``H/h, W/w``
            (cv::resize with a size), ``1/step`` when cv::resize is given factors instead.

    Returns:
        ``(N, h, w)``.
    """
    h, w = size
    sy, sx = scale if scale is not None else (x.shape[1] / h, x.shape[2] / w)
    y0, y1, fy = _taps(h, x.shape[1], sy, x.device)
    x0, x1, fx = _taps(w, x.shape[2], sx, x.device)
    fx = fx.to(x.dtype)
    fy = fy.to(x.dtype)[:, None]
    rows = x[:, :, x0] * (1 - fx) + x[:, :, x1] * fx
    return rows[:, y0] * (1 - fy) + rows[:, y1] * fy


def centred_grad(x: Tensor) -> tuple[Tensor, Tensor]:
    """Centred differences of ``(N, H, W)`` planes with a replicated border (halved)."""
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]), 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])


def forward_grad(u: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences of ``(N, H, W)``, zero on the last column (x) / last row (y)."""
    ux = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    uy = F.pad(u[:, 1:] - u[:, :-1], (0, 0, 0, 1))
    return ux, uy


def divergence(px: Tensor, py: Tensor) -> Tensor:
    """Backward-difference divergence; the neighbour before the first column/row reads 0."""
    return px - F.pad(px[:, :, :-1], (1, 0)) + py - F.pad(py[:, :-1], (0, 0, 1, 0))


def median_filter(u: Tensor, k: int) -> Tensor:
    """``k x k`` median of ``(N, H, W)`` planes with a replicated border (``cv::medianBlur``)."""
    r = k // 2
    n, h, w = u.shape
    p = F.pad(u[:, None], (r, r, r, r), mode="replicate")
    cols = F.unfold(p, k)  # (N, k*k, H*W)
    return cols.median(dim=1).values.view(n, h, w)


def _cubic_w(f: Tensor, a: float) -> list[Tensor]:
    x0, x1, x2 = f + 1, f, 1 - f
    w0 = ((a * x0 - 5 * a) * x0 + 8 * a) * x0 - 4 * a
    w1 = ((a + 2) * x1 - (a + 3)) * x1 * x1 + 1
    w2 = ((a + 2) * x2 - (a + 3)) * x2 * x2 + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def warp3(planes: Tensor, u1: Tensor, u2: Tensor, mode: str) -> Tensor:
    """Sample ``planes`` ``(N, K, H, W)`` at ``(x + u1, y + u2)``; see ``TVL1Params.warp``.

    Returns:
        ``(N, K, H, W)``.
    """
    n, k, h, w = planes.shape
    dev = planes.device
    gy, gx = torch.meshgrid(
        torch.arange(h, device=dev, dtype=u1.dtype),
        torch.arange(w, device=dev, dtype=u1.dtype),
        indexing="ij",
    )
    X, Y = gx + u1, gy + u2
    flat = planes.reshape(n, k, h * w)

    def gather(iy: Tensor, ix: Tensor) -> Tensor:
        idx = (iy * w + ix).reshape(n, 1, h * w).expand(n, k, h * w)
        return flat.gather(2, idx).view(n, k, h, w)

    if mode == "bilinear":
        fx, fy = X.clamp(0, w - 1), Y.clamp(0, h - 1)
        x0, y0 = fx.floor().long(), fy.floor().long()
        x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
        wx, wy = (fx - x0).unsqueeze(1), (fy - y0).unsqueeze(1)
        return (
            gather(y0, x0) * (1 - wx) * (1 - wy)
            + gather(y0, x1) * wx * (1 - wy)
            + gather(y1, x0) * (1 - wx) * wy
            + gather(y1, x1) * wx * wy
        )
    if mode not in ("cubic_opencv", "cubic_clamp"):
        raise ValueError(f"warp3: unknown mode {mode!r}")
    a = -0.75 if mode == "cubic_opencv" else -0.5
    ix, iy = X.floor(), Y.floor()
    wx, wy = _cubic_w(X - ix, a), _cubic_w(Y - iy, a)
    ix, iy = ix.long(), iy.long()
    out = torch.zeros_like(planes)
    wsum = torch.zeros_like(u1)
    for j in range(4):
        yy = iy - 1 + j
        for i in range(4):
            xx = ix - 1 + i
            wgt = wy[j] * wx[i]
            if mode == "cubic_opencv":
                inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                wgt = torch.where(inside, wgt, torch.zeros_like(wgt))
            out = out + wgt.unsqueeze(1) * gather(yy.clamp(0, h - 1), xx.clamp(0, w - 1))
            wsum = wsum + wgt
    if mode == "cubic_clamp":
        out = out / torch.where(wsum != 0, wsum, torch.ones_like(wsum)).unsqueeze(1)
    return out


def _solve_level(I0, I1, u1, u2, p: TVL1Params) -> tuple[Tensor, Tensor]:
    n, h, w = I0.shape
    l_t, taut, theta = p.lambda_ * p.theta, p.tau / p.theta, p.theta
    scaled_eps = p.epsilon**2 * h * w
    I1x, I1y = centred_grad(I1)
    planes = torch.stack([I1, I1x, I1y], 1)
    p11, p12, p21, p22 = (torch.zeros_like(u1) for _ in range(4))
    view = (n, 1, 1)
    for _ in range(p.warps):
        I1w, I1wx, I1wy = warp3(planes, u1, u2, p.warp).unbind(1)
        grad = I1wx * I1wx + I1wy * I1wy
        rho_c = I1w - I1wx * u1 - I1wy * u2 - I0
        err = torch.full((n,), math.inf, dtype=torch.float64, device=I0.device)
        prev = torch.zeros(n, dtype=torch.float64, device=I0.device)
        it = 0
        for _outer in range(p.outer_iterations):
            going = err > scaled_eps
            if not bool(going.any()):
                break
            if p.median > 1:
                g = going.view(view)
                u1 = torch.where(g, median_filter(u1, p.median), u1)
                u2 = torch.where(g, median_filter(u2, p.median), u2)
            for _inner in range(p.inner_iterations):
                going = err > scaled_eps
                if not bool(going.any()):
                    break
                g = going.view(view)
                rho = rho_c + I1wx * u1 + I1wy * u2
                lg = l_t * grad
                big = grad > p.grad_eps
                fi = torch.where(big, -rho / torch.where(big, grad, torch.ones_like(grad)), 0.0)
                s = torch.where(rho < -lg, l_t, torch.where(rho > lg, -l_t, fi))
                n1 = u1 + s * I1wx + theta * divergence(p11, p12)
                n2 = u2 + s * I1wy + theta * divergence(p21, p22)
                e = ((n1 - u1) ** 2 + (n2 - u2) ** 2).sum((1, 2), dtype=torch.float64)
                u1, u2 = torch.where(g, n1, u1), torch.where(g, n2, u2)
                for a, b, comp in ((p11, p12, u1), (p21, p22, u2)):
                    ux, uy = forward_grad(comp)
                    ng = 1 + taut * torch.sqrt(ux * ux + uy * uy + p.dual_eps)
                    a.copy_(torch.where(g, (a + taut * ux) / ng, a))
                    b.copy_(torch.where(g, (b + taut * uy) / ng, b))
                if p.epsilon > 0:
                    if p.stop_check == "every":
                        err = torch.where(going, e, err)
                    else:  # OpenCV CUDA's schedule
                        calc = going & bool(it & 1) & (prev < scaled_eps)
                        err = torch.where(calc, e, torch.where(going, math.inf, err))
                        prev = torch.where(calc, e, torch.where(going, prev - scaled_eps, prev))
                it += 1
    return u1, u2


def tvl1_reference(
    I0: Tensor, I1: Tensor, params: TVL1Params | None = None, init: Tensor | None = None
) -> Tensor:
    """TV-L1 flow of grey ``(N, H, W)`` planes in ``[0, 255]``, in pure PyTorch.

    Args:
        I0: ``(N, H, W)`` float32 first frames, grey, scale 0..255.
        I1: ``(N, H, W)`` second frames.
        params: solver parameters; default ``TVL1Params.preset("opencv")``.
        init: optional ``(N, 2, H, W)`` initial flow (pixels), scaled down the pyramid.

    Returns:
        ``(N, 2, H, W)`` float32 flow u with ``I1(x + u(x)) ~ I0(x)``.
    """
    p = params or TVL1Params()
    n, h, w = I0.shape
    sizes = pyramid_sizes(h, w, p)
    inv = 1.0 / p.scale_step
    I0s, I1s = [I0.float()], [I1.float()]
    for sz in sizes[1:]:
        I0s.append(resize_linear(I0s[-1], sz, (inv, inv)))
        I1s.append(resize_linear(I1s[-1], sz, (inv, inv)))
    L = len(sizes)
    if init is not None:
        u1, u2 = init[:, 0].float(), init[:, 1].float()
        for sz in sizes[1:]:
            u1 = resize_linear(u1, sz, (inv, inv)) * p.scale_step
            u2 = resize_linear(u2, sz, (inv, inv)) * p.scale_step
    else:
        hc, wc = sizes[-1]
        u1 = torch.zeros(n, hc, wc, device=I0.device)
        u2 = torch.zeros_like(u1)
    for s in range(L - 1, -1, -1):
        u1, u2 = _solve_level(I0s[s], I1s[s], u1, u2, p)
        if s == 0:
            break
        u1 = resize_linear(u1, sizes[s - 1]) * inv
        u2 = resize_linear(u2, sizes[s - 1]) * inv
    return torch.stack([u1, u2], 1)
