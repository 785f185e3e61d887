"""Demo rows of TVNet end to end (Fan et al.) and of the two-stream baseline.

- **TVNet-50 + OF-CNN, no training**: the first table's flow CNN (trained on stored TV-L1
  flow) reading TVNet-50's flow of RGB stacks, TVNet untrained (= TV-L1, 1 scale, 1 warp,
  50 iterations): Table 3's "no training" row.
- **TVNet-50 end to end**: the same, trained end to end with ``L_c + 0.1 * L_f`` (eq. 13),
  TVNet's learning rate the classifier's / 255, the classifier initialised from the flow CNN
  when its shapes fit (``ctx.checkpoints["teacher_flow"]``: same ClarifaiNet, ``2K`` channels),
  from scratch otherwise (the row's note says which).
- **+ RGB (1 : 2)**: fused with the first table's RGB CNN, the paper's spatial : temporal.
- **Two-stream RGB + TV-L1 flow (1 : 1.5 and 1 : 2)**: the first table's RGB CNN and flow CNN
  fused with TSN's and Zhang et al.'s / Fan et al.'s weights (no training here).

Stage frames/s are measured on one thread: ``decode`` (RGB frames from the H.264 videos),
``tvnet`` / ``tvl1`` (flow fields per second), ``flow_cnn`` / ``rgb_cnn`` (the networks).
"""

from __future__ import annotations

import time

import torch

from . import DemoContext, MethodResult, timed

#: epochs of end-to-end fine-tuning (36 training videos each; ~1.5 s an epoch on one thread)
EPOCHS = 20


def _rgb_decode_fps(ctx: DemoContext, videos: int = 12) -> float:
    """RGB frames decoded per second (after one warm-up video: file cache, decoder set-up)."""
    from ..data.lists import ucf101_split
    from ..video import read_motion

    paths = [ctx.root / "videos" / it.path for it in ucf101_split(ctx.root / "lists", 1, "test")]
    read_motion(paths[0], rgb="all")
    t0 = time.perf_counter()
    frames = sum(len(read_motion(p, rgb="all").rgb) for p in paths[1 : videos + 1])
    return frames / (time.perf_counter() - t0)


