"""Flow of consecutive frames of a video, a frame folder or a frame tensor, in bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .params import TVL1Params
from .tvl1 import to_grey, tvl1

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")


def _grey_u8(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    g = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def iter_frames(src: str | Path | Tensor | Iterable) -> Iterator[np.ndarray]:
    """Grey uint8 ``(H, W)`` frames of a video file, a folder of images or a frame sequence.

    Args:
        src: a video path (decoded with PyAV), a folder of images (sorted by name), a
            ``(T, C, H, W)`` / ``(T, H, W)`` tensor (uint8 or float in [0, 1]) or an iterable of
            ``(H, W)`` / ``(H, W, 3)`` uint8 arrays.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a folder without images, or a file PyAV cannot decode.
    """
    if isinstance(src, Tensor):
        g = to_grey(src, "frames").round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        yield from g
        return
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"flow_video: no such file or folder: {path}")
        if path.is_dir():
            from PIL import Image

            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"flow_video: no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
            for f in files:
                yield _grey_u8(np.asarray(Image.open(f).convert("L")))
            return
        try:
            import av
        except ImportError as e:  # pragma: no cover - av is a declared extra
            raise ImportError("flow_video: decoding videos needs PyAV (pip install av)") from e
        try:
            container = av.open(str(path))
        except Exception as e:  # noqa: BLE001 - PyAV raises many types
            raise ValueError(f"flow_video: cannot open {path} as a video: {e}") from e
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="gray")
        return
    for f in src:
        yield _grey_u8(np.asarray(f))


def flow_video(
    src: str | Path | Tensor | Iterable,
    params: TVL1Params | str | None = None,
    batch: int = 16,
    device: str | torch.device = "cpu",
    backward: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
    backend: str = "auto",
) -> Tensor | None:
    """TV-L1 flow between consecutive frames, ``batch`` pairs at a time.

    Pair ``t`` (0-based) is frames ``(t, t+1)``: ``tvl1(I_t, I_{t+1})`` (dense_flow's order),
    or ``tvl1(I_{t+1}, I_t)`` with ``backward=True``, which is the direction of the motion
    vectors of a P-frame that references its predecessor (ARCHITECTURE.md).

    Args:
        src: video path, frame folder, frame tensor or iterable of frames (see
            :func:`iter_frames`); frames are converted to BT.601 grey.
        params: :class:`TVL1Params` or preset name (default ``"opencv"``).
        batch: pairs per solver call; with ``callback`` the memory use is bounded by it.
        device: where the solver runs (``"cuda"`` for the GPU kernel).
        backward: compute ``tvl1(I_{t+1}, I_t)`` instead.
        callback: if given, called as ``callback(t0, flows)`` with the ``(B, 2, H, W)`` CPU
            flows of pairs ``t0 .. t0 + B - 1`` and nothing is kept; else all flows are returned.
        backend: passed to :func:`tvl1`.

    Returns:
        ``(T - 1, 2, H, W)`` float32 CPU flows, or ``None`` with ``callback``.

    Raises:
        ValueError: ``batch < 1``, frames of different sizes, or a source with fewer than 2 frames.
    """
    if batch < 1:
        raise ValueError(f"flow_video: batch must be >= 1, got {batch}")
    kept: list[Tensor] = []
    frames: list[np.ndarray] = []
    t0 = 0
    n_frames = 0

    def run(chunk: list[np.ndarray]) -> None:
        nonlocal t0
        x = torch.from_numpy(np.stack(chunk)).to(device)[:, None]
        a, b = (x[1:], x[:-1]) if backward else (x[:-1], x[1:])
        f = tvl1(a, b, params, backend=backend).cpu()
        if callback is not None:
            callback(t0, f)
        else:
            kept.append(f)
        t0 += f.shape[0]

    for fr in iter_frames(src):
        if frames and fr.shape != frames[0].shape:
            raise ValueError(
                f"flow_video: frame {n_frames} is {fr.shape}, earlier frames {frames[0].shape}"
            )
        frames.append(fr)
        n_frames += 1
        if len(frames) == batch + 1:
            run(frames)
            frames = frames[-1:]
    if len(frames) >= 2:
        run(frames)
    if n_frames < 2:
        raise ValueError(f"flow_video: need at least 2 frames, got {n_frames}")
    if callback is not None:
        return None
    return torch.cat(kept, 0)
