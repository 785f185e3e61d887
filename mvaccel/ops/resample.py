"""block_upsample and mv_resize: block-level maps to pixels, and motion-field resizing."""

from __future__ import annotations

import torch
import torch._prims_common
from torch import Tensor

from ._checks import check_dim, check_floating

_MODES = ("nearest", "bilinear")


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {v!r}")
    return int(v[0]), int(v[1])


def block_upsample(
    x: Tensor,
    block: int | tuple[int, int],
    size: tuple[int, int],
    mode: str = "nearest",
) -> Tensor:
    """Spread one value per codec block over the block's pixels.

    Args:
        x: ``(N, C, Hb, Wb)`` block-level map (motion vectors in pixels, residual energy,
            a mask...), float32/float64/float16/bfloat16, any strides. ``Hb`` must equal
            ``ceil(H / block_h)`` (and ``Wb`` likewise), as a codec's block grid does.
        block: block size in pixels, ``b`` or ``(block_h, block_w)``.
        size: output ``(H, W)`` in pixels; the last partial block is cropped.
        mode: ``"nearest"``: codec semantics, every pixel of a block gets the block's value
            exactly. ``"bilinear"``: block centres (pixel ``(i + 0.5) * block - 0.5``) are the
            samples and pixels interpolate between them (edges clamp), the smooth field that
            DMC-Net's bilinear-smoothed MV ablation feeds its generator.

    Returns:
        ``(N, C, H, W)``, the dtype and memory format (contiguous or channels_last) of ``x``.
        Values are not rescaled: a vector stays in pixels of the same frame.

    Example:
        >>> mv = torch.randn(1, 2, 30, 40)          # 8x8 blocks of a 240x320 frame
        >>> block_upsample(mv, 8, (240, 320)).shape
        torch.Size([1, 2, 240, 320])
    """
    bh, bw = _pair(block, "block")
    h, w = _pair(size, "size")
    return torch.ops.mvaccel.block_upsample.default(x, bh, bw, h, w, mode)