def _stage_fps(model, dm, segments: int) -> dict[str, float]:
    """Fields/s of TVNet and of the classifier on one test video's stacks (one thread)."""
    ds = dm.dataset("test", train=False, num_segments=segments, test_crops=1)
    x = ds[0][0]  # (S, 3(K+1), H, W)
    pipe = model.pipeline.eval()
    fields = x.shape[0] * (x.shape[1] // 3 - 1)
    with torch.inference_mode():
        (_, _, u), t_flow = timed(lambda: pipe.flow(x), repeat=3)
        stack = pipe.stack(u, x.shape[0])
        _, t_net = timed(lambda: pipe.classifier(stack), repeat=3)
    return {"tvnet": fields / t_flow, "network": fields / t_net}


def _fused(results: list[dict], weights) -> tuple[float, float]:
    from ..train.evaluate import accuracy, fuse, mean_class_accuracy

    f = fuse(results, list(weights))
    return accuracy(f["scores"], f["labels"]), mean_class_accuracy(f["scores"], f["labels"])


def run(ctx: DemoContext) -> list[MethodResult]:
    """Train and evaluate TVNet end to end; fuse the two-stream baseline. Rows of the table."""
    import lightning as L

    from ..train.data import VideoDataModule
    from ..train.evaluate import evaluate, save_scores
    from ..train.tvnet import TVNetClassifier

    cfg = ctx.cfg
    k = cfg.new_length  # flow fields per stack: the flow CNN's
    dm = VideoDataModule(
        root=str(ctx.root), modalities=["rgb"], new_length=k + 1, num_segments=1, size=cfg.size,
        batch_size=cfg.batch_size, num_workers=0, cache=True, seed=cfg.seed, flip=False,
        val_segments=cfg.test_segments,
    )  # fmt: skip
    bk = dict(width=cfg.width_mult, dropout=tuple(cfg.dropout), prelu=True)
    teacher = ctx.checkpoints.get("teacher_flow")
    common = dict(
        backbone="clarifai", num_classes=dm.num_classes, in_channels=3 * (k + 1),
        backbone_kwargs=bk, optimizer="adam", weight_decay=5e-4, step_seed=cfg.seed,
        flow_clip=cfg.bound, flow_std=cfg.motion_std, iterations=50,
        tvnet_size=(cfg.size, cfg.size),
    )  # fmt: skip
    L.seed_everything(cfg.seed, verbose=False)
    try:  # the flow CNN initialises the classifier if its backbone and shapes fit
        if teacher is None:
            raise FileNotFoundError("no flow CNN checkpoint in the context")
        model = TVNetClassifier(classifier_checkpoint=str(teacher), lr=cfg.transfer_lr, **common)
        fits, init = True, "initialised from the TV-L1 flow CNN"
    except (ValueError, FileNotFoundError) as e:
        L.seed_everything(cfg.seed, verbose=False)
        model = TVNetClassifier(lr=cfg.lr, **common)
        fits, init = False, f"classifier from scratch ({e})"
    decode = _rgb_decode_fps(ctx)
    runs = ctx.runs / "tvnet_e2e"
    rows: list[MethodResult] = []

    def trainer(epochs: int) -> L.Trainer:
        from lightning.pytorch.loggers import CSVLogger

        return L.Trainer(
            max_epochs=epochs, accelerator="cpu", devices=1,
            logger=CSVLogger(ctx.runs, name="tvnet_e2e", version=""), enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            limit_val_batches=0, log_every_n_steps=5,
        )  # fmt: skip

    if fits:  # Table 3's "no training": TVNet = TV-L1, the flow CNN as it is
        tr = trainer(0)
        tr.fit(model, dm)
        path = runs / "untrained.ckpt"
        tr.save_checkpoint(path)
        r = evaluate(path, segments=cfg.test_segments, crops=1, progress=False)
        save_scores(ctx.scores / "tvnet50_untrained.npz", r)
        rows.append(MethodResult(
            "TVNet-50 + OF-CNN, no training", "rgb", r["top1"], r["mean_class"],
            {"decode": decode, **_stage_fps(model, dm, cfg.test_segments)},
            note="TVNet untrained (= TV-L1, 1 scale, 1 warp, 50 iterations) feeding the "
                 "TV-L1-trained flow CNN",
        ))  # fmt: skip
    tr = trainer(EPOCHS)
    taps = model.tvnet.wf.detach().clone()
    t0 = time.perf_counter()
    tr.fit(model, dm)
    train_s = time.perf_counter() - t0
    path = runs / "last.ckpt"
    tr.save_checkpoint(path)
    r = evaluate(path, segments=cfg.test_segments, crops=1, progress=False)
    save_scores(ctx.scores / "tvnet_e2e.npz", r)
    stages = {"decode": decode, **_stage_fps(model, dm, cfg.test_segments)}
    rows.append(MethodResult(
        "TVNet-50 end to end (L_c + 0.1 L_f)", "rgb", r["top1"], r["mean_class"], stages,
        train_s=train_s,
        note=f"{tr.global_step} steps, TVNet lr = lr / 255 (its filters moved by at most "
             f"{float((model.tvnet.wf.detach() - taps).abs().max()):.1e}), {init}; TVNet runs "
             f"on the {cfg.size}x{cfg.size} network crops, TV-L1 (two-stream rows) on whole "
             "frames",
    ))  # fmt: skip

    rgb, flow = ctx.results.get("rgb_cnn"), ctx.results.get("teacher_flow")
    if rgb is not None:
        top1, mc = _fused([rgb, r], (1, 2))
        rows.append(MethodResult(
            "TVNet-50 e2e + RGB (1 : 2)", "rgb", top1, mc,
            {**stages, "rgb_cnn": rgb["frames_per_s"]},
            note="fusion of the row above and the RGB CNN (mvaccel fuse --weights 1 2)",
        ))  # fmt: skip
    if rgb is not None and flow is not None:
        stages = {
            "decode": decode, "tvl1": ctx.motion_fps.get("flow", 0.0),
            "flow_cnn": flow["frames_per_s"], "rgb_cnn": rgb["frames_per_s"],
        }  # fmt: skip
        for w in (1.5, 2):
            top1, mc = _fused([rgb, flow], (1, w))
            rows.append(MethodResult(
                f"Two-stream RGB + TV-L1 flow (1 : {w:g})", "rgb + TV-L1 flow", top1, mc,
                stages,
                note="fusion of the RGB CNN and the OF-CNN (teacher) of the first table",
            ))  # fmt: skip
    return rows
