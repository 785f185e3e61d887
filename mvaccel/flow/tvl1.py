"""``tvl1``: batched TV-L1 optical flow on the compiled kernels (or the pure-torch reference)."""

from __future__ import annotations

import torch
from torch import Tensor

from .params import STOP_CHECKS, WARP_MODES, TVL1Params

#: ITU-R BT.601 luma weights (R, G, B).
BT601 = (0.299, 0.587, 0.114)


def to_grey(x: Tensor, name: str = "image") -> Tensor:
    """Grey planes in the 0..255 scale TV-L1 works in.

    Args:
        x: ``(N, C, H, W)`` with C = 1 (grey) or 3 (RGB), uint8 in ``[0, 255]`` or float in
            ``[0, 1]``; or ``(N, H, W)`` grey.
        name: the argument's name, for error messages.

    Returns:
        ``(N, H, W)`` float32 in ``[0, 255]`` (BT.601 luma for RGB).

    Raises:
        ValueError: wrong rank, channel count or dtype.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"tvl1: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"tvl1: expected {name} of shape (N, C, H, W) with C = 1 or 3, or (N, H, W); "
            f"got {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        x = x.float()
    elif x.is_floating_point():
        x = x.float() * 255.0
    else:
        raise ValueError(f"tvl1: {name} must be uint8 or floating point, got {x.dtype}")
    if x.shape[1] == 3:
        r, g, b = x.unbind(1)
        return BT601[0] * r + BT601[1] * g + BT601[2] * b
    return x[:, 0]


def _op_args(p: TVL1Params) -> tuple:
    return (
        p.tau,
        p.lambda_,
        p.theta,
        p.nscales,
        p.scale_step,
        p.warps,
        p.epsilon,
        p.inner_iterations,
        p.outer_iterations,
        p.median,
        WARP_MODES[p.warp],
        STOP_CHECKS[p.stop_check],
        p.min_size,
        p.dual_eps,
        p.grad_eps,
    )


def tvl1(
    I0: Tensor,
    I1: Tensor,
    params: TVL1Params | str | None = None,
    init: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """TV-L1 optical flow (Zach-Pock-Bischof duality scheme, OpenCV DualTVL1 semantics).

    Every pair of the batch is solved independently, with its own stopping state.

    Args:
        I0: ``(N, C, H, W)`` first frames, C = 1 or 3 (RGB, converted to BT.601 grey), uint8 in
            ``[0, 255]`` or float in ``[0, 1]``; ``(N, H, W)`` is taken as grey.
        I1: second frames, same shape and device as ``I0``.
        params: a :class:`TVL1Params` or a preset name; default ``"opencv"``.
        init: optional ``(N, 2, H, W)`` initial flow in pixels (used at the coarsest level).
        backend: ``"auto"`` (the compiled kernel of the tensors' device), ``"kernel"`` or
            ``"reference"`` (the pure-torch implementation, any device).

    Returns:
        ``(N, 2, H, W)`` float32 flow in pixels on ``I0``'s device, channel 0 = x (right),
        channel 1 = y (down), with ``I1(x + u(x)) ~ I0(x)``.

    Raises:
        ValueError: shapes, dtypes, devices or sizes that do not fit (images need at least
            2x2 pixels), an unknown preset or backend.
        torch.OutOfMemoryError: the solve needs more memory than the device has available
            (checked before anything is allocated).
        RuntimeError: on ``backward()`` through the compiled kernel's output: it is not
            differentiable (the output of inputs that require grad says so when differentiated
            instead of leaving their ``.grad`` silently ``None``). Detach the inputs, or use
            ``backend="reference"`` or :class:`mvaccel.nn.TVNet` for a differentiable flow.

    Example:
        >>> import torch
        >>> from mvaccel.flow import tvl1
        >>> a = torch.rand(1, 1, 32, 32)
        >>> tvl1(a, a, "fast").shape
        torch.Size([1, 2, 32, 32])
    """
    p = TVL1Params.preset(params) if isinstance(params, str) else (params or TVL1Params())
    if not isinstance(p, TVL1Params):
        raise ValueError(f"tvl1: params must be a TVL1Params or a preset name, got {params!r}")
    g0, g1 = to_grey(I0, "I0"), to_grey(I1, "I1")
    if g0.shape != g1.shape:
        raise ValueError(
            f"tvl1: I0 and I1 must have the same shape, got {tuple(I0.shape)} and {tuple(I1.shape)}"
        )
    if g0.device != g1.device:
        raise ValueError(f"tvl1: I0 is on {g0.device} but I1 on {g1.device}")
    n, h, w = g0.shape
    if h < 2 or w < 2:
        raise ValueError(f"tvl1: images must be at least 2x2 pixels, got {h}x{w}")
    if init is not None:
        if not isinstance(init, Tensor) or tuple(init.shape) != (n, 2, h, w):
            shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"tvl1: init must be a tensor of shape {(n, 2, h, w)}, got {shape}")
        init = init.to(device=g0.device, dtype=torch.float32)
    if not (torch.isfinite(g0).all() and torch.isfinite(g1).all()):
        raise ValueError("tvl1: I0 and I1 must be finite (found NaN or inf)")
    if backend not in ("auto", "kernel", "reference"):
        raise ValueError(f"tvl1: backend must be 'auto', 'kernel' or 'reference', got {backend!r}")
    if backend == "reference":
        from .reference import tvl1_reference

        return tvl1_reference(g0, g1, p, init)
    from .._ext import load_ops

    load_ops()
    return torch.ops.mvaccel.tvl1_flow.default(g0, g1, init, *_op_args(p))


def _register_fake() -> None:
    from .._ext import load_ops

    try:
        load_ops()
    except ImportError:  # the reference backend still works; tvl1() raises the build hint
        return

    # The checks and messages of csrc/ops/tvl1/tvl1_checks.h (the NVRTC host side's mirror of
    # them): a meta or FakeTensor call fails where the compiled kernel would, and never returns
    # memory of a device it was not given (a cpu/meta pair raises).
    from ..ops._nvrtc import _tvl1_check

    @torch.library.register_fake("mvaccel::tvl1_flow")
    def _tvl1_flow_fake(I0, I1, init, *args):
        _tvl1_check(I0, I1, init, *args)
        return I0.new_empty((I0.shape[0], 2, I0.shape[1], I0.shape[2]))

    def _not_differentiable(ctx, grad):
        raise RuntimeError(
            "mvaccel.tvl1_flow (mvaccel.flow.tvl1) is not differentiable: its inputs required "
            "grad but the compiled TV-L1 solver has no backward. Detach I0/I1 (flow as data), "
            "or use tvl1(..., backend='reference') or mvaccel.nn.TVNet for a differentiable flow"
        )

    torch.library.register_autograd("mvaccel::tvl1_flow", _not_differentiable)


_register_fake()