def mv_resize(mv: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize a motion or flow field and scale its values to the new pixel grid.

    A vector of ``dx`` pixels on a ``W``-wide frame is ``dx * W'/W`` pixels on a ``W'``-wide
    one (``dy`` likewise with heights): resizing the field without scaling the values, the
    mistake most motion-vector code makes, gives vectors in the wrong units.

    Args:
        mv: ``(N, 2, H, W)`` field in pixels; channel 0 is x (right), channel 1 is y (down).
            float32/float64/float16/bfloat16, any strides.
        size: output ``(H', W')``.
        mode: ``"bilinear"`` (pixel centres, ``align_corners=False``) or ``"nearest"``
            (``nearest-exact``: the input pixel whose centre is nearest).

    Returns:
        ``(N, 2, H', W')`` with channel 0 multiplied by ``W'/W`` and channel 1 by ``H'/H``.

    Example:
        >>> mv = torch.ones(1, 2, 64, 64)
        >>> mv_resize(mv, (128, 32))[0, :, 0, 0]
        tensor([0.5000, 2.0000])
    """
    h, w = _pair(size, "size")
    return torch.ops.mvaccel.mv_resize.default(mv, h, w, mode)


# ---- fake kernels (shapes only) for torch.compile / FakeTensor -------------------------------
# The same checks and messages as csrc/ops/resample/resample_checks.h: a meta or FakeTensor call
# fails where the compiled kernel would.


def _check_mode(op: str, mode: str) -> None:
    torch._check(
        mode in _MODES, lambda: f"{op}: mode must be 'nearest' or 'bilinear', got {mode!r}"
    )


def _check_tensor(op: str, name: str, t: Tensor, layout: str) -> None:
    check_dim(op, name, t, 4, layout)
    check_floating(op, name, t)


def _check_block_plan(op, in_h, in_w, block_h, block_w, out_h, out_w, mode) -> None:
    _check_mode(op, mode)
    torch._check(
        block_h >= 1 and block_w >= 1,
        lambda: f"{op}: block size must be positive, got ({block_h}, {block_w})",
    )
    torch._check(
        out_h >= 1 and out_w >= 1,
        lambda: f"{op}: output size must be positive, got ({out_h}, {out_w})",
    )
    need_h, need_w = -(-out_h // block_h), -(-out_w // block_w)
    torch._check(
        in_h == need_h and in_w == need_w,
        lambda: (
            f"{op}: a ({out_h}, {out_w}) output with ({block_h}, {block_w}) blocks needs a "
            f"({need_h}, {need_w}) block grid (ceil(out / block)), got ({in_h}, {in_w})"
        ),
    )


def _check_resize_plan(op, in_h, in_w, out_h, out_w, mode) -> None:
    _check_mode(op, mode)
    torch._check(
        out_h >= 1 and out_w >= 1,
        lambda: f"{op}: output size must be positive, got ({out_h}, {out_w})",
    )
    torch._check(
        in_h >= 1 and in_w >= 1,
        lambda: f"{op}: input field must have a positive size, got ({in_h}, {in_w})",
    )


def _check_two_channels(op: str, name: str, t: Tensor) -> None:
    torch._check(
        t.shape[1] == 2,
        lambda: (
            f"{op}: expected {name} of shape (N, 2, H, W) (channel 0 = x, 1 = y), got shape "
            f"{tuple(t.shape)}"
        ),
    )


def _empty_like_format(ref: Tensor, shape: tuple) -> Tensor:
    # The kernels allocate with ref.suggest_memory_format(); the fake must match their strides.
    fmt = torch._prims_common.suggest_memory_format(ref)
    return ref.new_empty(shape).contiguous(memory_format=fmt)


@torch.library.register_fake("mvaccel::block_upsample")
def _block_upsample_fake(x, block_h, block_w, out_h, out_w, mode="nearest"):
    op = "mvaccel.block_upsample"
    _check_tensor(op, "x", x, "(N, C, Hb, Wb)")
    _check_block_plan(op, x.shape[2], x.shape[3], block_h, block_w, out_h, out_w, mode)
    return _empty_like_format(x, (x.shape[0], x.shape[1], out_h, out_w))


@torch.library.register_fake("mvaccel::_block_upsample_backward")
def _block_upsample_backward_fake(grad, in_h, in_w, block_h, block_w, mode):
    op = "mvaccel._block_upsample_backward"
    _check_tensor(op, "grad", grad, "(N, C, H, W)")
    _check_block_plan(op, in_h, in_w, block_h, block_w, grad.shape[2], grad.shape[3], mode)
    return grad.new_empty((grad.shape[0], grad.shape[1], in_h, in_w))


@torch.library.register_fake("mvaccel::mv_resize")
def _mv_resize_fake(mv, out_h, out_w, mode="bilinear"):
    op = "mvaccel.mv_resize"
    _check_tensor(op, "mv", mv, "(N, 2, H, W)")
    _check_two_channels(op, "mv", mv)
    _check_resize_plan(op, mv.shape[2], mv.shape[3], out_h, out_w, mode)
    return _empty_like_format(mv, (mv.shape[0], 2, out_h, out_w))


@torch.library.register_fake("mvaccel::_mv_resize_backward")
def _mv_resize_backward_fake(grad, in_h, in_w, mode):
    op = "mvaccel._mv_resize_backward"
    _check_tensor(op, "grad", grad, "(N, 2, H, W)")
    _check_two_channels(op, "grad", grad)
    _check_resize_plan(op, in_h, in_w, grad.shape[2], grad.shape[3], mode)
    return grad.new_empty((grad.shape[0], 2, in_h, in_w))


# ---- autograd --------------------------------------------------------------------------------
# The backward ops are linear in `grad`; their own derivative is the forward op, so double
# backward (and gradgradcheck) works too.


def _block_upsample_setup(ctx, inputs, output):
    x, block_h, block_w, out_h, out_w, mode = inputs
    ctx.args = (x.shape[2], x.shape[3], block_h, block_w, out_h, out_w, mode)


def _block_upsample_bwd(ctx, grad):
    in_h, in_w, bh, bw, _, _, mode = ctx.args
    g = torch.ops.mvaccel._block_upsample_backward.default(grad, in_h, in_w, bh, bw, mode)
    return g, None, None, None, None, None


def _block_upsample_backward_setup(ctx, inputs, output):
    grad, in_h, in_w, block_h, block_w, mode = inputs
    ctx.args = (block_h, block_w, grad.shape[2], grad.shape[3], mode)


def _block_upsample_backward_bwd(ctx, gg):
    bh, bw, out_h, out_w, mode = ctx.args
    g = torch.ops.mvaccel.block_upsample.default(gg, bh, bw, out_h, out_w, mode)
    return g, None, None, None, None, None


def _mv_resize_setup(ctx, inputs, output):
    mv, out_h, out_w, mode = inputs
    ctx.args = (mv.shape[2], mv.shape[3], mode)


def _mv_resize_bwd(ctx, grad):
    in_h, in_w, mode = ctx.args
    return torch.ops.mvaccel._mv_resize_backward.default(grad, in_h, in_w, mode), None, None, None


def _mv_resize_backward_setup(ctx, inputs, output):
    grad, in_h, in_w, mode = inputs
    ctx.args = (grad.shape[2], grad.shape[3], mode)


def _mv_resize_backward_bwd(ctx, gg):
    out_h, out_w, mode = ctx.args
    return torch.ops.mvaccel.mv_resize.default(gg, out_h, out_w, mode), None, None, None


torch.library.register_autograd(
    "mvaccel::block_upsample", _block_upsample_bwd, setup_context=_block_upsample_setup
)
torch.library.register_autograd(
    "mvaccel::_block_upsample_backward",
    _block_upsample_backward_bwd,
    setup_context=_block_upsample_backward_setup,
)
torch.library.register_autograd(
    "mvaccel::mv_resize", _mv_resize_bwd, setup_context=_mv_resize_setup
)
torch.library.register_autograd(
    "mvaccel::_mv_resize_backward", _mv_resize_backward_bwd, setup_context=_mv_resize_backward_setup
)
