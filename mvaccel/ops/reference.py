"""Pure-PyTorch references of the compiled ops: any device, autograd through torch.

They define what the ops compute; the tests compare the kernels with them. They are also what a
user would write without mvaccel, so the benchmarks time them as the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_TORCH_MODE = {"nearest": "nearest-exact", "bilinear": "bilinear"}


def block_upsample(
    x: Tensor, block_h: int, block_w: int, out_h: int, out_w: int, mode: str
) -> Tensor:
    """Reference of :func:`mvaccel.ops.block_upsample` (same arguments as the op schema)."""
    hb, wb = x.shape[-2:]
    full = (hb * block_h, wb * block_w)
    if mode == "nearest":
        up = x.repeat_interleave(block_h, dim=2).repeat_interleave(block_w, dim=3)
    elif mode == "bilinear":
        up = F.interpolate(x, size=full, mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    return up[:, :, :out_h, :out_w]


def mv_resize(mv: Tensor, out_h: int, out_w: int, mode: str) -> Tensor:
    """Reference of :func:`mvaccel.ops.mv_resize` (same arguments as the op schema)."""
    h, w = mv.shape[-2:]
    if mode not in _TORCH_MODE:
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(mv, size=(out_h, out_w), mode=_TORCH_MODE[mode], **kw)
    scale = torch.tensor([out_w / w, out_h / h], dtype=mv.dtype, device=mv.device)
    return out * scale.view(1, 2, 1, 1)
