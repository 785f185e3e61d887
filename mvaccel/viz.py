"""Pictures of motion: one colouring function, arrows, and keyed side-by-side figures.

- :func:`flow_to_image`: the Middlebury colour wheel (hue = direction, saturation = length),
  torchvision's convention (``(2, H, W)`` / ``(N, 2, H, W)`` tensor in, ``(3, H, W)`` /
  ``(N, 3, H, W)`` uint8 tensor out, like ``torchvision.utils.flow_to_image``); numpy
  ``(H, W, 2)`` / ``(2, H, W)`` in gives numpy ``(H, W, 3)`` out.
- :func:`draw_motion`: one panel: a field's colours (or a frame) with white, dark-outlined
  arrows whose density, width and length scale with the frame, and intra blocks (no vector)
  grey and hatched instead of looking like zero motion.
- :func:`motion_figure`: panels side by side, each titled, with ONE colour-wheel key holding the
  scale (``max_norm`` in pixels) and notes (e.g. MV-vs-flow :func:`agreement`) under it.
- :func:`compare_frame`: what ``mvaccel viz`` draws for a frame of a video: the decoded frame,
  the block motion vectors, CoViAR's accumulated motion and residual, TV-L1 flow in the vectors'
  direction, optionally TVNet's and a DMC-Net generator's flow.
- :func:`confusion_figure`, :func:`accuracy_fps_figure`: the demo's plots.

Figures are matplotlib (the optional extra ``mvaccel[viz]``), drawn with the Agg backend on
:class:`matplotlib.figure.Figure` objects (no pyplot state, no display needed).

Direction conventions (README, "Conventions"): a motion vector is ``src - dst`` (a block's
content is found at ``x + mv`` in the reference frame), and the flow drawn beside it is
``tvl1(I_t, I_ref)``, the same direction. Colours show that vector as it is; arrows show where
the content went: from ``x + mv`` (where it was in the reference) to ``x``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# ---------------------------------------------------------------- colours


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


def _colorize(u: np.ndarray, v: np.ndarray, norm: float) -> np.ndarray:
    """``(..., 3)`` uint8 colours of components ``u``, ``v`` (px); full saturation at ``norm``."""
    bad = ~np.isfinite(u) | ~np.isfinite(v)
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    if norm > 0:
        u, v = u / norm, v / norm
    rad = np.sqrt(u * u + v * v)
    ncols = len(_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % ncols
    w = (fk - k0)[..., None]
    col = (1 - w) * _WHEEL[k0] / 255 + w * _WHEEL[k1] / 255
    r = np.clip(rad, 0, 1)[..., None]
    # Beyond max_norm: the full hue, darkened (Middlebury's out-of-range marking).
    col = np.where(rad[..., None] <= 1, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255 * col + 0.5).astype(np.uint8)
    out[bad] = 0
    return out


def _field_max(a: np.ndarray, channel_axis: int) -> float:
    n = np.sqrt((a.astype(np.float64) ** 2).sum(channel_axis))
    n = n[np.isfinite(n)]
    return float(n.max()) if n.size else 0.0


def flow_to_image(flow: Tensor | np.ndarray, max_norm: float | None = None) -> Tensor | np.ndarray:
    """Colour a motion field with the Middlebury wheel: hue = direction, saturation = length.

    The one colouring function of mvaccel (flows, motion vectors, DMC, TVNet output). Zero
    motion is white; a vector of length ``max_norm`` gets its full hue; longer ones are the
    full hue darkened by a quarter; non-finite vectors are black.

    Args:
        flow: a tensor ``(2, H, W)`` or ``(N, 2, H, W)`` (torchvision's convention), or a numpy
            array ``(H, W, 2)``, ``(2, H, W)`` or ``(N, 2, H, W)``; pixels, channel 0 = x
            (right), 1 = y (down).
        max_norm: the length in pixels of full saturation; default the largest finite length
            of the whole input (one scale for every image of a batch, unlike torchvision's
            per-image normalisation, so a batch stays comparable).

    Returns:
        For a tensor: ``(3, H, W)`` / ``(N, 3, H, W)`` uint8 tensor on the input's device.
        For a numpy array: ``(H, W, 3)`` / ``(N, H, W, 3)`` uint8 (what PIL and matplotlib
        take).

    Raises:
        ValueError: another shape, or ``max_norm <= 0``.
    """
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"flow_to_image: max_norm must be > 0 pixels, got {max_norm}")
    if isinstance(flow, Tensor):
        if flow.dim() not in (3, 4) or flow.shape[-3] != 2:
            raise ValueError(
                "flow_to_image: expected a (2, H, W) or (N, 2, H, W) tensor, got shape "
                f"{tuple(flow.shape)}"
            )
        a = flow.detach().cpu().double().numpy()
        norm = _field_max(a, -3) if max_norm is None else float(max_norm)
        img = _colorize(a[..., 0, :, :], a[..., 1, :, :], norm)  # (..., H, W, 3)
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(img, -1, -3))).to(flow.device)
    a = np.asarray(flow)
    if a.ndim == 3 and a.shape[-1] == 2 and a.shape[0] != 2:
        a = np.moveaxis(a, -1, 0)
    if a.ndim not in (3, 4) or a.shape[-3] != 2:
        raise ValueError(
            "flow_to_image: expected a numpy (H, W, 2), (2, H, W) or (N, 2, H, W) field, got "
            f"shape {a.shape}"
        )
    a = a.astype(np.float64)
    norm = _field_max(a, -3) if max_norm is None else float(max_norm)
    return _colorize(a[..., 0, :, :], a[..., 1, :, :], norm)


def color_wheel_key(size: int = 129, max_norm: float = 1.0) -> np.ndarray:
    """The colour key: ``(size, size, 4)`` uint8 RGBA disc of radius ``max_norm`` (x right, y down).

    Pixel ``(i, j)`` holds the colour of the vector from the centre to it, so the disc's edge is
    ``max_norm`` pixels; outside the disc is transparent.
    """
    c = np.linspace(-max_norm, max_norm, size)
    v, u = np.meshgrid(c, c, indexing="ij")
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = _colorize(u, v, max_norm)
    rgba[..., 3] = np.where(u * u + v * v <= max_norm * max_norm * 1.0001, 255, 0)
    return rgba


def save_png(image: np.ndarray | Tensor, path: str | os.PathLike) -> Path:
    """Write a uint8 image as PNG, atomically (temp file + rename).

    Args:
        image: ``(H, W, 3)``, ``(H, W)`` numpy or ``(3, H, W)`` tensor (as :func:`flow_to_image`
            returns), uint8.
        path: destination.
    """
    from PIL import Image

    if isinstance(image, Tensor):
        arr = image.detach().cpu().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = np.moveaxis(arr, 0, -1)
    else:
        arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png: expected a uint8 image, got {arr.dtype}")
    from ._io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr).save(
            tmp, format="PNG"
        )
    return path


# ---------------------------------------------------------------- matplotlib


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "mvaccel's figures need matplotlib: pip install 'mvaccel[viz]' (or matplotlib)"
        ) from None
    return matplotlib


def new_figure(width: float, height: float, dpi: int = 100):
    """A :class:`matplotlib.figure.Figure` on an Agg canvas (no pyplot, no display).

    Args:
        width: inches.
        height: inches.
        dpi: dots per inch of :func:`figure_to_array` and :func:`save_figure`.
    """
    _mpl()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a figure: ``(H, W, 3)`` uint8 RGB at the figure's size and dpi."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write a figure as PNG atomically (``mvaccel._io.atomic_path``); returns the path."""
    from ._io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return path


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _hwc_u8(image, fn: str) -> np.ndarray:
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3) or img.dtype != np.uint8:
        raise ValueError(f"{fn}: image must be uint8 (3, H, W) or (H, W, 3), got {img.dtype} "
                         f"{img.shape}")  # fmt: skip
    return np.repeat(img, 3, -1) if img.shape[-1] == 1 else img


