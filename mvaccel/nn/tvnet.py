"""TVNet (Fan et al., CVPR 2018): TV-L1 optical flow unrolled into trainable layers.

``nscales x warps x iterations`` iterations of the dual TV-L1 scheme, each a layer with its own
forward-difference and divergence filters (initialised to TV-L1's ``[-1, 1]``), bilinear warping,
``dual_eps`` in both divisions (eq. 11), a coarse-to-fine pyramid by ``scale_step`` and a
trainable initial flow ``u0``. Untrained, it computes TV-L1 (the ``tvnet`` preset of
``mvaccel.flow``). The iterations run in the fused op :func:`mvaccel.ops.tvnet_iterations`
(``fused=True``) or unrolled in plain PyTorch (``fused=False``, the reference).

Parameter names are those of :class:`mvaccel.flow.TVL1Params` (OpenCV's): ``nscales``,
``iterations``, ``lambda_``, ``scale_step``, ``dual_eps``; the frames are ``I0, I1``. The old
spellings (``scales``, ``iters``, ``lbda``, ``zfactor``, ``eps``; ``x0``, ``x1``) are accepted
as keyword arguments with a ``DeprecationWarning`` (:data:`RENAMED`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.resample import mv_resize
from ..ops.tvnet import TVL1_TAPS, tvnet_iterations, tvnet_iterations_reference

#: Old TVNet spellings of the TV-L1 parameters -> the :class:`mvaccel.flow.TVL1Params` names.
RENAMED = {
    "scales": "nscales",
    "iters": "iterations",
    "lbda": "lambda_",
    "zfactor": "scale_step",
    "eps": "dual_eps",
}


def renamed_kwargs(
    owner: str, kwargs: Mapping, renames: Mapping[str, str], given: Mapping | None = None
) -> dict:
    """Map deprecated keyword spellings to the new names, with a ``DeprecationWarning`` each.

    Args:
        owner: who takes them (in the messages), e.g. ``"TVNet"``.
        kwargs: the keyword arguments received under the old names (``**deprecated``).
        renames: ``{old: new}``.
        given: the new-name arguments passed explicitly (those not at their default): an
            argument given under both names is an error.

    Returns:
        ``{new: value}`` for every old name in ``kwargs``.

    Raises:
        TypeError: a name that is neither known nor deprecated, or one argument given twice.
    """
    out = {}
    for old, value in kwargs.items():
        if old not in renames:
            raise TypeError(f"{owner}: unexpected keyword argument {old!r}")
        new = renames[old]
        if given and new in given:
            raise TypeError(f"{owner}: got both {old!r} (deprecated) and {new!r}; pass {new!r}")
        warnings.warn(
            f"{owner}: argument {old!r} is deprecated, use {new!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        out[new] = value
    return out


_LUMA = (0.299, 0.587, 0.114)
# The authors' 5x5 Gaussian (sigma 0.8), applied before the solve when preprocess="authors".
_GAUSS5 = (
    (0.000874, 0.006976, 0.01386, 0.006976, 0.000874),
    (0.006976, 0.0557, 0.110656, 0.0557, 0.006976),
    (0.01386, 0.110656, 0.219833, 0.110656, 0.01386),
    (0.006976, 0.0557, 0.110656, 0.0557, 0.006976),
    (0.000874, 0.006976, 0.01386, 0.006976, 0.000874),
)


def _grey255(x: Tensor, name: str) -> Tensor:
    """``(N, C, H, W)`` (C = 1 or 3; uint8 0..255 or float 0..1) -> ``(N, 1, H, W)`` 0..255."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"TVNet: {name} must be (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float()
    elif x.is_floating_point():
        x = x * 255.0
    else:
        raise ValueError(f"TVNet: {name} must be uint8 or floating, got {x.dtype}")
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    return x


def centred_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Centred differences ``w_c`` of ``(N, 1, H, W)``, halved one-sided on the border.

    ``Ix(x) = (I(x+1) - I(x-1)) / 2`` inside; ``(I(1) - I(0)) / 2`` and ``(I(W-1) - I(W-2)) / 2``
    on the first and last column (the authors' boundary refinement; TV-L1's replicated border).
    """
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]), 0.5 * (
        p[..., 2:, 1:-1] - p[..., :-2, 1:-1]
    )


def warp_bilinear(planes: Tensor, u: Tensor) -> Tensor:
    """Sample ``planes`` ``(N, K, H, W)`` at ``(x + u_x, y + u_y)``, bilinear, clamped border.

    Coordinates outside the image are clamped to it (the border pixel's value); the gradient
    flows to ``planes`` and to ``u`` (eq. 10).
    """
    n, _, h, w = planes.shape
    ys = torch.arange(h, dtype=u.dtype, device=u.device).view(1, h, 1)
    xs = torch.arange(w, dtype=u.dtype, device=u.device).view(1, 1, w)
    gx = (xs + u[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + u[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _resize_flow(u: Tensor, size: tuple[int, int]) -> Tensor:
    # Bilinear (pixel centres) with the values scaled to the new grid, differentiable.
    if tuple(u.shape[-2:]) == tuple(size):
        return u
    return mv_resize(u, size, "bilinear")


# defaults of the renamed arguments (to tell an explicit new-name argument from a default)
_DEFAULTS = {"nscales": 1, "iterations": 50, "lambda_": 0.15, "scale_step": 0.5, "dual_eps": 1e-12}


def _frames(owner: str, I0, I1, deprecated: dict):
    """``(I0, I1)`` with the old keywords ``x0`` / ``x1`` mapped (deprecated)."""
    given = {k: None for k, v in (("I0", I0), ("I1", I1)) if v is not None}
    new = renamed_kwargs(owner, deprecated, {"x0": "I0", "x1": "I1"}, given)
    I0, I1 = new.get("I0", I0), new.get("I1", I1)
    if I0 is None:
        raise TypeError(f"{owner}: needs the frames I0 (and I1)")
    return I0, I1


class TVNet(nn.Module):
    """TV-L1 optical flow as a trainable network (TVNet-``nscales``-``warps``-``iterations``).

    Arguments are named as :class:`mvaccel.flow.TVL1Params`' fields; the old spellings
    ``scales``, ``iters``, ``lbda``, ``zfactor``, ``eps`` still work as keywords, with a
    ``DeprecationWarning`` (and read as attributes).

    Args:
        nscales: pyramid levels; level ``s`` has size ``ceil(H * scale_step**s)``.
        warps: warps per level (the image is re-warped with the current flow).
        iterations: iterations per warp.
        tau: time step of the dual update.
        lambda_: weight of the data term (``lambda`` of eq. 1).
        theta: coupling of ``u`` and ``v``.
        scale_step: ratio between pyramid levels.
        trainable: which parameters learn: ``"filters"`` (the forward-difference and divergence
            taps of every iteration, ``wf`` and ``wb``) and/or ``"u0"`` (the initial flow at the
            coarsest level). Others are fixed buffers. The centred image gradient ``w_c`` is
            always fixed (as in the authors' code).
        per_iter_filters: one set of taps per iteration (the authors' code) or one set shared
            by all.
        dual_eps: added under the square root of the dual update (eq. 11).
        grad_eps: the thresholding divides by ``|grad I1|^2`` only above this.
        size: ``(H, W)`` of the inputs, for a per-pixel ``u0`` (the paper's); ``None`` makes
            ``u0`` one global vector (any input size). A per-pixel ``u0`` is resized (and its
            values rescaled) when the input size differs.
        preprocess: ``"tvl1"``: BT.601 grey in 0..255 (what ``mvaccel.flow.tvl1`` does, so an
            untrained TVNet is its ``tvnet`` preset); ``"authors"``: also the authors' joint
            min-max scaling of each pair to 0..255 and their 5x5 Gaussian (sigma 0.8).
        fused: run the iterations in the fused op (CPU/CUDA kernels, hand-written backward,
            low memory) or unrolled in plain PyTorch.

    Trainable parameters: ``wf``, ``wb`` ``(L, 8)`` (``L = nscales * warps * iterations`` or 1;
    ``(f0, f1, g0, g1)`` of u1 then u2, ``(b0, b1, c0, c1)`` of p1 then p2; see
    :func:`mvaccel.ops.tvnet_iterations`) and ``u0`` ``(1, 2, h, w)``, as selected.

    Shapes:
        ``forward(I0, I1)``: ``(N, C, H, W)`` frame pairs (C = 1 or 3; uint8 0..255 or float
        0..1) -> ``(N, 2, H, W)`` flow ``u`` in pixels with ``I1(x + u(x)) ~ I0(x)``.
        ``forward(frames)``: ``(N, T, C, H, W)`` -> ``(N, 2 * (T - 1), H, W)``: the flows of
        the consecutive pairs ``(t, t + 1)``, x then y of each, the flow-stack input of a
        temporal-stream classifier.
    """

    def __init__(
        self,
        nscales: int = 1,
        warps: int = 1,
        iterations: int = 50,
        tau: float = 0.25,
        lambda_: float = 0.15,
        theta: float = 0.3,
        scale_step: float = 0.5,
        trainable: Sequence[str] = ("filters", "u0"),
        per_iter_filters: bool = True,
        dual_eps: float = 1e-12,
        grad_eps: float = 1e-12,
        size: tuple[int, int] | None = None,
        preprocess: str = "tvl1",
        fused: bool = True,
        **deprecated,
    ):
        super().__init__()
        if deprecated:
            explicit = {k for k, v in (("nscales", nscales), ("iterations", iterations),
                                       ("lambda_", lambda_), ("scale_step", scale_step),
                                       ("dual_eps", dual_eps))
                        if v != _DEFAULTS[k]}  # fmt: skip
            new = renamed_kwargs("TVNet", deprecated, RENAMED, dict.fromkeys(explicit))
            nscales = new.get("nscales", nscales)
            iterations = new.get("iterations", iterations)
            lambda_ = new.get("lambda_", lambda_)
            scale_step = new.get("scale_step", scale_step)
            dual_eps = new.get("dual_eps", dual_eps)
        bad = set(trainable) - {"filters", "u0"}
        if bad:
            raise ValueError(f"TVNet: trainable may hold 'filters' and 'u0', got {sorted(bad)}")
        for name, v in (("nscales", nscales), ("warps", warps), ("iterations", iterations)):
            if int(v) < 1:
                raise ValueError(f"TVNet: {name} must be >= 1, got {v}")
        if not (tau > 0 and lambda_ > 0 and theta > 0 and 0 < scale_step < 1):
            raise ValueError(
                f"TVNet: need tau, lambda_, theta > 0 and 0 < scale_step < 1, got tau={tau}, "
                f"lambda_={lambda_}, theta={theta}, scale_step={scale_step}"
            )
        if preprocess not in ("tvl1", "authors"):
            raise ValueError(f"TVNet: preprocess must be 'tvl1' or 'authors', got {preprocess!r}")
        self.nscales, self.warps, self.iterations = int(nscales), int(warps), int(iterations)
        self.tau, self.lambda_, self.theta, self.scale_step = tau, lambda_, theta, scale_step
        self.dual_eps, self.grad_eps = dual_eps, grad_eps
        self.size = tuple(size) if size is not None else None
        self.preprocess = preprocess
        self.fused = fused
        self.per_iter_filters = per_iter_filters
        layers = self.nscales * self.warps * self.iterations if per_iter_filters else 1
        taps = torch.tensor(TVL1_TAPS).repeat(layers, 1)
        if "filters" in trainable:
            self.wf = nn.Parameter(taps.clone())
            self.wb = nn.Parameter(taps.clone())
        else:
            self.register_buffer("wf", taps.clone())
            self.register_buffer("wb", taps.clone())
        if self.size is not None:
            hc, wc = self._level_size(self.size, self.nscales - 1)
        else:
            hc = wc = 1
        u0 = torch.zeros(1, 2, hc, wc)
        if "u0" in trainable:
            self.u0 = nn.Parameter(u0)
        else:
            self.register_buffer("u0", u0)
        self.register_buffer("gauss", torch.tensor(_GAUSS5).view(1, 1, 5, 5), persistent=False)

    def __getattr__(self, name: str):
        # the old attribute spellings (nn.Module's __getattr__ serves parameters and buffers)
        if name in RENAMED:
            warnings.warn(
                f"TVNet.{name} is deprecated, use TVNet.{RENAMED[name]}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self, RENAMED[name])
        return super().__getattr__(name)

    @classmethod
    def from_tvl1_params(cls, params, **kwargs) -> TVNet:
        """An untrained TVNet that computes the TV-L1 solver's parameter set ``params``.

        ``params`` is any object with these fields (``mvaccel.flow.TVL1Params`` has them):
        ``tau``; ``lambda_``; ``theta``; ``nscales``; ``warps``; ``iterations`` (or
        ``inner_iterations`` x ``outer_iterations``); optionally ``scale_step``, ``dual_eps``,
        ``grad_eps``. (The old spellings ``lbda`` / ``lambda``, ``scales``, ``iters``,
        ``zfactor``, ``eps`` are read too.) Settings TVNet cannot express raise
        ``ValueError``: a median filter (``median > 1``), a stopping threshold (``epsilon >
        0``: TVNet always runs every iteration) or a non-bilinear ``warp``. With one scale the
        result is the solver's (the ``tvnet`` preset); with several, TVNet's pyramid (``ceil``
        sizes, bilinear ``F.interpolate``) may differ from the solver's in the resizing.

        Args:
            params: the parameter object.
            **kwargs: other :class:`TVNet` arguments (``trainable``, ``size``, ``fused``...).
        """

        def get(*names, default=None):
            for n in names:
                if hasattr(params, n):
                    return getattr(params, n)
            if default is None:
                raise ValueError(f"TVNet.from_tvl1_params: params has none of {names}")
            return default

        if get("median", default=1) > 1:
            raise ValueError("TVNet.from_tvl1_params: TVNet has no median filter (median > 1)")
        if get("epsilon", default=0.0) > 0:
            raise ValueError(
                "TVNet.from_tvl1_params: TVNet runs a fixed number of iterations; set "
                "epsilon=0 (no stopping criterion)"
            )
        if get("warp", default="bilinear") != "bilinear":
            raise ValueError("TVNet.from_tvl1_params: TVNet warps bilinearly (warp='bilinear')")
        if hasattr(params, "iterations"):
            iterations = params.iterations
        elif hasattr(params, "inner_iterations"):
            iterations = params.inner_iterations * get("outer_iterations", default=1)
        else:
            iterations = get("iters")
        kw = {
            "nscales": get("nscales", "scales"),
            "warps": get("warps"),
            "iterations": iterations,
            "tau": get("tau"),
            "lambda_": get("lambda_", "lbda", "lambda"),
            "theta": get("theta"),
            "scale_step": get("scale_step", "zfactor", default=0.5),
            "dual_eps": get("dual_eps", "eps", default=1e-12),
            "grad_eps": get("grad_eps", default=1e-12),
        }
        kw.update(kwargs)
        return cls(**kw)

    def _level_size(self, size: tuple[int, int], s: int) -> tuple[int, int]:
        z = self.scale_step**s
        return max(1, math.ceil(size[0] * z)), max(1, math.ceil(size[1] * z))

    def _filters(self, layer: int, count: int) -> tuple[Tensor, Tensor]:
        if self.per_iter_filters:
            return self.wf[layer : layer + count], self.wb[layer : layer + count]
        return self.wf.expand(count, -1), self.wb.expand(count, -1)

    def _prepare(self, I0: Tensor, I1: Tensor) -> tuple[Tensor, Tensor]:
        g0, g1 = _grey255(I0, "I0"), _grey255(I1, "I1")
        if self.preprocess == "authors":
            both = torch.cat([g0, g1], 1).flatten(1)
            lo = both.min(1).values.view(-1, 1, 1, 1)
            den = both.max(1).values.view(-1, 1, 1, 1) - lo
            ok = den > 0
            safe = torch.where(ok, den, torch.ones_like(den))
            g0 = torch.where(ok, 255.0 * (g0 - lo) / safe, g0)
            g1 = torch.where(ok, 255.0 * (g1 - lo) / safe, g1)
            k = self.gauss.to(g0.dtype)
            g0, g1 = F.conv2d(g0, k, padding=2), F.conv2d(g1, k, padding=2)
        return g0, g1

    def _iterate(self, u, p, warped, layer):
        wf, wb = self._filters(layer, self.iterations)
        wf, wb = wf.to(u.dtype), wb.to(u.dtype)
        l_t, taut = self.lambda_ * self.theta, self.tau / self.theta
        args = (l_t, self.theta, taut, self.dual_eps, self.grad_eps)
        fn = tvnet_iterations if self.fused else tvnet_iterations_reference
        return fn(u, p, warped.contiguous(), wf, wb, *args)

    def flow(self, I0: Tensor | None = None, I1: Tensor | None = None, **deprecated) -> Tensor:
        """Flow of frame pairs: ``(N, C, H, W)`` x 2 -> ``(N, 2, H, W)`` (see the class doc)."""
        I0, I1 = _frames("TVNet.flow", I0, I1, deprecated)
        if I1 is None:
            raise TypeError("TVNet.flow: needs two frames I0, I1")
        if I0.shape != I1.shape:
            raise ValueError(
                f"TVNet: I0 and I1 must have one shape, got {tuple(I0.shape)} and {tuple(I1.shape)}"
            )
        i0, i1 = self._prepare(I0, I1)
        n, _, h, w = i0.shape
        dtype = i0.dtype if i0.dtype == torch.float64 else torch.float32
        i0, i1 = i0.to(dtype), i1.to(dtype)
        sizes = [self._level_size((h, w), s) for s in range(self.nscales)]
        u0 = self.u0.to(dtype)
        # A per-pixel u0 follows the input size (values rescaled); a global one is broadcast.
        u0 = _resize_flow(u0, sizes[-1]) if self.size is not None else u0
        u = u0.expand(n, 2, *sizes[-1])
        layer = 0
        for s in range(self.nscales - 1, -1, -1):
            hs, ws = sizes[s]
            if s:
                a = F.interpolate(i0, size=(hs, ws), mode="bilinear", align_corners=False)
                b = F.interpolate(i1, size=(hs, ws), mode="bilinear", align_corners=False)
            else:
                a, b = i0, i1
            bx, by = centred_gradient(b)
            planes = torch.cat([b, bx, by], 1)
            p = u.new_zeros((n, 4, hs, ws))
            for _ in range(self.warps):
                w1, wx, wy = warp_bilinear(planes, u).unbind(1)
                rho_c = w1 - wx * u[:, 0] - wy * u[:, 1] - a[:, 0]
                warped = torch.stack([rho_c, wx, wy], 1)
                u, p = self._iterate(u.contiguous(), p, warped, layer)
                layer += self.iterations if self.per_iter_filters else 0
            if s:
                u = _resize_flow(u, sizes[s - 1])
        return u

    def forward(self, I0: Tensor | None = None, I1: Tensor | None = None, **deprecated) -> Tensor:
        """Flow of a pair (``I0, I1``) or flow stack of a clip (one ``(N, T, C, H, W)``)."""
        I0, I1 = _frames("TVNet", I0, I1, deprecated)
        if I1 is not None:
            return self.flow(I0, I1)
        if I0.dim() != 5 or I0.shape[1] < 2:
            raise ValueError(
                f"TVNet: expected frames of shape (N, T >= 2, C, H, W) or two (N, C, H, W) "
                f"frames, got {tuple(I0.shape)}"
            )
        n, t = I0.shape[:2]
        a = I0[:, :-1].reshape(n * (t - 1), *I0.shape[2:])
        b = I0[:, 1:].reshape(n * (t - 1), *I0.shape[2:])
        u = self.flow(a, b)
        return u.reshape(n, 2 * (t - 1), *u.shape[2:])
