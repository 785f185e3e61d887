"""The synthetic motion-class videos: real encodes, UCF101 layout, the right motion, resumable."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mvaccel.data import ucf101_split
from mvaccel.data.synthetic import SyntheticSpec, encode, render_video, write_synthetic_dataset

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def _shift(a: np.ndarray, b: np.ndarray, r: int = 8) -> tuple[int, int]:
    """Integer (dx, dy) that best maps a central patch of ``a`` into ``b`` (SSD search)."""
    h, w = a.shape[:2]
    p = 10
    cy, cx = h // 2, w // 2
    patch = a[cy - p : cy + p, cx - p : cx + p].astype(np.float64)
    best = min(
        (
            ((b[cy - p + dy : cy + p + dy, cx - p + dx : cx + p + dx] - patch) ** 2).sum(),
            (dx, dy),
        )
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
    )
    return best[1]


@pytest.mark.parametrize(
    "cls,sign",
    [("MoveRight", (1, 0)), ("MoveLeft", (-1, 0)), ("MoveDown", (0, 1)), ("MoveUp", (0, -1))],
)
def test_translation_classes_move_the_right_way(cls, sign):
    spec = SyntheticSpec(frames=8, height=96, width=128)
    v = render_video(cls, spec, torch.Generator().manual_seed(5))
    assert v.shape == (8, 96, 128, 3) and v.dtype == np.uint8
    dx, dy = _shift(v[0], v[1])
    assert (np.sign(dx), np.sign(dy)) == sign
    assert 2 <= abs(dx) + abs(dy) <= 5  # 0.25 * 96 * [0.8, 1.2] px over 7 steps


def test_render_is_deterministic_and_appearance_random():
    spec = SyntheticSpec(frames=4, height=32, width=48)
    a = render_video("ZoomIn", spec, torch.Generator().manual_seed(1))
    b = render_video("ZoomIn", spec, torch.Generator().manual_seed(1))
    c = render_video("ZoomIn", spec, torch.Generator().manual_seed(2))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10
    with pytest.raises(ValueError, match="unknown motion"):
        render_video("Jump", spec, torch.Generator())


@needs_ffmpeg
def test_dataset_layout_and_resume(tmp_path):
    spec = SyntheticSpec(
        classes=("MoveRight", "RotateCW"), train_per_class=2, test_per_class=1, frames=6,
        height=48, width=64,
    )  # fmt: skip
    root = write_synthetic_dataset(tmp_path / "syn", spec)
    train = ucf101_split(root, 1, "train")
    test = ucf101_split(root, 1, "test")
    assert [i.label for i in train] == [0, 0, 1, 1] and [i.label for i in test] == [0, 1]
    for item in train + test:
        assert (root / item.path).stat().st_size > 1000
    import av

    with av.open(str(root / train[0].path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "mpeg4" and (s.width, s.height) == (64, 48)
        assert sum(1 for _ in c.decode(video=0)) == 6
    # Resume: present videos are kept, a missing one is made again, no temp files remain.
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.avi")}
    victim = root / test[1].path
    victim.unlink()
    write_synthetic_dataset(root, spec)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.avi")}
    assert victim.exists()
    assert all(after[p] == t for p, t in before.items() if p != victim)
    assert not list(root.rglob(".*tmp*"))


@needs_ffmpeg
def test_encode_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        encode(np.zeros((2, 31, 32, 3), np.uint8), tmp_path / "x.avi")
    with pytest.raises(ValueError, match="codec"):
        encode(np.zeros((2, 32, 32, 3), np.uint8), tmp_path / "x.avi", codec="vp9")
    with pytest.raises(ValueError, match="uint8"):
        encode(np.zeros((2, 32, 32, 3), np.float32), tmp_path / "x.avi")
    encode(np.zeros((3, 32, 32, 3), np.uint8), tmp_path / "ok.mp4", codec="h264")
    assert (tmp_path / "ok.mp4").stat().st_size > 0
