"""Colouring of motion fields (Middlebury colour wheel) and PNG output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


def _color_wheel() -> np.ndarray:
    # Baker et al., "A Database and Evaluation Methodology for Optical Flow": 55 hues in six
    # ranges (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6).
    ranges = [(15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
              (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
              (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0))]  # fmt: skip
    cols = []
    for n, a, b in ranges:
        t = np.arange(n, dtype=np.float64)[:, None] / n
        ramp = np.floor(255 * t) / 255  # the reference code's integer ramps
        cols.append(np.asarray(a, np.float64) * (1 - ramp) + np.asarray(b, np.float64) * ramp)
    return np.concatenate(cols, 0)  # (55, 3)


_WHEEL = _color_wheel()


def flow_to_color(flow: Tensor | np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Colour a motion field with the Middlebury wheel: hue = direction, saturation = length.

    Args:
        flow: ``(2, H, W)`` or ``(H, W, 2)`` field in pixels (x right, y down).
        max_norm: the length that maps to full saturation; default the field's largest length.

    Returns:
        ``(H, W, 3)`` uint8 RGB image. Zero motion is white.
    """
    f = flow.detach().cpu().float().numpy() if isinstance(flow, Tensor) else np.asarray(flow)
    if f.ndim != 3 or 2 not in (f.shape[0], f.shape[-1]):
        raise ValueError(f"flow_to_color: expected (2, H, W) or (H, W, 2), got shape {f.shape}")
    if f.shape[0] == 2 and f.shape[-1] != 2:
        f = np.moveaxis(f, 0, -1)
    u, v = f[..., 0].astype(np.float64), f[..., 1].astype(np.float64)
    bad = ~np.isfinite(u) | ~np.isfinite(v)
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    rad = np.sqrt(u * u + v * v)
    norm = float(rad.max()) if max_norm is None else float(max_norm)
    if norm > 0:
        u, v, rad = u / norm, v / norm, rad / norm
    ncols = len(_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % ncols
    w = (fk - k0)[..., None]
    col = (1 - w) * _WHEEL[k0] / 255 + w * _WHEEL[k1] / 255
    r = np.clip(rad, 0, 1)[..., None]
    col = np.where(rad[..., None] <= 1, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255 * col + 0.5).astype(np.uint8)
    out[bad] = 0
    return out


def save_png(image: np.ndarray | Tensor, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` / ``(H, W)`` uint8 image as PNG, atomically (temp file + rename)."""
    from PIL import Image

    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png: expected a uint8 image, got {arr.dtype}")
    from ._io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


__all__ = ["flow_to_color", "save_png"]
