"""The demo's DMC-Net rows: CoViAR's three streams, their fusion, DMC-Net alone and fused.

On the demo's data (H.264 with GOPs of 12 frames, one reference, no B-frames: CoViAR's GOP
structure; TV-L1 flow for training): CoViAR's I-frame, accumulated-MV and accumulated-residual
streams, fused I 2 : MV 1 : R 1 on the averaged scores (CoViAR's ``combine.py``); DMC-Net
(generator + classifier started from a flow classifier; stage 1 with the flow MSE only in its
first epoch, then stage 2 with the discriminator), alone and fused 2 : 1 : 1 : 1. The networks
are the demo's ClarifaiNet at 1/8 width on 64x64 crops (ResNets do not train in this budget on
one core), one field per segment, 3 training segments; the hyper-parameters keep the papers'
structure (CoViAR's Adam ``eps`` and multipliers with the backbone at x1 since nothing is
pre-trained; DMC-Net's lr 0.01 with the classifier at x0.01, alpha 10, lambda 1, 0.01).

Frames/s per stage on one thread: ``read`` is one pass of the compressed reader over the test
videos (accumulated MV + residual + I-frames for CoViAR; the frame's own MV + residual for
DMC-Net), the networks are timed on the test protocol's batches (25 segments of a video).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from . import DemoContext, MethodResult, fit, timed

#: CoViAR's fusion weights (combine.py) and DMC-Net's fourth stream
FUSION = {"coviar_iframe": 2.0, "coviar_mv": 1.0, "coviar_residual": 1.0, "dmc_net": 1.0}
SHORT = {"coviar_iframe": "I", "coviar_mv": "MV", "coviar_residual": "R", "dmc_net": "DMC"}
LABELS = {
    "coviar_iframe": "CoViAR I-frame",
    "coviar_mv": "CoViAR MV (accumulated)",
    "coviar_residual": "CoViAR residual (accumulated)",
    "dmc_net": "DMC-Net (MV + R -> DMC)",
}


@dataclass
class DMCDemoConfig:
    """Epochs and sizes of this part (the rest comes from the demo's :class:`DemoConfig`)."""

    coviar_epochs: int = 60
    flow_epochs: int = 60
    stage1_epochs: int = 10
    stage2_epochs: int = 6
    num_segments: int = 3
    lr: float = 1e-3
    dmc_lr: float = 0.01
    test_segments: int | None = None  # None: the demo's
    timing_videos: int = 6


def _dm(ctx: DemoContext, modalities, val=None, **kw):
    from ..train.data import VideoDataModule

    cfg = ctx.cfg
    args = dict(
        root=str(ctx.root), modalities=list(modalities), val_modalities=val, new_length=1,
        num_segments=kw.pop("num_segments", 3), size=cfg.size, flip=False,
        batch_size=cfg.batch_size, num_workers=0, cache=True, seed=cfg.seed,
        val_segments=cfg.test_segments, flow_bound=cfg.bound,
    )  # fmt: skip
    args.update(kw)
    return VideoDataModule(**args)


def _clarifai(ctx: DemoContext, prelu: bool) -> dict:
    cfg = ctx.cfg
    return dict(backbone="clarifai", step_seed=cfg.seed,
                backbone_kwargs=dict(width=cfg.width_mult, dropout=tuple(cfg.dropout),
                                     prelu=prelu))  # fmt: skip


def _read_fps(ctx: DemoContext, n: int, **kw) -> float:
    """Frames/s of one pass of :func:`mvaccel.video.read_motion` over ``n`` test videos."""
    from ..data.lists import ucf101_split
    from ..video import read_motion

    items = ucf101_split(ctx.root / "lists", 1, "test")
    paths = [ctx.root / "videos" / it.path for it in items[:: max(1, len(items) // n)][:n]]
    frames, took = 0, 0.0
    for p in paths:
        clip, t = timed(lambda p=p: read_motion(p, **kw), repeat=2)
        frames, took = frames + len(clip), took + t
    return frames / took


def _net_fps(fn, inputs, repeat: int = 3) -> float:
    with torch.inference_mode():
        _, t = timed(lambda: fn(*inputs), repeat=repeat)
    return inputs[0].shape[0] / t


def run(ctx: DemoContext, config: DMCDemoConfig | None = None) -> list[MethodResult]:
    """Train and evaluate CoViAR's streams and DMC-Net on the demo data; one row per variant."""
    from ..train import CoViARStream, DMCNet
    from ..train.evaluate import evaluate, fuse, mean_class_accuracy, save_scores

    cc = config or DMCDemoConfig()
    cfg = ctx.cfg
    segs = cc.test_segments or cfg.test_segments
    ckpts, train_s, results = {}, {}, {}

    # ---- CoViAR's streams ----
    common = dict(optimizer="adam", lr=cc.lr, weight_decay=5e-4, backbone_lr_mult=1.0,
                  first_lr_mult=1.0)  # fmt: skip
    specs = {
        "coviar_iframe": dict(modalities=["iframe"]),
        "coviar_mv": dict(modalities=["mv"], accumulate=True, sampling="gop", bound=20.0,
                          motion_std=1.0),
        "coviar_residual": dict(modalities=["residual"], accumulate=True, sampling="gop"),
    }  # fmt: skip
    for name, spec in specs.items():
        dm = _dm(ctx, num_segments=cc.num_segments, **spec)
        rep = spec["modalities"][0]
        model = partial(
            CoViARStream, representation=rep, num_classes=dm.num_classes,
            in_channels=dm.in_channels(dm.modalities, 1), **_clarifai(ctx, rep == "mv"), **common,
        )  # fmt: skip
        ckpts[name], train_s[name] = fit(ctx, "dmcnet", name, model, dm, cc.coviar_epochs)

    # ---- DMC-Net: a flow classifier, then stage 1 and stage 2 ----
    # The demo's motion scaling (its tiny nets want larger inputs than DMC-Net's / 0.226).
    motion = dict(bound=cfg.bound, motion_std=cfg.motion_std, flow_bound=cfg.bound)
    dm = _dm(ctx, ["flow"], num_segments=cc.num_segments, sampling="gop", **motion)
    flow_net = partial(CoViARStream, representation="flow", data_bn=False,
                       num_classes=dm.num_classes, in_channels=2, **_clarifai(ctx, True),
                       **common)  # fmt: skip
    flow_ckpt, flow_s = fit(ctx, "dmcnet", "dmc_flow_teacher", flow_net, dm, cc.flow_epochs)
    dmc_common = dict(num_classes=dm.num_classes, in_channels=2, lr=cc.dmc_lr,
                      milestones=(), **_clarifai(ctx, True))  # fmt: skip
    dm = _dm(ctx, ["mv", "residual", "flow"], ["mv", "residual"], num_segments=cc.num_segments,
             sampling="gop", accumulate=False, **motion)  # fmt: skip
    s1 = partial(DMCNet, stage="reconstruction", flow_checkpoint=str(flow_ckpt), **dmc_common)
    s1_ckpt, s1_s = fit(ctx, "dmcnet", "dmc_net_stage1", s1, dm, cc.stage1_epochs)
    s2 = partial(DMCNet, stage="adversarial", init_checkpoint=str(s1_ckpt), flow_block=0,
                 mse_only_epochs=0, **dmc_common)  # fmt: skip
    ckpts["dmc_net"], s2_s = fit(ctx, "dmcnet", "dmc_net", s2, dm, cc.stage2_epochs)
    train_s["dmc_net"] = flow_s + s1_s + s2_s

    for name, path in ckpts.items():
        results[name] = evaluate(path, segments=segs, crops=1, progress=False)
        save_scores(ctx.scores / f"{name}.npz", results[name])

    # ---- frames/s per stage, one thread ----
    n = cc.timing_videos
    read_coviar = _read_fps(ctx, n, block=8, residual=True, accumulate=True, rgb="iframes")
    read_dmc = _read_fps(ctx, n, block=8, residual=True)
    net_fps = {k: r["frames_per_s"] for k, r in results.items()}
    dmc_model = DMCNet(**dmc_common).eval()
    mv = torch.randn(segs, 2, cfg.size, cfg.size)
    res = torch.randn(segs, 3, cfg.size, cfg.size)
    gen_fps = _net_fps(dmc_model.generator, (mv, res))
    cls_fps = _net_fps(dmc_model.net, (mv,))

    def row(name, inputs, stages, note=""):
        r = results[name]
        return MethodResult(LABELS[name], inputs, r["top1"], r["mean_class"], stages,
                            train_s.get(name, 0.0), note)  # fmt: skip

    rows = [
        row("coviar_iframe", "I-frames",
            {"read": read_coviar, "network": net_fps["coviar_iframe"]}),
        row("coviar_mv", "accumulated mv", {"read": read_coviar, "network": net_fps["coviar_mv"]}),
        row("coviar_residual", "accumulated residual",
            {"read": read_coviar, "network": net_fps["coviar_residual"]}),
        row("dmc_net", "mv + residual", {"read": read_dmc, "generator": gen_fps,
                                         "classifier": cls_fps},
            note="flow in training only (flow classifier + stage 1 + stage 2)"),
    ]  # fmt: skip

    def fused(names, label, stages):
        f = fuse([results[k] for k in names], [FUSION[k] for k in names], softmax=False)
        acc = float((f["scores"].argmax(1) == f["labels"]).mean())
        ratio = ":".join(f"{FUSION[k]:g}" for k in names)
        return MethodResult(
            f"{label} ({ratio})",
            " + ".join(SHORT[k] for k in names),
            acc,
            mean_class_accuracy(f["scores"], f["labels"]),
            stages,
            0.0,
            "fusion of the rows above (averaged scores, CoViAR's combine.py)",
        )

    three = ["coviar_iframe", "coviar_mv", "coviar_residual"]
    coviar_net = 1 / sum(1 / net_fps[k] for k in three)
    rows.append(fused(three, "CoViAR I + MV + R", {"read": read_coviar, "networks": coviar_net}))
    dmc_net = 1 / (1 / coviar_net + 1 / gen_fps + 1 / cls_fps)
    rows.append(
        fused(
            [*three, "dmc_net"],
            "CoViAR + DMC-Net",
            {"read": read_coviar, "read dmc": read_dmc, "networks": dmc_net},
        )
    )
    return rows
