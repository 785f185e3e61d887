"""``mvaccel mv``: motion vectors (and residuals) of one video, or of a dataset tree.

``mvaccel mv VIDEO [--out clip.npz] [--png viz.png]`` prints the video's statistics and
writes its vectors. ``mvaccel mv SRC_DIR --out OUT_DIR`` extracts every video under SRC_DIR
to ``OUT_DIR/<relative path>.npz`` (layout: :mod:`mvaccel.video.extract`), with progress,
resume (finished files are skipped), atomic outputs and shards (``--shard i/n``, torchrun,
SLURM); the Python API is :func:`mvaccel.video.motion_tree`.
"""

from __future__ import annotations

import argparse


def _frames(spec: str | None):
    if spec is None:
        return None
    if ":" in spec:
        a, b = spec.split(":", 1)
        return range(int(a or 0), int(b))
    return [int(v) for v in spec.split(",")]


def _run_tree(args: argparse.Namespace) -> int:
    from .._io import parse_shard
    from ..video import motion_tree

    if not args.out:
        raise ValueError(f"{args.video} is a folder: give --out OUT_DIR for the .npz files")
    if args.png or args.frames:
        raise ValueError("--png and --frames take one video, not a folder")
    report = motion_tree(
        args.video, args.out, shard=parse_shard(args.shard), overwrite=args.overwrite,
        quiet=args.quiet, workers=args.workers, backend=args.backend, block=args.block,
        residual=args.residual, accumulate=args.accumulate, b_list=args.b_list,
        fill_iframe=args.fill_iframe, threads=args.threads,
    )  # fmt: skip
    return 0 if report.ok else 1


def _run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from .. import video

    if os.path.isdir(args.video):
        return _run_tree(args)
    t0 = time.perf_counter()
    backend = video.extract.resolve_backend(args.backend)
    clip = video.read_motion(
        args.video,
        frames=_frames(args.frames),
        block=args.block,
        residual=args.residual,
        accumulate=args.accumulate,
        b_list=args.b_list,
        fill_iframe=args.fill_iframe,
        threads=args.threads,
        backend=backend["backend"],
    )
    dt = time.perf_counter() - t0
    types = clip.frame_type.numpy()
    counts = " ".join(f"{n}={int((types == i).sum())}" for i, n in enumerate(video.FRAME_TYPES))
    mag = clip.mv.norm(dim=1)
    h, w = clip.size
    print(f"{args.video}: {w}x{h}, {len(clip)} frames ({counts}), grid {tuple(clip.mv.shape)}")
    print(f"  mean |mv| {float(mag.mean()):.3f} px, max {float(mag.max()):.2f} px; "
          f"{len(clip) / max(dt, 1e-9):.0f} frames/s ({dt * 1e3:.1f} ms)")  # fmt: skip
    if args.out:
        path = clip.save(args.out, {"source": args.video, **backend})
        print(f"  wrote {path}")
    if args.png:
        from ..viz import mv_figure, pick_frame, save_figure

        k = args.viz_frame
        if k is None:
            k = pick_frame(clip.frame_type, clip.mv, clip.mask)
        frame_no = int(clip.frame_index[k])
        rgb = video.read_motion(args.video, frames=[frame_no], rgb="all", backend=args.backend).rgb
        kind = video.FRAME_TYPES[int(clip.frame_type[k])]
        fig = mv_figure(rgb[0], clip.mv[k], clip.block, mask=clip.mask[k], frame=frame_no,
                        frame_type=kind, title=f"{Path(args.video).name}: {w}x{h}")  # fmt: skip
        path = save_figure(fig, args.png)
        print(f"  wrote {path} (frame {frame_no} ({kind}): arrows over the frame | colours)")
    return 0


def register(sub) -> None:
    """Add ``mv`` to the CLI."""
    p = sub.add_parser("mv", help="extract motion vectors of a video (compressed domain)")
    p.add_argument("video", help="video file (H.264, MPEG-4 Part 2, ...) or a folder of them")
    p.add_argument("--out", help="write the clip as .npz (mv, frame_type, pts, ...); for a "
                   "folder: the output folder (one .npz per video)")  # fmt: skip
    p.add_argument("--png", help="write arrows over the frame beside the colour-coded field")
    p.add_argument("--viz-frame", type=int, help="clip index for --png (default: most motion)")
    p.add_argument("--frames", help="'a:b' or 'i,j,k' (display order); default all")
    p.add_argument("--block", type=int, default=8, help="grid cell size in pixels (8)")
    p.add_argument("--residual", action="store_true", help="also residuals (int16 RGB)")
    p.add_argument("--accumulate", action="store_true", help="CoViAR accumulation to I-frame")
    p.add_argument("--b-list", type=int, default=0, choices=(0, 1), help="B-frame list")
    p.add_argument("--fill-iframe", default="previous", choices=("previous", "zero"))
    p.add_argument("--threads", type=int, default=1, help="GOP-parallel threads (0: all)")
    p.add_argument("--backend", default="auto", choices=("auto", "native", "pyav"))
    p.add_argument("--shard", default=None, help="folder: i/n, every n-th source video from "
                   "the i-th (default: torchrun or SLURM variables, else all)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="folder: redo finished videos")
    p.add_argument("--workers", type=int, default=1, help="folder: videos read at once (1)")
    p.set_defaults(func=_run)
