"""Flow of consecutive frames of a video, a frame folder or a frame tensor, in bounded memory."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .params import TVL1Params
from .tvl1 import to_grey, tvl1

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")
FORMATS = ("jpg", "flo", "npy")
#: Name of the metadata file in each video's flow folder.
META_NAME = "meta.json"

log = logging.getLogger(__name__)


def check_device(device: str | torch.device, fn: str) -> None:
    """Raise a clear RuntimeError when ``device`` is CUDA but unusable here."""
    if torch.device(device).type != "cuda":
        return
    from .._ext import cuda_ops_ready

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{fn}: device {str(device)!r} asked for, but torch sees no GPU "
            f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built'}); use 'cpu'"
        )
    if not cuda_ops_ready():
        raise RuntimeError(
            f"{fn}: device {str(device)!r} asked for, but this build of mvaccel has no CUDA "
            "kernels (rebuild with a CUDA toolkit, see README 'Install'); use 'cpu'"
        )


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
        ValueError: a folder without images, an unreadable image, or a file PyAV cannot open
            or decode (the file is named).
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
                try:
                    with Image.open(f) as im:
                        yield _grey_u8(np.asarray(im.convert("L")))
                except OSError as e:  # PIL: "image file is truncated", unidentified image
                    raise ValueError(f"flow_video: cannot read image {f}: {e}") from e
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
            if not container.streams.video:
                raise ValueError(f"flow_video: {path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="gray")
            except av.error.FFmpegError as e:
                raise ValueError(f"flow_video: cannot decode {path}: {e}") from e
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
    vectors of a P-frame that references its predecessor (README, "Conventions"). The
    writers :func:`write_video_flow` / :func:`flow_tree` and ``mvaccel flow`` default to
    ``backward``.

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
        RuntimeError: a CUDA ``device`` where torch sees no GPU or mvaccel has no CUDA kernels.
    """
    if batch < 1:
        raise ValueError(f"flow_video: batch must be >= 1, got {batch}")
    check_device(device, "flow_video")
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


def write_video_flow(
    src: str | Path | Tensor | Iterable,
    dest: str | Path,
    params: TVL1Params | str | None = "opencv",
    *,
    format: str = "jpg",
    bound: float = 20.0,
    batch: int = 16,
    device: str | torch.device = "cpu",
    backward: bool = True,
    preview: bool = False,
) -> int:
    """TV-L1 flow of one video into the folder ``dest``, atomically, with its metadata.

    Layout of ``dest`` (written under a hidden temporary name and renamed when complete, so a
    folder at ``dest`` is always whole; an existing one is replaced):

    - ``format="jpg"``: ``flow_x_%05d.jpg`` / ``flow_y_%05d.jpg`` from 1, dense_flow's uint8
      mapping of ``[-bound, bound]`` (:func:`~mvaccel.flow.quantize`);
    - ``"flo"``: ``flow_%05d.flo`` (Middlebury) from 1;
    - ``"npy"``: ``flow.npy``, ``(T - 1, 2, H, W)`` float32 (the whole video in memory);
    - always ``meta.json``: direction, preset / parameters, bound, source, pairs, version;
    - with ``preview``, ``preview.png``: the pair with the most motion over its frame, with the
      colour key (:func:`mvaccel.viz.save_flow_preview`).

    File ``k`` (1-based) holds ``tvl1(I_k, I_{k-1})`` with ``backward=True`` (the default: the
    direction of frame ``k``'s motion vectors, what the datasets' ``"flow"`` input and
    ``prepare`` assume), else ``tvl1(I_{k-1}, I_k)`` (dense_flow's forward order). Frames are
    0-based.

    Args:
        src: video path, frame folder or frames (see :func:`iter_frames`).
        dest: the output folder.
        params: :class:`TVL1Params` or preset name.
        format: ``"jpg"``, ``"flo"`` or ``"npy"``.
        bound: the JPEG quantization bound in pixels.
        batch: pairs per solver call (bounds the memory).
        device: solver device.
        backward: see above.
        preview: also write ``preview.png``.

    Returns:
        The number of flow fields written (frames - 1).

    Raises:
        ValueError: bad arguments or an unreadable source (the file is named).
        RuntimeError: an unusable CUDA device.
    """
    from .._io import atomic_path

    if format not in FORMATS:
        raise ValueError(f"write_video_flow: format must be one of {FORMATS}, got {format!r}")
    p = TVL1Params.preset(params) if isinstance(params, str) else params or TVL1Params()
    parts: dict[int, np.ndarray] = {}
    count = 0
    best = PreviewPick() if preview else None
    with atomic_path(Path(dest), folder=True) as tmp:

        def sink(t0: int, flows: Tensor) -> None:
            nonlocal count
            count += flows.shape[0]
            write_flows(tmp, t0, flows, format, bound, parts)
            if best is not None:
                best.see(t0, flows)

        flow_video(src, p, batch=batch, device=device, backward=backward, callback=sink)
        finish_flow_folder(tmp, src, p, params, format, bound, backward, count, parts, best)
    return count


