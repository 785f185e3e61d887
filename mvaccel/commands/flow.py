"""``mvaccel flow``: TV-L1 flow of a video, a frame folder or a whole dataset tree.

Output per video (a folder named after it, the tree mirrored under OUT):

- ``jpg``: ``flow_x_%05d.jpg`` / ``flow_y_%05d.jpg`` from 1, dense_flow's uint8 mapping of
  ``[-bound, bound]`` (what TSN-style training reads);
- ``flo``: ``flow_%05d.flo`` (Middlebury), from 1;
- ``npy``: one ``flow.npy``, ``(T - 1, 2, H, W)`` float32 (the whole video in memory);
- with ``--preview``, also ``preview.png``: the pair with the most motion over its frame, with
  a colour key (:func:`mvaccel.viz.save_flow_preview`).

Each video's folder is written under a temporary name and renamed when complete, so an
interrupted run leaves no half-written video and a rerun skips the finished ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; without it, torchrun's ``RANK`` / ``WORLD_SIZE`` (or 0/1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def find_items(src: Path) -> list[tuple[Path, Path]]:
    """(source, relative output folder) for every video / frame folder under ``src``."""
    from ..flow.video import IMAGE_SUFFIXES

    if not src.exists():
        raise FileNotFoundError(f"mvaccel flow: no such file or folder: {src}")
    if src.is_file():
        return [(src, Path("."))]

    def has_frames(d: Path) -> bool:
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir() if p.is_file())

    if has_frames(src):
        return [(src, Path("."))]
    items = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        r = Path(root)
        for f in sorted(files):
            if Path(f).suffix.lower() in VIDEO_SUFFIXES:
                items.append((r / f, (r / f).relative_to(src).with_suffix("")))
        for d in list(dirs):
            if has_frames(r / d):
                items.append((r / d, (r / d).relative_to(src)))
                dirs.remove(d)
    if not items:
        kinds = ", ".join(VIDEO_SUFFIXES)
        raise ValueError(f"mvaccel flow: no videos ({kinds}) or frame folders in {src}")
    return items


def run_one(src: Path, dest: Path, args: argparse.Namespace, device: str) -> int:
    """Flow of one video into ``dest`` (atomically); returns the number of pairs."""
    import numpy as np

    from ..flow import flow_video, write_flo, write_flow_jpgs

    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    parts: list = []
    count = 0
    preview: list = []  # (mean |flow|, pair index, flow) of the pair with the most motion

    def sink(t0: int, flows) -> None:
        nonlocal count
        count += flows.shape[0]
        if args.preview:
            m = flows.norm(dim=1).mean((1, 2))
            k = int(m.argmax())
            if not preview or float(m[k]) > preview[0][0]:
                preview[:] = [(float(m[k]), t0 + k, flows[k].clone())]
        if args.format == "jpg":
            write_flow_jpgs(tmp, flows, start=t0 + 1, bound=args.bound)
        elif args.format == "flo":
            for k in range(flows.shape[0]):
                write_flo(tmp / f"flow_{t0 + k + 1:05d}.flo", flows[k])
        else:
            parts.append(flows.numpy())

    try:
        flow_video(
            src, args.preset, batch=args.batch, device=device, backward=args.backward,
            callback=sink,
        )  # fmt: skip
        if args.format == "npy":
            np.save(tmp / "flow.npy", np.concatenate(parts, 0))
        if preview:
            from ..viz import save_flow_preview

            save_flow_preview(tmp / "preview.png", src, preview[0][1], preview[0][2],
                              backward=args.backward, title=src.name)  # fmt: skip
        if dest.exists():  # --overwrite
            shutil.rmtree(dest)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..flow import TVL1Params

    TVL1Params.preset(args.preset)  # fail early on a bad name
    shard, nshards = parse_shard(args.shard)
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("mvaccel flow: --device cuda but torch sees no GPU")
    src, out = Path(args.src), Path(args.out)
    items = find_items(src)[shard::nshards]
    out.mkdir(parents=True, exist_ok=True)
    pairs, t_start, skipped = 0, time.perf_counter(), 0
    bar = tqdm(items, unit="video", disable=args.quiet)
    for path, rel in bar:
        dest = (out / rel) if rel != Path(".") else out / path.stem
        if dest.exists() and not args.overwrite:
            skipped += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        pairs += run_one(path, dest, args, device)
        rate = pairs / max(time.perf_counter() - t_start, 1e-9)
        bar.set_postfix(pairs=pairs, pairs_per_s=f"{rate:.1f}")
    if not args.quiet:
        took = time.perf_counter() - t_start
        print(
            f"mvaccel flow: {len(items) - skipped} videos, {pairs} pairs in {took:.1f} s "
            f"({pairs / max(took, 1e-9):.1f} pairs/s); {skipped} already done; shard "
            f"{shard}/{nshards} -> {out}"
        )
    return 0


def register(sub) -> None:
    """Add ``flow`` to the CLI."""
    p = sub.add_parser(
        "flow",
        help="TV-L1 optical flow of a video, a frame folder or a dataset tree",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="video file, folder of frames, or a tree of videos/frame folders")
    p.add_argument("out", help="output folder (one sub-folder per video)")
    p.add_argument("--preset", default="opencv", help="opencv, opencv_cuda/dense_flow, tvnet, fast")
    p.add_argument("--format", choices=("jpg", "flo", "npy"), default="jpg")
    p.add_argument("--bound", type=float, default=20.0, help="jpg quantization bound (px)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--batch", type=int, default=16, help="pairs per solver call")
    p.add_argument("--shard", default=None, help="i/n: do every n-th video from the i-th")
    p.add_argument("--backward", action="store_true", help="tvl1(I[t+1], I[t]) (MV direction)")
    p.add_argument("--preview", action="store_true",
                   help="also write preview.png: the pair with the most motion, keyed")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="redo videos already done")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run)
