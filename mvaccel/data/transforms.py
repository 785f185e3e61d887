"""Crops, flips and scalings that keep images and motion fields consistent.

Tensors are ``(..., C, H, W)``. A ``kind`` says what the channels are:

- ``"image"``: any channels (RGB, residuals, grey); resized bilinearly, flipped as pixels.
- ``"motion"``: interleaved ``(x, y)`` pairs, ``2K`` channels for ``K`` stacked motion-vector or
  flow fields (TSN's layout ``x_1, y_1, x_2, y_2, ...``) in pixels. Resizing scales the values
  with the field (:func:`mvaccel.ops.mv_resize`); a horizontal flip negates every x channel.

Random choices are drawn once into a :class:`CropParams` and applied to every tensor of a
sample, so a teacher's flow and a student's motion vectors get the same crop and flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("image", "motion")
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)


@dataclass(frozen=True)
class CropParams:
    """A crop box in input pixels and whether to flip it horizontally."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def _check(x: Tensor, kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'image' or 'motion', got {kind!r}")
    if x.dim() < 3:
        raise ValueError(f"expected a (..., C, H, W) tensor, got shape {tuple(x.shape)}")
    if kind == "motion" and x.shape[-3] % 2:
        raise ValueError(
            f"a motion tensor has interleaved (x, y) channels, an even count; got shape "
            f"{tuple(x.shape)}"
        )


