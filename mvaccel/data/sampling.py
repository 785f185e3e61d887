"""Which frames a training or test sample reads: TSN segments, OFF's fixed interval, clips.

Every function returns 0-based frame indices as a list of ints and takes an optional
``numpy.random.Generator`` for the random choices of training (seeded by the caller, so data
loading is reproducible per worker and epoch).
"""

from __future__ import annotations

import numpy as np


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if v < 1:
            raise ValueError(f"{k} must be >= 1, got {v}")


def tsn_segments(
    num_frames: int,
    num_segments: int,
    length: int = 1,
    train: bool = True,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Start frames of TSN snippets (Wang et al.): one snippet of ``length`` frames per segment.

    Training picks a random start inside each of ``num_segments`` equal segments; testing takes
    each segment's middle. Videos shorter than the segments repeat frames (as TSN does), so the
    result always has ``num_segments`` entries and ``start + length <= max(num_frames, length)``.

    Args:
        num_frames: frames in the video (or motion fields, or flow fields).
        num_segments: snippets to draw (TSN: 3 in training, 25 in testing).
        length: frames per snippet (e.g. 5 or 10 stacked flow / MV fields).
        train: random (True) or centred (False) positions.
        rng: random generator for training.
    """
    _check_positive(num_frames=num_frames, num_segments=num_segments, length=length)
    span = num_frames - length + 1
    if span < 1:
        return [0] * num_segments
    if not train:
        tick = span / num_segments
        return [int(tick / 2 + tick * i) for i in range(num_segments)]
    rng = _rng(rng)
    avg = span // num_segments
    if avg > 0:
        return [int(i * avg + rng.integers(avg)) for i in range(num_segments)]
    return sorted(int(v) for v in rng.integers(span, size=num_segments))


def fixed_interval(
    num_frames: int,
    num_samples: int,
    test_samples: int,
    train: bool = True,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """OFF's sampling (Sun et al.): frames at a fixed interval ``floor(L / beta)``.

    The interval is set by the test-time count ``beta = test_samples`` and kept the same in
    training, where ``alpha = num_samples`` frames start at a random offset (so the temporal
    difference of neighbouring samples spans the same time in training and testing).

    Args:
        num_frames: ``L``, frames in the video.
        num_samples: frames to return (alpha in training, beta in testing).
        test_samples: beta, which fixes the interval.
        train: random start (True) or the first frame (False).
        rng: random generator for training.
    """
    _check_positive(num_frames=num_frames, num_samples=num_samples, test_samples=test_samples)
    interval = max(1, num_frames // test_samples)
    extent = interval * (num_samples - 1) + 1
    start = 0
    if train and extent < num_frames:
        start = int(_rng(rng).integers(num_frames - extent + 1))
    return [min(start + i * interval, num_frames - 1) for i in range(num_samples)]


def clip(
    num_frames: int,
    clip_len: int = 16,
    stride: int = 1,
    train: bool = True,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """A clip of ``clip_len`` frames ``stride`` apart (3D CNNs: 16 or 64 frames).

    Training starts at a random frame, testing at the centred one; short videos loop.
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len, stride=stride)
    extent = (clip_len - 1) * stride + 1
    if extent >= num_frames:
        start = 0
    elif train:
        start = int(_rng(rng).integers(num_frames - extent + 1))
    else:
        start = (num_frames - extent) // 2
    return [(start + i * stride) % num_frames for i in range(clip_len)]