class PreviewPick:
    """The pair with the most motion (mean ``|flow|``) of one video, for its ``preview.png``.

    Thread-safe, and the choice does not depend on the order pairs arrive in (ties go to the
    earlier pair), so the sequential path and the pipeline pick the same pair.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._best: tuple[float, int, Tensor] | None = None

    def see(self, t0: int, flows: Tensor) -> None:
        """Pairs ``t0 ..`` of the video, ``(n, 2, H, W)``."""
        m = flows.norm(dim=1).mean((1, 2))
        k = int(m.argmax())
        cand = (float(m[k]), t0 + k, flows[k].clone())
        with self._lock:
            b = self._best
            if b is None or (cand[0], -cand[1]) > (b[0], -b[1]):
                self._best = cand

    def save(self, path: Path, src, backward: bool) -> None:
        """Write the chosen pair's figure (nothing when no pair was seen)."""
        if self._best is None:
            return
        from ..viz import save_flow_preview

        _, index, flow = self._best
        title = os.fspath(src) if isinstance(src, (str, Path)) else ""
        save_flow_preview(path, src, index, flow, backward=backward, title=title)


def write_flows(
    folder: Path, t0: int, flows: Tensor, format: str, bound: float, parts: dict[int, np.ndarray]
) -> None:
    """Write the flows of pairs ``t0 ..`` of one video into its (temporary) folder.

    The one writer of :func:`write_video_flow` and the pipeline of :func:`flow_tree`:
    ``jpg`` / ``flo`` files are numbered from ``t0 + 1``; ``npy`` keeps a copy in ``parts[t0]``
    for :func:`finish_flow_folder`.
    """
    from .io import write_flo, write_flow_jpgs

    if format == "jpg":
        write_flow_jpgs(folder, flows, start=t0 + 1, bound=bound)
    elif format == "flo":
        for k in range(flows.shape[0]):
            write_flo(folder / f"flow_{t0 + k + 1:05d}.flo", flows[k])
    else:
        parts[t0] = flows.numpy().copy()