def _chw_field(mv, fn: str) -> np.ndarray:
    v = _np(mv)
    if v.ndim == 3 and v.shape[-1] == 2 and v.shape[0] != 2:
        v = np.moveaxis(v, -1, 0)
    if v.ndim != 3 or v.shape[0] != 2:
        raise ValueError(f"{fn}: a motion field must be (2, H, W), got shape {v.shape}")
    return v.astype(np.float64)


def cell_means(flow: Tensor | np.ndarray, block: int) -> np.ndarray:
    """``(2, H, W)`` pixels -> ``(2, ceil(H / b), ceil(W / b))`` means over each ``b x b`` cell.

    Partial cells at the right and bottom edges average the pixels they hold.
    """
    f = _chw_field(flow, "cell_means")
    if block <= 1:
        return f
    h, w = f.shape[1:]
    hb, wb = -(-h // block), -(-w // block)
    pad = np.zeros((2, hb * block, wb * block))
    ones = np.zeros((hb * block, wb * block))
    pad[:, :h, :w], ones[:h, :w] = f, 1
    s = pad.reshape(2, hb, block, wb, block).sum((2, 4))
    n = ones.reshape(hb, block, wb, block).sum((1, 3))
    return s / n


def _nice(x: float) -> float:
    """The largest of 1, 1.5, 2, 3, 4, 5, 7 x 10^k not above ``x``."""
    if x <= 0 or not math.isfinite(x):
        return 1.0
    e = math.floor(math.log10(x))
    for m in (7, 5, 4, 3, 2, 1.5, 1):
        if m * 10**e <= x * (1 + 1e-9):
            return float(f"{m * 10**e:.6g}")
    return float(10**e)


def arrow_layout(height: int, width: int, block: int, target: int = 22, least: int = 16) -> int:
    """Cells per arrow: about ``target`` arrows span the longer side, ``least`` px apart at least.

    The spacing grows with the frame, so arrows stay legible at any size.
    """
    cells = max(-(-height // block), -(-width // block))
    return max(1, math.ceil(cells / target), math.ceil(least / block))


def arrow_field(
    field: np.ndarray, valid: np.ndarray | None, block: int, step: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vectors arrows show: ``field`` averaged over groups of ``step x step`` cells.

    Args:
        field: ``(2, Hb, Wb)`` pixels, one vector per ``block x block`` cell.
        valid: ``(Hb, Wb)`` bool, cells with a vector (others are left out of the means).
        block: cell size in pixels.
        step: cells per group side.
        size: ``(H, W)`` of the frame.

    Returns:
        ``(vectors (2, Gh, Gw), ok (Gh, Gw), cx, cy)``: the group means, whether a group holds
        any vector, and the centres in pixels of the part of each group inside the frame.
    """
    h, w = size
    hb, wb = field.shape[1:]
    valid = np.ones((hb, wb), bool) if valid is None else np.asarray(valid, bool)
    gh, gw = -(-hb // step), -(-wb // step)
    f = np.zeros((2, gh * step, gw * step))
    m = np.zeros((gh * step, gw * step))
    ok_cells = valid & np.isfinite(field).all(0)
    f[:, :hb, :wb] = np.where(ok_cells, field, 0)
    m[:hb, :wb] = ok_cells
    s = f.reshape(2, gh, step, gw, step).sum((2, 4))
    n = m.reshape(gh, step, gw, step).sum((1, 3))
    vec = s / np.maximum(n, 1)
    g = block * step
    x0, y0 = np.arange(gw) * g, np.arange(gh) * g
    cx = (x0 + np.minimum(x0 + g, w)) / 2 - 0.5
    cy = (y0 + np.minimum(y0 + g, h)) / 2 - 0.5
    cy, cx = np.meshgrid(cy, cx, indexing="ij")
    return vec, (n > 0) & (cx < w) & (cy < h), cx, cy


def arrow_gain(fields: Sequence[np.ndarray], spacing: float, masks=None) -> float:
    """Arrow length per pixel of motion, from the moving vectors' median and 95th percentile.

    One gain for all panels of a figure (so their arrows compare), rounded down to a round
    number.
    """
    lengths = []
    for i, f in enumerate(fields):
        n = np.sqrt((np.asarray(f, np.float64) ** 2).sum(0))
        if masks is not None and masks[i] is not None:
            n = n[np.asarray(masks[i], bool)]
        n = n[np.isfinite(n)]
        if n.size:
            lengths.append(n.ravel())
    if not lengths:
        return 1.0
    n = np.concatenate(lengths)
    n = n[n >= 0.25]  # still cells get no arrow
    if not n.size:
        return 1.0
    # The typical moving vector ~0.6 spacing long, the longest few at most one spacing.
    mid, top = float(np.median(n)), float(np.percentile(n, 95))
    return _nice(min(0.6 * spacing / mid, spacing / top))


def _intra_runs(intra: np.ndarray):
    """Horizontal runs ``(row, start, length)`` of True cells."""
    for r, row in enumerate(intra):
        c = 0
        while c < len(row):
            if row[c]:
                s = c
                while c < len(row) and row[c]:
                    c += 1
                yield r, s, c - s
            else:
                c += 1


def draw_motion(
    ax,
    field: Tensor | np.ndarray | None,
    *,
    block: int = 1,
    max_norm: float,
    image: Tensor | np.ndarray | None = None,
    mask: Tensor | np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    arrows: bool = True,
    gain: float | None = None,
    step: int | None = None,
    forward: bool = False,
) -> dict:
    """Draw one motion panel on a matplotlib axes.

    The background is ``image`` if given, else the field's colours (:func:`flow_to_image` at
    ``max_norm``). Cells where ``mask`` is False (intra blocks, I-frames: no vector) are grey
    and hatched. Arrows (white, dark outline) are drawn at every ``step``-th cell's centre, from
    ``centre + gain * v`` to the centre: where the content went. Their spacing, width and length
    scale with the frame, so they read the same on 17x13 and 1920x1080.

    Args:
        ax: matplotlib axes.
        field: ``(2, Hb, Wb)`` block vectors (or ``(2, H, W)`` with ``block=1``), pixels, the
            ``src - dst`` direction; None draws the image alone.
        block: cell size in pixels.
        max_norm: colour saturation length in pixels.
        image: ``(3, H, W)`` / ``(H, W, 3)`` uint8 background, or None.
        mask: ``(Hb, Wb)`` bool, True where a vector exists; None: everywhere.
        size: ``(H, W)`` of the frame (default: the image's, else the grid's times ``block``).
        arrows: draw arrows.
        gain: arrow length per pixel of motion (default :func:`arrow_gain`).
        step: cells between arrows (default :func:`arrow_layout`); a dense field
            (``block=1``) is averaged over each arrow's cell first.
        forward: the field is a forward flow (``tvl1(I_t, I_t+1)``: content at ``x`` moves to
            ``x + v``), so arrows run from the centre to ``centre + gain * v``. Default: the
            vectors' direction (content at ``x`` came from ``x + v``).

    Returns:
        ``{"gain": ..., "step": ..., "intra": cells without vector}``.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    img = None if image is None else _hwc_u8(image, "draw_motion")
    v = None if field is None else _chw_field(field, "draw_motion")
    if size is None:
        size = img.shape[:2] if img is not None else (v.shape[1] * block, v.shape[2] * block)
    h, w = int(size[0]), int(size[1])
    if img is None and v is not None:
        col = flow_to_image(v, max_norm)
        img = np.repeat(np.repeat(col, block, 0), block, 1)[:h, :w]
    if img is None:
        img = np.full((h, w, 3), 255, np.uint8)
    ax.imshow(img, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    info = {"gain": gain, "step": step, "intra": 0}
    if v is None:
        return info
    hb, wb = v.shape[1:]
    valid = np.ones((hb, wb), bool) if mask is None else _np(mask).astype(bool)
    if valid.shape != (hb, wb):
        raise ValueError(f"draw_motion: mask {valid.shape} does not match the grid {(hb, wb)}")
    intra = ~valid
    info["intra"] = int(intra.sum())
    if intra.any():
        over = np.zeros((hb, wb, 4))
        # Over colours: grey fill; over a frame: a light veil, so the content stays visible.
        over[intra] = (0.55, 0.55, 0.55, 0.85) if image is None else (1, 1, 1, 0.25)
        ax.imshow(over, interpolation="nearest",
                  extent=(-0.5, wb * block - 0.5, hb * block - 0.5, -0.5))  # fmt: skip
        rects = [Rectangle((s * block - 0.5, r * block - 0.5), n * block, block)
                 for r, s, n in _intra_runs(intra)]  # fmt: skip
        ax.add_collection(PatchCollection(
            rects, facecolor="none", edgecolor="0.2", linewidth=0,
            hatch="////" if image is None else "//", alpha=None if image is None else 0.6,
        ))  # fmt: skip
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    if not arrows:
        return info
    # Arrows on a coarser grid: ~22 across the longer side, the cells of a group averaged.
    step = step or arrow_layout(h, w, block)
    av, ok, cx, cy = arrow_field(v, valid, block, step, (h, w))
    spacing = block * step
    gain = gain or arrow_gain([av], spacing, [ok])
    # Still cells (< 0.25 px) get no arrow: the colour already says 'no motion'.
    moving = np.sqrt((av**2).sum(0)) >= 0.25
    keep = ok & moving & (cx < w) & (cy < h) & np.isfinite(av).all(0)
    if keep.any():
        sign = 1.0 if forward else -1.0
        width = max(0.1 * spacing, 0.5)
        ax.quiver(
            cx[keep], cy[keep], sign * av[0][keep] * gain, sign * av[1][keep] * gain,
            angles="xy", scale_units="xy", scale=1, pivot="tail" if forward else "tip",
            units="xy", width=width,
            headwidth=3.2, headlength=3.5, headaxislength=3, minlength=0.1,
            color="white", edgecolor="black", linewidth=0.6, zorder=3,
        )  # fmt: skip
    info.update(gain=gain, step=step)
    return info


# ---------------------------------------------------------------- figures


@dataclass
class Panel:
    """One panel of :func:`motion_figure`.

    Attributes:
        title: what it shows, the frame index and type, units.
        field: ``(2, Hb, Wb)`` block vectors / ``(2, H, W)`` flow in pixels, or None.
        block: cell size of ``field`` in pixels (1: dense).
        image: ``(3, H, W)`` / ``(H, W, 3)`` uint8 background instead of the colours, or None.
        mask: ``(Hb, Wb)`` bool, False for cells without a vector (hatched).
        arrows: draw arrows over it.
        note: a line drawn across the panel (e.g. "I-frame: no motion vectors").
        shared_arrows: its arrows use the figure's common gain (False: a gain of its own,
            written in its title; for fields of another magnitude, such as accumulated MV).
        forward: the field is a forward flow (see :func:`draw_motion`).
    """

    title: str
    field: Tensor | np.ndarray | None = None
    block: int = 1
    image: Tensor | np.ndarray | None = None
    mask: Tensor | np.ndarray | None = None
    arrows: bool = True
    note: str = ""
    shared_arrows: bool = True
    forward: bool = False


def robust_max(fields: Sequence, masks: Sequence | None = None, q: float = 99.0) -> float:
    """The colour scale of a figure: the largest ``q``-th percentile length over the fields (px).

    A few outlier vectors (H.264 vectors into a far reference) would otherwise wash every colour
    out. At least 0.5 px, so still frames are not amplified noise.
    """
    top = 0.0
    for i, f in enumerate(fields):
        if f is None:
            continue
        n = np.sqrt((_chw_field(f, "robust_max") ** 2).sum(0))
        if masks is not None and masks[i] is not None:
            n = n[_np(masks[i]).astype(bool)]
        n = n[np.isfinite(n)]
        if n.size:
            top = max(top, float(np.percentile(n, q)))
    return max(top, 0.5)


def motion_figure(
    panels: Sequence[Panel],
    max_norm: float,
    *,
    notes: Sequence[str] = (),
    title: str = "",
    ncols: int | None = None,
    panel_width: float = 4.2,
    dpi: int = 100,
    intra_legend: bool = True,
):
    """Panels side by side with one shared colour-wheel key (scale ``max_norm`` px) and notes.

    All panels share ``max_norm`` and one arrow gain, so colours and arrow lengths compare
    across panels. The key (last column) is the wheel with its radius in pixels, a legend of
    the hatching, and ``notes`` printed under it.

    Args:
        panels: what to draw (:class:`Panel`); each at its own size (the layout follows the
            largest).
        max_norm: colour saturation length in pixels (see :func:`robust_max`).
        notes: lines under the key (agreement numbers, what arrows show).
        title: the figure's title (video, frame).
        ncols: panels per row (default: up to 4).
        panel_width: inches per panel.
        dpi: of the rendering.
        intra_legend: explain the hatching under the key.

    Returns:
        A :class:`matplotlib.figure.Figure` (save with :func:`save_figure`, render with
        :func:`figure_to_array`).
    """
    from matplotlib.patches import Patch

    if not panels:
        raise ValueError("motion_figure: no panels")
    sizes = []
    for p in panels:
        if p.image is not None:
            sizes.append(_hwc_u8(p.image, "motion_figure").shape[:2])
        elif p.field is not None:
            f = _chw_field(p.field, "motion_figure")
            sizes.append((f.shape[1] * p.block, f.shape[2] * p.block))
    h, w = sizes[0] if sizes else (1, 1)
    n = len(panels)
    ncols = ncols or math.ceil(n / math.ceil(n / 4))
    nrows = math.ceil(n / ncols)
    # Rows as tall as the tallest panel (each keeps its own aspect), room for 2-line titles.
    aspect = max((a / max(b, 1) for a, b in sizes), default=1.0)
    ph = panel_width * min(max(aspect, 0.3), 2.5)
    key_w = max(2.6, 0.65 * panel_width)
    fig_w = ncols * panel_width + key_w + 0.4
    head, gap = (0.45 if title else 0.0), 0.5
    fig_h = max(head + nrows * (ph + gap) + 0.1, 4.4)
    ph = (fig_h - head - 0.1) / nrows - gap
    fig = new_figure(fig_w, fig_h, dpi)
    gs = fig.add_gridspec(nrows, ncols + 1, width_ratios=[panel_width] * ncols + [key_w],
                          left=0.01, right=0.99, bottom=0.1 / fig_h,
                          top=1 - (head + gap) / fig_h, wspace=0.06,
                          hspace=gap / ph)  # fmt: skip
    # One arrow spacing (from the first field's grid) and one gain for all panels.
    spacing, arrowed, arrowed_masks = None, [], []
    for p in panels:
        if p.field is not None and p.arrows:
            f = _chw_field(p.field, "motion_figure")
            if spacing is not None and not p.shared_arrows:
                continue
            fh, fw = f.shape[1] * p.block, f.shape[2] * p.block
            if spacing is None:
                spacing = arrow_layout(fh, fw, p.block) * p.block
            step = max(1, round(spacing / p.block))
            av, ok, _, _ = arrow_field(f, None if p.mask is None else _np(p.mask), p.block,
                                       step, (fh, fw))  # fmt: skip
            arrowed.append(av)
            arrowed_masks.append(ok)
    gain = arrow_gain(arrowed, spacing, arrowed_masks) if arrowed else None
    for i, p in enumerate(panels):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        step = None
        if spacing is not None and p.field is not None:
            step = max(1, round(spacing / p.block))
        got = draw_motion(ax, p.field, block=p.block, max_norm=max_norm, image=p.image,
                          mask=p.mask, arrows=p.arrows, step=step,
                          size=None if p.image is not None or p.field is not None else (h, w),
                          gain=gain if p.shared_arrows else None, forward=p.forward)  # fmt: skip
        own = not p.shared_arrows and p.arrows and p.field is not None
        ax.set_title(p.title + (f", arrows x{got['gain']:g}" if own else ""), fontsize=10)
        if p.note:
            ax.text(0.5, 0.5, p.note, transform=ax.transAxes, ha="center", va="center",
                    fontsize=10, color="black",
                    bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))  # fmt: skip
    side = gs[:, ncols].subgridspec(2, 1, height_ratios=[1, 1.15], hspace=0.25)
    key = fig.add_subplot(side[0])
    key.imshow(color_wheel_key(129, max_norm), extent=(-max_norm, max_norm, max_norm, -max_norm),
               interpolation="bilinear")  # fmt: skip
    key.set_title(f"colour key (all panels)\nfull colour at |v| = {max_norm:.2f} px", fontsize=10)
    key.set_xlabel("px (x right, y down)", fontsize=9)
    key.tick_params(labelsize=8)
    key.set_aspect("equal")
    text = fig.add_subplot(side[1])
    text.set_axis_off()
    lines = list(notes)
    if gain is not None:
        lines.insert(0, f"arrows: where content went,\nlength x{gain:g}")
    top = 1.0
    if intra_legend:
        hatch = Patch(facecolor="0.55", edgecolor="0.2", hatch="////", label="no vector (intra)")
        text.legend(handles=[hatch], loc="upper center", fontsize=8.5, frameon=False)
        top = 0.88
    text.text(0.5, top, "\n".join(lines), transform=text.transAxes, ha="center", va="top",
              fontsize=8.5, linespacing=1.3)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.1 / fig_h, va="top")
    return fig


def agreement(
    mv: Tensor | np.ndarray,
    flow: Tensor | np.ndarray,
    block: int,
    mask: Tensor | np.ndarray | None = None,
    min_length: float = 0.5,
) -> dict:
    """How well block motion vectors agree with a dense flow of the same frame and direction.

    The flow is averaged over each block (the vectors' support), then compared on the blocks
    that have a vector (``mask`` True: intra blocks and I-frames have none).

    Args:
        mv: ``(2, Hb, Wb)`` block vectors in pixels.
        flow: ``(2, H, W)`` flow in pixels, the same direction (``tvl1(I_t, I_ref)``).
        block: cell size in pixels.
        mask: ``(Hb, Wb)`` bool, True where a vector exists (None: all).
        min_length: the cosine only counts blocks where both vectors are longer (pixels):
            the direction of a still block is noise.

    Returns:
        ``{"blocks": n, "moving": m, "cosine": mean cosine over the m moving blocks,
        "epe": mean |mv - flow| over the n blocks (px)}``; NaN where a count is 0.
    """
    m = _chw_field(mv, "agreement")
    f = cell_means(flow, block)[:, : m.shape[1], : m.shape[2]]
    if f.shape != m.shape:
        raise ValueError(f"agreement: the flow's {f.shape[1:]} blocks do not cover the vectors' "
                         f"grid {m.shape[1:]}")  # fmt: skip
    valid = np.ones(m.shape[1:], bool) if mask is None else _np(mask).astype(bool)
    valid = valid & np.isfinite(m).all(0) & np.isfinite(f).all(0)
    nm, nf = np.sqrt((m**2).sum(0)), np.sqrt((f**2).sum(0))
    moving = valid & (nm > min_length) & (nf > min_length)
    cos = (m * f).sum(0) / np.maximum(nm * nf, 1e-12)
    epe = np.sqrt(((m - f) ** 2).sum(0))
    return {
        "blocks": int(valid.sum()),
        "moving": int(moving.sum()),
        "cosine": float(cos[moving].mean()) if moving.any() else float("nan"),
        "epe": float(epe[valid].mean()) if valid.any() else float("nan"),
    }


def format_agreement(name: str, a: dict) -> str:
    """One line of :func:`agreement`'s numbers."""
    if not a["blocks"]:
        return f"{name}: no blocks with a vector"
    cos = f"{a['cosine']:.2f}" if a["moving"] else "n/a"
    return (f"{name} on {a['blocks']} non-intra blocks:\n"
            f"mean cos {cos} ({a['moving']} moving), EPE {a['epe']:.2f} px")  # fmt: skip


def pick_frame(frame_type: Tensor, mv: Tensor, mask: Tensor) -> int:
    """The clip index of the P-frame (else B, else any) with the largest mean vector length."""
    types = _np(frame_type)
    n = (mv.norm(dim=1) * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
    for kind in (1, 2):
        idx = np.flatnonzero(types == kind)
        if idx.size:
            return int(idx[int(n[torch.from_numpy(idx)].argmax())])
    return 0


def load_dmc_generator(path: str | os.PathLike):
    """A DMC-Net checkpoint's generator and the input mapping it was trained with.

    Args:
        path: a ``DMCNet`` Lightning checkpoint (``mvaccel train`` / the demo's ``dmc_net``).

    Returns:
        ``(generator, bound, motion_std, smooth_block, accumulate)``; the generator in eval
        mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no generator weights in it.
    """
    import inspect

    from .nn.dmcnet import GROWTH, DMCGenerator

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--dmc: no such checkpoint: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    gen = {k[len("generator.") :]: v for k, v in state.items() if k.startswith("generator.")}
    if not gen:
        raise ValueError(f"--dmc: {path} holds no DMC-Net generator weights (generator.*)")
    hp = dict(ckpt.get("hyper_parameters", {}))
    dm = dict(ckpt.get("datamodule_hyper_parameters", {}))
    if "bound" not in dm or "motion_std" not in dm:  # the data module's defaults
        from .train.data import VideoDataModule

        sig = inspect.signature(VideoDataModule).parameters
        dm = {k: sig[k].default for k in ("bound", "motion_std")} | dm
    g = DMCGenerator(2, 3, tuple(hp.get("growth", GROWTH)))
    g.load_state_dict(gen)
    return (g.eval(), float(dm["bound"]), float(dm["motion_std"]),
            int(hp.get("smooth_block", 0) or 0), bool(dm.get("accumulate", False)))  # fmt: skip


def dmc_flow(
    path: str | os.PathLike, mv: Tensor, residual: Tensor, block: int, *, loaded=None
) -> Tensor:
    """The DMC (generated flow) of one frame, in pixels.

    Args:
        path: DMC-Net checkpoint (:func:`load_dmc_generator`).
        mv: ``(2, Hb, Wb)`` block vectors in pixels (accumulated if the model was trained so).
        residual: ``(3, H, W)`` int16 residual.
        block: cell size of ``mv``.
        loaded: what :func:`load_dmc_generator` returned for ``path`` (not loaded again).

    Returns:
        ``(2, H, W)`` float32 pixels, the vectors' direction.
    """
    from .data.datasets import RESIDUAL_STD
    from .data.transforms import normalize_motion, normalize_residual
    from .nn.dmcnet import smooth_mv
    from .ops import block_upsample

    gen, bound, std, smooth, _ = loaded or load_dmc_generator(path)
    h, w = residual.shape[-2:]
    dense = block_upsample(mv[None].float(), block, (h, w), "nearest")
    x = normalize_motion(dense, bound, std)
    if smooth:
        x = smooth_mv(x, smooth)
    r = normalize_residual(residual[None], RESIDUAL_STD)  # the datasets' residual input
    with torch.no_grad():
        y = gen(x, r)[0]
    return ((y * std + 0.5) * 255.0 - 128.0) * (bound / 127.5)


def compare_frame(
    video: str | os.PathLike,
    frame: int | None = None,
    *,
    block: int = 8,
    preset: str = "fast",
    tvnet: bool = False,
    dmc: str | os.PathLike | None = None,
    backend: str = "auto",
    flow: Tensor | None = None,
    dpi: int = 100,
):
    """The side-by-side figure of one frame (what ``mvaccel viz`` writes).

    Panels: the decoded frame; its block motion vectors (colours and arrows, intra blocks
    hatched); CoViAR's accumulated motion (to the GOP's I-frame) and accumulated residual;
    TV-L1 flow ``tvl1(I_t, I_ref)`` from the frame to the reference its vectors point into
    (the past anchor: the previous I/P frame), the vectors' direction; optionally an untrained
    TVNet's flow of the same pair and a DMC-Net generator's flow. One colour key, shared scale,
    and the agreement of vectors and flow (:func:`agreement`) under the key.

    Args:
        video: a video file with motion vectors (H.264, MPEG-4 Part 2, ...).
        frame: display-order frame number; None picks the P-frame with the most motion.
        block: vector grid cell in pixels.
        preset: TV-L1 preset (:class:`mvaccel.flow.TVL1Params`).
        tvnet: add a TVNet-1-1-50 panel (untrained: the ``tvnet`` TV-L1 scheme).
        dmc: a DMC-Net checkpoint to add its generator's flow.
        backend: video reader backend.
        flow: a precomputed ``(2, H, W)`` flow of the frame in the vectors' direction instead of
            solving TV-L1 (e.g. the demo's teacher flow); its panel says so.
        dpi: of the figure.

    Returns:
        ``(figure, info)``: info holds ``frame``, ``frame_type``, ``ref``, ``max_norm`` and
        ``agreement`` (MV vs flow; see :func:`agreement`).
    """
    from . import video as vid
    from .flow import epe, tvl1

    path = Path(video)
    if frame is None:
        allc = vid.read_motion(path, block=block, fill_iframe="zero", backend=backend)
        frame = int(allc.frame_index[pick_frame(allc.frame_type, allc.mv, allc.mask)])
    total = vid.probe(path, backend=backend).num_frames
    if not 0 <= frame < total:
        raise ValueError(f"{path}: no frame {frame} (the video has {total} frames: 0..{total - 1})")
    head = vid.read_motion(path, frames=range(0, frame + 1), block=block, fill_iframe="zero",
                           backend=backend)  # fmt: skip
    types = _np(head.frame_type).astype(int)
    ftype = vid.FRAME_TYPES[int(types[frame])]
    anchors = [j for j in range(frame) if types[j] in (0, 1)]
    if ftype == "I":
        ref = frame - 1 if frame > 0 else None
    else:
        ref = anchors[-1] if anchors else frame - 1
    frames = sorted({frame} | ({ref} if ref is not None else set()))
    clip = vid.read_motion(path, frames=frames, block=block, residual=True, rgb="all",
                           fill_iframe="zero", backend=backend)  # fmt: skip
    k = frames.index(frame)
    rgb = clip.rgb[k]
    h, w = clip.size
    acc = vid.read_motion(path, frames=[frame], block=block, residual=True, accumulate=True,
                          backend=backend)  # fmt: skip
    mv, mask = clip.mv[k], clip.mask[k]
    if ftype == "I":
        mask = torch.zeros_like(mask)
    gop_start = max([j for j in range(frame + 1) if types[j] == 0], default=0)
    tag = f"frame {frame} ({ftype})"
    to = f"-> {ref}" if ref is not None else ""
    panels = [Panel(f"decoded {tag}\n{w}x{h} RGB", image=rgb)]
    panels.append(Panel(
        f"motion vectors, {tag} {to}\npx, {block}x{block} blocks, src - dst",
        field=mv, block=block, mask=mask,
        note="I-frame: no motion vectors" if ftype == "I" else "",
    ))  # fmt: skip
    panels.append(Panel(
        f"accumulated MV (CoViAR), {tag}\npx, traced back to I-frame {gop_start}",
        field=acc.mv[0], block=block, shared_arrows=False,
        note="I-frame: nothing to accumulate" if ftype == "I" else "",
    ))  # fmt: skip
    res = (acc.residual[0].int() + 128).clamp(0, 255).to(torch.uint8)
    panels.append(Panel(f"accumulated residual (CoViAR), {tag}\nRGB levels, grey = 0", image=res))
    fields, masks = [mv], [mask]
    notes: list[str] = []
    agree = None
    if ref is None:
        panels.append(Panel(f"TV-L1 flow, {tag}", note="first frame: no reference"))
    else:
        pair = (rgb[None], clip.rgb[frames.index(ref)][None])
        if flow is None:
            flow = tvl1(*pair, preset)[0]
            what = f"TV-L1 flow, {tag} {to}\npx, tvl1(I{frame}, I{ref}), '{preset}'"
        else:
            what = f"TV-L1 flow (given), {tag} {to}\npx, the vectors' direction"
        flow = torch.as_tensor(flow).float()
        panels.append(Panel(what, field=flow))
        fields.append(flow)
        masks.append(None)
        if ftype != "I":
            agree = agreement(mv, flow, block, mask)
            notes.append(format_agreement("MV vs TV-L1", agree))
        else:
            notes.append("MV vs TV-L1: n/a (I-frame)")
        if tvnet:
            from .nn import TVNet

            with torch.no_grad():
                tv = TVNet()(*pair)[0]
            panels.append(Panel(f"TVNet-1-1-50 flow (untrained), {tag} {to}\npx", field=tv))
            fields.append(tv)
            masks.append(None)
            notes.append(f"TVNet vs TV-L1: EPE {epe(tv[None], flow[None]):.2f} px")
    if dmc is not None:
        loaded = load_dmc_generator(dmc)
        accumulated = loaded[4]
        src = acc if accumulated else clip
        j = 0 if accumulated else k
        d = dmc_flow(dmc, src.mv[j], src.residual[j], block, loaded=loaded)
        name = f"{Path(dmc).parent.name}/{Path(dmc).name}"
        panels.append(Panel(f"DMC-Net generator flow, {tag}\npx ({name})", field=d))
        fields.append(d)
        masks.append(None)
        if ref is not None:
            notes.append(f"DMC vs TV-L1: EPE {epe(d[None], flow[None]):.2f} px")
    max_norm = robust_max(fields, masks)
    notes.append("accumulated MV on the same scale\n(darker: beyond the key)")
    fig = motion_figure(panels, max_norm, notes=notes, dpi=dpi,
                        title=f"{path.name}: {tag} of {w}x{h}, vectors and flow "
                              f"{'-> frame ' + str(ref) if ref is not None else ''}")  # fmt: skip
    info = {"frame": frame, "frame_type": ftype, "ref": ref, "max_norm": max_norm,
            "agreement": agree}  # fmt: skip
    return fig, info


def mv_figure(
    image: Tensor | np.ndarray,
    mv: Tensor | np.ndarray,
    block: int,
    *,
    mask: Tensor | np.ndarray | None = None,
    frame: int | None = None,
    frame_type: str = "",
    title: str = "",
    dpi: int = 100,
):
    """A frame with its vectors' arrows beside the vectors' colours, one key (``mvaccel mv --png``).

    Args:
        image: ``(3, H, W)`` / ``(H, W, 3)`` uint8 decoded frame.
        mv: ``(2, Hb, Wb)`` block vectors in pixels (``src - dst``).
        block: cell size in pixels.
        mask: ``(Hb, Wb)`` bool, False for intra blocks (hatched).
        frame: display-order number, for the titles.
        frame_type: ``"I"``, ``"P"`` or ``"B"``, for the titles.
        title: the figure's title.
        dpi: of the figure.
    """
    tag = f"frame {frame} ({frame_type})" if frame is not None else "frame"
    if frame_type == "I" and mask is not None:
        mask = np.zeros_like(_np(mask), bool)
    note = "I-frame: no motion vectors" if frame_type == "I" else ""
    panels = [
        Panel(
            f"{tag}, arrows: where content went", field=mv, block=block, image=image, mask=mask
        ),  # fmt: skip
        Panel(
            f"motion vectors, {tag}\npx, {block}x{block} blocks, src - dst",
            field=mv,
            block=block,
            mask=mask,
            note=note,
        ),  # fmt: skip
    ]
    return motion_figure(panels, robust_max([mv], [mask]), title=title, dpi=dpi)


def flow_figure(
    image: Tensor | np.ndarray,
    flow: Tensor | np.ndarray,
    *,
    what: str = "flow",
    forward: bool = False,
    title: str = "",
    dpi: int = 100,
):
    """A frame with a dense flow's arrows beside its colours, one key (``mvaccel flow --preview``).

    Args:
        image: ``(3, H, W)`` / ``(H, W, 3)`` / ``(H, W)`` uint8 frame the flow is defined on.
        flow: ``(2, H, W)`` pixels.
        what: the flow's description for the titles.
        forward: ``flow`` is ``tvl1(I_t, I_t+1)`` (content moves to ``x + flow``); default the
            vectors' direction ``tvl1(I_t, I_t-1)``.
        title: the figure's title.
        dpi: of the figure.
    """
    panels = [
        Panel(f"{what}\narrows over the frame", field=flow, image=image, forward=forward),
        Panel(f"{what}\npx, colour = direction", field=flow, forward=forward),
    ]
    return motion_figure(panels, robust_max([flow]), title=title, dpi=dpi, intra_legend=False)


def save_flow_preview(
    path: str | os.PathLike,
    src,
    index: int,
    flow: Tensor | np.ndarray,
    *,
    backward: bool = False,
    title: str = "",
) -> Path:
    """``mvaccel flow --preview``: one pair's flow over its frame, as a keyed PNG (atomically).

    Args:
        path: the PNG to write.
        src: the video / frame folder / frames the flow was computed from (what
            :func:`mvaccel.flow.flow_video` takes).
        index: 0-based number of the pair: frames ``index`` and ``index + 1``.
        flow: ``(2, H, W)`` pixels: ``tvl1(I[index], I[index + 1])``, or with ``backward``
            ``tvl1(I[index + 1], I[index])`` (the motion vectors' direction).
        backward: which of the two.
        title: the figure's title.
    """
    import itertools

    from .flow.video import iter_frames

    on = index + 1 if backward else index
    frame = next(itertools.islice(iter_frames(src), on, on + 1), None)
    if frame is None:
        raise ValueError(f"save_flow_preview: {src} has no frame {on}")
    what = f"tvl1(I{index + 1}, I{index})" if backward else f"tvl1(I{index}, I{index + 1})"
    fig = flow_figure(frame, flow, what=f"TV-L1 flow {what}, frame {on}", forward=not backward,
                      title=title)  # fmt: skip
    return save_figure(fig, path)


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str = "", dpi: int = 100):
    """A confusion matrix: rows = true class, columns = predicted, class names on both axes.

    Cells are coloured by the fraction of the true class (row-normalised) and hold the count.

    Args:
        cm: ``(K, K)`` counts, ``cm[i, j]`` = videos of class i predicted as j.
        classes: the K class names.
        title: above the matrix.
        dpi: of the figure.
    """
    cm = np.asarray(cm)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion_figure: {cm.shape} counts for {k} classes")
    side = max(4.5, 0.55 * k + 2.5)
    fig = new_figure(side + 1.0, side, dpi)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                        color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(k), [str(c) for c in classes], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (counts; colour = fraction of the true class)",
                 fontsize=10)  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def accuracy_fps_figure(points: Sequence[tuple[str, float, float]], title: str = "",
                        dpi: int = 100):  # fmt: skip
    """Accuracy against end-to-end speed, one labelled marker per method.

    Args:
        points: ``(method, top-1 accuracy in [0, 1], frames/s)`` per method.
        title: above the plot.
        dpi: of the figure.
    """
    if not points:
        raise ValueError("accuracy_fps_figure: no methods")
    fig = new_figure(9.5, 5.0, dpi)
    ax = fig.add_axes((0.08, 0.11, 0.5, 0.8))
    markers = "osD^vP*Xh<>p"
    cmap = _mpl().colormaps["tab20"]
    for i, (name, top1, fps) in enumerate(points):
        ax.scatter([fps], [100 * top1], s=60, marker=markers[i % len(markers)],
                   color=cmap(i % 20), edgecolor="black", linewidth=0.5, label=name,
                   zorder=3)  # fmt: skip
    if max(p[2] for p in points) / max(min(p[2] for p in points), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("frames/s, end to end (motion + network)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "accuracy vs speed of every method", fontsize=11)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8.5, frameon=False)
    return fig


def draw_arrows(
    image: Tensor | np.ndarray | None,
    mv: Tensor | np.ndarray,
    block: int,
    *,
    mask: Tensor | np.ndarray | None = None,
    step: int | None = None,
    gain: float | None = None,
) -> np.ndarray:
    """Arrows of block motion over a frame, rendered at the frame's size.

    Each arrow runs from ``centre + gain * mv`` (where the block's content was in the reference)
    to the block's centre: the direction the content moved. White with a dark outline, width and
    density scaled with the frame; intra cells (``mask`` False) grey and hatched.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)`` uint8 frame, or None for a grey canvas of the
            grid's size.
        mv: ``(2, Hb, Wb)`` block vectors in pixels (``src - dst``).
        block: cell size in pixels.
        mask: ``(Hb, Wb)`` bool, True where a vector exists.
        step: cells between arrows (default: ~22 arrows across the longer side).
        gain: arrow length per pixel of motion (default: the longest fit the spacing).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    v = _chw_field(mv, "draw_arrows")
    if image is None:
        img = np.full((v.shape[1] * block, v.shape[2] * block, 3), 96, np.uint8)
    else:
        img = _hwc_u8(image, "draw_arrows")
    h, w = img.shape[:2]
    fig = new_figure(w / 100, h / 100, 100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    draw_motion(ax, v, block=block, max_norm=1.0, image=img, mask=mask, step=step, gain=gain)
    out = figure_to_array(fig)
    if out.shape[:2] != (h, w):  # rounding of the canvas size
        from PIL import Image

        out = np.asarray(Image.fromarray(out).resize((w, h), Image.BILINEAR))
    return out


def save_arrows(path: str | os.PathLike, image, mv, block: int, **kwargs) -> Path:
    """:func:`draw_arrows` written as a PNG (atomically). Returns the path."""
    return save_png(draw_arrows(image, mv, block, **kwargs), path)


# ---------------------------------------------------------------- deprecated names


def _deprecated(old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


def flow_to_color(flow: Tensor | np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Deprecated: :func:`flow_to_image` (this returns numpy ``(H, W, 3)`` for any input)."""
    _deprecated("mvaccel.viz.flow_to_color", "mvaccel.viz.flow_to_image")
    return flow_to_image(_np(flow), max_norm)


__all__ = [
    "Panel",
    "accuracy_fps_figure",
    "agreement",
    "arrow_gain",
    "arrow_layout",
    "cell_means",
    "color_wheel_key",
    "compare_frame",
    "confusion_figure",
    "dmc_flow",
    "draw_arrows",
    "draw_motion",
    "figure_to_array",
    "flow_figure",
    "flow_to_color",
    "flow_to_image",
    "format_agreement",
    "load_dmc_generator",
    "motion_figure",
    "mv_figure",
    "new_figure",
    "pick_frame",
    "robust_max",
    "save_arrows",
    "save_figure",
    "save_flow_preview",
    "save_png",
]
