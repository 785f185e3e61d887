"""Motion vectors of a whole dataset tree to files: the batch API behind ``mvaccel mv DIR``.

On-disk layout: ``OUT/<path of the video relative to SRC, suffix replaced by .npz>``, one
compressed ``.npz`` per video holding the fields of :meth:`MotionClip.numpy` (``mv``,
``mask``, ``frame_type``, ``pts``, ``gop_index``, ``frame_index``, ``block``, ``size``,
``fps``, ``time_base``, and ``residual`` when asked) and ``meta``: a JSON string with the
source, the reader options, the backend that decoded it (``native`` / ``pyav``) and its FFmpeg
versions, and the package version. :meth:`MotionClip.save` writes it (the one writer),
:func:`load_motion` reads it back as a :class:`MotionClip` (the one reader, which the datasets'
``mv_root`` uses too).

Every file is written atomically (a file under its final name is whole), a rerun skips the
finished ones, shards split the sorted source list (``--shard i/n``, torchrun, SLURM), a
failing video is reported and the others go on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from .core import MotionClip, _backend, _backend_name, read_motion

#: The reader options :func:`extract_motion` and :func:`motion_tree` take (read_motion's).
OPTIONS = ("block", "residual", "accumulate", "b_list", "fill_iframe", "threads")


def resolve_backend(backend: str = "auto") -> dict:
    """The backend ``backend`` stands for here, with its FFmpeg versions.

    The choice is :func:`read_motion`'s own: ``"auto"`` is the native reader when it was
    built, else PyAV, with a ``RuntimeWarning`` (once per process): PyAV's FFmpeg may give
    different B-frame vectors, so the data would depend on how the package was built.

    Returns:
        ``{"backend": "native" | "pyav", "versions": {library: version}}``.

    Raises:
        ValueError: an unknown backend name.
        ImportError: ``"native"`` without the native reader.
    """
    be = _backend(backend)
    name = _backend_name(be)
    if name == "native":
        versions = dict(be.ffmpeg_versions())
    else:
        import av

        versions = {"pyav": av.__version__}
        versions.update({k: ".".join(map(str, v)) for k, v in av.library_versions.items()})
    return {"backend": name, "versions": versions}


#: The arrays every motion file holds; :func:`load_motion` refuses a file without one.
REQUIRED = ("mv", "mask", "frame_type", "pts", "block", "size")


def read_motion_file(
    path: str | os.PathLike,
    arrays: Collection[str] | None = None,
    *,
    skip: Collection[str] = (),
    options: dict | None = None,
    whole: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """The checked arrays and metadata of a motion file; what :func:`load_motion` builds on.

    Args:
        path: the ``.npz`` (:meth:`MotionClip.save`, :func:`extract_motion`, ``mvaccel mv``).
        arrays: the arrays to decompress (None: all; ``block`` is always read): a reader
            that needs only the vectors leaves the rest compressed on disk.
        skip: arrays not to decompress (of ``arrays`` or of all).
        options: reader options (:data:`OPTIONS`) the file must have been written with, e.g.
            ``{"block": 8, "accumulate": False}``; checked against those its ``meta`` records
            (``block`` against the file's grid); an option the file does not record is not
            checked.
        whole: the file must hold every frame of its video (not written with ``frames=``).

    Returns:
        ``(arrays, meta)``: the arrays asked that the file holds, and ``meta`` as a dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable ``.npz``, not a motion file, or written with other options
            or only some frames (names the file and the difference).
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path) as z:
            names = set(z.files)
            read = (names if arrays is None else names & {*arrays, "block"}) - set(skip)
            d = {k: z[k] for k in read}
            meta = json.loads(str(z["meta"][()])) if "meta" in names else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"unreadable motion file {path}: {e}") from e
    missing = [k for k in REQUIRED if k not in names]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a motion file")
    meta = meta if isinstance(meta, dict) else {}
    if options:
        recorded = {**(meta.get("options") or {}), "block": int(d["block"])}
        bad = {k: recorded[k] for k, v in options.items() if k in recorded and recorded[k] != v}
        if bad:
            raise ValueError(
                f"{path} was written with {bad}, the reader wants "
                f"{ {k: options[k] for k in bad} }: rerun `mvaccel mv` with those options"
            )
    if whole and meta.get("frames") is not None:
        raise ValueError(f"{path} holds only some frames; a whole-video motion file is needed")
    return d, meta


