"""``mvaccel eval``: video-level top-1 of a trained checkpoint, per-video scores saved."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..train.evaluate import evaluate, save_scores

    overrides = {}
    for key in ("root", "split", "list_dir", "video_root", "flow_root", "frame_root",
                "video_ext", "num_workers"):  # fmt: skip
        v = getattr(args, key)
        if v is not None:
            overrides[key] = v
    if args.cache:
        overrides["cache"] = True
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    r = evaluate(
        args.checkpoint, subset=args.subset, segments=args.segments, crops=args.crops,
        batch_size=args.batch_size, num_workers=args.num_workers or 0, device=device,
        limit=args.limit, progress=not args.quiet, **overrides,
    )  # fmt: skip
    print(
        f"{args.checkpoint}: {len(r['labels'])} videos, {r['modality']}, {r['segments']} "
        f"segments x {r['crops']} crop(s): top-1 {100 * r['top1']:.2f} %, mean class "
        f"{100 * r['mean_class']:.2f} %; CNN {r['frames_per_s']:.0f} frames/s "
        f"({r['cnn_inputs_per_s']:.1f} inputs/s on {device}), {r['videos_per_s']:.2f} videos/s "
        "with data loading"
    )
    if args.out:
        print(f"wrote {save_scores(args.out, r)}")
    return 0


def register(sub) -> None:
    """Add ``eval`` to the CLI."""
    p = sub.add_parser("eval", help="video-level accuracy of a checkpoint; saves per-video scores")
    p.add_argument("checkpoint", help="a .ckpt written by mvaccel train")
    p.add_argument("--out", help="write per-video scores (.npz) for mvaccel fuse")
    p.add_argument("--segments", type=int, default=25, help="segments per video (25)")
    p.add_argument("--crops", type=int, default=1, choices=(1, 10), help="1 centre or 10 crops")
    p.add_argument("--subset", default="test", choices=("test", "train"))
    p.add_argument("--root", help="dataset folder (default: the one the checkpoint trained on)")
    p.add_argument("--split", type=int, choices=(1, 2, 3), help="split (default: the training's)")
    p.add_argument("--list-dir", dest="list_dir")
    p.add_argument("--video-root", dest="video_root")
    p.add_argument("--flow-root", dest="flow_root")
    p.add_argument("--frame-root", dest="frame_root")
    p.add_argument("--video-ext", dest="video_ext")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1, help="videos per batch")
    p.add_argument("--workers", dest="num_workers", type=int, help="data loader workers")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto)")
    p.add_argument("--limit", type=int, help="only the first N videos")
    p.add_argument("--cache", action="store_true", help="keep decoded videos in memory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run)