def resize(x: Tensor, size: tuple[int, int], kind: str) -> Tensor:
    """Resize ``(..., C, H, W)`` to ``size = (H', W')``; motion values are scaled with it."""
    _check(x, kind)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    dtype = x.dtype
    xf = x if x.is_floating_point() else x.float()
    if kind == "motion":
        from ..ops import mv_resize

        out = mv_resize(xf.reshape(-1, 2, h, w), size, "bilinear").reshape(*lead, c, *size)
    else:
        flat = xf.reshape(-1, c, h, w)
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        out = out.reshape(*lead, c, *size)
    if not dtype.is_floating_point:
        out = out.round().clamp(torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    return out.to(dtype)


def hflip(x: Tensor, kind: str) -> Tensor:
    """Mirror left-right; for motion, negate the x channels too (right becomes left)."""
    _check(x, kind)
    out = x.flip(-1)  # a copy (torch.flip always copies)
    if kind == "motion":
        out[..., 0::2, :, :].neg_()
    return out


def apply(x: Tensor, params: CropParams, size: tuple[int, int] | None, kind: str) -> Tensor:
    """Crop ``x`` to ``params``' box, resize it to ``size`` (None: keep), flip if asked."""
    _check(x, kind)
    h, w = x.shape[-2:]
    if params.top < 0 or params.left < 0 or params.top + params.height > h:
        raise ValueError(f"crop {params} does not fit a {h}x{w} input")
    if params.left + params.width > w:
        raise ValueError(f"crop {params} does not fit a {h}x{w} input")
    out = x[..., params.top : params.top + params.height, params.left : params.left + params.width]
    if size is not None:
        out = resize(out, size, kind)
    return hflip(out, kind) if params.flip else out


class MultiScaleCrop:
    """TSN's multi-scale corner crop.

    A random crop size from ``scales`` of the short side, at a fixed set of positions (corners,
    centre and, with ``more_fix_crop``, 8 more), then resized to ``size``.

    Args:
        size: output ``(H, W)`` (or an int for square).
        scales: fractions of the short side (TSN: 1, .875, .75, .66; DTMV-CNN: 1, .875, .75).
        max_distort: how many scale steps apart height and width may be.
        more_fix_crop: 13 positions instead of 5.
        flip: also flip horizontally with probability 0.5.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        scales: tuple[float, ...] = TSN_SCALES,
        max_distort: int = 1,
        more_fix_crop: bool = True,
        flip: bool = True,
    ):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.more_fix_crop = more_fix_crop
        self.flip = flip

    def offsets(self, h: int, w: int, ch: int, cw: int) -> list[tuple[int, int]]:
        """The fixed ``(top, left)`` positions of a ``ch x cw`` crop in an ``h x w`` input."""
        hs, ws = (h - ch) // 4, (w - cw) // 4
        pos = [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws)]
        if self.more_fix_crop:
            pos += [(2 * hs, 0), (2 * hs, 4 * ws), (4 * hs, 2 * ws), (0, 2 * ws)]
            pos += [(hs, ws), (hs, 3 * ws), (3 * hs, ws), (3 * hs, 3 * ws)]
        return pos

    def sample(self, h: int, w: int, rng: np.random.Generator | None = None) -> CropParams:
        """Draw a crop for an ``h x w`` input."""
        rng = rng if rng is not None else np.random.default_rng()
        base = min(h, w)
        sizes = [int(base * s) for s in self.scales]
        crop_h = [self.size[0] if abs(s - self.size[0]) < 3 else s for s in sizes]
        crop_w = [self.size[1] if abs(s - self.size[1]) < 3 else s for s in sizes]
        pairs = [
            (ch, cw)
            for i, ch in enumerate(crop_h)
            for j, cw in enumerate(crop_w)
            if abs(i - j) <= self.max_distort and ch <= h and cw <= w
        ]
        ch, cw = pairs[int(rng.integers(len(pairs)))]
        offs = self.offsets(h, w, ch, cw)
        top, left = offs[int(rng.integers(len(offs)))]
        flip = bool(self.flip and rng.random() < 0.5)
        return CropParams(top, left, ch, cw, flip)

    def __call__(self, tensors: dict[str, tuple[Tensor, str]], rng=None) -> dict[str, Tensor]:
        """Crop every ``name: (tensor, kind)`` the same way; all must share H and W."""
        shapes = {tuple(t.shape[-2:]) for t, _ in tensors.values()}
        if len(shapes) != 1:
            raise ValueError(f"tensors of one sample must share H and W, got {sorted(shapes)}")
        params = self.sample(*shapes.pop(), rng=rng)
        return {k: apply(t, params, self.size, kind) for k, (t, kind) in tensors.items()}


def center_crop(x: Tensor, size: int | tuple[int, int], kind: str = "image") -> Tensor:
    """The central ``size`` crop (no resize)."""
    ch, cw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"center_crop: {ch}x{cw} does not fit a {h}x{w} input")
    return apply(x, CropParams((h - ch) // 2, (w - cw) // 2, ch, cw), None, kind)


def ten_crop(x: Tensor, size: int | tuple[int, int], kind: str = "image") -> Tensor:
    """The 4 corners and the centre, then the same 5 flipped: ``(10, ..., C, ch, cw)``."""
    ch, cw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"ten_crop: {ch}x{cw} does not fit a {h}x{w} input")
    pos = MultiScaleCrop(more_fix_crop=False).offsets(h, w, ch, cw)
    crops = [
        apply(x, CropParams(t, lf, ch, cw, f), None, kind) for f in (False, True) for t, lf in pos
    ]
    return torch.stack(crops)


def normalize_motion(
    x: Tensor, bound: float = 20.0, std: float = 1.0, *, inplace: bool = False
) -> Tensor:
    """Clip motion to ``±bound`` px, map it like CoViAR/DMC-Net's inputs, centre it.

    ``v -> clip(v) * 127.5 / bound + 128`` (CoViAR's uint8 mapping, 20 px to 255), then
    ``(u / 255 - 0.5) / std``: CoViAR uses ``std = 1`` (then BatchNorm), DMC-Net ``0.226``.
    ``inplace``: overwrite ``x`` (float32) with the result, the same values without
    temporaries.
    """
    if inplace:
        _check_inplace(x)
        return (
            x.clamp_(-bound, bound).mul_(127.5 / bound).add_(128.0).div_(255.0).sub_(0.5).div_(std)
        )
    u = x.float().clamp(-bound, bound) * (127.5 / bound) + 128.0  # differentiable (TVNet)
    return (u / 255.0 - 0.5) / std


def normalize_residual(x: Tensor, std: float, *, inplace: bool = False) -> Tensor:
    """RGB residuals -> CoViAR/DMC-Net's input: ``(clip(r + 128, 0, 255) / 255 - 0.5) / std``.

    The datasets' residual inputs and the DMC generator's in :func:`mvaccel.viz.dmc_flow`.

    Args:
        x: ``(..., 3, H, W)`` residuals in RGB levels (int16 from the reader, or float).
        std: the divisor, DMC-Net's 0.226 (:data:`mvaccel.data.datasets.RESIDUAL_STD`).
        inplace: overwrite ``x`` (float32) with the result, the same values without
            temporaries.

    Returns:
        float32, the shape of ``x``.
    """
    if inplace:
        _check_inplace(x)
        x = x.add_(128)
    else:
        x = x.float() + 128
    return x.clamp_(0, 255).div_(255).sub_(0.5).div_(std)


#: RGB input conventions of pre-trained weights: ``(channel order, scale, mean, std)``, mean and
#: std in the channel order and the scaled range. ``"imagenet"``: torchvision's (RGB / 255,
#: ImageNet mean and std); ``"caffe_bgr"``: Caffe-trained nets such as TSN's BN-Inception
#: (tsn-pytorch ``input_mean=[104, 117, 128]``, ``input_std=[1]``, BGR, 0-255) and the Caffe
#: ClarifaiNets; ``"activitynet"``: Hara et al.'s 3D-ResNets and MARS (RGB, 0-255, minus the
#: ActivityNet mean, std 1).
RGB_NORMS: dict[str, tuple[str, float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ("rgb", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe_bgr": ("bgr", 1.0, (104.0, 117.0, 128.0), (1.0, 1.0, 1.0)),
    "activitynet": ("rgb", 1.0, (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)),
}


def _rgb_norm(x: Tensor, convention: str) -> tuple[str, float, Tensor, Tensor]:
    if convention not in RGB_NORMS:
        raise ValueError(
            f"RGB normalisation must be one of {sorted(RGB_NORMS)}, got {convention!r}"
        )
    if x.dim() < 3 or x.shape[-3] % 3:
        raise ValueError(f"expected RGB stacks (..., 3K, H, W), got shape {tuple(x.shape)}")
    order, scale, mean, std = RGB_NORMS[convention]
    k = x.shape[-3] // 3
    mean_t = torch.tensor(mean * k, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std_t = torch.tensor(std * k, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return order, scale, mean_t, std_t


def _swap_rb(x: Tensor) -> Tensor:
    """RGB <-> BGR of every frame of a ``(..., 3K, H, W)`` stack."""
    shape = x.shape
    return x.reshape(*shape[:-3], -1, 3, *shape[-2:]).flip(-3).reshape(shape)


def normalize_rgb(x: Tensor, convention: str = "imagenet", *, inplace: bool = False) -> Tensor:
    """0-255 RGB stacks -> the network's input convention (one of :data:`RGB_NORMS`).

    Args:
        x: ``(..., 3K, H, W)`` RGB frames (``K`` stacked), values 0-255 (any dtype).
        convention: the weights' convention (a backbone's ``input_norm``).
        inplace: overwrite ``x`` (float32) with the result (the same values, no
            temporaries; BGR conventions still copy to swap the channels).

    Returns:
        float32 ``(..., 3K, H, W)``, channels in the convention's order (BGR for Caffe).
    """
    order, scale, mean, std = _rgb_norm(x, convention)
    if not inplace:
        x = x.float()
        x = _swap_rb(x) if order == "bgr" else x
        return (x * scale - mean) / std
    _check_inplace(x)
    x = _swap_rb(x) if order == "bgr" else x  # a copy: the channels cannot swap in place
    return x.mul_(scale).sub_(mean).div_(std)


def _check_inplace(x: Tensor) -> None:
    if x.dtype != torch.float32:
        raise ValueError(f"inplace normalisation needs a float32 tensor, got {x.dtype}")


def denormalize_rgb(x: Tensor, convention: str = "imagenet") -> Tensor:
    """The inverse of :func:`normalize_rgb`, to RGB in ``[0, 1]`` (clamped), ``x``'s dtype."""
    order, scale, mean, std = _rgb_norm(x, convention)
    y = (x * std.to(x.dtype) + mean.to(x.dtype)) / (scale * 255)
    if order == "bgr":
        y = _swap_rb(y)
    return y.clamp(0, 1)
