"""off_gradients: the Optical Flow guided Feature operator (Sun et al., CVPR 2018), fused.

OFF of a feature map ``f_t`` against an earlier frame's ``f_prev`` is the concatenation of the
Sobel x and Sobel y gradients of ``f_t`` (the paper's eq. 5 and 6 kernels, zero padding,
cross-correlation as in ``F.conv2d``) and the temporal difference ``f_t - f_prev`` (eq. 7).
The compiled op computes all three in one pass over the inputs; its backward is a private op
(``_off_gradients_backward``). The pure-torch references below are what the op computes and
what a user would write without it (``conv2d(sobel) + sub + cat``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_dim, check_floating

#: Sobel x of the paper (eq. 5); applied as cross-correlation (``F.conv2d``). Grows to the right.
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
#: Sobel y of the paper (eq. 6); with cross-correlation it grows when the map decreases
#: downwards (the paper's sign, kept so that weights trained on it transfer).
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def off_gradients(f_t: Tensor, f_prev: Tensor) -> Tensor:
    """Optical Flow guided Feature of a pair of feature maps: Sobel x, Sobel y, difference.

    Args:
        f_t: ``(N, C, H, W)`` features of frame (segment) ``t``; float32/float64/float16/
            bfloat16, any strides (rows that are not unit-stride are copied first).
        f_prev: ``(N, C, H, W)`` features of frame ``t - Δt``, same shape, dtype, device.

    Returns:
        ``(N, 3C, H, W)``, channels_last when ``f_t`` is (its channel dimension unit stride,
        its columns not), contiguous otherwise: channels ``[0, C)`` are Sobel x of ``f_t``,
        ``[C, 2C)`` Sobel y of ``f_t`` and ``[2C, 3C)`` are ``f_t - f_prev``. Differentiable
        in both inputs (hand-written backward, double backward too).

    Example:
        >>> f = torch.randn(2, 8, 14, 14)
        >>> off_gradients(f, torch.zeros_like(f)).shape
        torch.Size([2, 24, 14, 14])
    """
    return torch.ops.mvaccel.off_gradients.default(f_t, f_prev)


def off_gradients_stack(f: Tensor) -> Tensor:
    """OFF of every consecutive pair of a segment stack, in one pass and without copies.

    Args:
        f: ``(N, T, C, H, W)`` features of ``T >= 2`` frames (segments) in time order.

    Returns:
        ``(N, T - 1, 3C, H, W)``: entry ``s`` is ``off_gradients(f[:, s + 1], f[:, s])``.
        When the frames of ``f`` are channels_last (``f[:, 0]`` has unit channel stride),
        so are the output's (``out[:, s]`` is channels_last), with no copy of ``f``.

    Example:
        >>> f = torch.randn(2, 3, 8, 7, 7)
        >>> off_gradients_stack(f).shape
        torch.Size([2, 2, 24, 7, 7])
    """
    return torch.ops.mvaccel.off_gradients_stack.default(f)


# ---- pure-torch references --------------------------------------------------------------------


def sobel_weight(channels: int, dtype=None, device=None) -> Tensor:
    """Depthwise ``(2C, 1, 3, 3)`` weight: Sobel x for channel c at 2c, Sobel y at 2c + 1."""
    k = torch.tensor([SOBEL_X, SOBEL_Y], dtype=dtype, device=device)
    return k.unsqueeze(1).repeat(channels, 1, 1, 1)


def off_gradients_reference(f_t: Tensor, f_prev: Tensor) -> Tensor:
    """Reference of :func:`off_gradients`: ``conv2d(sobel) + sub + cat`` in plain PyTorch."""
    n, c, h, w = f_t.shape
    g = F.conv2d(f_t, sobel_weight(c, f_t.dtype, f_t.device), padding=1, groups=c)
    g = g.view(n, c, 2, h, w)
    return torch.cat([g[:, :, 0], g[:, :, 1], f_t - f_prev], dim=1)


def off_gradients_stack_reference(f: Tensor) -> Tensor:
    """Reference of :func:`off_gradients_stack` in plain PyTorch."""
    n, t, c, h, w = f.shape
    cur = f[:, 1:].reshape(n * (t - 1), c, h, w)
    prev = f[:, :-1].reshape(n * (t - 1), c, h, w)
    return off_gradients_reference(cur, prev).view(n, t - 1, 3 * c, h, w)


# ---- fake kernels -------------------------------------------------------------------------------


def _channels_last(t: Tensor, cdim: int) -> bool:
    """csrc/ops/off/off.h ``is_channels_last``: unit channel stride, columns not."""
    return t.shape[cdim] > 1 and t.stride(cdim) == 1 and (t.shape[-1] <= 1 or t.stride(-1) != 1)


def _empty_frames(ref: Tensor, shape, cl: bool) -> Tensor:
    """Uninitialised ``shape`` = (..., K, H, W) tensor; each (K, H, W) frame channels_last if cl."""
    if not cl:
        return ref.new_empty(shape)
    *lead, k, h, w = shape
    n = len(lead)
    return ref.new_empty((*lead, h, w, k)).permute(*range(n), n + 2, n, n + 1)


# The same checks and messages as csrc/ops/off/off_checks.h (a meta or FakeTensor call fails
# where the compiled kernel would, and never returns memory of a device it was not given).


@torch.library.register_fake("mvaccel::off_gradients")
def _off_gradients_fake(f_t, f_prev):
    op = "mvaccel.off_gradients"
    check_dim(op, "f_t", f_t, 4, "(N, C, H, W)")
    check_dim(op, "f_prev", f_prev, 4, "(N, C, H, W)")
    check_floating(op, "f_t", f_t)
    torch._check(
        f_t.shape == f_prev.shape,
        lambda: (
            f"{op}: f_t and f_prev must have the same shape, got "
            f"{tuple(f_t.shape)} and {tuple(f_prev.shape)}"
        ),
    )
    torch._check(
        f_t.dtype == f_prev.dtype,
        lambda: (
            f"{op}: f_t and f_prev must have the same dtype, got {f_t.dtype} and {f_prev.dtype}"
        ),
    )
    torch._check(
        f_t.device == f_prev.device,
        lambda: (
            f"{op}: f_t and f_prev must be on the same device, got {f_t.device} and {f_prev.device}"
        ),
    )
    n, c, h, w = f_t.shape
    return _empty_frames(f_t, (n, 3 * c, h, w), _channels_last(f_t, 1))


@torch.library.register_fake("mvaccel::_off_gradients_backward")
def _off_gradients_backward_fake(grad):
    op = "mvaccel._off_gradients_backward"
    check_dim(op, "grad", grad, 4, "(N, 3C, H, W)")
    check_floating(op, "grad", grad)
    torch._check(
        grad.shape[1] % 3 == 0,
        lambda: f"{op}: grad must have 3C channels (Fx, Fy, Ft), got shape {tuple(grad.shape)}",
    )
    n, c3, h, w = grad.shape
    cl = _channels_last(grad, 1)
    return (
        _empty_frames(grad, (n, c3 // 3, h, w), cl),
        _empty_frames(grad, (n, c3 // 3, h, w), cl),
    )


@torch.library.register_fake("mvaccel::off_gradients_stack")
def _off_gradients_stack_fake(f):
    op = "mvaccel.off_gradients_stack"
    check_dim(op, "f", f, 5, "(N, T, C, H, W)")
    check_floating(op, "f", f)
    torch._check(
        f.shape[1] >= 2,
        lambda: f"{op}: the stack needs at least 2 frames (T >= 2), got shape {tuple(f.shape)}",
    )
    n, t, c, h, w = f.shape
    return _empty_frames(f, (n, t - 1, 3 * c, h, w), _channels_last(f, 2))


@torch.library.register_fake("mvaccel::_off_gradients_stack_backward")
def _off_gradients_stack_backward_fake(grad):
    op = "mvaccel._off_gradients_stack_backward"
    check_dim(op, "grad", grad, 5, "(N, T - 1, 3C, H, W)")
    check_floating(op, "grad", grad)
    torch._check(
        grad.shape[2] % 3 == 0,
        lambda: f"{op}: grad must have 3C channels (Fx, Fy, Ft), got shape {tuple(grad.shape)}",
    )
    n, s, c3, h, w = grad.shape
    return _empty_frames(grad, (n, s + 1, c3 // 3, h, w), _channels_last(grad, 2))


# ---- autograd -----------------------------------------------------------------------------------
# The ops are linear; the backward ops are their adjoints, and the adjoint of an adjoint is the
# forward op: double backward reuses the forward kernels.


def _pair_bwd(ctx, grad):
    g_t, g_prev = torch.ops.mvaccel._off_gradients_backward.default(grad)
    return g_t, g_prev


def _pair_backward_bwd(ctx, gg_t, gg_prev):
    if gg_t is None:
        gg_t = torch.zeros_like(gg_prev)
    if gg_prev is None:
        gg_prev = torch.zeros_like(gg_t)
    return torch.ops.mvaccel.off_gradients.default(gg_t, gg_prev)


def _stack_bwd(ctx, grad):
    return torch.ops.mvaccel._off_gradients_stack_backward.default(grad)


def _stack_backward_bwd(ctx, gg):
    return torch.ops.mvaccel.off_gradients_stack.default(gg)


# The ops are linear: their backwards need nothing saved (no setup_context).
torch.library.register_autograd("mvaccel::off_gradients", _pair_bwd)
torch.library.register_autograd("mvaccel::_off_gradients_backward", _pair_backward_bwd)
torch.library.register_autograd("mvaccel::off_gradients_stack", _stack_bwd)
torch.library.register_autograd("mvaccel::_off_gradients_stack_backward", _stack_backward_bwd)
