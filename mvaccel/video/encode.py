"""Re-encoding to the formats the compressed-domain methods read."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .._io import atomic_path

_CODECS = ("mpeg4", "h264")


def reencode(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    codec: str = "mpeg4",
    size: tuple[int, int] | None = (340, 256),
    gop: int = 12,
    bframes: int = 0,
    refs: int = 1,
    qscale: int = 1,
    crf: int = 18,
    threads: int = 1,
    timeout: float | None = None,
) -> Path:
    """Re-encode a video with the ffmpeg CLI, atomically, and check the result.

    The output is written under a hidden temporary name (:func:`mvaccel._io.atomic_path`),
    decoded to check it has as many frames as the source (ffmpeg exits 0 on a full disk with
    a truncated file), and only then renamed to ``dst``: a file at ``dst`` is always complete.

    The defaults are CoViAR's format: MPEG-4 Part 2, 340x256, a GOP of 12, no B-frames, one
    reference frame, ``-q:v 1``. ``codec="h264"`` gives libx264 with the same GOP structure
    (closed GOPs, no B-pyramid).

    One reference frame matters: with ``refs > 1`` an H.264 P-frame block may point 2-3 frames
    back, so its vector is not a per-frame displacement and CoViAR's accumulation (which
    follows the previous frame) traces the wrong path. MPEG-4 Part 2 always has one.

    Args:
        src: any video FFmpeg reads.
        dst: output path; its extension picks the container (``.mp4``, ``.avi``, ``.mkv``).
        codec: ``"mpeg4"`` or ``"h264"``.
        size: ``(width, height)`` as ffmpeg's ``scale`` takes them (CoViAR: 340x256), or None
            to keep the size.
        gop: frames from one I-frame to the next.
        bframes: B-frames between anchors (0 for CoViAR).
        refs: H.264 reference frames (1 keeps vectors per-frame displacements).
        qscale: MPEG-4 quantizer, 1 (best) to 31.
        crf: H.264 constant rate factor.
        threads: encoder threads.
        timeout: seconds before the encode is killed.

    Returns:
        ``dst`` as a Path.

    Raises:
        FileNotFoundError: ``src`` missing, or no ``ffmpeg`` on PATH.
        ValueError: bad arguments.
        RuntimeError: ffmpeg failed (its message is included), the source does not decode, or
            the output is unreadable or has fewer frames than the source; ``dst`` is then
            left as it was.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("reencode needs the ffmpeg command (apt-get install ffmpeg)")
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}")
    if gop < 1 or bframes < 0 or refs < 1 or not 1 <= qscale <= 31:
        raise ValueError(f"bad encoder settings: gop={gop} bframes={bframes} refs={refs} "
                         f"qscale={qscale}")  # fmt: skip
    vf = []
    if size is not None:
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError(f"size must be (width, height), positive and even, got {size}")
        vf.append(f"scale={w}:{h}")
    vf.append("setsar=1")
    cmd = [exe, "-nostdin", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-an", "-sn"]
    cmd += ["-vf", ",".join(vf), "-pix_fmt", "yuv420p", "-threads", str(threads)]
    if codec == "mpeg4":
        cmd += ["-c:v", "mpeg4", "-g", str(gop), "-bf", str(bframes), "-q:v", str(qscale)]
    else:
        cmd += ["-c:v", "libx264", "-g", str(gop), "-bf", str(bframes), "-refs", str(refs)]
        cmd += ["-crf", str(crf), "-sc_threshold", "0", "-keyint_min", str(gop)]
        cmd += ["-x264-params", "open-gop=0:b-pyramid=none"]
    with atomic_path(dst) as tmp:
        proc = subprocess.run([*cmd, str(tmp)], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            msg = proc.stderr.strip().splitlines()
            raise RuntimeError(
                f"ffmpeg failed to re-encode {src} (exit {proc.returncode}): "
                f"{msg[-1] if msg else 'no message'}"
            )
        _check_output(tmp, src, dst)
    return dst


def _frame_count(path: Path) -> int:
    """Decoded frame count of ``path`` (PyAV: the count re-encoding must reproduce)."""
    from ._pyav import _av

    av = _av()

    try:
        with av.open(str(path)) as c:
            return sum(1 for _ in c.decode(video=0))
    except (av.error.FFmpegError, OSError, IndexError, ValueError) as e:
        raise RuntimeError(f"reencode: cannot decode {path}: {e}") from e


#: Frames a re-encode may drop (ffmpeg's timestamp handling at the ends) and still be whole.
FRAME_SLACK = 2


def _check_output(tmp: Path, src: Path, dst: Path) -> None:
    """Raise unless the encoder's output decodes to the source's frame count.

    ffmpeg can exit 0 with a cut-short file (a full disk: no ``moov`` atom, or fewer frames),
    which must never be renamed into place as a finished video.
    """
    want = _frame_count(src)
    try:
        got = _frame_count(tmp)
    except RuntimeError as e:
        raise RuntimeError(
            f"reencode: the output for {dst} is unreadable though ffmpeg exited 0 (disk full or "
            f"killed?): {e.__cause__ or e}"
        ) from None
    if got < want - FRAME_SLACK:
        raise RuntimeError(
            f"reencode: the output for {dst} has {got} frames but {src} has {want} "
            "(cut short: disk full?); nothing was written"
        )


__all__ = ["reencode"]
