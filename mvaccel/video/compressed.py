"""CompressedVideo: GOP-indexed random access with CoViAR's representations."""

from __future__ import annotations

import os
import threading

import numpy as np
from torch import Tensor

from .core import (
    MotionClip,
    VideoError,
    _backend,
    _backend_name,
    _clip_from,
    _ffmpeg_of,
    _options,
    _path,
)

_REPRESENTATIONS = ("iframe", "mv", "residual")


class CompressedVideo:
    """Random access to the GOPs of a video, decoding only the GOP asked for.

    The index (every video packet and the key frames where decoding may start) is built once
    by a demux pass, without decoding. GOP ``g`` is the run of frames, in display order, from
    key frame ``g`` to the next one, any length (CoViAR assumed 12): with open GOPs the
    B-frames decoded after key frame ``g + 1`` but shown before it belong to GOP ``g``. Display
    numbers come from the packets' timestamps (MP4, MKV, TS) or, without timestamps (AVI),
    follow packet numbers (packed B-frames included). A load seeks to the key frame (one GOP
    earlier where the decoder needs it: MPEG-4 part 2 with B-frames carries state across key
    frames, open GOPs) and decodes to the frame asked for; the result equals a decode from
    the start of the file, or the load raises ``RuntimeError`` (open GOPs in a container
    without timestamps). Every clip records ``backend`` and ``ffmpeg``.

    Safe in DataLoader workers: the open file belongs to the process that opened it; a
    forked child (fork, forkserver) or an unpickled copy (spawn) re-opens the file on its
    first load (the index travels with it). Loads from threads of one process are
    serialized. ``close()`` (or a ``with`` block) releases the file and the decoder at once;
    a closed video raises ``ValueError`` on load.

    Args:
        path: the video (CoViAR's format: :func:`mvaccel.video.reencode` with the defaults).
        backend: ``"auto"``, ``"native"`` or ``"pyav"`` (PyAV decodes from the start of the
            file up to the GOP: slow, the fallback).

    Example:
        >>> vid = CompressedVideo("v.mp4")                       # doctest: +SKIP
        >>> mv = vid.load(gop=3, frame=5, representation="mv")   # (2, H, W), to the I-frame
    """

    def __init__(self, path: str | os.PathLike, *, backend: str = "auto"):
        self.path = _path(path)
        self.backend = backend
        be = _backend(backend)
        self._native = _backend_name(be) == "native"
        #: The reader used (``"native"`` or ``"pyav"``) and its FFmpeg (``"libavcodec X.Y.Z"``).
        self.backend_used = _backend_name(be)
        self.ffmpeg = _ffmpeg_of(be)
        self._lock = threading.Lock()
        self._reader = None
        self._pid = os.getpid()
        self._closed = False
        if self._native:
            self._reader = be.GopReader(self.path)
            keys = list(self._reader.key_frames)
            packets = list(self._reader.key_packets)
            n = int(self._reader.num_packets)
            info = dict(self._reader.info)
        else:
            d = be.probe(self.path, False)
            keys, n, info = list(d["key_frames"]), int(d["num_packets"]), d
            packets = list(d["key_packets"])
        if n == 0:
            raise VideoError(f"{self.path}: the video stream has no packets")
        self._keys = keys
        self._key_packets = packets
        self._num_frames = n
        self.width = int(info["width"])
        self.height = int(info["height"])
        self.fps = float(info["fps"])
        self.time_base = tuple(info["time_base"])
        self.codec = info["codec"]

    # ---- pickling: the index travels, the open file does not ----

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_lock"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- lifetime ----

    def close(self) -> None:
        """Close the file and free the decoder (idempotent); later loads raise ValueError."""
        self._closed = True
        self._reader = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> CompressedVideo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_reader(self):
        """The GopReader of this process (re-opened after a fork or unpickling)."""
        if self._closed:
            raise ValueError(f"{self.path}: I/O operation on a closed CompressedVideo")
        pid = os.getpid()
        if self._pid != pid:
            # A forked child shares the parent's file offset through the inherited handle:
            # drop it (its destructor closes this process's copy only) and open our own.
            self._reader = None
            self._lock = threading.Lock()
            self._pid = pid
        if self._reader is None:
            self._reader = _backend(self.backend).GopReader(self.path)
        return self._reader

    def __repr__(self) -> str:
        return (
            f"CompressedVideo({self.path!r}, codec={self.codec}, {self.width}x{self.height}, "
            f"frames={self._num_frames}, gops={self.num_gops})"
        )

    # ---- index ----

    @property
    def num_gops(self) -> int:
        """Number of GOPs (key frames)."""
        return len(self._keys)

    @property
    def num_frames(self) -> int:
        """Frames in the video (video packets)."""
        return self._num_frames

    def _check_gop(self, gop: int) -> int:
        if not isinstance(gop, int | np.integer) or not 0 <= gop < self.num_gops:
            raise IndexError(f"{self.path}: GOP {gop!r} out of range [0, {self.num_gops})")
        return int(gop)

    def gop_start(self, gop: int) -> int:
        """Display-order number of the GOP's first frame (its key frame)."""
        return self._keys[self._check_gop(gop)]

    @property
    def key_packets(self) -> list[int]:
        """Demux-order number of each GOP's key-frame packet.

        :meth:`gop_start` is where it is shown; they differ where the container's timestamps
        show a key frame at another position than its packet's (open GOPs, B-frames across
        key frames).
        """
        return list(self._key_packets)

    def gop_length(self, gop: int) -> int:
        """Frames in GOP ``gop``."""
        g = self._check_gop(gop)
        end = self._keys[g + 1] if g + 1 < self.num_gops else self._num_frames
        return end - self._keys[g]

    def gop_of_frame(self, frame: int) -> tuple[int, int]:
        """``(gop, frame_in_gop)`` of a display-order frame number."""
        if not 0 <= frame < self._num_frames:
            raise IndexError(f"{self.path}: frame {frame} out of range [0, {self._num_frames})")
        g = int(np.searchsorted(self._keys, frame, side="right")) - 1
        return g, frame - self._keys[g]

    # ---- reading ----

    def read_gop(
        self,
        gop: int,
        *,
        frames=None,
        block: int = 8,
        residual: bool = False,
        rgb: str | None = None,
        accumulate: bool = False,
        fill_iframe: str = "previous",
        b_list: int = 0,
    ) -> MotionClip:
        """Decode one GOP (up to its last asked frame) like :func:`read_motion`.

        Args:
            gop: GOP number.
            frames: frame numbers inside the GOP (0 = its key frame), or None for all.
            block: cell size in pixels.
            residual: also return residuals (see ``read_motion``).
            rgb: None, ``"iframes"`` or ``"all"``.
            accumulate: CoViAR's accumulation back to the I-frame.
            fill_iframe: ``"previous"`` or ``"zero"``; the GOP's first frame has no previous
                frame here, so it gets zeros either way.
            b_list: 0 (past) or 1 (future) vectors for B-frames.

        Returns:
            :class:`MotionClip` whose ``frame_index`` counts from the start of the video and
            ``gop_index`` is ``gop`` (more if the GOP holds further I-frames).
        """
        g = self._check_gop(gop)
        rgb_mode, fill, _ = _options(block, rgb, fill_iframe, b_list, 1)
        n = self.gop_length(g)
        fr = [] if frames is None else [int(f) for f in np.atleast_1d(np.asarray(frames))]
        for f in fr:
            if not 0 <= f < n:
                raise IndexError(f"{self.path}: frame {f} out of range for GOP {g} ({n} frames)")
        kw = dict(
            block=block,
            residual=bool(residual),
            rgb=rgb_mode,
            accumulate=bool(accumulate),
            fill_iframe=fill,
            b_list=b_list,
        )
        if self._native:
            if self._pid != os.getpid():
                self._lock = threading.Lock()  # may have been held at fork time
            with self._lock:
                d = self._open_reader().read(g, g, frames=fr, **kw)
        else:
            if self._closed:
                raise ValueError(f"{self.path}: I/O operation on a closed CompressedVideo")
            d = self._read_pyav(g, fr, kw)
        start = self._keys[g]
        d["frame_index"] = np.asarray(d["frame_index"]) + start
        d["gop_index"] = np.asarray(d["gop_index"]) + g
        d["rgb_index"] = np.asarray(d["rgb_index"]) + start
        return _clip_from(
            d,
            block,
            self.height,
            self.width,
            rgb_mode,
            {
                "fps": self.fps,
                "time_base": self.time_base,
                "path": self.path,
                "backend": self.backend_used,
                "ffmpeg": self.ffmpeg,
            },
        )

    def _read_pyav(self, g: int, fr: list[int], kw: dict) -> dict:
        from . import _pyav

        start = self._keys[g]
        n = self.gop_length(g)
        local = fr or list(range(n))
        # The key frame comes first (its gop_index is the base), then the frames asked for.
        d = _pyav.read(self.path, frames=[start] + [start + f for f in local], **kw)
        base = d["gop_index"][0]
        fields = ["mv", "mask", "frame_type", "pts", "gop_index", "residual"]
        if kw["rgb"] == 2:
            fields += ["rgb", "rgb_index"]
        for k in fields:
            if d.get(k) is not None:
                d[k] = d[k][1:]
        # Match a decode that starts at the key frame: no previous frame to fill from.
        first = [i for i, f in enumerate(local) if f == 0]
        for i in first:
            if d["frame_type"][i] == 0:
                d["mv"][i] = 0
        d["frame_index"] = np.asarray(local, np.int64)
        d["gop_index"] = np.asarray(d["gop_index"]) - base
        if kw["rgb"]:
            d["rgb_index"] = np.asarray(d["rgb_index"]) - start
        return d

    def load(
        self,
        gop: int,
        frame: int,
        representation: str = "mv",
        accumulate: bool = True,
        block: int = 1,
    ) -> Tensor:
        """CoViAR's ``load(video, gop, frame, representation, accumulate)``.

        Args:
            gop: GOP number.
            frame: position inside the GOP (0 = the I-frame).
            representation:
                ``"iframe"``: the decoded frame, ``(3, H, W)`` uint8 RGB (CoViAR: BGR HWC).
                ``"mv"``: ``(2, H/block, W/block)`` float32 motion in pixels. Accumulated:
                the traced position in the GOP's I-frame minus the pixel's position (CoViAR
                stores the opposite sign, ``position - traced``, as int32); otherwise the
                frame's own vectors (``src - dst``). 0 at the I-frame.
                ``"residual"``: ``(3, H, W)`` int16 RGB. Accumulated: the frame minus the
                I-frame at the traced position (CoViAR's definition); otherwise the frame
                minus its motion-compensated prediction. 0 at the I-frame.
            accumulate: trace back to the I-frame (CoViAR's default for training).
            block: cell size of the ``"mv"`` grid (1: per pixel, as CoViAR).

        Returns:
            A tensor as described above.
        """
        if representation not in _REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {_REPRESENTATIONS}, got {representation!r}"
            )
        if representation == "iframe":
            clip = self.read_gop(gop, frames=[frame], rgb="all")
            return clip.rgb[0]
        clip = self.read_gop(
            gop,
            frames=[frame],
            block=block,
            residual=representation == "residual",
            accumulate=accumulate,
            fill_iframe="zero",
        )
        if representation == "mv":
            return clip.mv[0]
        return clip.residual[0]

    def iframe(self, gop: int) -> Tensor:
        """The GOP's key frame, ``(3, H, W)`` uint8 RGB."""
        return self.load(gop, 0, "iframe")


__all__ = ["CompressedVideo"]