def load_motion(
    path: str | os.PathLike,
    *,
    residual: bool = True,
    rgb: bool = True,
    options: dict | None = None,
    whole: bool = False,
) -> MotionClip:
    """Read a motion file (:meth:`MotionClip.save`, :func:`extract_motion`, ``mvaccel mv``) back.

    The package's one motion-file reader (:func:`read_motion_file` checks and reads it).

    Args:
        path: the ``.npz``.
        residual: also read the residuals when the file holds them (False: left compressed
            on disk, ``clip.residual`` is None).
        rgb: also read the RGB frames when the file holds them.
        options: reader options the file must have been written with (as
            :func:`read_motion_file`'s).
        whole: the file must hold every frame of its video.

    Returns:
        The :class:`MotionClip` (``backend``, ``ffmpeg``, ``corrupt`` as saved; ``path`` the
        source recorded in ``meta``); the metadata is ``json.loads(np.load(path)["meta"][()])``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: as :func:`read_motion_file`.
    """
    skip = ([] if residual else ["residual"]) + ([] if rgb else ["rgb", "rgb_index"])
    d, meta = read_motion_file(path, skip=skip, options=options, whole=whole)

    def t(k):
        return torch.from_numpy(d[k]) if k in d else None

    def s(k):
        return str(d[k]) if k in d else str(meta.get(k, ""))

    n = d["mv"].shape[0]
    return MotionClip(
        mv=t("mv"),
        mask=t("mask"),
        frame_type=t("frame_type"),
        pts=t("pts"),
        gop_index=t("gop_index") if "gop_index" in d else torch.zeros(n, dtype=torch.int64),
        frame_index=t("frame_index") if "frame_index" in d else torch.arange(n),
        residual=t("residual"),
        rgb=t("rgb"),
        rgb_index=t("rgb_index"),
        block=int(d["block"]),
        size=tuple(int(v) for v in d["size"]),
        fps=float(d.get("fps", 0.0)),
        time_base=tuple(int(v) for v in d.get("time_base", (1, 1))),
        path=str(meta.get("source", "")),
        backend=s("backend"),
        ffmpeg=s("ffmpeg"),
        corrupt=t("corrupt"),
    )


def extract_motion(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    frames=None,
    block: int = 8,
    residual: bool = False,
    accumulate: bool = False,
    b_list: int = 0,
    fill_iframe: str = "previous",
    threads: int = 1,
    backend: str = "auto",
) -> MotionClip:
    """Read a video's motion vectors (:func:`read_motion`) and write them to ``dest``.

    Args:
        src: the video.
        dest: the ``.npz`` to write (atomically, with the metadata described in the module).
        frames: display-order frame numbers, or None for all (as :func:`read_motion`).
        block: grid cell size in pixels.
        residual: also the int16 RGB residuals.
        accumulate: CoViAR's accumulation back to the GOP's I-frame.
        b_list: the B-frame list (0 past, 1 future).
        fill_iframe: ``"previous"`` or ``"zero"`` vectors for I-frames.
        threads: GOP-parallel decoding threads.
        backend: ``"auto"`` (native when built, with a warning otherwise), ``"native"``,
            ``"pyav"``; the one used is recorded.

    Returns:
        The clip written.

    Raises:
        FileNotFoundError, ValueError, RuntimeError: as :func:`read_motion` (naming the file).
    """
    used = resolve_backend(backend)
    opts = dict(block=block, residual=residual, accumulate=accumulate, b_list=b_list,
                fill_iframe=fill_iframe, threads=threads)  # fmt: skip
    clip = read_motion(src, frames=frames, backend=used["backend"], **opts)
    from .. import __version__

    meta = {
        "source": os.fspath(src),
        "frames": None if frames is None else [int(v) for v in frames],
        "options": opts,
        **used,
        "mvaccel": __version__,
        "direction": "codec src - dst: the block's content is at x + mv in its reference",
    }
    clip.save(dest, meta)
    return clip


def motion_tree(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    shard: tuple[int, int] | str | None = (0, 1),
    overwrite: bool = False,
    quiet: bool = False,
    workers: int = 1,
    backend: str = "auto",
    **options,
):
    """Motion vectors of every video under ``src`` into ``out`` (``mvaccel mv DIR --out OUT``).

    Args:
        src: a folder of videos (searched recursively; hidden names skipped) or one video.
        out: the output root; ``a/b.mp4`` -> ``out/a/b.npz``.
        shard: ``(i, n)``, ``"i/n"``, or None for the environment (torchrun, SLURM).
        overwrite: redo finished files.
        quiet: no progress bar.
        workers: videos read at the same time (threads: the native reader releases the GIL).
        backend: as in :func:`extract_motion`.
        **options: :data:`OPTIONS` of :func:`read_motion`.

    Returns:
        A :class:`mvaccel._io.JobReport`.

    Raises:
        FileNotFoundError: ``src`` missing. ValueError: unknown options, no videos.
    """
    from .._io import find_videos, parse_shard, run_jobs

    bad = sorted(set(options) - set(OPTIONS))
    if bad:
        raise ValueError(f"motion_tree: unknown options {bad}; known: {list(OPTIONS)}")
    if not isinstance(shard, tuple):
        shard = parse_shard(shard)
    src, out = Path(src), Path(out)
    videos = find_videos(src)
    if not videos:
        raise ValueError(f"no videos in {src}")
    base = src if src.is_dir() else src.parent
    pairs = [(v, out / v.relative_to(base).with_suffix(".npz")) for v in videos]
    backend = resolve_backend(backend)["backend"]  # warn once, not per video

    def work(s: Path, d: Path) -> None:
        extract_motion(s, d, backend=backend, **options)

    return run_jobs(pairs, work, shard=shard, overwrite=overwrite, quiet=quiet,
                    workers=workers, what="mvaccel mv")  # fmt: skip


__all__ = ["extract_motion", "load_motion", "motion_tree", "read_motion_file", "resolve_backend"]
