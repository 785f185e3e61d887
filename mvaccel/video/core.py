"""probe, read_motion, MotionClip, VideoInfo: the reader's Python API over both backends."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FRAME_TYPES = ("I", "P", "B")
_RGB_MODES = {None: 0, "none": 0, "iframes": 1, "all": 2}
_FILL_MODES = {"previous": 0, "zero": 1}
_BACKENDS = ("auto", "native", "pyav")


def native_available() -> bool:
    """Whether ``mvaccel._video`` (the FFmpeg C++ reader) can be imported."""
    try:
        _native()
    except ImportError:
        return False
    return True


def _native():
    import torch  # noqa: F401  (the extension links against libtorch's libraries)

    from .._ext import load_video

    return load_video()


def _video_error_class() -> type[RuntimeError]:
    try:
        return _native().VideoError
    except (ImportError, AttributeError):

        class VideoError(RuntimeError):
            """A video file that cannot be read: damaged, truncated, not a video (names it)."""

        VideoError.__module__ = __name__
        return VideoError


#: The one exception of bad video input on both backends: a file FFmpeg cannot open, without a
#: video stream or frame size, truncated or damaged, failing to decode, or a GOP that cannot be
#: read on its own. A ``RuntimeError``; the native reader's own ``mvaccel._video.VideoError``
#: when it is built (so both backends raise the same class), else a Python class of that name.
#: Missing files raise ``FileNotFoundError``, bad arguments ``ValueError``.
VideoError = _video_error_class()

_FALLBACK_WARNED = False


def _backend(backend: str):
    global _FALLBACK_WARNED
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "native":
        return _native()
    if backend == "pyav":
        from . import _pyav

        return _pyav
    try:
        return _native()
    except ImportError as e:
        from . import _pyav

        if not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            warnings.warn(
                f"mvaccel._video is not available ({e}); backend='auto' falls back to PyAV, "
                f"whose FFmpeg ({_pyav.ffmpeg_version()}) gives different B-frame vectors: "
                "results record it in MotionClip.backend / .ffmpeg. Build the native reader "
                "(FFmpeg development libraries, then reinstall) or pass backend='pyav' to "
                "silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
        return _pyav


def _backend_name(be) -> str:
    return "pyav" if getattr(be, "__name__", "").endswith("_pyav") else "native"


def _ffmpeg_of(be) -> str:
    """``"libavcodec X.Y.Z"`` of the FFmpeg a backend decodes with."""
    if _backend_name(be) == "pyav":
        return be.ffmpeg_version()
    return f"libavcodec {be.ffmpeg_versions()['libavcodec']}"


def _path(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p}: is a directory, not a video file")
    return p


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video's stream.

    Attributes:
        path: the file.
        codec: FFmpeg's codec name (``h264``, ``mpeg4``...).
        width, height: frame size in pixels.
        fps: average frame rate (0 when the container does not say).
        num_frames: frames the decoder outputs (``ffprobe -count_frames``); without decoding,
            the number of video packets (the same for MP4/MKV/AVI, packed B-frames included).
        frame_types: ``(T,)`` uint8, ``0 = I, 1 = P, 2 = B`` in display order (empty when
            probed without decoding).
        gop_sizes: frames from each I-frame to the next (display order).
        has_b_frames: any B-frame.
        key_packets: packet numbers where decoding can start (random-access points); the
            GOPs of :class:`CompressedVideo` run from one to the next.
        time_base: ``(num, den)`` of the timestamps in ``pts``.
        duration: seconds, from the container (0 when unknown).
        exports_mvs: FFmpeg exports motion vectors for this codec.
        intra_only: the codec has I-frames only (MJPEG, ...).
        key_frames: display-order frame number where each GOP starts (its key frame);
            ``CompressedVideo``'s GOPs run from one to the next.
        backend: the reader that probed, ``"native"`` or ``"pyav"``.
        ffmpeg: its FFmpeg, ``"libavcodec X.Y.Z"``.
    """

    path: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    frame_types: np.ndarray
    gop_sizes: list[int]
    has_b_frames: bool
    key_packets: list[int]
    time_base: tuple[int, int]
    duration: float
    exports_mvs: bool
    intra_only: bool
    pts: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    codec_long: str = ""
    key_frames: list[int] = field(default_factory=list)
    backend: str = ""
    ffmpeg: str = ""

    @property
    def num_gops(self) -> int:
        """Number of I-frame GOPs (from decoded frame types)."""
        return len(self.gop_sizes)

    @property
    def frame_type_string(self) -> str:
        """The frame types as a string, e.g. ``"IBBPBBP..."``."""
        return "".join(FRAME_TYPES[t] for t in self.frame_types)


