"""``mvaccel viz``: side-by-side figures of a video's motion (vectors, CoViAR, TV-L1, TVNet, DMC).

One PNG per chosen frame, ``<video stem>_frame<N>.png`` under ``--out``: the decoded frame, its
block motion vectors (colours and arrows, intra blocks hatched), CoViAR's accumulated motion and
residual, TV-L1 flow from the frame to the reference its vectors point into (the vectors'
direction, ``tvl1(I_t, I_ref)``), optionally an untrained TVNet's flow and a DMC-Net generator's
flow; one colour-wheel key with its scale in pixels and the MV-vs-flow agreement under it.
"""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..viz import compare_frame, save_figure

    video = Path(args.video)
    if not video.is_file():
        raise FileNotFoundError(f"no such file: {video}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for frame in args.frame or [None]:
        fig, info = compare_frame(
            video, frame, block=args.block, preset=args.preset, tvnet=args.tvnet, dmc=args.dmc,
            backend=args.backend, dpi=args.dpi,
        )  # fmt: skip
        path = save_figure(fig, out / f"{video.stem}_frame{info['frame']:05d}.png")
        a = info["agreement"]
        agree = (f"MV vs TV-L1: mean cos {a['cosine']:.2f}, EPE {a['epe']:.2f} px on "
                 f"{a['blocks']} non-intra blocks" if a else "no MV/flow comparison")  # fmt: skip
        ref = f" -> {info['ref']}" if info["ref"] is not None else ""
        print(f"frame {info['frame']} ({info['frame_type']}){ref}: key {info['max_norm']:.2f} px; "
              f"{agree}; wrote {path}")  # fmt: skip
    return 0


def register(sub) -> None:
    """Add ``viz`` to the CLI."""
    p = sub.add_parser(
        "viz",
        help="side-by-side figures: frame, motion vectors, CoViAR, TV-L1 (TVNet, DMC-Net)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="video file with motion vectors (H.264, MPEG-4 Part 2, ...)")
    p.add_argument("--frame", type=int, action="append",
                   help="display-order frame number (repeat for several; default: the P-frame "
                        "with the most motion)")  # fmt: skip
    p.add_argument("--out", default=".", help="output folder (default: here)")
    p.add_argument("--tvnet", action="store_true", help="add an untrained TVNet-1-1-50's flow")
    p.add_argument("--dmc", metavar="CKPT", help="add this DMC-Net checkpoint's generator flow")
    p.add_argument("--block", type=int, default=8, help="vector grid cell in pixels (8)")
    p.add_argument("--preset", default="fast", help="TV-L1 preset (fast, opencv, ...)")
    p.add_argument("--dpi", type=int, default=100, help="figure resolution (100)")
    p.add_argument("--backend", default="auto", choices=("auto", "native", "pyav"))
    p.set_defaults(func=_run)
