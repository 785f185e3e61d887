"""Compressed-domain video: motion vectors, residuals, I-frames, CoViAR accumulation.

Two backends with one API: ``mvaccel._video`` (C++ on FFmpeg's libraries, GIL released,
GOP-parallel) and PyAV (Python; the fallback and the tests' oracle). ``backend="auto"`` picks
the native one when it is built.

Conventions: motion vectors ``(T, 2, Hb, Wb)`` float32 in pixels, the codec's direction
``src - dst`` (a block's content is found at ``x + mv`` in its reference frame); frame types
``0 = I, 1 = P, 2 = B``; residuals ``(T, 3, H, W)`` int16 RGB.
"""

from .compressed import CompressedVideo
from .core import FRAME_TYPES, MotionClip, VideoInfo, native_available, probe, read_motion
from .encode import reencode
from .extract import extract_motion, load_motion, motion_tree
from .viz import draw_arrows, save_arrows, to_color

__all__ = [
    "FRAME_TYPES",
    "CompressedVideo",
    "MotionClip",
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