def _gop_sizes(types: np.ndarray) -> list[int]:
    starts = [0] + [i for i in range(1, len(types)) if types[i] == 0]
    ends = starts[1:] + [len(types)]
    return [e - s for s, e in zip(starts, ends, strict=True)] if len(types) else []


def probe(path: str | os.PathLike, *, count_frames: bool = True, backend: str = "auto"):
    """Stream facts of a video: codec, size, fps, frame count and types, GOPs, B-frames.

    Args:
        path: a video file FFmpeg reads.
        count_frames: decode (in the fast motion-vector mode: no loop filter, no IDCT) to get
            every frame's type; otherwise only the packets are read.
        backend: ``"auto"`` (native when built), ``"native"`` or ``"pyav"``.

    Returns:
        :class:`VideoInfo`.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: not a video FFmpeg can read, truncated or damaged, no packets, or (with
            ``count_frames``) no frame decodes (message names the file and FFmpeg's words).
    """
    p = _path(path)
    be = _backend(backend)
    d = be.probe(p, count_frames)
    types = np.asarray(d["frame_types"], np.uint8)
    n = len(types) if d["decoded"] else int(d["num_packets"])
    return VideoInfo(
        path=p,
        codec=d["codec"],
        width=int(d["width"]),
        height=int(d["height"]),
        fps=float(d["fps"]),
        num_frames=n,
        frame_types=types,
        gop_sizes=_gop_sizes(types),
        has_b_frames=bool((types == 2).any()),
        key_packets=list(d["key_packets"]),
        time_base=tuple(d["time_base"]),
        duration=float(d["duration"]),
        exports_mvs=bool(d["exports_mvs"]),
        intra_only=bool(d["intra_only"]),
        pts=np.asarray(d["pts"], np.int64),
        codec_long=d["codec_long"],
        key_frames=list(d["key_frames"]),
        backend=_backend_name(be),
        ffmpeg=_ffmpeg_of(be),
    )


