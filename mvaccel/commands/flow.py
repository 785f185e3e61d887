"""``mvaccel flow``: TV-L1 flow of a video, a frame folder or a whole dataset tree.

Output per video (a folder named after it, the tree mirrored under OUT):

- ``jpg``: ``flow_x_%05d.jpg`` / ``flow_y_%05d.jpg`` from 1, dense_flow's uint8 mapping of
  ``[-bound, bound]`` (what TSN-style training reads);
- ``flo``: ``flow_%05d.flo`` (Middlebury), from 1;
- ``npy``: one ``flow.npy``, ``(T - 1, 2, H, W)`` float32 (the whole video in memory);
- ``meta.json``: the direction, parameters, bound and source;
- with ``--preview``, also ``preview.png``: the pair with the most motion over its frame, with
  a colour key (:func:`mvaccel.viz.save_flow_preview`).

Direction: file k = tvl1(I_k, I_{k-1}) by default (backward: the direction of frame k's
motion vectors, what training reads); ``--forward`` gives dense_flow's tvl1(I_{k-1}, I_k).

Each video's folder is written under a hidden temporary name and renamed when complete, so
an interrupted run leaves no half-written video and a rerun skips the finished ones (and
removes the temporaries of killed runs). Shards (``--shard i/n``, torchrun, SLURM) split the
sorted source list. The Python API is :func:`mvaccel.flow.flow_tree`.

Decoding (``--decoders`` threads), solving and writing (``--writers`` threads) overlap, and
one solver call takes ``--batch`` pairs across videos of the same frame size (on CUDA through
pinned buffers and a stream of its own); the files are the same bytes as ``--sequential``.
"""

from __future__ import annotations

import argparse
import os


def _run(args: argparse.Namespace) -> int:
    from .._io import parse_shard
    from ..flow import flow_tree

    shard = parse_shard(args.shard)
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    report = flow_tree(
        args.src, args.out, args.preset, format=args.format, bound=args.bound,
        batch=args.batch, device=device, backward=not args.forward, shard=shard,
        overwrite=args.overwrite, quiet=args.quiet, pipeline=not args.sequential,
        decoders=args.decoders, writers=args.writers, preview=args.preview,
    )  # fmt: skip
    return 0 if report.ok else 1


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
    p.add_argument("--batch", type=int, default=16,
                   help="pairs per solver call, taken across videos of the same frame size "
                   "(64-256 keeps a GPU busy)")  # fmt: skip
    p.add_argument("--decoders", type=int, default=2, help="videos decoded at the same time")
    p.add_argument("--writers", type=int, default=2, help="threads writing the flow files")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="one video after the other (no overlap, no batches across videos)",
    )
    p.add_argument("--shard", default=None, help="i/n: every n-th source video from the i-th "
                   "(default: torchrun RANK/WORLD_SIZE or SLURM array/task variables)")  # fmt: skip
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--backward", action="store_true",
                           help="tvl1(I_k, I_{k-1}), the MV direction (the default)")  # fmt: skip
    direction.add_argument("--forward", action="store_true",
                           help="dense_flow's tvl1(I_{k-1}, I_k) instead")  # fmt: skip
    p.add_argument("--preview", action="store_true",
                   help="also write preview.png: the pair with the most motion, keyed")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="redo videos already done")
    p.set_defaults(func=_run)
