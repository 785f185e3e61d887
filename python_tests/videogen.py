"""Small synthetic videos for the video tests, encoded by the ffmpeg CLI.

A smooth texture (a sum of random sinusoids, so a sub-pixel shift is exact) seen through a
window that moves by ``(dx, dy)`` pixels per frame: the content of frame t at ``x`` is the
content of frame t-1 at ``x + (dx, dy)``, so P-frame vectors (``src - dst``) are
``(dx, dy)``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


def texture(h: int, w: int, t: int, dx: float, dy: float, seed: int = 0) -> np.ndarray:
    """``(t, h, w, 3)`` uint8 frames of a panned texture."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.zeros((t, h, w, 3), np.float64)
    waves = []
    for _ in range(24):
        f = rng.uniform(0.03, 0.22, size=2) * rng.choice([-1, 1], size=2)
        waves.append((f, rng.uniform(0, 2 * np.pi), rng.uniform(8, 22, size=3)))
    for k in range(t):
        x, y = xs + k * dx, ys + k * dy
        for f, ph, amp in waves:
            s = np.sin(f[0] * x + f[1] * y + ph)
            frames[k] += s[..., None] * amp
    frames = 128 + frames * (100 / np.abs(frames - 0).max())
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def encode(frames: np.ndarray, path: Path, args: list[str], fps: int = 25) -> Path:
    """Encode ``(t, h, w, 3)`` uint8 RGB frames with ``ffmpeg ... args path``."""
    t, h, w, _ = frames.shape
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    cmd += ["-s", f"{w}x{h}", "-r", str(fps), "-i", "-", *args, str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return path


X264_P = ["-c:v", "libx264", "-preset", "fast", "-bf", "0", "-refs", "1", "-g", "12"]
X264_P += ["-sc_threshold", "0", "-pix_fmt", "yuv420p", "-crf", "12", "-threads", "1"]
X264_B = ["-c:v", "libx264", "-preset", "fast", "-bf", "2", "-refs", "1", "-g", "12"]
X264_B += ["-sc_threshold", "0", "-pix_fmt", "yuv420p", "-crf", "12", "-threads", "1"]
X264_B += ["-x264-params", "b-pyramid=none:open-gop=0"]
MPEG4 = ["-c:v", "mpeg4", "-g", "12", "-bf", "0", "-q:v", "1", "-pix_fmt", "yuv420p"]
MJPEG = ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]


def ffprobe_frame_types(path: Path) -> str:
    """Every frame's picture type as ffprobe decodes it (``"IPPB..."``)."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=pict_type", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return "".join(line.strip()[:1] for line in out.splitlines() if line.strip())


# name: (height, width, frames, dx, dy, ffmpeg args)
CASES = {
    "h264_p.mp4": (144, 176, 36, 1.25, -0.5, X264_P),
    "h264_b.mp4": (144, 176, 36, 1.25, -0.5, X264_B),
    "mpeg4.avi": (144, 176, 36, 1.5, -0.5, MPEG4),
    "odd.mp4": (238, 322, 24, 2.0, 1.0, X264_P),
    "mjpeg.avi": (48, 64, 4, 1.0, 0.0, MJPEG),
}
P_STREAMS = ("h264_p.mp4", "mpeg4.avi", "odd.mp4")
_MADE: dict[str, dict[str, Path]] = {}


def make_videos(root: Path) -> dict[str, Path]:
    """Encode every case of CASES under ``root`` once per process."""
    key = str(root)
    if key not in _MADE:
        root.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, (h, w, t, dx, dy, args) in CASES.items():
            out[name] = encode(texture(h, w, t, dx, dy), root / name, args)
        _MADE[key] = out
    return _MADE[key]