def finish_flow_folder(
    folder: Path,
    src,
    p: TVL1Params,
    params,
    format: str,
    bound: float,
    backward: bool,
    count: int,
    parts: dict[int, np.ndarray],
    preview: PreviewPick | None = None,
) -> None:
    """Finish a video's (temporary) flow folder: ``flow.npy``, ``meta.json``, ``preview.png``.

    ``flow.npy`` for the ``npy`` format, from ``parts`` in pair order; ``preview.png`` when a
    ``preview`` saw pairs.
    """
    from .. import __version__

    if preview is not None:
        preview.save(folder / "preview.png", src, backward)

    if format == "npy":
        with open(folder / "flow.npy", "wb") as fh:
            np.save(fh, np.concatenate([parts[k] for k in sorted(parts)], 0))
    meta = {
        "direction": "backward" if backward else "forward",
        "file_k": "tvl1(I_k, I_{k-1})" if backward else "tvl1(I_{k-1}, I_k)",
        "format": format,
        "bound": bound if format == "jpg" else None,
        "pairs": count,
        "params": asdict(p),
        "preset": params if isinstance(params, str) else None,
        "source": os.fspath(src) if isinstance(src, (str, Path)) else None,
        "decoder": _decoder(src),
        "mvaccel": __version__,
    }
    (folder / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")


def _decoder(src) -> str | None:
    """What decoded a video source (recorded in the metadata): PyAV and its FFmpeg."""
    if not isinstance(src, (str, Path)) or Path(src).is_dir():
        return None
    import av

    ffmpeg = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    return f"PyAV {av.__version__} (libavcodec {ffmpeg})"


def find_flow_sources(src: str | Path) -> list[tuple[Path, Path]]:
    """``(source, relative output folder)`` of every video / frame folder under ``src``.

    A file or a folder of images is one source (output ``<stem>``); a tree gives each video
    (``a/b.mp4`` -> ``a/b``) and each folder of images (``a/c/`` -> ``a/c``), sorted, hidden
    names (temporaries of killed runs) skipped.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: no video or frame folder in it.
    """
    from .._io import VIDEO_SUFFIXES, find_videos

    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")

    def has_frames(d: Path) -> bool:
        return any(
            p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            for p in d.iterdir()
            if p.is_file()
        )

    if src.is_file() or has_frames(src):
        return [(src, Path(src.stem))]
    found = find_videos(src, folders=has_frames)
    items = [(p, p.relative_to(src) if p.is_dir() else p.relative_to(src).with_suffix(""))
             for p in found]  # fmt: skip
    if not items:
        raise ValueError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders in {src}")
    return sorted(items, key=lambda it: it[1])


def flow_tree(
    src: str | Path,
    out: str | Path,
    params: TVL1Params | str | None = "opencv",
    *,
    format: str = "jpg",
    bound: float = 20.0,
    batch: int = 16,
    device: str | torch.device = "cpu",
    backward: bool = True,
    shard: tuple[int, int] | str | None = (0, 1),
    overwrite: bool = False,
    quiet: bool = False,
    sources: Sequence[tuple[Path, Path]] | None = None,
    pipeline: bool = True,
    decoders: int = 2,
    writers: int = 2,
    preview: bool = False,
):
    """TV-L1 flow of every video / frame folder under ``src`` into ``out`` (``mvaccel flow``).

    ``out/<relative path without suffix>/`` per video, laid out as in
    :func:`write_video_flow`. Resumable (finished folders are skipped), atomic per video,
    sharded by the sorted source list (:func:`mvaccel._io.parse_shard`), a failing video is
    logged and reported and the others go on; temporaries of killed runs are removed.

    By default the videos go through a :class:`~mvaccel.flow.pipeline.FlowPipeline`:
    ``decoders`` threads decode while the solver runs batches of ``batch`` pairs taken across
    videos (pinned buffers and a stream of its own on CUDA) and ``writers`` threads write the
    files; the files are byte for byte those of ``pipeline=False`` (one video after the
    other through :func:`write_video_flow`).

    Args:
        src: a video, a frame folder, or a tree of them.
        out: the output root.
        params: :class:`TVL1Params` or preset name.
        format: ``"jpg"``, ``"flo"`` or ``"npy"`` (see :func:`write_video_flow`).
        bound: the JPEG quantization bound in pixels.
        batch: pairs per solver call.
        device: solver device.
        backward: file k = ``tvl1(I_k, I_{k-1})`` (default), else the forward order.
        shard: ``(i, n)``, ``"i/n"``, or None for the environment (torchrun, SLURM).
        overwrite: redo finished videos.
        quiet: no progress bar.
        sources: ``(source, relative output)`` pairs to use instead of listing ``src``.
        pipeline: overlap decoding, solving and writing, batching across videos.
        decoders: videos decoded at the same time (pipeline).
        writers: threads writing flow files (pipeline).
        preview: also write each video's ``preview.png`` (see :func:`write_video_flow`).

    Returns:
        A :class:`mvaccel._io.JobReport`.
    """
    from .._io import parse_shard, run_jobs

    if format not in FORMATS:
        raise ValueError(f"flow_tree: format must be one of {FORMATS}, got {format!r}")
    if isinstance(params, str):
        TVL1Params.preset(params)  # fail early on a bad name
    check_device(device, "flow_tree")
    if not isinstance(shard, tuple):
        shard = parse_shard(shard)
    out = Path(out)
    items = find_flow_sources(src) if sources is None else sources
    pairs = [(s, out / rel) for s, rel in items]

    if not pipeline:

        def work(s: Path, d: Path) -> None:
            write_video_flow(s, d, params, format=format, bound=bound, batch=batch,
                             device=device, backward=backward, preview=preview)  # fmt: skip

        return run_jobs(pairs, work, shard=shard, overwrite=overwrite, quiet=quiet,
                        what="mvaccel flow")  # fmt: skip
    from .pipeline import FlowPipeline

    p = TVL1Params.preset(params) if isinstance(params, str) else params or TVL1Params()
    preset = params if isinstance(params, str) else None
    with FlowPipeline(p, preset, format=format, bound=bound, batch=batch, device=device,
                      backward=backward, decoders=decoders, writers=writers,
                      preview=preview) as pipe:  # fmt: skip
        return run_jobs(pairs, pipe.work, shard=shard, overwrite=overwrite, quiet=quiet,
                        workers=pipe.threads, what="mvaccel flow")  # fmt: skip
