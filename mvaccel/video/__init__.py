"""Compressed-domain video: motion vectors, residuals, I-frames, CoViAR accumulation.

Two backends with one API: ``mvaccel._video`` (C++ on FFmpeg's libraries, GIL released,
GOP-parallel) and PyAV (Python; the fallback and the tests' oracle). ``backend="auto"`` picks
the native one when it is built.

Conventions: motion vectors ``(T, 2, Hb, Wb)`` float32 in pixels, the codec's direction
``src - dst`` (a block's content is found at ``x + mv`` in its reference frame); frame types
``0 = I, 1 = P, 2 = B``; residuals ``(T, 3, H, W)`` int16 RGB.
"""

from .compressed import CompressedVideo
from .core import (
    FRAME_TYPES,
    MotionClip,
    VideoError,
    VideoInfo,
    native_available,
    probe,
    read_motion,
)
from .encode import reencode
from .extract import extract_motion, load_motion, motion_tree


def to_color(mv, max_norm: float | None = None):
    """Deprecated: :func:`mvaccel.viz.flow_to_image` (this returns numpy ``(..., H, W, 3)``)."""
    from ..viz import _deprecated, _np, flow_to_image

    _deprecated("mvaccel.video.to_color", "mvaccel.viz.flow_to_image")
    return flow_to_image(_np(mv), max_norm)


def draw_arrows(image, mv, block: int, *, step: int | None = None, scale: float | None = None,
                **_unused):  # fmt: skip
    """Deprecated: :func:`mvaccel.viz.draw_arrows`.

    ``scale`` is its ``gain``; ``color`` and ``min_length`` are ignored (arrows are white with
    a dark outline now).
    """
    from .. import viz

    viz._deprecated("mvaccel.video.draw_arrows", "mvaccel.viz.draw_arrows")
    return viz.draw_arrows(image, mv, block, step=step, gain=scale)


def save_arrows(path, image, mv, block: int, *, step: int | None = None,
                scale: float | None = None, **_unused):  # fmt: skip
    """Deprecated: :func:`mvaccel.viz.save_arrows` (arguments as :func:`draw_arrows`)."""
    from .. import viz

    viz._deprecated("mvaccel.video.save_arrows", "mvaccel.viz.save_arrows")
    return viz.save_arrows(path, image, mv, block, step=step, gain=scale)


__all__ = [
    "FRAME_TYPES",
    "CompressedVideo",
    "MotionClip",
    "VideoError",
    "VideoInfo",
    "draw_arrows",
    "extract_motion",
    "load_motion",
    "motion_tree",
    "native_available",
    "probe",
    "read_motion",
    "reencode",
    "save_arrows",
    "to_color",
]
