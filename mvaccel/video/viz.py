"""Pictures of motion-vector fields: Middlebury colours and arrows over a frame."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def to_color(mv: Tensor | np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Colour motion vectors with the Middlebury wheel (hue = direction, saturation = length).

    Args:
        mv: ``(2, H, W)`` or ``(T, 2, H, W)`` vectors in pixels (x right, y down).
        max_norm: length of full saturation; default the largest length (over all frames).

    Returns:
        ``(H, W, 3)`` or ``(T, H, W, 3)`` uint8 RGB; zero motion is white.
    """
    from ..viz import flow_to_color

    a = _np(mv).astype(np.float32)
    if a.ndim == 3:
        return flow_to_color(a, max_norm)
    if a.ndim != 4 or a.shape[1] != 2:
        raise ValueError(f"to_color: expected (2, H, W) or (T, 2, H, W), got {a.shape}")
    if max_norm is None:
        max_norm = float(np.sqrt((a**2).sum(1)).max()) or 1.0
    return np.stack([flow_to_color(f, max_norm) for f in a])


def _line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.clip(np.round(np.linspace(x0, x1, n + 1)).astype(int), 0, img.shape[1] - 1)
    ys = np.clip(np.round(np.linspace(y0, y1, n + 1)).astype(int), 0, img.shape[0] - 1)
    img[ys, xs] = color


def draw_arrows(
    image: Tensor | np.ndarray | None,
    mv: Tensor | np.ndarray,
    block: int,
    *,
    step: int = 1,
    scale: float = 1.0,
    color: tuple[int, int, int] = (255, 32, 32),
    min_length: float = 0.25,
) -> np.ndarray:
    """Draw each block's motion as an arrow over a frame.

    The arrow goes from where the block's content was in the reference frame
    (``centre + mv``) to the block's centre: the direction the content moved.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)`` uint8 frame, or None for a grey canvas of the
            grid's size.
        mv: ``(2, Hb, Wb)`` block vectors in pixels (``src - dst``).
        block: cell size in pixels.
        step: draw every ``step``-th cell in each direction.
        scale: arrow length multiplier.
        color: RGB of the arrows.
        min_length: shorter vectors get a dot only.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    v = _np(mv)
    if v.ndim != 3 or v.shape[0] != 2:
        raise ValueError(f"draw_arrows: mv must be (2, Hb, Wb), got {v.shape}")
    hb, wb = v.shape[1:]
    if image is None:
        img = np.full((hb * block, wb * block, 3), 96, np.uint8)
    else:
        img = _np(image)
        if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
            img = np.moveaxis(img, 0, -1)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise ValueError(f"draw_arrows: image must be uint8 (3, H, W) or (H, W, 3), got "
                             f"{img.dtype} {img.shape}")  # fmt: skip
        img = np.ascontiguousarray(img).copy()
    col = np.asarray(color, np.uint8)
    for by in range(0, hb, step):
        for bx in range(0, wb, step):
            cx, cy = (bx + 0.5) * block - 0.5, (by + 0.5) * block - 0.5
            dx, dy = float(v[0, by, bx]) * scale, float(v[1, by, bx]) * scale
            if not (0 <= cx < img.shape[1] and 0 <= cy < img.shape[0]):
                continue
            img[int(round(cy)), int(round(cx))] = col
            length = float(np.hypot(dx, dy))
            if length < min_length:
                continue
            sx, sy = cx + dx, cy + dy
            _line(img, sx, sy, cx, cy, col)
            # Head: two short strokes back from the centre.
            ux, uy = (sx - cx) / length, (sy - cy) / length
            head = min(3.0, 0.4 * length + 1)
            for s in (0.5, -0.5):
                hx = ux * np.cos(s) - uy * np.sin(s)
                hy = ux * np.sin(s) + uy * np.cos(s)
                _line(img, cx, cy, cx + head * hx, cy + head * hy, col)
    return img


def save_arrows(
    path: str | os.PathLike,
    image: Tensor | np.ndarray | None,
    mv: Tensor | np.ndarray,
    block: int,
    **kwargs,
) -> Path:
    """:func:`draw_arrows` written as a PNG (atomically). Returns the path."""
    from ..viz import save_png

    return save_png(draw_arrows(image, mv, block, **kwargs), path)


__all__ = ["draw_arrows", "save_arrows", "to_color"]
