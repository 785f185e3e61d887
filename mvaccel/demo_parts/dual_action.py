"""Lu et al.'s Dual-action Stream on the demo's data: flow teacher, RGB students, fusions.

Rows: the 3D flow stream (the teacher, TV-L1 flow clips), an RGB 3D CNN trained with
cross-entropy only, the Dual-action Stream (the same RGB network with ``CE + 50 (L_MAE + L_G)``
from the frozen teacher), and the Dual-action Stream with the flow stream, by averaging
(1 : 1) and by the attention fusion (both streams frozen). The networks are 1/8-width 3D
ResNet-10s on 8-frame 64x64 clips (the paper: ResNet-101, 16 or 64 frames, 112x112), trained
with Adam as the first table's nets (SGD at lr 0.1 does not train them in this budget).
Test protocol: one centred clip per video.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import DemoContext, MethodResult, fit, timed

#: the tiny network of every row
BACKBONE = dict(backbone="resnet3d", backbone_kwargs=dict(depth=10, width=0.125))


def _datamodule(ctx: DemoContext, modalities, val_modalities, clip_len: int, batch_size: int):
    from ..train.data import VideoDataModule

    cfg = ctx.cfg
    return VideoDataModule(
        root=str(ctx.root), modalities=list(modalities), val_modalities=list(val_modalities),
        sampling="clip", new_length=clip_len, num_segments=1, size=cfg.size, bound=cfg.bound,
        flow_bound=cfg.bound, motion_std=cfg.motion_std, batch_size=batch_size, num_workers=0,
        cache=True, seed=cfg.seed, flip=False, val_segments=1,
    )  # fmt: skip


def _stage_fps(ctx: DemoContext, videos: int = 4) -> dict[str, float]:
    """Frames/s of decoding RGB and of TV-L1 (the data's preset) on a few test videos."""
    from ..data.lists import ucf101_split
    from ..flow import flow_video
    from ..video import read_motion

    items = ucf101_split(ctx.root / "lists", 1, "test")
    paths = [ctx.root / "videos" / it.path for it in items[:: max(1, len(items) // videos)]]
    frames, decode, flow, pairs = 0, 0.0, 0.0, 0
    for p in paths[:videos]:
        clip, t = timed(lambda p=p: read_motion(p, rgb="all"))
        frames, decode = frames + len(clip.rgb), decode + t
        f, t = timed(lambda c=clip: flow_video(c.rgb, ctx.cfg.flow_preset, backward=True))
        pairs, flow = pairs + len(f), flow + t
    out = {"decode": frames / decode, "flow": pairs / flow}
    if "flow" in ctx.motion_fps:  # the first table measured TV-L1 on more videos
        out["flow"] = ctx.motion_fps["flow"]
    return out


def run(
    ctx: DemoContext,
    *,
    clip_len: int = 8,
    epochs: int = 30,
    fusion_epochs: int = 10,
    batch_size: int = 12,
    lr: float = 3e-3,
) -> list[MethodResult]:
    """Train and evaluate the rows (about 2 minutes on one thread at the demo's defaults).

    Args:
        ctx: the demo's prepared data and output folders.
        clip_len: frames per clip.
        epochs: epochs of the teacher and of each RGB student.
        fusion_epochs: epochs of the attention fusion.
        batch_size: clips per step.
        lr: Adam's learning rate (the fusion's too).
    """
    from ..train import ClipClassifier, DualActionFusion, DualActionStream
    from ..train.evaluate import evaluate, fuse, mean_class_accuracy, save_scores

    common = dict(**BACKBONE, optimizer="adam", lr=lr, weight_decay=5e-4, step_seed=ctx.cfg.seed)

    def dm(mods, val):
        return _datamodule(ctx, mods, val, clip_len, batch_size)

    flow_dm = dm(["flow"], ["flow"])
    teacher, t_teacher = fit(ctx, "dual_action", "flow_teacher", partial(
        ClipClassifier, clip_channels=2, num_classes=flow_dm.num_classes, **common), flow_dm,
        epochs)  # fmt: skip
    students = {}
    for name, loss in (("rgb_ce", "ce"), ("dual_action", "dual_action")):
        d = dm(["rgb", "flow"], ["rgb"])
        model = partial(
            DualActionStream, teacher_checkpoint=str(teacher) if loss != "ce" else None,
            loss=loss, alpha=50.0, clip_channels=3, num_classes=d.num_classes, **common,
        )  # fmt: skip
        students[name] = fit(ctx, "dual_action", name, model, d, epochs)
    fusion_dm = dm(["rgb", "flow"], ["rgb", "flow"])
    fusion = partial(
        DualActionFusion, rgb_checkpoint=str(students["dual_action"][0]),
        flow_checkpoint=str(teacher), num_classes=fusion_dm.num_classes, clip_channels=3,
        **common,
    )  # fmt: skip
    fusion_ckpt, t_fusion = fit(
        ctx, "dual_action", "attention_fusion", fusion, fusion_dm, fusion_epochs
    )

    results = {}
    for name, path in (("flow_teacher", teacher), ("rgb_ce", students["rgb_ce"][0]),
                       ("dual_action", students["dual_action"][0]),
                       ("attention_fusion", fusion_ckpt)):  # fmt: skip
        r = evaluate(path, segments=1, crops=1, progress=False)
        save_scores(ctx.scores / f"dual_action_{name}.npz", r)
        results[name] = r
    avg = fuse([results["dual_action"], results["flow_teacher"]], [1, 1])
    top1 = float(np.mean(avg["scores"].argmax(1) == avg["labels"]))
    stages = _stage_fps(ctx)
    net = {k: r["frames_per_s"] for k, r in results.items()}
    # Two networks in sequence: their frames/s combine as rates do.
    both = 1 / (1 / net["dual_action"] + 1 / net["flow_teacher"])
    clip = f"{clip_len}-frame clips, 1/8-width 3D ResNet-10"
    rows = [
        MethodResult("Flow 3D CNN (DS teacher)", "flow", results["flow_teacher"]["top1"],
                     results["flow_teacher"]["mean_class"],
                     {"decode": stages["decode"], "flow": stages["flow"],
                      "network": net["flow_teacher"]}, t_teacher, clip),
        MethodResult("RGB 3D CNN (CE only)", "rgb", results["rgb_ce"]["top1"],
                     results["rgb_ce"]["mean_class"],
                     {"decode": stages["decode"], "network": net["rgb_ce"]},
                     students["rgb_ce"][1], "the student without the teacher"),
        MethodResult("Dual-action Stream", "rgb", results["dual_action"]["top1"],
                     results["dual_action"]["mean_class"],
                     {"decode": stages["decode"], "network": net["dual_action"]},
                     students["dual_action"][1], "CE + 50 (MAE + Gram), teacher frozen"),
        MethodResult("DS + flow (average 1 : 1)", "rgb + flow", top1,
                     mean_class_accuracy(avg["scores"], avg["labels"]),
                     {"decode": stages["decode"], "flow": stages["flow"], "network": both},
                     0.0, "fusion of the rows above"),
        MethodResult("DS + flow (attention fusion)", "rgb + flow",
                     results["attention_fusion"]["top1"],
                     results["attention_fusion"]["mean_class"],
                     {"decode": stages["decode"], "flow": stages["flow"],
                      "network": net["attention_fusion"]}, t_fusion, "streams frozen"),
    ]  # fmt: skip
    return rows


def _self_check() -> None:  # pragma: no cover - a manual entry point
    """``python -m mvaccel.demo_parts.dual_action ROOT``: run the part on prepared data."""
    import sys
    import tempfile

    from ..demo import DemoConfig

    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    ctx = DemoContext(DemoConfig(), Path(sys.argv[1]), out / "runs", out / "scores")
    t0 = time.perf_counter()
    for r in run(ctx):
        fps = " ".join(f"{k} {v:.0f}" for k, v in r.stage_fps.items())
        print(f"{r.name:30s} {100 * r.top1:5.1f} % {100 * r.mean_class:5.1f} % "
              f"total {r.total_fps:6.0f} fps ({fps}) train {r.train_s:.0f} s")  # fmt: skip
    print(f"part took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    _self_check()
