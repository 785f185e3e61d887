"""Synthetic action videos whose class is the motion: the built-in data of demos and tests.

Each video shows a randomly textured object over a randomly textured static background. The
appearance is random for every video; only the motion pattern (the class) is shared, so a
classifier has to look at motion to tell the classes apart, which is the point of motion vectors
and optical flow. The videos are real encodes (ffmpeg: MPEG-4 Part 2 as CoViAR uses, or H.264),
laid out like UCF101 (``<Class>/v_<Class>_gGG_cCC.<ext>``) with ``classInd.txt``,
``trainlist01.txt`` and ``testlist01.txt``, so every UCF101 tool of mvaccel reads them as is.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_path, atomic_write_text

# name -> function of (t in [0, 1]) giving (dx, dy, angle_rad, scale) of the object
MOTIONS = {
    "MoveRight": lambda t, a: (a * t, 0.0, 0.0, 1.0),
    "MoveLeft": lambda t, a: (-a * t, 0.0, 0.0, 1.0),
    "MoveUp": lambda t, a: (0.0, -a * t, 0.0, 1.0),
    "MoveDown": lambda t, a: (0.0, a * t, 0.0, 1.0),
    "RotateCW": lambda t, a: (0.0, 0.0, 1.2 * t, 1.0),
    "RotateCCW": lambda t, a: (0.0, 0.0, -1.2 * t, 1.0),
    "ZoomIn": lambda t, a: (0.0, 0.0, 0.0, 1.0 + 0.8 * t),
    "ZoomOut": lambda t, a: (0.0, 0.0, 0.0, 1.6 - 0.8 * t),
    "Oscillate": lambda t, a: (0.5 * a * math.sin(4 * math.pi * t), 0.0, 0.0, 1.0),
}
CODECS = {
    # CoViAR's format: MPEG-4 Part 2, GOP 12, no B-frames, fine quantiser.
    "mpeg4": (".avi", ["-c:v", "mpeg4", "-q:v", "2", "-g", "12", "-bf", "0"]),
    "h264": (
        ".mp4",
        [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-g",
            "12",
            "-bf",
            "0",
            "-x264-params",
            "ref=1",
            "-pix_fmt",
            "yuv420p",
        ],
    ),  # fmt: skip
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`write_synthetic_dataset` makes."""

    classes: tuple[str, ...] = tuple(MOTIONS)
    train_per_class: int = 8
    test_per_class: int = 4
    frames: int = 32
    height: int = 128
    width: int = 160
    fps: int = 25
    codec: str = "mpeg4"
    seed: int = 0


def _smooth_texture(h: int, w: int, gen: torch.Generator, cells: int) -> torch.Tensor:
    """Random colour texture ``(3, h, w)`` in [0, 1]: noise on a coarse grid, upsampled."""
    coarse = torch.rand(1, 3, cells, max(2, cells * w // h), generator=gen)
    fine = torch.rand(1, 3, h // 4, w // 4, generator=gen) * 0.35
    tex = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    tex = tex + F.interpolate(fine, size=(h, w), mode="bilinear", align_corners=False)
    return (tex[0] - tex.min()) / (tex.max() - tex.min() + 1e-6)


def render_video(motion: str, spec: SyntheticSpec, gen: torch.Generator) -> np.ndarray:
    """Render one video of class ``motion``: ``(T, H, W, 3)`` uint8 RGB frames."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; known: {sorted(MOTIONS)}")
    h, w, n = spec.height, spec.width, spec.frames
    bg = _smooth_texture(h, w, gen, cells=6) * 0.8
    obj = _smooth_texture(h, w, gen, cells=4)
    # An ellipse of random size and position around the centre.
    r = torch.rand(4, generator=gen)
    ry, rx = (0.22 + 0.12 * r[0]) * h, (0.22 + 0.12 * r[1]) * w
    cy, cx = h / 2 + (r[2] - 0.5) * 0.2 * h, w / 2 + (r[3] - 0.5) * 0.2 * w
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
    layer = torch.cat([obj * mask, mask[None]])[None]  # (1, 4, h, w)
    amp = 0.25 * min(h, w) * (0.8 + 0.4 * float(torch.rand(1, generator=gen)))
    frames = []
    for i in range(n):
        dx, dy, ang, s = MOTIONS[motion](i / max(1, n - 1), amp)
        # Output pixel p shows object pixel c + R^-1 (p - c - d) / s: the inverse map in the
        # normalised coordinates of grid_sample (align_corners=False).
        cos, sin = math.cos(ang), math.sin(ang)
        ax, ay = w / 2, h / 2
        m = torch.tensor(
            [[cos / s, sin / s * ay / ax, 0.0], [-sin / s * ax / ay, cos / s, 0.0]],
            dtype=torch.float32,
        )
        off = torch.tensor([(cx - ax) / ax, (cy - ay) / ay])
        shift = torch.tensor([dx / ax, dy / ay])
        m[:, 2] = off - m[:, :2] @ (off + shift)
        grid = F.affine_grid(m[None], [1, 4, h, w], align_corners=False)
        warped = F.grid_sample(layer, grid, mode="bilinear", align_corners=False)[0]
        alpha = warped[3:4]
        frames.append(warped[:3] + bg * (1 - alpha))
    video = torch.stack(frames).clamp(0, 1).mul(255).round().to(torch.uint8)
    return video.permute(0, 2, 3, 1).contiguous().numpy()


def encode(frames: np.ndarray, path: str | Path, codec: str = "mpeg4", fps: int = 25) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames with the ffmpeg CLI, atomically.

    Raises:
        FileNotFoundError: ffmpeg is not installed.
        RuntimeError: ffmpeg failed (its message is included).
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("ffmpeg not found on PATH (Debian: apt-get install ffmpeg)")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for 4:2:0 codecs, got {w}x{h}")
    path = Path(path)
    with atomic_path(path) as tmp:
        cmd = [exe, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", *CODECS[codec][1], "-threads", "1", str(tmp)]  # fmt: skip
        p = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace")
            raise RuntimeError(f"ffmpeg failed to encode {path}: {err}")
    return path


def write_synthetic_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the videos and UCF101-style lists under ``root``; resumable and deterministic.

    Videos already present are kept (each is written atomically, so a present file is whole);
    the same ``spec`` always gives the same pixels. Returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ext = CODECS[spec.codec][0] if spec.codec in CODECS else None
    if ext is None:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {spec.codec!r}")
    unknown = [c for c in spec.classes if c not in MOTIONS]
    if unknown:
        raise ValueError(f"unknown motion classes {unknown}; known: {sorted(MOTIONS)}")
    train, test = [], []
    per_class = spec.train_per_class + spec.test_per_class
    for label, cls in enumerate(spec.classes):
        (root / cls).mkdir(exist_ok=True)
        for k in range(per_class):
            group, clip = k // 2 + 1, k % 2 + 1
            rel = f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}{ext}"
            (train if k < spec.train_per_class else test).append((rel, label))
            out = root / rel
            if out.exists():
                continue
            gen = torch.Generator().manual_seed(spec.seed * 100003 + label * 1009 + k)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny ops: threads only contend (10x slower on a busy box)
            try:
                frames = render_video(cls, spec, gen)
            finally:
                torch.set_num_threads(threads)
            encode(frames, out, spec.codec, spec.fps)
    atomic_write_text(
        root / "classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(spec.classes))
    )
    atomic_write_text(root / "trainlist01.txt", "".join(f"{p} {lab + 1}\n" for p, lab in train))
    atomic_write_text(root / "testlist01.txt", "".join(f"{p}\n" for p, _ in test))
    return root