@dataclass
class MotionClip:
    """Motion vectors (and optionally residuals and RGB frames) of some frames of a video.

    Attributes:
        mv: ``(T, 2, Hb, Wb)`` float32, ``Hb = ceil(H / block)``: one vector per block in
            pixels of the frame, channel 0 x (right), 1 y (down), the codec's direction
            ``src - dst`` (the block's content sits at ``x + mv`` in the reference frame).
            Quarter/half-pel values are fractional. With ``accumulate`` the vector points to
            the GOP's I-frame instead (CoViAR's traced motion, same sign convention).
        mask: ``(T, Hb, Wb)`` bool, True where a coded vector of the selected list covers
            the cell (False: intra block, I-frame, or a B-block that uses the other list).
        frame_type: ``(T,)`` uint8, ``0 = I, 1 = P, 2 = B``.
        pts: ``(T,)`` int64 timestamps in ``time_base`` units (FFmpeg's best-effort
            timestamp).
        gop_index: ``(T,)`` int64: number of I-frames before the frame (display order).
        frame_index: ``(T,)`` int64 display-order frame numbers.
        residual: ``(T, 3, H, W)`` int16 RGB residual, or None.
        rgb: ``(K, 3, H, W)`` uint8 frames, or None; ``rgb_index`` ``(K,)`` says which.
        block: cell size in pixels.
        size: ``(H, W)`` of the frames.
        fps, time_base: of the stream.
        path: the file.
        backend: the reader that decoded it, ``"native"`` or ``"pyav"`` (their FFmpeg
            versions differ on some B-frame vectors: record it with the data).
        ffmpeg: the decoding FFmpeg, ``"libavcodec X.Y.Z"``.
        corrupt: ``(T,)`` bool, True where the bitstream is damaged: FFmpeg reported a
            decoding error on the frame (native backend), or a vector leaves the frame plus
            64 px of padding (no encoder writes one). Reads warn (``RuntimeWarning``) when
            any is set; check ``clip.corrupt.any()`` before training on files of unknown
            origin.
    """

    mv: Tensor
    mask: Tensor
    frame_type: Tensor
    pts: Tensor
    gop_index: Tensor
    frame_index: Tensor
    residual: Tensor | None
    rgb: Tensor | None
    rgb_index: Tensor | None
    block: int
    size: tuple[int, int]
    fps: float = 0.0
    time_base: tuple[int, int] = (1, 1)
    path: str = ""
    backend: str = ""
    ffmpeg: str = ""
    corrupt: Tensor | None = None

    def __len__(self) -> int:
        return int(self.mv.shape[0])

    def dense(self, mode: str = "nearest") -> Tensor:
        """Per-pixel motion ``(T, 2, H, W)`` via :func:`mvaccel.ops.block_upsample`."""
        from ..ops import block_upsample

        return block_upsample(self.mv, self.block, self.size, mode)

    def numpy(self) -> dict[str, np.ndarray]:
        """The fields as numpy arrays (what :meth:`save` writes)."""
        out = {
            "mv": self.mv.numpy(),
            "mask": self.mask.numpy(),
            "frame_type": self.frame_type.numpy(),
            "pts": self.pts.numpy(),
            "gop_index": self.gop_index.numpy(),
            "frame_index": self.frame_index.numpy(),
            "block": np.int64(self.block),
            "size": np.asarray(self.size, np.int64),
            "fps": np.float64(self.fps),
            "time_base": np.asarray(self.time_base, np.int64),
            "backend": np.str_(self.backend),
            "ffmpeg": np.str_(self.ffmpeg),
        }
        if self.corrupt is not None:
            out["corrupt"] = self.corrupt.numpy()
        if self.residual is not None:
            out["residual"] = self.residual.numpy()
        if self.rgb is not None:
            out["rgb"] = self.rgb.numpy()
            out["rgb_index"] = self.rgb_index.numpy()
        return out

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Write the clip as a compressed ``.npz``, atomically (``mvaccel._io.atomic_path``).

        The package's one motion-file writer (``mvaccel mv``,
        :func:`~mvaccel.video.extract_motion`); :func:`~mvaccel.video.load_motion` reads it back.

        Args:
            path: the file; its folder is created.
            meta: JSON-able metadata (source, reader options, backend, ...), stored as the
                JSON string ``meta``; None writes no ``meta``.

        Returns:
            ``path`` as a Path.
        """
        import json

        from .._io import atomic_path

        arrays = self.numpy()
        if meta is not None:
            arrays["meta"] = np.asarray(json.dumps(meta))
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path


def _clip_from(d: dict, block: int, h: int, w: int, rgb_mode: int, info: dict) -> MotionClip:
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    corrupt = _corrupt(d, h, w)
    if corrupt.any():
        frames = np.asarray(d["frame_index"])[corrupt]
        warnings.warn(
            f"{info.get('path', '')}: {int(corrupt.sum())} of {len(corrupt)} frames have "
            f"decoding errors or implausible vectors (frames {frames[:8].tolist()}"
            f"{'...' if len(frames) > 8 else ''}): the bitstream is damaged; see "
            "MotionClip.corrupt",
            RuntimeWarning,
            stacklevel=3,
        )

    return MotionClip(
        mv=t(d["mv"]),
        mask=t(np.asarray(d["mask"]).astype(bool)),
        frame_type=t(d["frame_type"]),
        pts=t(d["pts"]),
        gop_index=t(d["gop_index"]),
        frame_index=t(d["frame_index"]),
        residual=t(d["residual"]) if d.get("residual") is not None else None,
        rgb=t(d["rgb"]) if rgb_mode else None,
        rgb_index=t(d["rgb_index"]) if rgb_mode else None,
        block=block,
        size=(h, w),
        fps=float(info.get("fps", 0.0)),
        time_base=tuple(info.get("time_base", (1, 1))),
        path=info.get("path", ""),
        backend=info.get("backend", ""),
        ffmpeg=info.get("ffmpeg", ""),
        corrupt=t(corrupt),
    )


# A block's reference lies in the frame plus the codecs' edge padding: a vector longer than
# the frame plus this many pixels is no encoder's.
_MV_SLACK = 64


def _corrupt(d: dict, h: int, w: int) -> np.ndarray:
    """Frames FFmpeg flagged, or with a vector that leaves the padded frame."""
    mv = np.asarray(d["mv"])
    if mv.size:
        ax = np.abs(mv)
        bad = (ax[:, 0].reshape(len(mv), -1).max(axis=1) > w + _MV_SLACK) | (
            ax[:, 1].reshape(len(mv), -1).max(axis=1) > h + _MV_SLACK
        )
    else:
        bad = np.zeros(len(mv), bool)
    flagged = d.get("decode_errors")
    if flagged is not None and len(flagged) == len(bad):
        bad |= np.asarray(flagged, bool)
    return bad


def _options(block, rgb, fill_iframe, b_list, threads):
    if not isinstance(block, int) or not 1 <= block <= 256:
        raise ValueError(f"block must be an int in [1, 256], got {block!r}")
    if rgb not in _RGB_MODES:
        raise ValueError(f"rgb must be None, 'iframes' or 'all', got {rgb!r}")
    if fill_iframe not in _FILL_MODES:
        raise ValueError(f"fill_iframe must be 'previous' or 'zero', got {fill_iframe!r}")
    if b_list not in (0, 1):
        raise ValueError(f"b_list must be 0 (past reference) or 1 (future), got {b_list!r}")
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0: all cores), got {threads!r}")
    if threads == 0:
        threads = os.cpu_count() or 1
    return _RGB_MODES[rgb], _FILL_MODES[fill_iframe], threads


def _frames(frames) -> list[int]:
    if frames is None:
        return []
    if isinstance(frames, slice):
        raise ValueError("frames: pass range(...) or a list of frame numbers, not a slice")
    if isinstance(frames, int):
        frames = [frames]
    if isinstance(frames, Tensor | np.ndarray):
        frames = frames.tolist()
    out = [int(f) for f in frames] if isinstance(frames, Iterable) else None
    if out is None:
        raise ValueError(f"frames must be None, an int or a sequence of ints, got {frames!r}")
    if not out:
        raise ValueError("frames is empty")
    return out


def read_motion(
    path: str | os.PathLike,
    *,
    frames=None,
    block: int = 8,
    residual: bool = False,
    rgb: str | None = None,
    accumulate: bool = False,
    fill_iframe: str = "previous",
    b_list: int = 0,
    threads: int = 1,
    backend: str = "auto",
) -> MotionClip:
    """Read motion vectors from the bitstream, rasterized onto a block grid.

    Vectors come from FFmpeg's ``AV_FRAME_DATA_MOTION_VECTORS`` side data. Each coded block
    (16x16, 16x8, 8x16, 8x8; H.264 sub-8x8 partitions come out as their top-left 4x4's
    vector) fills the cells it covers; a cell covered by several blocks gets their
    pixel-area-weighted mean. When neither residuals nor RGB are asked for, decoding skips
    the loop filter and the inverse transform (vectors do not depend on them) and never
    converts pixels.

    What blocks give:
        * intra blocks: no vector, 0, ``mask`` False;
        * skipped blocks: the codec's vector for them (zero in MPEG-4, the predicted vector
          in H.264), ``mask`` True;
        * P-frames: list-0 vectors, pointing into the previous I/P frame (the frame before,
          when the stream has no B-frames and one reference frame; with ``refs > 1`` an H.264
          vector may point 2-3 frames back: re-encode with ``refs=1``);
        * B-frames: list 0 (past anchor) by default, list 1 (future anchor) with
          ``b_list=1``; a bi-predicted block gives its vector of the chosen list, a block
          predicted from the other list only gives 0 with ``mask`` False;
        * I-frames: ``fill_iframe="previous"`` copies the previous frame's field (Zhang et
          al.), ``"zero"`` gives zeros; ``mask`` is False either way.

    Args:
        path: video file (H.264, MPEG-4 Part 2, MPEG-1/2, H.263...).
        frames: display-order frame numbers to return (int, list, range), or None for all.
            Decoding stops after the last one asked.
        block: cell size in pixels (8: the codec's smallest exported block; 16: CoViAR's
            macroblock grid; 1: per pixel).
        residual: also return ``residual (T, 3, H, W)`` int16, RGB: the decoded frame minus
            its motion-compensated prediction. The prediction samples the reference's RGB
            bilinearly at ``x + mv`` (quarter/half-pel), averages both references for
            bi-predicted blocks, and copies the co-located reference pixel for intra blocks;
            I-frames give 0. With ``accumulate``, CoViAR's definition instead: the frame
            minus the GOP's I-frame at the traced position (rounded to the pixel).
        rgb: None, ``"iframes"`` (the I-frame of each GOP the frames touch) or ``"all"``:
            ``rgb (K, 3, H, W)`` uint8 and ``rgb_index``.
        accumulate: CoViAR's accumulated motion: trace every pixel back to its GOP's I-frame
            through the reference chain (list 0 first, list 1 for blocks that only have it,
            intra blocks carry the reference's trace unchanged); positions round to the
            nearest pixel at every step, as CoViAR does. The cell value is the mean over its
            pixels of ``traced I-frame position - position``. I-frames give 0.
        fill_iframe: ``"previous"`` or ``"zero"`` (ignored with ``accumulate``).
        b_list: 0 (past) or 1 (future) vectors for B-frames.
        threads: decode GOPs on this many threads (0: all cores). Output is exactly that
            of one thread (a GOP starts one GOP early where the decoder needs it: MPEG-4
            part 2 with B-frames, open GOPs); files whose GOPs cannot be placed exactly
            (open GOPs without timestamps, dropped frames) decode on one thread.
        backend: ``"auto"`` (native when built, else PyAV), ``"native"`` or ``"pyav"``.

    Returns:
        :class:`MotionClip`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad arguments, frames out of range, a codec without motion vectors
            (intra-only such as MJPEG, or one FFmpeg does not export vectors for).
        RuntimeError: the file is not a readable video, is truncated or damaged, changes
            frame size, or decoding failed (the message names the file and FFmpeg's words).
            Damage FFmpeg decodes through is flagged per frame in ``MotionClip.corrupt``
            (with a ``RuntimeWarning``) instead.
    """
    p = _path(path)
    rgb_mode, fill, threads = _options(block, rgb, fill_iframe, b_list, threads)
    fr = _frames(frames)
    be = _backend(backend)
    d = be.read(
        p,
        block=block,
        residual=bool(residual),
        rgb=rgb_mode,
        accumulate=bool(accumulate),
        fill_iframe=fill,
        b_list=b_list,
        threads=threads,
        fast=True,
        frames=fr,
    )
    return _clip_from(
        d,
        block,
        int(d["height"]),
        int(d["width"]),
        rgb_mode,
        {
            "fps": d["fps"],
            "time_base": d["time_base"],
            "path": p,
            "backend": _backend_name(be),
            "ffmpeg": _ffmpeg_of(be),
        },
    )


__all__ = ["VideoInfo", "MotionClip", "probe", "read_motion", "native_available", "FRAME_TYPES"]
